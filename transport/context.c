/*
 * Transport context: the UCP context and worker, the progress policy and the
 * event ring that hands arrivals and endpoint changes to the caller.
 *
 * UCX callbacks (AM handler, endpoint errors, send completions) run inside
 * ucp_worker_progress(); they only record state and queue events. Work that
 * may re-enter UCX (closing endpoints, receiving deferred data) is done in
 * st_tp_do_pending() after progress returns.
 */
#include "st_transport_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "st_log.h"
#include "st_util.h"

void st_transport_config_init(st_transport_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->size            = sizeof(*cfg);
    cfg->version         = ST_TRANSPORT_CONFIG_VERSION;
    cfg->progress        = ST_TRANSPORT_PROGRESS_HYBRID;
    cfg->spin_ns         = 200000;           /* 200 us: longer than a decode hop */
    cfg->max_msg_size    = 16u << 20;
    cfg->small_slot_size = 64u << 10;
    cfg->small_slots     = 64;
    cfg->large_slots     = 4;
    cfg->max_eps         = 64;
    cfg->max_sends       = 256;
    cfg->ep_credits      = 32;
}

static st_status_t config_check(const st_transport_config_t *c, st_error_t *err)
{
    if (c->size != sizeof(*c) || c->version != ST_TRANSPORT_CONFIG_VERSION)
        return st_error_set(err, ST_ERR_INVALID, "transport config: size %u version %u, "
                            "expected %zu/%u (use st_transport_config_init)",
                            c->size, c->version, sizeof(*c), ST_TRANSPORT_CONFIG_VERSION);
    if (c->progress > ST_TRANSPORT_PROGRESS_HYBRID)
        return st_error_set(err, ST_ERR_INVALID, "transport config: progress mode %d", c->progress);
    if (c->max_msg_size == 0 || c->max_msg_size > (1ull << 32))
        return st_error_set(err, ST_ERR_INVALID, "transport config: max_msg_size %llu (1 B..4 GiB)",
                            (unsigned long long)c->max_msg_size);
    if (c->small_slot_size == 0 || c->small_slot_size > c->max_msg_size)
        return st_error_set(err, ST_ERR_INVALID, "transport config: small_slot_size %llu",
                            (unsigned long long)c->small_slot_size);
    if (c->small_slots == 0 || c->small_slots > 65536 || c->large_slots > 4096)
        return st_error_set(err, ST_ERR_INVALID, "transport config: slots %u/%u",
                            c->small_slots, c->large_slots);
    if (c->max_eps == 0 || c->max_eps > 4096 || c->max_sends == 0 || c->max_sends > 65536)
        return st_error_set(err, ST_ERR_INVALID, "transport config: max_eps %u max_sends %u",
                            c->max_eps, c->max_sends);
    if (c->access_key_len > sizeof(c->access_key))
        return st_error_set(err, ST_ERR_INVALID, "transport config: access_key_len %u (0..32)",
                            c->access_key_len);
    if (c->ep_credits == 0 || c->ep_credits > 65536)
        return st_error_set(err, ST_ERR_INVALID, "transport config: ep_credits %u (1..65536)",
                            c->ep_credits);
    if (c->copy_ops && (c->copy_ops->version != 1 || !c->copy_ops->to_host ||
                        !c->copy_ops->from_host))
        return st_error_set(err, ST_ERR_INVALID, "transport config: incomplete copy_ops");
    return ST_OK;
}

/* Whether a UCX_TLS value can select a shared-memory (mm) transport; UCX
 * warns about MM_ERROR_HANDLING when none is in use. NULL means "all". */
static int tls_has_shm(const char *tls)
{
    return !tls || strstr(tls, "all") || strstr(tls, "posix") || strstr(tls, "sysv") ||
           strstr(tls, "sm") || strstr(tls, "mm");
}

static st_status_t ucx_config(const st_transport_config_t *c, st_error_t *err,
                              ucp_config_t **out)
{
    ucp_config_t *uc = NULL;
    ucs_status_t s;
    char num[32];
    const char *tls_env = c->tls ? c->tls : getenv("UCX_TLS");

    s = ucp_config_read(NULL, NULL, &uc);
    if (s != UCS_OK)
        return st_error_set(err, ST_ERR_BACKEND, "ucp_config_read: %s", ucs_status_string(s));
    /* UCX 1.13 hides the shared-memory transports from endpoints that ask
     * for peer-failure handling unless this is set; without it two workers
     * on one host fall back to TCP (3.5 us instead of 0.35 us at 8 B, measured
     * with strata bench transport). Failure of a local peer is still seen: the
     * connection manager's socket closes when the process dies. */
    if (!getenv("UCX_MM_ERROR_HANDLING") && tls_has_shm(tls_env) &&
        (s = ucp_config_modify(uc, "MM_ERROR_HANDLING", "y")) != UCS_OK)
        st_debug(ST_TRANSPORT_MOD, "UCX_MM_ERROR_HANDLING: %s", ucs_status_string(s));
    if (c->tls && (s = ucp_config_modify(uc, "TLS", c->tls)) != UCS_OK) {
        st_error_set(err, ST_ERR_INVALID, "UCX_TLS '%s': %s", c->tls, ucs_status_string(s));
        goto err_cfg;
    }
    if (c->net_devices && (s = ucp_config_modify(uc, "NET_DEVICES", c->net_devices)) != UCS_OK) {
        st_error_set(err, ST_ERR_INVALID, "UCX_NET_DEVICES '%s': %s", c->net_devices,
                     ucs_status_string(s));
        goto err_cfg;
    }
    if (c->rndv_thresh) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)c->rndv_thresh);
        if ((s = ucp_config_modify(uc, "RNDV_THRESH", num)) != UCS_OK) {
            st_error_set(err, ST_ERR_INVALID, "UCX_RNDV_THRESH %s: %s", num, ucs_status_string(s));
            goto err_cfg;
        }
    }
    *out = uc;
    return ST_OK;
err_cfg:
    ucp_config_release(uc);
    return ST_ERR_INVALID;
}

/* Exported for the probe, which needs the same UCX configuration. */
st_status_t st_tp_ucx_init(const st_transport_config_t *c, uint64_t features,
                           st_error_t *err, ucp_context_h *out);
st_status_t st_tp_ucx_init(const st_transport_config_t *c, uint64_t features,
                           st_error_t *err, ucp_context_h *out)
{
    ucp_params_t params;
    ucp_config_t *uc = NULL;
    ucs_status_t s;
    st_status_t st;

    if ((st = ucx_config(c, err, &uc)) != ST_OK)
        return st;
    memset(&params, 0, sizeof(params));
    params.field_mask        = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED |
                               UCP_PARAM_FIELD_NAME;
    params.features          = features;
    params.mt_workers_shared = 0;
    params.name              = c->name ? c->name : "strata";
    s = ucp_init(&params, uc, out);
    ucp_config_release(uc);
    if (s != UCS_OK)
        return st_error_set(err, ST_ERR_BACKEND, "ucp_init: %s", ucs_status_string(s));
    return ST_OK;
}

st_status_t st_transport_create(const st_transport_config_t *cfg, st_error_t *err,
                                st_transport_t **out)
{
    ucp_worker_params_t wp;
    ucp_am_handler_param_t ap;
    ucp_context_attr_t ca;
    struct epoll_event ee;
    st_transport_t *t;
    uint64_t features = UCP_FEATURE_AM;
    ucs_status_t s;
    st_status_t st;

    if (!cfg || !out)
        return st_error_set(err, ST_ERR_INVALID, "st_transport_create: NULL argument");
    if ((st = config_check(cfg, err)) != ST_OK)
        return st;
    t = calloc(1, sizeof(*t));
    if (!t)
        return st_error_set(err, ST_ERR_NOMEM, "transport: out of memory");
    t->cfg = *cfg;
    t->cfg.tls = NULL;          /* the strings are used only here, not kept */
    t->cfg.net_devices = NULL;
    t->cfg.name = NULL;
    snprintf(t->name, sizeof(t->name), "%s", cfg->name ? cfg->name : "transport");
    t->efd = t->epfd = -1;

    st = ST_ERR_NOMEM;
    t->eps    = calloc(cfg->max_eps, sizeof(*t->eps));
    t->reqs   = calloc(cfg->max_sends, sizeof(*t->reqs));
    t->ev_cap = cfg->small_slots + cfg->large_slots + 2 * cfg->max_eps + 16;
    t->events = calloc(t->ev_cap, sizeof(*t->events));
    t->def_cap  = 4 * (cfg->small_slots + cfg->large_slots) + 64;
    t->deferred = calloc(t->def_cap, sizeof(*t->deferred));
    if (!t->eps || !t->reqs || !t->events || !t->deferred) {
        st_error_set(err, st, "transport: out of memory");
        goto err_free;
    }
    for (uint32_t i = 0; i < cfg->max_sends; i++) {
        t->reqs[i].t = t;
        t->reqs[i].next_free = i + 1 < cfg->max_sends ? i + 1 : UINT32_MAX;
    }
    t->req_free = 0;
    for (uint32_t i = 0; i < cfg->max_eps; i++)
        t->eps[i].t = t;

    /* Wakeup support costs nothing while polling (the sender only signals an
     * armed peer) but is not needed for pure busy-polling. */
    if (cfg->progress != ST_TRANSPORT_PROGRESS_BUSY)
        features |= UCP_FEATURE_WAKEUP;
    if ((st = st_tp_ucx_init(cfg, features, err, &t->ctx)) != ST_OK)
        goto err_free;

    ca.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
    if ((s = ucp_context_query(t->ctx, &ca)) != UCS_OK) {
        st = st_error_set(err, ST_ERR_BACKEND, "ucp_context_query: %s", ucs_status_string(s));
        goto err_ctx;
    }
    t->mem_types = ca.memory_types;

    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    if ((s = ucp_worker_create(t->ctx, &wp, &t->worker)) != UCS_OK) {
        st = st_error_set(err, ST_ERR_BACKEND, "ucp_worker_create: %s", ucs_status_string(s));
        goto err_ctx;
    }

    if (features & UCP_FEATURE_WAKEUP) {
        if ((s = ucp_worker_get_efd(t->worker, &t->efd)) != UCS_OK) {
            st = st_error_set(err, ST_ERR_BACKEND, "ucp_worker_get_efd: %s", ucs_status_string(s));
            goto err_worker;
        }
        t->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (t->epfd < 0) {
            st = st_error_set(err, ST_ERR_IO, "epoll_create1: %s", strerror(errno));
            goto err_worker;
        }
        memset(&ee, 0, sizeof(ee));
        ee.events = EPOLLIN;
        if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->efd, &ee) != 0) {
            st = st_error_set(err, ST_ERR_IO, "epoll_ctl: %s", strerror(errno));
            goto err_epoll;
        }
    }

    memset(&ap, 0, sizeof(ap));
    ap.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                    UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    ap.id    = ST_TRANSPORT_AM_ID;
    /* PERSISTENT_DATA: UCX hands us data it keeps until released, so an
     * arrival that finds every receive buffer busy can wait (UCS_INPROGRESS)
     * instead of being dropped; UCX copies the small inline messages of
     * shared memory into a descriptor for that. */
    ap.flags = UCP_AM_FLAG_WHOLE_MSG | UCP_AM_FLAG_PERSISTENT_DATA;
    ap.cb    = st_tp_am_handler;
    ap.arg   = t;
    if ((s = ucp_worker_set_am_recv_handler(t->worker, &ap)) != UCS_OK) {
        st = st_error_set(err, ST_ERR_BACKEND, "ucp_worker_set_am_recv_handler: %s",
                          ucs_status_string(s));
        goto err_epoll;
    }
    if ((st = st_tp_pools_create(t, err)) != ST_OK)
        goto err_epoll;
    t->last_activity_ns = st_now_ns();
    *out = t;
    return ST_OK;

err_epoll:
    if (t->epfd >= 0)
        close(t->epfd);
err_worker:
    ucp_worker_destroy(t->worker);
err_ctx:
    ucp_cleanup(t->ctx);
err_free:
    free(t->deferred);
    free(t->events);
    free(t->reqs);
    free(t->eps);
    free(t);
    return st;
}

void st_transport_destroy(st_transport_t *t)
{
    uint64_t deadline;

    if (!t)
        return;
    if (t->listener) {
        ucp_listener_destroy(t->listener);
        t->listener = NULL;
    }
    st_tp_eps_close_all(t);
    /* Give UCX a bounded time to finish the closes and sends in flight, so
     * their requests complete before the worker goes away. */
    deadline = st_now_ns() + ST_TRANSPORT_SEC;
    while (st_now_ns() < deadline) {
        int busy = 0;
        ucp_worker_progress(t->worker);
        st_tp_do_pending(t);
        for (uint32_t i = 0; i < t->cfg.max_eps; i++)
            busy |= t->eps[i].state != EP_FREE;
        for (uint32_t i = 0; i < t->cfg.max_sends; i++)
            busy |= t->reqs[i].in_use && !t->reqs[i].done;
        if (!busy)
            break;
    }
    st_tp_eps_abandon(t);
    /* Deferred arrivals still hold UCX descriptors. */
    while (t->def_count) {
        deferred_rx_t *d = &t->deferred[t->def_head];
        ucp_am_data_release(t->worker, d->data);
        t->def_head = (t->def_head + 1) % t->def_cap;
        t->def_count--;
    }
    st_tp_pools_destroy(t);
    if (t->self_addr)
        ucp_worker_release_address(t->worker, t->self_addr);
    if (t->epfd >= 0)
        close(t->epfd);
    ucp_worker_destroy(t->worker);
    ucp_cleanup(t->ctx);
    free(t->deferred);
    free(t->events);
    free(t->reqs);
    free(t->eps);
    free(t);
}

int st_tp_push_event(st_transport_t *t, const st_transport_event_t *ev)
{
    if (t->ev_count == t->ev_cap) {
        /* Sized for every receive buffer plus two events per endpoint, so
         * this means a broken invariant; never overwrite. */
        st_error(ST_TRANSPORT_MOD, "%s: event ring full (%u), dropping event %d",
                 t->name, t->ev_cap, ev->type);
        return -1;
    }
    t->events[(t->ev_head + t->ev_count) % t->ev_cap] = *ev;
    t->ev_count++;
    return 0;
}

void st_tp_drop_events(st_transport_t *t, st_transport_ep_t *ep)
{
    for (uint32_t i = 0; i < t->ev_count; i++) {
        st_transport_event_t *e = &t->events[(t->ev_head + i) % t->ev_cap];
        if (e->ep != ep)
            continue;
        if (e->type == ST_TRANSPORT_EV_RECV)
            st_transport_msg_release(t, e->msg);
        e->type = 0;      /* skipped by wait_event */
        e->ep = NULL;
    }
}

unsigned st_transport_progress(st_transport_t *t)
{
    /* One call, not a drain loop: the wait loops check for completions after
     * every call, which keeps an idle extra progress call off the latency
     * path (the caller loops anyway). */
    unsigned n = ucp_worker_progress(t->worker);

    if (ST_UNLIKELY(t->pending_work))
        st_tp_do_pending(t);
    return n;
}

/* Sleeps on the worker's event fd until something happens or timeout_ns. */
static void sleep_on_events(st_transport_t *t, uint64_t timeout_ns)
{
    struct epoll_event ee;
    ucs_status_t s;
    int ms;

    s = ucp_worker_arm(t->worker);
    if (s == UCS_ERR_BUSY)
        return;               /* events arrived meanwhile: progress again */
    if (s != UCS_OK) {
        st_warn(ST_TRANSPORT_MOD, "%s: ucp_worker_arm: %s", t->name, ucs_status_string(s));
        return;
    }
    ms = timeout_ns >= (uint64_t)1000 * 1000000 ? 1000 : (int)((timeout_ns + 999999) / 1000000);
    t->stats.sleeps++;
    (void)epoll_wait(t->epfd, &ee, 1, ms);    /* EINTR: just progress again */
}

st_status_t st_tp_wait(st_transport_t *t, int (*done)(void *), void *arg, uint64_t timeout_ns)
{
    uint64_t now = st_now_ns();
    uint64_t deadline = timeout_ns == ST_TRANSPORT_FOREVER || now + timeout_ns < now
                        ? UINT64_MAX : now + timeout_ns;
    unsigned idle = 0, busy = 0;

    for (;;) {
        if (st_transport_progress(t)) {
            idle = 0;
            t->active = 1;     /* the clock is read later, off the hot path */
            if (done(arg))
                return ST_OK;
            /* The deadline holds while UCX keeps reporting progress too:
             * a worker that reported some on every call would otherwise
             * keep this loop from returning, and its caller (a worker's
             * 2 ms turn to read its control connection) would never run
             * again. One clock read per 32 busy polls. */
            if ((++busy & 31) != 0)
                continue;
            now = st_now_ns();
            if (timeout_ns == 0 || now >= deadline)
                return ST_ERR_TIMEOUT;
            continue;
        }
        if (done(arg))
            return ST_OK;
        /* Read the clock only every 32 idle polls: it costs about as much as
         * an empty poll of a shared-memory worker. */
        if (timeout_ns != 0 && (++idle & 31) != 0)
            continue;
        now = st_now_ns();
        if (t->active) {
            t->last_activity_ns = now;
            t->active = 0;
        }
        if (timeout_ns == 0 || now >= deadline)
            return ST_ERR_TIMEOUT;
        if (t->cfg.progress == ST_TRANSPORT_PROGRESS_BUSY || t->epfd < 0)
            continue;
        if (t->cfg.progress == ST_TRANSPORT_PROGRESS_HYBRID &&
            now - t->last_activity_ns < t->cfg.spin_ns)
            continue;
        sleep_on_events(t, deadline - now);
        idle = 0;
    }
}

static int have_event(void *arg)
{
    st_transport_t *t = arg;

    /* Entries of closed endpoints were blanked; skip them. */
    while (t->ev_count && t->events[t->ev_head].type == 0) {
        t->ev_head = (t->ev_head + 1) % t->ev_cap;
        t->ev_count--;
    }
    return t->ev_count != 0;
}

st_status_t st_transport_wait_event(st_transport_t *t, uint64_t timeout_ns,
                                    st_transport_event_t *ev)
{
    st_status_t st;

    if (!have_event(t)) {
        st = st_tp_wait(t, have_event, t, timeout_ns);
        if (st != ST_OK)
            return st;
    }
    *ev = t->events[t->ev_head];
    t->ev_head = (t->ev_head + 1) % t->ev_cap;
    t->ev_count--;
    return ST_OK;
}

int st_transport_event_fd(const st_transport_t *t)
{
    return t->efd;
}

st_status_t st_transport_arm(st_transport_t *t)
{
    ucs_status_t s;

    if (t->efd < 0)
        return ST_ERR_UNSUPPORTED;
    if (t->ev_count)
        return ST_ERR_BUSY;
    s = ucp_worker_arm(t->worker);
    if (s == UCS_ERR_BUSY)
        return ST_ERR_BUSY;
    return s == UCS_OK ? ST_OK : ST_ERR_BACKEND;
}

void st_transport_get_stats(const st_transport_t *t, st_transport_stats_t *out)
{
    *out = t->stats;
}

ucp_worker_h st_transport_ucp_worker(const st_transport_t *t)
{
    return t->worker;
}
