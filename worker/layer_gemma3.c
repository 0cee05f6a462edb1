/*
 * layer_gemma3.c - the layer forward of Gemma 3: like Llama with per-head
 * Q/K norms, a norm after attention and after the FFN (before each
 * residual add), GeGLU, and sliding-window attention on most layers (the
 * window and rope base per layer come from the binding, model/arch_gemma3.c).
 */
#include <stdlib.h>

#include "stage_internal.h"

static st_status_t gemma3_init(st_stage_t *s, st_error_t *err)
{
    st_gqa_bufs_t *g;
    st_status_t st;

    if ((st = st_stage_need_ops(s, ST_NEED_ROPE_EX | ST_NEED_GEGLU | ST_NEED_ATTN_EX, err)) != ST_OK)
        return st;
    g = calloc(1, sizeof *g);
    if (!g)
        return st_error_set(err, ST_ERR_NOMEM, "stage: out of memory");
    if ((st = st_lo_gqa_alloc(s, g, err)) != ST_OK) {
        free(g);
        return st;
    }
    s->fam = g;
    return ST_OK;
}

static void gemma3_fini(st_stage_t *s)
{
    if (s->fam)
        st_lo_gqa_free(s, s->fam);
    free(s->fam);
    s->fam = NULL;
}

static void gemma3_forward(st_stage_t *s, uint32_t l, const st_stage_batch_t *b)
{
    const st_backend_ops_t *o = s->be.ops;
    void *c = s->be.ctx;
    const st_hparams_t *hp = s->hp;
    const st_layer_t *L = st_model_layer(s->p.model, l);
    st_gqa_bufs_t *g = s->fam;
    const int n = (int)b->n, d = (int)hp->n_embd;

    o->rmsnorm(c, s->x, L->attn_norm, hp->rms_eps, n, d, s->xb);
    st_lo_gqa_attention(s, L, l - s->p.first_layer, b, g, s->xb, s->xb2);
    o->rmsnorm(c, s->xb2, L->attn_post_norm, hp->rms_eps, n, d, s->xb2);
    o->add(c, s->x, s->xb2, (size_t)n * d);

    o->rmsnorm(c, s->x, L->ffn_norm, hp->rms_eps, n, d, s->xb);
    st_lo_glu_ffn(s, L->w_gate, L->w_up, L->w_down, s->xb, n, ST_ACT_GELU_TANH, g->h1, g->h2,
                  s->xb2);
    o->rmsnorm(c, s->xb2, L->ffn_post_norm, hp->rms_eps, n, d, s->xb2);
    o->add(c, s->x, s->xb2, (size_t)n * d);
}

const st_layer_impl_t st_layer_gemma3 = {"gemma3", gemma3_init, gemma3_fini, gemma3_forward};
