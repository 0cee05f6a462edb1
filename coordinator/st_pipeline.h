/*
 * st_pipeline.h - what the scheduler drives: a chain of stages, local or
 * remote, behind a table of functions.
 *
 * The engine (st_engine.h) batches sequences into micro-batches and submits
 * them; a pipeline runs each through all its stages and reports, per
 * micro-batch, the token ids sampled by its last stage. The local pipeline
 * (one in-process st_stage holding every layer) and the cluster pipeline
 * (stages in worker processes joined by the transport) implement the same
 * table, so the scheduler never asks which one it has.
 *
 * A pipeline with S stages can hold up to `depth` micro-batches in flight
 * (S for the cluster, 1 locally), so every stage computes while the others
 * do. Submit returns at once when depth allows; poll returns completed
 * micro-batches in any order.
 */
#ifndef ST_PIPELINE_H
#define ST_PIPELINE_H

#include <stdint.h>

#include "st_error.h"
#include "st_model.h"
#include "st_sampler.h"
#include "st_stage.h"
#include "st_status.h"

/* 2: micro-batches carry prefix-cache ops, info the cache's shape and epoch. */
#define ST_PIPELINE_ABI_VERSION 2u

typedef struct st_microbatch {
    uint64_t       id;       /* chosen by the engine, echoed by poll */
    uint32_t       n;        /* tokens */
    const int32_t *tokens;   /* [n] */
    const int32_t *pos;      /* [n] */
    const int32_t *slot;     /* [n] */
    const uint8_t *want;     /* [n] 1: sample a token after this one */
    uint32_t       n_kvops;  /* prefix-cache copies every stage runs around this
                                micro-batch, in order (st_kvop_t; <= ST_KVOP_MAX) */
    const st_kvop_t *kvops;
} st_microbatch_t;

typedef struct st_pipeline_result {
    uint64_t    id;          /* micro-batch id */
    uint32_t    n_ids;       /* one per wanted token, in batch order */
    int32_t    *ids;         /* points into pipeline memory, valid until next poll */
    st_status_t status;      /* error of this micro-batch (e.g. a stage died) */
} st_pipeline_result_t;

typedef struct st_pipeline_info {
    uint32_t n_stages;
    uint32_t depth;          /* micro-batches in flight at most */
    uint32_t n_slots;
    uint32_t n_ctx;
    uint32_t max_batch;
    int      healthy;        /* 0 when a stage is down */
    char     detail[256];    /* human-readable: stages, hosts, reason if unhealthy */
    uint64_t worker_restarts;        /* local workers restarted after dying, in total */
    uint32_t workers_restart_pending;/* local workers dead and waiting out a back-off */
    uint32_t prefix_blocks;  /* blocks of the prefix-cache pool every stage holds (0: none) */
    uint32_t prefix_block;   /* tokens per block */
    uint32_t epoch;          /* changes when stages may have lost their pools (re-plan) */
} st_pipeline_info_t;

typedef struct st_pipeline_ops {
    uint32_t    abi_version;
    const char *name;        /* "local", "cluster" */
    /* Sampling parameters for a slot's new sequence; `prompt` feeds the
     * repetition penalty window. */
    st_status_t (*slot_setup)(void *ctx, uint32_t slot, const st_sampler_params_t *p,
                              const int32_t *prompt, uint32_t n_prompt, st_error_t *err);
    /* ST_ERR_BUSY when `depth` micro-batches are already in flight. */
    st_status_t (*submit)(void *ctx, const st_microbatch_t *mb, st_error_t *err);
    /* Wait up to timeout_ms for one completed micro-batch: ST_OK with *res
     * filled, ST_ERR_TIMEOUT when none completed. */
    st_status_t (*poll)(void *ctx, int timeout_ms, st_pipeline_result_t *res, st_error_t *err);
    /* May be called from any thread (health checks, metrics). */
    void        (*info)(void *ctx, st_pipeline_info_t *out);
    void        (*destroy)(void *ctx);
    /* Optional (NULL, or returning NULL: the engine opens model_path itself).
     * The model the pipeline already holds, for the engine's tokenizer, chat
     * template and hyper-parameters, so that a coordinator keeps one copy
     * (with an encrypted model, one decrypted copy instead of two). Valid
     * until destroy; the engine never closes it. */
    st_model_t *(*model)(void *ctx);
} st_pipeline_ops_t;

typedef struct st_pipeline {
    const st_pipeline_ops_t *ops;
    void                    *ctx;
} st_pipeline_t;

#endif /* ST_PIPELINE_H */
