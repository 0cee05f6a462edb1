/*
 * cluster.c - the coordinator's control plane (see st_cluster.h): accepts
 * and authenticates workers, computes the layer split, drives every worker
 * through PLAN -> LOADED -> CONNECT -> READY, watches heartbeats, and
 * re-plans after a worker is lost.
 *
 * All control sockets belong to one thread (the control thread) so the
 * worker table needs no lock of its own; what the engine's thread reads
 * (state, stage table, statistics) is under `lock`.
 */
#define _GNU_SOURCE   /* accept4, pipe2 */
#include "cluster_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include "st_log.h"
#include "st_util.h"

#define MOD "cluster"

/* Why a worker without the file gets no shard of an encrypted model. */
#define CL_ENC_NO_STREAM "the model is encrypted: give the worker the encrypted file and " \
                         "its key (--model, --key-file); weights are not streamed in the clear"

st_cluster_params_t st_cluster_default_params(void)
{
    st_cluster_params_t p;
    memset(&p, 0, sizeof(p));
    p.size = sizeof(p);
    p.listen = NULL;           /* create: 0.0.0.0:7700, local: 127.0.0.1:0 */
    p.data_listen = NULL;      /* create: 0.0.0.0:0, local: 127.0.0.1:0 */
    p.n_workers = 1;
    p.n_ctx = 2048;
    p.n_slots = 4;
    p.max_batch = 256;
    p.verify = 1;
    p.bind = 1;
    p.join_timeout_ms = 60000;
    p.load_timeout_ms = 300000;
    p.heartbeat_ms = 500;
    p.dead_after_ms = 3000;
    p.recover_wait_ms = 3000;
    p.spin_ns = 50000;
    p.respawn = 1;
    p.replan_on_join = 1;
    p.replan_wait_ms = 30000;
    p.kv_type = ST_KV_TYPE_DEFAULT;
    return p;
}

void cl_tlock(st_cluster_t *c)
{
    atomic_fetch_add(&c->tlock_wanted, 1);
    pthread_mutex_lock(&c->tlock);
    atomic_fetch_sub(&c->tlock_wanted, 1);
}

void cl_tunlock(st_cluster_t *c) { pthread_mutex_unlock(&c->tlock); }

static void wake(st_cluster_t *c)
{
    char b = 1;
    if (write(c->wake[1], &b, 1) < 0 && errno != EAGAIN)
        st_debug(MOD, "wake pipe: %s", strerror(errno));
}

static const char *state_name(cstate_t s)
{
    static const char *const n[] = {"waiting for workers", "loading a plan", "running",
                                    "recovering", "failed", "closed"};
    return n[s];
}

/* ---- workers ---------------------------------------------------------- */

static st_status_t wsend(st_cluster_t *c, wrec_t *w, st_ctrl_msg_t *m)
{
    st_error_t err;
    st_status_t st;
    st_error_clear(&err);
    m->epoch = c->epoch;
    st = st_ctrl_conn_send(w->cc, m, 2000, &err);
    if (st != ST_OK)
        st_warn(MOD, "worker %s: %s", w->name[0] ? w->name : w->peer, err.msg);
    return st;
}

static void set_wstate(wrec_t *w, wstate_t s)
{
    w->state = s;
    w->t_state = st_now_ns();
}

/* A worker is gone. If it held a stage of the live plan, the plan is lost. */
static void worker_lost(st_cluster_t *c, wrec_t *w, const char *why)
{
    int stage = w->stage;
    char name[ST_CTRL_NAME_MAX + ST_CTRL_ADDR_MAX + 8];

    snprintf(name, sizeof(name), "%s (%s)", w->name[0] ? w->name : "unauthenticated",
             w->peer);
    if (w->state >= W_IDLE)
        st_warn(MOD, "worker %s lost: %s", name, why);
    st_ctrl_conn_close(w->cc);
    memset(w, 0, sizeof(*w));
    w->stage = -1;
    if (stage < 0)
        return;
    pthread_mutex_lock(&c->lock);
    if (c->state == C_RUNNING || c->state == C_PLANNING) {
        cl_fail_locked(c, ST_ERR_PEER, "worker %s holding stage %d (layers %u..%u) is lost: %s",
                       name, stage, c->stages[stage].first, c->stages[stage].last, why);
        c->state = C_RECOVERING;
        c->recover_deadline = st_now_ns() + (uint64_t)c->p.recover_wait_ms * 1000000ull;
        snprintf(c->detail, sizeof(c->detail), "recovering: %.200s", c->fail_msg);
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
}

void cl_fail_locked(st_cluster_t *c, st_status_t status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail_msg, sizeof(c->fail_msg), fmt, ap);
    va_end(ap);
    c->fail_status = status;
    st_error(MOD, "%s", c->fail_msg);
    cl_data_fail_inflight_locked(c, status, c->fail_msg);
}

static uint32_t count_workers(const st_cluster_t *c, wstate_t at_least)
{
    uint32_t n = 0;
    for (int i = 0; i < CL_MAX_WORKERS; i++)
        n += c->workers[i].state >= at_least;
    return n;
}

static void on_accept(st_cluster_t *c)
{
    int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    wrec_t *w = NULL;

    if (fd < 0)
        return;
    for (int i = 0; i < CL_MAX_WORKERS; i++)
        if (c->workers[i].state == W_FREE) {
            w = &c->workers[i];
            break;
        }
    if (!w) {
        st_warn(MOD, "too many workers connected (%d); refusing one", CL_MAX_WORKERS);
        close(fd);
        return;
    }
    memset(w, 0, sizeof(*w));
    w->stage = -1;
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char tmp[ST_CTRL_ADDR_MAX] = "?";
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
            char host[64];
            uint16_t port = 0;
            if (ss.ss_family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *)&ss;
                inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                port = ntohs(in->sin_port);
                snprintf(tmp, sizeof(tmp), "%s:%u", host, port);
            }
        }
        snprintf(w->peer, sizeof(w->peer), "%s", tmp);
    }
    if (st_ctrl_conn_open(fd, &w->cc) != ST_OK) {
        close(fd);
        return;
    }
    set_wstate(w, W_AUTH);
    w->last_seen = st_now_ns();
}

static void refuse(st_cluster_t *c, wrec_t *w, st_status_t st, const char *text)
{
    st_ctrl_msg_t m;
    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_REFUSE;
    m.u.refuse.status = st;
    snprintf(m.u.refuse.text, sizeof(m.u.refuse.text), "%s", text);
    (void)wsend(c, w, &m);
    st_ctrl_conn_close(w->cc);
    memset(w, 0, sizeof(*w));
    w->stage = -1;
}

static void on_auth_msg(st_cluster_t *c, wrec_t *w, const st_ctrl_msg_t *m)
{
    st_ctrl_msg_t out;
    uint8_t mac[ST_CTRL_MAC];

    if (!w->hello_seen) {
        if (m->type != ST_CTRL_HELLO) {
            st_error(MOD, "connection from %s: expected HELLO, got %s; closing", w->peer,
                     st_ctrl_type_name(m->type));
            refuse(c, w, ST_ERR_PROTOCOL, "expected HELLO");
            return;
        }
        w->hello_seen = 1;
        snprintf(w->name, sizeof(w->name), "%s", m->u.hello.name);
        snprintf(w->host, sizeof(w->host), "%s", m->u.hello.host);
        memcpy(w->wnonce, m->u.hello.nonce, ST_CTRL_NONCE);
        w->mem_bytes = m->u.hello.mem_bytes;
        w->n_cpus = m->u.hello.n_cpus;
        w->pid = m->u.hello.pid;
        if (st_ctrl_random(w->cnonce, ST_CTRL_NONCE) != ST_OK) {
            refuse(c, w, ST_ERR_BACKEND, "coordinator has no random source");
            return;
        }
        memset(&out, 0, sizeof(out));
        out.type = ST_CTRL_CHALLENGE;
        memcpy(out.u.challenge.nonce, w->cnonce, ST_CTRL_NONCE);
        st_ctrl_proof(c->p.secret, c->p.secret_len, "strata-coord", w->wnonce, w->cnonce,
                      NULL, out.u.challenge.proof);
        (void)wsend(c, w, &out);
        return;
    }
    if (m->type != ST_CTRL_AUTH) {
        refuse(c, w, ST_ERR_PROTOCOL, "expected AUTH");
        return;
    }
    st_ctrl_proof(c->p.secret, c->p.secret_len, "strata-worker", w->cnonce, w->wnonce,
                  w->name, mac);
    if (!st_ctrl_mac_equal(mac, m->u.auth.mac)) {
        st_error(MOD, "worker '%s' from %s (host %s) refused: it does not know the cluster "
                 "secret", w->name, w->peer, w->host);
        refuse(c, w, ST_ERR_AUTH, "authentication failed: wrong cluster secret");
        return;
    }
    for (int i = 0; i < CL_MAX_WORKERS; i++) {
        const wrec_t *o = &c->workers[i];
        if (o != w && o->state >= W_IDLE && strcmp(o->name, w->name) == 0) {
            st_error(MOD, "worker '%s' from %s refused: the name is in use", w->name, w->peer);
            refuse(c, w, ST_ERR_BUSY, "a worker with this name is already joined");
            return;
        }
    }
    w->id = ++c->next_worker_id;
    set_wstate(w, W_IDLE);
    c->joined_since_fail = 1;
    memset(&out, 0, sizeof(out));
    out.type = ST_CTRL_WELCOME;
    out.u.welcome.worker_id = w->id;
    out.u.welcome.heartbeat_ms = c->p.heartbeat_ms;
    (void)wsend(c, w, &out);
    st_info(MOD, "worker %s joined from %s (host %s, %u cpus, %.1f GB available)", w->name,
            w->peer, w->host, w->n_cpus, (double)w->mem_bytes / 1e9);
}

static void plan_failed(st_cluster_t *c, st_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void plan_failed(st_cluster_t *c, st_status_t st, const char *fmt, ...)
{
    char msg[ST_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->lock);
    cl_fail_locked(c, st, "%s", msg);
    c->state = C_FAILED;
    snprintf(c->detail, sizeof(c->detail), "failed: %.240s", msg);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < CL_MAX_WORKERS; i++)
        if (c->workers[i].state > W_IDLE) {
            set_wstate(&c->workers[i], W_IDLE);
            c->workers[i].stage = -1;
        }
}

/* Answers a SHARD_REQUEST of a worker without the model file: the header
 * and metadata, or the requested tensor ranges, in chunks of one control
 * frame read straight from this process's mapping (no copy of the file is
 * made; pages are read once per chunk). Runs on the control thread: other
 * workers' messages wait in their sockets meanwhile, which is fine while a
 * shard takes well under dead_after_ms (on loopback, 60 MB in a fraction of
 * a second; see docs/CLUSTER.md) and is why streaming is a fallback for
 * hosts without the file, not how large models should reach many workers. */
static void serve_shard(st_cluster_t *c, wrec_t *w, const st_ctrl_shard_request_t *rq)
{
    const st_gguf_t *g = st_model_gguf(c->model);
    const uint8_t *base = st_gguf_base(g);
    uint64_t total = 0, sent = 0, t0 = st_now_ns();
    st_ctrl_range_t header = {0, st_gguf_data_offset(g)};
    const st_ctrl_range_t *r = rq->header ? &header : rq->r;
    uint32_t n = rq->header ? 1 : rq->n;
    st_ctrl_msg_t *out = malloc(sizeof(*out));
    st_error_t err;
    st_status_t st;
    int refused;

    if (!out) {
        worker_lost(c, w, "out of memory for a shard request");
        return;
    }
    st_error_clear(&err);
    memset(out, 0, sizeof(*out));
    /* An encrypted model's plaintext would cross the control connection,
     * which has no TLS: refused whatever was asked (header included). */
    if (c->encrypted)
        st = st_error_set(&err, ST_ERR_UNSUPPORTED, "%s", CL_ENC_NO_STREAM);
    else if (w->state != W_LOADING)
        st = st_error_set(&err, ST_ERR_PROTOCOL, "shard request outside loading");
    else
        st = st_ctrl_shard_check_request(rq, c->model_size, header.len, &total, &err);
    refused = st != ST_OK;
    for (uint32_t i = 0; i < n && st == ST_OK; i++)
        for (uint64_t off = r[i].offset; off < r[i].offset + r[i].len && st == ST_OK;) {
            uint64_t len = ST_MIN(r[i].offset + r[i].len - off, (uint64_t)ST_CTRL_SHARD_CHUNK);
            out->type = ST_CTRL_SHARD_DATA;
            out->u.shard_data.offset = off;
            out->u.shard_data.len = (uint32_t)len;
            out->u.shard_data.data = base + off;
            st = wsend(c, w, out);
            off += len;
            sent += len;
        }
    memset(out, 0, sizeof(*out));
    if (refused) {
        st_error(MOD, "worker %s (host %s) asked for its shard: %s; refusing it", w->name,
                 w->host, err.msg);
        snprintf(out->u.shard_end.error, sizeof(out->u.shard_end.error), "%s", err.msg);
    } else if (st != ST_OK) {
        free(out);
        worker_lost(c, w, "control connection failed while streaming its shard");
        return;
    }
    out->type = ST_CTRL_SHARD_END;
    out->u.shard_end.status = st;
    out->u.shard_end.total = sent;
    if (wsend(c, w, out) != ST_OK) {
        free(out);
        worker_lost(c, w, "control connection failed while streaming its shard");
        return;
    }
    free(out);
    if (st == ST_OK) {
        double s = (double)(st_now_ns() - t0) / 1e9;
        st_info(MOD, "worker %s: streamed %s%.1f MB of the model in %.3f s (%.1f MB/s)",
                w->name, rq->header ? "the header, " : "", (double)sent / 1e6, s,
                s > 0 ? (double)sent / 1e6 / s : 0.0);
    }
}

static void on_worker_msg(st_cluster_t *c, wrec_t *w, const st_ctrl_msg_t *m)
{
    w->last_seen = st_now_ns();
    if (w->state == W_AUTH) {
        on_auth_msg(c, w, m);
        return;
    }
    switch (m->type) {
    case ST_CTRL_HEARTBEAT:
        w->rss = m->u.heartbeat.rss_bytes;
        w->rss_peak = m->u.heartbeat.rss_peak_bytes;
        w->hb_count++;
        return;
    case ST_CTRL_LOADED:
        if (w->state != W_LOADING || m->epoch != c->epoch)
            return;                      /* answer to a superseded plan */
        if (m->u.loaded.status != ST_OK) {
            plan_failed(c, m->u.loaded.status, "worker %s could not load stage %d: %s",
                        w->name, w->stage, m->u.loaded.error);
            return;
        }
        snprintf(w->data_addr, sizeof(w->data_addr), "%s", m->u.loaded.data_addr);
        w->rss = m->u.loaded.rss_bytes;
        w->load_ns = m->u.loaded.load_ns;
        set_wstate(w, W_LOADED);
        st_info(MOD, "worker %s loaded stage %d in %.2f s (%.1f MB weights, %.1f MB KV, "
                "RSS %.1f MB)", w->name, w->stage,
                (double)m->u.loaded.load_ns / 1e9, (double)m->u.loaded.weight_bytes / 1e6,
                (double)m->u.loaded.kv_bytes / 1e6, (double)w->rss / 1e6);
        return;
    case ST_CTRL_READY:
        if (w->state != W_CONNECTING || m->epoch != c->epoch)
            return;
        if (m->u.ready.status != ST_OK) {
            plan_failed(c, m->u.ready.status, "worker %s (stage %d) could not connect the "
                        "data plane: %s", w->name, w->stage, m->u.ready.error);
            return;
        }
        set_wstate(w, W_READY);
        return;
    case ST_CTRL_SHARD_REQUEST:
        if (m->epoch != c->epoch)
            return;                      /* for a superseded plan */
        serve_shard(c, w, &m->u.shard_request);
        return;
    case ST_CTRL_LEAVE:
        worker_lost(c, w, m->u.leave.text[0] ? m->u.leave.text : "it left");
        return;
    default:
        st_error(MOD, "worker %s sent an unexpected %s; closing it", w->name,
                 st_ctrl_type_name(m->type));
        worker_lost(c, w, "protocol error");
        return;
    }
}

static void read_worker(st_cluster_t *c, wrec_t *w)
{
    st_ctrl_msg_t *m = malloc(sizeof(*m));
    if (!m)
        return;
    for (int k = 0; k < 64 && w->state != W_FREE; k++) {
        st_error_t err;
        st_status_t st;
        st_error_clear(&err);
        st = st_ctrl_conn_recv(w->cc, 0, m, &err);
        if (st == ST_ERR_TIMEOUT)
            break;
        if (st != ST_OK) {
            if (st == ST_ERR_PROTOCOL || st == ST_ERR_FORMAT)
                st_error(MOD, "connection from %s (%s): %s; closing it", w->peer,
                         w->name[0] ? w->name : "not authenticated", err.msg);
            worker_lost(c, w, st == ST_ERR_CLOSED ? "control connection closed" : err.msg);
            break;
        }
        on_worker_msg(c, w, m);
    }
    free(m);
}

/* ---- planning ------------------------------------------------------------ */

static int cmp_name(const void *a, const void *b)
{
    const wrec_t *x = *(wrec_t *const *)a, *y = *(wrec_t *const *)b;
    return strcmp(x->name, y->name);
}

static void send_plan(st_cluster_t *c, uint32_t s)
{
    wrec_t *w = &c->workers[c->stages[s].worker];
    const st_ctrl_tensor_hash_t *hs[ST_CTRL_MAX_LAYERS];
    uint32_t n = c->p.verify ? cl_stage_tensors(c, c->stages[s].first, c->stages[s].last, hs,
                                             ST_ARRAY_SIZE(hs)) : 0;
    st_ctrl_msg_t *m = calloc(1, sizeof(*m));
    st_ctrl_plan_t *pl;

    if (!m)
        return;
    pl = &m->u.plan;
    m->type = ST_CTRL_PLAN;
    pl->stage = s;
    pl->n_stages = c->n_stages;
    pl->first_layer = c->stages[s].first;
    pl->last_layer = c->stages[s].last;
    pl->n_layer = c->n_layer;
    pl->n_ctx = c->p.n_ctx;
    pl->n_slots = c->p.n_slots;
    pl->max_batch = c->p.max_batch;
    pl->n_threads = c->p.n_threads;
    pl->kv_type = c->p.kv_type;
    pl->prefix_blocks = c->prefix_blocks;
    pl->prefix_block = ST_PREFIX_BLOCK;
    pl->flags = (c->p.verify ? ST_CTRL_PLAN_VERIFY : 0) | (c->p.bind ? ST_CTRL_PLAN_BIND : 0);
    pl->n_manifest = n;
    pl->model_size = c->model_size;
    for (uint32_t k = 0; k < c->n_stages; k++)
        if (!strcmp(c->workers[c->stages[k].worker].host, w->host)) {
            if (k < s)
                pl->host_rank++;
            pl->host_workers++;
        }
    snprintf(pl->model_path, sizeof(pl->model_path), "%s",
             c->p.worker_model_path ? c->p.worker_model_path : c->p.model_path);
    snprintf(pl->transport_tls, sizeof(pl->transport_tls), "%s",
             c->p.transport_tls ? c->p.transport_tls : "");
    w->stage = (int)s;
    set_wstate(w, W_LOADING);
    if (wsend(c, w, m) == ST_OK) {
        for (uint32_t i = 0; i < n; i += ST_CTRL_MANIFEST_BATCH) {
            uint32_t k = ST_MIN(n - i, (uint32_t)ST_CTRL_MANIFEST_BATCH);
            memset(m, 0, sizeof(*m));
            m->type = ST_CTRL_MANIFEST;
            m->u.manifest.n = k;
            for (uint32_t j = 0; j < k; j++)
                m->u.manifest.e[j] = *hs[i + j];
            if (wsend(c, w, m) != ST_OK)
                break;
        }
    }
    free(m);
}

static void start_plan(st_cluster_t *c)
{
    wrec_t *cand[CL_MAX_WORKERS];
    uint32_t n = 0;
    st_error_t err;
    st_status_t st;

    for (int i = 0; i < CL_MAX_WORKERS; i++) {
        wrec_t *w = &c->workers[i];
        if (w->state >= W_IDLE) {
            set_wstate(w, W_IDLE);
            w->stage = -1;
            cand[n++] = w;
        }
    }
    qsort(cand, n, sizeof(cand[0]), cmp_name);
    c->joined_since_fail = 0;
    cl_tlock(c);
    cl_data_reset(c);
    cl_tunlock(c);
    pthread_mutex_lock(&c->lock);
    c->epoch++;
    c->draining = 0;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    st_error_clear(&err);
    st = n ? cl_compute_split(c, cand, n, &err)
           : st_error_set(&err, ST_ERR_RANGE, "no worker is available");
    if (st != ST_OK) {
        plan_failed(c, st, "cannot plan the model over %u worker(s): %s", n, err.msg);
        return;
    }
    pthread_mutex_lock(&c->lock);
    c->state = C_PLANNING;
    c->plan_deadline = st_now_ns() + (uint64_t)c->p.load_timeout_ms * 1000000ull;
    {
        int off = snprintf(c->detail, sizeof(c->detail), "epoch %u:", c->epoch);
        for (uint32_t s = 0; s < c->n_stages && off > 0 && (size_t)off < sizeof(c->detail); s++)
            off += snprintf(c->detail + off, sizeof(c->detail) - (size_t)off, " %s[%u,%u)",
                            c->workers[c->stages[s].worker].name, c->stages[s].first,
                            c->stages[s].last);
    }
    pthread_mutex_unlock(&c->lock);
    st_info(MOD, "plan %s", c->detail);
    for (uint32_t s = 0; s < c->n_stages; s++)
        send_plan(c, s);
}

/* PLANNING: when every stage is loaded, wire the pipeline; when every stage
 * is connected (and we are connected to stage 0), serve. */
static void advance_plan(st_cluster_t *c)
{
    uint32_t loaded = 0, ready = 0;

    for (uint32_t s = 0; s < c->n_stages; s++) {
        wstate_t ws = c->workers[c->stages[s].worker].state;
        loaded += ws == W_LOADED;
        ready += ws == W_READY;
    }
    if (loaded == c->n_stages) {
        st_error_t err;
        st_error_clear(&err);
        cl_tlock(c);
        st_status_t st = st_transport_connect(c->t, c->workers[c->stages[0].worker].data_addr,
                                              NULL, &err, &c->ep_first);
        cl_tunlock(c);
        if (st != ST_OK) {
            plan_failed(c, st, "cannot connect to stage 0 (worker %s): %s",
                        c->workers[c->stages[0].worker].name, err.msg);
            return;
        }
        for (uint32_t s = 0; s < c->n_stages; s++) {
            wrec_t *w = &c->workers[c->stages[s].worker];
            st_ctrl_msg_t m;
            memset(&m, 0, sizeof(m));
            m.type = ST_CTRL_CONNECT;
            snprintf(m.u.connect.next_addr, sizeof(m.u.connect.next_addr), "%s",
                     s + 1 < c->n_stages ? c->workers[c->stages[s + 1].worker].data_addr
                                         : c->data_addr);
            set_wstate(w, W_CONNECTING);
            (void)wsend(c, w, &m);
        }
        return;
    }
    if (ready == c->n_stages) {
        st_status_t st;
        cl_tlock(c);
        st = c->ep_first ? st_transport_ep_status(c->ep_first) : ST_ERR_CLOSED;
        cl_tunlock(c);
        if (st == ST_INPROGRESS)
            return;
        if (st != ST_OK) {
            plan_failed(c, st, "the data connection to stage 0 failed: %s", st_status_str(st));
            return;
        }
        pthread_mutex_lock(&c->lock);
        c->state = C_RUNNING;
        c->ever_ran = 1;
        if (!c->depth)
            c->depth = c->n_stages;
        c->fail_msg[0] = '\0';
        c->fail_status = ST_OK;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        st_info(MOD, "cluster running: %s", c->detail);
        return;
    }
    if (st_now_ns() > c->plan_deadline)
        plan_failed(c, ST_ERR_TIMEOUT, "plan epoch %u was not loaded and connected within "
                    "%u ms", c->epoch, c->p.load_timeout_ms);
}

/* ---- the control thread -------------------------------------------------- */

/* A worker joined a running cluster: hold new sequences, wait for a safe
 * point (nothing in flight, no pending setup, quiet for CL_QUIET_MS), then
 * re-plan over everyone. Past replan_wait_ms the running sequences are cut
 * off: the re-plan goes ahead and their next step fails with the reason. */
static void replan_on_join(st_cluster_t *c)
{
    uint64_t now = st_now_ns();
    uint32_t busy = 0;
    int go = 0;

    pthread_mutex_lock(&c->lock);
    if (!c->draining) {
        c->draining = 1;
        c->drain_deadline = now + (uint64_t)c->p.replan_wait_ms * 1000000ull;
        st_info(MOD, "a worker joined: holding new sequences until the running ones finish, "
                "then re-planning over %u worker(s)", count_workers(c, W_IDLE));
    }
    for (int i = 0; i < ST_CTRL_MAX_STAGES; i++)
        busy += c->recs[i].state == R_INFLIGHT;
    for (uint32_t s = 0; s < c->p.n_slots; s++)
        busy += c->slots[s].pending != 0;
    if (!busy && now - c->last_activity >= CL_QUIET_MS * 1000000ull) {
        snprintf(c->replan_why, sizeof(c->replan_why), "re-planned because a worker joined");
        go = 1;
    } else if (now >= c->drain_deadline) {
        snprintf(c->replan_why, sizeof(c->replan_why), "re-planned because a worker joined; "
                 "the sequence did not finish within %u ms", c->p.replan_wait_ms);
        st_warn(MOD, "re-plan after a join: sequences still running after %u ms fail",
                c->p.replan_wait_ms);
        cl_data_fail_inflight_locked(c, ST_ERR_TIMEOUT, c->replan_why);
        go = 1;
    }
    if (go) {
        /* Under the same lock as the check: a submit now waits for the plan. */
        c->state = C_PLANNING;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
    if (go)
        start_plan(c);
}


static void check_timeouts(st_cluster_t *c)
{
    uint64_t now = st_now_ns();
    for (int i = 0; i < CL_MAX_WORKERS; i++) {
        wrec_t *w = &c->workers[i];
        uint64_t limit;
        if (w->state == W_FREE)
            continue;
        /* Loading a large model sends no heartbeats: it has its own limit. */
        limit = w->state == W_LOADING ? c->p.load_timeout_ms
              : w->state == W_AUTH ? 10000u : c->p.dead_after_ms;
        if (now - w->last_seen > limit * 1000000ull) {
            char why[96];
            snprintf(why, sizeof(why), "no message for %u ms", (unsigned)limit);
            worker_lost(c, w, why);
        }
    }
}

static void *control_main(void *arg)
{
    st_cluster_t *c = arg;
    struct pollfd pfd[CL_MAX_WORKERS + 2];
    int who[CL_MAX_WORKERS + 2];

    while (!atomic_load(&c->stop)) {
        int n = 0, timeout;
        cstate_t cs;

        pfd[n].fd = c->wake[0];
        pfd[n].events = POLLIN;
        who[n++] = -1;
        pfd[n].fd = c->listen_fd;
        pfd[n].events = POLLIN;
        who[n++] = -2;
        for (int i = 0; i < CL_MAX_WORKERS; i++)
            if (c->workers[i].state != W_FREE) {
                pfd[n].fd = st_ctrl_conn_fd(c->workers[i].cc);
                pfd[n].events = POLLIN;
                who[n++] = i;
            }
        pthread_mutex_lock(&c->lock);
        cs = c->state;
        pthread_mutex_unlock(&c->lock);
        /* While a plan is being wired the coordinator's transport must be
         * progressed promptly (the last stage connects to it). */
        timeout = cs == C_PLANNING ? 2 : 50;
        if (poll(pfd, (nfds_t)n, timeout) > 0) {
            for (int k = 0; k < n; k++) {
                if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                if (who[k] == -1) {
                    char buf[64];
                    while (read(c->wake[0], buf, sizeof(buf)) > 0)
                        ;
                } else if (who[k] == -2) {
                    on_accept(c);
                } else {
                    read_worker(c, &c->workers[who[k]]);
                }
            }
        }
        check_timeouts(c);
        cl_local_check(c);

        if (cs == C_PLANNING || cs == C_RECOVERING || cs == C_WAITING) {
            /* The engine thread does not poll the transport now. */
            st_transport_event_t ev;
            if (atomic_load(&c->tlock_wanted) == 0 || cs == C_PLANNING) {
                cl_tlock(c);
                for (int k = 0; k < 32 && st_transport_wait_event(c->t, 0, &ev) == ST_OK; k++)
                    cl_data_event(c, &ev);
                cl_tunlock(c);
            }
        }
        pthread_mutex_lock(&c->lock);
        cs = c->state;
        pthread_mutex_unlock(&c->lock);
        switch (cs) {
        case C_WAITING:
            if (count_workers(c, W_IDLE) >= c->target_workers)
                start_plan(c);
            break;
        case C_PLANNING:
            advance_plan(c);
            break;
        case C_RECOVERING:
            if (count_workers(c, W_IDLE) >= c->target_workers ||
                st_now_ns() >= c->recover_deadline) {
                if (count_workers(c, W_IDLE) > 0)
                    start_plan(c);
                else if (st_now_ns() >= c->recover_deadline) {
                    pthread_mutex_lock(&c->lock);
                    c->state = C_FAILED;
                    snprintf(c->detail, sizeof(c->detail), "failed: no worker left");
                    pthread_cond_broadcast(&c->cond);
                    pthread_mutex_unlock(&c->lock);
                }
            }
            break;
        case C_RUNNING:
            if (c->p.replan_on_join && c->joined_since_fail)
                replan_on_join(c);
            break;
        case C_FAILED:
            /* After a successful start, a new or returning worker gets a
             * new plan over everyone available. */
            if (c->ever_ran && c->joined_since_fail) {
                c->joined_since_fail = 0;
                start_plan(c);
            }
            break;
        default:
            break;
        }
    }
    return NULL;
}

/* ---- create / free ---------------------------------------------------- */

st_status_t cl_start(const st_cluster_params_t *params, st_cluster_t **out, st_error_t *err)
{
    st_cluster_t *c;
    const st_hparams_t *hp;
    st_status_t st;

    if (!params || params->size < sizeof(*params) || !params->model_path)
        return st_error_set(err, ST_ERR_INVALID, "cluster: missing parameters or model path");
    if (params->secret_len < ST_CTRL_SECRET_MIN)
        return st_error_set(err, ST_ERR_AUTH, "cluster: a secret of at least %d bytes is "
                            "required", ST_CTRL_SECRET_MIN);
    if (params->n_workers == 0 || params->n_workers > ST_CTRL_MAX_STAGES ||
        params->n_slots == 0 || params->n_slots > ST_CTRL_MAX_SLOTS || params->n_ctx == 0 ||
        params->n_ctx > ST_CTRL_MAX_CTX || params->max_batch == 0 ||
        params->max_batch > ST_CTRL_MAX_BATCH || params->heartbeat_ms < 10)
        return st_error_set(err, ST_ERR_RANGE, "cluster: n_workers must be 1..%d and n_ctx, "
                            "n_slots, max_batch, heartbeat_ms within limits", ST_CTRL_MAX_STAGES);
    if (!st_kv_type_valid(params->kv_type))
        return st_error_set(err, ST_ERR_INVALID, "cluster: KV cache type %u is not one of %s",
                            params->kv_type, ST_KV_TYPE_NAMES);
    c = calloc(1, sizeof(*c));
    if (!c)
        return st_error_set(err, ST_ERR_NOMEM, "cluster: out of memory");
    c->p = *params;
    c->p.max_batch = ST_MAX(c->p.max_batch, c->p.n_slots);
    /* Own the strings: the caller's may not outlive the cluster. */
    snprintf(c->path_copy[0], ST_CTRL_PATH_MAX, "%s", params->model_path);
    c->p.model_path = c->path_copy[0];
    if (params->worker_model_path) {
        snprintf(c->path_copy[1], ST_CTRL_PATH_MAX, "%s", params->worker_model_path);
        c->p.worker_model_path = c->path_copy[1];
    }
    snprintf(c->path_copy[2], ST_CTRL_PATH_MAX, "%s",
             params->data_listen ? params->data_listen : "0.0.0.0:0");
    c->p.data_listen = c->path_copy[2];
    if (params->split) {
        snprintf(c->split_copy, sizeof(c->split_copy), "%s", params->split);
        c->p.split = c->split_copy;
    }
    if (params->transport_tls) {
        snprintf(c->tls_copy, sizeof(c->tls_copy), "%s", params->transport_tls);
        c->p.transport_tls = c->tls_copy;
    }
    if (params->key_file) {
        snprintf(c->key_copy, sizeof(c->key_copy), "%s", params->key_file);
        c->p.key_file = c->key_copy;
    }
    c->p.listen = NULL;
    c->p.strata_bin = NULL;
    c->p.worker_log = NULL;
    c->listen_fd = -1;
    c->wake[0] = c->wake[1] = -1;
    c->target_workers = params->n_workers;
    for (int i = 0; i < CL_MAX_WORKERS; i++)
        c->workers[i].stage = -1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    pthread_mutex_init(&c->tlock, NULL);
    snprintf(c->detail, sizeof(c->detail), "waiting for %u worker(s)", params->n_workers);

    st = cl_open_model(c, err);
    if (st != ST_OK)
        goto err;
    hp = st_model_hparams(c->model);
    c->n_layer = hp->n_layer;
    c->n_embd = hp->n_embd;
    c->n_vocab = hp->n_vocab;
    c->model_size = st_gguf_file_size(st_model_gguf(c->model));
    c->prefix_blocks = st_stage_prefix_blocks_for(c->model, c->p.kv_type,
                                                  c->p.prefix_cache_bytes, ST_PREFIX_BLOCK);
    if (c->p.verify) {
        st = cl_compute_manifest(c, err);
        if (st != ST_OK)
            goto err;
    }
    st = cl_data_init(c, err);
    if (st != ST_OK)
        goto err;
    st = st_ctrl_listen(params->listen ? params->listen : "0.0.0.0:7700", &c->listen_fd, err);
    if (st != ST_OK)
        goto err;
    if (st_ctrl_local_addr(c->listen_fd, c->listen_addr, sizeof(c->listen_addr)) != ST_OK)
        snprintf(c->listen_addr, sizeof(c->listen_addr), "%s", params->listen);
    if (pipe2(c->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        st = st_error_set(err, ST_ERR_IO, "cluster: pipe: %s", strerror(errno));
        goto err;
    }
    if (pthread_create(&c->thread, NULL, control_main, c) != 0) {
        st = st_error_set(err, ST_ERR_NOMEM, "cluster: cannot start the control thread");
        goto err;
    }
    c->thread_started = 1;
    st_info(MOD, "coordinator listening on %s for %u worker(s) (data plane by UCX worker "
            "address, no listener)", c->listen_addr, params->n_workers);
    *out = c;
    return ST_OK;
err:
    st_cluster_free(c);
    return st;
}

st_status_t cl_wait_running(st_cluster_t *c, uint64_t join_ms, uint64_t load_ms, st_error_t *err)
{
    uint64_t t0 = st_now_ns(), join_end = t0 + join_ms * 1000000ull;
    uint64_t deadline = join_end + load_ms * 1000000ull, timeout_ms = join_ms + load_ms;
    st_status_t st = ST_OK;

    pthread_mutex_lock(&c->lock);
    while (c->state != C_RUNNING && c->state != C_FAILED) {
        struct timespec ts;
        uint64_t now = st_now_ns();
        /* Too few workers joined in time: say so now, not after the load
         * timeout as well. */
        if (now >= deadline || (c->state == C_WAITING && now >= join_end)) {
            timeout_ms = (now - t0) / 1000000ull;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cond, &c->lock, &ts);
    }
    if (c->state == C_FAILED)
        st = st_error_set(err, c->fail_status < 0 ? c->fail_status : ST_ERR_INTERNAL, "%s",
                          c->fail_msg);
    else if (c->state != C_RUNNING)
        st = st_error_set(err, ST_ERR_TIMEOUT, "cluster not ready after %llu ms (%s: %s; %u of "
                          "%u worker(s) joined)", (unsigned long long)timeout_ms,
                          state_name(c->state), c->detail,
                          count_workers(c, W_IDLE), c->target_workers);
    pthread_mutex_unlock(&c->lock);
    return st;
}

st_status_t st_cluster_create(const st_cluster_params_t *p, st_cluster_t **out, st_error_t *err)
{
    st_cluster_t *c;
    st_status_t st = cl_start(p, &c, err);
    if (st != ST_OK)
        return st;
    st = cl_wait_running(c, p->join_timeout_ms, p->load_timeout_ms, err);
    if (st != ST_OK) {
        st_cluster_free(c);
        return st;
    }
    *out = c;
    return ST_OK;
}

const char *st_cluster_address(const st_cluster_t *c) { return c->listen_addr; }

void st_cluster_free(st_cluster_t *c)
{
    if (!c)
        return;
    if (c->thread_started) {
        atomic_store(&c->stop, 1);
        wake(c);
        pthread_join(c->thread, NULL);
    }
    pthread_mutex_lock(&c->lock);
    c->state = C_CLOSED;
    cl_data_fail_inflight_locked(c, ST_ERR_CLOSED, "cluster is shutting down");
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    /* Drain: every worker is told to leave and given a moment to say so. */
    for (int i = 0; i < CL_MAX_WORKERS; i++) {
        wrec_t *w = &c->workers[i];
        st_ctrl_msg_t m;
        if (w->state < W_IDLE)
            continue;
        memset(&m, 0, sizeof(m));
        m.type = ST_CTRL_DRAIN;
        (void)wsend(c, w, &m);
    }
    for (int i = 0; i < CL_MAX_WORKERS; i++) {
        wrec_t *w = &c->workers[i];
        st_ctrl_msg_t *m;
        uint64_t deadline = st_now_ns() + 2000000000ull;
        if (w->state == W_FREE)
            continue;
        m = malloc(sizeof(*m));
        while (m && w->state >= W_IDLE && st_now_ns() < deadline) {
            st_status_t st = st_ctrl_conn_recv(w->cc, 100, m, NULL);
            if (st == ST_OK && m->type == ST_CTRL_LEAVE)
                break;
            if (st != ST_OK && st != ST_ERR_TIMEOUT)
                break;
        }
        free(m);
        st_ctrl_conn_close(w->cc);
        memset(w, 0, sizeof(*w));
    }
    cl_local_stop(c);
    cl_data_fini(c);
    if (c->listen_fd >= 0)
        close(c->listen_fd);
    if (c->wake[0] >= 0)
        close(c->wake[0]);
    if (c->wake[1] >= 0)
        close(c->wake[1]);
    st_model_close(c->model);
    free(c->manifest);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->tlock);
    free(c);
}
