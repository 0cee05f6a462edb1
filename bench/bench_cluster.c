/*
 * strata bench cluster - what distributing a model costs and what
 * pipelining buys, on one machine.
 *
 *   strata bench cluster -m MODEL [--stages 1,2,3] [--streams 1,4,16] [-t T]
 *                        [--tokens N] [--transport tcp] [--worker-mem SIZE] [--json]
 *
 * Measures, each against the same engine with the local pipeline (one
 * process, T threads) as the reference:
 *  - single-stream decode tokens/s and per-token latency (mean, p50, p99 of
 *    the gaps between tokens) for S = 1, 2, 3 local worker processes with T
 *    threads each (workers talk over shared memory by default; --transport
 *    tcp forces TCP);
 *  - aggregate decode tokens/s with 1, 4 and 16 concurrent streams through
 *    S = 2 stages (the goal: >= 0.8 x S x the single-stream speed of one
 *    process once streams >= S);
 *  - per-hop transport time measured inside the pipeline (timestamps each
 *    stage writes into the micro-batch frame: coordinator -> stage 0 ->
 *    ... -> coordinator) and per-stage compute time;
 *  - each worker's peak resident memory and load time.
 * --worker-mem gives each local worker a memory budget for the planner, so a
 * model larger than it is split (bench/cluster_scale.sh runs that matrix).
 * Decode speed counts tokens after the first of each stream (prefill and
 * time to first token excluded); aggregate speed is all generated tokens
 * over the wall time from the first token to the last. Every figure is the
 * median of --reps runs (3); per-hop and per-stage times are averages over
 * all runs.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"

const char st_bench_cluster_help[] = "decode speed through 1-3 local pipeline stages vs one process";

#ifndef STRATA_HAVE_CLUSTER
int st_bench_cluster(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "strata bench cluster: built without cluster support (needs UCX and OpenSSL)\n");
    return 1;
}
#else
#include "st_cluster.h"
#include "st_engine.h"
#include "st_util.h"

#define MAX_STREAMS 64
#define MAX_TOK 4096

typedef struct stream {
    uint64_t *t;        /* arrival time of each token */
    uint32_t  n;
    int       done;
    char      error[256];
} stream_t;

typedef struct run {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    stream_t        s[MAX_STREAMS];
    uint32_t        cap;
} run_t;

typedef struct cbarg {
    run_t   *r;
    uint32_t i;
} cbarg_t;

static void on_event(void *user, const st_gen_event_t *ev)
{
    cbarg_t *a = user;
    stream_t *s = &a->r->s[a->i];
    pthread_mutex_lock(&a->r->lock);
    if (ev->type == ST_GEN_TOKEN && ev->token_id >= 0) {
        if (s->n < a->r->cap)
            s->t[s->n] = st_now_ns();
        s->n++;
    } else if (ev->type == ST_GEN_DONE) {
        s->done = 1;
        if (ev->error)
            snprintf(s->error, sizeof(s->error), "%s", ev->error);
        pthread_cond_broadcast(&a->r->cond);
    }
    pthread_mutex_unlock(&a->r->lock);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    double tok_s;            /* single stream: decode; many: aggregate */
    double lat_ms, p50_ms, p99_ms;
    uint32_t tokens;
} result_t;

/* Runs n_streams copies of the request at once and measures them. */
static int measure(st_engine_t *e, uint32_t n_streams, uint32_t n_tok, result_t *out)
{
    static const char *prompts[4] = {
        "Once upon a time, in a small village,", "The history of the printing press",
        "Write a short poem about the sea.", "In computer science, a linked list is"};
    run_t *r = calloc(1, sizeof(*r));
    cbarg_t args[MAX_STREAMS];
    uint64_t first = UINT64_MAX, last = 0, *gaps = NULL;
    uint32_t n_gaps = 0, total = 0;
    int rc = 0;

    if (!r)
        return -1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->cap = n_tok;
    for (uint32_t i = 0; i < n_streams; i++) {
        st_gen_request_t q = st_gen_request_default();
        st_error_t err;
        r->s[i].t = calloc(n_tok, sizeof(uint64_t));
        args[i].r = r;
        args[i].i = i;
        q.prompt = prompts[i % 4];
        q.max_tokens = n_tok;
        q.ignore_eos = 1;
        q.sampling.temperature = 0.0f;
        st_error_clear(&err);
        if (!r->s[i].t || st_engine_submit(e, &q, on_event, &args[i], NULL, &err) != ST_OK) {
            fprintf(stderr, "bench cluster: submit failed: %s\n", err.msg);
            r->s[i].done = 1;
            rc = -1;
        }
    }
    pthread_mutex_lock(&r->lock);
    for (;;) {
        uint32_t done = 0;
        for (uint32_t i = 0; i < n_streams; i++)
            done += (uint32_t)r->s[i].done;
        if (done == n_streams)
            break;
        pthread_cond_wait(&r->cond, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);

    gaps = calloc((size_t)n_streams * n_tok, sizeof(uint64_t));
    for (uint32_t i = 0; i < n_streams && gaps; i++) {
        stream_t *s = &r->s[i];
        uint32_t n = ST_MIN(s->n, n_tok);
        if (s->error[0]) {
            fprintf(stderr, "bench cluster: stream %u failed: %s\n", i, s->error);
            rc = -1;
        }
        total += n;
        if (n == 0)
            continue;
        first = ST_MIN(first, s->t[0]);
        last = ST_MAX(last, s->t[n - 1]);
        for (uint32_t k = 1; k < n; k++)
            gaps[n_gaps++] = s->t[k] - s->t[k - 1];
    }
    memset(out, 0, sizeof(*out));
    out->tokens = total;
    if (n_gaps && gaps) {
        double sum = 0;
        for (uint32_t k = 0; k < n_gaps; k++)
            sum += (double)gaps[k];
        qsort(gaps, n_gaps, sizeof(uint64_t), cmp_u64);
        out->lat_ms = sum / n_gaps / 1e6;
        out->p50_ms = (double)gaps[n_gaps / 2] / 1e6;
        out->p99_ms = (double)gaps[(uint32_t)((double)(n_gaps - 1) * 0.99)] / 1e6;
        if (n_streams == 1)
            out->tok_s = 1e9 / (sum / n_gaps);
        else if (last > first)
            /* all tokens but each stream's first, over the decode window */
            out->tok_s = (double)(total - n_streams) / ((double)(last - first) / 1e9);
    }
    for (uint32_t i = 0; i < n_streams; i++)
        free(r->s[i].t);
    free(gaps);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
    return rc;
}

/* Median of `reps` runs by tokens/s (the brief's rule for every figure we
 * quote: medians, measured side by side in one run). */
static int measure_median(st_engine_t *e, uint32_t n_streams, uint32_t n_tok, uint32_t reps,
                        result_t *out)
{
    result_t runs[32];
    uint32_t n = reps < 32 ? reps : 32;
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < n; i++)
        if (measure(e, n_streams, n_tok, &runs[i]))
            return -1;
    for (uint32_t i = 1; i < n; i++)          /* insertion sort: n is tiny */
        for (uint32_t j = i; j > 0 && runs[j].tok_s < runs[j - 1].tok_s; j--) {
            result_t t = runs[j];
            runs[j] = runs[j - 1];
            runs[j - 1] = t;
        }
    *out = runs[n / 2];
    return 0;
}

typedef struct cfg {
    const char *model, *transport;
    /* --external N: workers started by someone else (bench/cluster_netns.sh
     * starts them in network namespaces) join this address */
    uint32_t    external;
    const char *listen, *data_listen, *secret_file;
    int         threads;
    uint32_t    n_tok, n_ctx, max_streams, reps;
    uint64_t    worker_mem;   /* --worker-mem: memory each local worker advertises */
    int         json;
} cfg_t;

static st_status_t engine_for(const cfg_t *c, uint32_t stages, st_engine_t **e,
                              st_cluster_t **cl, st_error_t *err)
{
    st_engine_params_t ep = st_engine_default_params();
    st_pipeline_t pipe;
    st_status_t st;

    ep.model_path = c->model;
    ep.n_ctx = c->n_ctx;
    ep.n_slots = c->max_streams;
    ep.max_batch = 256;
    ep.n_threads = c->threads;
    *cl = NULL;
    if (stages > 0 && c->external) {
        st_cluster_params_t cp = st_cluster_default_params();
        cp.model_path = c->model;
        cp.n_workers = c->external;
        cp.n_ctx = ep.n_ctx;
        cp.n_slots = ep.n_slots;
        cp.max_batch = ep.max_batch;
        cp.n_threads = c->threads;
        cp.transport_tls = c->transport;
        cp.listen = c->listen;
        cp.data_listen = c->data_listen;
        cp.join_timeout_ms = 60000;
        st = st_ctrl_secret_load(c->secret_file, cp.secret, sizeof(cp.secret), &cp.secret_len, err);
        if (st == ST_OK)
            st = st_cluster_create(&cp, cl, err);
        if (st != ST_OK)
            return st;
        st_cluster_pipeline(*cl, &pipe);
        ep.pipeline = &pipe;
        st = st_engine_create(&ep, e, err);   /* owns the pipeline, even on failure */
        if (st != ST_OK)
            *cl = NULL;
        return st;
    }
    if (stages > 0) {
        st_cluster_params_t cp = st_cluster_default_params();
        cp.model_path = c->model;
        cp.n_workers = stages;
        cp.n_ctx = ep.n_ctx;
        cp.n_slots = ep.n_slots;
        cp.max_batch = ep.max_batch;
        cp.n_threads = c->threads;
        cp.transport_tls = c->transport;
        cp.respawn = 0;
        cp.worker_mem_bytes = c->worker_mem;
        st = st_cluster_local_create(&cp, &pipe, err);
        if (st != ST_OK)
            return st;
        *cl = pipe.ctx;
        ep.pipeline = &pipe;
        st = st_engine_create(&ep, e, err);   /* owns the pipeline, even on failure */
        if (st != ST_OK)
            *cl = NULL;
        return st;
    }
    return st_engine_create(&ep, e, err);
}

static int parse_list(const char *opt, const char *s, uint32_t *out, uint32_t cap, uint32_t *n,
                      long lo, long hi)
{
    char buf[128], *tok, *save = NULL;
    snprintf(buf, sizeof(buf), "%s", s);
    *n = 0;
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long v;
        if (*n == cap || cli_parse_long(opt, tok, lo, hi, &v))
            return -1;
        out[(*n)++] = (uint32_t)v;
    }
    return *n ? 0 : -1;
}

int st_bench_cluster(int argc, char **argv)
{
    cfg_t c = {.threads = 1, .n_tok = 64, .n_ctx = 512, .reps = 3};
    uint32_t stages[8] = {1, 2, 3}, n_stages = 3, streams[8] = {1, 4, 16}, n_streams = 3;
    uint32_t agg_stages = 2;
    result_t base, base_agg[8];
    st_error_t err;
    st_engine_t *e = NULL;
    st_cluster_t *cl = NULL;
    const char *v;
    long l;
    FILE *js = stdout;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: strata bench cluster -m MODEL [--stages 1,2,3] [--streams 1,4,16]\n"
                   "       [--agg-stages S] [-t THREADS] [--tokens N] [--ctx N]\n"
                   "       [--transport TLS] [--reps R (median of R, default 3)] [--json]\n"
                   "       [--worker-mem SIZE]\n"
                   "       [--external N --listen ADDR [--data-listen ADDR] --secret-file F]\n"
                   "  --external: N workers started elsewhere join ADDR (one cluster, used\n"
                   "  for both the single-stream and the aggregate runs); see\n"
                   "  bench/cluster_netns.sh, which starts them in network namespaces\n"
                   "  --worker-mem: memory each local worker advertises to the planner\n"
                   "  (512MiB, 300M, bytes; `strata worker --mem`): below the model's size\n"
                   "  the plan must split it (bench/cluster_scale.sh)\n");
            return 0;
        }
        if (!strcmp(a, "--json")) {
            c.json = 1;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i)))
            return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) c.model = v;
        else if (!strcmp(a, "--external")) {
            if (cli_parse_long(a, v, 1, 16, &l)) return 2;
            c.external = (uint32_t)l;
        } else if (!strcmp(a, "--listen")) c.listen = v;
        else if (!strcmp(a, "--data-listen")) c.data_listen = v;
        else if (!strcmp(a, "--secret-file")) c.secret_file = v;
        else if (!strcmp(a, "--transport")) c.transport = v;
        else if (!strcmp(a, "--stages")) {
            if (parse_list(a, v, stages, 8, &n_stages, 1, 16)) return 2;
        } else if (!strcmp(a, "--streams")) {
            if (parse_list(a, v, streams, 8, &n_streams, 1, MAX_STREAMS)) return 2;
        } else if (!strcmp(a, "--agg-stages")) {
            if (cli_parse_long(a, v, 1, 16, &l)) return 2;
            agg_stages = (uint32_t)l;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_long(a, v, 1, 256, &l)) return 2;
            c.threads = (int)l;
        } else if (!strcmp(a, "--tokens")) {
            if (cli_parse_long(a, v, 8, MAX_TOK, &l)) return 2;
            c.n_tok = (uint32_t)l;
        } else if (!strcmp(a, "--reps")) {
            if (cli_parse_long(a, v, 1, 100, &l)) return 2;
            c.reps = (uint32_t)l;
        } else if (!strcmp(a, "--worker-mem")) {
            if (cli_parse_size(a, v, &c.worker_mem)) return 2;
        } else if (!strcmp(a, "--ctx")) {
            if (cli_parse_long(a, v, 64, 1 << 20, &l)) return 2;
            c.n_ctx = (uint32_t)l;
        } else {
            fprintf(stderr, "strata bench cluster: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (!c.model) {
        fprintf(stderr, "strata bench cluster: -m MODEL is required\n");
        return 2;
    }
    c.max_streams = 1;
    for (uint32_t i = 0; i < n_streams; i++)
        c.max_streams = ST_MAX(c.max_streams, streams[i]);
    if (c.n_ctx < c.n_tok + 32)
        c.n_ctx = c.n_tok + 32;
    if (c.external) {
        if (!c.listen) {
            fprintf(stderr, "strata bench cluster: --external needs --listen\n");
            return 2;
        }
        /* One cluster of the external workers serves every measurement. */
        stages[0] = c.external;
        n_stages = 1;
        agg_stages = c.external;
    }

    fprintf(stderr, "bench cluster: %u tokens per stream, %d thread(s) per process, transport %s\n",
            c.n_tok, c.threads, c.transport ? c.transport : "UCX default (shared memory locally)");
    if (c.json)
        fprintf(js, "{\"model\": \"%s\", \"threads\": %d, \"tokens\": %u, \"transport\": \"%s\",\n",
                c.model, c.threads, c.n_tok, c.transport ? c.transport : "default");

    /* Reference: one process, the local pipeline. */
    st_error_clear(&err);
    if (engine_for(&c, 0, &e, &cl, &err) != ST_OK) {
        fprintf(stderr, "bench cluster: %s\n", err.msg);
        return 1;
    }
    if (measure_median(e, 1, c.n_tok, c.reps, &base))
        goto out;
    for (uint32_t k = 0; k < n_streams; k++)
        if (measure_median(e, streams[k], c.n_tok, c.reps, &base_agg[k]))
            goto out;
    st_engine_free(e);
    e = NULL;
    printf("%sone process: %.1f tokens/s single stream, %.2f ms/token (p50 %.2f, p99 %.2f)\n",
           c.json ? "# " : "", base.tok_s, base.lat_ms, base.p50_ms, base.p99_ms);
    if (c.json)
        fprintf(js, " \"one_process\": {\"decode_tok_s\": %.2f, \"ms_per_token\": %.3f, "
                "\"p50_ms\": %.3f, \"p99_ms\": %.3f},\n", base.tok_s, base.lat_ms, base.p50_ms,
                base.p99_ms);

    /* Single stream through S stages. */
    if (c.json)
        fprintf(js, " \"single_stream\": [\n");
    for (uint32_t k = 0; k < n_stages; k++) {
        st_cluster_stats_t cs;
        result_t r;
        st_error_clear(&err);
        if (engine_for(&c, stages[k], &e, &cl, &err) != ST_OK) {
            fprintf(stderr, "bench cluster: %u stages: %s\n", stages[k], err.msg);
            goto out;
        }
        /* Warm-up request, then measure with fresh per-hop statistics. */
        if (measure(e, 1, 16, &r))
            goto out;
        st_cluster_stats_reset(cl);
        if (measure_median(e, 1, c.n_tok, c.reps, &r))
            goto out;
        st_cluster_refresh(cl, 2000);
        st_cluster_stats(cl, &cs);
        printf("%s%u stage(s): %.1f tokens/s (%.2fx one process), %.2f ms/token (p50 %.2f, "
               "p99 %.2f); round trip %.0f us\n", c.json ? "# " : "", stages[k], r.tok_s,
               r.tok_s / base.tok_s, r.lat_ms, r.p50_ms, r.p99_ms, cs.rtt_us);
        for (uint32_t s = 0; s < cs.n_stages; s++)
            printf("%s   stage %u layers [%u,%u): compute %.0f us, hop in %.1f us, load %.2f s, "
                   "peak RSS %.1f MB\n", c.json ? "# " : "", s, cs.first_layer[s],
                   cs.last_layer[s], cs.compute_us[s], cs.hop_us[s], (double)cs.load_ns[s] / 1e9,
                   (double)cs.rss_peak_bytes[s] / 1e6);
        printf("%s   hop back to the coordinator %.1f us\n", c.json ? "# " : "",
               cs.hop_us[cs.n_stages]);
        if (c.json) {
            fprintf(js, "  {\"stages\": %u, \"decode_tok_s\": %.2f, \"vs_one_process\": %.3f, "
                    "\"ms_per_token\": %.3f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
                    "\"round_trip_us\": %.1f, \"stage\": [", stages[k], r.tok_s,
                    r.tok_s / base.tok_s, r.lat_ms, r.p50_ms, r.p99_ms, cs.rtt_us);
            for (uint32_t s = 0; s < cs.n_stages; s++)
                fprintf(js, "%s{\"first_layer\": %u, \"last_layer\": %u, \"compute_us\": %.1f, "
                        "\"hop_in_us\": %.1f, \"load_s\": %.3f, \"peak_rss_mb\": %.1f}",
                        s ? ", " : "", cs.first_layer[s], cs.last_layer[s], cs.compute_us[s],
                        cs.hop_us[s], (double)cs.load_ns[s] / 1e9,
                        (double)cs.rss_peak_bytes[s] / 1e6);
            fprintf(js, "], \"hop_out_us\": %.1f}%s\n", cs.hop_us[cs.n_stages],
                    k + 1 < n_stages ? "," : "");
        }
        if (!c.external) {
            st_engine_free(e);
            e = NULL;
        }
    }
    if (c.json)
        fprintf(js, " ],\n \"aggregate\": [\n");

    /* Aggregate through agg_stages stages. */
    st_error_clear(&err);
    if (!e && engine_for(&c, agg_stages, &e, &cl, &err) != ST_OK) {
        fprintf(stderr, "bench cluster: %s\n", err.msg);
        goto out;
    }
    for (uint32_t k = 0; k < n_streams; k++) {
        result_t r;
        double goal = streams[k] >= agg_stages ? 0.8 * agg_stages * base.tok_s : 0;
        if (measure_median(e, streams[k], c.n_tok, c.reps, &r))
            goto out;
        printf("%s%u streams through %u stages: %.1f tokens/s aggregate (one process: %.1f)%s",
               c.json ? "# " : "", streams[k], agg_stages, r.tok_s, base_agg[k].tok_s,
               goal > 0 ? "" : "\n");
        if (goal > 0)
            printf(", goal 0.8 x %u x %.1f = %.1f: %s\n", agg_stages, base.tok_s, goal,
                   r.tok_s >= goal ? "met" : "NOT met");
        if (c.json)
            fprintf(js, "  {\"streams\": %u, \"stages\": %u, \"aggregate_tok_s\": %.2f, "
                    "\"one_process_tok_s\": %.2f, \"goal_tok_s\": %.2f}%s\n", streams[k],
                    agg_stages, r.tok_s, base_agg[k].tok_s, goal, k + 1 < n_streams ? "," : "");
    }
    if (c.json)
        fprintf(js, " ]}\n");
    rc = 0;
out:
    st_engine_free(e);
    return rc;
}
#endif
