/*
 * st_worker.h - the worker runtime behind `strata worker`: one pipeline
 * stage of a cluster, in its own process.
 *
 *   st_worker_params_t p = st_worker_default_params();
 *   p.join = "10.0.0.1:7700";                 // the coordinator's control port
 *   st_ctrl_secret_load("secret", p.secret, sizeof p.secret, &p.secret_len, &err);
 *   p.stop = &stop_flag;                       // set by the caller's SIGTERM handler
 *   st_status_t st = st_worker_run(&p, &err);  // returns when told to leave
 *
 * What it does, in order: connects to the coordinator (retrying until
 * join_timeout_ms), proves it knows the cluster secret and checks that the
 * coordinator does too (HMAC-SHA256 challenge-response, st_ctrl.h), waits
 * for a plan (its stage and layer range), opens the model at the plan's path
 * or at model_path (or, with fetch_shard or when that path does not exist,
 * receives the header and its own tensors from the coordinator into memory
 * over the control connection: SHARD_REQUEST/DATA/END), verifies each tensor it will use against the
 * coordinator's SHA-256 manifest (a stale or corrupt copy is refused with
 * the tensor named), touches only its own layers' pages, creates the stage
 * executor (st_stage.h) and a transport listener, reports LOADED with its
 * data-plane address, connects to the next stage (or back to the
 * coordinator when last) and serves micro-batches until DRAIN, a new plan
 * (re-plan after a failure: everything is rebuilt for the new epoch), the
 * caller's stop flag, or the loss of the coordinator. It sends a heartbeat
 * every heartbeat_ms the coordinator asked for.
 *
 * Errors while serving (a malformed frame, a failed forward) never end the
 * process: they travel down the pipeline as an error frame so that the
 * coordinator fails that micro-batch with the message, and the worker keeps
 * serving.
 */
#ifndef ST_WORKER_H
#define ST_WORKER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "st_ctrl.h"
#include "st_error.h"
#include "st_status.h"

typedef struct st_worker_params {
    uint32_t    size;                 /* sizeof(st_worker_params_t) */
    const char *join;                 /* coordinator control address "host:port" */
    uint8_t     secret[ST_CTRL_SECRET_MAX];
    size_t      secret_len;
    const char *name;                 /* NULL: "<hostname>-<pid>" */
    const char *model_path;           /* NULL: the path in the plan */
    int         n_threads;            /* > 0 overrides the plan */
    const char *data_listen;          /* opens no listener; a specific host picks the
                                         interface of UCX's TCP transport */
    const char *transport_tls;        /* UCX_TLS override; NULL: plan's, then environment */
    int         bind;                 /* 1: apply the topology placement (when built) */
    uint64_t    mem_bytes;            /* advertised; 0: MemAvailable */
    uint32_t    join_timeout_ms;      /* keep retrying the first connection this long */
    uint64_t    spin_ns;              /* transport busy-poll after activity */
    volatile sig_atomic_t *stop;      /* optional: leave when it becomes non-zero */
    const char *key_file;             /* encrypted model (st_crypt.h): decrypt only this
                                         stage's layers (+ embedding / head) with it */
    int         fetch_shard;          /* 1: always receive the shard from the coordinator
                                         (also done when the model path does not exist) */
} st_worker_params_t;

st_worker_params_t st_worker_default_params(void);

/* Runs the worker until it is told to leave (ST_OK), its stop flag is set
 * (ST_OK), or the session fails: ST_ERR_AUTH (refused or the coordinator
 * could not prove the secret), ST_ERR_PEER (coordinator gone or unreachable),
 * ST_ERR_PROTOCOL. */
st_status_t st_worker_run(const st_worker_params_t *p, st_error_t *err);

/* Resident and peak resident memory of this process (VmRSS, VmHWM). */
void st_worker_rss(uint64_t *rss, uint64_t *peak);

#endif /* ST_WORKER_H */
