/*
 * st_cluster.h - the coordinator side of a cluster: workers join over the
 * control plane, the model's layers are split over them, and the result is
 * an st_pipeline_t (st_pipeline.h) that the engine drives like the local
 * one, with one stage per worker and up to n_stages micro-batches in flight.
 *
 * Standalone (workers started by hand or by mpirun/Slurm):
 *
 *   st_cluster_params_t p = st_cluster_default_params();
 *   p.model_path = "m.gguf"; p.listen = "0.0.0.0:7700"; p.n_workers = 2;
 *   st_ctrl_secret_load("secret", p.secret, sizeof p.secret, &p.secret_len, &err);
 *   st_cluster_t *c;
 *   st_cluster_create(&p, &c, &err);       // waits for the workers, plans, loads
 *   st_engine_params_t ep = st_engine_default_params();
 *   ep.model_path = p.model_path; ep.n_slots = p.n_slots; ep.n_ctx = p.n_ctx;
 *   ep.pipeline = &(st_pipeline_t){0};
 *   st_cluster_pipeline(c, ep.pipeline);    // the engine now owns c
 *   st_engine_create(&ep, &engine, &err);
 *
 * Encrypted models (docs/ENCRYPTION.md): set p.key_file and p.model_path to
 * the encrypted file. The coordinator decrypts it whole into anonymous
 * memory (it needs metadata and tokenizer, and hashes the decrypted tensors
 * for the manifest, which is what the workers verify theirs against);
 * workers are started with `--model m.stenc --key-file K`. A worker without
 * the file is refused, not streamed: the control connection is not
 * encrypted and would carry the weights in the clear.
 *
 * One machine, N local worker processes (what `strata serve --workers N`
 * uses): st_cluster_local_create() spawns `strata worker` N times with a
 * fresh random secret, and returns the pipeline directly.
 *
 * The engine's n_ctx, n_slots and max_batch must equal the cluster's: the
 * workers size their KV caches and buffers from the plan.
 *
 * Data path of a micro-batch: coordinator -> stage 0 (token ids, positions,
 * slots, want flags, and the slot setups of new sequences) -> stage 1
 * (hidden state + the same metadata) -> ... -> last stage (samples with
 * each sequence's parameters and seed) -> coordinator (token ids only).
 *
 * Faults: a worker is declared dead when its control connection drops, its
 * heartbeats stop for dead_after_ms, or the transport reports its endpoint
 * failed. Micro-batches in flight then complete with ST_ERR_PEER and a
 * message naming the worker; sequences that held KV state on the lost plan
 * fail at their next step; the cluster re-plans over the workers still
 * alive (and any that (re)joined; local workers are respawned) and serves
 * new requests once that plan is loaded. If the remaining workers cannot
 * hold the model, every request fails with the planner's explanation.
 *
 * Joins: with replan_on_join, a worker that joins (or rejoins) a running
 * cluster triggers a re-plan over every worker at a safe point. New
 * sequences are held (slot_setup waits), the running ones continue until the
 * pipeline is quiet (nothing in flight, no submit for CL_QUIET_MS), then the
 * cluster re-plans, loads and resumes. Sequences still running after
 * replan_wait_ms fail with an error naming the re-plan (their KV caches live
 * on the workers and do not survive it); none ever gets a wrong token.
 */
#ifndef ST_CLUSTER_H
#define ST_CLUSTER_H

#include <stdint.h>
#include <stdio.h>

#include "st_ctrl.h"
#include "st_error.h"
#include "st_pipeline.h"
#include "st_status.h"

typedef struct st_cluster st_cluster_t;

typedef struct st_cluster_params {
    uint32_t    size;              /* sizeof(st_cluster_params_t) */
    const char *model_path;        /* the coordinator's copy: plan sizes, manifest */
    const char *worker_model_path; /* path sent to workers; NULL: model_path */
    const char *listen;            /* control plane "host:port" (port 0 = any); NULL:
                                      0.0.0.0:7700, or 127.0.0.1:0 for a local cluster */
    const char *data_listen;       /* opens no listener (the data plane connects by UCX
                                      worker address); a specific host picks UCX's TCP
                                      interface (127.0.0.1: lo, for a local cluster) */
    uint8_t     secret[ST_CTRL_SECRET_MAX];
    size_t      secret_len;        /* >= ST_CTRL_SECRET_MIN */
    uint32_t    n_workers;         /* wait for this many before the first plan */
    uint32_t    n_ctx, n_slots, max_batch;
    int         n_threads;         /* per worker; <= 0: the worker decides */
    const char *split;             /* "7,23": layers per stage (tests); NULL: planner */
    int         verify;            /* send the SHA-256 manifest (default 1) */
    int         bind;              /* workers apply their topology placement (default 1) */
    const char *transport_tls;     /* UCX_TLS for workers and coordinator; NULL: default */
    uint32_t    join_timeout_ms;   /* first plan: wait this long for n_workers */
    uint32_t    load_timeout_ms;   /* a plan must be loaded and connected within */
    uint32_t    heartbeat_ms;      /* workers' heartbeat period */
    uint32_t    dead_after_ms;     /* silence after which a worker is dead */
    uint32_t    recover_wait_ms;   /* after a death, wait this long for rejoins */
    uint64_t    spin_ns;           /* transport busy-poll after activity */
    int         replan_on_join;    /* a worker joining a running cluster triggers a
                                      re-plan at a safe point (default 1) */
    uint32_t    replan_wait_ms;    /* that re-plan waits this long for running
                                      sequences to finish; then they fail (default 30000) */
    /* Local mode (st_cluster_local_create): */
    const char *strata_bin;        /* NULL: /proc/self/exe */
    int         respawn;           /* restart local workers that die (default 1) */
    const char *worker_log;        /* NULL: workers inherit stderr */
    /* Added after the fields above; callers fill the struct from
     * st_cluster_default_params(), so `size` covers it. */
    const char *key_file;          /* key of an encrypted model (st_crypt.h): the
                                      coordinator decrypts the whole file into anonymous
                                      memory; local workers get --key-file; shards of an
                                      encrypted model are never streamed. NULL: none */
    uint32_t    kv_type;           /* KV cache elements on every stage (ST_DTYPE_F32, F16,
                                      Q8_0; default F16), sent in each PLAN */
    uint64_t    prefix_cache_bytes;/* prefix-cache pool over all stages (0: none); each
                                      stage holds its layers' share of the same blocks */
    uint64_t    worker_mem_bytes;  /* local workers advertise this much memory to the
                                      planner (`strata worker --mem`), so a model larger
                                      than one worker's budget must split; 0: each
                                      worker's MemAvailable */
} st_cluster_params_t;

st_cluster_params_t st_cluster_default_params(void);

/* Starts the control listener, waits for n_workers authenticated workers
 * (join_timeout_ms), computes the plan, has every worker verify and load
 * its layers and connect the data plane. Errors name the worker and cause:
 * a refused secret is logged and the worker closed (it never counts), a
 * corrupt shard fails with the tensor named, ST_ERR_TIMEOUT when too few
 * workers joined. */
st_status_t st_cluster_create(const st_cluster_params_t *p, st_cluster_t **out, st_error_t *err);

/* Spawns p->n_workers local `strata worker` processes joined to a cluster
 * on 127.0.0.1 with a random secret, and returns the cluster's pipeline
 * (its destroy stops the workers). p->listen NULL picks a free port. */
st_status_t st_cluster_local_create(const st_cluster_params_t *p, st_pipeline_t *out,
                                    st_error_t *err);

/* The pipeline view. Ownership of the cluster moves to the pipeline: its
 * destroy() frees the cluster (drains and stops the workers). */
void st_cluster_pipeline(st_cluster_t *c, st_pipeline_t *out);

/* Frees a cluster that was not handed to a pipeline: sends DRAIN to every
 * worker, waits briefly for their LEAVE, stops spawned workers. */
void st_cluster_free(st_cluster_t *c);

/* The control address workers join ("host:port"). */
const char *st_cluster_address(const st_cluster_t *c);

/* Per-stage figures for benchmarks and metrics. Times are averages over
 * micro-batches completed since the last reset; hop k is the time from the
 * sender's stamp to stage k's receipt (hop 0: coordinator -> stage 0, hop
 * n_stages: last stage -> coordinator); it is exact on one host (shared
 * monotonic clock) and -1 when the clocks are not comparable. */
typedef struct st_cluster_stats {
    uint32_t n_stages;
    uint64_t mbs;                             /* micro-batches completed */
    double   rtt_us;                          /* submit -> ids back */
    double   compute_us[ST_CTRL_MAX_STAGES];
    double   hop_us[ST_CTRL_MAX_STAGES + 1];
    uint32_t first_layer[ST_CTRL_MAX_STAGES], last_layer[ST_CTRL_MAX_STAGES];
    uint64_t rss_bytes[ST_CTRL_MAX_STAGES];   /* each stage's worker, last heartbeat */
    uint64_t rss_peak_bytes[ST_CTRL_MAX_STAGES];
    uint64_t load_ns[ST_CTRL_MAX_STAGES];
    char     worker[ST_CTRL_MAX_STAGES][ST_CTRL_NAME_MAX];
    uint32_t epoch;                           /* plan generation (1 = first) */
    int      healthy;
} st_cluster_stats_t;

void st_cluster_stats(st_cluster_t *c, st_cluster_stats_t *out);
void st_cluster_stats_reset(st_cluster_t *c);
/* Asks every worker for a fresh heartbeat-borne RSS figure and waits up to
 * timeout_ms for it (benchmarks read peak memory at the end of a run). */
void st_cluster_refresh(st_cluster_t *c, int timeout_ms);

/* ---- MPI bootstrap (mpirun / srun --mpi=pmi2) --------------------------
 * `strata launch` uses MPI only to learn its rank and, once, to copy what
 * rank 0 knows to every rank: its control address and, when the job was
 * given no secret, a per-job secret rank 0 draws from the OS CSPRNG. The
 * launcher's channel is trusted for that one message (docs/CLUSTER.md,
 * "The per-job secret"); the secret never touches a file, argv or the
 * environment. MPI is initialised only when the process was started by a
 * process manager (PMI_RANK, PMI_SIZE, PMI_FD or PMIX_RANK in the
 * environment). */

#define ST_CLUSTER_JOB_SECRET_LEN 32   /* bytes: 256 bits, HMAC-SHA256's key size */

/* What every rank knows after st_cluster_mpi_bootstrap(). */
typedef struct st_cluster_mpi_boot {
    char     addr[ST_CTRL_ADDR_MAX];  /* rank 0's control address, "host:port" */
    size_t   secret_len;              /* 0: every rank loads its own secret (the job
                                         was given --secret-file or the environment
                                         variable); else ST_CLUSTER_JOB_SECRET_LEN */
    uint8_t  secret[ST_CLUSTER_JOB_SECRET_LEN];
} st_cluster_mpi_boot_t;

/* 1 when this build has MPI and a process manager started us. */
int         st_cluster_mpi_detected(void);
/* MPI_Init; writes this rank and the job size. ST_ERR_UNSUPPORTED without MPI. */
st_status_t st_cluster_mpi_init(int *rank, int *size, st_error_t *err);
/* Collective: every rank calls it once, after st_cluster_mpi_init. Rank 0
 * fills b->addr and passes draw = 1 when the job has no secret of its own;
 * it then draws b->secret. Rank 0's b is copied to every rank's b (other
 * ranks' inputs are ignored). A failure on rank 0 (no randomness) reaches
 * every rank as an error, so none waits for a coordinator that will not
 * come. The caller wipes b (explicit_bzero) when it is done with it. */
st_status_t st_cluster_mpi_bootstrap(st_cluster_mpi_boot_t *b, int draw, st_error_t *err);
/* A barrier, then MPI_Finalize. */
void        st_cluster_mpi_finalize(void);

#endif /* ST_CLUSTER_H */
