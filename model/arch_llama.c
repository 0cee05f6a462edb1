/*
 * arch_llama.c - bindings of the Llama family: llama, qwen2 (Q/K/V biases,
 * NEOX rope), qwen3 (per-head RMSNorm of Q and K, NEOX rope) and qwen3moe
 * (qwen3 attention, every FFN a mixture of experts). All run the same
 * layer forward (worker/layer_llama.c); the optional tensors say which
 * steps apply.
 */
#include <stdio.h>

#include "model_internal.h"

st_status_t st_arch_bind_gqa_attn(st_bind_t *b, int i, unsigned what)
{
    const st_hparams_t *hp = &b->m->hp;
    st_layer_t *l = &b->m->layers[i];
    uint64_t d = hp->n_embd, q = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim;
    unsigned bf = ST_BIND_F32 | ((what & ST_ATTN_BIAS) ? 0 : ST_BIND_OPT);
    st_status_t s;

    if ((s = st_bind_tensor(b, i, "attn_norm", d, 0, 0, ST_BIND_F32, &l->attn_norm)) != ST_OK ||
        (s = st_bind_tensor(b, i, "attn_q", d, q, 0, 0, &l->wq)) != ST_OK ||
        (s = st_bind_tensor(b, i, "attn_k", d, kv, 0, 0, &l->wk)) != ST_OK ||
        (s = st_bind_tensor(b, i, "attn_v", d, kv, 0, 0, &l->wv)) != ST_OK ||
        (s = st_bind_tensor(b, i, "attn_output", q, d, 0, 0, &l->wo)) != ST_OK)
        return s;
    if ((what & (ST_ATTN_BIAS_OPT | ST_ATTN_BIAS)) &&
        ((s = st_bind_tensor(b, i, "attn_q.bias", q, 0, 0, bf, &l->bq)) != ST_OK ||
         (s = st_bind_tensor(b, i, "attn_k.bias", kv, 0, 0, bf, &l->bk)) != ST_OK ||
         (s = st_bind_tensor(b, i, "attn_v.bias", kv, 0, 0, bf, &l->bv)) != ST_OK))
        return s;
    if ((what & ST_ATTN_QK_NORM) &&
        ((s = st_bind_tensor(b, i, "attn_q_norm", hp->head_dim, 0, 0, ST_BIND_F32,
                             &l->q_norm)) != ST_OK ||
         (s = st_bind_tensor(b, i, "attn_k_norm", hp->head_dim, 0, 0, ST_BIND_F32,
                             &l->k_norm)) != ST_OK))
        return s;
    /* An output bias would be silently dropped: no converter of these
     * families writes one, so a file that has it is refused. */
    char name[64];
    snprintf(name, sizeof name, "blk.%d.attn_output.bias", i);
    if (st_gguf_find_tensor(b->g, name))
        return st_bind_error(b, ST_ERR_UNSUPPORTED, "tensor '%s': an attention output bias is "
                             "not supported", name);
    return ST_OK;
}

static st_status_t bind_family(st_bind_t *b, st_rope_mode_t mode, unsigned what)
{
    st_hparams_t *hp = &b->m->hp;
    st_status_t s;

    hp->rope_mode = mode;
    if ((s = st_bind_gqa_shape(b)) != ST_OK ||
        (s = st_bind_u32(b, "feed_forward_length", NULL, 1, 1u << 22, &hp->n_ff)) != ST_OK ||
        (s = st_bind_pos_f32(b, "attention.scale", hp->attn_scale, &hp->attn_scale)) != ST_OK ||
        (s = st_bind_refuse_u32(b, "expert_count", 0, "mixture-of-experts layers of this "
                                "architecture are not implemented")) != ST_OK)
        return s;
    for (uint32_t i = 0; i < hp->n_layer; i++)
        if ((s = st_arch_bind_gqa_attn(b, (int)i, what)) != ST_OK ||
            (s = st_bind_dense_ffn(b, (int)i, hp->n_ff, "ffn_norm")) != ST_OK)
            return s;
    return ST_OK;
}

st_status_t st_arch_bind_llama(st_bind_t *b)
{
    return bind_family(b, ST_ROPE_NORM, ST_ATTN_BIAS_OPT);
}

st_status_t st_arch_bind_qwen2(st_bind_t *b)
{
    return bind_family(b, ST_ROPE_NEOX, ST_ATTN_BIAS);
}

st_status_t st_arch_bind_qwen3(st_bind_t *b)
{
    return bind_family(b, ST_ROPE_NEOX, ST_ATTN_QK_NORM);
}

/* Qwen3-MoE (Qwen3-30B-A3B, 235B-A22B): softmax routing over expert_count
 * experts, no shared expert, no dense layers (llama.cpp's qwen3moe graph
 * routes every layer). llama.cpp normalizes the chosen weights for this
 * architecture whatever the file says; strata reads expert_weights_norm
 * when present and defaults to normalizing, as HF's norm_topk_prob = true
 * of the released models does. */
st_status_t st_arch_bind_qwen3moe(st_bind_t *b)
{
    st_hparams_t *hp = &b->m->hp;
    uint32_t zero = 0;
    st_status_t s;

    hp->rope_mode = ST_ROPE_NEOX;
    if ((s = st_bind_gqa_shape(b)) != ST_OK ||
        (s = st_bind_u32(b, "feed_forward_length", &zero, 0, 1u << 22, &hp->n_ff)) != ST_OK ||
        (s = st_bind_pos_f32(b, "attention.scale", hp->attn_scale, &hp->attn_scale)) != ST_OK ||
        (s = st_bind_u32(b, "expert_count", NULL, 1, 1u << 14, &hp->n_expert)) != ST_OK ||
        (s = st_bind_refuse_u32(b, "expert_shared_count", 0, "qwen3moe has no shared "
                                "experts")) != ST_OK ||
        (s = st_bind_moe_keys(b, 1)) != ST_OK)
        return s;
    hp->n_layer_dense_lead = 0;
    for (uint32_t i = 0; i < hp->n_layer; i++)
        if ((s = st_arch_bind_gqa_attn(b, (int)i, ST_ATTN_QK_NORM)) != ST_OK ||
            (s = st_bind_moe_layer(b, (int)i)) != ST_OK)
            return s;
    return ST_OK;
}
