/*
 * stage.c - the stage executor (see st_stage.h).
 *
 * All buffers are sized at create time from max_batch / max_out and live in
 * backend memory; st_stage_forward only moves the caller's inputs in,
 * runs the layers through the backend table, and moves results out. The
 * layers themselves are the model family's forward (layers.c): this file
 * is the same for every architecture.
 */
#include "st_stage.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"
#include "st_util.h"
#include "stage_internal.h"

/* Bound for the weight list handed to a backend's weights_load. */
#define STAGE_MAX_LAYERS 512

st_stage_params_t st_stage_default_params(const st_model_t *model)
{
    st_stage_params_t p;
    memset(&p, 0, sizeof(p));
    p.size = sizeof(p);
    p.model = model;
    p.first_layer = 0;
    p.last_layer = model ? st_model_hparams(model)->n_layer : 0;
    p.n_ctx = 2048;
    p.n_slots = 1;
    p.max_batch = 512;
    p.max_out = 1;
    p.backend = "cpu";
    p.n_threads = 0;
    p.kv_type = ST_KV_TYPE_DEFAULT;
    p.prefix_block = ST_PREFIX_BLOCK;
    return p;
}

static st_status_t check_params(const st_stage_params_t *p, st_error_t *err)
{
    const st_hparams_t *hp;

    if (!p || p->size < sizeof(*p) || !p->model)
        return st_error_set(err, ST_ERR_INVALID, "stage: missing parameters or model");
    hp = st_model_hparams(p->model);
    if (p->first_layer >= p->last_layer || p->last_layer > hp->n_layer)
        return st_error_set(err, ST_ERR_RANGE, "stage: layer range [%u, %u) invalid for %u layers",
                            p->first_layer, p->last_layer, hp->n_layer);
    if (p->n_ctx == 0 || p->n_ctx > (1u << 24))
        return st_error_set(err, ST_ERR_RANGE, "stage: n_ctx %u out of range", p->n_ctx);
    if (p->n_slots == 0 || p->n_slots > 4096)
        return st_error_set(err, ST_ERR_RANGE, "stage: n_slots %u out of range", p->n_slots);
    if (p->max_batch == 0 || p->max_batch > 65536)
        return st_error_set(err, ST_ERR_RANGE, "stage: max_batch %u out of range", p->max_batch);
    if (p->last_layer == hp->n_layer && (p->max_out == 0 || p->max_out > p->max_batch))
        return st_error_set(err, ST_ERR_RANGE, "stage: max_out %u must be in 1..max_batch",
                            p->max_out);
    /* The type may come from a coordinator's plan: a real check. */
    if (!st_kv_type_valid(p->kv_type))
        return st_error_set(err, ST_ERR_UNSUPPORTED, "stage: KV cache type %u is not one this "
                            "build knows (%s)", p->kv_type, ST_KV_TYPE_NAMES);
    /* A Q8_0 row is whole blocks of 32, and every head must start on one. */
    if (p->kv_type == ST_DTYPE_Q8_0 &&
        (hp->head_dim % 32 || (hp->head_dim_v && hp->head_dim_v % 32) || hp->kv_k_dim % 32 ||
         hp->kv_v_dim % 32))
        return st_error_set(err, ST_ERR_UNSUPPORTED, "stage: a q8_0 KV cache needs head widths "
                            "that are multiples of 32 (head_dim %u, value %u, rows %u/%u); "
                            "use --kv-type f16", hp->head_dim, hp->head_dim_v, hp->kv_k_dim,
                            hp->kv_v_dim);
    return ST_OK;
}

float *st_stage_alloc(st_stage_t *s, uint64_t n_floats, st_status_t *st)
{
    float *ptr;
    if (*st != ST_OK)
        return NULL;
    ptr = s->be.ops->alloc(s->be.ctx, (size_t)n_floats * sizeof(float));
    if (!ptr)
        *st = ST_ERR_NOMEM;
    return ptr;
}

void st_stage_free_buf(st_stage_t *s, void *ptr)
{
    if (ptr)
        s->be.ops->free(s->be.ctx, ptr);
}

#define balloc st_stage_alloc
#define bfree st_stage_free_buf

static const struct { unsigned bit; const char *name; } need_names[] = {
    {ST_NEED_ROPE_EX, "rope_ex"}, {ST_NEED_ADD_ROW, "add_row"}, {ST_NEED_GEGLU, "geglu"},
    {ST_NEED_SCALE, "scale"}, {ST_NEED_SOFTCAP, "softcap"}, {ST_NEED_COPY2D, "copy2d"},
    {ST_NEED_AXPY, "axpy"}, {ST_NEED_ATTN_EX, "extended attention"},
};

st_status_t st_stage_need_ops(const st_stage_t *s, unsigned need, st_error_t *err)
{
    const st_backend_ops_t *o = s->be.ops;
    unsigned have = (o->rope_ex ? ST_NEED_ROPE_EX : 0) | (o->add_row ? ST_NEED_ADD_ROW : 0) |
                    (o->geglu ? ST_NEED_GEGLU : 0) | (o->scale ? ST_NEED_SCALE : 0) |
                    (o->softcap ? ST_NEED_SOFTCAP : 0) | (o->copy2d ? ST_NEED_COPY2D : 0) |
                    (o->axpy ? ST_NEED_AXPY : 0) |
                    ((o->features & ST_BE_ATTN_EX) ? ST_NEED_ATTN_EX : 0);
    for (size_t i = 0; i < ST_ARRAY_SIZE(need_names); i++)
        if ((need & need_names[i].bit) && !(have & need_names[i].bit))
            return st_error_set(err, ST_ERR_UNSUPPORTED, "stage: the %s backend has no %s op, "
                                "which %s models need", o->name, need_names[i].name,
                                st_model_arch(s->p.model));
    return ST_OK;
}

static uint64_t tensor_bytes(const st_tensor_t *t)
{
    return t ? t->nbytes : 0;
}

static st_status_t load_weights(st_stage_t *s, st_error_t *err)
{
    const st_tensor_t **list;
    size_t n = 0;
    st_status_t st;

    if (!s->be.ops->weights_load)
        return ST_OK;
    if (s->n_layers > STAGE_MAX_LAYERS)
        return st_error_set(err, ST_ERR_RANGE, "stage: too many layers (%u)", s->n_layers);
    list = malloc(((size_t)s->n_layers * ST_LAYER_MAX_TENSORS + 3) * sizeof *list);
    if (!list)
        return st_error_set(err, ST_ERR_NOMEM, "stage: out of memory");
    for (uint32_t l = s->p.first_layer; l < s->p.last_layer; l++) {
        const st_layer_t *L = st_model_layer(s->p.model, l);
        for (uint32_t i = 0; i < L->n_all; i++)
            list[n++] = L->all[i];
    }
    if (st_stage_is_first(s))
        list[n++] = st_model_tok_embd(s->p.model);
    if (st_stage_is_last(s)) {
        list[n++] = st_model_output_norm(s->p.model);
        if (st_model_output(s->p.model) != st_model_tok_embd(s->p.model) || !st_stage_is_first(s))
            list[n++] = st_model_output(s->p.model);
    }
    st = s->be.ops->weights_load(s->be.ctx, list, n, err);
    free(list);
    return st;
}

/* The widest input row any matmul of this stage sees (sizes the backend's
 * activation scratch). */
static uint32_t stage_max_cols(const st_stage_t *s)
{
    uint64_t m = s->hp->n_embd;
    for (uint32_t l = s->p.first_layer; l < s->p.last_layer; l++) {
        const st_layer_t *L = st_model_layer(s->p.model, l);
        for (uint32_t i = 0; i < L->n_all; i++)
            if (L->all[i]->n_dims >= 2)
                m = ST_MAX(m, L->all[i]->ne[0]);
    }
    return (uint32_t)m;
}

st_status_t st_stage_create(const st_stage_params_t *params, st_stage_t **out, st_error_t *err)
{
    st_backend_params_t bp;
    st_stage_t *s;
    st_status_t st;
    uint64_t B;

    st = check_params(params, err);
    if (st != ST_OK)
        return st;
    s = calloc(1, sizeof(*s));
    if (!s)
        return st_error_set(err, ST_ERR_NOMEM, "stage: out of memory");
    s->p = *params;
    s->hp = st_model_hparams(params->model);
    s->n_layers = params->last_layer - params->first_layer;
    if (!st_stage_is_last(s))
        s->p.max_out = 0;
    s->impl = st_layer_impl(st_model_family(params->model));
    if (!s->impl) {
        st = st_error_set(err, ST_ERR_UNSUPPORTED, "stage: no layer forward for architecture "
                          "'%s'", st_model_arch(params->model));
        goto err_free;
    }

    memset(&bp, 0, sizeof(bp));
    bp.size = sizeof(bp);
    bp.n_threads = params->n_threads;
    bp.device = params->device;
    bp.max_batch = params->max_batch;
    bp.max_cols = stage_max_cols(s);
    st = st_backend_open(params->backend ? params->backend : "cpu", &bp, &s->be, err);
    if (st != ST_OK)
        goto err_free;
    if ((params->kv_type == ST_DTYPE_F16 && !(s->be.ops->features & ST_BE_KV_F16)) ||
        (params->kv_type == ST_DTYPE_Q8_0 && !(s->be.ops->features & ST_BE_KV_Q8_0))) {
        st = st_error_set(err, ST_ERR_UNSUPPORTED, "stage: backend %s has no %s KV cache; use "
                          "--kv-type f32", s->be.ops->name, st_dtype_name(params->kv_type));
        goto err_backend;
    }
    if ((s->hp->embd_scale != 1.0f && (st = st_stage_need_ops(s, ST_NEED_SCALE, err)) != ST_OK) ||
        (s->hp->final_softcap > 0.0f &&
         (st = st_stage_need_ops(s, ST_NEED_SOFTCAP, err)) != ST_OK))
        goto err_backend;

    B = params->max_batch;
    s->x   = balloc(s, B * s->hp->n_embd, &st);
    s->xb  = balloc(s, B * s->hp->n_embd, &st);
    s->xb2 = balloc(s, B * s->hp->n_embd, &st);
    if (st_stage_is_last(s)) {
        s->xo     = balloc(s, (uint64_t)s->p.max_out * s->hp->n_embd, &st);
        s->logits = balloc(s, (uint64_t)s->p.max_out * s->hp->n_vocab, &st);
    }
    if (st != ST_OK) {
        st_error_set(err, st, "stage: cannot allocate activations for batch %u", params->max_batch);
        goto err_bufs;
    }

    s->k_cache = calloc(s->n_layers, sizeof(void *));
    s->v_cache = calloc(s->n_layers, sizeof(void *));
    if (!s->k_cache || !s->v_cache) {
        st = st_error_set(err, ST_ERR_NOMEM, "stage: out of memory");
        goto err_bufs;
    }
    /* Caches are allocated zeroed and touched only as positions fill, so
     * resident memory grows with use, not with n_ctx. An MLA model caches
     * only K (the latent and the rope key); its values are read from it. */
    for (uint32_t l = 0; l < s->n_layers; l++) {
        uint64_t per = (uint64_t)params->n_slots * params->n_ctx;
        uint64_t kb = per * st_dtype_row_bytes(params->kv_type, s->hp->kv_k_dim);
        uint64_t vb = per * st_dtype_row_bytes(params->kv_type, s->hp->kv_v_dim);
        s->k_cache[l] = balloc(s, (kb + 3) / 4, &st);
        if (s->hp->kv_v_dim)
            s->v_cache[l] = balloc(s, (vb + 3) / 4, &st);
        s->kv_bytes += kb + vb;
    }
    if (st != ST_OK) {
        st_error_set(err, st, "stage: cannot allocate KV cache of %llu bytes",
                     (unsigned long long)s->kv_bytes);
        goto err_kv;
    }

    if ((st = st_stage_prefix_init(s, err)) != ST_OK)
        goto err_kv;

    if (st_stage_is_last(s)) {
        s->out_rows = calloc(params->max_batch, sizeof(int32_t));
        s->host_logits = calloc((size_t)s->p.max_out * s->hp->n_vocab, sizeof(float));
        s->samplers = calloc(params->n_slots, sizeof(st_sampler_t *));
        if (!s->out_rows || !s->host_logits || !s->samplers) {
            st = st_error_set(err, ST_ERR_NOMEM, "stage: out of memory for output buffers");
            goto err_host;
        }
    }
    if ((st = s->impl->init(s, err)) != ST_OK)
        goto err_host;

    st = load_weights(s, err);
    if (st != ST_OK)
        goto err_fam;

    snprintf(s->desc, sizeof(s->desc), "layers %u-%u of %u on %s, %s KV cache",
             params->first_layer, params->last_layer - 1, s->hp->n_layer,
             s->be.ops->describe ? s->be.ops->describe(s->be.ctx) : s->be.ops->name,
             st_dtype_name(params->kv_type));
    *out = s;
    return ST_OK;

err_fam:
    s->impl->fini(s);
err_host:
    free(s->samplers);
    free(s->host_logits);
    free(s->out_rows);
    st_stage_prefix_fini(s);
err_kv:
    for (uint32_t l = 0; s->k_cache && l < s->n_layers; l++) {
        bfree(s, s->k_cache[l]);
        bfree(s, s->v_cache[l]);
    }
err_bufs:
    free(s->k_cache);
    free(s->v_cache);
    bfree(s, s->x); bfree(s, s->xb); bfree(s, s->xb2);
    bfree(s, s->xo); bfree(s, s->logits);
err_backend:
    st_backend_close(&s->be);
err_free:
    free(s);
    return st;
}

void st_stage_free(st_stage_t *s)
{
    if (!s)
        return;
    if (s->samplers)
        for (uint32_t i = 0; i < s->p.n_slots; i++)
            st_sampler_free(s->samplers[i]);
    s->impl->fini(s);
    free(s->samplers);
    free(s->host_logits);
    free(s->out_rows);
    st_stage_prefix_fini(s);
    for (uint32_t l = 0; l < s->n_layers; l++) {
        bfree(s, s->k_cache[l]);
        bfree(s, s->v_cache[l]);
    }
    free(s->k_cache);
    free(s->v_cache);
    bfree(s, s->x); bfree(s, s->xb); bfree(s, s->xb2);
    bfree(s, s->xo); bfree(s, s->logits);
    st_backend_close(&s->be);
    free(s);
}

int st_stage_is_first(const st_stage_t *s) { return s->p.first_layer == 0; }
int st_stage_is_last(const st_stage_t *s)  { return s->p.last_layer == s->hp->n_layer; }
uint32_t st_stage_n_embd(const st_stage_t *s)  { return s->hp->n_embd; }
uint32_t st_stage_n_vocab(const st_stage_t *s) { return s->hp->n_vocab; }
const char *st_stage_describe(const st_stage_t *s) { return s->desc; }
uint64_t st_stage_kv_bytes(const st_stage_t *s) { return s->kv_bytes; }

uint64_t st_stage_weight_bytes(const st_stage_t *s)
{
    uint64_t b = 0;
    for (uint32_t l = s->p.first_layer; l < s->p.last_layer; l++)
        b += st_model_layer_active_bytes(s->p.model, l);
    if (st_stage_is_first(s))
        b += st_model_tok_embd(s->p.model)->row_bytes;   /* one row per token */
    if (st_stage_is_last(s))
        b += tensor_bytes(st_model_output_norm(s->p.model)) +
             tensor_bytes(st_model_output(s->p.model));
    return b;
}

st_status_t st_stage_slot_setup(st_stage_t *s, uint32_t slot, const st_sampler_params_t *p)
{
    st_status_t st;
    if (slot >= s->p.n_slots)
        return ST_ERR_RANGE;
    if (!st_stage_is_last(s))
        return ST_OK;
    st_sampler_free(s->samplers[slot]);
    s->samplers[slot] = NULL;
    st = st_sampler_create(p, s->hp->n_vocab, &s->samplers[slot]);
    return st;
}

void st_stage_slot_accept(st_stage_t *s, uint32_t slot, const int32_t *ids, uint32_t n)
{
    if (slot >= s->p.n_slots || !s->samplers || !s->samplers[slot])
        return;
    for (uint32_t i = 0; i < n; i++)
        st_sampler_accept(s->samplers[slot], ids[i]);
}

/* Batch contents come from callers and, in the cluster, from the network:
 * every index is checked before it addresses memory. */
static st_status_t check_batch(const st_stage_t *s, const st_stage_batch_t *b, st_error_t *err)
{
    if (!b || b->n == 0 || b->n > s->p.max_batch)
        return st_error_set(err, ST_ERR_RANGE, "stage: batch of %u tokens (max %u)",
                            b ? b->n : 0, s->p.max_batch);
    if (!b->pos || !b->slot)
        return st_error_set(err, ST_ERR_INVALID, "stage: batch without positions or slots");
    if (st_stage_is_first(s) ? !b->tokens : !b->hidden)
        return st_error_set(err, ST_ERR_INVALID, "stage: batch without %s",
                            st_stage_is_first(s) ? "token ids" : "hidden state");
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->pos[i] < 0 || (uint32_t)b->pos[i] >= s->p.n_ctx)
            return st_error_set(err, ST_ERR_RANGE, "stage: token %u position %d outside context %u",
                                i, b->pos[i], s->p.n_ctx);
        if (b->slot[i] < 0 || (uint32_t)b->slot[i] >= s->p.n_slots)
            return st_error_set(err, ST_ERR_RANGE, "stage: token %u slot %d outside %u slots",
                                i, b->slot[i], s->p.n_slots);
        if (st_stage_is_first(s) && (b->tokens[i] < 0 || (uint32_t)b->tokens[i] >= s->hp->n_vocab))
            return st_error_set(err, ST_ERR_RANGE, "stage: token id %d outside vocabulary of %u",
                                b->tokens[i], s->hp->n_vocab);
    }
    return st_stage_kv_check(s, b, err);
}

static st_status_t run_head(st_stage_t *s, const st_stage_batch_t *b, st_stage_out_t *out,
                            st_error_t *err)
{
    const st_backend_ops_t *o = s->be.ops;
    void *c = s->be.ctx;
    const st_hparams_t *hp = s->hp;
    uint32_t n_out = 0;
    st_status_t st;

    for (uint32_t i = 0; i < b->n; i++) {
        int want = b->want ? b->want[i] != 0 : i == b->n - 1;
        if (!want)
            continue;
        if (n_out == s->p.max_out)
            return st_error_set(err, ST_ERR_RANGE, "stage: more than %u outputs requested",
                                s->p.max_out);
        /* Normalising row by row into a packed buffer lets the head run
         * only on the wanted rows. */
        o->rmsnorm(c, s->x + (size_t)i * hp->n_embd, st_model_output_norm(s->p.model),
                   hp->rms_eps, 1, (int)hp->n_embd, s->xo + (size_t)n_out * hp->n_embd);
        s->out_rows[n_out++] = (int32_t)i;
    }
    out->n_out = n_out;
    if (n_out == 0)
        return o->sync(c);
    o->matmul(c, st_model_output(s->p.model), s->xo, (int)n_out, s->logits);
    if (hp->final_softcap > 0.0f)
        o->softcap(c, s->logits, hp->final_softcap, (size_t)n_out * hp->n_vocab);

    if (!(b->flags & ST_STAGE_SAMPLE)) {
        if (!out->logits)
            return st_error_set(err, ST_ERR_INVALID, "stage: no logits buffer");
        return o->to_host(c, out->logits, s->logits, (size_t)n_out * hp->n_vocab * sizeof(float));
    }
    if (!out->ids)
        return st_error_set(err, ST_ERR_INVALID, "stage: no ids buffer");
    st = o->to_host(c, s->host_logits, s->logits, (size_t)n_out * hp->n_vocab * sizeof(float));
    if (st != ST_OK)
        return st_error_set(err, st, "stage: cannot read logits back");
    for (uint32_t j = 0; j < n_out; j++) {
        uint32_t slot = (uint32_t)b->slot[s->out_rows[j]];
        st_sampler_t *smp = s->samplers[slot];
        if (!smp)
            return st_error_set(err, ST_ERR_INVALID, "stage: slot %u has no sampler", slot);
        out->ids[j] = st_sampler_sample(smp, s->host_logits + (size_t)j * hp->n_vocab);
        st_sampler_accept(smp, out->ids[j]);
    }
    if (out->logits)
        memcpy(out->logits, s->host_logits, (size_t)n_out * hp->n_vocab * sizeof(float));
    return ST_OK;
}

st_status_t st_stage_forward(st_stage_t *s, const st_stage_batch_t *b, st_stage_out_t *out,
                             st_error_t *err)
{
    const st_backend_ops_t *o = s->be.ops;
    size_t hidden_bytes;
    st_status_t st;

    st = check_batch(s, b, err);
    if (st != ST_OK)
        return st;
    if (!out)
        return st_error_set(err, ST_ERR_INVALID, "stage: no output");
    out->n_out = 0;
    hidden_bytes = (size_t)b->n * s->hp->n_embd * sizeof(float);

    if (st_stage_is_first(s)) {
        o->get_rows(s->be.ctx, st_model_tok_embd(s->p.model), b->tokens, (int)b->n, s->x);
        if (s->hp->embd_scale != 1.0f)
            o->scale(s->be.ctx, s->x, s->hp->embd_scale, (size_t)b->n * s->hp->n_embd);
    } else if ((st = o->to_device(s->be.ctx, s->x, b->hidden, hidden_bytes)) != ST_OK)
        return st_error_set(err, st, "stage: cannot upload hidden state");

    if (b->n_kvops && (st = st_stage_kv_ops(s, b, 1, err)) != ST_OK)
        return st;
    for (uint32_t l = s->p.first_layer; l < s->p.last_layer; l++)
        s->impl->forward(s, l, b);
    if (b->n_kvops && (st = st_stage_kv_ops(s, b, 0, err)) != ST_OK)
        return st;

    if (!st_stage_is_last(s)) {
        if (!out->hidden)
            return st_error_set(err, ST_ERR_INVALID, "stage: no hidden-state buffer");
        out->n_out = b->n;
        return o->to_host(s->be.ctx, out->hidden, s->x, hidden_bytes);
    }
    return run_head(s, b, out, err);
}
