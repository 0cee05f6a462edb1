/*
 * daemon.c - the worker runtime (see st_worker.h): session with the
 * coordinator, loading a layer range, and serving micro-batches.
 *
 * One thread does the work: the transport is single-threaded, and a stage
 * computes one micro-batch at a time anyway. The loop waits on the
 * transport for a few milliseconds, then looks at the control socket
 * without blocking. Heartbeats come from a second thread, so that a long
 * forward pass or a busy pipeline (dozens of micro-batches back to back on
 * a loaded machine, measured: >3 s without a pause) never looks like a
 * dead worker; sends on the control socket are serialised by send_lock.
 */
#include "daemon_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_crypt.h"
#include "st_log.h"
#include "st_model.h"
#include "st_stage.h"
#include "st_transport.h"
#include "st_util.h"
#ifdef ST_WORKER_HAVE_TOPO
#include "st_topo.h"
#endif



st_worker_params_t st_worker_default_params(void)
{
    st_worker_params_t p;
    memset(&p, 0, sizeof(p));
    p.size = sizeof(p);
    p.data_listen = "0.0.0.0:0";
    p.bind = 1;
    p.join_timeout_ms = 30000;
    p.spin_ns = 50000;
    return p;
}

void st_worker_rss(uint64_t *rss, uint64_t *peak)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    *rss = *peak = 0;
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long kb;
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            *rss = kb * 1024ull;
        else if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            *peak = kb * 1024ull;
    }
    fclose(f);
}

static uint64_t mem_available(void)
{
    char line[256];
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024ull;
}

static int stopping(const wk_t *w)
{
    return w->p->stop && *w->p->stop;
}

static st_status_t send_msg(wk_t *w, st_ctrl_type_t type, st_error_t *err)
{
    st_status_t st;
    w->out->type = type;
    w->out->epoch = w->epoch;
    pthread_mutex_lock(&w->send_lock);
    st = st_ctrl_conn_send(w->cc, w->out, 5000, err);
    pthread_mutex_unlock(&w->send_lock);
    return st;
}

/* Waits for one message of the given type (others are protocol errors
 * during the handshake). */
static st_status_t expect(wk_t *w, st_ctrl_type_t type, int timeout_ms, st_error_t *err)
{
    st_status_t st = st_ctrl_conn_recv(w->cc, timeout_ms, w->msg, err);
    if (st == ST_ERR_TIMEOUT)
        return st_error_set(err, ST_ERR_TIMEOUT, "coordinator did not answer within %d ms",
                            timeout_ms);
    if (st != ST_OK)
        return st;
    if (w->msg->type == ST_CTRL_REFUSE)
        return st_error_set(err, w->msg->u.refuse.status < 0 ? w->msg->u.refuse.status
                            : ST_ERR_AUTH, "coordinator refused this worker: %s",
                            w->msg->u.refuse.text);
    if (w->msg->type != type)
        return st_error_set(err, ST_ERR_PROTOCOL, "expected %s from the coordinator, got %s",
                            st_ctrl_type_name(type), st_ctrl_type_name(w->msg->type));
    return ST_OK;
}

/* ---- join and authentication --------------------------------------- */

static st_status_t join(wk_t *w, st_error_t *err)
{
    const st_worker_params_t *p = w->p;
    uint8_t wnonce[ST_CTRL_NONCE], cnonce[ST_CTRL_NONCE], mac[ST_CTRL_MAC];
    st_ctrl_hello_t *h = &w->out->u.hello;
    char host[ST_CTRL_NAME_MAX];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int fd;
    st_status_t st;

    st = st_ctrl_connect(p->join, (int)p->join_timeout_ms, &fd, err);
    if (st != ST_OK)
        return st;
    st = st_ctrl_conn_open(fd, &w->cc);
    if (st != ST_OK) {
        close(fd);
        return st_error_set(err, st, "out of memory");
    }
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    for (char *c = host; *c; c++)
        if (*c < 0x21 || *c > 0x7e)
            *c = '_';
    if (p->name)
        snprintf(w->name, sizeof(w->name), "%s", p->name);
    else
        snprintf(w->name, sizeof(w->name), "%.40s-%ld", host, (long)getpid());
    if (st_ctrl_random(wnonce, sizeof(wnonce)) != ST_OK)
        return st_error_set(err, ST_ERR_BACKEND, "no random bytes for the nonce");

    memset(w->out, 0, sizeof(*w->out));
    snprintf(h->name, sizeof(h->name), "%s", w->name);
    snprintf(h->host, sizeof(h->host), "%s", host);
    memcpy(h->nonce, wnonce, sizeof(wnonce));
    h->mem_bytes = p->mem_bytes ? p->mem_bytes : mem_available();
    h->n_cpus = ncpu > 0 ? (uint32_t)ncpu : 1;
    h->pid = (uint32_t)getpid();
    st = send_msg(w, ST_CTRL_HELLO, err);
    if (st != ST_OK)
        return st;
    st = expect(w, ST_CTRL_CHALLENGE, 10000, err);
    if (st != ST_OK)
        return st;
    memcpy(cnonce, w->msg->u.challenge.nonce, sizeof(cnonce));
    /* Mutual: a coordinator that cannot prove the secret gets nothing. */
    st_ctrl_proof(p->secret, p->secret_len, "strata-coord", wnonce, cnonce, NULL, mac);
    if (!st_ctrl_mac_equal(mac, w->msg->u.challenge.proof))
        return st_error_set(err, ST_ERR_AUTH, "the coordinator at %s does not know the "
                            "cluster secret; not joining", p->join);
    memset(w->out, 0, sizeof(*w->out));
    st_ctrl_proof(p->secret, p->secret_len, "strata-worker", cnonce, wnonce, w->name,
                  w->out->u.auth.mac);
    st = send_msg(w, ST_CTRL_AUTH, err);
    if (st != ST_OK)
        return st;
    st = expect(w, ST_CTRL_WELCOME, 10000, err);
    if (st != ST_OK)
        return st;
    w->hb_ms = w->msg->u.welcome.heartbeat_ms;
    st_info(MOD, "%s joined %s as worker %u (heartbeat every %u ms)", w->name, p->join,
            w->msg->u.welcome.worker_id, w->hb_ms);
    return ST_OK;
}

/* ---- teardown of a plan -------------------------------------------- */

static void drop_data_plane(wk_t *w)
{
    if (w->t) {
        for (uint32_t i = 0; i < w->n_bufs; i++)
            if (w->reqs[i]) {
                (void)st_transport_req_wait(w->t, w->reqs[i], ST_TRANSPORT_SEC / 2);
                st_transport_req_release(w->t, w->reqs[i]);
                w->reqs[i] = NULL;
            }
        if (w->next)
            st_transport_ep_close(w->t, w->next);
        for (int i = 0; i < MAX_INBOUND; i++)
            if (w->inbound[i]) {
                st_transport_ep_close(w->t, w->inbound[i]);
                w->inbound[i] = NULL;
            }
    }
    w->next = NULL;
    w->ready = 0;
}

static void free_buffers(wk_t *w)
{
    for (uint32_t i = 0; i < w->n_bufs; i++)
        if (w->bufs && w->bufs[i])
            st_transport_mem_free(w->t, w->bufs[i]);
    free(w->bufs);
    free(w->reqs);
    w->bufs = NULL;
    w->reqs = NULL;
    w->n_bufs = 0;
    free(w->scratch);
    w->scratch = NULL;
    free(w->ids);
    w->ids = NULL;
}

static void drop_plan(wk_t *w)
{
    drop_data_plane(w);
    st_stage_free(w->stage);
    w->stage = NULL;
}

/* ---- loading ---------------------------------------------------------- */

static const st_ctrl_tensor_hash_t *find_hash(const wk_t *w, const char *name)
{
    for (uint32_t i = 0; i < w->n_manifest; i++)
        if (strcmp(w->manifest[i].name, name) == 0)
            return &w->manifest[i];
    return NULL;
}

static st_status_t verify_tensor(wk_t *w, const st_tensor_t *t, st_error_t *err)
{
    const st_ctrl_tensor_hash_t *h = find_hash(w, t->name);
    uint8_t sha[32];

    if (!h)
        return st_error_set(err, ST_ERR_AUTH, "tensor '%s' is not in the coordinator's "
                            "manifest", t->name);
    if (h->nbytes != t->nbytes)
        return st_error_set(err, ST_ERR_AUTH, "%s: tensor '%s' has %llu bytes, the "
                            "coordinator's copy %llu: stale or different model file",
                            w->model_path, t->name, (unsigned long long)t->nbytes,
                            (unsigned long long)h->nbytes);
    st_ctrl_sha256(t->data, (size_t)t->nbytes, sha);
    if (memcmp(sha, h->sha256, 32) != 0)
        return st_error_set(err, ST_ERR_AUTH, "%s: tensor '%s' does not match the "
                            "coordinator's SHA-256: corrupt or stale copy of the model, "
                            "refusing to load it", w->model_path, t->name);
    return ST_OK;
}

/* Checks every tensor this stage reads (its layers, the embedding when
 * first, the output norm and head when last). */
static st_status_t verify_range(wk_t *w, st_error_t *err)
{
    const st_ctrl_plan_t *pl = &w->plan;
    st_status_t st = ST_OK;

    for (uint32_t l = pl->first_layer; l < pl->last_layer && st == ST_OK; l++) {
        const st_layer_t *ly = st_model_layer(w->model, l);
        for (uint32_t i = 0; i < ly->n_all && st == ST_OK; i++)
            st = verify_tensor(w, ly->all[i], err);
    }
    if (st == ST_OK && pl->first_layer == 0)
        st = verify_tensor(w, st_model_tok_embd(w->model), err);
    if (st == ST_OK && pl->last_layer == pl->n_layer) {
        st = verify_tensor(w, st_model_output_norm(w->model), err);
        if (st == ST_OK)
            st = verify_tensor(w, st_model_output(w->model), err);
    }
    return st;
}

/* With a key file, only this stage's tensors are decrypted, so a new plan
 * (another layer range) reopens the model; the key is on the stack only
 * while the model is opened. */
static st_status_t open_stage_model(wk_t *w, const char *path, st_error_t *err)
{
    const st_ctrl_plan_t *pl = &w->plan;
    uint8_t key[ST_CRYPT_KEY_BYTES];
    st_model_open_params_t mp = {.size = sizeof(mp)};
    st_status_t st;

    if (!w->p->key_file)
        return st_model_open(path, NULL, &w->model, err);
    if ((st = st_crypt_key_load(w->p->key_file, key, err)) != ST_OK)
        return st;
    mp.key = key;
    mp.first_layer = pl->first_layer;
    mp.last_layer = pl->last_layer;
    mp.with_embd = (pl->first_layer == 0 ? 1 : 0) | (pl->last_layer == pl->n_layer ? 2 : 0);
    st = st_model_open(path, &mp, &w->model, err);
    explicit_bzero(key, sizeof(key));
    if (st == ST_OK)
        st_info(MOD, "%s: decrypted %.1f of %.1f MB of %s (layers [%u, %u)%s%s)", w->name,
                (double)st_model_decrypted_bytes(w->model) / 1e6,
                (double)st_gguf_file_size(st_model_gguf(w->model)) / 1e6, path,
                pl->first_layer, pl->last_layer, (mp.with_embd & 1) ? " + embedding" : "",
                (mp.with_embd & 2) ? " + head" : "");
    return st;
}

static st_status_t open_model(wk_t *w, st_error_t *err)
{
    const char *path = w->p->model_path ? w->p->model_path : w->plan.model_path;
    const st_hparams_t *hp;
    st_status_t st;

    if (w->p->fetch_shard || access(path, F_OK) != 0) {
        /* No copy here: this plan's shard comes from the coordinator, for
         * every plan (another layer range needs other bytes). */
        if (w->p->key_file)
            return st_error_set(err, ST_ERR_UNSUPPORTED, "%s: no such file, and streaming "
                                "an encrypted model from the coordinator is not supported",
                                path);
        st_model_close(w->model);
        w->model = NULL;
        w->streamed = 1;
        snprintf(w->model_path, sizeof(w->model_path), "%.900s (streamed)", w->plan.model_path);
        st = wk_shard_open(w, err);
        if (st != ST_OK)
            return st;
    } else if (!w->model || w->streamed || strcmp(path, w->model_path) != 0 || w->p->key_file) {
        w->streamed = 0;
        st_model_close(w->model);
        w->model = NULL;
        snprintf(w->model_path, sizeof(w->model_path), "%s", path);
        st = open_stage_model(w, path, err);
        if (st != ST_OK)
            return st;
    }
    hp = st_model_hparams(w->model);
    if (hp->n_layer != w->plan.n_layer)
        return st_error_set(err, ST_ERR_RANGE, "%s has %u layers, the coordinator's model "
                            "%u: not the same model", path, hp->n_layer, w->plan.n_layer);
    if (w->plan.model_size && st_gguf_file_size(st_model_gguf(w->model)) != w->plan.model_size &&
        (w->plan.flags & ST_CTRL_PLAN_VERIFY))
        return st_error_set(err, ST_ERR_AUTH, "%s is %llu bytes, the coordinator's copy "
                            "%llu: stale or different model file", path,
                            (unsigned long long)st_gguf_file_size(st_model_gguf(w->model)),
                            (unsigned long long)w->plan.model_size);
    w->n_embd = hp->n_embd;
    w->n_vocab = hp->n_vocab;
    return ST_OK;
}

static size_t frame_max(const wk_t *w)
{
    const st_ctrl_plan_t *pl = &w->plan;
    uint64_t setup = (uint64_t)pl->n_slots * st_ctrl_mb_setup_size(pl->n_ctx);
    st_ctrl_mb_layout_t l;
    if (setup > UINT32_MAX ||
        st_ctrl_mb_layout(ST_CTRL_MB_HIDDEN, pl->max_batch, w->n_embd, (uint32_t)setup,
                          ST_KVOP_MAX, 0, 0, &l) != ST_OK)
        return 0;
    return l.total;
}

static st_status_t setup_transport(wk_t *w, st_error_t *err)
{
    const st_ctrl_plan_t *pl = &w->plan;
    size_t need = frame_max(w);
    st_transport_config_t cfg;
    char netdev[64];
    st_status_t st;

    if (need == 0)
        return st_error_set(err, ST_ERR_OVERFLOW, "micro-batch frames would be too large");
    if (w->t && w->t_max < need) {
        free_buffers(w);
        st_transport_destroy(w->t);
        w->t = NULL;
    }
    if (!w->t) {
        const char *tls = w->p->transport_tls ? w->p->transport_tls
                        : (pl->transport_tls[0] ? pl->transport_tls : NULL);
        st_transport_config_init(&cfg);
        cfg.progress = ST_TRANSPORT_PROGRESS_HYBRID;
        cfg.spin_ns = w->p->spin_ns;
        cfg.max_msg_size = ST_MAX((uint64_t)need, cfg.max_msg_size);
        cfg.large_slots = pl->n_stages + 3;
        cfg.tls = tls;
        cfg.name = w->name;
        st_ctrl_data_key(w->p->secret, w->p->secret_len, cfg.access_key);
        cfg.access_key_len = ST_CTRL_MAC;
        /* --data-listen HOST:PORT only picks the interface of UCX's TCP
         * transport now (the port is unused); wildcard: UCX's choice. */
        if (w->p->data_listen && !getenv("UCX_NET_DEVICES") &&
            st_transport_netdev_for(w->p->data_listen, netdev, sizeof(netdev)) == ST_OK)
            cfg.net_devices = netdev;
        st = st_transport_create(&cfg, err, &w->t);
        if (st != ST_OK)
            return st;
        w->t_max = (size_t)cfg.max_msg_size;
        /* No listener: peers connect from our UCX worker address, which goes
         * to the coordinator over the authenticated control connection, and
         * must present the key derived from the cluster secret. */
        st = st_transport_worker_address(w->t, w->data_addr, sizeof(w->data_addr));
        if (st != ST_OK)
            return st_error_set(err, st, "cannot get the data-plane worker address");
    }
    if (!w->bufs || w->frame_max < need || w->n_bufs < pl->n_stages + 2) {
        free_buffers(w);
        w->n_bufs = pl->n_stages + 2;
        w->bufs = calloc(w->n_bufs, sizeof(*w->bufs));
        w->reqs = calloc(w->n_bufs, sizeof(*w->reqs));
        w->scratch = aligned_alloc(64, ST_ALIGN_UP(need, 64));
        w->ids = calloc(ST_MAX(pl->n_slots, 1u), sizeof(int32_t));
        if (!w->bufs || !w->reqs || !w->scratch || !w->ids)
            return st_error_set(err, ST_ERR_NOMEM, "out of memory for frame buffers");
        for (uint32_t i = 0; i < w->n_bufs; i++) {
            st = st_transport_mem_alloc(w->t, need, ST_TRANSPORT_MEM_HOST, &w->bufs[i]);
            if (st != ST_OK)
                return st_error_set(err, st, "cannot register a %zu-byte send buffer", need);
        }
        w->frame_max = need;
    }
    return ST_OK;
}

/* Applies this worker's placement among the plan's workers on its host:
 * cores and memory node, and the NIC for UCX. A placement that cannot be
 * applied is logged and serving goes on unbound: it costs speed, not
 * correctness. */
static void apply_placement(wk_t *w)
{
#ifdef ST_WORKER_HAVE_TOPO
    const st_ctrl_plan_t *pl = &w->plan;
    st_topo_open_params_t op = {.size = sizeof(op), .no_cuda = 1};
    st_topo_place_params_t pp = {.size = sizeof(pp), .n_workers = pl->host_workers};
    st_topo_t *t = NULL;
    st_topo_place_t *place = NULL;
    const st_topo_worker_t *tw;
    st_error_t err;

    st_error_clear(&err);
    if (st_topo_open(&op, &t, &err) != ST_OK || st_topo_place(t, &pp, &place, &err) != ST_OK ||
        !(tw = st_topo_place_worker(place, pl->host_rank))) {
        st_warn(MOD, "%s: no placement for worker %u of %u on this host (%s); running unbound",
                w->name, pl->host_rank, pl->host_workers, err.msg[0] ? err.msg : "none");
        goto out;
    }
    if (st_topo_bind(t, place, pl->host_rank, &err) != ST_OK) {
        st_warn(MOD, "%s: cannot bind (%s); running unbound", w->name, err.msg);
        goto out;
    }
    /* The transport reads UCX_NET_DEVICES when it is created; an explicit
     * setting by the operator wins. Only an RDMA NIC is pinned: that is
     * where the nearest device matters, and restricting UCX to one
     * Ethernet interface would also drop loopback, which local clusters
     * and single-host namespaces use. */
    {
        const st_topo_nic_t *nic = tw->nic >= 0 ? st_topo_nic(t, (unsigned)tw->nic) : NULL;
        if (tw->ucx_net_devices && nic && nic->kind == ST_TOPO_NIC_RDMA && !w->t &&
            !getenv("UCX_NET_DEVICES"))
            setenv("UCX_NET_DEVICES", tw->ucx_net_devices, 0);
    }
    st_info(MOD, "%s: placement: %s", w->name, tw->explanation);
out:
    st_topo_place_free(place);
    st_topo_close(t);
#else
    st_debug(MOD, "%s: built without hwloc: no placement applied", w->name);
#endif
}

static st_status_t load(wk_t *w, st_ctrl_loaded_t *res, st_error_t *err)
{
    const st_ctrl_plan_t *pl = &w->plan;
    uint64_t t0 = st_now_ns();
    st_stage_params_t sp;
    st_status_t st;
    int with = 0;

    /* A newer coordinator may name a type this build lacks: refuse before
     * mapping anything, and say which. */
    if (!st_kv_type_valid(pl->kv_type))
        return st_error_set(err, ST_ERR_UNSUPPORTED, "plan: KV cache type %u is not known to "
                            "this worker (it knows %s)", pl->kv_type, ST_KV_TYPE_NAMES);
    st = open_model(w, err);
    if (st != ST_OK)
        return st;
    if (pl->flags & ST_CTRL_PLAN_VERIFY) {
        st = verify_range(w, err);
        if (st != ST_OK)
            return st;
    }
    if ((pl->flags & ST_CTRL_PLAN_BIND) && w->p->bind)
        apply_placement(w);
    with |= pl->first_layer == 0 ? 1 : 0;
    with |= pl->last_layer == pl->n_layer ? 2 : 0;
    st = st_model_prefetch(w->model, pl->first_layer, pl->last_layer, with, NULL, NULL);
    if (st != ST_OK)
        return st_error_set(err, st, "cannot read layers %u..%u of %s", pl->first_layer,
                            pl->last_layer, w->model_path);
    sp = st_stage_default_params(w->model);
    sp.first_layer = pl->first_layer;
    sp.last_layer = pl->last_layer;
    sp.n_ctx = pl->n_ctx;
    sp.n_slots = pl->n_slots;
    sp.max_batch = pl->max_batch;
    sp.max_out = ST_MIN(pl->n_slots, pl->max_batch);
    sp.n_threads = w->p->n_threads > 0 ? w->p->n_threads : pl->n_threads;
    sp.kv_type = pl->kv_type;
    sp.prefix_blocks = pl->prefix_blocks;   /* bounded by st_stage_create */
    if (pl->prefix_blocks)
        sp.prefix_block = pl->prefix_block;
    st = st_stage_create(&sp, &w->stage, err);
    if (st != ST_OK)
        return st;
    st = setup_transport(w, err);
    if (st != ST_OK)
        return st;
    res->status = ST_OK;
    snprintf(res->data_addr, sizeof(res->data_addr), "%s", w->data_addr);
    {
        uint64_t peak;
        st_worker_rss(&res->rss_bytes, &peak);
    }
    res->weight_bytes = st_stage_weight_bytes(w->stage);
    res->kv_bytes = st_stage_kv_bytes(w->stage);
    res->load_ns = st_now_ns() - t0;
    if (w->streamed)
        st_info(MOD, "%s: loaded in %.2f s: shard of %.1f MB streamed from the coordinator in "
                "%.2f s (%.1f MB/s)", w->name, (double)res->load_ns / 1e9,
                (double)w->shard_bytes / 1e6, (double)w->shard_ns / 1e9,
                w->shard_ns ? (double)w->shard_bytes / 1e6 / ((double)w->shard_ns / 1e9) : 0.0);
    else
        st_info(MOD, "%s: loaded in %.2f s", w->name, (double)res->load_ns / 1e9);
    st_info(MOD, "%s: stage %u/%u, layers [%u, %u) of %s, %s, data plane by UCX worker "
            "address (%zu bytes, no listener)", w->name, pl->stage, pl->n_stages,
            pl->first_layer, pl->last_layer, w->model_path, st_stage_describe(w->stage),
            (strlen(w->data_addr) - 4) / 2);
    return ST_OK;
}

/* ---- control messages --------------------------------------------------- */

static st_status_t on_plan_complete(wk_t *w, st_error_t *err)
{
    st_ctrl_loaded_t *res = &w->out->u.loaded;
    st_error_t lerr;
    st_status_t st;

    w->planned = 0;
    memset(w->out, 0, sizeof(*w->out));
    st_error_clear(&lerr);
    st = load(w, res, &lerr);
    if (st != ST_OK) {
        st_error(MOD, "%s: cannot load stage %u: %s", w->name, w->plan.stage, lerr.msg);
        drop_plan(w);
        memset(w->out, 0, sizeof(*w->out));
        w->out->u.loaded.status = st;
        snprintf(w->out->u.loaded.error, sizeof(w->out->u.loaded.error), "%s", lerr.msg);
        for (char *c = w->out->u.loaded.error; *c; c++)
            if (*c < 0x20 || *c > 0x7e)
                *c = '?';
    }
    return send_msg(w, ST_CTRL_LOADED, err);
}

static st_status_t on_connect(wk_t *w, const char *addr, st_error_t *err)
{
    st_ctrl_ready_t *r = &w->out->u.ready;
    st_error_t cerr;
    st_status_t st;

    memset(w->out, 0, sizeof(*w->out));
    st_error_clear(&cerr);
    if (!w->stage || !w->t) {
        st = st_error_set(&cerr, ST_ERR_INVALID, "CONNECT before a successful load");
    } else {
        if (w->next) {
            st_transport_ep_close(w->t, w->next);
            w->next = NULL;
        }
        st = st_transport_connect(w->t, addr, NULL, &cerr, &w->next);
        if (st == ST_OK)
            st = st_transport_ep_wait_ready(w->t, w->next, 15 * ST_TRANSPORT_SEC);
        if (st != ST_OK && !cerr.msg[0])
            st_error_set(&cerr, st, "cannot connect the data plane to the next stage: %s",
                         st_status_str(st));
    }
    r->status = st;
    if (st != ST_OK) {
        snprintf(r->error, sizeof(r->error), "%s", cerr.msg);
        st_error(MOD, "%s: %s", w->name, cerr.msg);
    } else {
        w->ready = 1;
        st_info(MOD, "%s: stage %u connected to the %s", w->name, w->plan.stage,
                w->plan.stage + 1 < w->plan.n_stages ? "next stage" : "coordinator");
    }
    return send_msg(w, ST_CTRL_READY, err);
}

/* Returns ST_CLOSED when the session ends normally (DRAIN). */
static st_status_t on_control(wk_t *w, st_error_t *err)
{
    st_ctrl_msg_t *m = w->msg;

    switch (m->type) {
    case ST_CTRL_PLAN:
        if (w->epoch && m->epoch <= w->epoch && w->stage)
            return st_error_set(err, ST_ERR_PROTOCOL, "plan epoch %u is not newer than %u",
                                m->epoch, w->epoch);
        drop_plan(w);
        w->epoch = m->epoch;
        w->plan = m->u.plan;
        free(w->manifest);
        w->manifest = calloc(ST_MAX(w->plan.n_manifest, 1u), sizeof(*w->manifest));
        if (!w->manifest)
            return st_error_set(err, ST_ERR_NOMEM, "out of memory for the manifest");
        w->n_manifest = 0;
        w->planned = 1;
        if (w->plan.n_manifest == 0)
            return on_plan_complete(w, err);
        return ST_OK;
    case ST_CTRL_MANIFEST:
        if (!w->planned || m->epoch != w->epoch)
            return st_error_set(err, ST_ERR_PROTOCOL, "MANIFEST outside a plan");
        if (m->u.manifest.n > w->plan.n_manifest - w->n_manifest)
            return st_error_set(err, ST_ERR_PROTOCOL, "MANIFEST has more entries than the "
                                "plan announced (%u)", w->plan.n_manifest);
        memcpy(w->manifest + w->n_manifest, m->u.manifest.e,
               m->u.manifest.n * sizeof(*w->manifest));
        w->n_manifest += m->u.manifest.n;
        if (w->n_manifest == w->plan.n_manifest)
            return on_plan_complete(w, err);
        return ST_OK;
    case ST_CTRL_CONNECT:
        if (m->epoch != w->epoch)
            return ST_OK;   /* from a superseded plan */
        return on_connect(w, m->u.connect.next_addr, err);
    case ST_CTRL_HEARTBEAT:
        return ST_OK;
    case ST_CTRL_DRAIN:
        st_info(MOD, "%s: drained by the coordinator", w->name);
        memset(w->out, 0, sizeof(*w->out));
        snprintf(w->out->u.leave.text, sizeof(w->out->u.leave.text), "drained");
        (void)send_msg(w, ST_CTRL_LEAVE, err);
        return ST_ERR_CLOSED;
    case ST_CTRL_LEAVE:
        st_info(MOD, "%s: coordinator is leaving: %s", w->name, m->u.leave.text);
        return ST_ERR_CLOSED;
    default:
        return st_error_set(err, ST_ERR_PROTOCOL, "unexpected %s from the coordinator",
                            st_ctrl_type_name(m->type));
    }
}

static void *heartbeat_main(void *arg)
{
    wk_t *w = arg;
    uint64_t next = st_now_ns();

    while (!atomic_load(&w->hb_stop)) {
        st_ctrl_heartbeat_t *h = &w->hb_out->u.heartbeat;
        st_status_t st;
        if (st_now_ns() < next) {
            usleep(10000);
            continue;
        }
        memset(w->hb_out, 0, sizeof(*w->hb_out));
        w->hb_out->type = ST_CTRL_HEARTBEAT;
        w->hb_out->epoch = 0;           /* heartbeats belong to no plan */
        h->seq = ++w->hb_seq;
        st_worker_rss(&h->rss_bytes, &h->rss_peak_bytes);
        h->batches = atomic_load(&w->batches);
        h->busy_ns = atomic_load(&w->busy_ns);
        pthread_mutex_lock(&w->send_lock);
        st = st_ctrl_conn_send(w->cc, w->hb_out, 2000, NULL);
        pthread_mutex_unlock(&w->send_lock);
        if (st != ST_OK)
            st_debug(MOD, "%s: heartbeat not sent: %s", w->name, st_status_str(st));
        next = st_now_ns() + (uint64_t)w->hb_ms * 1000000ull;
    }
    return NULL;
}

static st_status_t serve(wk_t *w, st_error_t *err)
{
    for (;;) {
        st_transport_event_t ev;
        st_status_t st;

        if (stopping(w)) {
            memset(w->out, 0, sizeof(*w->out));
            w->out->u.leave.status = ST_OK;
            snprintf(w->out->u.leave.text, sizeof(w->out->u.leave.text), "worker stopped");
            (void)send_msg(w, ST_CTRL_LEAVE, err);
            st_info(MOD, "%s: stopping on request", w->name);
            return ST_OK;
        }
        if (w->t) {
            /* Wait on the data plane first: that is the per-token path. */
            int n = 0;
            while (n < 64 && st_transport_wait_event(w->t, n == 0 ? 2000000ull : 0, &ev) == ST_OK) {
                wk_on_event(w, &ev);
                n++;
            }
        }
        st = st_ctrl_conn_recv(w->cc, w->t ? 0 : 20, w->msg, err);
        if (st == ST_OK) {
            st = on_control(w, err);
            if (st == ST_ERR_CLOSED)
                return ST_OK;
            if (st != ST_OK)
                return st;
        } else if (st == ST_ERR_CLOSED || st == ST_ERR_PEER) {
            return st_error_set(err, ST_ERR_PEER, "lost the coordinator at %s", w->p->join);
        } else if (st != ST_ERR_TIMEOUT) {
            return st;
        }
    }
}

st_status_t st_worker_run(const st_worker_params_t *p, st_error_t *err)
{
    wk_t *w;
    st_status_t st;

    if (!p || p->size < sizeof(*p) || !p->join)
        return st_error_set(err, ST_ERR_INVALID, "worker: missing parameters or --join");
    if (p->secret_len < ST_CTRL_SECRET_MIN)
        return st_error_set(err, ST_ERR_AUTH, "worker: no cluster secret (at least %d bytes)",
                            ST_CTRL_SECRET_MIN);
    w = calloc(1, sizeof(*w));
    if (!w)
        return st_error_set(err, ST_ERR_NOMEM, "worker: out of memory");
    w->p = p;
    pthread_mutex_init(&w->send_lock, NULL);
    w->msg = malloc(sizeof(*w->msg));
    w->out = malloc(sizeof(*w->out));
    w->hb_out = malloc(sizeof(*w->hb_out));
    if (!w->msg || !w->out || !w->hb_out) {
        st = st_error_set(err, ST_ERR_NOMEM, "worker: out of memory");
        goto out;
    }
    st = join(w, err);
    if (st != ST_OK)
        goto out;
    if (pthread_create(&w->hb_thread, NULL, heartbeat_main, w) != 0) {
        st = st_error_set(err, ST_ERR_NOMEM, "worker: cannot start the heartbeat thread");
        goto out;
    }
    w->hb_started = 1;
    st = serve(w, err);
out:
    if (w->hb_started) {
        atomic_store(&w->hb_stop, 1);
        pthread_join(w->hb_thread, NULL);
    }
    /* Leaving: sends are waited for, but the endpoints are left to
     * st_transport_destroy, which force-closes them. A polite close here
     * would wait for peers that are leaving at the same time, and a close
     * still pending when the UCP worker goes away trips UCX's assertions. */
    if (w->t)
        for (uint32_t i = 0; i < w->n_bufs; i++)
            if (w->reqs[i]) {
                (void)st_transport_req_wait(w->t, w->reqs[i], ST_TRANSPORT_SEC / 2);
                st_transport_req_release(w->t, w->reqs[i]);
                w->reqs[i] = NULL;
            }
    st_stage_free(w->stage);
    free_buffers(w);
    st_transport_destroy(w->t);
    st_model_close(w->model);
    st_ctrl_conn_close(w->cc);
    free(w->manifest);
    free(w->msg);
    free(w->out);
    free(w->hb_out);
    pthread_mutex_destroy(&w->send_lock);
    free(w);
    return st;
}
