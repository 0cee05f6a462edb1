/*
 * st_tp.h - tensor-parallel partition of a stage's layers over N ranks: the
 * device-independent half of `--tp N` (docs/CUDA.md, "Tensor parallelism").
 *
 * Megatron's split. Inside a layer each rank owns whole attention heads
 * (whole GQA groups: some KV heads and every query head that reads them)
 * and a contiguous share of the FFN hidden units. Matrices that produce
 * per-head or per-unit values (wq, wk, wv and their biases, gate, up) are
 * split by rows, so a rank computes its own heads and units from the full,
 * replicated input. The matrices that consume them (wo, down) are split by
 * columns, so each rank's product is a partial sum of the full output:
 * one all-reduce (sum over ranks) after the attention output projection
 * and one after the FFN down projection restore the replicated residual
 * stream. Nothing else crosses ranks. Norms, the MoE router and MLA's
 * low-rank projections are replicated (every rank computes them).
 *
 *   st_tp_layer_t tl;                       // what rank r owns of layer L
 *   if (st_tp_layer_split(hp, family, L, n_ranks, r, &tl, &err) != ST_OK) ...
 *   for (uint32_t i = 0; i < tl.n_parts; i++) {
 *       st_tensor_t view;                  // rank r's slice, copied out
 *       st_tp_part_extract(&tl.parts[i], buf, tl.parts[i].bytes, &view, &err);
 *   }
 *   st_tp_rank_hparams(hp, &tl, &rank_hp);   // heads, widths, KV dims of r
 *
 * or, for a model's layer range, st_tp_plan_create() once and
 * st_tp_plan_layer() per layer and rank. Every refusal is one line in err
 * naming what does not divide (heads) or the tensor and block size whose
 * columns would be cut inside a quantization block.
 */
#ifndef ST_TP_H
#define ST_TP_H

#include <stdint.h>

#include "st_error.h"
#include "st_model.h"
#include "st_status.h"

#define ST_TP_MAX_RANKS 64

/* [first, first + count) along one dimension. */
typedef struct st_tp_range {
    uint64_t first, count;
} st_tp_range_t;

/* What one rank holds of one tensor of the layer. */
typedef struct st_tp_part {
    const st_tensor_t *t;       /* the layer's tensor (st_layer_t.all[i]) */
    int                split;   /* 0: replicated, the whole tensor on every rank */
    uint32_t           axis;    /* split dimension: 0 columns (1-D: elements),
                                   1 rows (of every matrix of a 3-D tensor),
                                   2 matrices (MLA's per-head attn_k_b/attn_v_b) */
    st_tp_range_t      range;   /* along axis; [0, ne[axis]) when replicated */
    uint64_t           bytes;   /* bytes of this rank's share */
} st_tp_part_t;

/* Where the partial outputs are summed over the ranks. */
typedef enum st_tp_reduce_point {
    /* after the attention output projection, before gemma3's post-attention
     * norm and before the residual add */
    ST_TP_REDUCE_ATTN_OUT = 0,
    /* after the FFN down projection (MoE: after the routed and the shared
     * experts are summed, one all-reduce for both), before gemma3's
     * post-FFN norm and the residual add */
    ST_TP_REDUCE_FFN_OUT = 1
} st_tp_reduce_point_t;

typedef struct st_tp_reduce {
    st_tp_reduce_point_t point;
    const st_tensor_t   *after;     /* the column-split tensor producing the
                                       partials (wo; w_down, or down_exps) */
    uint32_t             floats;    /* per token: n_embd */
} st_tp_reduce_t;

#define ST_TP_MAX_REDUCE 2

/* Everything rank `rank` of `n_ranks` owns of one layer. */
typedef struct st_tp_layer {
    uint32_t      rank, n_ranks;
    st_tp_range_t heads;        /* query heads */
    st_tp_range_t kv_heads;     /* K/V heads (GQA); MLA: {0, 1}, the latent,
                                   which every rank caches whole */
    st_tp_range_t ff;           /* dense FFN hidden units (gate/up rows, down
                                   columns); {0, 0} in a MoE layer */
    st_tp_range_t ff_exp;       /* each routed expert's hidden units */
    st_tp_range_t ff_shexp;     /* the shared experts' hidden units */
    uint32_t      kv_k_dim, kv_v_dim;   /* this rank's KV-cache floats per token */
    uint64_t      bytes;        /* weight bytes this rank holds of the layer */
    uint32_t      n_parts;      /* = L->n_all, in the order of L->all */
    st_tp_part_t  parts[ST_LAYER_MAX_TENSORS];
    uint32_t      n_reduce;     /* all-reduces per layer, in execution order */
    st_tp_reduce_t reduce[ST_TP_MAX_REDUCE];
} st_tp_layer_t;

/* Partitions layer L (of a model of family fam with hyper-parameters hp)
 * and writes what `rank` owns into *out. Rules (docs/CUDA.md):
 *   - GQA (llama, qwen2/3, gemma3): n_head_kv must be a multiple of
 *     n_ranks; rank r owns KV heads [r k, (r+1) k), k = n_head_kv / n_ranks,
 *     and the query heads of those groups. KV heads are not replicated.
 *   - MLA (deepseek2): n_head a multiple of n_ranks; the latent KV cache and
 *     the low-rank projections are replicated.
 *   - FFN (dense, shared experts, and every routed expert alike): hidden
 *     units split as evenly as the down matrix's quantization blocks allow
 *     (shares differ by at most one block); each rank needs one block.
 *   - column splits (wo, down) must start and end on block boundaries;
 *     otherwise ST_ERR_UNSUPPORTED naming the tensor and the block size.
 * A tensor of L->all without a rule is refused too (a new architecture's
 * tensor must get one). n_ranks 1 gives the whole layer to rank 0. */
st_status_t st_tp_layer_split(const st_hparams_t *hp, st_family_t fam, const st_layer_t *L,
                              uint32_t n_ranks, uint32_t rank, st_tp_layer_t *out,
                              st_error_t *err);

/* The part of tensor t in tl, or NULL when t is not one of the layer's. */
const st_tp_part_t *st_tp_layer_part(const st_tp_layer_t *tl, const st_tensor_t *t);

/* Copies the rank's share of p->t into dst (dst_bytes >= p->bytes) and
 * describes it in *view: the same name and type, ne[p->axis] = count,
 * row_bytes/nbytes of the slice, data = dst. This is what a rank uploads
 * to its GPU. Tensors of more than three dimensions are refused. */
st_status_t st_tp_part_extract(const st_tp_part_t *p, void *dst, uint64_t dst_bytes,
                               st_tensor_t *view, st_error_t *err);

/* hp as seen by one rank of tl: n_head, n_head_kv, n_ff, n_ff_exp,
 * n_ff_shexp, kv_k_dim and kv_v_dim of its share; everything else (widths,
 * head_dim, attn_scale, rope) unchanged. */
void st_tp_rank_hparams(const st_hparams_t *hp, const st_tp_layer_t *tl, st_hparams_t *out);

/* ---- a model's layer range ---------------------------------------------- */

typedef struct st_tp_plan st_tp_plan_t;

/* Partitions layers [first, last) of m over n_ranks (checks every layer and
 * rank; the first refusal is returned, prefixed with the layer). */
st_status_t st_tp_plan_create(const st_model_t *m, uint32_t first, uint32_t last,
                              uint32_t n_ranks, st_tp_plan_t **out, st_error_t *err);
void        st_tp_plan_destroy(st_tp_plan_t *p);
/* Layer l (absolute index) as rank r holds it; NULL outside the plan. */
const st_tp_layer_t *st_tp_plan_layer(const st_tp_plan_t *p, uint32_t l, uint32_t r);
/* Weight bytes rank r holds of the plan's layers. */
uint64_t             st_tp_plan_rank_bytes(const st_tp_plan_t *p, uint32_t r);

#endif /* ST_TP_H */
