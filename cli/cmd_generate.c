/*
 * strata generate - stream a completion from a model on this machine.
 *
 * Runs the engine with the local pipeline (one stage holding every layer)
 * and prints only the new text to stdout as it is produced; timing goes to
 * stderr. --chat applies the model's chat template to the prompt as a user
 * message.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "st_engine.h"
#include "st_util.h"

const char st_cmd_generate_help[] = "generate text from a prompt on this machine";

typedef struct gen_ctx {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    int             done;
    st_gen_event_t  last;
    char            error[512];
    char            reason[16];
    int             echo_ids;
} gen_ctx_t;

static void on_event(void *user, const st_gen_event_t *ev)
{
    gen_ctx_t *g = user;
    if (ev->type == ST_GEN_TOKEN) {
        if (ev->len) {
            fwrite(ev->text, 1, ev->len, stdout);
            fflush(stdout);
        }
        return;
    }
    pthread_mutex_lock(&g->lock);
    g->last = *ev;
    snprintf(g->reason, sizeof(g->reason), "%s", ev->finish_reason ? ev->finish_reason : "");
    if (ev->error)
        snprintf(g->error, sizeof(g->error), "%s", ev->error);
    g->done = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata generate -m MODEL -p PROMPT [options]\n"
        "  -m, --model PATH     GGUF model file (or one from strata encrypt-model)\n"
        "      --key-file PATH  key of an encrypted model (32 raw bytes or 64 hex digits)\n"
        "      --key-pkcs11 URI the key unwrapped by a PKCS#11 token (docs/ENCRYPTION.md)\n"
        "  -p, --prompt TEXT    prompt (or -f FILE)\n"
        "  -f, --file PATH      read the prompt from a file\n"
        "      --chat           apply the model's chat template (prompt = user message)\n"
        "      --system TEXT    system message with --chat\n"
        "  -n, --max-tokens N   tokens to generate (default 128)\n"
        "      --temp T         temperature, 0 = greedy (default 0.8)\n"
        "      --top-k K        (default 40)     --top-p P  (default 0.95)\n"
        "      --min-p P        (default 0.05)   --repeat-penalty R (default 1.0)\n"
        "      --seed S         random seed (default 0)\n"
        "      --stop TEXT      stop string (repeatable, up to 8)\n"
        "      --ctx N          context length (default 2048)\n"
        "  -t, --threads N      CPU threads (default: all cores)\n"
        "      --backend NAME   cpu (default) or cuda\n"
        CLI_KV_TYPE_USAGE
        "      --ignore-eos     keep generating past end-of-sequence\n");
}

int st_cmd_generate(int argc, char **argv)
{
    st_engine_params_t ep = st_engine_default_params();
    st_gen_request_t req = st_gen_request_default();
    st_chat_msg_t msgs[2];
    const char *model = NULL, *prompt = NULL, *file = NULL, *system = NULL, *v;
    char *file_buf = NULL;
    int chat = 0, n_stop = 0, rc = 1, ctx_set = 0, kv_set = 0;
    long l;
    double d;
    st_engine_t *e = NULL;
    st_error_t err;
    gen_ctx_t g;
    uint64_t id;

    req.sampling.temperature = 0.8f;
    ep.n_slots = 1;
    ep.max_batch = 512;
    ep.prefill_chunk = 512;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--chat")) chat = 1;
        else if (!strcmp(a, "--ignore-eos")) req.ignore_eos = 1;
        else if (!(v = cli_value(argc, argv, &i))) return 2;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) file = v;
        else if (!strcmp(a, "--system")) system = v;
        else if (!strcmp(a, "--backend")) ep.backend = v;
        else if (!strcmp(a, "--kv-type")) {
            if (cli_kv_type(a, v, &ep.kv_type)) return 2;
            kv_set = 1;
        }
        else if (!strcmp(a, "--key-file") || !strcmp(a, "--key-pkcs11")) {
            if (!(ep.key_file = cli_key_value(a, v))) return 2;
        }
        else if (!strcmp(a, "--stop")) {
            if (n_stop >= ST_GEN_MAX_STOP) { fprintf(stderr, "strata: at most %d --stop\n", ST_GEN_MAX_STOP); return 2; }
            req.stop[n_stop++] = v;
        }
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            if (cli_parse_long(a, v, 1, 1 << 20, &l)) return 2;
            req.max_tokens = (uint32_t)l;
        } else if (!strcmp(a, "--ctx")) {
            if (cli_parse_long(a, v, 16, 1 << 20, &l)) return 2;
            ep.n_ctx = (uint32_t)l;
            ctx_set = 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_long(a, v, 1, 1024, &l)) return 2;
            ep.n_threads = (int)l;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            req.sampling.seed = strtoull(v, &end, 10);
            if (*end || end == v) { fprintf(stderr, "strata: --seed expects an integer\n"); return 2; }
        } else if (!strcmp(a, "--temp")) {
            if (cli_parse_double(a, v, 0, 100, &d)) return 2;
            req.sampling.temperature = (float)d;
        } else if (!strcmp(a, "--top-k")) {
            if (cli_parse_long(a, v, 0, 1 << 30, &l)) return 2;
            req.sampling.top_k = (int32_t)l;
        } else if (!strcmp(a, "--top-p")) {
            if (cli_parse_double(a, v, 0, 1, &d)) return 2;
            req.sampling.top_p = (float)d;
        } else if (!strcmp(a, "--min-p")) {
            if (cli_parse_double(a, v, 0, 1, &d)) return 2;
            req.sampling.min_p = (float)d;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (cli_parse_double(a, v, 0, 100, &d)) return 2;
            req.sampling.repeat_penalty = (float)d;
        } else {
            fprintf(stderr, "strata generate: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model || (!prompt && !file)) {
        usage(stderr);
        return 2;
    }
    if (file) {
        FILE *f = fopen(file, "rb");
        long sz;
        if (!f || fseek(f, 0, SEEK_END) || (sz = ftell(f)) < 0 || sz > (64l << 20) ||
            fseek(f, 0, SEEK_SET)) {
            fprintf(stderr, "strata: cannot read prompt file '%s'\n", file);
            if (f) fclose(f);
            return 1;
        }
        file_buf = calloc(1, (size_t)sz + 1);
        if (!file_buf || fread(file_buf, 1, (size_t)sz, f) != (size_t)sz) {
            fprintf(stderr, "strata: cannot read prompt file '%s'\n", file);
            fclose(f);
            free(file_buf);
            return 1;
        }
        fclose(f);
        prompt = file_buf;
    }
    if (chat) {
        size_t n = 0;
        if (system)
            msgs[n++] = (st_chat_msg_t){"system", system};
        msgs[n++] = (st_chat_msg_t){"user", prompt};
        req.messages = msgs;
        req.n_messages = n;
    } else {
        req.prompt = prompt;
    }
    if (!kv_set)
        ep.kv_type = cli_kv_default(ep.backend);
    /* Without --ctx, make room for the requested tokens past the default. */
    if (!ctx_set && req.max_tokens + 16 > ep.n_ctx)
        ep.n_ctx = req.max_tokens + 2048;
    ep.model_path = model;
    /* Progress only for a person watching: nothing when output is piped. */
    ep.prefetch_progress = isatty(STDOUT_FILENO) && isatty(STDERR_FILENO);

    memset(&g, 0, sizeof(g));
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.cond, NULL);
    st_error_clear(&err);
    uint64_t t0 = st_now_ns();
    if (st_engine_create(&ep, &e, &err) != ST_OK) {
        fprintf(stderr, "strata: %s\n", err.msg);
        goto out;
    }
    uint64_t t1 = st_now_ns();
    if (st_engine_submit(e, &req, on_event, &g, &id, &err) != ST_OK) {
        fprintf(stderr, "strata: %s\n", err.msg);
        goto out;
    }
    pthread_mutex_lock(&g.lock);
    while (!g.done)
        pthread_cond_wait(&g.cond, &g.lock);
    pthread_mutex_unlock(&g.lock);
    fputc('\n', stdout);
    fflush(stdout);
    if (g.last.status != ST_OK) {
        fprintf(stderr, "strata: generation failed: %s\n", g.error[0] ? g.error : st_status_str(g.last.status));
        goto out;
    }
    {
        double load_s = (double)(t1 - t0) * 1e-9;
        double ttft = (double)g.last.ttft_ns * 1e-9;
        double dec = (double)(g.last.total_ns - g.last.ttft_ns) * 1e-9;
        uint32_t ng = g.last.completion_tokens;
        fprintf(stderr, "[load %.2f s | prompt %u tokens in %.3f s (%.1f tok/s) | "
                "%u tokens in %.3f s (%.1f tok/s) | stop: %s]\n",
                load_s, g.last.prompt_tokens, ttft, ttft > 0 ? g.last.prompt_tokens / ttft : 0.0,
                ng, dec, ng > 1 && dec > 0 ? (ng - 1) / dec : 0.0, g.reason);
    }
    rc = 0;
out:
    st_engine_free(e);
    free(file_buf);
    pthread_cond_destroy(&g.cond);
    pthread_mutex_destroy(&g.lock);
    return rc;
}
