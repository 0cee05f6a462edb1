/*
 * metrics.c - the front door's counters and histograms and their rendering
 * in the Prometheus text format (checked by `promtool check metrics` in
 * tests/py/test_http_metrics.py). Names follow Prometheus conventions:
 * base units (seconds, bytes), counters end in _total.
 */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_util.h"

static const char *const ep_names[ST_HTTP_EP_COUNT_] = {
    "/v1/completions", "/v1/chat/completions", "/generate", "/v1/models", "/health",
    "/metrics", "/admin", "/admin/audit", "/ws", "grpc", "other",
};

const char *st_http_ep_name(st_http_ep_t ep)
{
    return ep < ST_HTTP_EP_COUNT_ ? ep_names[ep] : "other";
}

/* Time to first token and end-to-end latency of a small model on CPUs span
 * milliseconds to minutes; inter-token gaps are milliseconds; the front
 * door's own work is microseconds. */
static const double b_latency[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double b_itl[] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1};
static const double b_overhead[] = {1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1};

void st_http_hist_init(st_http_hist_t *h, const double *bounds, uint32_t n)
{
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
    h->n_bounds = n > ST_HTTP_HIST_MAX ? ST_HTTP_HIST_MAX : n;
}

uint32_t st_http_hist_bucket(const st_http_hist_t *h, double v)
{
    uint32_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    return i;
}

void st_http_hist_observe(st_http_hist_t *h, double v)
{
    h->counts[st_http_hist_bucket(h, v)]++;
    h->count++;
    h->sum += v;
}

void st_http_hist_add(st_http_hist_t *h, const uint64_t *counts, double sum)
{
    for (uint32_t i = 0; i <= h->n_bounds; i++) {
        h->counts[i] += counts[i];
        h->count += counts[i];
    }
    h->sum += sum;
}

void st_http_metrics_init(st_http_metrics_t *m)
{
    memset(m, 0, sizeof(*m));
    st_http_hist_init(&m->ttft, b_latency, ST_ARRAY_SIZE(b_latency));
    st_http_hist_init(&m->e2e, b_latency, ST_ARRAY_SIZE(b_latency));
    st_http_hist_init(&m->queue, b_latency, ST_ARRAY_SIZE(b_latency));
    st_http_hist_init(&m->itl, b_itl, ST_ARRAY_SIZE(b_itl));
    st_http_hist_init(&m->overhead, b_overhead, ST_ARRAY_SIZE(b_overhead));
}

void st_http_metrics_request(st_http_metrics_t *m, st_http_ep_t ep, int status)
{
    if (ep >= ST_HTTP_EP_COUNT_)
        ep = ST_HTTP_EP_OTHER;
    if (status >= 100 && status < 600)
        m->by_code[ep][status]++;
}

static void head(st_http_buf_t *b, const char *name, const char *type, const char *help)
{
    st_http_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist(st_http_buf_t *b, const char *name, const char *help, const st_http_hist_t *h)
{
    uint64_t cum = 0;
    head(b, name, "histogram", help);
    for (uint32_t i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        st_http_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i],
                           (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    st_http_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name,
                       (unsigned long long)cum, name, h->sum, name, (unsigned long long)h->count);
}

static void scalar(st_http_buf_t *b, const char *name, const char *type, const char *help,
                   double v)
{
    head(b, name, type, help);
    st_http_buf_printf(b, "%s %.17g\n", name, v);
}

char *st_http_metrics_render(const st_http_metrics_t *m, const st_http_metrics_view_t *v,
                             size_t *len)
{
    st_http_buf_t b = {0};
    const st_engine_stats_t *es = v ? v->engine : NULL;
    uint32_t up = 0;

    head(&b, "strata_http_requests_total", "counter",
         "HTTP requests answered, by endpoint and status code.");
    for (int ep = 0; ep < ST_HTTP_EP_COUNT_; ep++)
        for (int c = 100; c < 600; c++)
            if (m->by_code[ep][c])
                st_http_buf_printf(&b, "strata_http_requests_total{endpoint=\"%s\",code=\"%d\"} "
                                   "%llu\n", ep_names[ep], c,
                                   (unsigned long long)m->by_code[ep][c]);
    hist(&b, "strata_time_to_first_token_seconds",
         "Time from admission of a request to its first generated token.", &m->ttft);
    hist(&b, "strata_inter_token_latency_seconds",
         "Time between consecutive tokens of a sequence.", &m->itl);
    hist(&b, "strata_request_duration_seconds",
         "End-to-end latency of generation requests, submit to last token.", &m->e2e);
    hist(&b, "strata_queue_wait_seconds", "Time requests waited for a sequence slot.", &m->queue);
    hist(&b, "strata_http_overhead_seconds",
         "Time the front door spent on a request outside the engine.", &m->overhead);
    scalar(&b, "strata_prompt_tokens_total", "counter", "Prompt tokens of answered requests.",
           (double)m->prompt_tokens);
    scalar(&b, "strata_generation_tokens_total", "counter", "Tokens generated.",
           (double)m->completion_tokens);
    scalar(&b, "strata_requests_cancelled_total", "counter",
           "Sequences cancelled because their client disconnected.", (double)m->cancelled);
    scalar(&b, "strata_http_rate_limited_total", "counter",
           "Requests refused with 429 by the per-key rate limit.", (double)m->rate_limited);
    scalar(&b, "strata_http_otp_failures_total", "counter",
           "Admin requests refused for a wrong or expired one-time password.",
           (double)m->otp_failures);
    scalar(&b, "strata_http_connections_total", "counter", "TCP connections accepted.",
           (double)m->connections_total);
    scalar(&b, "strata_http_open_connections", "gauge", "TCP connections open now.",
           (double)m->connections_open);
    scalar(&b, "strata_http_active_requests", "gauge",
           "Requests being answered now (generation waiting or streaming).",
           (double)m->requests_active);
    scalar(&b, "strata_http_active_streams", "gauge", "Server-sent event streams open now.",
           (double)m->streams_active);
    scalar(&b, "strata_http_request_timeouts_total", "counter",
           "Connections closed because a request was not received in time.",
           (double)m->request_timeouts);
    scalar(&b, "strata_audit_write_errors_total", "counter", "Audit lines that failed to write.",
           (double)m->audit_errors);
    scalar(&b, "strata_draining", "gauge", "1 while the server drains before exiting.",
           v && v->draining ? 1.0 : 0.0);
    if (es) {
        scalar(&b, "strata_queue_depth", "gauge", "Requests waiting for a sequence slot.",
               (double)es->queued);
        scalar(&b, "strata_running_sequences", "gauge", "Sequences holding a slot (KV cache).",
               (double)es->running);
        scalar(&b, "strata_kv_slots", "gauge", "Sequence slots (KV cache) in total.",
               (double)es->n_slots);
        scalar(&b, "strata_kv_slots_free", "gauge", "Sequence slots (KV cache) free.",
               (double)(es->n_slots > es->running ? es->n_slots - es->running : 0));
        scalar(&b, "strata_engine_steps_total", "counter", "Pipeline steps run by the scheduler.",
               (double)es->steps);
        scalar(&b, "strata_engine_healthy", "gauge", "1 when every pipeline stage is up.",
               es->healthy ? 1.0 : 0.0);
        scalar(&b, "strata_sequences_replayed_total", "counter",
               "Sequences replayed after the pipeline lost a stage.", (double)es->replays);
        scalar(&b, "strata_worker_restarts_total", "counter",
               "Local workers restarted after they died.", (double)es->worker_restarts);
        scalar(&b, "strata_workers_restart_pending", "gauge",
               "Local workers dead and waiting out their restart back-off.",
               (double)es->workers_restart_pending);
        scalar(&b, "strata_prefix_cache_lookup_tokens_total", "counter",
               "Prompt tokens of sequences looked up in the prefix cache.",
               (double)es->prefix_lookup_tokens);
        scalar(&b, "strata_prefix_cache_hit_tokens_total", "counter",
               "Prompt tokens whose KV rows came from the prefix cache, not computed.",
               (double)es->prefix_hit_tokens);
        scalar(&b, "strata_prefix_cache_hit_ratio", "gauge",
               "Hit tokens over lookup tokens since start (0 before any lookup).",
               es->prefix_lookup_tokens ? (double)es->prefix_hit_tokens /
                                          (double)es->prefix_lookup_tokens : 0.0);
        scalar(&b, "strata_prefix_cache_blocks", "gauge",
               "Blocks of the prefix cache's pool (0: prefix reuse off).",
               (double)es->prefix_blocks);
        scalar(&b, "strata_prefix_cache_blocks_used", "gauge",
               "Blocks of the prefix cache holding a prompt prefix.",
               (double)es->prefix_blocks_used);
        scalar(&b, "strata_prefix_cache_block_tokens", "gauge", "Tokens per prefix-cache block.",
               (double)es->prefix_block);
        scalar(&b, "strata_prefix_cache_evictions_total", "counter",
               "Prefix-cache blocks evicted (least recently used) to make room.",
               (double)es->prefix_evictions);
        scalar(&b, "strata_prefix_cache_flushes_total", "counter",
               "Times the prefix cache was emptied (a stage failed or the cluster re-planned).",
               (double)es->prefix_flushes);
    }
    head(&b, "strata_stage_compute_seconds_total", "counter",
         "Compute time spent by each pipeline stage.");
    for (uint32_t i = 0; v && i < v->n_stages; i++)
        st_http_buf_printf(&b, "strata_stage_compute_seconds_total{stage=\"%u\"} %.9g\n",
                           v->stages[i].stage, v->stages[i].compute_s);
    head(&b, "strata_hop_latency_seconds", "gauge",
         "Mean transport latency of the hop from a stage to the next.");
    for (uint32_t i = 0; v && i + 1 < v->n_stages; i++)
        st_http_buf_printf(&b, "strata_hop_latency_seconds{from=\"%u\",to=\"%u\"} %.9g\n",
                           v->stages[i].stage, v->stages[i + 1].stage, v->stages[i].hop_latency_s);
    head(&b, "strata_link_sent_bytes_total", "counter",
         "Bytes sent on the link from a stage to the next.");
    for (uint32_t i = 0; v && i + 1 < v->n_stages; i++)
        st_http_buf_printf(&b, "strata_link_sent_bytes_total{from=\"%u\",to=\"%u\"} %llu\n",
                           v->stages[i].stage, v->stages[i + 1].stage,
                           (unsigned long long)v->stages[i].bytes_sent);
    head(&b, "strata_worker_up", "gauge", "1 when the worker of a stage answers.");
    for (uint32_t i = 0; v && i < v->n_stages; i++) {
        st_http_buf_printf(&b, "strata_worker_up{stage=\"%u\"} %d\n", v->stages[i].stage,
                           v->stages[i].up ? 1 : 0);
        up += v->stages[i].up ? 1 : 0;
    }
    scalar(&b, "strata_workers_up", "gauge", "Workers (pipeline stages) up.", (double)up);
    scalar(&b, "strata_workers", "gauge", "Workers (pipeline stages) configured.",
           v ? (double)v->n_stages : 0.0);
    if (b.oom) {
        st_http_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
