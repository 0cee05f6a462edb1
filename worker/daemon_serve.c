/*
 * daemon_serve.c - the worker's data plane (see daemon_internal.h): a
 * received micro-batch is validated completely (st_ctrl_mb_parse), the slot
 * setups it carries are applied on the last stage, the stage computes
 * straight into a registered send buffer, and the result goes to the next
 * stage (hidden state) or back to the coordinator (sampled ids). Every
 * failure becomes an error frame that travels on, so the coordinator fails
 * that micro-batch with the message instead of waiting, and the worker
 * keeps serving. Nothing is allocated per micro-batch.
 */
#include <stdio.h>
#include <string.h>

#include "daemon_internal.h"
#include "st_log.h"
#include "st_util.h"

/* ---- serving ---------------------------------------------------------- */

/* A free, registered send buffer (waits for its previous send). */
static st_status_t take_buffer(wk_t *w, uint8_t **ptr, uint32_t *idx)
{
    uint32_t i = w->buf_i;
    w->buf_i = (w->buf_i + 1) % w->n_bufs;
    if (w->reqs[i]) {
        st_status_t st = st_transport_req_wait(w->t, w->reqs[i], 10 * ST_TRANSPORT_SEC);
        st_transport_req_release(w->t, w->reqs[i]);
        w->reqs[i] = NULL;
        if (st != ST_OK && st != ST_ERR_PEER && st != ST_ERR_CLOSED)
            st_warn(MOD, "%s: an earlier send did not finish: %s", w->name, st_status_str(st));
    }
    *ptr = st_transport_mem_ptr(w->bufs[i]);
    *idx = i;
    return ST_OK;
}

static void send_frame(wk_t *w, uint32_t idx, size_t len, const st_ctrl_mb_hdr_t *h)
{
    st_transport_tag_t tag = {.type = ST_TRANSPORT_ACTIVATION, .stage = w->plan.stage + 1,
                              .seq = (uint32_t)h->mb_id, .request_id = h->mb_id};
    st_status_t st;

    if (!w->next) {
        st_warn(MOD, "%s: micro-batch %llu computed but no next stage is connected", w->name,
                (unsigned long long)h->mb_id);
        return;
    }
    st = st_transport_send(w->next, &tag, w->bufs[idx], 0, len, &w->reqs[idx]);
    if (st == ST_OK)
        w->reqs[idx] = NULL;
    else if (st != ST_INPROGRESS) {
        w->reqs[idx] = NULL;
        st_error(MOD, "%s: sending micro-batch %llu to the next stage failed: %s", w->name,
                 (unsigned long long)h->mb_id, st_status_str(st));
    }
}

/* Sends an error frame for micro-batch `mb_id` down the pipeline, so the
 * coordinator fails it with this message instead of waiting. */
static void send_error(wk_t *w, uint64_t mb_id, uint64_t t_submit, st_status_t status,
                       const char *text)
{
    char line[ST_CTRL_TEXT_MAX];
    st_ctrl_mb_layout_t l;
    st_ctrl_mb_hdr_t *h;
    uint8_t *b;
    uint32_t idx, tl;

    snprintf(line, sizeof(line), "stage %u (%s): %s", w->plan.stage, w->name, text);
    tl = (uint32_t)strlen(line) + 1;
    if (st_ctrl_mb_layout(ST_CTRL_MB_IDS, 0, 0, 0, 0, 0, tl, &l) != ST_OK || l.total > w->frame_max)
        return;
    take_buffer(w, &b, &idx);
    memset(b, 0, l.total);
    h = (st_ctrl_mb_hdr_t *)(void *)b;
    h->magic = ST_CTRL_MB_MAGIC;
    h->version = ST_CTRL_VERSION;
    h->kind = ST_CTRL_MB_IDS;
    h->epoch = w->epoch;
    h->status = status < 0 ? status : ST_ERR_INTERNAL;
    h->text_len = tl;
    h->mb_id = mb_id;
    h->t_submit = t_submit;
    memcpy(b + l.text, line, tl);
    send_frame(w, idx, l.total, h);
}

static void forward_error_frame(wk_t *w, const void *frame, size_t len)
{
    uint8_t *b;
    uint32_t idx;
    if (len > w->frame_max)
        return;
    take_buffer(w, &b, &idx);
    memcpy(b, frame, len);
    send_frame(w, idx, len, (const st_ctrl_mb_hdr_t *)(const void *)b);
}

static void on_frame(wk_t *w, const void *data, size_t len)
{
    const st_ctrl_plan_t *pl = &w->plan;
    int first = pl->stage == 0, last = pl->stage == pl->n_stages - 1;
    st_ctrl_mb_limits_t lim = {
        .kind = first ? ST_CTRL_MB_TOKENS : ST_CTRL_MB_HIDDEN, .epoch = w->epoch,
        .max_batch = pl->max_batch, .n_slots = pl->n_slots, .n_ctx = pl->n_ctx,
        .n_embd = w->n_embd, .n_vocab = w->n_vocab, .max_ids = pl->n_slots};
    const st_ctrl_mb_hdr_t *ih = data;
    st_ctrl_mb_view_t v;
    st_stage_batch_t b;
    st_stage_out_t o;
    st_error_t err;
    uint64_t t_recv = st_now_ns();
    st_status_t st;
    uint8_t *ob;
    uint32_t idx, stage = pl->stage;

    if ((uintptr_t)data % 8 && len <= w->frame_max) {
        memcpy(w->scratch, data, len);
        data = w->scratch;
        ih = data;
    }
    if (len >= sizeof(*ih) && ih->magic == ST_CTRL_MB_MAGIC && ih->kind == ST_CTRL_MB_IDS)
        lim.kind = ST_CTRL_MB_IDS;   /* an upstream error passing through */
    st_error_clear(&err);
    st = st_ctrl_mb_parse(data, len, &lim, &v, &err);
    if (st == ST_ERR_CANCELED) {
        st_debug(MOD, "%s: dropping %s", w->name, err.msg);
        return;
    }
    if (st != ST_OK) {
        st_error(MOD, "%s: refusing a micro-batch: %s", w->name, err.msg);
        if (len >= sizeof(*ih))
            send_error(w, ih->mb_id, ih->t_submit, st, err.msg);
        return;
    }
    if (lim.kind == ST_CTRL_MB_IDS) {
        forward_error_frame(w, data, len);
        return;
    }
    if (last) {
        size_t off = 0;
        for (uint32_t i = 0; i < ih->n_setup; i++) {
            st_ctrl_mb_setup_t rec;
            st_sampler_params_t sp;
            const int32_t *win;
            st_ctrl_mb_setup_get(&v, &off, &rec, &win);
            st_ctrl_mb_setup_params(&rec, &sp);
            st = st_stage_slot_setup(w->stage, rec.slot, &sp);
            if (st != ST_OK) {
                send_error(w, ih->mb_id, ih->t_submit, st, "slot setup failed");
                return;
            }
            st_stage_slot_accept(w->stage, rec.slot, win, rec.n_window);
        }
    }

    /* Output frame: hidden state for the next stage, or sampled ids. */
    {
        st_ctrl_mb_layout_t ol;
        st_ctrl_mb_hdr_t *oh;
        if (last)
            st = st_ctrl_mb_layout(ST_CTRL_MB_IDS, 0, 0, 0, 0, pl->n_slots, 0, &ol);
        else
            st = st_ctrl_mb_layout(ST_CTRL_MB_HIDDEN, ih->n, w->n_embd, ih->setup_bytes,
                                   ih->n_kvops, 0, 0, &ol);
        if (st != ST_OK || ol.total > w->frame_max) {
            send_error(w, ih->mb_id, ih->t_submit, ST_ERR_RANGE, "output frame too large");
            return;
        }
        take_buffer(w, &ob, &idx);
        memset(&b, 0, sizeof(b));
        b.n = ih->n;
        b.tokens = v.tokens;
        b.hidden = v.hidden;
        b.pos = v.pos;
        b.slot = v.slot;
        b.want = v.want;
        b.flags = last ? ST_STAGE_SAMPLE : 0;
        b.n_kvops = ih->n_kvops;
        b.kvops = v.kvops;
        memset(&o, 0, sizeof(o));
        if (last)
            o.ids = w->ids;
        else
            o.hidden = (float *)(void *)(ob + ol.hidden);
        st_error_clear(&err);
        st = st_stage_forward(w->stage, &b, &o, &err);
        if (st != ST_OK) {
            st_error(MOD, "%s: micro-batch %llu failed: %s", w->name,
                     (unsigned long long)ih->mb_id, err.msg);
            send_error(w, ih->mb_id, ih->t_submit, st, err.msg);
            return;
        }
        oh = (st_ctrl_mb_hdr_t *)(void *)ob;
        *oh = *ih;
        if (last) {
            oh->kind = ST_CTRL_MB_IDS;
            oh->n = oh->n_setup = oh->setup_bytes = oh->n_embd = oh->n_kvops = 0;
            oh->n_ids = o.n_out;
            oh->status = ST_OK;
            oh->text_len = 0;
            st_ctrl_mb_layout(ST_CTRL_MB_IDS, 0, 0, 0, 0, o.n_out, 0, &ol);
            memcpy(ob + ol.ids, w->ids, 4u * o.n_out);
        } else {
            oh->kind = ST_CTRL_MB_HIDDEN;
            oh->n_embd = w->n_embd;
            memcpy(ob + ol.pos, v.pos, 4u * ih->n);
            memcpy(ob + ol.slot, v.slot, 4u * ih->n);
            memcpy(ob + ol.want, v.want, ih->n);
            if (ih->setup_bytes)
                memcpy(ob + ol.setup, v.setup, ih->setup_bytes);
            if (ih->n_kvops)
                memcpy(ob + ol.kvops, v.kvops, sizeof(st_kvop_t) * ih->n_kvops);
        }
        if (stage < ST_CTRL_MAX_STAGES) {
            oh->stamp[stage][0] = t_recv;
            oh->stamp[stage][1] = st_now_ns();
            oh->n_stamps = stage + 1;
        }
        atomic_fetch_add(&w->batches, 1);
        atomic_fetch_add(&w->busy_ns, st_now_ns() - t_recv);
        send_frame(w, idx, ol.total, oh);
    }
}

static void add_inbound(wk_t *w, st_transport_ep_t *ep)
{
    for (int i = 0; i < MAX_INBOUND; i++)
        if (!w->inbound[i]) {
            w->inbound[i] = ep;
            return;
        }
    st_warn(MOD, "%s: too many inbound data connections; closing one", w->name);
    st_transport_ep_close(w->t, ep);
}

void wk_on_event(wk_t *w, st_transport_event_t *ev)
{
    switch (ev->type) {
    case ST_TRANSPORT_EV_RECV:
        if (w->stage && ev->tag.type == ST_TRANSPORT_ACTIVATION)
            on_frame(w, ev->data, (size_t)ev->len);
        else
            st_warn(MOD, "%s: unexpected data message (type %u) dropped", w->name, ev->tag.type);
        st_transport_msg_release(w->t, ev->msg);
        break;
    case ST_TRANSPORT_EV_EP_READY:
        if (ev->ep != w->next)
            add_inbound(w, ev->ep);
        break;
    case ST_TRANSPORT_EV_EP_ERROR:
        if (ev->ep == w->next) {
            st_error(MOD, "%s: the connection to the next stage failed: %s", w->name,
                     st_status_str(ev->status));
            st_transport_ep_close(w->t, w->next);
            w->next = NULL;
        } else {
            for (int i = 0; i < MAX_INBOUND; i++)
                if (w->inbound[i] == ev->ep) {
                    st_transport_ep_close(w->t, ev->ep);
                    w->inbound[i] = NULL;
                }
            st_info(MOD, "%s: an upstream data connection closed (%s)", w->name,
                    st_status_str(ev->status));
        }
        break;
    }
}
