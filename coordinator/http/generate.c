/*
 * generate.c - POST /v1/completions, /v1/chat/completions and /generate:
 * a validated request becomes n engine requests (choices); their events
 * come back through the mailbox (server_priv.h) and go out as one JSON
 * answer or as server-sent events in OpenAI's chunk format.
 */
#include "server_priv.h"

#include <event2/bufferevent.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_log.h"
#include "st_util.h"

/* ---- engine thread ---- */

static void on_event(void *user, const st_gen_event_t *ev)
{
    choice_t *c = user;
    st_http_server_t *s = c->h->s;
    uint64_t now = st_now_ns();

    pthread_mutex_lock(&s->mbox_lock);
    if (ev->type == ST_GEN_TOKEN) {
        if (ev->len)
            st_http_buf_put(&c->pend, ev->text, ev->len);
        if (ev->token_id >= 0) {
            if (c->last_tok_ns) {
                double gap = (double)(now - c->last_tok_ns) * 1e-9;
                c->itl_counts[st_http_hist_bucket(&s->metrics.itl, gap)]++;
                c->itl_sum += gap;
            }
            c->last_tok_ns = now;
        }
    } else {
        c->done = 1;
        snprintf(c->finish, sizeof(c->finish), "%s", ev->finish_reason ? ev->finish_reason : "stop");
        c->status = ev->status;
        snprintf(c->error, sizeof(c->error), "%s", ev->error ? ev->error : "");
        c->prompt_tokens = ev->prompt_tokens;
        c->completion_tokens = ev->completion_tokens;
        c->queued_ns = ev->queued_ns;
        c->ttft_ns = ev->ttft_ns;
        c->total_ns = ev->total_ns;
    }
    if (!c->in_mbox) {
        c->in_mbox = 1;
        c->mbox_next = NULL;
        if (s->mbox_tail)
            s->mbox_tail->mbox_next = c;
        else
            s->mbox_head = c;
        s->mbox_tail = c;
    }
    pthread_mutex_unlock(&s->mbox_lock);
    /* s->wake lives until every engine request has ended. */
    event_active(s->wake, EV_READ, 0);
}

/* ---- loop thread ---- */

static void hreq_free(hreq_t *h)
{
    for (uint32_t i = 0; i < ST_HTTP_MAX_N; i++) {
        st_http_buf_free(&h->ch[i].pend);
        st_http_buf_free(&h->ch[i].work);
        st_http_buf_free(&h->ch[i].text);
    }
    free(h);
}

static void mark_gone(hreq_t *h)
{
    if (h->gone)
        return;
    h->gone = 1;
    for (uint32_t i = 0; i < h->n_submitted; i++)
        if (!h->ch[i].finished) {
            st_engine_cancel(h->s->engine, h->ch[i].engine_id);
            h->s->metrics.cancelled++;
        }
}

/* evhttp keeps reading a connection while it streams a reply (to see the
 * client go) under the request timeout, so a prompt whose first token takes
 * longer than --request-timeout to compute lost its stream. While the
 * answer streams, only writing is timed: a client that stops reading is
 * still cut off, a long prefill is not. */
static void stream_timeouts(st_http_server_t *s, struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    struct timeval wr = {.tv_sec = s->cfg->request_timeout_s};
    if (bev)
        bufferevent_set_timeouts(bev, NULL, &wr);
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    hreq_t *h = arg;
    /* A request still queued on the connection is freed by evhttp right
     * after this; one it has already detached (a failed write during a
     * stream) is ours to free. */
    if (h->req && evhttp_request_get_connection(h->req) == NULL)
        h->orphan = h->req;
    h->req = NULL;
    h->evcon = NULL;
    mark_gone(h);
}

void st_http_check_disconnects(st_http_server_t *s)
{
    for (hreq_t *h = s->active; h; h = h->next)
        if (!h->gone && h->evcon && st_http_conn_gone(h->evcon))
            mark_gone(h);
}

void st_http_cancel_all(st_http_server_t *s)
{
    for (hreq_t *h = s->active; h; h = h->next)
        for (uint32_t i = 0; i < h->n_submitted; i++)
            if (!h->ch[i].finished)
                st_engine_cancel(s->engine, h->ch[i].engine_id);
}

static const char *object_of(const hreq_t *h, int chunk)
{
    if (h->api == ST_HTTP_API_CHAT)
        return chunk ? "chat.completion.chunk" : "chat.completion";
    return "text_completion";
}

/* `{"id":..,"object":..,"created":..,"model":..,` */
static void put_head(st_http_buf_t *b, const hreq_t *h, int chunk)
{
    st_http_buf_puts(b, "{\"id\":\"");
    st_http_buf_puts(b, h->id);
    st_http_buf_printf(b, "\",\"object\":\"%s\",\"created\":%lld,\"model\":", object_of(h, chunk),
                       (long long)h->created);
    st_http_buf_json_str(b, h->s->model_name, strlen(h->s->model_name));
    st_http_buf_puts(b, ",");
}

static void put_usage(st_http_buf_t *b, const hreq_t *h)
{
    st_http_buf_printf(b, "\"usage\":{\"prompt_tokens\":%u,\"completion_tokens\":%u,"
                       "\"total_tokens\":%u}", h->ri.prompt_tokens, h->ri.completion_tokens,
                       h->ri.prompt_tokens + h->ri.completion_tokens);
}

static void send_chunk(hreq_t *h, const char *p, size_t n)
{
    st_http_server_t *s = h->s;
    if (!h->req || h->gone)
        return;
    evbuffer_add(s->chunk, p, n);
    evhttp_send_reply_chunk(h->req, s->chunk);
    h->resp_bytes += n;
}

/* One SSE event for choice c: text (may be NULL), finish (NULL: none). */
static void stream_event(hreq_t *h, choice_t *c, const char *text, size_t len, const char *finish)
{
    st_http_buf_t *b = &h->s->scratch;
    b->len = 0;
    b->oom = 0;
    if (h->api == ST_HTTP_API_CHAT && !c->role_sent) {
        c->role_sent = 1;
        st_http_buf_puts(b, "data: ");
        put_head(b, h, 1);
        st_http_buf_printf(b, "\"choices\":[{\"index\":%u,\"delta\":{\"role\":\"assistant\","
                           "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                           c->index);
    }
    st_http_buf_puts(b, "data: ");
    put_head(b, h, 1);
    st_http_buf_puts(b, "\"choices\":[{");
    if (h->api == ST_HTTP_API_CHAT) {
        st_http_buf_printf(b, "\"index\":%u,\"delta\":{", c->index);
        if (text) {
            st_http_buf_puts(b, "\"content\":");
            st_http_buf_json_str(b, text, len);
        }
        st_http_buf_puts(b, "}");
    } else {
        st_http_buf_puts(b, "\"text\":");
        st_http_buf_json_str(b, text ? text : "", text ? len : 0);
        st_http_buf_printf(b, ",\"index\":%u", c->index);
    }
    st_http_buf_puts(b, ",\"logprobs\":null,\"finish_reason\":");
    if (finish)
        st_http_buf_printf(b, "\"%s\"", finish);
    else
        st_http_buf_puts(b, "null");
    st_http_buf_puts(b, "}]}\n\n");
    if (!b->oom)
        send_chunk(h, b->p, b->len);
}

static int http_status_of(st_status_t st)
{
    switch (st) {
    case ST_ERR_BUSY:
    case ST_ERR_CLOSED:
        return 503;
    case ST_ERR_RANGE:
    case ST_ERR_INVALID:
    case ST_ERR_FORMAT:
    case ST_ERR_TYPE:
        return 400;
    default:
        return 500;
    }
}

static void finish_request(hreq_t *h)
{
    st_http_server_t *s = h->s;
    int ok = 0;
    uint32_t first_err = 0;

    if (h->prev)
        h->prev->next = h->next;
    else
        s->active = h->next;
    if (h->next)
        h->next->prev = h->prev;
    s->n_active--;
    s->metrics.requests_active--;
    if (h->stream && h->replied)
        s->metrics.streams_active--;
    for (uint32_t i = 0; i < h->n_submitted; i++) {
        if (h->ch[i].status == ST_OK)
            ok++;
        else if (!first_err)
            first_err = i + 1;
    }

    if (h->evcon)
        evhttp_connection_set_closecb(h->evcon, NULL, NULL);
    if (h->sink) {
        /* Another door: it answers; the log and the audit are the same. */
        if (!h->failed) {
            int code = h->gone ? 499 : first_err ? http_status_of(h->ch[first_err - 1].status)
                                                 : 200;
            st_http_log_request(s, &h->ri, code, h->resp_bytes);
            h->sink->end(h);
        }
    } else if (h->failed) {
        /* Answered with an error already; only the engine had to finish. */
    } else if (h->gone || !h->req) {
        st_http_log_request(s, &h->ri, 499, h->resp_bytes);
        if (h->req && h->evcon)
            evhttp_connection_free(h->evcon);
        if (h->orphan)
            evhttp_request_free(h->orphan);
    } else if (h->stream) {
        st_http_buf_t *b = &s->scratch;
        b->len = 0;
        b->oom = 0;
        if (first_err) {
            char *e = st_http_json_error(h->ch[first_err - 1].error[0] ? h->ch[first_err - 1].error
                                                                       : "generation failed",
                                         "server_error", NULL, NULL);
            st_http_buf_puts(b, "data: ");
            st_http_buf_puts(b, e ? e : "{}");
            st_http_buf_puts(b, "\n\n");
            free(e);
        }
        if (h->include_usage) {
            st_http_buf_puts(b, "data: ");
            put_head(b, h, 1);
            st_http_buf_puts(b, "\"choices\":[],");
            put_usage(b, h);
            st_http_buf_puts(b, "}\n\n");
        }
        st_http_buf_puts(b, "data: [DONE]\n\n");
        if (!b->oom)
            send_chunk(h, b->p, b->len);
        st_http_log_request(s, &h->ri, 200, h->resp_bytes);
        evhttp_send_reply_end(h->req);
    } else if (!ok) {
        choice_t *c = &h->ch[first_err - 1];
        st_http_reply_error(s, h->req, &h->ri, http_status_of(c->status),
                            c->error[0] ? c->error : "generation failed", NULL, NULL, 0);
    } else {
        st_http_buf_t b = {0};
        if (h->api == ST_HTTP_API_GENERATE) {
            st_http_buf_puts(&b, "{\"response\":");
            st_http_buf_json_str(&b, h->ch[0].text.p ? h->ch[0].text.p : "", h->ch[0].text.len);
            st_http_buf_printf(&b, ",\"finish_reason\":\"%s\",", h->ch[0].finish);
            put_usage(&b, h);
            st_http_buf_puts(&b, "}");
        } else {
            put_head(&b, h, 0);
            st_http_buf_puts(&b, "\"choices\":[");
            for (uint32_t i = 0; i < h->n_submitted; i++) {
                choice_t *c = &h->ch[i];
                const char *t = c->text.p ? c->text.p : "";
                st_http_buf_printf(&b, "%s{\"index\":%u,", i ? "," : "", i);
                if (h->api == ST_HTTP_API_CHAT) {
                    st_http_buf_puts(&b, "\"message\":{\"role\":\"assistant\",\"content\":");
                    st_http_buf_json_str(&b, t, c->text.len);
                    st_http_buf_puts(&b, "},");
                } else {
                    st_http_buf_puts(&b, "\"text\":");
                    st_http_buf_json_str(&b, t, c->text.len);
                    st_http_buf_puts(&b, ",");
                }
                st_http_buf_printf(&b, "\"logprobs\":null,\"finish_reason\":\"%s\"}", c->finish);
            }
            st_http_buf_puts(&b, "],");
            put_usage(&b, h);
            st_http_buf_puts(&b, "}");
        }
        if (b.oom)
            st_http_reply_error(s, h->req, &h->ri, 500, "out of memory", NULL, NULL, 0);
        else
            st_http_reply(s, h->req, &h->ri, 200, NULL, "application/json", b.p, b.len, 0);
        st_http_buf_free(&b);
    }
    hreq_free(h);
}

static void choice_done(hreq_t *h, choice_t *c)
{
    st_http_metrics_t *m = &h->s->metrics;

    c->finished = 1;
    h->n_finished++;
    if (c->index == 0)
        h->ri.prompt_tokens = c->prompt_tokens;
    h->ri.completion_tokens += c->completion_tokens;
    if (c->total_ns > h->ri.engine_ns)
        h->ri.engine_ns = c->total_ns;
    m->prompt_tokens += c->index == 0 ? c->prompt_tokens : 0;
    m->completion_tokens += c->completion_tokens;
    if (c->status == ST_OK && c->ttft_ns) {
        st_http_hist_observe(&m->ttft, (double)c->ttft_ns * 1e-9);
        st_http_hist_observe(&m->e2e, (double)c->total_ns * 1e-9);
        st_http_hist_observe(&m->queue, (double)c->queued_ns * 1e-9);
    }
    st_http_hist_add(&m->itl, c->itl_counts, c->itl_sum);
    if (h->sink) {
        if (!h->gone && !h->failed)
            h->sink->choice_end(h, c);
    } else if (h->stream && h->replied && !h->gone && !h->failed && c->status == ST_OK) {
        const char *fr = c->finish;
        stream_event(h, c, NULL, 0, fr);
    }
}

void st_http_on_wake(evutil_socket_t fd, short what, void *arg)
{
    st_http_server_t *s = arg;
    choice_t *list, *c, *next;

    /* The list is walked through wake_next, copied here under the lock:
     * once in_mbox is 0 the engine thread may queue a choice again at any
     * moment, which rewrites its mbox_next and its predecessor's. Walking
     * mbox_next after the unlock went back to choices already handled
     * (their text sent twice: "The answer is is:" under 50 concurrent
     * greedy requests to serve --workers 2) or skipped the rest of the
     * list. */
    pthread_mutex_lock(&s->mbox_lock);
    list = s->mbox_head;
    s->mbox_head = s->mbox_tail = NULL;
    for (c = list; c; c = c->mbox_next) {
        st_http_buf_t t = c->work;
        c->wake_next = c->mbox_next;
        c->in_mbox = 0;
        c->work = c->pend;
        t.len = 0;
        c->pend = t;
        if (c->done)
            c->taken = 1;            /* the engine is finished with c */
    }
    pthread_mutex_unlock(&s->mbox_lock);

    s->wake_gen++;
    for (c = list; c; c = next) {
        hreq_t *h = c->h;
        next = c->wake_next;
        if (!h->gone && h->evcon && h->peek_gen != s->wake_gen) {
            h->peek_gen = s->wake_gen;
            if (st_http_conn_gone(h->evcon))
                mark_gone(h);
        }
        if (c->work.len && !h->gone && !h->failed) {
            if (h->sink)
                h->sink->text(h, c, c->work.p, c->work.len);
            else if (h->stream)
                stream_event(h, c, c->work.p, c->work.len, NULL);
            else
                st_http_buf_put(&c->text, c->work.p, c->work.len);
        }
        if (c->taken && !c->finished) {
            choice_done(h, c);
            if (h->n_finished == h->n_submitted)
                finish_request(h);   /* frees h: no later choice in list is h's */
        }
    }
}

static void prompt_hash(const st_http_gen_t *g, char out[65])
{
    if (g->req.prompt) {
        st_http_sha256_hex(g->req.prompt, strlen(g->req.prompt), out);
    } else {
        st_http_buf_t b = {0};
        for (size_t i = 0; i < g->req.n_messages; i++) {
            st_http_buf_put(&b, g->req.messages[i].role, strlen(g->req.messages[i].role) + 1);
            st_http_buf_put(&b, g->req.messages[i].content,
                            strlen(g->req.messages[i].content) + 1);
        }
        st_http_sha256_hex(b.p ? b.p : "", b.len, out);
        st_http_buf_free(&b);
    }
}

static uint64_t next_rand(st_http_server_t *s)
{
    uint64_t x = s->rng;              /* xorshift64: seeds, not secrets */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->rng = x;
    return x;
}

static const char *param_of(const char *msg)
{
    static const char *const fields[] = {"max_tokens", "temperature", "top_p", "top_k", "min_p",
                                         "repeat", "stop", "prompt", "messages"};
    for (size_t i = 0; i < ST_ARRAY_SIZE(fields); i++)
        if (strstr(msg, fields[i]))
            return fields[i];
    return NULL;
}

/* The engine half every door shares: the model check, the choices handed
 * to the engine, the request linked into s->active. Returns h, or NULL with
 * *code (an HTTP status) and err set. A request whose later choice was
 * refused stays linked, failed, until the engine is done with the earlier
 * ones (they point at it); *failed_h then names it. */
static hreq_t *gen_start(st_http_server_t *s, const st_http_gen_t *g, st_http_api_t api,
                         const rinfo_t *ri, int *code, const char **param, st_error_t *err,
                         hreq_t **failed_h)
{
    hreq_t *h;
    st_status_t st;

    *failed_h = NULL;
    *param = NULL;
    if (g->model && strcmp(g->model, s->model_name) && strcmp(g->model, s->model_file) &&
        strcmp(g->model, s->model_stem)) {
        *code = 404;
        *param = "model";
        st_error_set(err, ST_ERR_NOT_FOUND, "The model '%.200s' does not exist; this server "
                     "has '%s'", g->model, s->model_name);
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        *code = 500;
        st_error_set(err, ST_ERR_NOMEM, "out of memory");
        return NULL;
    }
    h->s = s;
    h->ri = *ri;
    h->ri.generation = 1;
    prompt_hash(g, h->ri.prompt_sha);
    h->api = api;
    h->stream = g->stream;
    h->include_usage = g->include_usage;
    h->n = g->n;
    h->created = (int64_t)time(NULL);
    snprintf(h->id, sizeof(h->id), "%s-%s%llx", api == ST_HTTP_API_CHAT ? "chatcmpl" : "cmpl",
             s->id_prefix, (unsigned long long)++s->next_id);
    for (uint32_t i = 0; i < h->n; i++) {
        h->ch[i].h = h;
        h->ch[i].index = i;
    }

    for (uint32_t i = 0; i < h->n; i++) {
        st_gen_request_t r = g->req;
        r.sampling.seed = g->has_seed ? g->req.sampling.seed + i : next_rand(s);
        st_error_clear(err);
        st = st_engine_submit(s->engine, &r, on_event, &h->ch[i], &h->ch[i].engine_id, err);
        if (st != ST_OK) {
            *code = http_status_of(st);
            if (*code >= 500 && *code != 503)
                st_error("http", "submit failed: %s", err->msg);
            if (!err->msg[0])
                st_error_set(err, st, "%s", st_status_str(st));
            if (*code == 400)
                *param = param_of(err->msg);
            if (i == 0) {
                hreq_free(h);
                return NULL;
            }
            h->failed = 1;
            h->replied = 1;
            for (uint32_t k = 0; k < i; k++)
                st_engine_cancel(s->engine, h->ch[k].engine_id);
            break;
        }
        h->n_submitted++;
    }

    h->next = s->active;
    if (s->active)
        s->active->prev = h;
    s->active = h;
    s->n_active++;
    s->metrics.requests_active++;
    if (h->failed) {
        *failed_h = h;
        return NULL;
    }
    return h;
}

hreq_t *st_http_gen_submit(st_http_server_t *s, const st_http_gen_t *g, st_http_api_t api,
                           const rinfo_t *ri, const st_http_sink_t *sink, void *arg, int *code,
                           const char **param, st_error_t *err)
{
    hreq_t *failed;
    hreq_t *h = gen_start(s, g, api, ri, code, param, err, &failed);
    if (!h)
        return NULL;
    h->sink = sink;
    h->sink_arg = arg;
    h->stream = 1;
    h->replied = 1;
    s->metrics.streams_active++;
    return h;
}

void st_http_gen_cancel(hreq_t *h)
{
    mark_gone(h);
}

void st_http_handle_generate(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri,
                             st_http_api_t api)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    st_http_parse_limits_t lim = {s->cfg->max_n, s->cfg->default_max_tokens};
    st_http_gen_t g;
    char param[64];
    const char *eparam;
    st_error_t err;
    hreq_t *h, *failed;
    st_status_t st;
    int code = 0;

    st_error_clear(&err);
    st = st_http_gen_parse(&g, api, body, len, &lim, param, &err);
    if (st != ST_OK) {
        st_http_reply_error(s, req, ri, st == ST_ERR_NOMEM ? 500 : 400, err.msg, param, NULL, 0);
        goto out;
    }
    h = gen_start(s, &g, api, ri, &code, &eparam, &err, &failed);
    if (!h) {
        if (code != 404)
            prompt_hash(&g, ri->prompt_sha);
        if (code == 503)
            evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        st_http_reply_error(s, req, failed ? &failed->ri : ri, code, err.msg, eparam,
                            code == 404 ? "model_not_found"
                            : code == 503 ? "server_overloaded" : NULL, 0);
        goto out;
    }
    h->req = req;
    h->evcon = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(h->evcon, on_conn_close, h);
    if (h->stream) {
        struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
        st_http_common_headers(s, req);
        evhttp_add_header(oh, "Content-Type", "text/event-stream");
        evhttp_add_header(oh, "Cache-Control", "no-cache");
        evhttp_add_header(oh, "X-Accel-Buffering", "no");
        if (s->draining)
            evhttp_add_header(oh, "Connection", "close");
        evhttp_send_reply_start(req, 200, "OK");
        stream_timeouts(s, h->evcon);
        h->replied = 1;
        s->metrics.streams_active++;
    }
out:
    st_http_gen_free(&g);
}
