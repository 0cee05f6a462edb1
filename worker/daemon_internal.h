/*
 * daemon_internal.h - the worker runtime's state, shared by daemon.c
 * (session, loading, control messages, heartbeats) and daemon_serve.c (the
 * data plane: receiving, computing and forwarding micro-batches).
 *
 * Threads: the main thread owns everything below except the heartbeat
 * thread's scratch (hb_out); control-socket sends take send_lock; the
 * counters the heartbeat reports are atomics.
 */
#ifndef ST_DAEMON_INTERNAL_H
#define ST_DAEMON_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "st_model.h"
#include "st_stage.h"
#include "st_transport.h"
#include "st_worker.h"

#define MOD "worker"
#define MAX_INBOUND 8

typedef struct wk {
    const st_worker_params_t *p;
    char            name[ST_CTRL_NAME_MAX];
    st_ctrl_conn_t *cc;
    st_ctrl_msg_t  *msg;             /* receive scratch (large union) */
    st_ctrl_msg_t  *out;             /* send scratch */
    uint32_t        hb_ms;
    uint64_t        hb_seq;
    pthread_mutex_t send_lock;       /* control-socket sends (both threads) */
    pthread_t       hb_thread;
    int             hb_started;
    atomic_int      hb_stop;
    st_ctrl_msg_t  *hb_out;          /* the heartbeat thread's send scratch */

    /* current plan */
    uint32_t        epoch;
    int             planned;         /* PLAN received, waiting for the manifest */
    st_ctrl_plan_t  plan;
    st_ctrl_tensor_hash_t *manifest;
    uint32_t        n_manifest;

    st_model_t     *model;
    char            model_path[ST_CTRL_PATH_MAX];
    int             streamed;        /* model came from the coordinator (daemon_shard.c) */
    uint64_t        shard_bytes, shard_ns;
    st_stage_t     *stage;
    uint32_t        n_embd, n_vocab;

    st_transport_t *t;
    size_t          t_max;           /* max message of the transport */
    char            data_addr[ST_CTRL_ADDR_MAX];
    st_transport_ep_t *next;
    st_transport_ep_t *inbound[MAX_INBOUND];
    uint32_t        n_bufs, buf_i;
    st_transport_mem_t **bufs;
    st_transport_req_t **reqs;
    size_t          frame_max;
    void           *scratch;         /* aligned copy of a misaligned frame */
    int32_t        *ids;
    int             ready;

    _Atomic uint64_t batches, busy_ns;
} wk_t;

/* Streams the model's header and this plan's tensors from the coordinator
 * into sparse anonymous memory and opens w->model from it (daemon_shard.c).
 * Sets shard_bytes and shard_ns. */
st_status_t wk_shard_open(wk_t *w, st_error_t *err);

/* Handles one transport event: a micro-batch (computed and forwarded), a
 * connection that became ready, or one that failed. */
void wk_on_event(wk_t *w, st_transport_event_t *ev);

#endif /* ST_DAEMON_INTERNAL_H */
