/*
 * layer_llama.c - the layer forward of the Llama family (llama, qwen2,
 * qwen3, qwen3moe): pre-norm grouped-query attention and a SwiGLU FFN (or,
 * in a MoE layer, routed SwiGLU experts: layer_moe.c), each added to the
 * residual stream. Q/K/V biases (qwen2) and per-head Q/K norms (qwen3)
 * apply when the layer has them (st_lo_gqa_attention).
 */
#include <stdlib.h>

#include "stage_internal.h"

typedef struct llama_fam {
    st_gqa_bufs_t g;
    st_moe_t     *moe;   /* when the stage has MoE layers */
} llama_fam_t;

static void llama_fini(st_stage_t *s);

static st_status_t llama_init(st_stage_t *s, st_error_t *err)
{
    const st_hparams_t *hp = s->hp;
    unsigned need = hp->rope_mode == ST_ROPE_NEOX || hp->yarn_ext_factor != 0.0f
                        ? ST_NEED_ROPE_EX : 0;
    llama_fam_t *f;
    int moe = 0;
    st_status_t st;

    for (uint32_t l = s->p.first_layer; l < s->p.last_layer; l++) {
        if (st_model_layer(s->p.model, l)->bq)
            need |= ST_NEED_ADD_ROW;
        moe |= st_model_layer(s->p.model, l)->is_moe;
    }
    if ((st = st_stage_need_ops(s, need, err)) != ST_OK)
        return st;
    f = calloc(1, sizeof *f);
    if (!f)
        return st_error_set(err, ST_ERR_NOMEM, "stage: out of memory");
    if ((st = st_lo_gqa_alloc(s, &f->g, err)) != ST_OK) {
        free(f);
        return st;
    }
    s->fam = f;
    if (moe && (st = st_lo_moe_create(s, &f->moe, err)) != ST_OK) {
        llama_fini(s);
        return st;
    }
    return ST_OK;
}

static void llama_fini(st_stage_t *s)
{
    llama_fam_t *f = s->fam;
    if (f) {
        st_lo_moe_destroy(s, f->moe);
        st_lo_gqa_free(s, &f->g);
    }
    free(f);
    s->fam = NULL;
}

static void llama_forward(st_stage_t *s, uint32_t l, const st_stage_batch_t *b)
{
    const st_backend_ops_t *o = s->be.ops;
    void *c = s->be.ctx;
    const st_hparams_t *hp = s->hp;
    const st_layer_t *L = st_model_layer(s->p.model, l);
    llama_fam_t *f = s->fam;
    st_gqa_bufs_t *g = &f->g;
    const int n = (int)b->n, d = (int)hp->n_embd;

    o->rmsnorm(c, s->x, L->attn_norm, hp->rms_eps, n, d, s->xb);
    st_lo_gqa_attention(s, L, l - s->p.first_layer, b, g, s->xb, s->xb2);
    o->add(c, s->x, s->xb2, (size_t)n * d);

    st_lo_ffn_residual(s, L, f->moe, g->h1, g->h2, n);
}

const st_layer_impl_t st_layer_llama = {"llama", llama_init, llama_fini, llama_forward};
