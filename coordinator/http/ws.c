/*
 * ws.c - the WebSocket door: GET /ws on the HTTP listener (wss:// under
 * TLS) is upgraded (RFC 6455) and the connection then carries JSON
 * generation requests in and streamed JSON answers out; docs/HTTP.md has
 * the protocol. Framing, masking, fragments, control frames, the close
 * handshake and the message-size limit are wslay's; this file does the
 * handshake, the event-loop glue, the protocol on top and its limits.
 *
 * The upgrade is an ordinary evhttp request: routing, the access decision
 * (key, role, allowlist, rate) and drain refusal happen before it reaches
 * here. evhttp 2.1 has no upgrade hook, so after the 101 this file takes
 * the connection's bufferevent over (its own callbacks replace evhttp's)
 * and gives it back to evhttp only to free it (evhttp_connection_free).
 *
 * Each generation message becomes an engine request through the path every
 * door shares (st_http_gen_submit); its text comes back through the sink
 * below on the loop thread, so the log, the audit line and the metrics are
 * the HTTP API's.
 *
 * Bounds: a message in is at most max_body bytes (1009 beyond), at most
 * WS_MAX_INFLIGHT requests run per connection, the output buffer holds at
 * most WS_OUT_HIGH bytes and wslay's queue at most cfg->ws_queue messages
 * (then 1008: the client is not reading), a closing connection gets
 * WS_CLOSE_GRACE_NS to take its close frame, and a client that misses two
 * pings is dropped.
 */
#include "server_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "st_log.h"
#include "st_util.h"
#include "unicode.h"

#define WS_GUID           "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_PROTO          "strata.v1"
#define WS_KEY_PROTO      "bearer."          /* the browser's way to present a key */
#define WS_FRAG           16384u             /* largest frame we send */
#define WS_OUT_HIGH       (64u << 10)        /* output buffer cap before wslay queues */
#define WS_IN_HIGH        (256u << 10)       /* bytes read ahead of wslay */
#define WS_MAX_INFLIGHT   16u
#define WS_ID_MAX         64u
#define WS_CLOSE_GRACE_NS 2000000000ull

typedef struct ws_conn ws_conn_t;

/* A message longer than WS_FRAG, sent as fragments by wslay. */
typedef struct ws_frag {
    char           *p;
    size_t          len, off;
    struct ws_frag *next;
} ws_frag_t;

typedef struct ws_req {
    ws_conn_t     *w;
    hreq_t        *h;
    char           id[WS_ID_MAX + 3];        /* the id as JSON: "abc" or 17 */
    int            cancelled;                /* by {"cancel": id} */
    struct ws_req *next;
} ws_req_t;

struct ws_conn {
    st_http_server_t         *s;
    struct evhttp_connection *evcon;
    struct bufferevent       *bev;
    wslay_event_context_ptr   ctx;
    rinfo_t                   ri;            /* the upgrade's: address, key, role */
    ws_req_t                 *reqs;
    uint32_t                  n_reqs;
    uint64_t                  next_auto;     /* ids for requests without one */
    ws_frag_t                *frags;
    int                       closing;       /* no more requests; ends once they have */
    int                       dead;          /* the socket is gone or must go now */
    int                       in_wslay;      /* inside wslay_event_recv/send */
    int                       bad_frame;     /* wslay's parser refused a frame */
    uint64_t                  close_ns;
    uint64_t                  ping_ns;
    int                       ping_out, missed;
    uint64_t                  bytes_out;
    ws_conn_t                *prev, *next;
};

static void kick(ws_conn_t *w);
static void begin_close(ws_conn_t *w, int code, const char *why);

/* ---- sending ---- */

static ssize_t frag_read(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                         const union wslay_event_msg_source *src, int *eof, void *user)
{
    ws_frag_t *f = src->data;
    size_t n = f->len - f->off;
    if (n > len)
        n = len;
    if (n > WS_FRAG)
        n = WS_FRAG;
    memcpy(buf, f->p + f->off, n);
    f->off += n;
    *eof = f->off == f->len;
    return (ssize_t)n;
}

/* Queues one text message. 0, or -1 when the connection is being closed. */
static int queue_text(ws_conn_t *w, const char *p, size_t len)
{
    int r;

    if (w->closing || w->dead || !wslay_event_get_write_enabled(w->ctx))
        return -1;
    if (wslay_event_get_queued_msg_count(w->ctx) >= w->s->cfg->ws_queue) {
        char why[96];
        snprintf(why, sizeof(why), "client is not reading: %u messages queued",
                 w->s->cfg->ws_queue);
        st_warn("http", "ws %s:%d: %s; closing", w->ri.client_ip, w->ri.client_port, why);
        /* Its requests are cancelled too: left running they would keep the
         * engine (and the connection) busy for a client that is not there. */
        begin_close(w, WSLAY_CODE_POLICY_VIOLATION, why);
        return -1;
    }
    /* Fragments wslay has read to the end are done with: free them now, not
     * only with the connection, so a long-lived one does not keep them. */
    for (ws_frag_t **pp = &w->frags; *pp;) {
        ws_frag_t *f = *pp;
        if (f->off == f->len) {
            *pp = f->next;
            free(f->p);
            free(f);
        } else {
            pp = &f->next;
        }
    }
    if (len <= WS_FRAG) {
        struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)p, len};
        r = wslay_event_queue_msg(w->ctx, &m);   /* copies p */
    } else {
        ws_frag_t *f = calloc(1, sizeof(*f));
        struct wslay_event_fragmented_msg m;
        if (!f || !(f->p = malloc(len))) {
            free(f);
            return -1;
        }
        memcpy(f->p, p, len);
        f->len = len;
        f->next = w->frags;           /* freed with the connection */
        w->frags = f;
        m.opcode = WSLAY_TEXT_FRAME;
        m.source.data = f;
        m.read_callback = frag_read;
        r = wslay_event_queue_fragmented_msg(w->ctx, &m);
    }
    return r == 0 ? 0 : -1;
}

static void queue_buf(ws_conn_t *w, st_http_buf_t *b)
{
    if (!b->oom)
        queue_text(w, b->p, b->len);
    b->len = 0;
    b->oom = 0;
}

/* {"id":..,"error":{"message":..,"type":..,"code":..},"done":true} */
static void send_error(ws_conn_t *w, const char *id, const char *msg, const char *code,
                       uint32_t retry_after)
{
    st_http_buf_t b = {0};
    st_http_buf_puts(&b, "{\"id\":");
    st_http_buf_puts(&b, id && id[0] ? id : "null");
    st_http_buf_puts(&b, ",\"done\":true,\"error\":{\"message\":");
    st_http_buf_json_str(&b, msg, strlen(msg));
    st_http_buf_printf(&b, ",\"code\":\"%s\"", code);
    if (retry_after)
        st_http_buf_printf(&b, ",\"retry_after\":%u", retry_after);
    st_http_buf_puts(&b, "}}");
    queue_buf(w, &b);
    st_http_buf_free(&b);
}

/* ---- the sink: engine events for a request of this connection ---- */

static void sink_text(hreq_t *h, choice_t *c, const char *text, size_t len)
{
    ws_req_t *r = h->sink_arg;
    st_http_buf_t *b = &h->s->scratch;

    b->len = 0;
    b->oom = 0;
    st_http_buf_puts(b, "{\"id\":");
    st_http_buf_puts(b, r->id);
    st_http_buf_printf(b, ",\"index\":%u,\"text\":", c->index);
    st_http_buf_json_str(b, text, len);
    st_http_buf_puts(b, "}");
    h->resp_bytes += b->len;
    queue_buf(r->w, b);
    kick(r->w);
}

static void sink_choice_end(hreq_t *h, choice_t *c)
{
    ws_req_t *r = h->sink_arg;
    st_http_buf_t *b = &h->s->scratch;

    if (h->n_submitted < 2 || c->status != ST_OK)
        return;                      /* one choice: its end is the request's */
    b->len = 0;
    b->oom = 0;
    st_http_buf_puts(b, "{\"id\":");
    st_http_buf_puts(b, r->id);
    st_http_buf_printf(b, ",\"index\":%u,\"finish_reason\":\"%s\"}", c->index, c->finish);
    queue_buf(r->w, b);
    kick(r->w);
}

static void maybe_end(ws_conn_t *w);

static void sink_end(hreq_t *h)
{
    ws_req_t *r = h->sink_arg, **pp;
    ws_conn_t *w = r->w;
    st_http_buf_t b = {0};
    const choice_t *bad = NULL;

    for (uint32_t i = 0; i < h->n_submitted; i++)
        if (h->ch[i].status != ST_OK && !bad)
            bad = &h->ch[i];
    if (h->gone) {
        if (r->cancelled) {
            st_http_buf_puts(&b, "{\"id\":");
            st_http_buf_puts(&b, r->id);
            st_http_buf_puts(&b, ",\"done\":true,\"finish_reason\":\"cancelled\"}");
            queue_buf(w, &b);
        }
    } else if (bad) {
        send_error(w, r->id, bad->error[0] ? bad->error : "generation failed", "server_error", 0);
    } else {
        st_http_buf_puts(&b, "{\"id\":");
        st_http_buf_puts(&b, r->id);
        st_http_buf_printf(&b, ",\"done\":true,\"finish_reason\":\"%s\",\"usage\":{"
                           "\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%u},"
                           "\"timing\":{\"ttft_ms\":%.3f,\"total_ms\":%.3f}}",
                           h->ch[0].finish, h->ri.prompt_tokens, h->ri.completion_tokens,
                           h->ri.prompt_tokens + h->ri.completion_tokens,
                           (double)h->ch[0].ttft_ns * 1e-6, (double)h->ch[0].total_ns * 1e-6);
        queue_buf(w, &b);
    }
    st_http_buf_free(&b);
    for (pp = &w->reqs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    w->n_reqs--;
    free(r);
    kick(w);
}

static const st_http_sink_t ws_sink = {sink_text, sink_choice_end, sink_end};

/* ---- the connection's life ---- */

static void cancel_all(ws_conn_t *w)
{
    for (ws_req_t *r = w->reqs; r; r = r->next)
        st_http_gen_cancel(r->h);
}

/* Stops taking requests: the ones running are cancelled (their end comes
 * through the sink), and the connection goes once they have ended. */
static void begin_close(ws_conn_t *w, int code, const char *why)
{
    if (!w->closing) {
        w->closing = 1;
        w->close_ns = st_now_ns();
    }
    if (code && wslay_event_get_write_enabled(w->ctx) && !wslay_event_get_close_sent(w->ctx))
        wslay_event_queue_close(w->ctx, (uint16_t)code, (const uint8_t *)why,
                                why ? strlen(why) : 0);
    bufferevent_disable(w->bev, EV_READ);
    cancel_all(w);
}

static void teardown(ws_conn_t *w)
{
    st_http_server_t *s = w->s;

    if (w->prev)
        w->prev->next = w->next;
    else
        s->ws_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    st_http_log_request(s, &w->ri, 101, w->bytes_out);
    wslay_event_context_free(w->ctx);
    while (w->frags) {
        ws_frag_t *f = w->frags;
        w->frags = f->next;
        free(f->p);
        free(f);
    }
    /* evhttp frees its request and the bufferevent; the server's connection
     * record sees the callbacks cleared and lets the socket go. */
    evhttp_connection_free(w->evcon);
    free(w);
}

static void maybe_end(ws_conn_t *w)
{
    if (w->in_wslay || !w->closing || w->n_reqs)
        return;
    if (!w->dead && (wslay_event_want_write(w->ctx) ||
                     evbuffer_get_length(bufferevent_get_output(w->bev))) &&
        st_now_ns() - w->close_ns < WS_CLOSE_GRACE_NS)
        return;
    teardown(w);
}

static void kick(ws_conn_t *w)
{
    if (w->in_wslay)
        return;
    if (!w->dead && wslay_event_want_write(w->ctx)) {
        w->in_wslay = 1;
        if (wslay_event_send(w->ctx) != 0) {
            w->dead = 1;
            w->in_wslay = 0;
            begin_close(w, 0, NULL);
        }
        w->in_wslay = 0;
    }
    if (!w->closing && wslay_event_get_close_sent(w->ctx))
        begin_close(w, 0, NULL);
    maybe_end(w);
}

/* ---- wslay's callbacks ---- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user)
{
    ws_conn_t *w = user;
    int n = evbuffer_remove(bufferevent_get_input(w->bev), buf, len);
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    ws_conn_t *w = user;
    struct evbuffer *out = bufferevent_get_output(w->bev);
    static const uint8_t empty_close[2] = {0x88, 0x00};
    static const uint8_t close_1002[4] = {0x88, 0x02, WSLAY_CODE_PROTOCOL_ERROR >> 8,
                                          WSLAY_CODE_PROTOCOL_ERROR & 0xff};
    if (evbuffer_get_length(out) >= WS_OUT_HIGH) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    /* A frame wslay's parser refuses (a fragmented or oversized control
     * frame, a length not in its shortest form) fails the connection with
     * a close frame without a code; RFC 6455 7.4.1 has 1002 for it, as
     * wslay sends for the frames it refuses later. That close is the only
     * one without a code we send, and goes as one 2-byte header: it is
     * swapped for one with the code. */
    if (w->bad_frame && len == sizeof(empty_close) && !memcmp(data, empty_close, len)) {
        if (evbuffer_add(out, close_1002, sizeof(close_1002)) != 0) {
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        w->bytes_out += sizeof(close_1002);
        return (ssize_t)len;
    }
    if (evbuffer_add(out, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    w->bytes_out += len;
    return (ssize_t)len;
}

static const char *const gen_fields[] = {
    "id", "prompt", "messages", "model", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "min_p", "seed", "stop", "n", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "ignore_eos", "user", NULL,
};

/* The id as JSON into out: a string of at most WS_ID_MAX bytes or an
 * integer. 0, or -1 with why set. */
static int id_of(json_t *v, char *out, size_t cap, const char **why)
{
    if (json_is_integer(v)) {
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
        return 0;
    }
    if (json_is_string(v) && json_string_length(v) <= WS_ID_MAX) {
        char *e = json_dumps(v, JSON_ENCODE_ANY);
        if (!e || strlen(e) >= cap) {
            free(e);
            *why = "'id' is too long";
            return -1;
        }
        snprintf(out, cap, "%s", e);
        free(e);
        return 0;
    }
    *why = "'id' must be a string of at most 64 bytes or an integer";
    return -1;
}

static ws_req_t *req_find(ws_conn_t *w, const char *id)
{
    for (ws_req_t *r = w->reqs; r; r = r->next)
        if (!strcmp(r->id, id))
            return r;
    return NULL;
}

static void on_cancel(ws_conn_t *w, json_t *root)
{
    char id[WS_ID_MAX + 3];
    const char *why = NULL;
    ws_req_t *r;

    if (json_object_size(root) != 1) {
        begin_close(w, WSLAY_CODE_POLICY_VIOLATION, "a cancel message has only 'cancel'");
        return;
    }
    if (id_of(json_object_get(root, "cancel"), id, sizeof(id), &why)) {
        begin_close(w, WSLAY_CODE_POLICY_VIOLATION, why);
        return;
    }
    r = req_find(w, id);
    if (!r) {
        send_error(w, id, "no request with this id is running", "unknown_id", 0);
        return;
    }
    r->cancelled = 1;
    st_http_gen_cancel(r->h);
}

static void on_generate(ws_conn_t *w, json_t *root, const char *text, size_t len)
{
    st_http_server_t *s = w->s;
    st_http_parse_limits_t lim = {s->cfg->max_n, s->cfg->default_max_tokens};
    st_http_api_t api = json_object_get(root, "messages") ? ST_HTTP_API_CHAT
                                                         : ST_HTTP_API_COMPLETIONS;
    char id[WS_ID_MAX + 3], param[64];
    const char *why = NULL, *eparam = NULL;
    json_t *jid = json_object_get(root, "id");
    st_http_access_t a;
    st_http_gen_t g;
    st_error_t err;
    ws_req_t *r;
    rinfo_t ri;
    int code = 0;

    if (jid) {
        if (id_of(jid, id, sizeof(id), &why)) {
            begin_close(w, WSLAY_CODE_POLICY_VIOLATION, why);
            return;
        }
    } else {
        snprintf(id, sizeof(id), "\"ws-%llu\"", (unsigned long long)++w->next_auto);
    }
    if (req_find(w, id)) {
        send_error(w, id, "a request with this id is still running", "duplicate_id", 0);
        return;
    }
    if (w->n_reqs >= WS_MAX_INFLIGHT) {
        send_error(w, id, "too many requests in flight on this connection (16)",
                   "too_many_requests", 0);
        return;
    }
    if (s->draining) {
        send_error(w, id, "the server is shutting down", "server_shutting_down", 0);
        return;
    }
    ri = w->ri;
    ri.t0 = ri.t_dispatch = st_now_ns();
    ri.method = "WS";
    snprintf(ri.request_id, sizeof(ri.request_id), "%s-%llx", s->id_prefix,
             (unsigned long long)++s->next_req);
    if (st_http_access_rate(s, &ri, &a)) {
        send_error(w, id, a.msg, a.code_str, a.retry_after);
        st_http_log_request(s, &ri, a.code, 0);
        return;
    }
    st_error_clear(&err);
    if (st_http_gen_parse(&g, api, text, len, &lim, param, &err) != ST_OK) {
        send_error(w, id, err.msg, "invalid_request_error", 0);
        st_http_log_request(s, &ri, 400, 0);
        st_http_gen_free(&g);
        return;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        send_error(w, id, "out of memory", "server_error", 0);
        st_http_gen_free(&g);
        return;
    }
    r->w = w;
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->h = st_http_gen_submit(s, &g, api, &ri, &ws_sink, r, &code, &eparam, &err);
    st_http_gen_free(&g);
    if (!r->h) {
        send_error(w, id, err.msg, code == 404 ? "model_not_found"
                   : code == 503 ? "server_overloaded" : code == 400 ? "invalid_request_error"
                   : "server_error", code == 503 ? 1 : 0);
        st_http_log_request(s, &ri, code, 0);
        free(r);
        return;
    }
    r->next = w->reqs;
    w->reqs = r;
    w->n_reqs++;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m,
                   void *user)
{
    ws_conn_t *w = user;
    const char *text = (const char *)m->msg;
    json_t *root;
    json_error_t jerr;
    const char *key;
    json_t *v;

    switch (m->opcode) {
    case WSLAY_PONG:
        w->ping_out = 0;
        w->missed = 0;
        return;
    case WSLAY_PING:                 /* wslay answers it */
        return;
    case WSLAY_CONNECTION_CLOSE:     /* wslay answers it; we stop */
        begin_close(w, 0, NULL);
        return;
    case WSLAY_BINARY_FRAME:
        begin_close(w, WSLAY_CODE_UNSUPPORTED_DATA, "binary messages are not accepted; send "
                    "JSON text");
        return;
    case WSLAY_TEXT_FRAME:
        break;
    default:
        return;
    }
    if (w->closing)
        return;
    for (size_t i = 0; i < m->msg_length;) {
        size_t n = st_utf8_valid_len(text + i, m->msg_length - i);
        if (!n) {
            begin_close(w, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "text message is not UTF-8");
            return;
        }
        i += n;
    }
    root = json_loadb(text, m->msg_length, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        begin_close(w, WSLAY_CODE_POLICY_VIOLATION, "a message must be one JSON object");
        return;
    }
    if (json_object_get(root, "cancel")) {
        on_cancel(w, root);
        json_decref(root);
        return;
    }
    json_object_foreach(root, key, v) {
        int known = 0;
        for (int k = 0; gen_fields[k]; k++)
            known |= !strcmp(key, gen_fields[k]);
        if (!known) {
            char why[120];
            snprintf(why, sizeof(why), "unknown field '%.64s'", key);
            json_decref(root);
            begin_close(w, WSLAY_CODE_POLICY_VIOLATION, why);
            return;
        }
    }
    on_generate(w, root, text, m->msg_length);
    json_decref(root);
}

/* ---- bufferevent callbacks ---- */

static void on_read(struct bufferevent *bev, void *arg)
{
    ws_conn_t *w = arg;

    if (w->closing || w->dead) {
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        return;
    }
    w->in_wslay = 1;
    if (wslay_event_recv(w->ctx) != 0) {
        /* ws_recv fails only with WOULDBLOCK: this is a frame wslay's
         * parser refused (or no memory). The socket is fine; the close
         * frame wslay queued goes out (ws_send gives it its code). */
        w->bad_frame = 1;
        w->in_wslay = 0;
        begin_close(w, 0, NULL);
    }
    w->in_wslay = 0;
    /* wslay stops reading once it has a close frame or has failed the
     * connection (a bad frame: it queued the close code itself). */
    if (!w->closing && !wslay_event_get_read_enabled(w->ctx))
        begin_close(w, 0, NULL);
    kick(w);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    kick(arg);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    ws_conn_t *w = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        w->dead = 1;
        begin_close(w, 0, NULL);
        maybe_end(w);
    }
}

/* ---- the upgrade ---- */

/* 1 when the comma-separated header value h has token t (case-insensitive). */
static int has_token(const char *h, const char *t)
{
    size_t n = strlen(t);
    while (h && *h) {
        while (*h == ' ' || *h == '\t' || *h == ',')
            h++;
        if (!strncasecmp(h, t, n) && (h[n] == '\0' || h[n] == ',' || h[n] == ' ' ||
                                      h[n] == '\t'))
            return 1;
        h = strchr(h, ',');
    }
    return 0;
}

/* Same origin as the page (scheme://Host), or one of --ws-allow-origin. A
 * browser always sends Origin: without this check any web page open in a
 * user's browser could drive a loopback server that needs no key. */
static int origin_ok(st_http_server_t *s, const char *origin, const char *host)
{
    char own[320];
    const char *list = s->cfg->ws_origins;
    size_t n = strlen(origin);

    if (!strcmp(origin, "null"))
        return list && !strcmp(list, "*");
    snprintf(own, sizeof(own), "%s://%s", s->ssl ? "https" : "http", host ? host : "");
    if (host && !strcasecmp(origin, own))
        return 1;
    while (list && *list) {
        const char *e = strchr(list, ',');
        size_t len = e ? (size_t)(e - list) : strlen(list);
        if ((len == 1 && list[0] == '*') || (len == n && !strncasecmp(list, origin, n)))
            return 1;
        list = e ? e + 1 : NULL;
    }
    return 0;
}

static int key_valid(const char *k)
{
    unsigned char raw[32];
    size_t n = strlen(k);
    /* 16 random bytes, base64: 24 characters ending in "==". */
    return n == 24 && k[22] == '=' && k[23] == '=' &&
           EVP_DecodeBlock(raw, (const unsigned char *)k, 24) == 18;
}

static void send_101(ws_conn_t *w, const char *key, int proto)
{
    unsigned char sha[SHA_DIGEST_LENGTH];
    char cat[128], acc[64];
    struct evbuffer *out = bufferevent_get_output(w->bev);

    snprintf(cat, sizeof(cat), "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)cat, strlen(cat), sha);
    EVP_EncodeBlock((unsigned char *)acc, sha, sizeof(sha));
    evbuffer_add_printf(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%sServer: strata\r\n"
                        "\r\n", acc, proto ? "Sec-WebSocket-Protocol: " WS_PROTO "\r\n" : "");
}

static void send_hello(ws_conn_t *w)
{
    st_http_buf_t b = {0};
    st_http_buf_puts(&b, "{\"hello\":\"strata\",\"protocol\":\"" WS_PROTO "\",\"model\":");
    st_http_buf_json_str(&b, w->s->model_name, strlen(w->s->model_name));
    st_http_buf_printf(&b, ",\"max_in_flight\":%u}", WS_MAX_INFLIGHT);
    queue_buf(w, &b);
    st_http_buf_free(&b);
}

int st_http_ws_key(struct evkeyvalq *in, char *out, size_t cap)
{
    const char *p = evhttp_find_header(in, "Sec-WebSocket-Protocol");
    size_t n = strlen(WS_KEY_PROTO);

    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!strncmp(p, WS_KEY_PROTO, n)) {
            size_t len = strcspn(p + n, ", \t");
            if (len >= cap)
                return 0;
            memcpy(out, p + n, len);
            out[len] = '\0';
            return 1;
        }
        p = strchr(p, ',');
    }
    return 0;
}

void st_http_handle_ws(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *up = evhttp_find_header(in, "Upgrade");
    const char *conn = evhttp_find_header(in, "Connection");
    const char *ver = evhttp_find_header(in, "Sec-WebSocket-Version");
    const char *key = evhttp_find_header(in, "Sec-WebSocket-Key");
    const char *origin = evhttp_find_header(in, "Origin");
    const char *protos = evhttp_find_header(in, "Sec-WebSocket-Protocol");
    struct wslay_event_callbacks cb = {ws_recv, ws_send, NULL, NULL, NULL, NULL, on_msg};
    ws_conn_t *w;

    if (!up || !has_token(up, "websocket") || !conn || !has_token(conn, "upgrade")) {
        st_http_reply_error(s, req, ri, 400, "/ws is a WebSocket endpoint: send 'Upgrade: "
                            "websocket' and 'Connection: Upgrade'", NULL, NULL, 0);
        return;
    }
    if (!ver || strcmp(ver, "13")) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Sec-WebSocket-Version", "13");
        st_http_reply_error(s, req, ri, 426, "WebSocket version 13 (RFC 6455) is the one "
                            "supported", NULL, NULL, 1);
        return;
    }
    if (!key || !key_valid(key)) {
        st_http_reply_error(s, req, ri, 400, "Sec-WebSocket-Key must be 16 bytes in base64",
                            NULL, NULL, 1);
        return;
    }
    if (origin && !origin_ok(s, origin, evhttp_find_header(in, "Host"))) {
        st_http_reply_error(s, req, ri, 403, "this Origin may not open /ws (--ws-allow-origin)",
                            NULL, "origin_not_allowed", 1);
        return;
    }
    if (protos && !has_token(protos, WS_PROTO)) {
        st_http_reply_error(s, req, ri, 400, "offer the '" WS_PROTO "' subprotocol", NULL,
                            NULL, 1);
        return;
    }
    w = calloc(1, sizeof(*w));
    if (!w || wslay_event_context_server_init(&w->ctx, &cb, w) != 0) {
        free(w);
        st_http_reply_error(s, req, ri, 500, "out of memory", NULL, NULL, 1);
        return;
    }
    w->s = s;
    w->evcon = evhttp_request_get_connection(req);
    w->bev = evhttp_connection_get_bufferevent(w->evcon);
    w->ri = *ri;
    w->ri.ep = ST_HTTP_EP_WS;
    w->ping_ns = st_now_ns();
    wslay_event_config_set_max_recv_msg_length(w->ctx, s->cfg->max_body);

    /* From here the connection is ours (see the top of this file). */
    bufferevent_setwatermark(w->bev, EV_READ, 0, WS_IN_HIGH);
    bufferevent_setwatermark(w->bev, EV_WRITE, WS_OUT_HIGH / 2, 0);
    bufferevent_setcb(w->bev, on_read, on_write, on_event, w);
    bufferevent_enable(w->bev, EV_READ | EV_WRITE);
    /* evhttp armed --request-timeout on both events, and libevent 2.1
     * drops a persistent event's timeout only if a timer is pending when
     * it is cleared (else the next read re-arms the old one): a client
     * quiet for that long after a message was dropped. Arm one, then
     * clear it. The heartbeat is the idle check here. */
    {
        const struct timeval day = {86400, 0};
        bufferevent_set_timeouts(w->bev, &day, &day);
        bufferevent_set_timeouts(w->bev, NULL, NULL);
    }
    /* Real-time messages of a few dozen bytes: without TCP_NODELAY, Nagle
     * held one behind the client's delayed ACK (a 40 ms p99 gap between
     * tokens in bench/doors.py). */
    {
        int one = 1;
        (void)setsockopt(bufferevent_getfd(w->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    send_101(w, key, protos != NULL);
    w->next = s->ws_head;
    if (s->ws_head)
        s->ws_head->prev = w;
    s->ws_head = w;
    send_hello(w);
    kick(w);
    if (evbuffer_get_length(bufferevent_get_input(w->bev)))
        on_read(w->bev, w);          /* frames that came with the upgrade */
}

void st_http_ws_tick(st_http_server_t *s)
{
    uint64_t now = st_now_ns();
    uint64_t every = (uint64_t)s->cfg->ws_ping_s * 1000000000ull;

    for (ws_conn_t *w = s->ws_head, *nx; w; w = nx) {
        nx = w->next;
        if (w->closing) {
            if (now - w->close_ns >= WS_CLOSE_GRACE_NS)
                w->dead = 1;
        } else if (s->draining && !w->n_reqs) {
            begin_close(w, WSLAY_CODE_GOING_AWAY, "the server is shutting down");
        } else if (every && now - w->ping_ns >= every) {
            w->ping_ns = now;
            if (w->ping_out && ++w->missed >= 2) {
                st_warn("http", "ws %s:%d: no pong to two pings; closing", w->ri.client_ip,
                        w->ri.client_port);
                begin_close(w, WSLAY_CODE_POLICY_VIOLATION, "no pong to two pings");
                w->dead = 1;         /* it does not answer: no close handshake */
            } else {
                struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"strata", 6};
                wslay_event_queue_msg(w->ctx, &m);
                w->ping_out = 1;
            }
        }
        kick(w);
    }
}

void st_http_ws_free_all(st_http_server_t *s)
{
    while (s->ws_head) {
        ws_conn_t *w = s->ws_head;
        w->dead = 1;
        begin_close(w, 0, NULL);
        /* The engine has ended every request by now (the server waits for
         * n_active to reach 0), so no sink still points at w. */
        if (w->n_reqs)
            st_error("http", "ws: %u requests left at shutdown", w->n_reqs);
        while (w->reqs) {
            ws_req_t *r = w->reqs;
            w->reqs = r->next;
            free(r);
        }
        w->n_reqs = 0;
        teardown(w);
    }
}
