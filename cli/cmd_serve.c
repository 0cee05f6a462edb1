/*
 * strata serve - the coordinator with its front door: loads the model,
 * runs the engine (in this process, or over N local worker processes with
 * --workers N) and serves the OpenAI-compatible API until SIGTERM/SIGINT,
 * then drains in-flight requests and exits 0. See docs/HTTP.md.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"

#ifdef STRATA_HAVE_HTTP
#include "st_engine.h"
#include "st_http.h"
#if defined(__has_include)
#if __has_include("st_cluster.h")
#include "st_cluster.h"
#define SERVE_HAVE_CLUSTER 1
#endif
#endif
#endif

const char st_cmd_serve_help[] = "serve the OpenAI-compatible HTTP API (coordinator + workers)";

#ifndef STRATA_HAVE_HTTP
int st_cmd_serve(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "strata serve: built without HTTP (libevent, jansson, OpenSSL)\n");
    return 1;
}
#else

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata serve -m MODEL [--workers N] [--host H] [--port P] [--keys FILE]\n"
        "                    [--tls-cert C --tls-key K] [--audit-log F] [options]\n"
        "engine:\n"
        "  -m, --model PATH         GGUF model file (or one from strata encrypt-model)\n"
        "      --key-file PATH      key of an encrypted model; with --workers each local\n"
        "                           worker is given the file and the key\n"
        "      --key-pkcs11 URI     the key unwrapped by a PKCS#11 token (pin-source=file:)\n"
        "      --workers N          run N local worker processes (0: in this process)\n"
        "      --worker-mem SIZE    memory each local worker offers the planner (512MiB,\n"
        "                           2G; default its MemAvailable)\n"
        "      --slots N            sequences decoded together (default 8)\n"
        "      --ctx N              tokens per sequence (default 2048)\n"
        "      --max-queue N        waiting requests before 503 (default 1000)\n"
        "  -t, --threads N          CPU threads (default: all cores)\n"
        "      --backend NAME       cpu (default) or cuda\n"
        "      --kv-type T          KV cache elements on every stage: f16 (default; f32 on\n"
        "                           cuda), f32, q8_0\n"
        "      --prefix-cache MIB   KV rows kept for reuse by requests sharing a prompt\n"
        "                           prefix, over all stages (default 256; 0: off)\n"
        "%s", st_http_config_usage());
}

/* With workers, /metrics and /admin/status show one entry per stage from
 * the pipeline's own report (up or not). */
static uint32_t pipeline_stages(void *ctx, st_http_stage_stats_t *out, uint32_t cap)
{
    const st_pipeline_t *p = ctx;
    st_pipeline_info_t info;
    uint32_t n;
    memset(&info, 0, sizeof(info));
    p->ops->info(p->ctx, &info);
    n = info.n_stages < cap ? info.n_stages : cap;
    for (uint32_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        out[i].stage = i;
        out[i].up = info.healthy;
        snprintf(out[i].host, sizeof(out[i].host), "worker %u", i);
    }
    return n;
}

int st_cmd_serve(int argc, char **argv)
{
    st_engine_params_t ep = st_engine_default_params();
    st_http_config_t hc = st_http_config_default();
    st_engine_t *e = NULL;
    st_pipeline_t pipe;
    st_error_t err;
    const char *v;
    long workers = 0, l;
    uint64_t worker_mem = 0;
    int rc = 1, kv_set = 0;

    memset(&pipe, 0, sizeof(pipe));
    ep.n_slots = 8;
    ep.max_batch = 256;
    ep.prefill_chunk = 128;
    ep.prefix_cache_bytes = CLI_PREFIX_CACHE_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        st_status_t st;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        st_error_clear(&err);
        st = st_http_config_parse_opt(&hc, argc, argv, &i, &err);
        if (st == ST_OK)
            continue;
        if (st != ST_ERR_NOT_FOUND) {
            fprintf(stderr, "strata serve: %s\n", err.msg);
            return 2;
        }
        if (!(v = cli_value(argc, argv, &i)))
            return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            ep.model_path = v;
        } else if (!strcmp(a, "--key-file") || !strcmp(a, "--key-pkcs11")) {
            if (!(ep.key_file = cli_key_value(a, v))) return 2;
        } else if (!strcmp(a, "--backend")) {
            ep.backend = v;
        } else if (!strcmp(a, "--kv-type")) {
            if (cli_kv_type(a, v, &ep.kv_type)) return 2;
            kv_set = 1;
        } else if (!strcmp(a, "--prefix-cache")) {
            if (cli_parse_long(a, v, 0, 1 << 20, &l)) return 2;
            ep.prefix_cache_bytes = (uint64_t)l << 20;
        } else if (!strcmp(a, "--workers")) {
            if (cli_parse_long(a, v, 0, 64, &workers)) return 2;
        } else if (!strcmp(a, "--worker-mem")) {
            if (cli_parse_size(a, v, &worker_mem)) return 2;
        } else if (!strcmp(a, "--slots")) {
            if (cli_parse_long(a, v, 1, 4096, &l)) return 2;
            ep.n_slots = (uint32_t)l;
        } else if (!strcmp(a, "--ctx")) {
            if (cli_parse_long(a, v, 16, 1 << 20, &l)) return 2;
            ep.n_ctx = (uint32_t)l;
        } else if (!strcmp(a, "--max-queue")) {
            if (cli_parse_long(a, v, 1, 1 << 24, &l)) return 2;
            ep.max_queue = (uint32_t)l;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_long(a, v, 1, 1024, &l)) return 2;
            ep.n_threads = (int)l;
        } else {
            fprintf(stderr, "strata serve: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!ep.model_path) {
        usage(stderr);
        return 2;
    }
    hc.model_path = ep.model_path;
    if (!kv_set)
        ep.kv_type = cli_kv_default(workers > 0 ? "cpu" : ep.backend);
    st_error_clear(&err);
    if (st_http_config_check(&hc, &err) != ST_OK) {
        fprintf(stderr, "strata serve: %s\n", err.msg);
        return 2;
    }
    /* A client that goes away mid-answer must not kill the server. */
    signal(SIGPIPE, SIG_IGN);

    if (workers > 0) {
#ifdef SERVE_HAVE_CLUSTER
        st_cluster_params_t cp = st_cluster_default_params();
        cp.model_path = ep.model_path;
        cp.key_file = ep.key_file;
        cp.n_workers = (uint32_t)workers;
        cp.worker_mem_bytes = worker_mem;
        cp.n_ctx = ep.n_ctx;
        cp.n_slots = ep.n_slots;
        cp.max_batch = ep.max_batch;
        cp.n_threads = ep.n_threads;
        cp.kv_type = ep.kv_type;
        cp.prefix_cache_bytes = ep.prefix_cache_bytes;
        if (st_cluster_local_create(&cp, &pipe, &err) != ST_OK) {
            fprintf(stderr, "strata serve: cannot start %ld workers: %s\n", workers, err.msg);
            return 1;
        }
        ep.pipeline = &pipe;
        hc.stage_stats = pipeline_stages;
        hc.stage_stats_ctx = &pipe;
#else
        (void)worker_mem;
        fprintf(stderr, "strata serve: --workers is not available yet in this build (no "
                "st_cluster.h); use --workers 0\n");
        return 2;
#endif
    }
    ep.prefetch_progress = isatty(STDERR_FILENO);
    if (st_engine_create(&ep, &e, &err) != ST_OK) {
        fprintf(stderr, "strata serve: %s\n", err.msg);
        /* A pipeline handed to the engine is the engine's, even on failure. */
        return 1;
    }
    if (st_http_server_run(e, &hc, &err) != ST_OK) {
        fprintf(stderr, "strata serve: %s\n", err.msg);
        goto out;
    }
    rc = 0;
out:
    st_engine_free(e);
    return rc;
}
#endif
