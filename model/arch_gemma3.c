/*
 * arch_gemma3.c - binding of gemma3 (Gemma 3 text models).
 *
 * What differs from Llama, as llama.cpp's converter writes it and as its
 * gemma3 graph reads it:
 * - the token embedding is scaled by sqrt(n_embd);
 * - RMSNorm weights are stored with Gemma's "+1" already added by the
 *   converter, so they are used like any other norm weight;
 * - per-head RMSNorm of Q and K, then NEOX rope;
 * - norms after attention and after the FFN too (post_attention_norm,
 *   post_ffw_norm) before each residual add;
 * - GeGLU (tanh-approximated GELU) instead of SwiGLU;
 * - 5 of every 6 layers attend only the last attention.sliding_window
 *   positions with rope base 10000; every 6th layer is global with
 *   rope.freq_base (and the file's rope scaling). The period can be given
 *   by attention.sliding_window_pattern (u32); llama.cpp fixes it at 6;
 * - optional logit soft-capping (attn_logit_softcapping,
 *   final_logit_softcapping), Gemma 2 style, when the file has the keys;
 * - attention scale 1/sqrt(key_length) unless attention.scale is given
 *   (Gemma 3 27B needs attention.scale = 1/sqrt(n_embd / n_head): llama.cpp
 *   special-cases that size, strata reads it from the key).
 */
#include <math.h>

#include "model_internal.h"

st_status_t st_arch_bind_gemma3(st_bind_t *b)
{
    st_hparams_t *hp = &b->m->hp;
    uint32_t period = 6;
    st_status_t s;

    hp->rope_mode = ST_ROPE_NEOX;
    if ((s = st_bind_gqa_shape(b)) != ST_OK ||
        (s = st_bind_u32(b, "feed_forward_length", NULL, 1, 1u << 22, &hp->n_ff)) != ST_OK ||
        (s = st_bind_pos_f32(b, "attention.scale", hp->attn_scale, &hp->attn_scale)) != ST_OK ||
        (s = st_bind_u32(b, "attention.sliding_window", NULL, 1, 1u << 30,
                         &hp->swa_window)) != ST_OK ||
        (s = st_bind_u32(b, "attention.sliding_window_pattern", &period, 1, 1u << 16,
                         &period)) != ST_OK ||
        (s = st_bind_pos_f32(b, "rope.freq_base_swa", 10000.0f, &hp->rope_theta_swa)) != ST_OK ||
        (s = st_bind_f32(b, "attn_logit_softcapping", 0.0f, 0.0f, 1e6f, &hp->attn_softcap)) != ST_OK ||
        (s = st_bind_f32(b, "final_logit_softcapping", 0.0f, 0.0f, 1e6f,
                         &hp->final_softcap)) != ST_OK)
        return s;
    hp->embd_scale = sqrtf((float)hp->n_embd);
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        st_layer_t *l = &b->m->layers[i];
        int global = period == 1 || i % period == period - 1;
        if (!global) {
            l->swa_window = hp->swa_window;
            l->rope_theta = hp->rope_theta_swa;
            l->rope_freq_scale = 1.0f;
        }
        if ((s = st_arch_bind_gqa_attn(b, (int)i, ST_ATTN_QK_NORM)) != ST_OK ||
            (s = st_bind_tensor(b, (int)i, "post_attention_norm", hp->n_embd, 0, 0, ST_BIND_F32,
                                &l->attn_post_norm)) != ST_OK ||
            (s = st_bind_dense_ffn(b, (int)i, hp->n_ff, "ffn_norm")) != ST_OK ||
            (s = st_bind_tensor(b, (int)i, "post_ffw_norm", hp->n_embd, 0, 0, ST_BIND_F32,
                                &l->ffn_post_norm)) != ST_OK)
            return s;
    }
    return ST_OK;
}
