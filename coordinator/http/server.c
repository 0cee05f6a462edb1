/*
 * server.c - the front door's HTTP plumbing on libevent's evhttp:
 * listening (plain or TLS 1.3), per-connection accounting, request limits
 * evhttp does not enforce itself, routing, keys and roles, rate limits,
 * the small endpoints (/health, /metrics, /v1/models, /admin/...), the
 * audit and metrics of every answer, and the drain on SIGTERM.
 * Generation endpoints are in generate.c.
 *
 * What evhttp does for us: HTTP/1.x parsing, chunked bodies, the body
 * limit (413 before reading a body whose Content-Length is too large),
 * keep-alive and the idle timeout. What it does not, and this file adds:
 *   - a deadline for receiving a whole request (slowloris): a callback on
 *     each connection's input buffer notes when the first byte of a request
 *     arrives, and the housekeeping tick closes connections whose request
 *     is not complete after request_timeout_s;
 *   - 431 for too many or too large header lines (evhttp's own, larger,
 *     limit answers 413 beyond 64 KiB);
 *   - 400 and close for a request with both Content-Length and
 *     Transfer-Encoding (evhttp would let chunked win: a smuggling risk).
 */
#include "server_priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "st_http_grpc.h"
#include "st_log.h"
#include "st_util.h"

#define LIBEVENT_HEADER_LIMIT (64u << 10)
#define TICK_MS 100

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- connections ---- */

static size_t conn_hash(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    return (size_t)((v >> 4) ^ (v >> 14)) % CONN_BUCKETS;
}

static conn_t *conn_find(st_http_server_t *s, const struct bufferevent *bev)
{
    for (conn_t *c = s->conns[conn_hash(bev)]; c; c = c->hnext)
        if (c->bev == bev)
            return c;
    return NULL;
}

/* evbuffer callback on a connection's input: notes when the first byte of
 * a request arrives (the slow-client deadline counts from there). */
static void conn_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    conn_t *c = arg;
    if (info->n_added && !c->busy && !c->t_req_ns)
        c->t_req_ns = st_now_ns();
}

/* evhttp has freed its connection when it has cleared the callbacks. */
static int conn_dead(conn_t *c)
{
    bufferevent_event_cb ecb = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, &ecb, NULL);
    return ecb == NULL;
}

static void conn_release(st_http_server_t *s, conn_t *c)
{
    for (conn_t **pp = &s->conns[conn_hash(c->bev)]; *pp; pp = &(*pp)->hnext)
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    evbuffer_remove_cb(bufferevent_get_input(c->bev), conn_input, c);
    bufferevent_decref(c->bev);     /* the last reference: closes the socket */
    s->metrics.connections_open--;
    free(c);
}

/* evhttp asks for the bufferevent of each accepted connection. We keep a
 * reference to it: evhttp 2.1 has no hook for a connection's end, so the
 * housekeeping tick sees evhttp let go (callbacks cleared) and drops our
 * reference, which closes the socket. That also keeps `bev` a unique key
 * for the connection as long as we know it. */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    st_http_server_t *s = arg;
    struct bufferevent *bev;
    conn_t *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    if (s->ssl) {
        SSL *ssl = SSL_new(s->ssl);
        if (!ssl) {
            free(c);
            return NULL;
        }
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev || !evbuffer_add_cb(bufferevent_get_input(bev), conn_input, c)) {
        if (bev)
            bufferevent_free(bev);
        free(c);
        return NULL;
    }
    bufferevent_incref(bev);
    c->s = s;
    c->bev = bev;
    c->hnext = s->conns[conn_hash(bev)];
    s->conns[conn_hash(bev)] = c;
    s->metrics.connections_open++;
    s->metrics.connections_total++;
    return bev;
}

static void on_complete(struct evhttp_request *req, void *arg)
{
    conn_t *c = arg;
    c->busy = 0;
    c->t_req_ns = 0;
    /* A pipelined request already buffered starts its clock now. */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        c->t_req_ns = st_now_ns();
}

int st_http_conn_gone(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    char b;
    ssize_t r;
    if (fd < 0)
        return 1;
    r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* ---- answers ---- */

void st_http_common_headers(st_http_server_t *s, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Server", "strata");
    /* Every answer strata writes itself passes here (st_http_reply and the
     * start of a stream). HSTS only over TLS (RFC 6797 7.2: never on plain
     * HTTP). Two years, as hstspreload.org and Mozilla's TLS guidelines
     * recommend and configs/nginx/strata.conf sends: both fronts agree. */
    if (s->ssl)
        evhttp_add_header(h, "Strict-Transport-Security", "max-age=63072000; includeSubDomains");
}

void st_http_log_request(st_http_server_t *s, rinfo_t *ri, int code, uint64_t bytes)
{
    uint64_t now = st_now_ns();
    uint64_t spent = now - ri->t0;

    st_http_metrics_request(&s->metrics, ri->ep, code);
    if (ri->ep != ST_HTTP_EP_OTHER)
        st_http_hist_observe(&s->metrics.overhead,
                             (double)(spent > ri->engine_ns ? spent - ri->engine_ns : 0) * 1e-9);
    if (s->audit) {
        st_http_audit_rec_t r;
        memset(&r, 0, sizeof(r));
        r.ts_ms = wall_ms();
        r.client_ip = ri->client_ip;
        r.client_port = ri->client_port;
        r.key_id = ri->key_id;
        r.role = ri->role ? ri->role : "";
        r.method = ri->method;
        r.path = ri->path;
        r.status = code;
        r.request_id = ri->request_id;
        r.generation = ri->generation || ri->ep == ST_HTTP_EP_COMPLETIONS ||
                       ri->ep == ST_HTTP_EP_CHAT || ri->ep == ST_HTTP_EP_GENERATE;
        r.model = s->model_name;
        r.prompt_sha256 = ri->prompt_sha;
        r.prompt_tokens = ri->prompt_tokens;
        r.completion_tokens = ri->completion_tokens;
        r.response_bytes = bytes;
        r.duration_ns = spent;
        if (st_http_audit_write(s->audit, &r) != ST_OK) {
            if (s->metrics.audit_errors++ == 0)
                st_error("http", "cannot write the audit log");
        }
    }
}

static const char *reason_of(int code)
{
    switch (code) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default:  return "Error";
    }
}

void st_http_reply(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri, int code,
                   const char *reason, const char *ctype, const char *body, size_t len,
                   int close_conn)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    st_http_common_headers(s, req);
    evhttp_add_header(h, "Content-Type", ctype);
    if (close_conn || s->draining)
        evhttp_add_header(h, "Connection", "close");
    if (body && len)
        evbuffer_add(out, body, len);
    /* Logged (and the audit line synced) before the answer is handed over. */
    st_http_log_request(s, ri, code, len);
    evhttp_send_reply(req, code, reason ? reason : reason_of(code), NULL);
}

void st_http_reply_error(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri,
                         int code, const char *msg, const char *param, const char *code_str,
                         int close_conn)
{
    char *body = st_http_json_error(msg, st_http_error_type(code), param, code_str);
    st_http_reply(s, req, ri, code, NULL, "application/json", body, body ? strlen(body) : 0,
                  close_conn);
    free(body);
}

static void reply_json(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri, int code,
                       json_t *o)
{
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (!body) {
        st_http_reply_error(s, req, ri, 500, "out of memory", NULL, NULL, 0);
    } else {
        st_http_reply(s, req, ri, code, NULL, "application/json", body, strlen(body), 0);
        free(body);
    }
    if (o)
        json_decref(o);
}

/* ---- small endpoints ---- */

uint32_t st_http_stage_stats(st_http_server_t *s, const st_engine_stats_t *es,
                             st_http_stage_stats_t *st, uint32_t cap)
{
    if (s->cfg->stage_stats)
        return ST_MIN(s->cfg->stage_stats(s->cfg->stage_stats_ctx, st, cap), cap);
    memset(st, 0, sizeof(*st));
    st->stage = 0;
    st->up = es->healthy;
    st->compute_s = (double)es->step_ns_total * 1e-9;
    snprintf(st->host, sizeof(st->host), "local");
    return 1;
}

static void h_health(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    st_engine_stats_t es;
    st_engine_stats(s->engine, &es);
    if (s->draining)
        reply_json(s, req, ri, 503, json_pack("{s:s,s:s}", "status", "unavailable", "reason",
                                              "draining: the server is shutting down"));
    else if (!es.healthy)
        reply_json(s, req, ri, 503, json_pack("{s:s,s:s,s:I,s:i}", "status", "unavailable",
                                              "reason",
                                              es.detail[0] ? es.detail : "a pipeline stage is down",
                                              "worker_restarts", (json_int_t)es.worker_restarts,
                                              "workers_restart_pending",
                                              (int)es.workers_restart_pending));
    else
        reply_json(s, req, ri, 200, json_pack("{s:s,s:s,s:i,s:i,s:I,s:i}", "status", "ok",
                                              "model", s->model_name, "running", (int)es.running,
                                              "queued", (int)es.queued, "worker_restarts",
                                              (json_int_t)es.worker_restarts,
                                              "workers_restart_pending",
                                              (int)es.workers_restart_pending));
}

static void h_metrics(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    st_engine_stats_t es;
    st_http_stage_stats_t *stages = calloc(ST_HTTP_MAX_STAGES, sizeof(*stages));
    st_http_metrics_view_t v;
    size_t len;
    char *text;

    st_engine_stats(s->engine, &es);
    memset(&v, 0, sizeof(v));
    v.engine = &es;
    v.stages = stages;
    v.n_stages = stages ? st_http_stage_stats(s, &es, stages, ST_HTTP_MAX_STAGES) : 0;
    v.draining = s->draining;
    text = st_http_metrics_render(&s->metrics, &v, &len);
    if (!text)
        st_http_reply_error(s, req, ri, 500, "out of memory", NULL, NULL, 0);
    else
        st_http_reply(s, req, ri, 200, NULL, "text/plain; version=0.0.4; charset=utf-8", text,
                      len, 0);
    free(text);
    free(stages);
}

static void h_models(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    const char *sub = ri->path + strlen("/v1/models");
    json_t *m = json_pack("{s:s,s:s,s:I,s:s}", "id", s->model_name, "object", "model", "created",
                          (json_int_t)s->started, "owned_by", "strata");
    if (*sub == '/') {
        char *id = evhttp_uridecode(sub + 1, 0, NULL);
        int known = id && (!strcmp(id, s->model_name) || !strcmp(id, s->model_file) ||
                           !strcmp(id, s->model_stem));
        free(id);
        if (!known) {
            json_decref(m);
            st_http_reply_error(s, req, ri, 404, "The model does not exist", "model",
                                "model_not_found", 0);
            return;
        }
        reply_json(s, req, ri, 200, m);
        return;
    }
    reply_json(s, req, ri, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", m));
}

static void h_admin_status(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    st_engine_stats_t es;
    st_http_stage_stats_t stages[ST_HTTP_MAX_STAGES];
    json_t *arr = json_array();
    uint32_t n;

    st_engine_stats(s->engine, &es);
    n = st_http_stage_stats(s, &es, stages, ST_HTTP_MAX_STAGES);
    for (uint32_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:i,s:b,s:f,s:f,s:I,s:s}", "stage",
                                             (int)stages[i].stage, "up", stages[i].up,
                                             "compute_s", stages[i].compute_s, "hop_latency_s",
                                             stages[i].hop_latency_s, "bytes_sent",
                                             (json_int_t)stages[i].bytes_sent, "host",
                                             stages[i].host));
    reply_json(s, req, ri, 200,
               json_pack("{s:s,s:b,s:s,s:b,s:i,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:o}", "model",
                         s->model_name, "healthy", es.healthy, "detail", es.detail, "draining",
                         s->draining, "queued", (int)es.queued, "running", (int)es.running,
                         "slots", (int)es.n_slots, "requests_done", (json_int_t)es.requests_done,
                         "active_http_requests", (json_int_t)s->n_active, "open_connections",
                         (json_int_t)s->metrics.connections_open, "uptime_s",
                         (json_int_t)(time(NULL) - s->started), "keys",
                         (json_int_t)st_http_keys_count(s->keys), "stages", arr));
}

static void start_drain(st_http_server_t *s, const char *why);

static void h_admin_drain(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    reply_json(s, req, ri, 202, json_pack("{s:s,s:i}", "status", "draining", "in_flight",
                                          (int)s->n_active));
    start_drain(s, "POST /admin/drain");
}

static st_status_t load_keys(st_http_server_t *s, st_error_t *err)
{
    st_http_keys_t *k;
    st_http_bucket_t *b;
    st_status_t st = st_http_keys_load(s->cfg->keys_path, &k, err);
    if (st != ST_OK)
        return st;
    b = calloc(st_http_keys_count(k) + 1, sizeof(*b));
    if (!b) {
        st_http_keys_free(k);
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    }
    st_http_keys_free(s->keys);
    free(s->buckets);
    s->keys = k;
    s->buckets = b;
    return ST_OK;
}

static void h_admin_reload(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    st_error_t err;
    st_error_clear(&err);
    if (!s->cfg->keys_path) {
        st_http_reply_error(s, req, ri, 400, "the server runs without a key file", NULL, NULL, 0);
        return;
    }
    if (load_keys(s, &err) != ST_OK) {
        st_warn("http", "key reload failed, keeping the old keys: %s", err.msg);
        st_http_reply_error(s, req, ri, 500, err.msg, NULL, NULL, 0);
        return;
    }
    st_info("http", "reloaded %zu keys", st_http_keys_count(s->keys));
    reply_json(s, req, ri, 200, json_pack("{s:s,s:i}", "status", "reloaded", "keys",
                                          (int)st_http_keys_count(s->keys)));
}

static void h_audit(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    uint32_t lines = 100;
    char *text;
    size_t len;

    if (!s->audit) {
        st_http_reply_error(s, req, ri, 404, "the audit log is not enabled (--audit-log)", NULL,
                            NULL, 0);
        return;
    }
    if (q) {
        struct evkeyvalq params;
        const char *v;
        TAILQ_INIT(&params);
        if (evhttp_parse_query_str(q, &params) == 0 && (v = evhttp_find_header(&params, "lines"))) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 100000) {
                evhttp_clear_headers(&params);
                st_http_reply_error(s, req, ri, 400, "'lines' must be an integer in [1, 100000]",
                                    "lines", NULL, 0);
                return;
            }
            lines = (uint32_t)n;
        }
        evhttp_clear_headers(&params);
    }
    /* Watermarked for whoever reads it: a leaked export names its reader. */
    if (st_http_audit_export(s->audit, lines, ri->key_id[0] ? ri->key_id : "anonymous", &text,
                             &len) != ST_OK) {
        st_http_reply_error(s, req, ri, 500, "cannot read the audit log", NULL, NULL, 0);
        return;
    }
    st_http_reply(s, req, ri, 200, NULL, "application/x-ndjson", text, len, 0);
    free(text);
}

/* The chat page (web/), built into the binary: no files to install, and
 * nothing it loads comes from anywhere but this server. */
static void h_page(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    const st_http_asset_t *a = st_http_asset_find(ri->path);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);

    if (!a) {
        st_http_reply_error(s, req, ri, 404, "no such page", NULL, "unknown_url", 0);
        return;
    }
    evhttp_add_header(oh, "Content-Security-Policy", "default-src 'none'; script-src 'self'; "
                      "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                      "base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    evhttp_add_header(oh, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(oh, "Referrer-Policy", "no-referrer");
    evhttp_add_header(oh, "Cache-Control", "no-cache");
    st_http_reply(s, req, ri, 200, NULL, a->ctype, (const char *)a->data, a->len, 0);
}

/* ---- routing ---- */

enum { AUTH_NEVER, AUTH_KEYS, AUTH_METRICS };
#define R_ALL (ST_HTTP_ROLE_ADMIN | ST_HTTP_ROLE_DEVELOPER | ST_HTTP_ROLE_USER)

typedef struct route {
    const char  *path;
    int          prefix;             /* also matches path + "/..." */
    int          method;             /* EVHTTP_REQ_GET or _POST */
    st_http_ep_t ep;
    int          auth;
    unsigned     roles;
    int          gen;                /* a generation endpoint (api below) */
    st_http_api_t api;
    void (*fn)(st_http_server_t *, struct evhttp_request *, rinfo_t *);
} route_t;

static const route_t routes[] = {
    {"/v1/completions", 0, EVHTTP_REQ_POST, ST_HTTP_EP_COMPLETIONS, AUTH_KEYS, R_ALL, 1,
     ST_HTTP_API_COMPLETIONS, NULL},
    {"/v1/chat/completions", 0, EVHTTP_REQ_POST, ST_HTTP_EP_CHAT, AUTH_KEYS, R_ALL, 1,
     ST_HTTP_API_CHAT, NULL},
    {"/generate", 0, EVHTTP_REQ_POST, ST_HTTP_EP_GENERATE, AUTH_KEYS, R_ALL, 1,
     ST_HTTP_API_GENERATE, NULL},
    /* users too: OpenAI clients and UIs list the models before they generate */
    {"/v1/models", 1, EVHTTP_REQ_GET, ST_HTTP_EP_MODELS, AUTH_KEYS, R_ALL, 0, 0, h_models},
    {"/ws", 0, EVHTTP_REQ_GET, ST_HTTP_EP_WS, AUTH_KEYS, R_ALL, 0, 0, st_http_handle_ws},
    {"/", 0, EVHTTP_REQ_GET, ST_HTTP_EP_OTHER, AUTH_NEVER, 0, 0, 0, h_page},
    {"/chat.js", 0, EVHTTP_REQ_GET, ST_HTTP_EP_OTHER, AUTH_NEVER, 0, 0, 0, h_page},
    {"/health", 0, EVHTTP_REQ_GET, ST_HTTP_EP_HEALTH, AUTH_NEVER, 0, 0, 0, h_health},
    {"/metrics", 0, EVHTTP_REQ_GET, ST_HTTP_EP_METRICS, AUTH_METRICS,
     ST_HTTP_ROLE_ADMIN | ST_HTTP_ROLE_DEVELOPER, 0, 0, h_metrics},
    {"/admin/status", 0, EVHTTP_REQ_GET, ST_HTTP_EP_ADMIN, AUTH_KEYS,
     ST_HTTP_ROLE_ADMIN | ST_HTTP_ROLE_DEVELOPER, 0, 0, h_admin_status},
    {"/admin/drain", 0, EVHTTP_REQ_POST, ST_HTTP_EP_ADMIN, AUTH_KEYS, ST_HTTP_ROLE_ADMIN, 0, 0,
     h_admin_drain},
    {"/admin/reload-keys", 0, EVHTTP_REQ_POST, ST_HTTP_EP_ADMIN, AUTH_KEYS, ST_HTTP_ROLE_ADMIN,
     0, 0, h_admin_reload},
    {"/admin/audit", 0, EVHTTP_REQ_GET, ST_HTTP_EP_AUDIT, AUTH_KEYS,
     ST_HTTP_ROLE_ADMIN | ST_HTTP_ROLE_AUDITOR, 0, 0, h_audit},
};

static const route_t *route_find(const char *path)
{
    for (size_t i = 0; i < ST_ARRAY_SIZE(routes); i++) {
        size_t n = strlen(routes[i].path);
        if (!strcmp(path, routes[i].path) ||
            (routes[i].prefix && !strncmp(path, routes[i].path, n) && path[n] == '/'))
            return &routes[i];
    }
    return NULL;
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OTHER";
    }
}

/* The key from "Authorization: Bearer <key>" (or "x-api-key: <key>", or on
 * /ws the subprotocol "bearer.<key>", the one place a browser can put it). */
static const char *presented_key(struct evkeyvalq *h, const route_t *r, char *buf, size_t cap)
{
    const char *a = evhttp_find_header(h, "Authorization");
    if (a) {
        if (strncasecmp(a, "Bearer ", 7) != 0)
            return NULL;
        a += 7;
        while (*a == ' ')
            a++;
        return a;
    }
    a = evhttp_find_header(h, "x-api-key");
    if (!a && r->ep == ST_HTTP_EP_WS && st_http_ws_key(h, buf, cap))
        a = buf;
    return a;
}

/* 0 when the request may go on; otherwise it has been answered. */
static int authorize(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri,
                     const route_t *r)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    st_http_access_t a;
    char kbuf[ST_HTTP_KEY_MAX];

    if (!s->keys || r->auth == AUTH_NEVER || (r->auth == AUTH_METRICS && s->cfg->metrics_public))
        return 0;
    if (!st_http_access_check(s, presented_key(in, r, kbuf, sizeof(kbuf)),
                              evhttp_find_header(in, "X-Strata-OTP"),
                              r->path, r->roles, 1, ri, &a))
        return 0;
    if (a.www_authenticate)
        evhttp_add_header(out, "WWW-Authenticate", "Bearer realm=\"strata\"");
    if (a.code == 429) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", a.retry_after);
        evhttp_add_header(out, "Retry-After", ra);
    }
    st_http_reply_error(s, req, ri, a.code, a.msg, NULL, a.code_str, 0);
    return 1;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    st_http_server_t *s = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    conn_t *c = conn_find(s, evhttp_connection_get_bufferevent(evcon));
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *te, *cl;
    const route_t *r;
    rinfo_t ri;
    char *addr = NULL;
    ev_uint16_t port = 0;
    size_t hbytes = 0, hcount = 0;

    memset(&ri, 0, sizeof(ri));
    ri.t_dispatch = st_now_ns();
    ri.t0 = c && c->t_req_ns && c->t_req_ns <= ri.t_dispatch ? c->t_req_ns : ri.t_dispatch;
    ri.ep = ST_HTTP_EP_OTHER;
    ri.tls = s->ssl != NULL;
    ri.role = "";
    snprintf(ri.request_id, sizeof(ri.request_id), "%s-%llx", s->id_prefix,
             (unsigned long long)++s->next_req);
    if (c) {
        c->busy = 1;
        evhttp_request_set_on_complete_cb(req, on_complete, c);
    }
    evhttp_connection_get_peer(evcon, &addr, &port);
    snprintf(ri.client_ip, sizeof(ri.client_ip), "%s", addr ? addr : "");
    ri.client_port = port;
    ri.method = method_name(evhttp_request_get_command(req));
    snprintf(ri.path, sizeof(ri.path), "%s", path ? path : "");

    TAILQ_FOREACH(kv, in, next) {
        hcount++;
        hbytes += strlen(kv->key) + strlen(kv->value) + 4;
    }
    if (hcount > s->cfg->max_headers || hbytes > s->cfg->max_header_bytes) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request headers too large: %zu lines, %zu bytes (limits %u "
                 "and %zu)", hcount, hbytes, s->cfg->max_headers, s->cfg->max_header_bytes);
        st_http_reply_error(s, req, &ri, 431, msg, NULL, NULL, 1);
        return;
    }
    te = evhttp_find_header(in, "Transfer-Encoding");
    cl = evhttp_find_header(in, "Content-Length");
    if (te && (cl || strcasecmp(te, "chunked") != 0)) {
        st_http_reply_error(s, req, &ri, 400, cl ? "both Content-Length and Transfer-Encoding "
                            "are present" : "unsupported Transfer-Encoding", NULL, NULL, 1);
        return;
    }
    if (!path) {
        st_http_reply_error(s, req, &ri, 400, "malformed request URI", NULL, NULL, 1);
        return;
    }
    r = route_find(path);
    if (!r) {
        st_http_reply_error(s, req, &ri, 404, "no such endpoint", NULL, "unknown_url", 0);
        return;
    }
    ri.ep = r->ep;
    if (evhttp_request_get_command(req) != (enum evhttp_cmd_type)r->method) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          r->method == EVHTTP_REQ_GET ? "GET" : "POST");
        st_http_reply_error(s, req, &ri, 405, "method not allowed", NULL, NULL, 0);
        return;
    }
    if (authorize(s, req, &ri, r))
        return;
    if (s->draining && r->ep != ST_HTTP_EP_HEALTH && r->ep != ST_HTTP_EP_METRICS) {
        st_http_reply_error(s, req, &ri, 503, "the server is shutting down", NULL, NULL, 1);
        return;
    }
    if (r->gen)
        st_http_handle_generate(s, req, &ri, r->api);
    else
        r->fn(s, req, &ri);
}

/* ---- housekeeping and drain ---- */

static void start_drain(st_http_server_t *s, const char *why)
{
    if (s->draining)
        return;
    s->draining = 1;
    s->drain_deadline_ns = st_now_ns() + (uint64_t)s->cfg->drain_timeout_s * 1000000000ull;
    if (s->bound) {
        evhttp_del_accept_socket(s->http, s->bound);
        s->bound = NULL;
    }
    st_http_grpc_shutdown(s->grpc);
    st_info("http", "%s: draining %u in-flight requests (up to %d s)", why, s->n_active,
            s->cfg->drain_timeout_s);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    st_http_server_t *s = arg;
    uint64_t now = st_now_ns();
    uint64_t limit = (uint64_t)s->cfg->request_timeout_s * 1000000000ull;
    struct bufferevent *slow[64];
    size_t n_slow = 0;

    for (size_t b = 0; b < CONN_BUCKETS; b++)
        for (conn_t *c = s->conns[b], *nx; c; c = nx) {
            nx = c->hnext;
            if (conn_dead(c))
                conn_release(s, c);
            else if (!c->busy && c->t_req_ns && now - c->t_req_ns > limit &&
                     n_slow < ST_ARRAY_SIZE(slow))
                slow[n_slow++] = c->bev;
        }
    /* evhttp treats it as its own read timeout: the connection is dropped. */
    for (size_t i = 0; i < n_slow; i++) {
        s->metrics.request_timeouts++;
        bufferevent_trigger_event(slow[i], BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
    }
    st_http_check_disconnects(s);
    st_http_ws_tick(s);
    if (s->draining) {
        /* Answers handed to evhttp may still be in socket buffers: wait
         * for every connection to finish writing (bounded). */
        uint32_t busy = 0;
        for (size_t b = 0; b < CONN_BUCKETS; b++)
            for (conn_t *c = s->conns[b]; c; c = c->hnext)
                busy += c->busy != 0;
        if (s->n_active == 0 && (busy == 0 || now > s->drain_deadline_ns + 2000000000ull)) {
            event_base_loopexit(s->base, NULL);
        } else if (!s->cancelled_all && now > s->drain_deadline_ns) {
            st_warn("http", "drain timeout: cancelling %u requests", s->n_active);
            st_http_cancel_all(s);
            s->cancelled_all = 1;
        }
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    start_drain(arg, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- setup ---- */

static st_status_t tls_setup(st_http_server_t *s, st_error_t *err)
{
    const st_http_config_t *c = s->cfg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    unsigned long e;
    char buf[256];

    if (!ctx)
        return st_error_set(err, ST_ERR_BACKEND, "TLS: cannot create a context");
    /* TLS 1.3 only: older versions are refused during the handshake. */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        e = ERR_get_error();
        ERR_error_string_n(e, buf, sizeof(buf));
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return st_error_set(err, ST_ERR_INVALID, "TLS: %s / %s: %s", c->tls_cert, c->tls_key, buf);
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    s->ssl = ctx;
    return ST_OK;
}

static void server_free(st_http_server_t *s)
{
    st_http_ws_free_all(s);
    if (s->http)
        evhttp_free(s->http);
    for (size_t b = 0; b < CONN_BUCKETS; b++)
        while (s->conns[b])
            conn_release(s, s->conns[b]);
    if (s->tick) event_free(s->tick);
    if (s->wake) event_free(s->wake);
    if (s->sig_term) event_free(s->sig_term);
    if (s->sig_int) event_free(s->sig_int);
    if (s->sig_term || s->sig_int) {
        /* Freeing the events gave SIGTERM back its default action, and the
         * caller's teardown (stopping the engine and its workers) still has
         * to run: a second SIGTERM there killed the drained server with
         * -15 instead of letting it exit 0 (seen in CI). The drain is done,
         * so later ones are ignored; SIGKILL still ends a stuck teardown. */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
    }
    st_http_agent_free(s->agent);
    st_http_grpc_free(s->grpc);
    if (s->chunk) evbuffer_free(s->chunk);
    st_http_buf_free(&s->scratch);
    if (s->base)
        event_base_free(s->base);
    if (s->ssl)
        SSL_CTX_free(s->ssl);
    st_http_keys_free(s->keys);
    free(s->buckets);
    st_http_audit_close(s->audit);
    pthread_mutex_destroy(&s->mbox_lock);
    free(s);
}

static void names_from(st_http_server_t *s)
{
    const char *p = s->cfg->model_path, *base;
    char *dot;
    snprintf(s->model_name, sizeof(s->model_name), "%s", st_engine_model_name(s->engine));
    if (!s->model_name[0])
        snprintf(s->model_name, sizeof(s->model_name), "strata");
    if (!p)
        return;
    base = strrchr(p, '/');
    base = base ? base + 1 : p;
    snprintf(s->model_file, sizeof(s->model_file), "%s", base);
    snprintf(s->model_stem, sizeof(s->model_stem), "%s", base);
    dot = strrchr(s->model_stem, '.');
    if (dot && !strcmp(dot, ".gguf"))
        *dot = '\0';
}

st_status_t st_http_server_run(st_engine_t *engine, const st_http_config_t *cfg, st_error_t *err)
{
    st_http_server_t *s;
    st_status_t st;
    struct timeval tv;
    uint8_t rnd[16];

    if (!engine)
        return st_error_set(err, ST_ERR_INVALID, "front door: no engine");
    if ((st = st_http_config_check(cfg, err)) != ST_OK)
        return st;
    /* The engine thread wakes the loop: libevent must be thread-aware.
     * A process-wide switch of libevent's, idempotent. */
    if (evthread_use_pthreads() != 0)
        return st_error_set(err, ST_ERR_BACKEND, "libevent: no pthreads support");
    s = calloc(1, sizeof(*s));
    if (!s)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&s->mbox_lock, NULL);
    s->cfg = cfg;
    s->engine = engine;
    s->started = (int64_t)time(NULL);
    st_http_metrics_init(&s->metrics);
    names_from(s);
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        st = st_error_set(err, ST_ERR_BACKEND, "RAND_bytes failed");
        goto err;
    }
    for (int i = 0; i < 8; i++)
        snprintf(s->id_prefix + 2 * i, 3, "%02x", rnd[i]);
    memcpy(&s->rng, rnd + 8, 8);
    s->rng |= 1;

    if (cfg->keys_path && (st = load_keys(s, err)) != ST_OK)
        goto err;
    if (cfg->audit_path) {
        st_http_audit_params_t ap = {cfg->audit_path, cfg->audit_hmac_key, cfg->audit_max_bytes,
                                     cfg->audit_retain_days, cfg->audit_sync, wall_ms()};
        if ((st = st_http_audit_open(&ap, &s->audit, err)) != ST_OK)
            goto err;
    }
    if (cfg->tls_cert && (st = tls_setup(s, err)) != ST_OK)
        goto err;

    s->base = event_base_new();
    if (!s->base || evthread_make_base_notifiable(s->base) != 0) {
        st = st_error_set(err, ST_ERR_BACKEND, "libevent: cannot create the event loop");
        goto err;
    }
    s->http = evhttp_new(s->base);
    if (!s->http) {
        st = st_error_set(err, ST_ERR_BACKEND, "libevent: cannot create the HTTP server");
        goto err;
    }
    evhttp_set_bevcb(s->http, make_bev, s);
    evhttp_set_gencb(s->http, on_request, s);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)cfg->max_body);
    evhttp_set_max_headers_size(s->http, LIBEVENT_HEADER_LIMIT);
    evhttp_set_timeout(s->http, cfg->request_timeout_s);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    s->bound = evhttp_bind_socket_with_handle(s->http, cfg->host, cfg->port);
    if (!s->bound) {
        st = st_error_set(err, ST_ERR_IO, "cannot listen on %s:%u: %s", cfg->host, cfg->port,
                          strerror(errno));
        goto err;
    }
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        evutil_socket_t fd = evhttp_bound_socket_get_fd(s->bound);
        s->port = cfg->port;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    }
    if (cfg->agent_port >= 0 && (st = st_http_agent_start(s, &s->agent, err)) != ST_OK)
        goto err;
    if (cfg->grpc_port >= 0 && (st = st_http_grpc_start(s, &s->grpc, err)) != ST_OK)
        goto err;
    s->wake = event_new(s->base, -1, 0, st_http_on_wake, s);
    s->tick = event_new(s->base, -1, EV_PERSIST, on_tick, s);
    s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
    s->chunk = evbuffer_new();
    if (!s->wake || !s->tick || !s->sig_term || !s->sig_int || !s->chunk) {
        st = st_error_set(err, ST_ERR_NOMEM, "libevent: cannot create events");
        goto err;
    }
    tv.tv_sec = 0;
    tv.tv_usec = TICK_MS * 1000;
    event_add(s->tick, &tv);
    event_add(s->sig_term, NULL);
    event_add(s->sig_int, NULL);

    printf("strata: serving %s on %s://%s%s%s:%d/ (%s, %s)\n", s->model_name,
           s->ssl ? "https" : "http", strchr(cfg->host, ':') ? "[" : "", cfg->host,
           strchr(cfg->host, ':') ? "]" : "", s->port,
           s->keys ? "API keys required" : "no API keys", s->audit ? "audit log on" : "no audit log");
    if (s->agent)
        printf("strata: HAProxy agent check on %s%s%s:%d\n", strchr(cfg->host, ':') ? "[" : "",
               cfg->host, strchr(cfg->host, ':') ? "]" : "", st_http_agent_port(s->agent));
    if (s->grpc)
        printf("strata: gRPC on %s%s%s:%d (%s)\n", strchr(cfg->host, ':') ? "[" : "", cfg->host,
               strchr(cfg->host, ':') ? "]" : "", st_http_grpc_port(s->grpc),
               s->ssl ? "TLS" : "plaintext");
    fflush(stdout);

    event_base_dispatch(s->base);

    /* Every engine request that points at us must have ended. */
    while (s->n_active) {
        st_http_cancel_all(s);
        event_base_loop(s->base, EVLOOP_ONCE);
    }
    st_info("http", "drained; %llu connections served",
            (unsigned long long)s->metrics.connections_total);
    server_free(s);
    return ST_OK;

err:
    server_free(s);
    return st;
}
