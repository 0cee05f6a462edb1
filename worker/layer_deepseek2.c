/*
 * layer_deepseek2.c - the layer forward of DeepSeek-V2/V3: multi-head
 * latent attention (MLA) in its absorbed form, then a dense FFN (the first
 * leading_dense_block_count layers) or a mixture of experts (layer_moe.c).
 *
 * MLA (docs/ARCHITECTURES.md): per token the cache holds only
 * c = rmsnorm(kv_lora part of W_kv_a x) and k_pe = rope(its rope part),
 * kv_lora_rank + rope floats. A head's key would be [W_k_b[h] c | k_pe]
 * and its value W_v_b[h] c; instead of expanding them for every cached
 * position, the query is moved into the latent space once per token
 * (q_lat[h] = W_k_b[h]^T q_nope[h]), attention runs as MQA over the cached
 * rows [c | k_pe] with values = c, and each head's output is expanded once
 * (o[h] = W_v_b[h] o_lat[h]) before attn_output. The same products, in
 * another order.
 */
#include <stdlib.h>
#include <string.h>

#include "stage_internal.h"

typedef struct ds_state {
    float *q, *qa, *kva, *ckv, *nope, *lat, *qlat, *olat, *vt, *ov;
    float *h1, *h2;          /* dense FFN hidden (leading dense layers) */
    st_moe_t *moe;
} ds_state_t;

static void ds_free(st_stage_t *s, ds_state_t *d)
{
    float *bufs[] = {d->q, d->qa, d->kva, d->ckv, d->nope, d->lat, d->qlat, d->olat, d->vt,
                     d->ov, d->h1, d->h2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        st_stage_free_buf(s, bufs[i]);
    st_lo_moe_destroy(s, d->moe);
    free(d);
}

static st_status_t ds_init(st_stage_t *s, st_error_t *err)
{
    const st_hparams_t *hp = s->hp;
    const uint64_t B = s->p.max_batch, H = hp->n_head, R = hp->qk_rope_dim;
    const uint64_t kvl = hp->kv_lora_rank, qh = hp->qk_nope_dim + R;
    int dense = 0, moe = 0;
    st_status_t st;
    ds_state_t *d;

    if ((st = st_stage_need_ops(s, ST_NEED_ROPE_EX | ST_NEED_COPY2D | ST_NEED_ATTN_EX |
                                       ST_NEED_SCALE | ST_NEED_AXPY, err)) != ST_OK)
        return st;
    for (uint32_t l = s->p.first_layer; l < s->p.last_layer; l++) {
        if (st_model_layer(s->p.model, l)->is_moe)
            moe = 1;
        else
            dense = 1;
    }
    if (!(d = calloc(1, sizeof *d)))
        return st_error_set(err, ST_ERR_NOMEM, "stage: out of memory");
    st = ST_OK;
    d->q = st_stage_alloc(s, B * H * qh, &st);
    if (hp->q_lora_rank)
        d->qa = st_stage_alloc(s, B * hp->q_lora_rank, &st);
    d->kva = st_stage_alloc(s, B * (kvl + R), &st);
    d->ckv = st_stage_alloc(s, B * kvl, &st);
    d->nope = st_stage_alloc(s, B * hp->qk_nope_dim, &st);
    d->lat = st_stage_alloc(s, B * kvl, &st);
    d->qlat = st_stage_alloc(s, B * H * (kvl + R), &st);
    d->olat = st_stage_alloc(s, B * H * kvl, &st);
    d->vt = st_stage_alloc(s, B * hp->v_head_dim_mla, &st);
    d->ov = st_stage_alloc(s, B * H * hp->v_head_dim_mla, &st);
    if (dense) {
        d->h1 = st_stage_alloc(s, B * hp->n_ff, &st);
        d->h2 = st_stage_alloc(s, B * hp->n_ff, &st);
    }
    if (st != ST_OK) {
        ds_free(s, d);
        return st_error_set(err, st, "stage: cannot allocate activations for batch %u",
                            s->p.max_batch);
    }
    if (moe && (st = st_lo_moe_create(s, &d->moe, err)) != ST_OK) {
        ds_free(s, d);
        return st;
    }
    s->fam = d;
    return ST_OK;
}

static void ds_fini(st_stage_t *s)
{
    if (s->fam)
        ds_free(s, s->fam);
    s->fam = NULL;
}

static void mla(st_stage_t *s, const st_layer_t *L, uint32_t li, const st_stage_batch_t *b,
                ds_state_t *d, const float *xn, float *out)
{
    const st_backend_ops_t *o = s->be.ops;
    void *c = s->be.ctx;
    const st_hparams_t *hp = s->hp;
    const int n = (int)b->n, H = (int)hp->n_head, R = (int)hp->qk_rope_dim;
    const int kvl = (int)hp->kv_lora_rank, nope = (int)hp->qk_nope_dim, qh = nope + R;
    const int vh = (int)hp->v_head_dim_mla, row = kvl + R;
    st_attn_args_t a;

    if (L->wq_a) {
        o->matmul(c, L->wq_a, xn, n, d->qa);
        o->rmsnorm(c, d->qa, L->q_a_norm, hp->rms_eps, n, (int)hp->q_lora_rank, d->qa);
        o->matmul(c, L->wq_b, d->qa, n, d->q);
    } else {
        o->matmul(c, L->wq, xn, n, d->q);
    }
    o->matmul(c, L->wkv_a, xn, n, d->kva);
    /* Normalise the latent in place within each [latent | rope] row. */
    o->copy2d(c, d->ckv, kvl, d->kva, row, n, kvl);
    o->rmsnorm(c, d->ckv, L->kv_a_norm, hp->rms_eps, n, kvl, d->ckv);
    o->copy2d(c, d->kva, row, d->ckv, kvl, n, kvl);
    /* YaRN's magnitude correction is in attn_scale (the binding), so the
     * rotations here are pure. */
    st_lo_rope(s, d->kva, n, row, 1, row, kvl, b->pos, L->rope_theta, L->rope_freq_scale, 1.0f);
    st_lo_rope(s, d->q, n, H * qh, H, qh, nope, b->pos, L->rope_theta, L->rope_freq_scale, 1.0f);
    o->kv_store(c, d->kva, d->kva, n, row, b->slot, b->pos, s->k_cache[li], s->k_cache[li],
                (int)s->p.n_ctx, s->p.kv_type);

    for (int h = 0; h < H; h++) {
        o->copy2d(c, d->nope, nope, d->q + (size_t)h * qh, H * qh, n, nope);
        o->matmul(c, &L->k_b_head[h], d->nope, n, d->lat);
        o->copy2d(c, d->qlat + (size_t)h * row, H * row, d->lat, kvl, n, kvl);
        o->copy2d(c, d->qlat + (size_t)h * row + kvl, H * row, d->q + (size_t)h * qh + nope,
                  H * qh, n, R);
    }

    memset(&a, 0, sizeof(a));
    a.n_tokens = n;
    a.n_head = H;
    a.n_head_kv = 1;
    a.head_dim = row;
    a.head_dim_v = kvl;
    a.kv_stride = row;
    a.q = d->qlat;
    a.k_cache = s->k_cache[li];
    a.v_cache = s->k_cache[li];
    a.n_ctx = (int)s->p.n_ctx;
    a.kv_type = s->p.kv_type;
    a.slot = b->slot;
    a.pos = b->pos;
    a.scale = hp->attn_scale;
    a.out = d->olat;
    o->attention(c, &a);

    for (int h = 0; h < H; h++) {
        o->copy2d(c, d->lat, kvl, d->olat + (size_t)h * kvl, H * kvl, n, kvl);
        o->matmul(c, &L->v_b_head[h], d->lat, n, d->vt);
        o->copy2d(c, d->ov + (size_t)h * vh, H * vh, d->vt, vh, n, vh);
    }
    o->matmul(c, L->wo, d->ov, n, out);
}

static void ds_forward(st_stage_t *s, uint32_t l, const st_stage_batch_t *b)
{
    const st_backend_ops_t *o = s->be.ops;
    void *c = s->be.ctx;
    const st_hparams_t *hp = s->hp;
    const st_layer_t *L = st_model_layer(s->p.model, l);
    ds_state_t *d = s->fam;
    const int n = (int)b->n, dim = (int)hp->n_embd;

    o->rmsnorm(c, s->x, L->attn_norm, hp->rms_eps, n, dim, s->xb);
    mla(s, L, l - s->p.first_layer, b, d, s->xb, s->xb2);
    o->add(c, s->x, s->xb2, (size_t)n * dim);

    st_lo_ffn_residual(s, L, d->moe, d->h1, d->h2, n);
}

const st_layer_impl_t st_layer_deepseek2 = {"deepseek2", ds_init, ds_fini, ds_forward};
