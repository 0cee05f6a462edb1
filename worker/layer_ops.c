/*
 * layer_ops.c - the pieces layer forwards compose (see stage_internal.h):
 * shared-input matmuls, rope in the model's mode, gated FFNs and
 * grouped-query attention with the options the families use.
 */
#include <math.h>
#include <string.h>

#include "stage_internal.h"
#include "st_util.h"

void st_lo_matmul_shared(st_stage_t *s, int n_w, const st_tensor_t *const *w, const float *x,
                         int n, float *const *out)
{
    const st_backend_ops_t *o = s->be.ops;
    /* One call lets the CPU backend quantize x once and wake its threads
     * once instead of n_w times. */
    if (o->matmul_multi) {
        o->matmul_multi(s->be.ctx, n_w, w, x, n, out);
        return;
    }
    for (int i = 0; i < n_w; i++)
        o->matmul(s->be.ctx, w[i], x, n, out[i]);
}

float st_lo_yarn_mscale(const st_hparams_t *hp)
{
    if (hp->yarn_ext_factor == 0.0f || hp->rope_freq_scale >= 1.0f)
        return 1.0f;
    return 1.0f + 0.1f * logf(1.0f / hp->rope_freq_scale);
}

void st_lo_rope(st_stage_t *s, float *x, int n, int row_stride, int n_heads, int head_stride,
                int offset, const int32_t *pos, float theta, float freq_scale, float mscale)
{
    const st_hparams_t *hp = s->hp;
    const st_backend_ops_t *o = s->be.ops;
    int yarn = hp->yarn_ext_factor != 0.0f && freq_scale != 1.0f;

    /* The plain Llama case keeps the backend's own (cached) rope op. */
    if (hp->rope_mode == ST_ROPE_NORM && !yarn && offset == 0 && mscale == 1.0f &&
        row_stride == n_heads * head_stride) {
        o->rope(s->be.ctx, x, n, n_heads, head_stride, (int)hp->rope_dim, pos, theta, freq_scale);
        return;
    }
    st_rope_args_t r = {
        .x = x, .n = n, .row_stride = row_stride, .n_heads = n_heads,
        .head_stride = head_stride, .offset = offset, .rope_dim = (int)hp->rope_dim,
        .pos = pos, .neox = hp->rope_mode == ST_ROPE_NEOX, .theta = theta,
        .freq_scale = freq_scale, .ext_factor = yarn ? hp->yarn_ext_factor : 0.0f,
        .beta_fast = hp->yarn_beta_fast, .beta_slow = hp->yarn_beta_slow,
        .n_ctx_orig = (int)hp->yarn_orig_ctx, .mscale = mscale,
    };
    o->rope_ex(s->be.ctx, &r);
}

void st_lo_glu_ffn(st_stage_t *s, const st_tensor_t *gate, const st_tensor_t *up,
                   const st_tensor_t *down, const float *x, int n, st_act_t act, float *h1,
                   float *h2, float *out)
{
    const st_backend_ops_t *o = s->be.ops;
    size_t m = (size_t)n * gate->ne[1];

    st_lo_matmul_shared(s, 2, (const st_tensor_t *const[]){gate, up}, x, n,
                        (float *const[]){h1, h2});
    if (act == ST_ACT_SILU)
        o->swiglu(s->be.ctx, h1, h2, m, h1);
    else
        o->geglu(s->be.ctx, h1, h2, m, h1);
    o->matmul(s->be.ctx, down, h1, n, out);
}

st_status_t st_lo_gqa_alloc(st_stage_t *s, st_gqa_bufs_t *g, st_error_t *err)
{
    const st_hparams_t *hp = s->hp;
    uint64_t B = s->p.max_batch, q = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim;
    st_status_t st = ST_OK;

    memset(g, 0, sizeof *g);
    g->q = st_stage_alloc(s, B * q, &st);
    g->att = st_stage_alloc(s, B * q, &st);
    g->k = st_stage_alloc(s, B * kv, &st);
    g->v = st_stage_alloc(s, B * kv, &st);
    if (hp->n_expert == 0 || hp->n_layer_dense_lead > 0) {   /* a dense FFN runs */
        g->h1 = st_stage_alloc(s, B * hp->n_ff, &st);
        g->h2 = st_stage_alloc(s, B * hp->n_ff, &st);
    }
    if (st != ST_OK) {
        st_lo_gqa_free(s, g);
        return st_error_set(err, st, "stage: cannot allocate activations for batch %u",
                            s->p.max_batch);
    }
    return ST_OK;
}

void st_lo_gqa_free(st_stage_t *s, st_gqa_bufs_t *g)
{
    st_stage_free_buf(s, g->q);
    st_stage_free_buf(s, g->att);
    st_stage_free_buf(s, g->k);
    st_stage_free_buf(s, g->v);
    st_stage_free_buf(s, g->h1);
    st_stage_free_buf(s, g->h2);
    memset(g, 0, sizeof *g);
}

void st_lo_gqa_attention(st_stage_t *s, const st_layer_t *L, uint32_t li,
                         const st_stage_batch_t *b, st_gqa_bufs_t *g, const float *xn, float *out)
{
    const st_backend_ops_t *o = s->be.ops;
    void *c = s->be.ctx;
    const st_hparams_t *hp = s->hp;
    const int n = (int)b->n, hd = (int)hp->head_dim;
    const int q_dim = (int)hp->n_head * hd, kv_dim = (int)hp->n_head_kv * hd;
    float mscale = st_lo_yarn_mscale(hp);
    st_attn_args_t a;

    st_lo_matmul_shared(s, 3, (const st_tensor_t *const[]){L->wq, L->wk, L->wv}, xn, n,
                        (float *const[]){g->q, g->k, g->v});
    if (L->bq) {
        o->add_row(c, g->q, L->bq, n, q_dim);
        o->add_row(c, g->k, L->bk, n, kv_dim);
        o->add_row(c, g->v, L->bv, n, kv_dim);
    }
    if (L->q_norm) {   /* per-head RMSNorm: heads are rows of head_dim */
        o->rmsnorm(c, g->q, L->q_norm, hp->rms_eps, n * (int)hp->n_head, hd, g->q);
        o->rmsnorm(c, g->k, L->k_norm, hp->rms_eps, n * (int)hp->n_head_kv, hd, g->k);
    }
    st_lo_rope(s, g->q, n, q_dim, (int)hp->n_head, hd, 0, b->pos, L->rope_theta,
               L->rope_freq_scale, L->rope_freq_scale == 1.0f ? 1.0f : mscale);
    st_lo_rope(s, g->k, n, kv_dim, (int)hp->n_head_kv, hd, 0, b->pos, L->rope_theta,
               L->rope_freq_scale, L->rope_freq_scale == 1.0f ? 1.0f : mscale);
    o->kv_store(c, g->k, g->v, n, kv_dim, b->slot, b->pos, s->k_cache[li], s->v_cache[li],
                (int)s->p.n_ctx, s->p.kv_type);

    memset(&a, 0, sizeof(a));
    a.n_tokens = n;
    a.n_head = (int)hp->n_head;
    a.n_head_kv = (int)hp->n_head_kv;
    a.head_dim = hd;
    a.q = g->q;
    a.k_cache = s->k_cache[li];
    a.v_cache = s->v_cache[li];
    a.n_ctx = (int)s->p.n_ctx;
    a.kv_type = s->p.kv_type;
    a.slot = b->slot;
    a.pos = b->pos;
    a.scale = hp->attn_scale;
    a.out = g->att;
    a.window = (int)L->swa_window;
    a.softcap = hp->attn_softcap;
    o->attention(c, &a);
    o->matmul(c, L->wo, g->att, n, out);
}
