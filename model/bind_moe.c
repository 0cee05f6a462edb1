/*
 * bind_moe.c - the mixture-of-experts keys and tensors as llama.cpp's
 * converter writes them, shared by the families with routed experts
 * (deepseek2, qwen3moe). See docs/ARCHITECTURES.md for the routing.
 */
#include <inttypes.h>
#include <stdio.h>

#include "model_internal.h"

st_status_t st_bind_moe_keys(st_bind_t *b, int default_norm)
{
    st_hparams_t *hp = &b->m->hp;
    uint32_t zero = 0, gating = ST_GATING_SOFTMAX;
    st_status_t s;

    if ((s = st_bind_u32(b, "expert_used_count", NULL, 1, hp->n_expert, &hp->n_expert_used)) != ST_OK ||
        (s = st_bind_u32(b, "expert_shared_count", &zero, 0, 1u << 10, &hp->n_expert_shared)) != ST_OK ||
        (s = st_bind_u32(b, "expert_feed_forward_length", NULL, 1, 1u << 22, &hp->n_ff_exp)) != ST_OK ||
        (s = st_bind_f32(b, "expert_weights_scale", 1.0f, 1e-6f, 1e6f,
                         &hp->expert_weights_scale)) != ST_OK ||
        (s = st_bind_bool(b, "expert_weights_norm", default_norm, &hp->expert_weights_norm)) != ST_OK ||
        (s = st_bind_u32(b, "expert_gating_func", &gating, 0, 2, &gating)) != ST_OK ||
        (s = st_bind_u32(b, "expert_group_count", &zero, 0, hp->n_expert, &hp->n_expert_group)) != ST_OK)
        return s;
    /* 0 ("none") is what older V2 files carry: llama.cpp reads it as softmax. */
    hp->expert_gating = gating == 2 ? ST_GATING_SIGMOID : ST_GATING_SOFTMAX;
    hp->n_ff_shexp = hp->n_ff_exp * hp->n_expert_shared;
    if (hp->n_expert_group > 1) {
        uint32_t per;
        if (hp->n_expert % hp->n_expert_group)
            return st_bind_error(b, ST_ERR_FORMAT, "key '%s.expert_group_count': %" PRIu32
                                 " does not divide expert_count %" PRIu32, b->arch,
                                 hp->n_expert_group, hp->n_expert);
        if ((s = st_bind_u32(b, "expert_group_used_count", NULL, 1, hp->n_expert_group,
                             &hp->n_expert_group_used)) != ST_OK)
            return s;
        per = hp->n_expert / hp->n_expert_group;
        /* Group scores sum each group's two best experts. */
        if (per < 2 || (uint64_t)hp->n_expert_group_used * per < hp->n_expert_used)
            return st_bind_error(b, ST_ERR_FORMAT, "key '%s.expert_group_used_count': %" PRIu32
                                 " groups of %" PRIu32 " experts cannot supply %" PRIu32
                                 " experts (or groups have fewer than 2)", b->arch,
                                 hp->n_expert_group_used, per, hp->n_expert_used);
    } else {
        hp->n_expert_group = 0;
    }
    return ST_OK;
}

st_status_t st_bind_moe_layer(st_bind_t *b, int i)
{
    const st_hparams_t *hp = &b->m->hp;
    st_layer_t *l = &b->m->layers[i];
    uint64_t d = hp->n_embd, f = hp->n_ff_exp, e = hp->n_expert;
    st_status_t s;

    l->is_moe = 1;
    if ((s = st_bind_tensor(b, i, "ffn_norm", d, 0, 0, ST_BIND_F32, &l->ffn_norm)) != ST_OK ||
        (s = st_bind_tensor(b, i, "ffn_gate_inp", d, e, 0, 0, &l->gate_inp)) != ST_OK ||
        (s = st_bind_tensor(b, i, "exp_probs_b.bias", e, 0, 0, ST_BIND_F32 | ST_BIND_OPT,
                            &l->exp_probs_b)) != ST_OK ||
        (s = st_bind_tensor(b, i, "ffn_gate_exps", d, f, e, 0, &l->gate_exps)) != ST_OK ||
        (s = st_bind_tensor(b, i, "ffn_up_exps", d, f, e, 0, &l->up_exps)) != ST_OK ||
        (s = st_bind_tensor(b, i, "ffn_down_exps", f, d, e, 0, &l->down_exps)) != ST_OK ||
        (s = st_bind_views(b, l->gate_exps, &l->exp_gate)) != ST_OK ||
        (s = st_bind_views(b, l->up_exps, &l->exp_up)) != ST_OK ||
        (s = st_bind_views(b, l->down_exps, &l->exp_down)) != ST_OK)
        return s;
    if (hp->n_expert_shared &&
        ((s = st_bind_tensor(b, i, "ffn_gate_shexp", d, hp->n_ff_shexp, 0, 0, &l->gate_shexp)) != ST_OK ||
         (s = st_bind_tensor(b, i, "ffn_up_shexp", d, hp->n_ff_shexp, 0, 0, &l->up_shexp)) != ST_OK ||
         (s = st_bind_tensor(b, i, "ffn_down_shexp", hp->n_ff_shexp, d, 0, 0, &l->down_shexp)) != ST_OK))
        return s;
    return ST_OK;
}

