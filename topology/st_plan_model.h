/*
 * st_plan_model.h - the planner's model sizes read from a GGUF model.
 *
 *   st_plan_model_desc_t d;
 *   if (st_plan_model_from_file(path, n_ctx, &d, &err) != ST_OK) ...
 *   st_plan_params_t p = { .size = sizeof p, .model = d.model, .n_ctx = d.n_ctx, ... };
 *   ...
 *   st_plan_model_desc_free(&d);
 *
 * Weight bytes per layer, embedding and output bytes and KV bytes per token
 * come from model/st_model.h. The activation scratch per sequence is an
 * estimate from the hyper-parameters (f32 buffers of one decode step: the
 * residual and its normed copies, q/k/v, the attention scores over n_ctx and
 * the FFN hidden state); the logits (n_vocab f32 per sequence) are added to
 * the output bytes, since only the last stage holds them.
 */
#ifndef ST_PLAN_MODEL_H
#define ST_PLAN_MODEL_H

#include <stdint.h>

#include "st_error.h"
#include "st_plan.h"
#include "st_status.h"

typedef struct st_plan_model_desc {
    st_plan_model_t model;          /* layer_bytes/layer_work point into this struct's storage */
    uint64_t       *layer_bytes;    /* owned: [2 * n_layer], weight bytes then bytes read per token */
    uint64_t        logits_bytes_per_seq;  /* n_vocab * 4 */
    uint32_t        n_ctx;          /* the n_ctx used (n_ctx_train when 0 was asked) */
    uint32_t        n_ctx_train;
    char            name[128];
} st_plan_model_desc_t;

/* n_ctx 0 means the context length the model was trained with. n_seq scales
 * only the logits folded into output_bytes. */
st_status_t st_plan_model_from_file(const char *path, uint32_t n_ctx, uint32_t n_seq,
                                    st_plan_model_desc_t *out, st_error_t *err);
void        st_plan_model_desc_free(st_plan_model_desc_t *d);

#endif /* ST_PLAN_MODEL_H */
