/*
 * http_internal.h - the pieces of the front door that do not touch the
 * network, each testable alone (tests/coordinator/test_http_*.c):
 *   - st_http_gen_parse: a request body -> an st_gen_request_t, validated;
 *   - st_http_json_*: OpenAI-shaped responses, stream chunks and errors;
 *   - st_http_bucket_*: the per-key token bucket;
 *   - st_http_audit_*: the audit log (ECS JSON lines in a hash chain,
 *     fdatasync, daily rotation and retention, watermarked exports);
 *   - st_http_metrics_*: counters and histograms, Prometheus rendering.
 * Internal to coordinator/http/.
 */
#ifndef ST_HTTP_INTERNAL_H
#define ST_HTTP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "st_engine.h"
#include "st_error.h"
#include "st_http.h"
#include "st_http_audit.h"
#include "st_status.h"

/* ---- request parsing ---- */

typedef enum st_http_api {
    ST_HTTP_API_COMPLETIONS = 0,   /* POST /v1/completions */
    ST_HTTP_API_CHAT,              /* POST /v1/chat/completions */
    ST_HTTP_API_GENERATE           /* POST /generate */
} st_http_api_t;

#define ST_HTTP_MAX_N 16           /* hard cap of cfg->max_n */
#define ST_HTTP_MAX_MSGS 256
#define ST_HTTP_MAX_STOPS 4        /* as OpenAI */

typedef struct st_http_gen {
    st_http_api_t    api;
    json_t          *root;         /* owns the strings below */
    const char      *model;        /* NULL when absent */
    st_gen_request_t req;          /* prompt/messages/stop point into root or msgs */
    st_chat_msg_t   *msgs;
    char           **owned;        /* contents joined from parts */
    size_t           n_owned;
    uint32_t         n;            /* choices */
    int              stream;
    int              include_usage;
    int              has_seed;
} st_http_gen_t;

typedef struct st_http_parse_limits {
    uint32_t max_n;
    uint32_t default_max_tokens;   /* chat and /generate */
} st_http_parse_limits_t;

/* Parses and validates a body. On error: err names the problem, param (cap
 * 64) the offending field ("" when none) and the status is ST_ERR_FORMAT
 * (malformed JSON or UTF-8), ST_ERR_TYPE (wrong type) or ST_ERR_RANGE
 * (a value out of range): all are HTTP 400. g is always safe to free. */
st_status_t st_http_gen_parse(st_http_gen_t *g, st_http_api_t api, const char *body, size_t len,
                              const st_http_parse_limits_t *lim, char *param, st_error_t *err);
void        st_http_gen_free(st_http_gen_t *g);

/* ---- JSON out ---- */

/* Appends `s` as a JSON string literal (quotes included). */
typedef struct st_http_buf {
    char  *p;
    size_t len, cap;
    int    oom;                    /* sticky: an append failed */
} st_http_buf_t;

void st_http_buf_put(st_http_buf_t *b, const char *s, size_t n);
void st_http_buf_puts(st_http_buf_t *b, const char *s);
void st_http_buf_printf(st_http_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void st_http_buf_json_str(st_http_buf_t *b, const char *s, size_t n);
void st_http_buf_free(st_http_buf_t *b);

/* {"error":{"message":..,"type":..,"param":..|null,"code":..|null}} */
char *st_http_json_error(const char *message, const char *type, const char *param,
                         const char *code);
/* OpenAI's type for an HTTP status (invalid_request_error, ...). */
const char *st_http_error_type(int http_status);

/* ---- token bucket ---- */

typedef struct st_http_bucket {
    double   tokens;
    uint64_t last_ns;
} st_http_bucket_t;

/* Takes one token: 1 when allowed, else 0 with *retry_after_s (>= 1). */
int st_http_bucket_take(st_http_bucket_t *b, double rate, double burst, uint64_t now_ns,
                        uint32_t *retry_after_s);

/* ---- audit log (audit.c: the file; audit_line.c: the line, dates, key) ---- */

typedef struct st_http_audit st_http_audit_t;

/* What one answered request logs. Strings may be "" (never NULL) for
 * unknown; unknown fields are left out of the line. */
typedef struct st_http_audit_rec {
    int64_t     ts_ms;             /* wall clock, ms since the epoch; also the rotation clock */
    const char *client_ip;
    int         client_port;
    const char *key_id;            /* "" without keys or before the key was checked */
    const char *role;
    const char *method;
    const char *path;
    int         status;
    uint64_t    response_bytes;
    uint64_t    duration_ns;       /* first byte received to the answer */
    const char *request_id;
    int         generation;        /* a generation endpoint: model and token counts logged */
    const char *model;
    const char *prompt_sha256;     /* hex, "" when no prompt */
    uint32_t    prompt_tokens;
    uint32_t    completion_tokens;
} st_http_audit_rec_t;

typedef struct st_http_audit_params {
    const char *path;              /* the current file; rotated ones are path.YYYY-MM-DD[.N] */
    const char *hmac_key_path;     /* NULL: path.hmac-key, generated at first start */
    uint64_t    max_bytes;         /* also rotate beyond this size (0: 64 MiB) */
    uint32_t    retain_days;       /* remove rotated files older than this (0: keep all) */
    int         sync;              /* fdatasync each line */
    int64_t     now_ms;            /* the clock at open: start-up rotation and retention */
} st_http_audit_params_t;

/* Opens (creating) the file, continues the chain from its last line (or
 * the newest rotated file's), rotates it when it holds an earlier UTC day
 * or an unchained (older format) log, removes expired rotated files and
 * loads or generates the HMAC key. */
st_status_t st_http_audit_open(const st_http_audit_params_t *p, st_http_audit_t **out,
                               st_error_t *err);
void        st_http_audit_close(st_http_audit_t *a);
/* Appends one chained line (fdatasynced when sync is on). Rotates first
 * when r->ts_ms is on a later UTC day than the file's first line, or the
 * line would pass max_bytes; retention runs after each rotation. */
st_status_t st_http_audit_write(st_http_audit_t *a, const st_http_audit_rec_t *r);
/* The last `lines` lines of the current file (caller frees). */
st_status_t st_http_audit_tail(st_http_audit_t *a, uint32_t lines, char **out, size_t *len);
/* The same lines, each watermarked for `reader` (see st_http_audit.h). */
st_status_t st_http_audit_export(st_http_audit_t *a, uint32_t lines, const char *reader,
                                 char **out, size_t *len);

/* One ECS line with its chain fields and '\n' (caller frees). */
char *st_http_audit_format(const st_http_audit_rec_t *r, uint64_t seq, const char prev[65],
                           size_t *len);
/* Appends `line` (len bytes, no newline) with the watermark fields and '\n'. */
void  st_http_audit_watermark(st_http_buf_t *b, const char *line, size_t len, const char *reader,
                              const uint8_t *key, size_t key_len);
/* Lowercase hex HMAC-SHA256(key, line "\n" reader) into out[65]. */
void  st_http_audit_mac(const uint8_t *key, size_t key_len, const char *line, size_t len,
                        const char *reader, char out[65]);

/* UTC days since 1970-01-01 (floor, so before the epoch is negative). */
int64_t st_http_audit_day(int64_t ms);
/* "YYYY-MM-DD" of a day into out[11]. */
void    st_http_audit_day_str(int64_t day, char out[11]);
/* Parses exactly "YYYY-MM-DD" (a real date) at s. 1 on success. */
int     st_http_audit_day_parse(const char *s, int64_t *day);
/* 1 when `name` (a directory entry) is base.YYYY-MM-DD or base.YYYY-MM-DD.N,
 * the names rotation gives; *day and *n (0 without .N) set. */
int     st_http_audit_rotated_name(const char *base, const char *name, int64_t *day, uint32_t *n);
/* 1 when a rotated file of `day` is past retention on `today`: it is
 * removed once day < today - retain_days, so each of its lines was kept
 * at least retain_days days. retain_days 0 keeps everything. */
int     st_http_audit_expired(int64_t day, int64_t today, uint32_t retain_days);

/* ---- metrics ---- */

typedef enum st_http_ep {
    ST_HTTP_EP_COMPLETIONS = 0,
    ST_HTTP_EP_CHAT,
    ST_HTTP_EP_GENERATE,
    ST_HTTP_EP_MODELS,
    ST_HTTP_EP_HEALTH,
    ST_HTTP_EP_METRICS,
    ST_HTTP_EP_ADMIN,
    ST_HTTP_EP_AUDIT,
    ST_HTTP_EP_WS,                 /* the /ws upgrade and its generation messages */
    ST_HTTP_EP_GRPC,               /* the gRPC service's calls */
    ST_HTTP_EP_OTHER,
    ST_HTTP_EP_COUNT_
} st_http_ep_t;

const char *st_http_ep_name(st_http_ep_t ep);

#define ST_HTTP_HIST_MAX 16

typedef struct st_http_hist {
    uint32_t     n_bounds;
    const double *bounds;          /* upper bounds in seconds, ascending */
    uint64_t     counts[ST_HTTP_HIST_MAX + 1];   /* last: +Inf */
    uint64_t     count;
    double       sum;
} st_http_hist_t;

void st_http_hist_init(st_http_hist_t *h, const double *bounds, uint32_t n);
void st_http_hist_observe(st_http_hist_t *h, double v);
/* Bucket index of v (n_bounds for +Inf): lets callers count without the
 * histogram and merge later (st_http_hist_add). */
uint32_t st_http_hist_bucket(const st_http_hist_t *h, double v);
void st_http_hist_add(st_http_hist_t *h, const uint64_t *counts, double sum);

/* Touched only on the loop thread. */
typedef struct st_http_metrics {
    uint64_t       by_code[ST_HTTP_EP_COUNT_][600]; /* by exact status */
    st_http_hist_t ttft, itl, e2e, overhead, queue;
    uint64_t       prompt_tokens, completion_tokens;
    uint64_t       cancelled;      /* sequences cancelled because the client left */
    uint64_t       rate_limited;
    uint64_t       otp_failures;     /* admin second factors refused */
    uint64_t       connections_total;
    int64_t        connections_open;
    int64_t        requests_active;
    int64_t        streams_active;
    uint64_t       audit_errors;
    uint64_t       request_timeouts;   /* connections closed for a slow request */
} st_http_metrics_t;

void st_http_metrics_init(st_http_metrics_t *m);
void st_http_metrics_request(st_http_metrics_t *m, st_http_ep_t ep, int status);

/* What the renderer needs from outside the HTTP layer. */
typedef struct st_http_metrics_view {
    const st_engine_stats_t     *engine;    /* may be NULL in tests */
    const st_http_stage_stats_t *stages;
    uint32_t                     n_stages;
    int                          draining;
} st_http_metrics_view_t;

/* Prometheus text exposition format 0.0.4 (caller frees). */
char *st_http_metrics_render(const st_http_metrics_t *m, const st_http_metrics_view_t *v,
                             size_t *len);

/* Lowercase hex SHA-256 of n bytes into out[65]. */
void st_http_sha256_hex(const void *p, size_t n, char out[65]);

/* ---- HAProxy agent check (agent.c) ---- */

typedef struct st_http_load {
    uint32_t running, queued, n_slots;  /* the engine's sequences and KV slots */
    double   stage_util;                /* busiest stage: compute s per wall s since last check */
    int      healthy;                   /* every stage up */
    int      draining;
} st_http_load_t;

/* The weight in percent of the configured one, 1..100:
 *   load = max(min(1, (running + queued) / n_slots), min(1, stage_util))
 *   weight = clamp(round(100 * (1 - load)), 1, 100)  */
int st_http_agent_weight(const st_http_load_t *l);
/* The agent's reply line: "drain 0%\n" while draining, "down\n" when a
 * stage is lost, else "up ready W%\n". Returns its length (snprintf). */
int st_http_agent_reply(const st_http_load_t *l, char *buf, size_t cap);

#endif /* ST_HTTP_INTERNAL_H */
