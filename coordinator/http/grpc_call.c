/*
 * grpc_call.c - one call of the gRPC door, on the loop thread: the peer
 * and the key from metadata, the shared access decision, the protobuf
 * request turned into the HTTP API's JSON body (so st_http_gen_parse
 * validates it exactly as for HTTP), the generation through
 * st_http_gen_submit, and the answer: one message for Generate, a message
 * per batch of new text for GenerateStream (text that arrives while a send
 * is in flight is merged into the next message, so a slow reader costs one
 * buffer, not a queue), then the status.
 *
 * A call is freed when no tag of it is in flight and its generation has
 * ended (the engine's choices point at the hreq, the hreq's sink at us).
 */
#include "grpc_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>

#include "strata/v1/generate.pb-c.h"
#include "st_log.h"
#include "st_util.h"

static const char *const method_path[] = {"/strata.v1.Generator/Generate",
                                          "/strata.v1.Generator/GenerateStream"};

#define ALL_GEN_ROLES (ST_HTTP_ROLE_ADMIN | ST_HTTP_ROLE_DEVELOPER | ST_HTTP_ROLE_USER)
#define KEY_MAX 512

void st_grpc_call_free(gcall_t *c)
{
    grpc_metadata_array_destroy(&c->md);
    if (c->method == GRPC_M_OTHER)
        grpc_call_details_destroy(&c->details);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->out)
        grpc_byte_buffer_destroy(c->out);
    if (c->has_details)
        grpc_slice_unref(c->details_slice);
    if (c->call)
        grpc_call_unref(c->call);
    st_http_buf_free(&c->text);
    free(c);
}

st_status_t st_grpc_post_slot(st_http_grpc_t *g, int method)
{
    gcall_t *c = calloc(1, sizeof(*c));
    grpc_call_error e;

    if (!c)
        return ST_ERR_NOMEM;
    c->g = g;
    c->method = method;
    c->t_new.kind = GT_NEW;
    c->t_send.kind = GT_SEND;
    c->t_close.kind = GT_CLOSE;
    c->t_new.c = c->t_send.c = c->t_close.c = c;
    grpc_metadata_array_init(&c->md);
    if (method == GRPC_M_OTHER) {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(g->server, &c->call, &c->details, &c->md, g->cq, g->cq,
                                     &c->t_new);
    } else {
        e = grpc_server_request_registered_call(g->server, g->rm[method], &c->call, &c->deadline,
                                                &c->md, &c->payload, g->cq, g->cq, &c->t_new);
    }
    if (e != GRPC_CALL_OK) {
        st_grpc_call_free(c);
        return ST_ERR_CLOSED;
    }
    c->pending = 1;
    g->n_slots++;
    return ST_OK;
}

static void free_if_done(gcall_t *c)
{
    st_http_grpc_t *g = c->g;
    if (c->pending || c->h)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        g->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    g->n_calls--;
    st_grpc_call_free(c);
}

/* ---- sending ---- */

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice sl = grpc_slice_malloc(n);      /* core aborts itself on OOM */
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

static void usage_of(const gcall_t *c, Strata__V1__Usage *u)
{
    strata__v1__usage__init(u);
    u->has_prompt_tokens = u->has_completion_tokens = u->has_total_tokens = 1;
    u->prompt_tokens = c->prompt_tokens;
    u->completion_tokens = c->completion_tokens;
    u->total_tokens = c->prompt_tokens + c->completion_tokens;
}

/* The message of the next batch, or NULL: none is due. */
static grpc_byte_buffer *next_message(gcall_t *c)
{
    char *text = c->text.len ? c->text.p : (char *)"";
    Strata__V1__Usage u;
    grpc_byte_buffer *bb;

    if (c->method == GRPC_M_STREAM) {
        Strata__V1__GenerateChunk m;
        int last = c->ended && c->code == GRPC_STATUS_OK && !c->final_sent;
        if (!c->text.len && !last)
            return NULL;
        strata__v1__generate_chunk__init(&m);
        m.text = text;
        if (last) {
            usage_of(c, &u);
            m.finish_reason = c->finish;
            m.usage = &u;
            c->final_sent = 1;
        }
        bb = pack(&m.base);
        c->text.len = 0;
        return bb;
    }
    if (c->ended && c->code == GRPC_STATUS_OK && !c->final_sent) {
        Strata__V1__GenerateResponse m;
        strata__v1__generate_response__init(&m);
        usage_of(c, &u);
        m.text = text;
        m.finish_reason = c->finish;
        m.usage = &u;
        m.id = c->id;
        m.model = c->g->s->model_name;
        c->final_sent = 1;
        return pack(&m.base);
    }
    return NULL;
}

/* Starts the next send batch when none is in flight: the initial metadata
 * (once), the message due, and the status once the answer is decided. */
static void pump_send(gcall_t *c)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_byte_buffer *out;
    grpc_call_error e;

    if (c->sending || c->status_sent || !c->call)
        return;
    if (c->closed && c->cancelled) {
        c->status_sent = 1;          /* the client is gone: nobody to tell */
        return;
    }
    memset(ops, 0, sizeof(ops));
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    out = next_message(c);
    if (out) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = out;
    }
    if (c->ended) {
        c->details_slice = grpc_slice_from_copied_string(c->msg);
        c->has_details = 1;
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = c->code;
        ops[n++].data.send_status_from_server.status_details = &c->details_slice;
        c->status_sent = 1;
    }
    if (!n)
        return;
    e = grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL);
    if (e != GRPC_CALL_OK) {
        st_warn("http", "gRPC: cannot send on a call (%d)", (int)e);
        if (out)
            grpc_byte_buffer_destroy(out);
        c->status_sent = 1;
        return;
    }
    c->out = out;
    c->sending = 1;
    c->pending++;
}

/* Decides the answer (an error, or OK with what was generated) and logs a
 * call that never reached the engine (the shared path logs the others). */
static void answer(gcall_t *c, grpc_status_code code, const char *msg, int http_code)
{
    c->ended = 1;
    c->code = code;
    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    if (http_code)
        st_http_log_request(c->g->s, &c->ri, http_code, 0);
    pump_send(c);
}

/* ---- the generation's events (st_http_sink_t) ---- */

static void sink_text(hreq_t *h, choice_t *ch, const char *text, size_t len)
{
    gcall_t *c = h->sink_arg;
    st_http_buf_put(&c->text, text, len);
    if (c->method == GRPC_M_STREAM)
        pump_send(c);
}

static grpc_status_code code_of_engine(st_status_t st)
{
    switch (st) {
    case ST_OK:
        return GRPC_STATUS_OK;
    case ST_ERR_BUSY:
    case ST_ERR_CLOSED:
    case ST_ERR_CANCELED:            /* the drain's deadline: retry elsewhere */
        return GRPC_STATUS_UNAVAILABLE;
    case ST_ERR_RANGE:
    case ST_ERR_INVALID:
    case ST_ERR_FORMAT:
    case ST_ERR_TYPE:
        return GRPC_STATUS_INVALID_ARGUMENT;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

static void sink_choice_end(hreq_t *h, choice_t *ch)
{
    gcall_t *c = h->sink_arg;
    c->code = code_of_engine(ch->status);
    snprintf(c->finish, sizeof(c->finish), "%s", ch->finish);
    snprintf(c->msg, sizeof(c->msg), "%s", ch->status == ST_OK ? ""
             : ch->error[0] ? ch->error : "generation failed");
}

static void sink_end(hreq_t *h)
{
    gcall_t *c = h->sink_arg;

    c->h = NULL;
    c->prompt_tokens = h->ri.prompt_tokens;
    c->completion_tokens = h->ri.completion_tokens;
    if (h->gone) {
        c->status_sent = 1;          /* cancelled by the client: it is not listening */
    } else {
        c->ended = 1;                /* code and msg from sink_choice_end */
        pump_send(c);
    }
    free_if_done(c);
}

static const st_http_sink_t grpc_sink = {sink_text, sink_choice_end, sink_end};

/* ---- the request ---- */

/* The value of metadata `key` (lowercase, as HTTP/2 sends it) into out:
 * 1 found, 0 absent, -1 too long or holding a NUL. */
static int md_value(const grpc_metadata_array *md, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < md->count; i++) {
        const grpc_slice *k = &md->metadata[i].key, *v = &md->metadata[i].value;
        size_t vl = GRPC_SLICE_LENGTH(*v);
        if (GRPC_SLICE_LENGTH(*k) != kl || memcmp(GRPC_SLICE_START_PTR(*k), key, kl))
            continue;
        if (vl >= cap || memchr(GRPC_SLICE_START_PTR(*v), 0, vl))
            return -1;
        memcpy(out, GRPC_SLICE_START_PTR(*v), vl);
        out[vl] = '\0';
        return 1;
    }
    return 0;
}

/* As the HTTP door: "authorization: Bearer <key>", else "x-api-key". A
 * malformed value is a wrong key (""), never a crash or a truncated match. */
static const char *presented_key(const grpc_metadata_array *md, char *buf, size_t cap)
{
    int r = md_value(md, "authorization", buf, cap);
    if (r < 0)
        return "";
    if (r > 0) {
        char *a = buf;
        if (strncasecmp(a, "Bearer ", 7) != 0)
            return NULL;
        for (a += 7; *a == ' '; a++)
            ;
        return a;
    }
    r = md_value(md, "x-api-key", buf, cap);
    return r < 0 ? "" : r > 0 ? buf : NULL;
}

/* "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000" -> client_ip, client_port. */
static void peer_of(grpc_call *call, rinfo_t *ri)
{
    char *p = grpc_call_get_peer(call);
    const char *a = p ? strchr(p, ':') : NULL, *end = NULL, *port = NULL;

    if (a) {
        a++;
        if (*a == '[') {
            a++;
            end = strchr(a, ']');
            port = end && end[1] == ':' ? end + 2 : NULL;
        } else {
            end = strrchr(a, ':');
            port = end ? end + 1 : NULL;
        }
    }
    if (end) {
        snprintf(ri->client_ip, sizeof(ri->client_ip), "%.*s", (int)ST_MIN((size_t)(end - a), 63u),
                 a);
        /* A dual-stack listener reports IPv4 peers mapped; key allowlists
         * are written with IPv4 addresses. */
        if (!strncmp(ri->client_ip, "::ffff:", 7) && strchr(ri->client_ip + 7, '.'))
            memmove(ri->client_ip, ri->client_ip + 7, strlen(ri->client_ip + 7) + 1);
        ri->client_port = port ? atoi(port) : 0;
    }
    gpr_free(p);
}

static int put(json_t *o, const char *k, json_t *v)
{
    return v ? json_object_set_new(o, k, v) : -1;
}

/* The protobuf request as the HTTP API's JSON body. NULL with msg set when
 * a string is not UTF-8 or the request names both or neither input. */
static char *to_json(const Strata__V1__GenerateRequest *m, const st_http_config_t *cfg,
                     st_http_api_t *api, char *msg, size_t cap)
{
    json_t *o = json_object();
    char *body = NULL;
    const char *bad = NULL;

    if (!o) {
        snprintf(msg, cap, "out of memory");
        return NULL;
    }
    if (m->prompt && m->n_messages) {
        snprintf(msg, cap, "send either 'prompt' or 'messages', not both");
        goto out;
    }
    if (m->n_messages) {
        json_t *arr = json_array();
        *api = ST_HTTP_API_CHAT;
        if (put(o, "messages", arr))
            goto oom;
        /* st_http_gen_parse bounds the count; don't build a huge array first */
        for (size_t i = 0; i < m->n_messages && i <= ST_HTTP_MAX_MSGS; i++) {
            json_t *e = json_object();
            if (json_array_append_new(arr, e))
                goto oom;
            if (m->messages[i]->role && put(e, "role", json_string(m->messages[i]->role)))
                bad = "messages.role";
            if (m->messages[i]->content &&
                put(e, "content", json_string(m->messages[i]->content)))
                bad = "messages.content";
        }
    } else {
        *api = ST_HTTP_API_COMPLETIONS;
        if (!m->prompt) {
            snprintf(msg, cap, "one of 'prompt' and 'messages' is required");
            goto out;
        }
        if (put(o, "prompt", json_string(m->prompt)))
            bad = "prompt";
    }
    if (m->model && put(o, "model", json_string(m->model)))
        bad = "model";
    /* The chat API's default for both inputs: /v1/completions' 16 is
     * OpenAI's legacy and surprises a new API's users. */
    if (put(o, "max_tokens", json_integer(m->has_max_tokens ? m->max_tokens
                                                             : (json_int_t)cfg->default_max_tokens)))
        goto oom;
    if (m->has_temperature && put(o, "temperature", json_real(m->temperature)))
        goto oom;
    if (m->has_top_p && put(o, "top_p", json_real(m->top_p)))
        goto oom;
    if (m->has_top_k && put(o, "top_k", json_integer(m->top_k)))
        goto oom;
    if (m->has_min_p && put(o, "min_p", json_real(m->min_p)))
        goto oom;
    if (m->has_seed) {
        if (m->seed > (uint64_t)INT64_MAX) {
            snprintf(msg, cap, "'seed' must be below 2^63");
            goto out;
        }
        if (put(o, "seed", json_integer((json_int_t)m->seed)))
            goto oom;
    }
    if (m->n_stop) {
        json_t *arr = json_array();
        if (put(o, "stop", arr))
            goto oom;
        for (size_t i = 0; i < m->n_stop && i <= ST_HTTP_MAX_STOPS; i++)
            if (json_array_append_new(arr, json_string(m->stop[i])))
                bad = "stop";
    }
    if (m->has_presence_penalty && put(o, "presence_penalty", json_real(m->presence_penalty)))
        goto oom;
    if (m->has_frequency_penalty &&
        put(o, "frequency_penalty", json_real(m->frequency_penalty)))
        goto oom;
    if (m->has_repetition_penalty &&
        put(o, "repetition_penalty", json_real(m->repetition_penalty)))
        goto oom;
    if (m->has_ignore_eos && put(o, "ignore_eos", json_boolean(m->ignore_eos)))
        goto oom;
    if (bad) {
        /* json_string() refuses invalid UTF-8 (and OOM, which we cannot tell
         * apart here; the request is refused either way). */
        snprintf(msg, cap, "'%s' is not valid UTF-8", bad);
        goto out;
    }
    body = json_dumps(o, JSON_COMPACT);
    if (!body)
        goto oom;
    goto out;
oom:
    snprintf(msg, cap, "out of memory");
out:
    json_decref(o);
    return body;
}

static grpc_status_code code_of_http(int code)
{
    switch (code) {
    case 400: return GRPC_STATUS_INVALID_ARGUMENT;
    case 401: return GRPC_STATUS_UNAUTHENTICATED;
    case 403: return GRPC_STATUS_PERMISSION_DENIED;
    case 404: return GRPC_STATUS_NOT_FOUND;
    case 429: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case 503: return GRPC_STATUS_UNAVAILABLE;
    default:  return GRPC_STATUS_INTERNAL;
    }
}

static void start_generation(gcall_t *c)
{
    st_http_server_t *s = c->g->s;
    st_http_parse_limits_t lim = {1, s->cfg->default_max_tokens};
    Strata__V1__GenerateRequest *m = NULL;
    grpc_byte_buffer_reader r;
    st_http_api_t api = ST_HTTP_API_COMPLETIONS;
    st_http_gen_t gen;
    const char *eparam;
    char param[64], msg[256];
    char *body;
    st_error_t err;
    hreq_t *h;
    int code = 0;

    if (!c->payload || !grpc_byte_buffer_reader_init(&r, c->payload)) {
        answer(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message", 400);
        return;
    }
    {
        grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        m = strata__v1__generate_request__unpack(NULL, GRPC_SLICE_LENGTH(sl),
                                                 GRPC_SLICE_START_PTR(sl));
        grpc_slice_unref(sl);
    }
    if (!m) {
        answer(c, GRPC_STATUS_INVALID_ARGUMENT,
               "the request is not a valid strata.v1.GenerateRequest", 400);
        return;
    }
    msg[0] = '\0';
    body = to_json(m, s->cfg, &api, msg, sizeof(msg));
    strata__v1__generate_request__free_unpacked(m, NULL);
    if (!body) {
        answer(c, strcmp(msg, "out of memory") ? GRPC_STATUS_INVALID_ARGUMENT
                                               : GRPC_STATUS_INTERNAL, msg,
               strcmp(msg, "out of memory") ? 400 : 500);
        return;
    }
    st_error_clear(&err);
    if (st_http_gen_parse(&gen, api, body, strlen(body), &lim, param, &err) != ST_OK) {
        free(body);
        st_http_gen_free(&gen);
        answer(c, GRPC_STATUS_INVALID_ARGUMENT, err.msg, 400);
        return;
    }
    free(body);
    st_error_clear(&err);
    h = st_http_gen_submit(s, &gen, api, &c->ri, &grpc_sink, c, &code, &eparam, &err);
    st_http_gen_free(&gen);
    if (!h) {
        answer(c, code_of_http(code), err.msg[0] ? err.msg : "cannot start the generation",
               code);
        return;
    }
    c->h = h;
    snprintf(c->id, sizeof(c->id), "%s", h->id);
    if (c->method == GRPC_M_STREAM)
        pump_send(c);                /* the headers now: the client sees it is accepted */
}

static void begin(gcall_t *c)
{
    st_http_grpc_t *g = c->g;
    st_http_server_t *s = g->s;
    rinfo_t *ri = &c->ri;
    char keybuf[KEY_MAX];
    st_http_access_t a;
    grpc_op op;

    memset(ri, 0, sizeof(*ri));
    ri->t0 = ri->t_dispatch = st_now_ns();
    ri->ep = ST_HTTP_EP_GRPC;
    ri->method = "POST";             /* gRPC is HTTP/2 POST; the audit's method stays HTTP's */
    ri->role = "";
    ri->tls = g->tls;
    snprintf(ri->request_id, sizeof(ri->request_id), "%s-%llx", s->id_prefix,
             (unsigned long long)++s->next_req);
    if (c->method == GRPC_M_OTHER)
        snprintf(ri->path, sizeof(ri->path), "%.*s",
                 (int)ST_MIN(GRPC_SLICE_LENGTH(c->details.method), sizeof(ri->path) - 1),
                 (const char *)GRPC_SLICE_START_PTR(c->details.method));
    else
        snprintf(ri->path, sizeof(ri->path), "%s", method_path[c->method]);
    peer_of(c->call, ri);

    /* First, for the call's whole life: tells us when the client cancels,
     * its deadline passes or its connection drops. */
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK) {
        c->status_sent = 1;
        return;
    }
    c->pending++;

    if (c->method == GRPC_M_OTHER) {
        answer(c, GRPC_STATUS_UNIMPLEMENTED, "strata serves strata.v1.Generator/Generate and "
               "GenerateStream", 404);
        return;
    }
    if (st_http_access_check(s, presented_key(&c->md, keybuf, sizeof(keybuf)), NULL, ri->path,
                             ALL_GEN_ROLES, 1, ri, &a)) {
        answer(c, code_of_http(a.code), a.msg, a.code);
        return;
    }
    if (s->draining) {
        answer(c, GRPC_STATUS_UNAVAILABLE, "the server is shutting down", 503);
        return;
    }
    if (g->n_calls > GRPC_MAX_CALLS) {
        char msg[96];
        snprintf(msg, sizeof(msg), "too many gRPC calls at once (%u)", GRPC_MAX_CALLS);
        answer(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, 503);
        return;
    }
    start_generation(c);
}

void st_grpc_on_tag(st_http_grpc_t *g, gtag_t *t)
{
    gcall_t *c = t->c;

    c->pending--;
    switch (t->kind) {
    case GT_NEW:
        g->n_slots--;
        if (!t->ok) {                /* shutting down: core gives the slot back */
            st_grpc_call_free(c);
            return;
        }
        if (!g->shutdown_started && st_grpc_post_slot(g, c->method) != ST_OK)
            st_warn("http", "gRPC: cannot request the next call");
        c->next = g->calls;
        if (g->calls)
            g->calls->prev = c;
        g->calls = c;
        g->n_calls++;
        begin(c);
        break;
    case GT_SEND:
        c->sending = 0;
        if (c->out) {
            grpc_byte_buffer_destroy(c->out);
            c->out = NULL;
        }
        if (!t->ok)
            c->status_sent = 1;      /* the call is broken: nothing more goes out */
        pump_send(c);
        break;
    case GT_CLOSE:
        c->closed = 1;
        if (c->cancelled && c->h)
            st_http_gen_cancel(c->h);    /* counted in strata_requests_cancelled_total */
        break;
    default:
        break;
    }
    free_if_done(c);
}
