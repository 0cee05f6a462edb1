/*
 * cluster_internal.h - the coordinator's cluster state, shared by
 * cluster.c (control plane: joins, plans, faults), cluster_pipe.c (the
 * st_pipeline_t over the data plane) and cluster_local.c (spawned workers).
 *
 * Threads and locks. The control thread owns every control socket and the
 * worker table. The engine's scheduler thread calls the pipeline ops.
 * `lock` guards the cluster state, the in-flight table and statistics;
 * `tlock` serialises use of the transport (single-threaded by contract),
 * which both threads need: the engine to send and receive micro-batches,
 * the control thread to connect the data plane during a plan. Order: tlock
 * before lock, never the reverse while blocking.
 */
#ifndef ST_CLUSTER_INTERNAL_H
#define ST_CLUSTER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "st_cluster.h"
#include "st_model.h"
#include "st_transport.h"

#define CL_MAX_WORKERS 64
#define CL_MAX_INBOUND 8
#define CL_MAX_CHILDREN 64
/* The pipeline counts as quiet (no sequence decoding) after this long
 * without a submit or a result: the engine submits a sequence's next token
 * within microseconds of its result, so 200 ms of silence means none runs. */
#define CL_QUIET_MS 200

typedef enum wstate {
    W_FREE = 0,
    W_AUTH,        /* connected, handshake in progress */
    W_IDLE,        /* authenticated, not in the current plan */
    W_LOADING,     /* PLAN sent, waiting for LOADED */
    W_LOADED,
    W_CONNECTING,  /* CONNECT sent, waiting for READY */
    W_READY
} wstate_t;

typedef struct wrec {
    wstate_t        state;
    st_ctrl_conn_t *cc;
    uint32_t        id;
    char            peer[ST_CTRL_ADDR_MAX];
    char            name[ST_CTRL_NAME_MAX];
    char            host[ST_CTRL_NAME_MAX];
    uint64_t        mem_bytes;
    uint32_t        n_cpus, pid;
    int             hello_seen;
    uint8_t         wnonce[ST_CTRL_NONCE], cnonce[ST_CTRL_NONCE];
    uint64_t        t_state;         /* when it entered its state */
    uint64_t        last_seen;
    int             stage;           /* in the current plan, else -1 */
    char            data_addr[ST_CTRL_ADDR_MAX];
    uint64_t        rss, rss_peak, load_ns, hb_count;
} wrec_t;

typedef enum cstate {
    C_WAITING = 0,  /* first plan: waiting for n_workers */
    C_PLANNING,     /* plan sent, loading / connecting */
    C_RUNNING,
    C_RECOVERING,   /* a worker died; waiting for rejoins, then re-plan */
    C_FAILED,       /* cannot serve; `detail` says why */
    C_CLOSED
} cstate_t;

typedef enum rstate { R_FREE = 0, R_INFLIGHT, R_DONE, R_RETURNED } rstate_t;

typedef struct mbrec {
    rstate_t            state;
    uint64_t            id;
    uint32_t            n_want;
    st_transport_mem_t *mem;         /* the frame sent to stage 0 */
    st_transport_req_t *req;
    int32_t            *ids;
    uint32_t            n_ids;
    st_status_t         status;
    char                error[ST_CTRL_TEXT_MAX];
    uint64_t            done_seq;    /* completion order */
} mbrec_t;

typedef struct slotrec {
    int                 pending;     /* setup not sent yet */
    uint32_t            epoch;       /* plan its KV state lives on */
    st_sampler_params_t sp;
    int32_t            *window;      /* [n_ctx] */
    uint32_t            n_window;
} slotrec_t;

typedef struct stage_info {
    int      worker;                 /* index into workers[] */
    uint32_t first, last;
} stage_info_t;

struct st_cluster {
    st_cluster_params_t p;
    char             listen_addr[ST_CTRL_ADDR_MAX];
    char             data_addr[ST_CTRL_ADDR_MAX];
    char             path_copy[3][ST_CTRL_PATH_MAX];   /* owned copies of strings */
    char             split_copy[256], tls_copy[ST_CTRL_NAME_MAX];

    st_model_t      *model;
    int              encrypted;        /* model decrypted from an encrypted file: the
                                          manifest hashes memory, shards are refused */
    char             key_copy[ST_CTRL_PATH_MAX];
    uint32_t         n_layer, n_embd, n_vocab;
    uint64_t         model_size;
    st_ctrl_tensor_hash_t *manifest;   /* [n_tensors], by GGUF index */
    uint64_t         n_tensors;

    pthread_mutex_t  lock;
    pthread_cond_t   cond;
    pthread_t        thread;
    int              thread_started;
    atomic_int       stop;
    int              wake[2];          /* pipe: wakes the control thread */
    int              listen_fd;

    cstate_t         state;
    uint32_t         epoch;
    uint32_t         prefix_blocks;    /* pool blocks every stage holds (its layers' rows) */
    char             detail[256];
    st_status_t      fail_status;
    char             fail_msg[ST_ERROR_MAX];
    int              ever_ran;
    int              joined_since_fail; /* control thread only */
    int              draining;         /* (lock) a join re-plan waits for a safe point */
    uint64_t         drain_deadline;   /* control thread only */
    uint64_t         last_activity;    /* (lock) last submit or result */
    char             replan_why[160];  /* (lock) why the last plan replaced a running one */
    uint64_t         plan_deadline, recover_deadline;
    uint32_t         target_workers;
    wrec_t           workers[CL_MAX_WORKERS];
    uint32_t         next_worker_id;
    uint64_t         hb_next;
    stage_info_t     stages[ST_CTRL_MAX_STAGES];
    uint32_t         n_stages;
    uint32_t         depth;            /* fixed at the first plan (the engine's view) */

    /* data plane */
    pthread_mutex_t  tlock;
    atomic_int       tlock_wanted;
    st_transport_t  *t;
    st_transport_ep_t *ep_first;
    int              ep_first_ok;
    st_transport_ep_t *inbound[CL_MAX_INBOUND];
    size_t           frame_max;
    mbrec_t          recs[ST_CTRL_MAX_STAGES];
    uint64_t         done_seq;
    slotrec_t       *slots;
    uint8_t         *result_scratch;   /* aligned copy of a misaligned frame */

    /* statistics (lock) */
    uint64_t         st_mbs, st_rtt_ns, st_compute_ns[ST_CTRL_MAX_STAGES];
    uint64_t         st_hop_ns[ST_CTRL_MAX_STAGES + 1];
    int              st_hop_bad;

    /* local mode */
    pid_t            children[CL_MAX_CHILDREN];
    uint32_t         n_children;
    /* restart back-off (control thread; the counts under lock for cl_info) */
    uint32_t         child_fails[CL_MAX_CHILDREN];     /* deaths in a row */
    uint64_t         child_started_ns[CL_MAX_CHILDREN];
    uint64_t         child_respawn_ns[CL_MAX_CHILDREN]; /* 0: none pending */
    uint64_t         restarts_total;
    uint32_t         restarts_pending;
    char             secret_hex[2 * ST_CTRL_SECRET_MAX + 1];
    char             bin[ST_CTRL_PATH_MAX];
    char             log_copy[ST_CTRL_PATH_MAX];
    char           **envp;             /* children's environment (borrowed entries) */
    char            *env_secret;
};

/* cluster.c */
st_status_t cl_start(const st_cluster_params_t *p, st_cluster_t **out, st_error_t *err);
/* Waits until the first plan runs: join_ms for the workers to join, then
 * load_ms for the plan to be loaded and wired. */
st_status_t cl_wait_running(st_cluster_t *c, uint64_t join_ms, uint64_t load_ms, st_error_t *err);
void        cl_fail_locked(st_cluster_t *c, st_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void        cl_tlock(st_cluster_t *c);
void        cl_tunlock(st_cluster_t *c);

/* cluster_plan.c */
/* Opens c->p.model_path into c->model, with c->p.key_file when set (sets
 * c->encrypted when the file was an encrypted model). */
st_status_t cl_open_model(st_cluster_t *c, st_error_t *err);
st_status_t cl_compute_manifest(st_cluster_t *c, st_error_t *err);
/* Manifest entries of the tensors layers [first, last) read (deduplicated). */
uint32_t    cl_stage_tensors(const st_cluster_t *c, uint32_t first, uint32_t last,
                             const st_ctrl_tensor_hash_t **out, uint32_t cap);
/* Fills c->stages / c->n_stages over the candidate workers (pipeline order). */
st_status_t cl_compute_split(st_cluster_t *c, wrec_t **cand, uint32_t n_cand, st_error_t *err);

/* cluster_pipe.c */
st_status_t cl_data_init(st_cluster_t *c, st_error_t *err);
void        cl_data_fini(st_cluster_t *c);
/* Handles one transport event (tlock held). */
void        cl_data_event(st_cluster_t *c, st_transport_event_t *ev);
/* Fails every in-flight micro-batch with `status` and `text` (lock held). */
void        cl_data_fail_inflight_locked(st_cluster_t *c, st_status_t status, const char *text);
/* Closes the data connections of the previous plan (tlock held). */
void        cl_data_reset(st_cluster_t *c);

/* cluster_local.c */
st_status_t cl_spawn(st_cluster_t *c, uint32_t index, st_error_t *err);
void        cl_local_check(st_cluster_t *c);
void        cl_local_stop(st_cluster_t *c);

#endif /* ST_CLUSTER_INTERNAL_H */
