/*
 * plan_model.c - fills st_plan_model_t from a model file (st_plan_model.h).
 */
#include "st_plan_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_model.h"
#include "st_util.h"

st_status_t st_plan_model_from_file(const char *path, uint32_t n_ctx, uint32_t n_seq,
                                    st_plan_model_desc_t *out, st_error_t *err)
{
    st_model_t *m = NULL;
    st_plan_model_desc_t d;
    memset(&d, 0, sizeof(d));
    if (n_seq == 0) return st_error_set(err, ST_ERR_INVALID, "plan: n_seq must be > 0");
    st_status_t s = st_model_open(path, NULL, &m, err);
    if (s != ST_OK) return s;

    const st_hparams_t *hp = st_model_hparams(m);
    if (hp->n_layer == 0 || hp->n_layer > ST_PLAN_MAX_LAYERS) {
        s = st_error_set(err, ST_ERR_RANGE, "%s: %u layers (planner takes 1..%u)", path,
                         hp->n_layer, ST_PLAN_MAX_LAYERS);
        goto err_model;
    }
    d.layer_bytes = malloc(2ull * hp->n_layer * sizeof(*d.layer_bytes));
    if (!d.layer_bytes) { s = st_error_set(err, ST_ERR_NOMEM, "plan: out of memory"); goto err_model; }
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        d.layer_bytes[i] = st_model_layer_bytes(m, i);
        d.layer_bytes[hp->n_layer + i] = st_model_layer_active_bytes(m, i);
    }
    d.n_ctx_train = hp->n_ctx_train;
    d.n_ctx = n_ctx ? n_ctx : hp->n_ctx_train;
    if (d.n_ctx == 0) {
        s = st_error_set(err, ST_ERR_FORMAT, "%s: no trained context length, give one", path);
        goto err_layers;
    }
    /* One decode step's f32 scratch, all sizes from the header (32-bit
     * values, so the sums stay far below 2^64). */
    uint64_t q = (uint64_t)hp->n_head * hp->head_dim, kv = (uint64_t)hp->n_head_kv * hp->head_dim;
    uint64_t floats = 4ull * hp->n_embd + q + 2 * kv + 2ull * hp->n_ff
                    + (uint64_t)hp->n_head * d.n_ctx;
    d.logits_bytes_per_seq = 4ull * hp->n_vocab;
    d.model.n_layer = hp->n_layer;
    d.model.layer_bytes = d.layer_bytes;
    d.model.layer_work = d.layer_bytes + hp->n_layer;
    d.model.embd_bytes = st_model_embd_bytes(m);
    if (st_add_overflow_u64(st_model_output_bytes(m), d.logits_bytes_per_seq * n_seq,
                            &d.model.output_bytes)) {
        s = st_error_set(err, ST_ERR_OVERFLOW, "%s: output bytes overflow", path);
        goto err_layers;
    }
    if (st_model_output(m) == st_model_tok_embd(m))   /* tied head: one tensor */
        d.model.shared_bytes = d.model.embd_bytes;
    /* The engine's default KV type (the cluster plans with its own). */
    d.model.kv_bytes_per_token_layer = st_model_kv_bytes_per_token_layer(m, ST_KV_TYPE_DEFAULT);
    d.model.act_bytes_per_seq = 4 * floats;
    snprintf(d.name, sizeof(d.name), "%s", st_model_name(m) ? st_model_name(m) : path);
    st_model_close(m);
    *out = d;
    return ST_OK;

err_layers:
    free(d.layer_bytes);
err_model:
    st_model_close(m);
    return s;
}

void st_plan_model_desc_free(st_plan_model_desc_t *d)
{
    if (!d) return;
    free(d->layer_bytes);
    d->layer_bytes = NULL;
    d->model.layer_bytes = NULL;
    d->model.layer_work = NULL;
}
