/*
 * stage_prefix.c - the stage's half of prefix reuse (see st_stage.h,
 * st_kvop_t): a pool of KV-row blocks in host memory and the copies
 * between it and the slots' caches.
 *
 * The pool lives in host memory on every backend: it is a cache of rows a
 * later request may want, and GPU memory is better spent on slots. The
 * copies go through the backend's to_host / to_device, so a device cache
 * works the same way. The pool is calloc'ed: its pages cost resident
 * memory only as blocks are first saved.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "stage_internal.h"
#include "st_util.h"

static uint64_t row_bytes(const st_stage_t *s, int v)
{
    uint32_t dim = v ? s->hp->kv_v_dim : s->hp->kv_k_dim;
    return dim ? st_dtype_row_bytes(s->p.kv_type, dim) : 0;
}

st_status_t st_stage_prefix_init(st_stage_t *s, st_error_t *err)
{
    uint64_t nb = s->p.prefix_blocks, B = s->p.prefix_block, kb, vb;

    s->prefix_bytes = 0;
    if (nb == 0)
        return ST_OK;
    if (B == 0 || B > s->p.n_ctx)
        return st_error_set(err, ST_ERR_RANGE, "stage: prefix block of %u tokens for a context "
                            "of %u", s->p.prefix_block, s->p.n_ctx);
    if (nb > (1u << 24))
        return st_error_set(err, ST_ERR_RANGE, "stage: %u prefix-cache blocks", s->p.prefix_blocks);
    kb = nb * B * row_bytes(s, 0);
    vb = nb * B * row_bytes(s, 1);
    s->pk = calloc(s->n_layers, sizeof(*s->pk));
    s->pv = calloc(s->n_layers, sizeof(*s->pv));
    s->ptag = calloc(nb, sizeof(*s->ptag));
    if (!s->pk || !s->pv || !s->ptag)
        goto nomem;
    for (uint32_t l = 0; l < s->n_layers; l++) {
        if (!(s->pk[l] = calloc(1, (size_t)kb)))
            goto nomem;
        if (vb && !(s->pv[l] = calloc(1, (size_t)vb)))
            goto nomem;
        s->prefix_bytes += kb + vb;
    }
    return ST_OK;
nomem:
    {
        uint64_t want = (kb + vb) * s->n_layers;
        st_stage_prefix_fini(s);
        return st_error_set(err, ST_ERR_NOMEM, "stage: cannot allocate a prefix cache of %u "
                            "blocks (%" PRIu64 " bytes)", s->p.prefix_blocks, want);
    }
}

void st_stage_prefix_fini(st_stage_t *s)
{
    for (uint32_t l = 0; l < s->n_layers; l++) {
        if (s->pk)
            free(s->pk[l]);
        if (s->pv)
            free(s->pv[l]);
    }
    free(s->pk);
    free(s->pv);
    free(s->ptag);
    s->pk = s->pv = NULL;
    s->ptag = NULL;
    s->prefix_bytes = 0;
}

uint32_t st_stage_prefix_blocks_for(const st_model_t *m, uint32_t kv_type, uint64_t bytes,
                                    uint32_t block)
{
    uint64_t per = st_model_kv_bytes_per_token_layer(m, kv_type) *
                   (uint64_t)st_model_hparams(m)->n_layer * block;
    uint64_t n = per ? bytes / per : 0;
    return n > (1u << 24) ? 1u << 24 : (uint32_t)n;
}

uint64_t st_stage_prefix_bytes(const st_stage_t *s) { return s->prefix_bytes; }

/* Ops arrive from the network in the cluster: every field is checked
 * before it addresses memory, for the whole batch before any op runs. */
st_status_t st_stage_kv_check(const st_stage_t *s, const st_stage_batch_t *b, st_error_t *err)
{
    uint32_t B = s->p.prefix_block;

    if (b->n_kvops == 0)
        return ST_OK;
    if (!b->kvops || b->n_kvops > ST_KVOP_MAX)
        return st_error_set(err, ST_ERR_RANGE, "stage: %u prefix-cache ops (at most %u)",
                            b->n_kvops, ST_KVOP_MAX);
    if (!s->ptag)
        return st_error_set(err, ST_ERR_INVALID, "stage: prefix-cache ops, but this stage "
                            "has no prefix cache");
    for (uint32_t i = 0; i < b->n_kvops; i++) {
        const st_kvop_t *op = &b->kvops[i];
        if (op->kind < ST_KVOP_SAVE_PRE || op->kind > ST_KVOP_SAVE_POST)
            return st_error_set(err, ST_ERR_RANGE, "stage: prefix-cache op %u: kind %u", i,
                                op->kind);
        if (op->slot >= s->p.n_slots || op->block >= s->p.prefix_blocks || op->tag == 0 ||
            op->pos % B || op->pos > s->p.n_ctx - B)
            return st_error_set(err, ST_ERR_RANGE, "stage: prefix-cache op %u: slot %u, "
                                "position %u, block %u, tag %" PRIu64 " outside %u slots, "
                                "context %u in blocks of %u, %u blocks", i, op->slot, op->pos,
                                op->block, op->tag, s->p.n_slots, s->p.n_ctx, B,
                                s->p.prefix_blocks);
    }
    return ST_OK;
}

static st_status_t copy_block(st_stage_t *s, const st_kvop_t *op, int load)
{
    const st_backend_ops_t *o = s->be.ops;
    uint64_t B = s->p.prefix_block;

    for (int v = 0; v < 2; v++) {
        uint64_t rb = row_bytes(s, v), bytes = B * rb;
        uint64_t coff = ((uint64_t)op->slot * s->p.n_ctx + op->pos) * rb;
        if (!rb)
            continue;
        for (uint32_t l = 0; l < s->n_layers; l++) {
            uint8_t *cache = (uint8_t *)(v ? s->v_cache[l] : s->k_cache[l]) + coff;
            uint8_t *pool = (v ? s->pv[l] : s->pk[l]) + op->block * bytes;
            st_status_t st = load ? o->to_device(s->be.ctx, cache, pool, (size_t)bytes)
                                  : o->to_host(s->be.ctx, pool, cache, (size_t)bytes);
            if (st != ST_OK)
                return st;
        }
    }
    return ST_OK;
}

st_status_t st_stage_kv_ops(st_stage_t *s, const st_stage_batch_t *b, int pre, st_error_t *err)
{
    st_status_t st;

    for (uint32_t i = 0; i < b->n_kvops; i++) {
        const st_kvop_t *op = &b->kvops[i];
        int load = op->kind == ST_KVOP_LOAD;
        if ((op->kind == ST_KVOP_SAVE_POST) == (pre != 0))
            continue;
        if (load && s->ptag[op->block] != op->tag)
            return st_error_set(err, ST_ERR_NOT_FOUND, "stage: prefix-cache block %u holds "
                                "tag %" PRIu64 ", the load wants %" PRIu64 " (the pool was "
                                "reset or the scheduler is out of step)", op->block,
                                s->ptag[op->block], op->tag);
        /* Saving reads what the forward wrote: queued device work first. */
        if (!load && (st = s->be.ops->sync(s->be.ctx)) != ST_OK)
            return st_error_set(err, st, "stage: backend sync before a prefix-cache save failed");
        if ((st = copy_block(s, op, load)) != ST_OK)
            return st_error_set(err, st, "stage: prefix-cache copy of block %u failed", op->block);
        if (!load)
            s->ptag[op->block] = op->tag;
    }
    return ST_OK;
}
