/*
 * arch_deepseek2.c - binding of deepseek2 (DeepSeek-V2, V2-Lite, V3, R1):
 * multi-head latent attention (MLA) and a mixture of experts (MoE).
 *
 * The file layout is the one llama.cpp's converter writes since it stores
 * MLA in its "MQA" form (see docs/ARCHITECTURES.md for the math):
 *   attention.head_count_kv = 1, key_length = kv_lora_rank + rope dims,
 *   value_length = kv_lora_rank, key_length_mla = qk_nope + qk_rope,
 *   value_length_mla = v_head_dim, rope.dimension_count = qk_rope;
 *   attn_q (or attn_q_a, attn_q_a_norm, attn_q_b when q_lora_rank > 0),
 *   attn_kv_a_mqa {n_embd, kv_lora + rope}, attn_kv_a_norm {kv_lora},
 *   attn_k_b {qk_nope, kv_lora, n_head}, attn_v_b {kv_lora, v_head, n_head},
 *   attn_output {n_head * v_head, n_embd}.
 * Older files carry attn_kv_b instead of attn_k_b/attn_v_b: they are
 * refused with a message saying to re-convert, since absorbing kv_b would
 * need a transposed copy of quantized weights.
 *
 * The first leading_dense_block_count layers have a dense FFN; the others
 * route each token to expert_used_count of expert_count experts (plus
 * expert_shared_count always-on shared experts).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "model_internal.h"

static st_status_t read_mla(st_bind_t *b)
{
    st_hparams_t *hp = &b->m->hp;
    uint32_t zero = 0, kl = 0, vl = 0, kl_mla = 0, vl_mla = 0, one = 1;
    st_status_t s;

    if ((s = st_bind_u32(b, "attention.head_count_kv", &one, 1, 1, &hp->n_head_kv)) != ST_OK ||
        (s = st_bind_u32(b, "attention.q_lora_rank", &zero, 0, 1u << 16, &hp->q_lora_rank)) != ST_OK ||
        (s = st_bind_u32(b, "attention.kv_lora_rank", NULL, 1, 1u << 16, &hp->kv_lora_rank)) != ST_OK ||
        (s = st_bind_u32(b, "rope.dimension_count", NULL, 2, 1u << 12, &hp->qk_rope_dim)) != ST_OK ||
        (s = st_bind_u32(b, "attention.key_length", NULL, 1, 1u << 17, &kl)) != ST_OK ||
        (s = st_bind_u32(b, "attention.value_length", NULL, 1, 1u << 17, &vl)) != ST_OK)
        return s;
    {
        char k[96];
        snprintf(k, sizeof k, "%s.attention.key_length_mla", b->arch);
        if (st_gguf_find_key(b->g, k) < 0)
            return st_bind_error(b, ST_ERR_UNSUPPORTED, "key '%s': missing: this file stores "
                                 "MLA in the older attn_kv_b form; re-convert it with a "
                                 "llama.cpp converter from mid-2025 or later", k);
    }
    if ((s = st_bind_u32(b, "attention.key_length_mla", NULL, 1, 1u << 16, &kl_mla)) != ST_OK ||
        (s = st_bind_u32(b, "attention.value_length_mla", NULL, 1, 1u << 16, &vl_mla)) != ST_OK)
        return s;
    if (hp->qk_rope_dim % 2 || hp->qk_rope_dim >= kl_mla)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s.rope.dimension_count': %" PRIu32
                             " must be even and below key_length_mla %" PRIu32, b->arch,
                             hp->qk_rope_dim, kl_mla);
    if (kl != hp->kv_lora_rank + hp->qk_rope_dim)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s.attention.key_length': %" PRIu32
                             " is not kv_lora_rank + rope dims (%" PRIu32 ")", b->arch, kl,
                             hp->kv_lora_rank + hp->qk_rope_dim);
    if (vl != hp->kv_lora_rank)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s.attention.value_length': %" PRIu32
                             " is not kv_lora_rank (%" PRIu32 ")", b->arch, vl, hp->kv_lora_rank);
    hp->qk_nope_dim = kl_mla - hp->qk_rope_dim;
    hp->v_head_dim_mla = vl_mla;
    /* The attention itself runs as MQA over the cached latent + rope key. */
    hp->head_dim = kl;
    hp->head_dim_v = vl;
    hp->rope_dim = hp->qk_rope_dim;
    hp->rope_mode = ST_ROPE_NORM;
    hp->kv_k_dim = kl;
    hp->kv_v_dim = 0;
    /* YaRN's attention-factor correction folds into the score scale (the
     * rope sin/cos stay unscaled), as in DeepSeek's reference code. */
    float mscale = 1.0f + hp->yarn_log_mul * logf(1.0f / hp->rope_freq_scale);
    hp->attn_scale = mscale * mscale / sqrtf((float)kl_mla);
    return ST_OK;
}

static st_status_t read_moe(st_bind_t *b)
{
    st_hparams_t *hp = &b->m->hp;
    uint32_t zero = 0, lead = 0;
    st_status_t s;

    if ((s = st_bind_u32(b, "feed_forward_length", NULL, 1, 1u << 22, &hp->n_ff)) != ST_OK ||
        (s = st_bind_u32(b, "leading_dense_block_count", &zero, 0, hp->n_layer, &lead)) != ST_OK ||
        (s = st_bind_u32(b, "expert_count", &zero, 0, 1u << 14, &hp->n_expert)) != ST_OK)
        return s;
    hp->n_layer_dense_lead = hp->n_expert ? lead : hp->n_layer;
    if (hp->n_expert == 0)
        return ST_OK;
    return st_bind_moe_keys(b, 0);
}

static st_status_t bind_attn(st_bind_t *b, int i)
{
    const st_hparams_t *hp = &b->m->hp;
    st_layer_t *l = &b->m->layers[i];
    uint64_t d = hp->n_embd, qh = (uint64_t)hp->n_head * (hp->qk_nope_dim + hp->qk_rope_dim);
    char name[64];
    st_status_t s;

    snprintf(name, sizeof name, "blk.%d.attn_kv_b.weight", i);
    if (st_gguf_find_tensor(b->g, name) && !l->wk_b) {
        snprintf(name, sizeof name, "blk.%d.attn_k_b.weight", i);
        if (!st_gguf_find_tensor(b->g, name))
            return st_bind_error(b, ST_ERR_UNSUPPORTED, "tensor 'blk.%d.attn_kv_b.weight': the "
                                 "older MLA layout; re-convert with a llama.cpp converter that "
                                 "writes attn_k_b / attn_v_b", i);
    }
    if ((s = st_bind_tensor(b, i, "attn_norm", d, 0, 0, ST_BIND_F32, &l->attn_norm)) != ST_OK)
        return s;
    if (hp->q_lora_rank) {
        if ((s = st_bind_tensor(b, i, "attn_q_a", d, hp->q_lora_rank, 0, 0, &l->wq_a)) != ST_OK ||
            (s = st_bind_tensor(b, i, "attn_q_a_norm", hp->q_lora_rank, 0, 0, ST_BIND_F32,
                                &l->q_a_norm)) != ST_OK ||
            (s = st_bind_tensor(b, i, "attn_q_b", hp->q_lora_rank, qh, 0, 0, &l->wq_b)) != ST_OK)
            return s;
    } else if ((s = st_bind_tensor(b, i, "attn_q", d, qh, 0, 0, &l->wq)) != ST_OK) {
        return s;
    }
    if ((s = st_bind_tensor(b, i, "attn_kv_a_mqa", d, hp->kv_lora_rank + hp->qk_rope_dim, 0, 0,
                            &l->wkv_a)) != ST_OK ||
        (s = st_bind_tensor(b, i, "attn_kv_a_norm", hp->kv_lora_rank, 0, 0, ST_BIND_F32,
                            &l->kv_a_norm)) != ST_OK ||
        (s = st_bind_tensor(b, i, "attn_k_b", hp->qk_nope_dim, hp->kv_lora_rank, hp->n_head, 0,
                            &l->wk_b)) != ST_OK ||
        (s = st_bind_tensor(b, i, "attn_v_b", hp->kv_lora_rank, hp->v_head_dim_mla, hp->n_head, 0,
                            &l->wv_b)) != ST_OK ||
        (s = st_bind_tensor(b, i, "attn_output", (uint64_t)hp->n_head * hp->v_head_dim_mla, d, 0,
                            0, &l->wo)) != ST_OK ||
        (s = st_bind_views(b, l->wk_b, &l->k_b_head)) != ST_OK ||
        (s = st_bind_views(b, l->wv_b, &l->v_b_head)) != ST_OK)
        return s;
    return ST_OK;
}

st_status_t st_arch_bind_deepseek2(st_bind_t *b)
{
    st_hparams_t *hp = &b->m->hp;
    st_status_t s;

    if ((s = read_mla(b)) != ST_OK || (s = read_moe(b)) != ST_OK)
        return s;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        if ((s = bind_attn(b, (int)i)) != ST_OK)
            return s;
        if (i < hp->n_layer_dense_lead)
            s = st_bind_dense_ffn(b, (int)i, hp->n_ff, "ffn_norm");
        else
            s = st_bind_moe_layer(b, (int)i);
        if (s != ST_OK)
            return s;
    }
    return ST_OK;
}
