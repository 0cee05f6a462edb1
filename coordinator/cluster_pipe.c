/*
 * cluster_pipe.c - the cluster as an st_pipeline_t: micro-batches go to
 * stage 0 over the transport, sampled ids come back from the last stage.
 *
 * Up to `depth` micro-batches are in flight, each with its own registered
 * frame buffer (reused, nothing allocated per token). The slot setup of a
 * new sequence rides in the first micro-batch that carries the slot, so it
 * reaches the last stage in order, before its first sample.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster_internal.h"
#include "st_log.h"
#include "st_util.h"

#define MOD "cluster"

static size_t tokens_frame_max(const st_cluster_t *c)
{
    uint64_t setup = (uint64_t)c->p.n_slots * st_ctrl_mb_setup_size(c->p.n_ctx);
    st_ctrl_mb_layout_t l;
    if (setup > UINT32_MAX ||
        st_ctrl_mb_layout(ST_CTRL_MB_TOKENS, c->p.max_batch, 0, (uint32_t)setup, ST_KVOP_MAX, 0, 0,
                          &l) != ST_OK)
        return 0;
    return l.total;
}

static size_t ids_frame_max(const st_cluster_t *c)
{
    st_ctrl_mb_layout_t l;
    if (st_ctrl_mb_layout(ST_CTRL_MB_IDS, 0, 0, 0, 0, c->p.n_slots, ST_CTRL_TEXT_MAX, &l) != ST_OK)
        return 0;
    return l.total;
}

st_status_t cl_data_init(st_cluster_t *c, st_error_t *err)
{
    st_transport_config_t cfg;
    char netdev[64];
    st_status_t st;

    c->frame_max = tokens_frame_max(c);
    if (!c->frame_max)
        return st_error_set(err, ST_ERR_OVERFLOW, "cluster: micro-batch frames too large");
    st_transport_config_init(&cfg);
    cfg.progress = ST_TRANSPORT_PROGRESS_HYBRID;
    cfg.spin_ns = c->p.spin_ns;
    cfg.max_msg_size = ST_MAX((uint64_t)c->frame_max, cfg.max_msg_size);
    cfg.tls = c->p.transport_tls;
    cfg.name = "coordinator";
    st_ctrl_data_key(c->p.secret, c->p.secret_len, cfg.access_key);
    cfg.access_key_len = ST_CTRL_MAC;
    /* No listener (docs/TRANSPORT.md, "Threat model"): the last stage
     * connects from our UCX worker address, sent in its CONNECT over the
     * authenticated control plane. data_listen only picks the interface of
     * UCX's TCP transport. */
    if (c->p.data_listen && !getenv("UCX_NET_DEVICES") &&
        st_transport_netdev_for(c->p.data_listen, netdev, sizeof(netdev)) == ST_OK)
        cfg.net_devices = netdev;
    st = st_transport_create(&cfg, err, &c->t);
    if (st != ST_OK)
        return st;
    st = st_transport_worker_address(c->t, c->data_addr, sizeof(c->data_addr));
    if (st != ST_OK)
        return st_error_set(err, st, "cluster: cannot get the data-plane worker address");
    for (int i = 0; i < ST_CTRL_MAX_STAGES; i++) {
        mbrec_t *r = &c->recs[i];
        st = st_transport_mem_alloc(c->t, c->frame_max, ST_TRANSPORT_MEM_HOST, &r->mem);
        if (st != ST_OK)
            return st_error_set(err, st, "cluster: cannot register a %zu-byte frame buffer",
                                c->frame_max);
        r->ids = calloc(c->p.n_slots, sizeof(int32_t));
        if (!r->ids)
            return st_error_set(err, ST_ERR_NOMEM, "cluster: out of memory");
    }
    c->slots = calloc(c->p.n_slots, sizeof(slotrec_t));
    c->result_scratch = aligned_alloc(64, ST_ALIGN_UP(ids_frame_max(c), 64));
    if (!c->slots || !c->result_scratch)
        return st_error_set(err, ST_ERR_NOMEM, "cluster: out of memory");
    for (uint32_t s = 0; s < c->p.n_slots; s++) {
        c->slots[s].window = calloc(c->p.n_ctx, sizeof(int32_t));
        if (!c->slots[s].window)
            return st_error_set(err, ST_ERR_NOMEM, "cluster: out of memory");
    }
    return ST_OK;
}

void cl_data_reset(st_cluster_t *c)
{
    for (int i = 0; i < ST_CTRL_MAX_STAGES; i++)
        if (c->recs[i].req) {
            st_transport_req_release(c->t, c->recs[i].req);
            c->recs[i].req = NULL;
        }
    if (c->ep_first)
        st_transport_ep_close(c->t, c->ep_first);
    c->ep_first = NULL;
    for (int i = 0; i < CL_MAX_INBOUND; i++)
        if (c->inbound[i]) {
            st_transport_ep_close(c->t, c->inbound[i]);
            c->inbound[i] = NULL;
        }
}

void cl_data_fini(st_cluster_t *c)
{
    if (c->t) {
        /* Endpoints are force-closed by st_transport_destroy: a polite close
         * would wait on workers that are leaving too. */
        for (int i = 0; i < ST_CTRL_MAX_STAGES; i++)
            if (c->recs[i].req) {
                (void)st_transport_req_wait(c->t, c->recs[i].req, ST_TRANSPORT_SEC / 2);
                st_transport_req_release(c->t, c->recs[i].req);
                c->recs[i].req = NULL;
            }
        for (int i = 0; i < ST_CTRL_MAX_STAGES; i++)
            if (c->recs[i].mem)
                st_transport_mem_free(c->t, c->recs[i].mem);
        st_transport_destroy(c->t);
        c->t = NULL;
    }
    for (int i = 0; i < ST_CTRL_MAX_STAGES; i++)
        free(c->recs[i].ids);
    for (uint32_t s = 0; c->slots && s < c->p.n_slots; s++)
        free(c->slots[s].window);
    free(c->slots);
    free(c->result_scratch);
    c->slots = NULL;
    c->result_scratch = NULL;
}

void cl_data_fail_inflight_locked(st_cluster_t *c, st_status_t status, const char *text)
{
    for (int i = 0; i < ST_CTRL_MAX_STAGES; i++) {
        mbrec_t *r = &c->recs[i];
        if (r->state != R_INFLIGHT)
            continue;
        r->state = R_DONE;
        r->status = status;
        r->n_ids = 0;
        r->done_seq = ++c->done_seq;
        snprintf(r->error, sizeof(r->error), "%s", text);
    }
    pthread_cond_broadcast(&c->cond);
}

static void account(st_cluster_t *c, const st_ctrl_mb_hdr_t *h, uint64_t now)
{
    uint32_t n = c->n_stages;
    if (h->n_stamps != n || n == 0)
        return;
    c->st_mbs++;
    c->st_rtt_ns += now - h->t_submit;
    for (uint32_t s = 0; s < n; s++) {
        uint64_t in = h->stamp[s][0], out = h->stamp[s][1];
        uint64_t prev = s == 0 ? h->t_submit : h->stamp[s - 1][1];
        c->st_compute_ns[s] += out - in;
        if (in < prev)
            c->st_hop_bad = 1;     /* clocks of different hosts */
        else
            c->st_hop_ns[s] += in - prev;
    }
    if (now < h->stamp[n - 1][1])
        c->st_hop_bad = 1;
    else
        c->st_hop_ns[n] += now - h->stamp[n - 1][1];
}

static void on_result(st_cluster_t *c, const void *data, size_t len)
{
    st_ctrl_mb_limits_t lim;
    st_ctrl_mb_view_t v;
    st_error_t err;
    st_status_t st;
    uint64_t now = st_now_ns();

    if ((uintptr_t)data % 8) {
        if (len > ids_frame_max(c)) {
            st_warn(MOD, "dropping an oversized result frame (%zu bytes)", len);
            return;
        }
        memcpy(c->result_scratch, data, len);
        data = c->result_scratch;
    }
    memset(&lim, 0, sizeof(lim));
    lim.kind = ST_CTRL_MB_IDS;
    lim.n_vocab = c->n_vocab;
    lim.max_ids = c->p.n_slots;
    pthread_mutex_lock(&c->lock);
    lim.epoch = c->epoch;
    st_error_clear(&err);
    st = st_ctrl_mb_parse(data, len, &lim, &v, &err);
    if (st != ST_OK) {
        if (st != ST_ERR_CANCELED)
            st_error(MOD, "bad result frame from the last stage: %s", err.msg);
        pthread_mutex_unlock(&c->lock);
        return;
    }
    for (int i = 0; i < ST_CTRL_MAX_STAGES; i++) {
        mbrec_t *r = &c->recs[i];
        if (r->state != R_INFLIGHT || r->id != v.hdr->mb_id)
            continue;
        r->status = v.hdr->status;
        r->n_ids = v.hdr->n_ids;
        memcpy(r->ids, v.ids, 4u * v.hdr->n_ids);
        if (v.hdr->status != ST_OK)
            snprintf(r->error, sizeof(r->error), "%s", v.text ? v.text : "stage error");
        else
            account(c, v.hdr, now);
        r->state = R_DONE;
        r->done_seq = ++c->done_seq;
        c->last_activity = now;
        pthread_cond_broadcast(&c->cond);
        break;
    }
    pthread_mutex_unlock(&c->lock);
}

void cl_data_event(st_cluster_t *c, st_transport_event_t *ev)
{
    switch (ev->type) {
    case ST_TRANSPORT_EV_RECV:
        if (ev->tag.type == ST_TRANSPORT_ACTIVATION)
            on_result(c, ev->data, (size_t)ev->len);
        st_transport_msg_release(c->t, ev->msg);
        break;
    case ST_TRANSPORT_EV_EP_READY:
        if (ev->ep == c->ep_first)
            break;
        for (int i = 0; i < CL_MAX_INBOUND; i++)
            if (!c->inbound[i]) {
                c->inbound[i] = ev->ep;
                return;
            }
        st_transport_ep_close(c->t, ev->ep);
        break;
    case ST_TRANSPORT_EV_EP_ERROR: {
        int ours = ev->ep == c->ep_first;
        if (ours)
            c->ep_first = NULL;
        for (int i = 0; i < CL_MAX_INBOUND; i++)
            if (c->inbound[i] == ev->ep) {
                c->inbound[i] = NULL;
                ours = 1;
            }
        if (!ours)
            break;
        st_transport_ep_close(c->t, ev->ep);
        pthread_mutex_lock(&c->lock);
        if (c->state == C_RUNNING) {
            cl_fail_locked(c, ST_ERR_PEER, "the data plane lost a stage: %s (transport "
                           "endpoint error)", st_status_str(ev->status));
            c->state = C_RECOVERING;
            c->recover_deadline = st_now_ns() + (uint64_t)c->p.recover_wait_ms * 1000000ull;
            snprintf(c->detail, sizeof(c->detail), "recovering: %.200s", c->fail_msg);
        }
        pthread_mutex_unlock(&c->lock);
        break;
    }
    }
}

/* ---- pipeline ops ------------------------------------------------------ */

/* Waits (lock held) while a plan is being (re)built, and with hold_new (a
 * new sequence) while a join re-plan drains; ST_OK when running. */
static st_status_t wait_usable_locked(st_cluster_t *c, int hold_new, st_error_t *err)
{
    uint64_t deadline = st_now_ns() + ((uint64_t)c->p.recover_wait_ms + c->p.load_timeout_ms +
                                       c->p.replan_wait_ms) * 1000000ull;
    while ((c->state == C_RECOVERING || c->state == C_PLANNING || c->state == C_WAITING ||
            (hold_new && c->draining)) && st_now_ns() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cond, &c->lock, &ts);
    }
    if (c->state == C_RUNNING)
        return ST_OK;
    return st_error_set(err, ST_ERR_PEER, "cluster is not serving (%s)%s%s", c->detail,
                        c->fail_msg[0] ? ": " : "", c->fail_msg);
}

static st_status_t cl_slot_setup(void *ctx, uint32_t slot, const st_sampler_params_t *p,
                                 const int32_t *prompt, uint32_t n_prompt, st_error_t *err)
{
    st_cluster_t *c = ctx;
    slotrec_t *s;
    uint32_t n;
    st_status_t st;

    if (slot >= c->p.n_slots)
        return st_error_set(err, ST_ERR_RANGE, "cluster: slot %u of %u", slot, c->p.n_slots);
    /* The last stage only needs the window its repetition penalty looks at. */
    if (p->repeat_penalty == 1.0f)
        n = 0;
    else if (p->repeat_last_n > 0)
        n = ST_MIN(n_prompt, (uint32_t)p->repeat_last_n);
    else
        n = n_prompt;
    n = ST_MIN(n, c->p.n_ctx);
    pthread_mutex_lock(&c->lock);
    st = wait_usable_locked(c, 1, err);
    if (st == ST_OK) {
        s = &c->slots[slot];
        s->pending = 1;
        s->epoch = c->epoch;
        s->sp = *p;
        s->n_window = n;
        if (n)
            memcpy(s->window, prompt + (n_prompt - n), 4u * n);
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

static st_status_t cl_submit(void *ctx, const st_microbatch_t *mb, st_error_t *err)
{
    st_cluster_t *c = ctx;
    mbrec_t *r = NULL;
    st_ctrl_mb_layout_t l;
    st_ctrl_mb_hdr_t *h;
    uint8_t *b;
    uint32_t setup_bytes = 0, n_setup = 0, n_want = 0;
    st_transport_tag_t tag;
    st_status_t st;

    if (mb->n == 0 || mb->n > c->p.max_batch || mb->n_kvops > ST_KVOP_MAX)
        return st_error_set(err, ST_ERR_RANGE, "cluster: micro-batch of %u tokens (max %u), "
                            "%u prefix-cache ops (max %u)", mb->n, c->p.max_batch, mb->n_kvops,
                            ST_KVOP_MAX);
    pthread_mutex_lock(&c->lock);
    st = wait_usable_locked(c, 0, err);
    if (st != ST_OK)
        goto unlock;
    c->last_activity = st_now_ns();
    for (uint32_t i = 0; i < mb->n; i++) {
        uint32_t s = (uint32_t)mb->slot[i];
        if (mb->slot[i] < 0 || s >= c->p.n_slots) {
            st = st_error_set(err, ST_ERR_RANGE, "cluster: slot %d of %u", mb->slot[i],
                              c->p.n_slots);
            goto unlock;
        }
        if (c->slots[s].epoch != c->epoch) {
            st = st_error_set(err, ST_ERR_PEER, "the sequence in slot %u lost its KV cache "
                              "when the cluster was re-planned (%s)", s,
                              c->fail_msg[0] ? c->fail_msg
                              : c->replan_why[0] ? c->replan_why : "worker lost");
            goto unlock;
        }
        n_want += mb->want[i] != 0;
    }
    /* A returned record is free too: its ids stay untouched until a later
     * poll writes the result of the micro-batch submitted now. */
    for (uint32_t i = 0; i < c->depth && i < ST_CTRL_MAX_STAGES; i++)
        if (c->recs[i].state == R_FREE || c->recs[i].state == R_RETURNED) {
            r = &c->recs[i];
            break;
        }
    if (!r) {
        st = st_error_set(err, ST_ERR_BUSY, "cluster: %u micro-batches already in flight",
                          c->depth);
        goto unlock;
    }
    /* Slot setups of sequences that start in this micro-batch. */
    for (uint32_t i = 0; i < mb->n; i++) {
        slotrec_t *s = &c->slots[mb->slot[i]];
        if (s->pending == 1) {
            s->pending = 2;   /* counted once */
            setup_bytes += st_ctrl_mb_setup_size(s->n_window);
            n_setup++;
        }
    }
    st = st_ctrl_mb_layout(ST_CTRL_MB_TOKENS, mb->n, 0, setup_bytes, mb->n_kvops, 0, 0, &l);
    if (st != ST_OK || l.total > c->frame_max) {
        st = st_error_set(err, ST_ERR_RANGE, "cluster: micro-batch frame too large");
        goto unlock;
    }
    b = st_transport_mem_ptr(r->mem);
    h = (st_ctrl_mb_hdr_t *)(void *)b;
    memset(h, 0, sizeof(*h));
    h->magic = ST_CTRL_MB_MAGIC;
    h->version = ST_CTRL_VERSION;
    h->kind = ST_CTRL_MB_TOKENS;
    h->epoch = c->epoch;
    h->n = mb->n;
    h->n_setup = n_setup;
    h->setup_bytes = setup_bytes;
    h->n_kvops = mb->n_kvops;
    h->mb_id = mb->id;
    h->t_submit = st_now_ns();
    memcpy(b + l.pos, mb->pos, 4u * mb->n);
    memcpy(b + l.slot, mb->slot, 4u * mb->n);
    memcpy(b + l.tokens, mb->tokens, 4u * mb->n);
    if (mb->n_kvops)
        memcpy(b + l.kvops, mb->kvops, sizeof(st_kvop_t) * mb->n_kvops);
    for (uint32_t i = 0; i < mb->n; i++)
        b[l.want + i] = mb->want[i] ? 1 : 0;
    {
        size_t off = l.setup;
        for (uint32_t i = 0; i < mb->n; i++) {
            slotrec_t *s = &c->slots[mb->slot[i]];
            if (s->pending != 2)
                continue;
            st_ctrl_mb_setup_put(b + off, (uint32_t)mb->slot[i], &s->sp, s->window, s->n_window);
            off += st_ctrl_mb_setup_size(s->n_window);
            s->pending = 0;
        }
    }
    r->state = R_INFLIGHT;
    r->id = mb->id;
    r->n_want = n_want;
    r->n_ids = 0;
    r->status = ST_OK;
    r->error[0] = '\0';
    pthread_mutex_unlock(&c->lock);

    memset(&tag, 0, sizeof(tag));
    tag.type = ST_TRANSPORT_ACTIVATION;
    tag.stage = 0;
    tag.seq = (uint32_t)mb->id;
    tag.request_id = mb->id;
    cl_tlock(c);
    if (r->req) {
        (void)st_transport_req_wait(c->t, r->req, 5 * ST_TRANSPORT_SEC);
        st_transport_req_release(c->t, r->req);
        r->req = NULL;
    }
    st = c->ep_first ? st_transport_send(c->ep_first, &tag, r->mem, 0, l.total, &r->req)
                     : ST_ERR_CLOSED;
    if (st == ST_OK || st == ST_INPROGRESS) {
        if (st == ST_OK)
            r->req = NULL;
        st = ST_OK;
    } else {
        r->req = NULL;
    }
    cl_tunlock(c);
    if (st != ST_OK) {
        pthread_mutex_lock(&c->lock);
        if (r->state == R_INFLIGHT)
            r->state = R_FREE;
        pthread_mutex_unlock(&c->lock);
        return st_error_set(err, st, "cluster: sending micro-batch %llu to stage 0 failed: %s",
                            (unsigned long long)mb->id, st_status_str(st));
    }
    return ST_OK;
unlock:
    pthread_mutex_unlock(&c->lock);
    return st;
}

static int take_done_locked(st_cluster_t *c, st_pipeline_result_t *res, st_error_t *err)
{
    mbrec_t *best = NULL;
    for (int i = 0; i < ST_CTRL_MAX_STAGES; i++) {
        mbrec_t *r = &c->recs[i];
        if (r->state == R_RETURNED)
            r->state = R_FREE;
    }
    for (int i = 0; i < ST_CTRL_MAX_STAGES; i++) {
        mbrec_t *r = &c->recs[i];
        if (r->state == R_DONE && (!best || r->done_seq < best->done_seq))
            best = r;
    }
    if (!best)
        return 0;
    best->state = R_RETURNED;
    res->id = best->id;
    res->n_ids = best->n_ids;
    res->ids = best->ids;
    res->status = best->status;
    if (best->status != ST_OK)
        st_error_set(err, best->status, "%s", best->error);
    return 1;
}

static st_status_t cl_poll(void *ctx, int timeout_ms, st_pipeline_result_t *res, st_error_t *err)
{
    st_cluster_t *c = ctx;
    uint64_t deadline = st_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;

    for (;;) {
        cstate_t cs;
        uint64_t now;
        pthread_mutex_lock(&c->lock);
        if (take_done_locked(c, res, err)) {
            pthread_mutex_unlock(&c->lock);
            return ST_OK;
        }
        cs = c->state;
        pthread_mutex_unlock(&c->lock);
        now = st_now_ns();
        if (now >= deadline)
            return ST_ERR_TIMEOUT;
        if (cs == C_RUNNING && atomic_load(&c->tlock_wanted) == 0) {
            st_transport_event_t ev;
            uint64_t slice = ST_MIN(deadline - now, 2000000ull);
            cl_tlock(c);
            if (st_transport_wait_event(c->t, slice, &ev) == ST_OK) {
                cl_data_event(c, &ev);
                for (int k = 0; k < 16 && st_transport_wait_event(c->t, 0, &ev) == ST_OK; k++)
                    cl_data_event(c, &ev);
            }
            cl_tunlock(c);
        } else {
            /* Not running: the control thread progresses the transport;
             * results of failed micro-batches arrive through the cond. */
            struct timespec ts;
            pthread_mutex_lock(&c->lock);
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 2 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&c->cond, &c->lock, &ts);
            pthread_mutex_unlock(&c->lock);
        }
    }
}

static void cl_info(void *ctx, st_pipeline_info_t *out)
{
    st_cluster_t *c = ctx;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&c->lock);
    out->n_stages = c->n_stages;
    out->depth = c->depth ? c->depth : 1;
    out->n_slots = c->p.n_slots;
    out->n_ctx = c->p.n_ctx;
    out->max_batch = c->p.max_batch;
    out->healthy = c->state == C_RUNNING;
    snprintf(out->detail, sizeof(out->detail), "cluster %s", c->detail);
    out->worker_restarts = c->restarts_total;
    out->workers_restart_pending = c->restarts_pending;
    out->prefix_blocks = c->prefix_blocks;
    out->prefix_block = ST_PREFIX_BLOCK;
    out->epoch = c->epoch;
    pthread_mutex_unlock(&c->lock);
}

static void cl_destroy(void *ctx)
{
    st_cluster_free(ctx);
}

/* The coordinator's own copy (tokenizer, chat template, sizes): the engine
 * uses it instead of opening, and decrypting, the model a second time. */
static st_model_t *cl_model(void *ctx)
{
    return ((st_cluster_t *)ctx)->model;
}

static const st_pipeline_ops_t cluster_ops = {
    .abi_version = ST_PIPELINE_ABI_VERSION,
    .name = "cluster",
    .slot_setup = cl_slot_setup,
    .submit = cl_submit,
    .poll = cl_poll,
    .info = cl_info,
    .destroy = cl_destroy,
    .model = cl_model,
};

void st_cluster_pipeline(st_cluster_t *c, st_pipeline_t *out)
{
    out->ops = &cluster_ops;
    out->ctx = c;
}

/* ---- statistics ---------------------------------------------------------- */

void st_cluster_stats(st_cluster_t *c, st_cluster_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&c->lock);
    out->n_stages = c->n_stages;
    out->mbs = c->st_mbs;
    out->epoch = c->epoch;
    out->healthy = c->state == C_RUNNING;
    if (c->st_mbs) {
        double n = (double)c->st_mbs;
        out->rtt_us = (double)c->st_rtt_ns / n / 1e3;
        for (uint32_t s = 0; s < c->n_stages; s++)
            out->compute_us[s] = (double)c->st_compute_ns[s] / n / 1e3;
        for (uint32_t s = 0; s <= c->n_stages; s++)
            out->hop_us[s] = c->st_hop_bad ? -1.0 : (double)c->st_hop_ns[s] / n / 1e3;
    }
    for (uint32_t s = 0; s < c->n_stages; s++) {
        const wrec_t *w = &c->workers[c->stages[s].worker];
        out->first_layer[s] = c->stages[s].first;
        out->last_layer[s] = c->stages[s].last;
        out->rss_bytes[s] = w->rss;
        out->rss_peak_bytes[s] = w->rss_peak;
        out->load_ns[s] = w->load_ns;
        snprintf(out->worker[s], sizeof(out->worker[s]), "%s", w->name);
    }
    pthread_mutex_unlock(&c->lock);
}

void st_cluster_stats_reset(st_cluster_t *c)
{
    pthread_mutex_lock(&c->lock);
    c->st_mbs = c->st_rtt_ns = 0;
    memset(c->st_compute_ns, 0, sizeof(c->st_compute_ns));
    memset(c->st_hop_ns, 0, sizeof(c->st_hop_ns));
    c->st_hop_bad = 0;
    pthread_mutex_unlock(&c->lock);
}

void st_cluster_refresh(st_cluster_t *c, int timeout_ms)
{
    uint64_t before[ST_CTRL_MAX_STAGES], deadline = st_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    uint32_t n;

    pthread_mutex_lock(&c->lock);
    n = c->n_stages;
    for (uint32_t s = 0; s < n; s++)
        before[s] = c->workers[c->stages[s].worker].hb_count;
    pthread_mutex_unlock(&c->lock);
    /* hb_count is written by the control thread; a stale read only makes
     * this wait a little longer. */
    while (st_now_ns() < deadline) {
        uint32_t fresh = 0;
        for (uint32_t s = 0; s < n; s++)
            fresh += __atomic_load_n(&c->workers[c->stages[s].worker].hb_count,
                                     __ATOMIC_RELAXED) > before[s] + 1;
        if (fresh == n)
            break;
        usleep(20000);
    }
}
