/*
 * model_internal.h - what the architecture bindings (model/arch_*.c) share
 * with the generic loader (model.c, model_bind.c). Not a public header.
 *
 * An architecture is one entry of the table in arch.c: its GGUF name, the
 * family whose layer forward runs it (worker/layer_*.c) and a bind function
 * that reads the hyper-parameters and binds every tensor through the
 * helpers below. The helpers validate as they read (range, shape, type) and
 * fill the caller's error with the file, key or tensor and the reason, so a
 * binding is a list of what the architecture needs and nothing else.
 */
#ifndef ST_MODEL_INTERNAL_H
#define ST_MODEL_INTERNAL_H

#include <stdint.h>

#include "st_crypt.h"
#include "st_gguf.h"
#include "st_model.h"

struct st_model {
    st_gguf_t          *gguf;
    st_hparams_t        hp;
    st_layer_t         *layers;
    st_tensor_t        *views;     /* per-expert / per-head 2-D views, all layers */
    uint64_t            n_views, cap_views;
    const st_tensor_t  *tok_embd;
    const st_tensor_t  *output_norm;
    const st_tensor_t  *output;
    const struct st_arch *arch_desc;
    char                arch[33];
    char               *name;
    st_crypt_t         *crypt;     /* encrypted model: owns the plaintext */
};

/* Binding context: the file, the architecture prefix for keys, the error. */
typedef struct st_bind {
    const st_gguf_t *g;
    const char      *path;
    const char      *arch;     /* key prefix: "<arch>.block_count" */
    st_error_t      *err;
    st_model_t      *m;
} st_bind_t;

typedef struct st_arch {
    const char  *name;         /* general.architecture */
    st_family_t  family;
    /* Reads m->hp (block_count etc. already read by st_bind_common) and
     * binds the tensors of every layer. */
    st_status_t (*bind)(st_bind_t *b);
} st_arch_t;

const st_arch_t *st_arch_find(const char *name, uint64_t len);

/* ---- metadata ---- */
/* "<arch>.<suffix>" as a required (dflt NULL) or optional u32 in [lo, hi]. */
st_status_t st_bind_u32(st_bind_t *b, const char *suffix, const uint32_t *dflt, uint32_t lo,
                        uint32_t hi, uint32_t *out);
/* Optional finite float in [lo, hi]. */
st_status_t st_bind_f32(st_bind_t *b, const char *suffix, float dflt, float lo, float hi,
                        float *out);
/* Optional positive finite float. */
st_status_t st_bind_pos_f32(st_bind_t *b, const char *suffix, float dflt, float *out);
st_status_t st_bind_bool(st_bind_t *b, const char *suffix, int dflt, int *out);
/* A key the family does not implement: refused when present with a value
 * other than `neutral` (so a file never runs with a silently ignored knob). */
st_status_t st_bind_refuse_u32(st_bind_t *b, const char *suffix, uint32_t neutral, const char *why);
/* A key missing or of the wrong type, named with its stored type. */
st_status_t st_bind_key_error(st_bind_t *b, const char *key, st_status_t s);
st_status_t st_bind_error(st_bind_t *b, st_status_t s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* block_count, embedding_length, head_count, context_length, rms epsilon,
 * rope base and rope scaling (none, linear, yarn): what every family reads. */
st_status_t st_bind_common(st_bind_t *b);
/* The Llama-style attention shape: head_count_kv, key_length (= value
 * length), rope.dimension_count; sets head_dim, head_dim_v and kv dims. */
st_status_t st_bind_gqa_shape(st_bind_t *b);

/* ---- tensors ---- */
enum {
    ST_BIND_F32  = 1u << 0,    /* norms, biases, routers read as plain floats */
    ST_BIND_OPT  = 1u << 1     /* may be absent: *out = NULL */
};
/* Tensor `name` (layer < 0: global, else "blk.<layer>.<name>.weight", or
 * ".bias" when the name ends in ".bias") with exactly the shape
 * {ne0[, ne1[, ne2]]} (0 ends the list). A layer tensor is added to the
 * layer's list of all tensors. */
st_status_t st_bind_tensor(st_bind_t *b, int layer, const char *name, uint64_t ne0, uint64_t ne1,
                           uint64_t ne2, unsigned flags, const st_tensor_t **out);
/* n 2-D views of a 3-D tensor's slices (experts, heads), owned by the model. */
st_status_t st_bind_views(st_bind_t *b, const st_tensor_t *t, const st_tensor_t **out);
/* token_embd, output_norm, output (tied to the embedding when absent). */
st_status_t st_bind_embd_output(st_bind_t *b);
/* The Llama-style FFN: ffn_norm, ffn_gate, ffn_up, ffn_down of width n_ff. */
st_status_t st_bind_dense_ffn(st_bind_t *b, int layer, uint32_t n_ff, const char *norm_name);

/* Attention tensors of a grouped-query layer (llama family, gemma3):
 * attn_norm, attn_q/k/v, attn_output, plus what `what` asks for. */
enum {
    ST_ATTN_BIAS_OPT = 1u << 0,   /* Q/K/V biases when present */
    ST_ATTN_BIAS     = 1u << 1,   /* Q/K/V biases required */
    ST_ATTN_QK_NORM  = 1u << 2    /* per-head attn_q_norm / attn_k_norm required */
};
st_status_t st_arch_bind_gqa_attn(st_bind_t *b, int layer, unsigned what);

/* Mixture of experts (bind_moe.c): the keys from expert_used_count on (the
 * caller has read expert_count > 0), default_norm being the family's
 * expert_weights_norm when the key is absent; and one layer's router,
 * stacked experts (with per-expert views), optional selection bias and
 * shared experts. */
st_status_t st_bind_moe_keys(st_bind_t *b, int default_norm);
st_status_t st_bind_moe_layer(st_bind_t *b, int layer);

#endif /* ST_MODEL_INTERNAL_H */
