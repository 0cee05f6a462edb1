/*
 * st_http.h - the front door: an OpenAI-compatible HTTP(S) API in front of
 * an engine (st_engine.h), with API keys and roles, per-key rate limits, an
 * audit log and Prometheus metrics.
 *
 *   st_http_config_t cfg = st_http_config_default();
 *   for (int i = 1; i < argc; i++) {               // a command's own loop
 *       st_status_t st = st_http_config_parse_opt(&cfg, argc, argv, &i, &err);
 *       if (st == ST_ERR_NOT_FOUND) { ...its own option...; continue; }
 *       if (st != ST_OK) { fprintf(stderr, "%s\n", err.msg); return 2; }
 *   }
 *   st_http_server_run(engine, &cfg, &err);        // blocks until SIGTERM/SIGINT
 *
 * The server runs a libevent loop on the calling thread. Generation requests
 * are handed to the engine (st_engine_submit); the engine's callbacks, which
 * run on its scheduler thread, only append to a per-choice buffer under one
 * mutex and wake the loop (event_active), so nothing in the HTTP layer ever
 * blocks the scheduler. On SIGTERM or SIGINT (or POST /admin/drain) the
 * server stops accepting, answers new requests with 503, lets in-flight
 * streams finish for up to drain_timeout_s, cancels what is left, and
 * returns ST_OK.
 *
 * `strata serve` and `strata launch` share the options through
 * st_http_config_parse_opt() and st_http_config_usage(). Endpoints, roles and
 * the answers to bad input are described in docs/HTTP.md.
 */
#ifndef ST_HTTP_H
#define ST_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "st_engine.h"
#include "st_error.h"
#include "st_status.h"

#define ST_HTTP_MAX_STAGES 64

/* Per-stage figures for /metrics and /admin/status. The local engine fills
 * one stage from st_engine_stats(); a cluster passes its own provider. */
typedef struct st_http_stage_stats {
    uint32_t stage;
    int      up;                  /* 1 when the worker of this stage answers */
    double   compute_s;           /* total compute time of this stage */
    double   hop_latency_s;       /* mean latency of the hop to the next stage (0: none) */
    uint64_t bytes_sent;          /* bytes sent on the link to the next stage */
    char     host[64];
} st_http_stage_stats_t;

/* Writes up to cap stages and returns how many there are. Called on the
 * server's loop thread for each scrape; must not block for long. */
typedef uint32_t (*st_http_stage_stats_fn)(void *ctx, st_http_stage_stats_t *out, uint32_t cap);

typedef struct st_http_config {
    uint32_t    size;              /* sizeof(st_http_config_t) */
    const char *host;              /* "127.0.0.1" */
    uint16_t    port;              /* 8080; 0 picks a free port (printed) */
    const char *keys_path;         /* NULL: no keys, loopback only */
    const char *tls_cert;          /* both set: HTTPS with TLS 1.3 only */
    const char *tls_key;
    const char *audit_path;        /* NULL: no audit log */
    uint64_t    audit_max_bytes;   /* also rotate beyond this size (64 MiB) */
    uint32_t    audit_retain_days; /* rotated files <file>.YYYY-MM-DD kept (180; 0: all) */
    const char *audit_hmac_key;    /* export watermark key; NULL: <file>.hmac-key, generated */
    int         audit_sync;        /* fdatasync each line before replying (1) */
    int         allow_public;      /* bind non-loopback without keys (0) */
    int         metrics_public;    /* /metrics without a key (1) */
    size_t      max_body;          /* bytes (1 MiB) */
    size_t      max_header_bytes;  /* bytes of all header lines (8 KiB) */
    uint32_t    max_headers;       /* header lines (100) */
    int         request_timeout_s; /* whole request (headers + body) and idle (10) */
    uint32_t    max_n;             /* choices per request (4) */
    double      user_rate;         /* role user: requests/s per key (5) */
    double      user_burst;        /* role user: bucket size (10) */
    int         drain_timeout_s;   /* 30 */
    uint32_t    default_max_tokens;/* chat and /generate without max_tokens (256) */
    const char *model_path;        /* for the model id: its base name is accepted */
    int         agent_port;        /* HAProxy agent check: -1 off (default), 0 a free port */
    int         ws_ping_s;         /* WebSocket heartbeat: a ping every S s (30); 0 off */
    uint32_t    ws_queue;          /* messages queued to a WebSocket client before it is
                                    * closed as not reading (1000) */
    const char *ws_origins;        /* Origins allowed on /ws besides the page's own:
                                    * comma-separated, "*" any; NULL: same origin only */
    int         grpc_port;         /* the gRPC service: -1 off (default), 0 a free port */
    st_http_stage_stats_fn stage_stats;  /* NULL: one stage from the engine */
    void       *stage_stats_ctx;
} st_http_config_t;

st_http_config_t st_http_config_default(void);

/* Looks at argv[*i]. When it is a front-door option, consumes it (and its
 * value, advancing *i) and returns ST_OK; ST_ERR_NOT_FOUND when it is not
 * one of ours (nothing consumed); ST_ERR_INVALID/ST_ERR_RANGE with err set
 * when the value is missing or bad. */
st_status_t st_http_config_parse_opt(st_http_config_t *cfg, int argc, char **argv, int *i,
                                     st_error_t *err);
/* Checks the combination (cert without key, public bind without keys...). */
st_status_t st_http_config_check(const st_http_config_t *cfg, st_error_t *err);
/* Option lines for a command's --help. */
const char *st_http_config_usage(void);

/* Runs the front door until a drain completes. ST_OK after a clean drain;
 * an error when it cannot start (bind, TLS files, key file, audit file). */
st_status_t st_http_server_run(st_engine_t *engine, const st_http_config_t *cfg, st_error_t *err);

#endif /* ST_HTTP_H */
