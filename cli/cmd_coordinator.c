/*
 * strata coordinator - run a cluster's coordinator (see coordinator/st_cluster.h).
 *
 *   strata coordinator --config configs/cluster.toml
 *   strata coordinator -m MODEL --workers 2 --secret-file S -p "Hello" -n 32
 *   strata coordinator -m MODEL --workers 2 --secret-file S --control-port 7700 --port 8080
 *   strata coordinator -m MODEL --local 2 -p "Hello"        # spawns 2 local workers
 *
 * Waits for the workers, plans the layer split, then either answers the
 * prompt(s) given with -p and exits (one-shot, what the tests and
 * `strata launch` use), or serves the HTTP front door when it is built
 * (the same options as `strata serve`), or, without either, keeps the
 * cluster up until SIGTERM. SIGTERM/SIGINT drain: no new requests, running
 * ones finish, workers are told to leave, exit 0.
 *
 * Ports: --port is the HTTP API's, as in `strata serve`; the control plane
 * the workers join has its own, --control-port (and --control-host), the
 * names `strata launch` uses too. --listen HOST:PORT is the older spelling
 * of the control address and means nothing else.
 *
 * A config file is a small TOML subset: `key = value` lines (strings in
 * double quotes, numbers, true/false), `#` comments and [section] headers
 * that only group. Each key is the long option of the same name
 * (`secret_file = "s"` is `--secret-file s`; `verify = false` is
 * `--no-verify`); options on the command line after --config win.
 */
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"

const char st_cmd_coordinator_help[] = "run a cluster coordinator (workers join it; one-shot -p or HTTP)";

#ifndef STRATA_HAVE_CLUSTER
int st_cmd_coordinator(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "strata coordinator: built without cluster support (needs UCX and OpenSSL)\n");
    return 1;
}
#else
#include "st_cluster.h"
#include "st_engine.h"
#include "st_util.h"
#ifdef STRATA_HAVE_HTTP
#include "st_http.h"
#endif

#define MAX_ARGS 256
#define MAX_STREAMS 64

static volatile sig_atomic_t coord_stop;
/* Where the answer goes: the original stdout. Everything else that a
 * library prints to stdout (UCX writes its warnings there, and reads its
 * log settings before main) is sent to stderr, so stdout is the answer. */
static FILE *answer_out;

static void on_signal(int sig)
{
    (void)sig;
    coord_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata coordinator [--config FILE] -m MODEL [options]\n"
        "cluster:\n"
        "  -m, --model PATH        model (this host's copy: plan sizes and SHA-256 manifest)\n"
        "  --worker-model PATH     path the workers open (default: the same)\n"
        "  --key-pkcs11 URI        the key unwrapped by a PKCS#11 token (docs/ENCRYPTION.md)\n"
        "  --key-file K            key of an encrypted model (strata encrypt-model): it is\n"
        "                          decrypted here into memory; workers need the encrypted\n"
        "                          file and K (--local passes both), shards of it are\n"
        "                          never streamed\n"
        "  --control-port P        control plane port the workers join (default 7700;\n"
        "                          the HTTP API's port is --port)\n"
        "  --control-host H        address the control plane listens on (default 0.0.0.0)\n"
        "  --listen H:P            older spelling of --control-host H --control-port P\n"
        "  --data-listen HOST:PORT no longer opens a listener (the data plane connects by\n"
        "                          UCX worker address); a specific HOST only picks the\n"
        "                          interface of UCX's TCP transport, the port is unused\n"
        "  --workers N             workers to wait for before planning (default 1)\n"
        "  --local N               start N local worker processes (random secret)\n"
        "  --worker-mem SIZE       with --local: memory each worker offers the planner\n"
        "                          (512MiB, 2G; default its MemAvailable): a model larger\n"
        "                          than that is split over the workers or refused\n"
        "  --secret-file F         cluster secret (default: $STRATA_CLUSTER_SECRET)\n"
        "  --split A,B,...         layers per stage (default: the topology planner)\n"
        "  --ctx N --slots N --batch N   context, sequences, tokens per micro-batch\n"
        "  -t, --threads N         compute threads per worker\n"
        "  --kv-type T             KV cache elements on every stage: f16 (default), f32, q8_0\n"
        "  --prefix-cache MIB      KV rows kept for prompt-prefix reuse, split over the\n"
        "                          stages with their layers (default 256; 0: off)\n"
        "  --transport TLS         UCX_TLS for the data plane (tcp, sm, ...)\n"
        "  --no-verify             skip the SHA-256 check of the workers' model copies\n"
        "  --no-bind               workers do not apply their placement\n"
        "  --join-timeout S        wait this long for the workers (default 60)\n"
        "  --heartbeat-ms N --dead-after-ms N --recover-wait-ms N\n"
        "  --no-replan-on-join     a worker joining a running cluster waits as a standby\n"
        "                          (default: re-plan over all workers at a safe point)\n"
        "  --replan-wait-ms N      that re-plan waits this long for running sequences,\n"
        "                          which then fail (default 30000)\n"
        "one-shot generation (prints the completion, then drains and exits):\n"
        "  -p, --prompt TEXT  -n, --max-tokens N  --temp T  --top-k K  --top-p P\n"
        "  --min-p P  --repeat-penalty R  --seed S  --ignore-eos  --chat\n"
        "  --parallel N            submit the prompt N times at once (seeds S, S+1, ...)\n"
        "  --repeat N              run the request N times, one after the other; the exit\n"
        "                          status is the last one's\n"
        "  --stats                 print per-stage figures to stderr at the end\n"
#ifdef STRATA_HAVE_HTTP
        "front door (without -p):\n%s", st_http_config_usage()
#else
        "(built without the HTTP front door: without -p the cluster waits for SIGTERM)\n"
#endif
        );
}

/* ---- config file -> argv ------------------------------------------------ */

typedef struct args {
    int   argc;
    char *argv[MAX_ARGS];
    char *owned[MAX_ARGS];
    int   n_owned;
} args_t;

static int push(args_t *a, char *s, int owned)
{
    if (a->argc >= MAX_ARGS - 1) {
        fprintf(stderr, "strata coordinator: too many options\n");
        return -1;
    }
    a->argv[a->argc++] = s;
    if (owned)
        a->owned[a->n_owned++] = s;
    return 0;
}

static int load_config(const char *path, args_t *a)
{
    char line[2048];
    int lineno = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "strata coordinator: cannot open config %s\n", path);
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char *s = line, *eq, *key, *val, *end, opt[128];
        lineno++;
        while (isspace((unsigned char)*s))
            s++;
        if (!*s || *s == '#' || *s == '[')
            continue;
        eq = strchr(s, '=');
        if (!eq)
            goto bad;
        *eq = '\0';
        key = s;
        for (end = eq; end > key && isspace((unsigned char)end[-1]); end--)
            ;
        *end = '\0';
        val = eq + 1;
        while (isspace((unsigned char)*val))
            val++;
        if (*val == '"') {
            char *q = strchr(val + 1, '"');
            if (!q)
                goto bad;
            *q = '\0';
            val++;
        } else {
            char *h = strchr(val, '#');
            if (h)
                *h = '\0';
            for (end = val + strlen(val); end > val && isspace((unsigned char)end[-1]); end--)
                ;
            *end = '\0';
        }
        if (!*key || strlen(key) > 100)
            goto bad;
        for (char *k = key; *k; k++)
            if (*k == '_')
                *k = '-';
        if (!strcmp(val, "true") || !strcmp(val, "false")) {
            snprintf(opt, sizeof(opt), "--%s%s", !strcmp(val, "false") ? "no-" : "", key);
            if (push(a, strdup(opt), 1))
                goto fail;
            continue;
        }
        snprintf(opt, sizeof(opt), "--%s", key);
        if (push(a, strdup(opt), 1) || push(a, strdup(val), 1))
            goto fail;
    }
    fclose(f);
    return 0;
bad:
    fprintf(stderr, "strata coordinator: %s:%d: expected `key = value`\n", path, lineno);
fail:
    fclose(f);
    return -1;
}

/* ---- one-shot generation ----------------------------------------------- */

typedef struct stream {
    char  *text;
    size_t len, cap;
    int    done;
    char   reason[16];
    char   error[512];
    uint32_t n_gen;
    double total_s;
} stream_t;

typedef struct oneshot {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    stream_t        s[MAX_STREAMS];
    int             live;        /* print stream 0 as it comes */
} oneshot_t;

typedef struct cb_ctx {
    oneshot_t *o;
    int        i;
} cb_ctx_t;

static void on_event(void *user, const st_gen_event_t *ev)
{
    cb_ctx_t *c = user;
    oneshot_t *o = c->o;
    stream_t *s = &o->s[c->i];

    pthread_mutex_lock(&o->lock);
    if (ev->type == ST_GEN_TOKEN && ev->len) {
        if (o->live) {
            fwrite(ev->text, 1, ev->len, answer_out);
            fflush(answer_out);
        } else {
            if (s->len + ev->len + 1 > s->cap) {
                size_t cap = (s->cap + ev->len + 1) * 2;
                char *t = realloc(s->text, cap);
                if (t) {
                    s->text = t;
                    s->cap = cap;
                }
            }
            if (s->len + ev->len + 1 <= s->cap) {
                memcpy(s->text + s->len, ev->text, ev->len);
                s->len += ev->len;
                s->text[s->len] = '\0';
            }
        }
    } else if (ev->type == ST_GEN_DONE) {
        s->done = 1;
        s->n_gen = ev->completion_tokens;
        s->total_s = (double)ev->total_ns / 1e9;
        snprintf(s->reason, sizeof(s->reason), "%s", ev->finish_reason ? ev->finish_reason : "");
        if (ev->error)
            snprintf(s->error, sizeof(s->error), "%s", ev->error);
        pthread_cond_broadcast(&o->cond);
    }
    pthread_mutex_unlock(&o->lock);
}

static void print_stats(st_cluster_t *c)
{
    st_cluster_stats_t cs;
    st_cluster_refresh(c, 2000);
    st_cluster_stats(c, &cs);
    fprintf(stderr, "cluster: %u stages, epoch %u, %llu micro-batches, round trip %.1f us\n",
            cs.n_stages, cs.epoch, (unsigned long long)cs.mbs, cs.rtt_us);
    for (uint32_t s = 0; s < cs.n_stages; s++)
        fprintf(stderr, "  stage %u %-16s layers [%2u,%2u) compute %8.1f us  hop-in %6.1f us  "
                "load %.2f s  rss %.1f MB  peak %.1f MB\n", s, cs.worker[s], cs.first_layer[s],
                cs.last_layer[s], cs.compute_us[s], cs.hop_us[s], (double)cs.load_ns[s] / 1e9,
                (double)cs.rss_bytes[s] / 1e6, (double)cs.rss_peak_bytes[s] / 1e6);
    if (cs.n_stages)
        fprintf(stderr, "  hop back to the coordinator %.1f us\n", cs.hop_us[cs.n_stages]);
}

static int run_oneshot(st_engine_t *e, const st_gen_request_t *base, int chat, int n_par,
                       int round, int rounds)
{
    oneshot_t *o = calloc(1, sizeof(*o));
    cb_ctx_t ctx[MAX_STREAMS];
    st_chat_msg_t msg;
    int rc = 0, drained = 0;

    if (!o)
        return 1;
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->cond, NULL);
    o->live = n_par == 1 && rounds == 1;
    for (int i = 0; i < n_par; i++) {
        st_gen_request_t r = *base;
        st_error_t err;
        ctx[i].o = o;
        ctx[i].i = i;
        r.sampling.seed = base->sampling.seed + (uint64_t)i;
        if (chat) {
            msg.role = "user";
            msg.content = base->prompt;
            r.messages = &msg;
            r.n_messages = 1;
            r.prompt = NULL;
        }
        st_error_clear(&err);
        if (st_engine_submit(e, &r, on_event, &ctx[i], NULL, &err) != ST_OK) {
            fprintf(stderr, "strata coordinator: %s\n", err.msg);
            o->s[i].done = 1;
            snprintf(o->s[i].error, sizeof(o->s[i].error), "%s", err.msg);
        }
    }
    pthread_mutex_lock(&o->lock);
    for (;;) {
        int all = 1;
        for (int i = 0; i < n_par; i++)
            all &= o->s[i].done;
        if (all)
            break;
        if (coord_stop && !drained) {
            /* SIGTERM: stop admitting, let running requests finish. */
            pthread_mutex_unlock(&o->lock);
            fprintf(stderr, "strata coordinator: draining\n");
            (void)st_engine_drain(e, 120000);
            drained = 1;
            pthread_mutex_lock(&o->lock);
            continue;
        }
        {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&o->cond, &o->lock, &ts);
        }
    }
    pthread_mutex_unlock(&o->lock);
    if (o->live)
        fputc('\n', answer_out);
    for (int i = 0; i < n_par; i++) {
        stream_t *s = &o->s[i];
        if (!o->live && rounds > 1)
            fprintf(answer_out, "--- request %d stream %d ---\n%s\n", round, i,
                    s->text ? s->text : "");
        else if (!o->live)
            fprintf(answer_out, "--- stream %d ---\n%s\n", i, s->text ? s->text : "");
        if (s->error[0]) {
            fprintf(stderr, "strata coordinator: request %d stream %d failed: %s\n", round, i,
                    s->error);
            rc = 1;
        } else {
            fprintf(stderr, "request %d stream %d: %u tokens in %.2f s (%s)\n", round, i,
                    s->n_gen, s->total_s, s->reason);
        }
        free(s->text);
    }
    fflush(answer_out);
    pthread_cond_destroy(&o->cond);
    pthread_mutex_destroy(&o->lock);
    free(o);
    return rc;
}

#ifdef STRATA_HAVE_HTTP
static uint32_t stage_stats(void *ctx, st_http_stage_stats_t *out, uint32_t cap)
{
    st_cluster_t *c = ctx;
    st_cluster_stats_t cs;
    uint32_t n;
    st_cluster_stats(c, &cs);
    n = ST_MIN(cs.n_stages, cap);
    for (uint32_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        out[i].stage = i;
        out[i].up = cs.healthy;
        out[i].compute_s = cs.compute_us[i] * 1e-6 * (double)cs.mbs;
        out[i].hop_latency_s = cs.hop_us[i + 1] > 0 ? cs.hop_us[i + 1] * 1e-6 : 0;
        snprintf(out[i].host, sizeof(out[i].host), "%s", cs.worker[i]);
    }
    return n;
}
#endif

/* ---- main --------------------------------------------------------------- */

/* --control-host / --control-port over --listen's parts, over the default
 * 0.0.0.0:7700 (a local cluster keeps its own default when none is given). */
static int control_addr(const char *listen, const char *host, long port, char *buf,
                        size_t len)
{
    char lhost[256] = "0.0.0.0";
    uint16_t lport = ST_CLI_CONTROL_PORT;
    st_error_t err;

    st_error_clear(&err);
    if (listen && st_ctrl_parse_addr(listen, lhost, sizeof(lhost), &lport, &err) != ST_OK) {
        fprintf(stderr, "strata coordinator: --listen: %s\n", err.msg);
        return -1;
    }
    if (host)
        snprintf(lhost, sizeof(lhost), "%s", host);
    if (port >= 0)
        lport = (uint16_t)port;
    snprintf(buf, len, strchr(lhost, ':') ? "[%s]:%u" : "%s:%u", lhost, (unsigned)lport);
    return 0;
}

int st_cmd_coordinator(int argc, char **argv)
{
    return st_cmd_coordinator_run(argc, argv, NULL);
}

int st_cmd_coordinator_run(int argc, char **argv, const st_cli_secret_t *secret)
{
    st_cluster_params_t cp = st_cluster_default_params();
    cp.prefix_cache_bytes = CLI_PREFIX_CACHE_DEFAULT;
    st_engine_params_t ep = st_engine_default_params();
    st_gen_request_t req = st_gen_request_default();
#ifdef STRATA_HAVE_HTTP
    st_http_config_t hc = st_http_config_default();
#endif
    const char *secret_file = NULL, *ctl_host = NULL, *v;
    char ctl_addr[300];
    args_t *a = calloc(1, sizeof(*a));
    st_cluster_t *cluster = NULL;
    st_engine_t *e = NULL;
    st_pipeline_t pipe;
    st_error_t err;
    long l, local = 0, n_par = 1, repeat = 1, ctl_port = -1;
    double d;
    int rc = 2, chat = 0, stats = 0;
    struct sigaction sa;

    if (!a)
        return 1;
    req.sampling.temperature = 0.0f;  /* greedy unless asked: comparable output */
    push(a, argv[0], 0);
    /* --config expands in place: later options override it. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc || load_config(argv[++i], a))
                goto out;
        } else if (push(a, argv[i], 0)) {
            goto out;
        }
    }
    for (int i = 1; i < a->argc; i++) {
        const char *o = a->argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            rc = 0;
            goto out;
        }
        if (!strcmp(o, "--no-verify")) { cp.verify = 0; continue; }
        if (!strcmp(o, "--verify")) { cp.verify = 1; continue; }
        if (!strcmp(o, "--no-bind")) { cp.bind = 0; continue; }
        if (!strcmp(o, "--bind")) { cp.bind = 1; continue; }
        if (!strcmp(o, "--no-replan-on-join")) { cp.replan_on_join = 0; continue; }
        if (!strcmp(o, "--replan-on-join")) { cp.replan_on_join = 1; continue; }
        if (!strcmp(o, "--ignore-eos")) { req.ignore_eos = 1; continue; }
        if (!strcmp(o, "--chat")) { chat = 1; continue; }
        if (!strcmp(o, "--stats")) { stats = 1; continue; }
#ifdef STRATA_HAVE_HTTP
        {
            st_status_t hs;
            st_error_clear(&err);
            hs = st_http_config_parse_opt(&hc, a->argc, a->argv, &i, &err);
            if (hs == ST_OK)
                continue;
            if (hs != ST_ERR_NOT_FOUND) {
                fprintf(stderr, "strata coordinator: %s\n", err.msg);
                goto out;
            }
        }
#endif
        if (!(v = cli_value(a->argc, a->argv, &i)))
            goto out;
        if (!strcmp(o, "-m") || !strcmp(o, "--model")) cp.model_path = v;
        else if (!strcmp(o, "--worker-model")) cp.worker_model_path = v;
        else if (!strcmp(o, "--key-file") || !strcmp(o, "--key-pkcs11")) {
            if (!(cp.key_file = cli_key_value(o, v))) goto out;
        }
        else if (!strcmp(o, "--listen")) cp.listen = v;
        else if (!strcmp(o, "--control-host")) ctl_host = v;
        else if (!strcmp(o, "--data-listen")) cp.data_listen = v;
        else if (!strcmp(o, "--secret-file")) secret_file = v;
        else if (!strcmp(o, "--split")) cp.split = v;
        else if (!strcmp(o, "--transport")) cp.transport_tls = v;
        else if (!strcmp(o, "-p") || !strcmp(o, "--prompt")) req.prompt = v;
        else if (!strcmp(o, "--control-port")) {
            if (cli_parse_long(o, v, 0, 65535, &ctl_port)) goto out;
        }
        else if (!strcmp(o, "--worker-mem")) {
            if (cli_parse_size(o, v, &cp.worker_mem_bytes)) goto out;
        }
        else if (!strcmp(o, "--workers") || !strcmp(o, "--local")) {
            if (cli_parse_long(o, v, 1, 16, &l)) goto out;
            cp.n_workers = (uint32_t)l;
            if (!strcmp(o, "--local"))
                local = l;
        } else if (!strcmp(o, "--ctx")) {
            if (cli_parse_long(o, v, 16, 1 << 20, &l)) goto out;
            cp.n_ctx = (uint32_t)l;
        } else if (!strcmp(o, "--slots")) {
            if (cli_parse_long(o, v, 1, 4096, &l)) goto out;
            cp.n_slots = (uint32_t)l;
        } else if (!strcmp(o, "--batch")) {
            if (cli_parse_long(o, v, 1, 65536, &l)) goto out;
            cp.max_batch = (uint32_t)l;
        } else if (!strcmp(o, "-t") || !strcmp(o, "--threads")) {
            if (cli_parse_long(o, v, 1, 4096, &l)) goto out;
            cp.n_threads = (int)l;
        } else if (!strcmp(o, "--kv-type")) {
            if (cli_kv_type(o, v, &cp.kv_type)) goto out;
        } else if (!strcmp(o, "--prefix-cache")) {
            if (cli_parse_long(o, v, 0, 1 << 20, &l)) goto out;
            cp.prefix_cache_bytes = (uint64_t)l << 20;
        } else if (!strcmp(o, "--join-timeout")) {
            if (cli_parse_long(o, v, 1, 86400, &l)) goto out;
            cp.join_timeout_ms = (uint32_t)l * 1000u;
        } else if (!strcmp(o, "--heartbeat-ms")) {
            if (cli_parse_long(o, v, 10, 600000, &l)) goto out;
            cp.heartbeat_ms = (uint32_t)l;
        } else if (!strcmp(o, "--dead-after-ms")) {
            if (cli_parse_long(o, v, 50, 3600000, &l)) goto out;
            cp.dead_after_ms = (uint32_t)l;
        } else if (!strcmp(o, "--recover-wait-ms")) {
            if (cli_parse_long(o, v, 0, 3600000, &l)) goto out;
            cp.recover_wait_ms = (uint32_t)l;
        } else if (!strcmp(o, "--replan-wait-ms")) {
            if (cli_parse_long(o, v, 0, 3600000, &l)) goto out;
            cp.replan_wait_ms = (uint32_t)l;
        } else if (!strcmp(o, "-n") || !strcmp(o, "--max-tokens")) {
            if (cli_parse_long(o, v, 1, 1 << 20, &l)) goto out;
            req.max_tokens = (uint32_t)l;
        } else if (!strcmp(o, "--temp")) {
            if (cli_parse_double(o, v, 0, 100, &d)) goto out;
            req.sampling.temperature = (float)d;
        } else if (!strcmp(o, "--top-k")) {
            if (cli_parse_long(o, v, 0, 1 << 20, &l)) goto out;
            req.sampling.top_k = (int32_t)l;
        } else if (!strcmp(o, "--top-p")) {
            if (cli_parse_double(o, v, 0, 1, &d)) goto out;
            req.sampling.top_p = (float)d;
        } else if (!strcmp(o, "--min-p")) {
            if (cli_parse_double(o, v, 0, 1, &d)) goto out;
            req.sampling.min_p = (float)d;
        } else if (!strcmp(o, "--repeat-penalty")) {
            if (cli_parse_double(o, v, 0, 100, &d)) goto out;
            req.sampling.repeat_penalty = (float)d;
        } else if (!strcmp(o, "--seed")) {
            if (cli_parse_long(o, v, 0, (long)(~0ul >> 1), &l)) goto out;
            req.sampling.seed = (uint64_t)l;
        } else if (!strcmp(o, "--parallel")) {
            if (cli_parse_long(o, v, 1, MAX_STREAMS, &n_par)) goto out;
        } else if (!strcmp(o, "--repeat")) {
            if (cli_parse_long(o, v, 1, 1000, &repeat)) goto out;
        } else {
            fprintf(stderr, "strata coordinator: unknown option '%s'\n", o);
            usage(stderr);
            goto out;
        }
    }
    if (!cp.model_path) {
        usage(stderr);
        goto out;
    }
    if (ctl_host || ctl_port >= 0) {
        if (control_addr(cp.listen, ctl_host, ctl_port, ctl_addr, sizeof(ctl_addr)))
            goto out;
        cp.listen = ctl_addr;
    }
    rc = 1;
    st_error_clear(&err);
    cp.n_slots = ST_MAX(cp.n_slots, (uint32_t)n_par);
    answer_out = stdout;
    if (req.prompt) {
        int fd = dup(STDOUT_FILENO);
        FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (f) {
            fflush(stdout);
            answer_out = f;
            dup2(STDERR_FILENO, STDOUT_FILENO);
        } else if (fd >= 0) {
            close(fd);
        }
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (local) {
        if (st_cluster_local_create(&cp, &pipe, &err) != ST_OK) {
            fprintf(stderr, "strata coordinator: %s\n", err.msg);
            goto out;
        }
        cluster = pipe.ctx;
    } else {
        if (secret && secret->len >= ST_CTRL_SECRET_MIN && secret->len <= sizeof(cp.secret)) {
            memcpy(cp.secret, secret->bytes, secret->len);
            cp.secret_len = secret->len;
        } else if (secret) {
            fprintf(stderr, "strata coordinator: bad in-memory secret (%zu bytes)\n",
                    secret->len);
            goto out;
        } else if (st_ctrl_secret_load(secret_file, cp.secret, sizeof(cp.secret),
                                       &cp.secret_len, &err) != ST_OK) {
            fprintf(stderr, "strata coordinator: %s\n", err.msg);
            goto out;
        }
        if (st_cluster_create(&cp, &cluster, &err) != ST_OK) {
            fprintf(stderr, "strata coordinator: %s\n", err.msg);
            goto out;
        }
        st_cluster_pipeline(cluster, &pipe);
    }
    ep.model_path = cp.model_path;
    ep.n_ctx = cp.n_ctx;
    ep.n_slots = cp.n_slots;
    ep.max_batch = ST_MAX(cp.max_batch, cp.n_slots);
    ep.pipeline = &pipe;
    if (st_engine_create(&ep, &e, &err) != ST_OK) {
        fprintf(stderr, "strata coordinator: %s\n", err.msg);
        goto out;   /* the engine destroyed the pipeline it was handed */
    }
    if (req.prompt) {
        /* --repeat: the same request again after each completes (the fault
         * tests kill a worker during one and expect the next to succeed). */
        rc = 0;
        for (long r = 0; r < repeat && !coord_stop; r++)
            rc = run_oneshot(e, &req, chat, (int)n_par, (int)r, (int)repeat);
        if (stats)
            print_stats(cluster);
    } else {
#ifdef STRATA_HAVE_HTTP
        /* The front door installs its own SIGTERM drain. */
        hc.model_path = cp.model_path;
        hc.stage_stats = stage_stats;
        hc.stage_stats_ctx = cluster;
        if (st_http_config_check(&hc, &err) != ST_OK ||
            st_http_server_run(e, &hc, &err) != ST_OK) {
            fprintf(stderr, "strata coordinator: %s\n", err.msg);
            goto out;
        }
        rc = 0;
#else
        fprintf(stderr, "strata coordinator: cluster up at %s; waiting for SIGTERM\n",
                st_cluster_address(cluster));
        while (!coord_stop)
            usleep(100000);
        (void)st_engine_drain(e, 60000);
        rc = 0;
#endif
    }
out:
    st_engine_free(e);   /* destroys the pipeline: drains and stops the workers */
    explicit_bzero(cp.secret, sizeof(cp.secret));
    if (answer_out && answer_out != stdout)
        fclose(answer_out);
    for (int i = 0; i < a->n_owned; i++)
        free(a->owned[i]);
    free(a);
    return rc;
}
#endif
