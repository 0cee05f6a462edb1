/*
 * Messages: registered memory, sends from it, and the active-message receive
 * path into the pre-registered receive pools.
 *
 * Receive path (st_tp_am_handler, called inside ucp_worker_progress):
 *   1. find our endpoint from UCX's reply endpoint (unknown or closing: drop);
 *   2. st_wire_decode() the 32-byte header: magic, version, type, flags,
 *      payload length against our advertised maximum;
 *   3. check the length UCX delivered equals the header's, and that only a
 *      HELLO may come before the handshake finished;
 *   4. only then take a receive buffer and copy (eager) or start the
 *      zero-copy rendezvous receive into it.
 * Any failure in 1-3 closes that endpoint with ST_ERR_PROTOCOL and a logged
 * reason; the payload is never read. When the pool is empty the arrival is
 * parked (UCX keeps the data, we return UCS_INPROGRESS) and received when
 * the application releases a buffer.
 */
#include "st_transport_impl.h"

#include <stdlib.h>
#include <string.h>

#include "st_log.h"
#include "st_util.h"

/* ---- registered memory ------------------------------------------------ */

static st_status_t map_mem(st_transport_t *t, void *ptr, size_t size, ucs_memory_type_t mt,
                           ucp_mem_h *memh, void **addr_out)
{
    ucp_mem_map_params_t mp;
    ucp_mem_attr_t ma;
    ucs_status_t s;

    memset(&mp, 0, sizeof(mp));
    mp.field_mask  = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                     UCP_MEM_MAP_PARAM_FIELD_FLAGS | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    mp.address     = ptr;
    mp.length      = size;
    mp.flags       = ptr ? 0 : UCP_MEM_MAP_ALLOCATE;
    mp.memory_type = mt;
    s = ucp_mem_map(t->ctx, &mp, memh);
    if (s != UCS_OK) {
        st_error(ST_TRANSPORT_MOD, "%s: ucp_mem_map(%zu bytes): %s", t->name, size,
                 ucs_status_string(s));
        return s == UCS_ERR_NO_MEMORY ? ST_ERR_NOMEM : ST_ERR_BACKEND;
    }
    ma.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
    if ((s = ucp_mem_query(*memh, &ma)) != UCS_OK) {
        ucp_mem_unmap(t->ctx, *memh);
        return ST_ERR_BACKEND;
    }
    *addr_out = ma.address;
    return ST_OK;
}

static st_status_t mem_setup(st_transport_t *t, void *ptr, size_t size,
                             st_transport_mem_type_t type, st_transport_mem_t *m)
{
    void *addr;
    st_status_t st;

    memset(m, 0, sizeof(*m));
    m->size = size;
    m->type = type;
    m->ucs_type = UCS_MEMORY_TYPE_HOST;
    if (type == ST_TRANSPORT_MEM_CUDA) {
        if (!ptr)
            return ST_ERR_UNSUPPORTED;    /* CUDA memory comes from the GPU backend */
        if (t->mem_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) {
            /* UCX reaches CUDA memory itself (GPUDirect RDMA or cuda_copy). */
            m->ucs_type = UCS_MEMORY_TYPE_CUDA;
        } else {
            if (!t->cfg.copy_ops) {
                st_error(ST_TRANSPORT_MOD, "%s: UCX has no CUDA support and no copy_ops "
                         "were configured for staging", t->name);
                return ST_ERR_UNSUPPORTED;
            }
            if ((st = map_mem(t, NULL, size, UCS_MEMORY_TYPE_HOST, &m->memh, &addr)) != ST_OK)
                return st;
            m->ptr = ptr;
            m->wire_ptr = addr;
            m->staged = 1;
            return ST_OK;
        }
    } else if (type != ST_TRANSPORT_MEM_HOST) {
        return ST_ERR_INVALID;
    }
    if ((st = map_mem(t, ptr, size, m->ucs_type, &m->memh, &addr)) != ST_OK)
        return st;
    m->ptr = m->wire_ptr = ptr ? ptr : addr;
    m->allocated = ptr == NULL;
    return ST_OK;
}

static st_status_t mem_new(st_transport_t *t, void *ptr, size_t size,
                           st_transport_mem_type_t type, st_transport_mem_t **out)
{
    st_transport_mem_t *m;
    st_status_t st;

    if (!t || !out || size == 0)
        return ST_ERR_INVALID;
    m = malloc(sizeof(*m));
    if (!m)
        return ST_ERR_NOMEM;
    if ((st = mem_setup(t, ptr, size, type, m)) != ST_OK) {
        free(m);
        return st;
    }
    *out = m;
    return ST_OK;
}

st_status_t st_transport_mem_alloc(st_transport_t *t, size_t size,
                                   st_transport_mem_type_t type, st_transport_mem_t **out)
{
    return mem_new(t, NULL, size, type, out);
}

st_status_t st_transport_mem_register(st_transport_t *t, void *ptr, size_t size,
                                      st_transport_mem_type_t type, st_transport_mem_t **out)
{
    if (!ptr)
        return ST_ERR_INVALID;
    return mem_new(t, ptr, size, type, out);
}

void  *st_transport_mem_ptr(const st_transport_mem_t *m)    { return m->ptr; }
size_t st_transport_mem_size(const st_transport_mem_t *m)   { return m->size; }
int    st_transport_mem_staged(const st_transport_mem_t *m) { return m->staged; }

void st_transport_mem_free(st_transport_t *t, st_transport_mem_t *m)
{
    if (!m)
        return;
    ucp_mem_unmap(t->ctx, m->memh);
    free(m);
}

/* ---- receive pools ------------------------------------------------------ */

static st_status_t pool_create(st_transport_t *t, msg_pool_t *p, uint32_t count,
                               size_t slot, int large, st_error_t *err)
{
    uint64_t total;
    st_status_t st;

    p->count = count;
    p->slot_size = slot;
    p->free_head = UINT32_MAX;
    if (count == 0)
        return ST_OK;
    if (st_mul_overflow_u64(count, slot, &total) || total > SIZE_MAX)
        return st_error_set(err, ST_ERR_OVERFLOW, "%s: pool %u x %zu overflows", t->name,
                            count, slot);
    p->msgs = calloc(count, sizeof(*p->msgs));
    if (!p->msgs)
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", t->name);
    if ((st = mem_setup(t, NULL, (size_t)total, ST_TRANSPORT_MEM_HOST, &p->mem)) != ST_OK) {
        free(p->msgs);
        p->msgs = NULL;
        return st_error_set(err, st, "%s: registering %llu bytes of receive buffers failed",
                            t->name, (unsigned long long)total);
    }
    for (uint32_t i = 0; i < count; i++) {
        st_transport_msg_t *m = &p->msgs[i];
        m->t = t;
        m->pool = &p->mem;
        m->offset = (size_t)i * slot;
        m->data = (uint8_t *)p->mem.ptr + m->offset;
        m->large = large;
        m->next_free = i + 1 < count ? i + 1 : UINT32_MAX;
    }
    p->free_head = 0;
    return ST_OK;
}

static void pool_destroy(st_transport_t *t, msg_pool_t *p)
{
    if (!p->msgs)
        return;
    ucp_mem_unmap(t->ctx, p->mem.memh);
    free(p->msgs);
    p->msgs = NULL;
}

st_status_t st_tp_pools_create(st_transport_t *t, st_error_t *err)
{
    st_status_t st;

    if ((st = pool_create(t, &t->small, t->cfg.small_slots, t->cfg.small_slot_size, 0, err)))
        return st;
    if (t->cfg.max_msg_size > t->cfg.small_slot_size &&
        (st = pool_create(t, &t->large, t->cfg.large_slots, t->cfg.max_msg_size, 1, err))) {
        pool_destroy(t, &t->small);
        return st;
    }
    return ST_OK;
}

void st_tp_pools_destroy(st_transport_t *t)
{
    pool_destroy(t, &t->large);
    pool_destroy(t, &t->small);
}

static st_transport_msg_t *pool_get(st_transport_t *t, uint64_t len)
{
    msg_pool_t *p = len <= t->cfg.small_slot_size ? &t->small : &t->large;
    st_transport_msg_t *m;

    if (p->free_head == UINT32_MAX)
        return NULL;
    m = &p->msgs[p->free_head];
    p->free_head = m->next_free;
    m->in_use = 1;
    return m;
}

void st_transport_msg_release(st_transport_t *t, st_transport_msg_t *m)
{
    msg_pool_t *p;

    if (!m || !m->in_use)
        return;
    p = m->large ? &t->large : &t->small;
    if (m->ep && m->ep->gen == m->ep_gen && m->ep->state == EP_READY &&
        ++m->ep->rx_done >= st_tp_credit_batch(t))
        t->pending_work = 1;      /* st_tp_do_pending sends the CREDIT frame */
    m->in_use = 0;
    m->ep = NULL;
    m->next_free = p->free_head;
    p->free_head = (uint32_t)(m - p->msgs);
    if (t->def_count)
        t->pending_work = 1;
}

st_transport_mem_t *st_transport_msg_mem(st_transport_msg_t *m, size_t *offset)
{
    *offset = m->offset;
    return m->pool;
}

/* ---- send requests ------------------------------------------------------ */

st_transport_req_t *st_tp_req_get(st_transport_t *t)
{
    st_transport_req_t *r;

    if (t->req_free == UINT32_MAX)
        return NULL;
    r = &t->reqs[t->req_free];
    t->req_free = r->next_free;
    r->in_use = 1;
    r->done = 0;
    r->detached = 0;
    r->status = ST_INPROGRESS;
    return r;
}

void st_tp_req_put(st_transport_t *t, st_transport_req_t *r)
{
    r->in_use = 0;
    r->ep = NULL;
    r->next_free = t->req_free;
    t->req_free = (uint32_t)(r - t->reqs);
}

void st_tp_send_cb(void *request, ucs_status_t status, void *user_data)
{
    st_transport_req_t *r = user_data;

    r->status = status == UCS_OK ? ST_OK :
                status == UCS_ERR_CANCELED ? ST_ERR_CANCELED : ST_ERR_PEER;
    r->done = 1;
    ucp_request_free(request);
    if (r->detached)
        st_tp_req_put(r->t, r);
}

st_status_t st_transport_send(st_transport_ep_t *ep, const st_transport_tag_t *tag,
                              st_transport_mem_t *mem, size_t offset, size_t len,
                              st_transport_req_t **req)
{
    st_transport_t *t;
    st_transport_req_t *r;
    ucp_request_param_t p;
    st_wire_hdr_t h;
    const void *buf = NULL;
    void *sr;

    if (!ep || !tag)
        return ST_ERR_INVALID;
    t = ep->t;
    if (ST_UNLIKELY(ep->state != EP_READY || ep->peer_bye))
        return ep->state == EP_HANDSHAKE ? ST_ERR_BUSY :
               ep->state == EP_FAILED ? ep->error : ST_ERR_CLOSED;
    if (ST_UNLIKELY(tag->type != ST_TRANSPORT_ACTIVATION && tag->type != ST_TRANSPORT_CONTROL))
        return ST_ERR_INVALID;
    if (ST_UNLIKELY(len > ep->peer_max))
        return ST_ERR_RANGE;
    if (ST_UNLIKELY(ep->tx_credits == 0))
        return ST_ERR_BUSY;       /* the peer has not released enough yet */
    if (len) {
        if (ST_UNLIKELY(!mem || offset > mem->size || len > mem->size - offset))
            return ST_ERR_RANGE;
        buf = (const uint8_t *)mem->wire_ptr + offset;
    }
    r = st_tp_req_get(t);
    if (ST_UNLIKELY(!r))
        return ST_ERR_BUSY;
    if (len && mem->staged) {
        st_status_t cs = t->cfg.copy_ops->to_host(t->cfg.copy_ops->arg, (void *)buf,
                                                  (const uint8_t *)mem->ptr + offset, len);
        if (cs != ST_OK) {
            st_tp_req_put(t, r);
            return cs;
        }
    }
    h.version     = ST_WIRE_VERSION;
    h.type        = tag->type;
    h.flags       = tag->flags;
    h.stage       = tag->stage;
    h.seq         = tag->seq;
    h.request_id  = tag->request_id;
    h.payload_len = len;
    st_wire_encode(&h, r->hdr);
    r->ep = ep;
    r->detached = req == NULL;

    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                     UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send   = st_tp_send_cb;
    p.user_data = r;
    p.flags     = UCP_AM_SEND_FLAG_REPLY;
    if (len) {
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH | UCP_OP_ATTR_FIELD_MEMORY_TYPE;
        p.memh        = mem->memh;
        p.memory_type = mem->staged ? UCS_MEMORY_TYPE_HOST : mem->ucs_type;
    }
    sr = ucp_am_send_nbx(ep->uep, ST_TRANSPORT_AM_ID, r->hdr, ST_WIRE_HDR_SIZE, buf, len, &p);
    if (ST_LIKELY(!UCS_PTR_IS_ERR(sr)))
        ep->tx_credits--;
    if (ST_LIKELY(sr == NULL)) {
        st_tp_req_put(t, r);
        t->stats.msgs_sent++;
        t->stats.bytes_sent += len;
        return ST_OK;
    }
    if (UCS_PTR_IS_ERR(sr)) {
        st_tp_req_put(t, r);
        st_debug(ST_TRANSPORT_MOD, "%s: send to %s: %s", t->name, ep->peer,
                 ucs_status_string(UCS_PTR_STATUS(sr)));
        return ST_ERR_PEER;
    }
    t->stats.msgs_sent++;
    t->stats.bytes_sent += len;
    if (req)
        *req = r;
    return ST_INPROGRESS;
}

st_status_t st_transport_req_test(const st_transport_req_t *r)
{
    return r->done ? r->status : ST_INPROGRESS;
}

static int req_done(void *arg)
{
    return ((st_transport_req_t *)arg)->done;
}

st_status_t st_transport_req_wait(st_transport_t *t, st_transport_req_t *r, uint64_t timeout_ns)
{
    st_status_t st = st_tp_wait(t, req_done, r, timeout_ns);
    return st == ST_OK ? r->status : st;
}

void st_transport_req_release(st_transport_t *t, st_transport_req_t *r)
{
    if (!r || !r->in_use)
        return;
    if (r->done)
        st_tp_req_put(t, r);
    else
        r->detached = 1;
}

/* ---- receive ------------------------------------------------------------ */

static void deliver(st_transport_t *t, st_transport_msg_t *m)
{
    st_transport_event_t ev;

    ev.type    = ST_TRANSPORT_EV_RECV;
    ev.status  = ST_OK;
    ev.ep      = m->ep;
    ev.ep_user = m->ep->user;
    ev.tag.type       = m->hdr.type;
    ev.tag.flags      = (uint8_t)m->hdr.flags;
    ev.tag.stage      = m->hdr.stage;
    ev.tag.seq        = m->hdr.seq;
    ev.tag.request_id = m->hdr.request_id;
    ev.data = m->data;
    ev.len  = m->len;
    ev.msg  = m;
    t->stats.msgs_recv++;
    t->stats.bytes_recv += m->len;
    if (st_tp_push_event(t, &ev) != 0)
        st_transport_msg_release(t, m);
}

static void rndv_recv_cb(void *request, ucs_status_t status, size_t length, void *user_data)
{
    st_transport_msg_t *m = user_data;
    st_transport_t *t = m->t;

    ucp_request_free(request);
    if (m->ep->gen != m->ep_gen || m->ep->state != EP_READY) {
        st_transport_msg_release(t, m);    /* its endpoint went away meanwhile */
        return;
    }
    if (status != UCS_OK || length != m->len) {
        /* The sender died or lied about the size mid-transfer. */
            st_tp_ep_fail(m->ep, status != UCS_OK ? ST_ERR_PEER : ST_ERR_PROTOCOL,
                          status != UCS_OK ? "rendezvous receive failed"
                                           : "rendezvous length mismatch");
        st_transport_msg_release(t, m);
        return;
    }
    deliver(t, m);
}

/* Receives an arrival that passed validation into buffer m. */
static void receive_into(st_transport_t *t, st_transport_msg_t *m, st_transport_ep_t *ep,
                         const st_wire_hdr_t *h, void *data, uint64_t len, int rndv)
{
    ucp_request_param_t p;
    void *r;

    m->ep  = ep;
    m->ep_gen = ep->gen;
    m->hdr = *h;
    m->len = len;
    if (!rndv) {
        memcpy(m->data, data, len);
        deliver(t, m);
        return;
    }
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                     UCP_OP_ATTR_FIELD_MEMH;
    p.cb.recv_am = rndv_recv_cb;
    p.user_data  = m;
    p.memh       = m->pool->memh;
    r = ucp_am_recv_data_nbx(t->worker, data, m->data, len, &p);
    if (r == NULL) {
        deliver(t, m);
    } else if (UCS_PTR_IS_ERR(r)) {
        st_tp_ep_fail(ep, ST_ERR_PEER, ucs_status_string(UCS_PTR_STATUS(r)));
        st_transport_msg_release(t, m);
    }
}

static ucs_status_t reject(st_transport_t *t, st_transport_ep_t *ep, const char *why)
{
    t->stats.frames_rejected++;
    st_warn(ST_TRANSPORT_MOD, "%s: rejected frame from %s: %s; closing the endpoint",
            t->name, ep->peer, why);
    st_tp_ep_fail(ep, ST_ERR_PROTOCOL, why);
    return UCS_OK;   /* UCX releases the data; for rendezvous it is dropped */
}

ucs_status_t st_tp_am_handler(void *arg, const void *header, size_t header_length,
                              void *data, size_t length, const ucp_am_recv_param_t *param)
{
    st_transport_t *t = arg;
    st_transport_ep_t *ep;
    st_transport_msg_t *m;
    st_wire_hdr_t h;
    st_error_t err;
    int rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;

    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP))
        return UCS_OK;
    if (!(ep = st_tp_ep_lookup(t, param->reply_ep))) {
        /* Only an address-mode hello with our key opens a connection. */
        st_wire_hello_t hello;
        if (!rndv && st_wire_decode(header, header_length, t->cfg.max_msg_size, &err, &h) == ST_OK &&
            h.type == ST_WIRE_HELLO && h.payload_len == length &&
            st_wire_hello_decode(data, length, &err, &hello) == ST_OK &&
            st_tp_on_unknown_hello(t, param->reply_ep, &hello))
            return UCS_OK;
        st_debug(ST_TRANSPORT_MOD, "%s: frame from an unknown endpoint dropped", t->name);
        return UCS_OK;
    }
    if (ep->state != EP_READY && ep->state != EP_HANDSHAKE) {
        /* Failed or closed: drop whatever was in flight, except the BYE
         * exchange that lets a closing endpoint finish in order. */
        if (ep->state == EP_CLOSING && ep->uep && !rndv &&
            st_wire_decode(header, header_length, t->cfg.max_msg_size, &err, &h) == ST_OK &&
            h.type == ST_WIRE_BYE)
            st_tp_ep_on_bye(ep, h.seq);
        return UCS_OK;
    }
    if (st_wire_decode(header, header_length, t->cfg.max_msg_size, &err, &h) != ST_OK)
        return reject(t, ep, err.msg);
    if (h.payload_len != length) {
        st_error_set(&err, ST_ERR_PROTOCOL, "truncated frame: header says %llu bytes, "
                     "%zu arrived", (unsigned long long)h.payload_len, length);
        return reject(t, ep, err.msg);
    }
    if (h.type == ST_WIRE_HELLO) {
        st_wire_hello_t hello;
        if (rndv)
            return reject(t, ep, "hello sent by rendezvous");
        if (st_wire_hello_decode(data, length, &err, &hello) != ST_OK)
            return reject(t, ep, err.msg);
        st_tp_ep_on_hello(ep, &hello);
        return UCS_OK;
    }
    if (ep->state != EP_READY)
        return reject(t, ep, "data frame before hello");
    if (h.type == ST_WIRE_BYE) {
        if (rndv || h.seq != 0)
            return reject(t, ep, "bye acknowledged that was never sent");
        st_tp_ep_on_bye(ep, 0);
        return UCS_OK;
    }
    if (ST_UNLIKELY(ep->peer_bye))
        return reject(t, ep, "data frame after bye");
    if (h.type == ST_WIRE_CREDIT) {
        if ((uint64_t)ep->tx_credits + h.seq > ep->peer_credits)
            return reject(t, ep, "credit frame returns more than was sent");
        ep->tx_credits += h.seq;
        return UCS_OK;
    }

    if (ST_UNLIKELY(++ep->rx_inflight > t->cfg.ep_credits))
        return reject(t, ep, "sender exceeded the credits it was given");
    m = pool_get(t, length);
    if (ST_LIKELY(m != NULL)) {
        receive_into(t, m, ep, &h, data, length, rndv);
        return UCS_OK;
    }
    /* No free buffer: park the arrival if UCX lets us keep its data. */
    if ((rndv || (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA)) && t->def_count < t->def_cap) {
        deferred_rx_t *d = &t->deferred[(t->def_head + t->def_count) % t->def_cap];
        d->ep = ep;
        d->ep_gen = ep->gen;
        d->hdr = h;
        d->data = data;
        d->len = length;
        d->rndv = rndv;
        t->def_count++;
        t->stats.recv_deferred++;
        return UCS_INPROGRESS;
    }
    return reject(t, ep, "receiver overrun: every receive buffer is in use");
}

void st_tp_drain_deferred(st_transport_t *t)
{
    while (t->def_count) {
        deferred_rx_t *d = &t->deferred[t->def_head];
        st_transport_msg_t *m;

        if (d->ep->gen != d->ep_gen || d->ep->state != EP_READY) {
            /* Its endpoint failed or closed meanwhile: drop the data (for a
             * rendezvous this tells the sender it is done). */
            ucp_am_data_release(t->worker, d->data);
        } else {
            m = pool_get(t, d->len);
            if (!m)
                return;     /* FIFO: later arrivals wait behind this one */
            if (d->rndv) {
                receive_into(t, m, d->ep, &d->hdr, d->data, d->len, 1);
            } else {
                receive_into(t, m, d->ep, &d->hdr, d->data, d->len, 0);
                ucp_am_data_release(t->worker, d->data);
            }
        }
        t->def_head = (t->def_head + 1) % t->def_cap;
        t->def_count--;
    }
}
