/*
 * engine.c - request admission and the continuous-batching scheduler
 * (see st_engine.h).
 *
 * Threads: callers submit and cancel under `lock`; one scheduler thread owns
 * the sequences, builds micro-batches, drives the pipeline and calls the
 * request callbacks. Sequence state is touched only by the scheduler.
 */
#include "st_engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_crypt.h"
#include "st_log.h"
#include "st_model.h"
#include "st_util.h"
#include "prefix.h"
#include "text_stream.h"

typedef struct req {
    uint64_t     id;
    st_gen_cb_t  cb;
    void        *user;
    int32_t     *prompt;          /* n_prompt tokens, then the generated ones (replay) */
    uint32_t     n_prompt;
    uint32_t     max_tokens;
    st_sampler_params_t sampling;
    st_stop_set_t stops;
    int          ignore_eos;
    uint64_t     t_submit, t_admit, t_first;
    atomic_int   cancelled;
    struct req  *next;            /* queue link */
    struct req  *live_next;       /* all unfinished requests (for cancel) */
} req_t;

typedef struct seq {
    req_t        *r;              /* NULL: slot free */
    uint32_t      n_fed;          /* prefill tokens sent to the pipeline */
    uint32_t      n_feed;         /* prefill length: n_prompt, or prompt + generated on replay */
    uint32_t      n_gen;
    uint32_t      replays;        /* times the pipeline lost this sequence and it was replayed */
    int           replay_pending; /* lost with its micro-batch: replay once the pipeline drained */
    uint32_t      pos;            /* next position to fill */
    int32_t       next_tok;
    int           inflight;
    st_text_stream_t ts;
} seq_t;

typedef struct mb_rec {
    uint64_t  id;
    int       used;
    uint32_t  n_seqs;
    uint32_t *seqs;               /* sequences in this micro-batch */
    uint32_t  n_want;
    uint32_t *want_seq;           /* sequence of each wanted row, in order */
    uint32_t  n_pend;
    int32_t  *pend;               /* prefix-cache nodes it saves: ready when it completes */
    uint64_t  pfx_epoch;
} mb_rec_t;

/* A slot's prefix-cache state; kept apart from seq_t, which admission
 * clears, because the queue belongs to the slot's previous sequence. */
typedef struct pslot {
    int32_t   *path;              /* nodes of blocks 0..n_path-1 of its sequence, pinned */
    uint32_t   n_path;
    uint64_t   epoch;             /* st_prefix_epoch the path belongs to */
    st_kvop_t *q;                 /* saves of a finished sequence's rows, waiting */
    uint32_t   n_q;
    int        emitting;          /* the queue is in the micro-batch being built */
    uint64_t   hold_mb;           /* not scheduled until this micro-batch completes */
} pslot_t;

struct st_engine {
    st_engine_params_t  p;
    st_model_t         *model;
    int                 model_borrowed; /* the pipeline's (ops->model): not closed here */
    st_tokenizer_t     *tok;
    st_chat_template_t  chat;
    st_pipeline_t       pipe;
    st_pipeline_info_t  info;
    char                name[128];

    pthread_mutex_t     lock;
    pthread_cond_t      cond;       /* work arrived / state changed */
    pthread_t           thread;
    int                 thread_started;
    int                 stopping;
    int                 closing;    /* draining: refuse new requests */
    req_t              *q_head, *q_tail;
    uint32_t            q_len;
    req_t              *live;
    uint64_t            next_id;
    uint32_t            running;
    st_engine_stats_t   stats;

    /* scheduler-owned */
    seq_t              *seqs;
    mb_rec_t           *recs;
    uint32_t            n_inflight;
    uint64_t            next_mb;
    uint32_t            rr;         /* round-robin start */
    int32_t            *b_tok, *b_pos, *b_slot;
    uint8_t            *b_want;
    /* prefix cache (NULL: the pipeline has none) */
    st_prefix_t        *pfx;
    pslot_t            *ps;
    st_kvop_t          *ops;        /* the micro-batch being built */
    uint32_t            n_ops, path_cap, pipe_epoch;
};

st_engine_params_t st_engine_default_params(void)
{
    st_engine_params_t p;
    memset(&p, 0, sizeof(p));
    p.size = sizeof(p);
    p.n_ctx = 2048;
    p.n_slots = 4;
    p.max_batch = 256;
    p.prefill_chunk = 128;
    p.max_queue = 1000;
    p.backend = "cpu";
    p.kv_type = ST_KV_TYPE_DEFAULT;
    return p;
}

st_gen_request_t st_gen_request_default(void)
{
    st_gen_request_t r;
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.max_tokens = 128;
    r.sampling = st_sampler_default_params();
    return r;
}

/* ---- request preparation (caller's thread) ---- */

static st_status_t render_and_tokenize(st_engine_t *e, const st_gen_request_t *r,
                                       int32_t **ids_out, uint32_t *n_out, st_error_t *err)
{
    const char *text = r->prompt;
    char *rendered = NULL;
    size_t len, cap, n = 0;
    int32_t *ids = NULL;
    unsigned flags;
    st_status_t st = ST_OK;

    if (r->messages && r->n_messages) {
        size_t need = st_chat_render(&e->chat, r->messages, r->n_messages, 1, NULL, 0, &st);
        rendered = malloc(need + 1);
        if (!rendered)
            return st_error_set(err, ST_ERR_NOMEM, "out of memory rendering the chat");
        st_chat_render(&e->chat, r->messages, r->n_messages, 1, rendered, need + 1, &st);
        if (st != ST_OK) {
            free(rendered);
            return st_error_set(err, st, "cannot render the chat template");
        }
        text = rendered;
    } else if (!text) {
        return st_error_set(err, ST_ERR_INVALID, "request has neither prompt nor messages");
    }
    len = strlen(text);
    /* A rendered chat already holds the BOS text where its family wants it. */
    flags = ST_TOK_PARSE_SPECIAL | (rendered ? 0u : (unsigned)ST_TOK_ADD_BOS);
    /* A first guess only: tokens can outnumber bytes. SentencePiece writes
     * the space prefix and every space as "▁" (3 bytes), and byte fallback
     * gives each of those bytes its own token, so "hi" on a vocabulary
     * without "▁" is 5 tokens plus BOS. The encoder reports the full count
     * with ST_ERR_RANGE, and the second pass has exactly that room. */
    cap = len + 2;
    for (int pass = 0; pass < 2; pass++) {
        int32_t *grown = realloc(ids, cap * sizeof(int32_t));
        if (!grown) {
            st = st_error_set(err, ST_ERR_NOMEM, "out of memory tokenizing the prompt");
            goto out;
        }
        ids = grown;
        st = st_tokenizer_encode(e->tok, text, len, flags, ids, cap, &n);
        if (st != ST_ERR_RANGE)
            break;
        cap = n;
    }
    if (st != ST_OK) {
        st_error_set(err, st, "cannot tokenize the prompt: %s", st_status_str(st));
        goto out;
    }
    if (n == 0) {
        st = st_error_set(err, ST_ERR_INVALID, "prompt is empty");
        goto out;
    }
    if (n > UINT32_MAX) {   /* the count below is 32-bit; the context check comes later */
        st = st_error_set(err, ST_ERR_RANGE, "prompt has %zu tokens", n);
        goto out;
    }
    *ids_out = ids;
    *n_out = (uint32_t)n;
    ids = NULL;
out:
    free(ids);
    free(rendered);
    return st;
}

st_status_t st_engine_count_prompt(st_engine_t *e, const st_gen_request_t *r, uint32_t *n,
                                   st_error_t *err)
{
    int32_t *ids = NULL;
    st_status_t st = render_and_tokenize(e, r, &ids, n, err);
    if (st == ST_OK)
        free(ids);
    return st;
}

static void req_free(req_t *r)
{
    if (!r)
        return;
    st_stop_set_free(&r->stops);
    free(r->prompt);
    free(r);
}

st_status_t st_engine_submit(st_engine_t *e, const st_gen_request_t *gr, st_gen_cb_t cb,
                             void *user, uint64_t *id, st_error_t *err)
{
    const char *bad = NULL;
    req_t *r;
    st_status_t st;

    if (!gr || gr->size < sizeof(*gr) || !cb)
        return st_error_set(err, ST_ERR_INVALID, "invalid request");
    if (gr->max_tokens < 1)
        return st_error_set(err, ST_ERR_RANGE, "max_tokens must be at least 1");
    if (st_sampler_check_params(&gr->sampling, &bad) != ST_OK)
        return st_error_set(err, ST_ERR_RANGE, "%s is out of range", bad ? bad : "sampling");
    r = calloc(1, sizeof(*r));
    if (!r)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    st = render_and_tokenize(e, gr, &r->prompt, &r->n_prompt, err);
    if (st != ST_OK)
        goto err_req;
    if ((uint64_t)r->n_prompt + gr->max_tokens > e->p.n_ctx) {
        st = st_error_set(err, ST_ERR_RANGE,
                          "prompt has %u tokens and max_tokens is %u: together beyond the "
                          "context of %u tokens", r->n_prompt, gr->max_tokens, e->p.n_ctx);
        goto err_req;
    }
    {   /* room for the generated tokens too: a replay re-feeds them */
        int32_t *grown = realloc(r->prompt, ((size_t)r->n_prompt + gr->max_tokens) * sizeof(int32_t));
        if (!grown) {
            st = st_error_set(err, ST_ERR_NOMEM, "out of memory");
            goto err_req;
        }
        r->prompt = grown;
    }
    st = st_stop_set_init(&r->stops, gr->stop, ST_GEN_MAX_STOP);
    if (st != ST_OK) {
        st_error_set(err, st, "invalid stop strings");
        goto err_req;
    }
    r->cb = cb;
    r->user = user;
    r->max_tokens = gr->max_tokens;
    r->sampling = gr->sampling;
    r->ignore_eos = gr->ignore_eos;
    r->t_submit = st_now_ns();

    pthread_mutex_lock(&e->lock);
    if (e->closing || e->stopping) {
        pthread_mutex_unlock(&e->lock);
        st = st_error_set(err, ST_ERR_CLOSED, "server is shutting down");
        goto err_req;
    }
    if (e->q_len >= e->p.max_queue) {
        pthread_mutex_unlock(&e->lock);
        st = st_error_set(err, ST_ERR_BUSY, "request queue is full (%u waiting)", e->p.max_queue);
        goto err_req;
    }
    r->id = ++e->next_id;
    if (e->q_tail)
        e->q_tail->next = r;
    else
        e->q_head = r;
    e->q_tail = r;
    e->q_len++;
    r->live_next = e->live;
    e->live = r;
    if (id)
        *id = r->id;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    return ST_OK;

err_req:
    req_free(r);
    return st;
}

void st_engine_cancel(st_engine_t *e, uint64_t id)
{
    pthread_mutex_lock(&e->lock);
    for (req_t *r = e->live; r; r = r->live_next)
        if (r->id == id) {
            atomic_store(&r->cancelled, 1);
            break;
        }
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* ---- scheduler (engine thread) ---- */

static void emit_text(req_t *r, const char *text, size_t len, int32_t tok)
{
    st_gen_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = ST_GEN_TOKEN;
    ev.request_id = r->id;
    ev.text = text;
    ev.len = len;
    ev.token_id = tok;
    r->cb(r->user, &ev);
}

static void live_unlink(st_engine_t *e, req_t *r)
{
    for (req_t **pp = &e->live; *pp; pp = &(*pp)->live_next)
        if (*pp == r) {
            *pp = r->live_next;
            break;
        }
}

/* Ends a request: last text, DONE event, statistics, frees it. */
static void finish_req(st_engine_t *e, req_t *r, st_text_stream_t *ts, uint32_t n_gen,
                       const char *reason, st_status_t status, const char *error)
{
    st_gen_event_t ev;
    uint64_t now = st_now_ns();

    if (ts && status == ST_OK && strcmp(reason, "cancelled") != 0) {
        size_t len;
        const char *rest = st_text_stream_finish(ts, &len);
        if (len)
            emit_text(r, rest, len, -1);
    }
    memset(&ev, 0, sizeof(ev));
    ev.type = ST_GEN_DONE;
    ev.request_id = r->id;
    ev.finish_reason = reason;
    ev.status = status;
    ev.error = error;
    ev.prompt_tokens = r->n_prompt;
    ev.completion_tokens = n_gen;
    ev.queued_ns = r->t_admit ? r->t_admit - r->t_submit : now - r->t_submit;
    ev.ttft_ns = r->t_first ? r->t_first - r->t_submit : 0;
    ev.total_ns = now - r->t_submit;
    r->cb(r->user, &ev);

    pthread_mutex_lock(&e->lock);
    live_unlink(e, r);
    e->stats.requests_done++;
    e->stats.prompt_tokens += r->n_prompt;
    e->stats.completion_tokens += n_gen;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    req_free(r);
}

/* ---- prefix reuse (prefix.h; docs/CLUSTER.md, "Prefix reuse") ---- */

static void pfx_stats_locked(st_engine_t *e)
{
    st_prefix_stats_t ps;
    st_prefix_stats(e->pfx, &ps);
    e->stats.prefix_blocks = ps.n_blocks;
    e->stats.prefix_blocks_used = ps.used;
    e->stats.prefix_evictions = ps.evictions;
    e->stats.prefix_flushes = ps.flushes;
}

static void pfx_flush(st_engine_t *e, const char *why)
{
    if (!e->pfx)
        return;
    st_prefix_flush(e->pfx);
    for (uint32_t i = 0; i < e->p.n_slots; i++) {
        e->ps[i].n_path = 0;
        e->ps[i].n_q = 0;
        e->ps[i].emitting = 0;
    }
    pthread_mutex_lock(&e->lock);
    pfx_stats_locked(e);
    pthread_mutex_unlock(&e->lock);
    st_info("engine", "prefix cache emptied: %s", why);
}

static int pfx_room(const st_engine_t *e, uint32_t n) { return e->n_ops + n <= ST_KVOP_MAX; }

static void pfx_fill(st_engine_t *e, st_kvop_t *op, uint32_t kind, uint32_t slot, uint32_t pos,
                     int32_t node)
{
    op->kind = kind;
    op->slot = slot;
    op->pos = pos;
    op->block = (uint32_t)node;
    op->tag = st_prefix_tag(e->pfx, node);
}

static void pfx_op(st_engine_t *e, uint32_t kind, uint32_t slot, uint32_t pos, int32_t node)
{
    pfx_fill(e, &e->ops[e->n_ops++], kind, slot, pos, node);
}

static pslot_t *pfx_slot(st_engine_t *e, uint32_t i)
{
    pslot_t *ps = &e->ps[i];
    if (ps->epoch != st_prefix_epoch(e->pfx)) {   /* emptied since: nothing is pinned */
        ps->n_path = 0;
        ps->epoch = st_prefix_epoch(e->pfx);
    }
    return ps;
}

/* Extends slot i's chain over its blocks whose rows exist by the end of
 * this micro-batch (positions < upto) with `state` nodes; new ones get a
 * save of `kind` (POST for rows this forward computes, PRE for a finished
 * sequence's, queued on the slot when q). Stops at the first block no
 * node can be found for: a chain has no gaps. */
static void pfx_extend(st_engine_t *e, uint32_t i, const int32_t *tokens, uint32_t upto,
                       int state, mb_rec_t *rec, int q)
{
    pslot_t *ps = pfx_slot(e, i);
    uint32_t B = st_prefix_block(e->pfx);

    while ((ps->n_path + 1) * B <= upto && ps->n_path < e->path_cap) {
        int32_t parent = ps->n_path ? ps->path[ps->n_path - 1] : -1, node;
        int is_new;
        if (q ? ps->n_q >= e->path_cap : !pfx_room(e, 1))
            return;
        node = st_prefix_insert(e->pfx, parent, tokens + (size_t)ps->n_path * B, state, &is_new);
        if (node < 0)
            return;
        if (is_new && q) {
            pfx_fill(e, &ps->q[ps->n_q++], ST_KVOP_SAVE_PRE, i, ps->n_path * B, node);
        } else if (is_new) {
            pfx_op(e, ST_KVOP_SAVE_POST, i, ps->n_path * B, node);
            rec->pend[rec->n_pend++] = node;
        }
        ps->path[ps->n_path++] = node;
    }
}

static void pfx_release(st_engine_t *e, uint32_t i)
{
    pslot_t *ps = pfx_slot(e, i);
    for (uint32_t k = 0; k < ps->n_path; k++)
        st_prefix_unpin(e->pfx, ps->path[k]);
    ps->n_path = 0;
}

/* A sequence ended: a finished one leaves its rows (prompt and completion)
 * to the cache, saved before the slot's next sequence overwrites them. */
static void pfx_seq_end(st_engine_t *e, seq_t *s, int keep)
{
    uint32_t i = (uint32_t)(s - e->seqs);
    if (!e->pfx)
        return;
    if (keep && !s->inflight)
        pfx_extend(e, i, s->r->prompt, s->pos, ST_PFX_QUEUED, NULL, 1);
    pfx_release(e, i);
}

static void seq_finish(st_engine_t *e, seq_t *s, const char *reason, st_status_t status,
                       const char *error)
{
    req_t *r = s->r;
    pfx_seq_end(e, s, status == ST_OK && (!strcmp(reason, "stop") || !strcmp(reason, "length")));
    s->r = NULL;
    finish_req(e, r, &s->ts, s->n_gen, reason, status, error);
    st_text_stream_free(&s->ts);
    pthread_mutex_lock(&e->lock);
    e->running--;
    pthread_mutex_unlock(&e->lock);
}

/* Moves queued requests into free slots; ends queued cancelled ones. */
static void admit(st_engine_t *e)
{
    for (uint32_t i = 0; i < e->p.n_slots; i++) {
        seq_t *s = &e->seqs[i];
        st_error_t err;
        req_t *r;

        if (s->r)
            continue;
        pthread_mutex_lock(&e->lock);
        r = e->q_head;
        if (r) {
            e->q_head = r->next;
            if (!e->q_head)
                e->q_tail = NULL;
            e->q_len--;
            e->running++;
        }
        pthread_mutex_unlock(&e->lock);
        if (!r)
            return;
        r->t_admit = st_now_ns();
        memset(s, 0, sizeof(*s));
        s->r = r;
        s->n_feed = r->n_prompt;
        if (atomic_load(&r->cancelled)) {
            seq_finish(e, s, "cancelled", ST_OK, NULL);
            continue;
        }
        st_error_clear(&err);
        if (st_text_stream_init(&s->ts, e->tok, &r->stops, r->max_tokens) != ST_OK) {
            seq_finish(e, s, "error", ST_ERR_NOMEM, "out of memory");
            continue;
        }
        if (e->pipe.ops->slot_setup(e->pipe.ctx, i, &r->sampling, r->prompt, r->n_prompt,
                                    &err) != ST_OK) {
            seq_finish(e, s, "error", ST_ERR_BACKEND, err.msg);
            continue;
        }
    }
}

static void seq_lost(st_engine_t *e, seq_t *s, st_status_t status, const char *errmsg);

static mb_rec_t *free_rec(st_engine_t *e)
{
    for (uint32_t i = 0; i < e->info.depth; i++)
        if (!e->recs[i].used)
            return &e->recs[i];
    return NULL;
}

/* Every slot's queued saves go first in the micro-batch being built (PRE,
 * ahead of any load of them), room permitting; a slot whose queue is not
 * in it is not scheduled (its rows must be saved before they change). */
static void pfx_emit_queues(st_engine_t *e, mb_rec_t *rec)
{
    e->n_ops = 0;
    rec->n_pend = 0;
    for (uint32_t i = 0; e->pfx && i < e->p.n_slots; i++) {
        pslot_t *ps = &e->ps[i];
        ps->emitting = 0;
        if (!ps->n_q || ps->hold_mb || !pfx_room(e, ps->n_q))
            continue;
        for (uint32_t k = 0; k < ps->n_q; k++) {
            e->ops[e->n_ops++] = ps->q[k];
            st_prefix_set_state(e->pfx, (int32_t)ps->q[k].block, ST_PFX_EMITTING);
            rec->pend[rec->n_pend++] = (int32_t)ps->q[k].block;
        }
        ps->emitting = 1;
    }
}

/* A new sequence's first chunk: load the longest cached prefix, leaving at
 * least its last token to compute (its logits are wanted). */
static void pfx_lookup(st_engine_t *e, uint32_t i, seq_t *s)
{
    pslot_t *ps;
    st_pipeline_info_t info;
    uint32_t B, k, max;

    e->pipe.ops->info(e->pipe.ctx, &info);
    if (info.epoch != e->pipe_epoch) {
        pfx_flush(e, "the pipeline re-planned");
        e->pipe_epoch = info.epoch;
    }
    ps = pfx_slot(e, i);
    pfx_release(e, i);
    B = st_prefix_block(e->pfx);
    max = ST_MIN((s->n_feed - 1) / B, e->path_cap);
    max = ST_MIN(max, ST_KVOP_MAX - e->n_ops);
    k = st_prefix_match(e->pfx, s->r->prompt, max, ps->path);
    for (uint32_t j = 0; j < k; j++)
        pfx_op(e, ST_KVOP_LOAD, i, j * B, ps->path[j]);
    ps->n_path = k;
    s->n_fed = s->pos = k * B;
    pthread_mutex_lock(&e->lock);
    e->stats.prefix_lookup_tokens += s->n_feed;
    e->stats.prefix_hit_tokens += (uint64_t)k * B;
    pfx_stats_locked(e);
    pthread_mutex_unlock(&e->lock);
}

/* After a build: queues that went in are gone, their slots held until
 * this micro-batch completes when their sequence is not in it; loads of
 * EMITTING nodes were only valid within it. `sent` 0: it was not
 * submitted, everything goes back. */
static void pfx_built(st_engine_t *e, mb_rec_t *rec, int sent)
{
    for (uint32_t i = 0; e->pfx && i < e->p.n_slots; i++) {
        pslot_t *ps = &e->ps[i];
        if (!ps->emitting)
            continue;
        ps->emitting = 0;
        for (uint32_t k = 0; k < ps->n_q; k++)
            st_prefix_set_state(e->pfx, (int32_t)ps->q[k].block,
                                sent ? ST_PFX_PENDING : ST_PFX_QUEUED);
        if (!sent)
            continue;
        ps->n_q = 0;
        if (!e->seqs[i].r || !e->seqs[i].inflight)
            ps->hold_mb = rec->id;
    }
    if (e->pfx && sent) {
        /* after the build: a lookup in it may have emptied the cache */
        rec->pfx_epoch = st_prefix_epoch(e->pfx);
        pthread_mutex_lock(&e->lock);
        pfx_stats_locked(e);
        pthread_mutex_unlock(&e->lock);
    }
}

/* Builds and submits one micro-batch from ready sequences. Returns 1 when
 * one was submitted. */
static int submit_one(st_engine_t *e)
{
    uint32_t active = 0, cap_seqs, n = 0, n_seq = 0;
    mb_rec_t *rec = free_rec(e);
    st_microbatch_t mb;
    st_error_t err;
    st_status_t sst;

    if (!rec)
        return 0;
    pfx_emit_queues(e, rec);
    for (uint32_t i = 0; i < e->p.n_slots; i++)
        active += e->seqs[i].r != NULL;
    if (active == 0)
        return 0;
    /* Spread sequences over the pipeline's depth so every stage has work. */
    cap_seqs = (active + e->info.depth - 1) / e->info.depth;
    rec->n_want = 0;
    for (uint32_t k = 0; k < e->p.n_slots && n < e->p.max_batch && n_seq < cap_seqs; k++) {
        uint32_t i = (e->rr + k) % e->p.n_slots;
        seq_t *s = &e->seqs[i];
        req_t *r = s->r;
        uint32_t take;
        if (!r || s->inflight)
            continue;
        if (atomic_load(&r->cancelled)) {
            seq_finish(e, s, "cancelled", ST_OK, NULL);
            continue;
        }
        if (s->replay_pending)
            continue;
        if (e->pfx && (e->ps[i].hold_mb || (e->ps[i].n_q && !e->ps[i].emitting)))
            continue;
        if (e->pfx && s->n_fed == 0 && s->n_feed > 1)
            pfx_lookup(e, i, s);
        if (s->n_fed < s->n_feed) {
            take = ST_MIN(s->n_feed - s->n_fed, e->p.prefill_chunk);
            take = ST_MIN(take, e->p.max_batch - n);
            for (uint32_t t = 0; t < take; t++) {
                e->b_tok[n] = r->prompt[s->n_fed + t];
                e->b_pos[n] = (int32_t)(s->pos + t);
                e->b_slot[n] = (int32_t)i;
                e->b_want[n] = 0;
                n++;
            }
            s->n_fed += take;
            s->pos += take;
            if (e->pfx)
                pfx_extend(e, i, r->prompt, s->n_fed, ST_PFX_PENDING, rec, 0);
            if (s->n_fed == s->n_feed) {
                e->b_want[n - 1] = 1;
                rec->want_seq[rec->n_want++] = i;
            }
        } else {
            e->b_tok[n] = s->next_tok;
            e->b_pos[n] = (int32_t)s->pos;
            e->b_slot[n] = (int32_t)i;
            e->b_want[n] = 1;
            rec->want_seq[rec->n_want++] = i;
            n++;
            s->pos++;
        }
        s->inflight = 1;
        rec->seqs[n_seq++] = i;
    }
    e->rr = (e->rr + 1) % e->p.n_slots;
    if (n == 0) {
        pfx_built(e, rec, 0);
        return 0;
    }
    rec->n_seqs = n_seq;
    rec->id = ++e->next_mb;
    rec->used = 1;
    memset(&mb, 0, sizeof(mb));
    mb.id = rec->id;
    mb.n = n;
    mb.tokens = e->b_tok;
    mb.pos = e->b_pos;
    mb.slot = e->b_slot;
    mb.want = e->b_want;
    mb.n_kvops = e->n_ops;
    mb.kvops = e->ops;
    st_error_clear(&err);
    sst = e->pipe.ops->submit(e->pipe.ctx, &mb, &err);
    pfx_built(e, rec, 1);
    if (sst != ST_OK) {
        st_warn("engine", "pipeline refused a micro-batch: %s", err.msg);
        pfx_flush(e, "a micro-batch was refused");
        rec->used = 0;
        for (uint32_t j = 0; j < n_seq; j++) {
            seq_t *s = &e->seqs[rec->seqs[j]];
            s->inflight = 0;
            seq_lost(e, s, sst == ST_ERR_PEER || sst == ST_ERR_TIMEOUT ? sst : ST_ERR_BACKEND,
                     err.msg[0] ? err.msg : "pipeline error");
        }
        return 0;
    }
    e->n_inflight++;
    return 1;
}

static void on_token(st_engine_t *e, seq_t *s, int32_t tok)
{
    req_t *r = s->r;
    const char *text;
    size_t len;
    int stopped;

    if (s->n_gen == 0)
        r->t_first = st_now_ns();
    if (atomic_load(&r->cancelled)) {
        seq_finish(e, s, "cancelled", ST_OK, NULL);
        return;
    }
    if (!r->ignore_eos && st_tokenizer_is_eog(e->tok, tok)) {
        seq_finish(e, s, "stop", ST_OK, NULL);
        return;
    }
    s->n_gen++;
    stopped = st_text_stream_push(&s->ts, tok, &text, &len);
    if (len || !stopped)
        emit_text(r, text, len, tok);
    if (stopped)
        seq_finish(e, s, "stop", ST_OK, NULL);
    else if (s->n_gen >= r->max_tokens || s->pos >= e->p.n_ctx)
        seq_finish(e, s, "length", ST_OK, NULL);
    else {
        s->next_tok = tok;
        r->prompt[r->n_prompt + s->n_gen - 1] = tok;   /* n_gen <= max_tokens: room */
    }
}

/* A micro-batch failed. A sequence whose KV cache the pipeline lost, to a
 * dead stage (ST_ERR_PEER) or to a re-plan that would not wait longer for
 * it (ST_ERR_TIMEOUT), is replayed (at most ENGINE_MAX_REPLAYS times);
 * other failures end it with the pipeline's error. */
#define ENGINE_MAX_REPLAYS 2

static void seq_lost(st_engine_t *e, seq_t *s, st_status_t status, const char *errmsg)
{
    if ((status == ST_ERR_PEER || status == ST_ERR_TIMEOUT) && s->replays < ENGINE_MAX_REPLAYS &&
        !atomic_load(&s->r->cancelled)) {
        s->replay_pending = 1;
        return;
    }
    seq_finish(e, s, "error", status != ST_OK ? status : ST_ERR_INTERNAL,
               errmsg && *errmsg ? errmsg : "pipeline step failed");
}

/* Once nothing is in flight (every micro-batch of the lost epoch came
 * back), each lost sequence starts again: slot_setup waits (bounded) for
 * the pipeline to serve again, then its prompt and the tokens it already
 * produced are prefilled anew and decoding goes on from the next token.
 * The text already sent is not sent again. A sampled sequence's sampler is
 * seeded where its stream stood after those tokens (one draw each), and its
 * repetition window is the tail of prompt + produced tokens, as it was: the
 * continuation is the one an unperturbed run gives. */
static void replay_lost(st_engine_t *e)
{
    if (e->n_inflight)
        return;
    for (uint32_t i = 0; i < e->p.n_slots; i++) {
        seq_t *s = &e->seqs[i];
        req_t *r = s->r;
        st_sampler_params_t sp;
        st_error_t err;

        if (!r || !s->replay_pending)
            continue;
        s->replay_pending = 0;
        if (atomic_load(&r->cancelled)) {   /* its client left meanwhile */
            seq_finish(e, s, "cancelled", ST_OK, NULL);
            continue;
        }
        s->replays++;
        s->n_feed = r->n_prompt + s->n_gen;
        s->n_fed = 0;
        s->pos = 0;
        sp = r->sampling;
        if (sp.temperature != 0.0f)
            sp.seed = st_sampler_seed_after(r->sampling.seed, s->n_gen);
        st_error_clear(&err);
        if (e->pipe.ops->slot_setup(e->pipe.ctx, i, &sp, r->prompt, s->n_feed, &err) != ST_OK) {
            seq_finish(e, s, "error", ST_ERR_PEER, err.msg);
            continue;
        }
        st_info("engine", "request %llu: its KV cache was lost (a stage failed or the cluster "
                "re-planned); replaying its %u prompt and %u generated tokens",
                (unsigned long long)r->id, r->n_prompt, s->n_gen);
        pthread_mutex_lock(&e->lock);
        e->stats.replays++;
        pthread_mutex_unlock(&e->lock);
    }
}

static void complete(st_engine_t *e, const st_pipeline_result_t *res, const char *errmsg)
{
    mb_rec_t *rec = NULL;
    for (uint32_t i = 0; i < e->info.depth; i++)
        if (e->recs[i].used && e->recs[i].id == res->id)
            rec = &e->recs[i];
    if (!rec) {
        st_error("engine", "pipeline returned unknown micro-batch %llu",
                 (unsigned long long)res->id);
        return;
    }
    rec->used = 0;
    e->n_inflight--;
    for (uint32_t j = 0; j < rec->n_seqs; j++)
        e->seqs[rec->seqs[j]].inflight = 0;
    for (uint32_t i = 0; e->pfx && i < e->p.n_slots; i++)
        if (e->ps[i].hold_mb == rec->id)
            e->ps[i].hold_mb = 0;
    if (e->pfx && (res->status != ST_OK || res->n_ids != rec->n_want))
        pfx_flush(e, "a micro-batch failed");
    else if (e->pfx && rec->pfx_epoch == st_prefix_epoch(e->pfx))
        for (uint32_t k = 0; k < rec->n_pend; k++)
            if (st_prefix_state(e->pfx, rec->pend[k]) == ST_PFX_PENDING)
                st_prefix_set_state(e->pfx, rec->pend[k], ST_PFX_READY);
    if (res->status != ST_OK || res->n_ids != rec->n_want) {
        for (uint32_t j = 0; j < rec->n_seqs; j++) {
            seq_t *s = &e->seqs[rec->seqs[j]];
            if (s->r)
                seq_lost(e, s, res->status, errmsg);
        }
        return;
    }
    for (uint32_t j = 0; j < rec->n_want; j++) {
        seq_t *s = &e->seqs[rec->want_seq[j]];
        if (s->r)
            on_token(e, s, res->ids[j]);
    }
}

static void *scheduler(void *arg)
{
    st_engine_t *e = arg;

    for (;;) {
        st_pipeline_result_t res;
        st_error_t err;
        uint64_t t0;

        pthread_mutex_lock(&e->lock);
        while (!e->stopping && !e->q_head && e->running == 0)
            pthread_cond_wait(&e->cond, &e->lock);
        if (e->stopping) {
            pthread_mutex_unlock(&e->lock);
            break;
        }
        pthread_mutex_unlock(&e->lock);

        admit(e);
        replay_lost(e);
        while (e->n_inflight < e->info.depth && submit_one(e))
            ;
        if (e->n_inflight == 0)
            continue;
        t0 = st_now_ns();
        st_error_clear(&err);
        if (e->pipe.ops->poll(e->pipe.ctx, 100, &res, &err) == ST_OK) {
            complete(e, &res, err.msg);
            pthread_mutex_lock(&e->lock);
            e->stats.steps++;
            e->stats.step_ns_total += st_now_ns() - t0;
            pthread_mutex_unlock(&e->lock);
        }
    }
    /* Shutdown: every request still held ends as cancelled. */
    for (uint32_t i = 0; i < e->p.n_slots; i++)
        if (e->seqs[i].r)
            seq_finish(e, &e->seqs[i], "cancelled", ST_OK, NULL);
    for (;;) {
        req_t *r;
        pthread_mutex_lock(&e->lock);
        r = e->q_head;
        if (r) {
            e->q_head = r->next;
            e->q_len--;
        }
        pthread_mutex_unlock(&e->lock);
        if (!r)
            break;
        finish_req(e, r, NULL, 0, "cancelled", ST_OK, NULL);
    }
    return NULL;
}

static void progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    fprintf(stderr, "\rloading model: %6.1f / %6.1f MB", (double)done / 1e6, (double)total / 1e6);
    if (done == total)
        fputc('\n', stderr);
}

/* The index, sized from what the pipeline's stages hold. */
static st_status_t pfx_create(st_engine_t *e, st_error_t *err)
{
    uint32_t B = e->info.prefix_block;
    if (!e->info.prefix_blocks)
        return ST_OK;
    if (st_prefix_create(e->info.prefix_blocks, B, &e->pfx) != ST_OK)
        return st_error_set(err, ST_ERR_NOMEM, "engine: cannot index a prefix cache of %u "
                            "blocks of %u tokens", e->info.prefix_blocks, B);
    e->path_cap = e->p.n_ctx / B + 1;
    e->pipe_epoch = e->info.epoch;
    e->ps = calloc(e->p.n_slots, sizeof(pslot_t));
    e->ops = calloc(ST_KVOP_MAX, sizeof(st_kvop_t));
    if (!e->ps || !e->ops)
        goto nomem;
    for (uint32_t i = 0; i < e->p.n_slots; i++)
        if (!(e->ps[i].path = calloc(e->path_cap, sizeof(int32_t))) ||
            !(e->ps[i].q = calloc(e->path_cap, sizeof(st_kvop_t))))
            goto nomem;
    for (uint32_t i = 0; i < e->info.depth; i++)
        if (!(e->recs[i].pend = calloc(ST_KVOP_MAX, sizeof(int32_t))))
            goto nomem;
    e->stats.prefix_block = B;
    pfx_stats_locked(e);
    return ST_OK;
nomem:
    return st_error_set(err, ST_ERR_NOMEM, "engine: out of memory for the prefix cache");
}

static void pfx_destroy(st_engine_t *e)
{
    for (uint32_t i = 0; e->ps && i < e->p.n_slots; i++) {
        free(e->ps[i].path);
        free(e->ps[i].q);
    }
    for (uint32_t i = 0; e->recs && i < e->info.depth; i++) {
        free(e->recs[i].pend);
        e->recs[i].pend = NULL;
    }
    free(e->ps);
    free(e->ops);
    st_prefix_free(e->pfx);
    e->ps = NULL;
    e->ops = NULL;
    e->pfx = NULL;
}

/* Opens the model, decrypting it with the key file when one is given (the
 * whole model: the local pipeline holds every layer). The key lives on the
 * stack only for the duration of the open. */
static st_status_t open_model(const st_engine_params_t *params, st_model_t **out,
                              st_error_t *err)
{
    uint8_t key[ST_CRYPT_KEY_BYTES];
    st_model_open_params_t mp = {.size = sizeof(mp)};
    st_status_t st;

    if (!params->key_file)
        return st_model_open(params->model_path, NULL, out, err);
    if ((st = st_crypt_key_load(params->key_file, key, err)) != ST_OK)
        return st;
    mp.key = key;
    st = st_model_open(params->model_path, &mp, out, err);
    explicit_bzero(key, sizeof(key));
    return st;
}

st_status_t st_engine_create(const st_engine_params_t *params, st_engine_t **out, st_error_t *err)
{
    st_engine_t *e;
    st_status_t st;
    uint32_t depth;

    if (!params || params->size < sizeof(*params) || !params->model_path) {
        st = st_error_set(err, ST_ERR_INVALID, "engine: missing parameters or model path");
        goto err_pipe;
    }
    if (params->n_slots == 0 || params->max_batch == 0 || params->prefill_chunk == 0 ||
        params->n_ctx == 0) {
        st = st_error_set(err, ST_ERR_RANGE, "engine: n_ctx, n_slots, max_batch and "
                          "prefill_chunk must be positive");
        goto err_pipe;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        st = st_error_set(err, ST_ERR_NOMEM, "engine: out of memory");
        goto err_pipe;
    }
    e->p = *params;
    e->p.max_batch = ST_MAX(e->p.max_batch, e->p.n_slots);
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);

    if (params->pipeline && params->pipeline->ops->model &&
        (e->model = params->pipeline->ops->model(params->pipeline->ctx)) != NULL) {
        e->model_borrowed = 1;   /* the pipeline's copy: not opened twice */
    } else {
        st = open_model(params, &e->model, err);
        if (st != ST_OK)
            goto err_free;
    }
    if (e->p.n_ctx > st_model_hparams(e->model)->n_ctx_train && st_model_hparams(e->model)->n_ctx_train)
        st_warn("engine", "context %u is beyond the %u tokens the model was trained with",
                e->p.n_ctx, st_model_hparams(e->model)->n_ctx_train);
    st = st_tokenizer_create(st_model_gguf(e->model), &e->tok, err);
    if (st != ST_OK)
        goto err_model;
    st_chat_detect(st_model_gguf(e->model), &e->chat);
    if (e->chat.absent)
        st_info("engine", "the model has no chat template (a base model): completions are "
                "raw, chat requests are formatted as ChatML");
    else if (e->chat.fallback)
        st_warn("engine", "chat template not recognised; using ChatML");
    snprintf(e->name, sizeof(e->name), "%s", st_model_name(e->model));

    if (params->pipeline) {
        e->pipe = *params->pipeline;
        params = NULL;   /* owned by e from here: destroyed on the ladder below */
    } else {
        if (params->prefetch_progress)
            st_model_prefetch(e->model, 0, st_model_hparams(e->model)->n_layer, 3, progress_cb, NULL);
        st = st_pipeline_local_create(e->model, e->p.n_ctx, e->p.n_slots, e->p.max_batch,
                                      params->backend, params->n_threads, params->kv_type,
                                      params->prefix_cache_bytes, &e->pipe, err);
        if (st != ST_OK)
            goto err_tok;
    }
    e->pipe.ops->info(e->pipe.ctx, &e->info);
    depth = ST_MAX(e->info.depth, 1u);
    e->info.depth = depth;
    if (e->info.max_batch && e->p.max_batch > e->info.max_batch)
        e->p.max_batch = e->info.max_batch;

    e->seqs = calloc(e->p.n_slots, sizeof(seq_t));
    e->recs = calloc(depth, sizeof(mb_rec_t));
    e->b_tok = calloc(e->p.max_batch, sizeof(int32_t));
    e->b_pos = calloc(e->p.max_batch, sizeof(int32_t));
    e->b_slot = calloc(e->p.max_batch, sizeof(int32_t));
    e->b_want = calloc(e->p.max_batch, 1);
    if (!e->seqs || !e->recs || !e->b_tok || !e->b_pos || !e->b_slot || !e->b_want) {
        st = st_error_set(err, ST_ERR_NOMEM, "engine: out of memory");
        goto err_bufs;
    }
    for (uint32_t i = 0; i < depth; i++) {
        e->recs[i].seqs = calloc(e->p.n_slots, sizeof(uint32_t));
        e->recs[i].want_seq = calloc(e->p.n_slots, sizeof(uint32_t));
        if (!e->recs[i].seqs || !e->recs[i].want_seq) {
            st = st_error_set(err, ST_ERR_NOMEM, "engine: out of memory");
            goto err_bufs;
        }
    }
    if ((st = pfx_create(e, err)) != ST_OK)
        goto err_bufs;
    e->stats.n_slots = e->p.n_slots;
    if (pthread_create(&e->thread, NULL, scheduler, e) != 0) {
        st = st_error_set(err, ST_ERR_NOMEM, "engine: cannot start the scheduler thread");
        goto err_bufs;
    }
    e->thread_started = 1;
    *out = e;
    return ST_OK;

err_bufs:
    pfx_destroy(e);
    for (uint32_t i = 0; e->recs && i < depth; i++) {
        free(e->recs[i].seqs);
        free(e->recs[i].want_seq);
    }
    free(e->recs); free(e->seqs);
    free(e->b_tok); free(e->b_pos); free(e->b_slot); free(e->b_want);
    e->pipe.ops->destroy(e->pipe.ctx);
err_tok:
    st_tokenizer_free(e->tok);
err_model:
    if (!e->model_borrowed)
        st_model_close(e->model);
err_free:
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->lock);
    free(e);
err_pipe:
    /* A pipeline handed in is owned by the engine even when creation fails
     * before it was taken over, so callers never destroy it themselves. */
    if (params && params->size >= sizeof(*params) && params->pipeline)
        params->pipeline->ops->destroy(params->pipeline->ctx);
    return st;
}

void st_engine_free(st_engine_t *e)
{
    if (!e)
        return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->lock);
        e->stopping = 1;
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);
        pthread_join(e->thread, NULL);
    }
    /* Drain what the pipeline still holds before destroying it. */
    pfx_destroy(e);
    for (uint32_t i = 0; i < e->info.depth; i++) {
        free(e->recs[i].seqs);
        free(e->recs[i].want_seq);
    }
    for (uint32_t i = 0; i < e->p.n_slots; i++)
        st_text_stream_free(&e->seqs[i].ts);
    free(e->recs); free(e->seqs);
    free(e->b_tok); free(e->b_pos); free(e->b_slot); free(e->b_want);
    e->pipe.ops->destroy(e->pipe.ctx);
    st_tokenizer_free(e->tok);
    if (!e->model_borrowed)
        st_model_close(e->model);
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

st_status_t st_engine_drain(st_engine_t *e, int timeout_ms)
{
    uint64_t deadline = st_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    st_status_t st = ST_OK;

    pthread_mutex_lock(&e->lock);
    e->closing = 1;
    while (e->q_len || e->running) {
        struct timespec ts;
        uint64_t now = st_now_ns();
        if (now >= deadline) {
            st = ST_ERR_TIMEOUT;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&e->cond, &e->lock, &ts);
    }
    pthread_mutex_unlock(&e->lock);
    return st;
}

void st_engine_stats(st_engine_t *e, st_engine_stats_t *out)
{
    st_pipeline_info_t info;
    pthread_mutex_lock(&e->lock);
    *out = e->stats;
    out->queued = e->q_len;
    out->running = e->running;
    pthread_mutex_unlock(&e->lock);
    e->pipe.ops->info(e->pipe.ctx, &info);
    out->healthy = info.healthy;
    memcpy(out->detail, info.detail, sizeof(out->detail));
    out->worker_restarts = info.worker_restarts;
    out->workers_restart_pending = info.workers_restart_pending;
}

const st_tokenizer_t *st_engine_tokenizer(const st_engine_t *e) { return e->tok; }
const char *st_engine_model_name(const st_engine_t *e) { return e->name; }
uint32_t st_engine_n_ctx(const st_engine_t *e) { return e->p.n_ctx; }
