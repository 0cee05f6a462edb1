/*
 * server_priv.h - the server's state, shared by server.c (connections,
 * routing, keys, small endpoints, drain) and generate.c (the generation
 * endpoints and the engine handoff). Internal to coordinator/http/.
 *
 * Threads: everything here belongs to the loop thread except the mailbox:
 * the engine's scheduler thread appends to a choice's `pend` buffer and
 * queues the choice under `mbox_lock`, then wakes the loop with
 * event_active(wake). A choice (and its hreq) is freed only by the loop,
 * after its DONE event has been taken from the mailbox; the engine never
 * touches it after delivering DONE.
 */
#ifndef ST_HTTP_SERVER_PRIV_H
#define ST_HTTP_SERVER_PRIV_H

#include <pthread.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>

#include "http_internal.h"
#include "st_http_keys.h"

#define CONN_BUCKETS 1024

typedef struct hreq hreq_t;
typedef struct choice choice_t;

/* How a door other than evhttp's request/response (WebSocket, gRPC) gets a
 * generation's events, on the loop thread. text: more text of choice c;
 * choice_end: c has ended (c->status, c->finish, c->error, its counts);
 * end: every choice has ended or the request was cancelled (h->gone): the
 * door says its last word; h is freed right after. The log, the audit and
 * the metrics are written by the shared path, not by the door. */
typedef struct st_http_sink {
    void (*text)(hreq_t *h, choice_t *c, const char *text, size_t len);
    void (*choice_end)(hreq_t *h, choice_t *c);
    void (*end)(hreq_t *h);
} st_http_sink_t;
typedef struct st_http_agent st_http_agent_t;
typedef struct st_http_grpc st_http_grpc_t;   /* st_http_grpc.h */

typedef struct conn {
    struct st_http_server *s;
    struct bufferevent    *bev;       /* evhttp's; we hold a reference */
    uint64_t               t_req_ns;  /* first byte of the request being received, 0: none */
    int                    busy;      /* a request was dispatched and is not answered yet */
    struct conn           *hnext;
} conn_t;

/* What every request logs, generation or not. */
typedef struct rinfo {
    st_http_ep_t   ep;
    uint64_t       t0;               /* first byte received (or dispatch) */
    uint64_t       t_dispatch;
    char           client_ip[64];
    int            client_port;
    const char    *method;
    char           path[128];
    char           key_id[ST_HTTP_KEY_ID_MAX];
    const char    *role;
    char           prompt_sha[65];
    char           request_id[40];   /* the audit log's strata.request.id */
    uint32_t       prompt_tokens, completion_tokens;
    uint64_t       engine_ns;        /* time inside the engine (not front-door overhead) */
    int            generation;       /* a generation request (the audit's strata.generation) */
    int            tls;
} rinfo_t;

struct choice {
    hreq_t    *h;
    uint32_t   index;
    uint64_t   engine_id;
    /* under s->mbox_lock (engine thread writes) */
    st_http_buf_t pend;
    int        done;
    char       finish[16];
    st_status_t status;
    char       error[256];
    uint32_t   prompt_tokens, completion_tokens;
    uint64_t   queued_ns, ttft_ns, total_ns;
    uint64_t   last_tok_ns;
    uint64_t   itl_counts[ST_HTTP_HIST_MAX + 1];
    double     itl_sum;
    int        in_mbox;
    struct choice *mbox_next;        /* rewritten by the engine once in_mbox is 0 again */
    /* loop thread only */
    struct choice *wake_next;        /* the list st_http_on_wake took, copied under the lock */
    int        taken;                /* DONE was taken from the mailbox */
    st_http_buf_t work;              /* pend is swapped in here */
    st_http_buf_t text;              /* whole text, non-streaming */
    int        finished;
    int        role_sent;
};

struct hreq {
    struct st_http_server *s;
    struct evhttp_request *req;      /* NULL once the connection is gone */
    struct evhttp_request *orphan;   /* detached by evhttp on a failed write: ours to free */
    struct evhttp_connection *evcon;
    rinfo_t    ri;
    st_http_api_t api;
    int        stream, include_usage;
    uint32_t   n, n_submitted, n_finished;
    choice_t   ch[ST_HTTP_MAX_N];
    int        gone;                 /* client disconnected: cancelled */
    int        replied;              /* an answer (or the stream head) went out */
    int        failed;               /* replied with an error while choices ran */
    uint64_t   resp_bytes;
    uint64_t   peek_gen;             /* wake count of the last disconnect check */
    char       id[48];
    int64_t    created;
    const st_http_sink_t *sink;      /* NULL: evhttp's request (generate.c answers) */
    void      *sink_arg;
    hreq_t    *prev, *next;
};

typedef struct st_http_server {
    const st_http_config_t *cfg;
    st_engine_t           *engine;
    struct event_base     *base;
    struct evhttp         *http;
    struct evhttp_bound_socket *bound;
    SSL_CTX               *ssl;
    st_http_keys_t        *keys;
    st_http_bucket_t      *buckets;   /* one per key, same index */
    st_http_audit_t       *audit;
    st_http_metrics_t      metrics;
    char                   model_name[256];
    char                   model_file[256];
    char                   model_stem[256];
    int64_t                started;
    uint64_t               next_id;
    uint64_t               next_req;  /* request ids of the audit log */
    char                   id_prefix[17];
    uint64_t               rng;
    int                    port;
    /* mailbox: engine thread -> loop */
    pthread_mutex_t        mbox_lock;
    choice_t              *mbox_head, *mbox_tail;
    struct event          *wake;
    uint64_t               wake_gen;
    struct evbuffer       *chunk;     /* reused for stream chunks */
    st_http_buf_t          scratch;   /* reused to format chunks */
    /* requests waiting on the engine */
    hreq_t                *active;
    uint32_t               n_active;
    conn_t                *conns[CONN_BUCKETS];
    struct event          *tick;      /* housekeeping: slow clients, disconnects, drain */
    struct event          *sig_term, *sig_int;
    st_http_agent_t       *agent;     /* --agent-port, NULL when off */
    struct ws_conn        *ws_head;   /* upgraded /ws connections (ws.c) */
    st_http_grpc_t        *grpc;      /* --grpc-port, NULL when off */
    int                    draining;
    uint64_t               drain_deadline_ns;
    int                    cancelled_all;
} st_http_server_t;

/* access.c: the access decision every door shares. */
typedef struct st_http_access {
    int         code;                /* 0: allowed; else 401, 403 or 429 */
    const char *code_str;            /* OpenAI-style error code */
    char        msg[192];
    uint32_t    retry_after;         /* seconds, with 429 */
    int         www_authenticate;    /* no or a wrong key (HTTP adds the header) */
} st_http_access_t;

/* key: as presented (NULL: none); otp: the admin's one-time password (NULL:
 * none); path: what is asked for (admin paths need the OTP; messages name it); roles: the
 * roles that may; rate: take one request from a user key's bucket. Fills
 * ri->key_id and ri->role once the key is known. Returns a->code. */
int st_http_access_check(st_http_server_t *s, const char *key, const char *otp, const char *path,
                         unsigned roles, int rate, rinfo_t *ri, st_http_access_t *a);
/* One more request from the key already let in (ri->key_id): a WebSocket
 * message, say. 0, 429 (rate) or 401 (the key was revoked since). */
int st_http_access_rate(st_http_server_t *s, const rinfo_t *ri, st_http_access_t *a);

/* server.c */
void st_http_reply(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri, int code,
                   const char *reason, const char *ctype, const char *body, size_t len,
                   int close_conn);
void st_http_reply_error(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri,
                         int code, const char *msg, const char *param, const char *code_str,
                         int close_conn);
void st_http_log_request(st_http_server_t *s, rinfo_t *ri, int code, uint64_t bytes);
void st_http_common_headers(st_http_server_t *s, struct evhttp_request *req);
int  st_http_conn_gone(struct evhttp_connection *evcon);
uint32_t st_http_stage_stats(st_http_server_t *s, const st_engine_stats_t *es,
                             st_http_stage_stats_t *st, uint32_t cap);

/* agent.c */
st_status_t st_http_agent_start(st_http_server_t *s, st_http_agent_t **out, st_error_t *err);
int  st_http_agent_port(const st_http_agent_t *a);
void st_http_agent_free(st_http_agent_t *a);

/* The chat page's files (web/, embedded by the build). */
typedef struct st_http_asset {
    const char          *path;       /* "/", "/chat.js" */
    const char          *ctype;
    const unsigned char *data;
    size_t               len;
} st_http_asset_t;
const st_http_asset_t *st_http_asset_find(const char *path);

/* ws.c (ws_off.c when built without wslay) */
void st_http_handle_ws(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri);
/* The key a browser presents as the subprotocol "bearer.<key>" (it cannot
 * set headers on a WebSocket): 1 and out filled, or 0. */
int  st_http_ws_key(struct evkeyvalq *in, char *out, size_t cap);
void st_http_ws_tick(st_http_server_t *s);     /* heartbeat, drain, close deadlines */
void st_http_ws_free_all(st_http_server_t *s);

/* generate.c */
void st_http_handle_generate(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri,
                             st_http_api_t api);
void st_http_on_wake(evutil_socket_t fd, short what, void *arg);
void st_http_check_disconnects(st_http_server_t *s);
void st_http_cancel_all(st_http_server_t *s);
/* A door's generation: g (parsed, stream or not) runs on the engine and its
 * events go to sink. The request, or NULL with *code (an HTTP status: 404
 * unknown model, 503 busy, 400, 500), *param (the field, or NULL) and err. */
hreq_t *st_http_gen_submit(st_http_server_t *s, const st_http_gen_t *g, st_http_api_t api,
                           const rinfo_t *ri, const st_http_sink_t *sink, void *arg, int *code,
                           const char **param, st_error_t *err);
/* The door's client left or asked to stop: the engine cancels what runs;
 * sink->end still comes, with h->gone set. */
void st_http_gen_cancel(hreq_t *h);

#endif /* ST_HTTP_SERVER_PRIV_H */
