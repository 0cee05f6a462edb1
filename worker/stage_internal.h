/*
 * stage_internal.h - what the layer forwards (worker/layer_*.c) share with
 * the stage executor (stage.c). Not a public header.
 *
 * The executor owns the residual stream, the KV caches, the embedding and
 * the head; a family's forward (one entry of the table in layers.c, picked
 * by st_model_family) runs one layer on the residual stream in place. The
 * executor never names an architecture: what differs between families is
 * the forward and the scratch its init allocates.
 */
#ifndef ST_STAGE_INTERNAL_H
#define ST_STAGE_INTERNAL_H

#include "st_stage.h"

struct st_stage {
    st_stage_params_t   p;
    const st_hparams_t *hp;
    st_backend_t        be;
    const struct st_layer_impl *impl;
    void               *fam;        /* the family's scratch (its init/fini) */
    uint32_t            n_layers;   /* last - first */
    /* residual stream and two [max_batch][n_embd] work rows, backend memory */
    float *x, *xb, *xb2, *xo, *logits;
    void **k_cache, **v_cache;      /* per local layer, rows of p.kv_type (v NULL when
                                       kv_v_dim is 0) */
    /* host-side scratch */
    int32_t *out_rows;              /* token index of each output row */
    float   *host_logits;           /* max_out x n_vocab, for sampling */
    st_sampler_t **samplers;        /* per slot, last stage only */
    uint64_t kv_bytes;
    /* prefix-cache pool (stage_prefix.c): per local layer, prefix_blocks x
     * prefix_block rows of K (and V), and the tag each block holds */
    uint8_t **pk, **pv;
    uint64_t *ptag;
    uint64_t  prefix_bytes;
    char     desc[256];
};

typedef struct st_layer_impl {
    const char *name;
    /* Allocates s->fam (and checks the backend has the ops it needs). */
    st_status_t (*init)(st_stage_t *s, st_error_t *err);
    void        (*fini)(st_stage_t *s);
    /* Layer `l` (absolute index) for batch b on s->x in place. */
    void        (*forward)(st_stage_t *s, uint32_t l, const st_stage_batch_t *b);
} st_layer_impl_t;

/* The forward of a family (layers.c); NULL for an unknown one. */
const st_layer_impl_t *st_layer_impl(st_family_t f);

/* The prefix-cache pool (stage_prefix.c): allocated at create, freed at
 * free; kv_ops checks a batch's ops and runs one phase of them (pre: 1 runs
 * SAVE_PRE and LOAD, 0 runs SAVE_POST). */
st_status_t st_stage_prefix_init(st_stage_t *s, st_error_t *err);
void        st_stage_prefix_fini(st_stage_t *s);
st_status_t st_stage_kv_check(const st_stage_t *s, const st_stage_batch_t *b, st_error_t *err);
st_status_t st_stage_kv_ops(st_stage_t *s, const st_stage_batch_t *b, int pre, st_error_t *err);

/* Backend memory of n floats (zeroed); on failure sets *st (once set,
 * further calls return NULL, so a run of allocations is checked once). */
float *st_stage_alloc(st_stage_t *s, uint64_t n_floats, st_status_t *st);
void   st_stage_free_buf(st_stage_t *s, void *ptr);

/* Ops a family may need beyond the Llama set, checked at init. */
enum {
    ST_NEED_ROPE_EX = 1u << 0, ST_NEED_ADD_ROW = 1u << 1, ST_NEED_GEGLU = 1u << 2,
    ST_NEED_SCALE = 1u << 3, ST_NEED_SOFTCAP = 1u << 4, ST_NEED_COPY2D = 1u << 5,
    ST_NEED_AXPY = 1u << 6, ST_NEED_ATTN_EX = 1u << 7
};
st_status_t st_stage_need_ops(const st_stage_t *s, unsigned need, st_error_t *err);

/* ---- shared pieces the families compose (layer_ops.c) ---- */

/* W x for weights that read the same x, in one backend call when it can. */
void st_lo_matmul_shared(st_stage_t *s, int n_w, const st_tensor_t *const *w, const float *x,
                         int n, float *const *out);
/* Rope of n_heads heads (head_stride apart, rotating rope_dim floats at
 * `offset`) in n rows, with the model's mode and YaRN settings, this
 * layer's base and scale, and sin/cos multiplied by mscale. */
void st_lo_rope(st_stage_t *s, float *x, int n, int row_stride, int n_heads, int head_stride,
                int offset, const int32_t *pos, float theta, float freq_scale, float mscale);
/* The mscale ggml's YaRN applies to sin/cos for the model's rope scaling. */
float st_lo_yarn_mscale(const st_hparams_t *hp);

/* A gated FFN's buffers and forward: out = down(act(gate x) * up x). */
typedef enum { ST_ACT_SILU, ST_ACT_GELU_TANH } st_act_t;
void st_lo_glu_ffn(st_stage_t *s, const st_tensor_t *gate, const st_tensor_t *up,
                   const st_tensor_t *down, const float *x, int n, st_act_t act, float *h1,
                   float *h2, float *out);

/* Grouped-query attention (llama family, gemma3): Q/K/V of the normed
 * input xn, optional biases and per-head Q/K norms, rope, KV store,
 * attention (window, softcap), output projection into out. */
typedef struct st_gqa_bufs {
    float *q, *k, *v, *att;     /* [B][q_dim], [B][kv_dim] x2, [B][q_dim] */
    float *h1, *h2;             /* FFN hidden [B][n_ff] */
} st_gqa_bufs_t;
st_status_t st_lo_gqa_alloc(st_stage_t *s, st_gqa_bufs_t *g, st_error_t *err);
void        st_lo_gqa_free(st_stage_t *s, st_gqa_bufs_t *g);
void        st_lo_gqa_attention(st_stage_t *s, const st_layer_t *L, uint32_t li,
                                const st_stage_batch_t *b, st_gqa_bufs_t *g, const float *xn,
                                float *out);

/* Mixture of experts (layer_moe.c): routes each token of xn to
 * n_expert_used experts, runs them and the shared experts, out = the
 * weighted sum. Scratch from st_lo_moe_create. */
typedef struct st_moe st_moe_t;
st_status_t st_lo_moe_create(st_stage_t *s, st_moe_t **out, st_error_t *err);
void        st_lo_moe_destroy(st_stage_t *s, st_moe_t *m);
void        st_lo_moe_forward(st_stage_t *s, st_moe_t *m, const st_layer_t *L, const float *xn,
                              int n, float *out);

/* x += FFN(rmsnorm(x, ffn_norm)) through s->xb / s->xb2: the layer's routed
 * experts (moe) when it has them, else its SwiGLU FFN with hidden buffers
 * h1, h2 (the llama and deepseek2 families; Gemma's post-norm differs). */
void        st_lo_ffn_residual(st_stage_t *s, const st_layer_t *L, st_moe_t *moe, float *h1,
                               float *h2, int n);

#endif /* ST_STAGE_INTERNAL_H */
