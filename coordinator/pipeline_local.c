/*
 * pipeline_local.c - the in-process pipeline: one stage holding every
 * layer, run synchronously in submit. Depth 1: the scheduler's next
 * micro-batch waits for this one, as it must with a single stage.
 */
#include <stdlib.h>
#include <string.h>

#include "st_engine.h"
#include "st_stage.h"

typedef struct local_pipe {
    st_stage_t *stage;
    uint32_t    n_ctx, n_slots, max_batch, prefix_blocks, prefix_block;
    int32_t    *ids;        /* results of the completed micro-batch */
    uint64_t    done_id;
    uint32_t    done_n;
    st_status_t done_status;
    int         has_done;
} local_pipe_t;

static st_status_t local_slot_setup(void *ctx, uint32_t slot, const st_sampler_params_t *p,
                                    const int32_t *prompt, uint32_t n_prompt, st_error_t *err)
{
    local_pipe_t *lp = ctx;
    st_status_t st = st_stage_slot_setup(lp->stage, slot, p);
    if (st != ST_OK)
        return st_error_set(err, st, "local pipeline: slot %u setup failed", slot);
    st_stage_slot_accept(lp->stage, slot, prompt, n_prompt);
    return ST_OK;
}

static st_status_t local_submit(void *ctx, const st_microbatch_t *mb, st_error_t *err)
{
    local_pipe_t *lp = ctx;
    st_stage_batch_t b;
    st_stage_out_t out;

    if (lp->has_done)
        return ST_ERR_BUSY;
    memset(&b, 0, sizeof(b));
    b.n = mb->n;
    b.tokens = mb->tokens;
    b.pos = mb->pos;
    b.slot = mb->slot;
    b.want = mb->want;
    b.flags = ST_STAGE_SAMPLE;
    b.n_kvops = mb->n_kvops;
    b.kvops = mb->kvops;
    memset(&out, 0, sizeof(out));
    out.ids = lp->ids;
    lp->done_status = st_stage_forward(lp->stage, &b, &out, err);
    lp->done_id = mb->id;
    lp->done_n = lp->done_status == ST_OK ? out.n_out : 0;
    lp->has_done = 1;
    return ST_OK;
}

static st_status_t local_poll(void *ctx, int timeout_ms, st_pipeline_result_t *res,
                              st_error_t *err)
{
    local_pipe_t *lp = ctx;
    (void)timeout_ms; (void)err;
    if (!lp->has_done)
        return ST_ERR_TIMEOUT;
    res->id = lp->done_id;
    res->n_ids = lp->done_n;
    res->ids = lp->ids;
    res->status = lp->done_status;
    lp->has_done = 0;
    return ST_OK;
}

static void local_info(void *ctx, st_pipeline_info_t *out)
{
    local_pipe_t *lp = ctx;
    memset(out, 0, sizeof(*out));
    out->n_stages = 1;
    out->depth = 1;
    out->n_slots = lp->n_slots;
    out->n_ctx = lp->n_ctx;
    out->max_batch = lp->max_batch;
    out->healthy = 1;
    out->prefix_blocks = lp->prefix_blocks;
    out->prefix_block = lp->prefix_block;
    strncpy(out->detail, st_stage_describe(lp->stage), sizeof(out->detail) - 1);
}

static void local_destroy(void *ctx)
{
    local_pipe_t *lp = ctx;
    st_stage_free(lp->stage);
    free(lp->ids);
    free(lp);
}

static const st_pipeline_ops_t local_ops = {
    .abi_version = ST_PIPELINE_ABI_VERSION,
    .name = "local",
    .slot_setup = local_slot_setup,
    .submit = local_submit,
    .poll = local_poll,
    .info = local_info,
    .destroy = local_destroy,
};

st_status_t st_pipeline_local_create(const st_model_t *m, uint32_t n_ctx, uint32_t n_slots,
                                     uint32_t max_batch, const char *backend, int n_threads,
                                     uint32_t kv_type, uint64_t prefix_cache_bytes,
                                     st_pipeline_t *out, st_error_t *err)
{
    st_stage_params_t sp = st_stage_default_params(m);
    local_pipe_t *lp = calloc(1, sizeof(*lp));
    st_status_t st;

    if (!lp)
        return st_error_set(err, ST_ERR_NOMEM, "local pipeline: out of memory");
    sp.n_ctx = n_ctx;
    sp.n_slots = n_slots;
    sp.max_batch = max_batch;
    sp.max_out = n_slots < max_batch ? n_slots : max_batch;
    sp.backend = backend;
    sp.n_threads = n_threads;
    sp.kv_type = kv_type;
    sp.prefix_blocks = st_stage_prefix_blocks_for(m, kv_type, prefix_cache_bytes, sp.prefix_block);
    st = st_stage_create(&sp, &lp->stage, err);
    if (st != ST_OK)
        goto err_free;
    lp->ids = calloc(sp.max_out, sizeof(int32_t));
    if (!lp->ids) {
        st = st_error_set(err, ST_ERR_NOMEM, "local pipeline: out of memory");
        goto err_stage;
    }
    lp->n_ctx = n_ctx;
    lp->n_slots = n_slots;
    lp->max_batch = max_batch;
    lp->prefix_blocks = sp.prefix_blocks;
    lp->prefix_block = sp.prefix_block;
    out->ops = &local_ops;
    out->ctx = lp;
    return ST_OK;

err_stage:
    st_stage_free(lp->stage);
err_free:
    free(lp);
    return st;
}
