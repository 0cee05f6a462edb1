/*
 * st_model.h - a model (llama, qwen2, qwen3, gemma3, deepseek2) bound to the
 * tensors of a GGUF file.
 *
 *   st_model_t *m;
 *   st_error_t err;
 *   if (st_model_open(path, NULL, &m, &err) != ST_OK) ...
 *   const st_hparams_t *hp = st_model_hparams(m);
 *   const st_layer_t *l0 = st_model_layer(m, 0);
 *   st_model_prefetch(m, 0, hp->n_layer, 1, progress_cb, ctx);   // page in layers
 *
 * st_model_open finds the architecture in the table (model/arch.c), lets its
 * binding read the hyper-parameters from metadata (block_count,
 * embedding_length, feed_forward_length, head counts, rope base and
 * dimension, rms epsilon, context length), refuses another architecture with
 * an error naming it, and checks that every required tensor is present with
 * the shape the architecture needs. The output matrix is `output.weight`
 * when present, else the token embedding (tied).
 *
 * Weights are used in place from the mapping: nothing is copied or
 * dequantized. An encrypted model (st_crypt.h) needs params->key; it is
 * decrypted into anonymous memory, only the layers asked for when a layer
 * range is given (the other tensors read as zeros), and then read exactly
 * like a plain file. A plain GGUF is mapped as before, key or not. st_model_prefetch touches only the requested layer range, so
 * a pipeline stage's resident memory is its own share of the file.
 */
#ifndef ST_MODEL_H
#define ST_MODEL_H

#include <stdint.h>

#include "st_error.h"
#include "st_gguf.h"
#include "st_status.h"
#include "st_tensor.h"

typedef struct st_model st_model_t;

/* How rope pairs dimensions: NORM rotates adjacent pairs (x[2j], x[2j+1])
 * (GGUF llama, deepseek2: the converter permutes the weights into this
 * order); NEOX rotates (x[j], x[j + rope_dim/2]) (qwen2, qwen3, gemma3,
 * whose converters leave Hugging Face's order alone). */
typedef enum st_rope_mode { ST_ROPE_NORM = 0, ST_ROPE_NEOX = 1 } st_rope_mode_t;

/* MoE router: the score each expert gets before top-k selection. */
typedef enum st_gating { ST_GATING_SOFTMAX = 1, ST_GATING_SIGMOID = 2 } st_gating_t;

/* Hyper-parameters of every architecture strata runs: one superset, each
 * family's binding (model/arch_*.c) fills what it uses and leaves the rest
 * at neutral values (0, or 1 for scales). */
typedef struct st_hparams {
    uint32_t n_layer;
    uint32_t n_embd;        /* model width (dim) */
    uint32_t n_ff;          /* dense FFN hidden width */
    uint32_t n_head;
    uint32_t n_head_kv;     /* K/V heads of grouped-query attention (1 for MLA) */
    uint32_t head_dim;      /* query/key head width (MLA: kv_lora_rank + rope dims) */
    uint32_t head_dim_v;    /* value head width (MLA: kv_lora_rank) */
    uint32_t n_vocab;
    uint32_t n_ctx_train;   /* context length the model was trained with */
    uint32_t rope_dim;      /* dimensions rotated per head (<= head_dim) */
    float    rope_theta;    /* rope.freq_base, default 10000 */
    float    rope_freq_scale; /* 1 / scaling factor (linear or YaRN), default 1 */
    float    rms_eps;
    st_rope_mode_t rope_mode;
    /* YaRN (rope.scaling.type yarn): ext_factor 1 mixes interpolated and
     * extrapolated frequencies between the beta_fast/beta_slow corrections
     * measured on yarn_orig_ctx; 0 when not YaRN. */
    float    yarn_ext_factor, yarn_beta_fast, yarn_beta_slow, yarn_log_mul;
    uint32_t yarn_orig_ctx;
    float    attn_scale;    /* multiplies q.k (1/sqrt(head dim) unless the family says) */
    float    embd_scale;    /* multiplies the token embedding (gemma: sqrt(n_embd)) */
    float    attn_softcap;  /* 0: none, else scores -> c * tanh(s / c) */
    float    final_softcap; /* same on the logits */
    uint32_t swa_window;    /* sliding-window layers attend this many positions */
    float    rope_theta_swa;/* rope base of sliding-window layers */
    /* multi-head latent attention (deepseek2) */
    uint32_t q_lora_rank;   /* 0: queries straight from attn_q */
    uint32_t kv_lora_rank;
    uint32_t qk_nope_dim, qk_rope_dim, v_head_dim_mla;
    /* mixture of experts */
    uint32_t n_expert, n_expert_used, n_expert_shared, n_layer_dense_lead;
    uint32_t n_ff_exp, n_ff_shexp;
    uint32_t n_expert_group, n_expert_group_used;   /* 0: no group limit */
    float    expert_weights_scale;                  /* 1 when absent */
    int      expert_weights_norm;
    st_gating_t expert_gating;
    /* KV cache floats per token per layer: K (MLA: latent + rope key) and
     * V (0 for MLA, whose values are the latent stored as K). */
    uint32_t kv_k_dim, kv_v_dim;
} st_hparams_t;

/* One layer's tensors (NULL where the architecture has none). */
typedef struct st_layer {
    const st_tensor_t *attn_norm;  /* [n_embd] f32 */
    const st_tensor_t *wq;         /* ne = {n_embd, n_head*head_dim} (MLA: no lora) */
    const st_tensor_t *wk;         /* ne = {n_embd, n_head_kv*head_dim} */
    const st_tensor_t *wv;         /* ne = {n_embd, n_head_kv*head_dim} */
    const st_tensor_t *bq, *bk, *bv; /* qwen2 biases, f32 */
    const st_tensor_t *q_norm, *k_norm;   /* per-head RMSNorm [head_dim] */
    const st_tensor_t *wo;         /* ne = {n_head*head_dim_v, n_embd} */
    const st_tensor_t *attn_post_norm;    /* gemma3 */
    /* MLA */
    const st_tensor_t *wq_a, *q_a_norm, *wq_b;   /* q_lora_rank > 0 */
    const st_tensor_t *wkv_a;      /* ne = {n_embd, kv_lora_rank + qk_rope_dim} */
    const st_tensor_t *kv_a_norm;  /* [kv_lora_rank] */
    const st_tensor_t *wk_b;       /* ne = {qk_nope_dim, kv_lora_rank, n_head} */
    const st_tensor_t *wv_b;       /* ne = {kv_lora_rank, v_head_dim_mla, n_head} */
    const st_tensor_t *k_b_head;   /* [n_head] 2-D views of wk_b */
    const st_tensor_t *v_b_head;   /* [n_head] 2-D views of wv_b */
    /* FFN (dense, or the shared experts of a MoE layer) */
    const st_tensor_t *ffn_norm;   /* [n_embd] f32 */
    const st_tensor_t *w_gate;     /* ne = {n_embd, n_ff} */
    const st_tensor_t *w_up;       /* ne = {n_embd, n_ff} */
    const st_tensor_t *w_down;     /* ne = {n_ff, n_embd} */
    const st_tensor_t *ffn_post_norm;     /* gemma3 */
    /* MoE */
    const st_tensor_t *gate_inp;   /* router ne = {n_embd, n_expert} */
    const st_tensor_t *exp_probs_b;/* selection bias [n_expert] f32 (V3) */
    const st_tensor_t *gate_exps, *up_exps, *down_exps;   /* 3-D, all experts */
    const st_tensor_t *exp_gate, *exp_up, *exp_down;      /* [n_expert] 2-D views */
    const st_tensor_t *gate_shexp, *up_shexp, *down_shexp;
    /* per-layer properties */
    uint32_t swa_window;           /* 0: global attention */
    float    rope_theta;           /* this layer's rope base */
    float    rope_freq_scale;
    int      is_moe;
    /* Every file tensor of the layer, once (views excluded): what a stage
     * maps, verifies, streams, decrypts and counts. */
#define ST_LAYER_MAX_TENSORS 32
    const st_tensor_t *all[ST_LAYER_MAX_TENSORS];
    uint32_t n_all;
} st_layer_t;

/* Earlier names, kept while callers move over. */
typedef st_hparams_t st_hparams_t;
typedef st_layer_t st_layer_t;

/* What the stage executor needs to pick the layer forward: the family's
 * number (st_model_family) indexes the worker's table of forwards. */
typedef enum st_family {
    ST_FAMILY_LLAMA = 0,     /* llama, qwen2, qwen3: GQA + SwiGLU (+ biases, q/k norms) */
    ST_FAMILY_GEMMA3,        /* GeGLU, pre/post norms, sliding window */
    ST_FAMILY_DEEPSEEK2,     /* MLA + MoE */
    ST_FAMILY_COUNT_
} st_family_t;

typedef struct st_model_open_params {
    uint32_t size;          /* sizeof(st_model_open_params_t): lets the struct grow */
    int      verbose;       /* reserved */
    /* Encrypted models (st_crypt.h, docs/ENCRYPTION.md), recognised by their
     * magic. The plaintext lives in anonymous memory only. */
    const uint8_t *key;     /* 32-byte AES-256 key; NULL: plain models only */
    uint32_t first_layer;   /* decrypt layers [first_layer, last_layer) ... */
    uint32_t last_layer;    /* ... 0: decrypt the whole file */
    int      with_embd;     /* with a layer range: 1 token embedding, 2 output
                               norm + head (the embedding when tied), 3 both */
    int      lock_memory;   /* mlock the plaintext (fails if RLIMIT_MEMLOCK is low) */
} st_model_open_params_t;

/* Progress callback for st_model_prefetch: bytes done out of total. */
typedef void (*st_model_progress_fn)(void *ctx, uint64_t done, uint64_t total);

st_status_t st_model_open(const char *path, const st_model_open_params_t *params,
                          st_model_t **out, st_error_t *err);
void        st_model_close(st_model_t *m);

const st_hparams_t *st_model_hparams(const st_model_t *m);
const st_layer_t   *st_model_layer(const st_model_t *m, uint32_t i);
st_family_t         st_model_family(const st_model_t *m);
/* Architectures strata runs, comma-separated ("llama, qwen2, ..."). */
const char         *st_model_supported_archs(void);
const st_tensor_t        *st_model_tok_embd(const st_model_t *m);
const st_tensor_t        *st_model_output_norm(const st_model_t *m);
const st_tensor_t        *st_model_output(const st_model_t *m);   /* tied -> tok_embd */
const st_gguf_t          *st_model_gguf(const st_model_t *m);
const char               *st_model_arch(const st_model_t *m);
const char               *st_model_name(const st_model_t *m);  /* general.name or file name */

/* Bytes of weights of layer i (all its tensors). */
uint64_t st_model_layer_bytes(const st_model_t *m, uint32_t i);
/* Bytes of the embedding + output (+ output norm): what the first and last
 * stages hold beside their layers. */
uint64_t st_model_embd_bytes(const st_model_t *m);
uint64_t st_model_output_bytes(const st_model_t *m);
/* Bytes of layer i a token reads: all of it for a dense layer; for a MoE
 * layer the router, attention, shared experts and only n_expert_used of
 * the routed experts (the decode benchmark's bytes per token). */
uint64_t st_model_layer_active_bytes(const st_model_t *m, uint32_t i);
/* KV-cache bytes per token per layer with elements of kv_type (ST_DTYPE_F32,
 * F16, Q8_0; MLA: the latent and rope key). 0 when a row is not whole blocks. */
uint64_t st_model_kv_bytes_per_token_layer(const st_model_t *m, uint32_t kv_type);
/* What a plain K/V cache of the same attention would need (MLA: every
 * head's full key and value), to report the saving. */
uint64_t st_model_kv_full_bytes_per_token_layer(const st_model_t *m, uint32_t kv_type);

/* Touch (read) the pages of layers [first, last), plus the embedding when
 * with_embd & 1 and the output head when with_embd & 2, reporting progress.
 * Uses madvise(WILLNEED) and reads one byte per page. */
/* Encrypted models: plaintext bytes decrypted at open (metadata included);
 * 0 for a plain model. */
uint64_t st_model_decrypted_bytes(const st_model_t *m);

st_status_t st_model_prefetch(const st_model_t *m, uint32_t first, uint32_t last,
                              int with_embd, st_model_progress_fn fn, void *ctx);

#endif /* ST_MODEL_H */
