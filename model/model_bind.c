/*
 * model_bind.c - the validating helpers every architecture binding uses
 * (see model_internal.h).
 *
 * Everything here is validation of outside input: hyper-parameters come
 * from metadata written by whatever converter produced the file, so each
 * one is range-checked and every tensor is checked for presence, exact
 * shape and (for norms) type before a kernel can index it.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "st_util.h"

st_status_t st_bind_error(st_bind_t *b, st_status_t s, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return st_error_set(b->err, s, "%s: %s", b->path, msg);
}

static void key_name(const st_bind_t *b, char *buf, size_t n, const char *suffix)
{
    snprintf(buf, n, "%s.%s", b->arch, suffix);
}

st_status_t st_bind_key_error(st_bind_t *b, const char *key, st_status_t s)
{
    int64_t i = st_gguf_find_key(b->g, key);
    if (s == ST_ERR_NOT_FOUND)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s': missing", key);
    return st_bind_error(b, ST_ERR_FORMAT, "key '%s': %s (stored as %s)", key, st_status_str(s),
                         st_gguf_type_name(st_gguf_kv_type(b->g, i)));
}

st_status_t st_bind_u32(st_bind_t *b, const char *suffix, const uint32_t *dflt, uint32_t lo,
                        uint32_t hi, uint32_t *out)
{
    char key[96];
    uint32_t v = 0;
    st_status_t s;

    key_name(b, key, sizeof key, suffix);
    s = st_gguf_get_u32(b->g, key, &v);
    if (s == ST_ERR_NOT_FOUND && dflt) {
        *out = *dflt;
        return ST_OK;
    }
    if (s != ST_OK)
        return st_bind_key_error(b, key, s);
    if (v < lo || v > hi)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s': %" PRIu32 " outside %" PRIu32 "..%"
                             PRIu32, key, v, lo, hi);
    *out = v;
    return ST_OK;
}

st_status_t st_bind_f32(st_bind_t *b, const char *suffix, float dflt, float lo, float hi,
                        float *out)
{
    char key[96];
    float v = 0;
    st_status_t s;

    key_name(b, key, sizeof key, suffix);
    s = st_gguf_get_f32(b->g, key, &v);
    if (s == ST_ERR_NOT_FOUND) {
        *out = dflt;
        return ST_OK;
    }
    if (s != ST_OK)
        return st_bind_key_error(b, key, s);
    if (!isfinite(v) || v < lo || v > hi)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s': %g outside %g..%g", key, (double)v,
                             (double)lo, (double)hi);
    *out = v;
    return ST_OK;
}

st_status_t st_bind_pos_f32(st_bind_t *b, const char *suffix, float dflt, float *out)
{
    char key[96];
    float v = 0;
    st_status_t s;

    key_name(b, key, sizeof key, suffix);
    s = st_gguf_get_f32(b->g, key, &v);
    if (s == ST_ERR_NOT_FOUND) {
        *out = dflt;
        return ST_OK;
    }
    if (s != ST_OK)
        return st_bind_key_error(b, key, s);
    if (!isfinite(v) || v <= 0.0f)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s': %g is not a positive finite number",
                             key, (double)v);
    *out = v;
    return ST_OK;
}

st_status_t st_bind_bool(st_bind_t *b, const char *suffix, int dflt, int *out)
{
    char key[96];
    st_status_t s;

    key_name(b, key, sizeof key, suffix);
    s = st_gguf_get_bool(b->g, key, out);
    if (s == ST_ERR_NOT_FOUND) {
        *out = dflt;
        return ST_OK;
    }
    return s == ST_OK ? ST_OK : st_bind_key_error(b, key, s);
}

st_status_t st_bind_refuse_u32(st_bind_t *b, const char *suffix, uint32_t neutral, const char *why)
{
    char key[96];
    uint32_t v;
    st_status_t s;

    key_name(b, key, sizeof key, suffix);
    s = st_gguf_get_u32(b->g, key, &v);
    if (s == ST_ERR_NOT_FOUND || (s == ST_OK && v == neutral))
        return ST_OK;
    if (s != ST_OK)
        return st_bind_key_error(b, key, s);
    return st_bind_error(b, ST_ERR_UNSUPPORTED, "key '%s': %" PRIu32 " is not supported (%s)",
                         key, v, why);
}

/* Rope scaling: none, linear and YaRN. Anything else would silently give
 * wrong logits, so it is refused naming the type. */
static st_status_t read_rope_scaling(st_bind_t *b)
{
    st_hparams_t *hp = &b->m->hp;
    char key[96], buf[64];
    st_str_t type;
    float factor = 1.0f, attn_factor = 1.0f;
    int is_yarn = 0;
    st_status_t s;

    hp->rope_freq_scale = 1.0f;
    key_name(b, key, sizeof key, "rope.scaling.type");
    s = st_gguf_get_str(b->g, key, &type);
    if (s == ST_OK) {
        int is_none = type.len == 4 && !memcmp(type.ptr, "none", 4);
        int is_linear = type.len == 6 && !memcmp(type.ptr, "linear", 6);
        is_yarn = type.len == 4 && !memcmp(type.ptr, "yarn", 4);
        if (!is_none && !is_linear && !is_yarn)
            return st_bind_error(b, ST_ERR_UNSUPPORTED, "key '%s': rope scaling '%s' is not "
                                 "supported (supported: none, linear, yarn)", key,
                                 st_gguf_str_printable(type, buf, sizeof buf));
        if (is_none)
            return ST_OK;
        key_name(b, key, sizeof key, "rope.scaling.factor");
        if (st_gguf_find_key(b->g, key) >= 0)
            s = st_bind_pos_f32(b, "rope.scaling.factor", 1.0f, &factor);
        else
            s = st_bind_pos_f32(b, "rope.scale_linear", 1.0f, &factor);
        if (s != ST_OK)
            return s;
    } else if (s != ST_ERR_NOT_FOUND) {
        return st_bind_key_error(b, key, s);
    } else if ((s = st_bind_pos_f32(b, "rope.scale_linear", 1.0f, &factor)) != ST_OK) {
        /* No scaling type: older converters wrote only rope.scale_linear. */
        return s;
    }
    hp->rope_freq_scale = 1.0f / factor;
    /* A magnitude correction other than YaRN's own is not implemented. */
    if ((s = st_bind_pos_f32(b, "rope.scaling.attn_factor", 1.0f, &attn_factor)) != ST_OK)
        return s;
    if (attn_factor != 1.0f)
        return st_bind_error(b, ST_ERR_UNSUPPORTED, "key '%s.rope.scaling.attn_factor': %g is "
                             "not supported (only 1)", b->arch, (double)attn_factor);
    if (!is_yarn)
        return ST_OK;
    uint32_t dflt = hp->n_ctx_train;
    if ((s = st_bind_u32(b, "rope.scaling.original_context_length", &dflt, 1, 1u << 30,
                         &hp->yarn_orig_ctx)) != ST_OK ||
        (s = st_bind_f32(b, "rope.scaling.yarn_ext_factor", 1.0f, 0.0f, 1.0f,
                         &hp->yarn_ext_factor)) != ST_OK ||
        (s = st_bind_pos_f32(b, "rope.scaling.yarn_beta_fast", 32.0f, &hp->yarn_beta_fast)) != ST_OK ||
        (s = st_bind_pos_f32(b, "rope.scaling.yarn_beta_slow", 1.0f, &hp->yarn_beta_slow)) != ST_OK ||
        (s = st_bind_f32(b, "rope.scaling.yarn_log_multiplier", 0.0f, 0.0f, 100.0f,
                         &hp->yarn_log_mul)) != ST_OK)
        return s;
    return ST_OK;
}

st_status_t st_bind_common(st_bind_t *b)
{
    st_hparams_t *hp = &b->m->hp;
    st_status_t s;

    /* Upper bounds are sanity limits far above any real model; they keep
     * later size arithmetic (n_head * head_dim, KV bytes) inside 64 bits. */
    if ((s = st_bind_u32(b, "block_count", NULL, 1, 1u << 16, &hp->n_layer)) != ST_OK ||
        (s = st_bind_u32(b, "embedding_length", NULL, 1, 1u << 20, &hp->n_embd)) != ST_OK ||
        (s = st_bind_u32(b, "attention.head_count", NULL, 1, 1u << 14, &hp->n_head)) != ST_OK ||
        (s = st_bind_u32(b, "context_length", NULL, 1, 1u << 30, &hp->n_ctx_train)) != ST_OK ||
        (s = st_bind_pos_f32(b, "rope.freq_base", 10000.0f, &hp->rope_theta)) != ST_OK ||
        (s = st_bind_pos_f32(b, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps)) != ST_OK)
        return s;
    hp->embd_scale = 1.0f;
    hp->expert_weights_scale = 1.0f;
    return read_rope_scaling(b);
}

st_status_t st_bind_gqa_shape(st_bind_t *b)
{
    st_hparams_t *hp = &b->m->hp;
    char key[96];
    uint32_t dflt, vlen = 0;
    st_status_t s;

    dflt = hp->n_head;
    if ((s = st_bind_u32(b, "attention.head_count_kv", &dflt, 1, 1u << 14, &hp->n_head_kv)) != ST_OK)
        return s;
    if (hp->n_head % hp->n_head_kv != 0)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s.attention.head_count_kv': %" PRIu32
                             " does not divide head_count %" PRIu32, b->arch, hp->n_head_kv,
                             hp->n_head);
    key_name(b, key, sizeof key, "attention.key_length");
    if (st_gguf_find_key(b->g, key) < 0 && hp->n_embd % hp->n_head != 0)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s.attention.head_count': %" PRIu32
                             " does not divide embedding_length %" PRIu32, b->arch, hp->n_head,
                             hp->n_embd);
    dflt = hp->n_embd / hp->n_head;
    if ((s = st_bind_u32(b, "attention.key_length", &dflt, 2, 1u << 16, &hp->head_dim)) != ST_OK)
        return s;
    if (hp->head_dim % 2 != 0)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s.attention.key_length': head dimension %"
                             PRIu32 " is odd (rope rotates pairs)", b->arch, hp->head_dim);
    /* value_length, when present, must equal key_length: these families'
     * attention uses one head dimension for both. */
    dflt = hp->head_dim;
    if ((s = st_bind_u32(b, "attention.value_length", &dflt, 1, 1u << 16, &vlen)) != ST_OK)
        return s;
    if (vlen != hp->head_dim)
        return st_bind_error(b, ST_ERR_UNSUPPORTED, "key '%s.attention.value_length': %" PRIu32
                             " differs from key_length %" PRIu32, b->arch, vlen, hp->head_dim);
    dflt = hp->head_dim;
    if ((s = st_bind_u32(b, "rope.dimension_count", &dflt, 2, hp->head_dim, &hp->rope_dim)) != ST_OK)
        return s;
    if (hp->rope_dim % 2 != 0)
        return st_bind_error(b, ST_ERR_FORMAT, "key '%s.rope.dimension_count': %" PRIu32
                             " is odd", b->arch, hp->rope_dim);
    hp->head_dim_v = hp->head_dim;
    hp->kv_k_dim = hp->kv_v_dim = hp->n_head_kv * hp->head_dim;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    return ST_OK;
}

/* ---- tensors ---- */

static st_status_t add_to_layer(st_bind_t *b, int layer, const st_tensor_t *t)
{
    st_layer_t *l = &b->m->layers[layer];
    for (uint32_t i = 0; i < l->n_all; i++)
        if (l->all[i] == t)
            return ST_OK;
    if (l->n_all == ST_LAYER_MAX_TENSORS)
        return st_bind_error(b, ST_ERR_INTERNAL, "layer %d: more than %d tensors", layer,
                             ST_LAYER_MAX_TENSORS);
    l->all[l->n_all++] = t;
    return ST_OK;
}

st_status_t st_bind_tensor(st_bind_t *b, int layer, const char *name, uint64_t ne0, uint64_t ne1,
                           uint64_t ne2, unsigned flags, const st_tensor_t **out)
{
    char full[96];
    const st_tensor_t *t;
    uint32_t want_dims = ne2 ? 3 : ne1 ? 2 : 1;
    size_t nl = strlen(name);
    int is_bias = nl > 5 && !strcmp(name + nl - 5, ".bias");

    if (layer < 0)
        snprintf(full, sizeof full, "%s", name);
    else
        snprintf(full, sizeof full, "blk.%d.%s%s", layer, name, is_bias ? "" : ".weight");
    t = st_gguf_find_tensor(b->g, full);
    *out = NULL;
    if (!t) {
        if (flags & ST_BIND_OPT)
            return ST_OK;
        return st_bind_error(b, ST_ERR_FORMAT, "tensor '%s': missing", full);
    }
    if (t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 && t->ne[1] != ne1) ||
        (ne2 && t->ne[2] != ne2)) {
        char want[80];
        if (ne2)
            snprintf(want, sizeof want, "{%" PRIu64 ", %" PRIu64 ", %" PRIu64 "}", ne0, ne1, ne2);
        else if (ne1)
            snprintf(want, sizeof want, "{%" PRIu64 ", %" PRIu64 "}", ne0, ne1);
        else
            snprintf(want, sizeof want, "{%" PRIu64 "}", ne0);
        return st_bind_error(b, ST_ERR_FORMAT, "tensor '%s': shape {%" PRIu64 ", %" PRIu64 ", %"
                             PRIu64 ", %" PRIu64 "} (%u dims), expected %s", full, t->ne[0],
                             t->ne[1], t->ne[2], t->ne[3], t->n_dims, want);
    }
    if ((flags & ST_BIND_F32) && t->type != ST_DTYPE_F32)
        return st_bind_error(b, ST_ERR_UNSUPPORTED, "tensor '%s': type %s, norm weights, biases "
                             "and routers must be f32", full, st_dtype_name(t->type));
    if (layer >= 0) {
        st_status_t s = add_to_layer(b, layer, t);
        if (s != ST_OK)
            return s;
    }
    *out = t;
    return ST_OK;
}

st_status_t st_bind_views(st_bind_t *b, const st_tensor_t *t, const st_tensor_t **out)
{
    st_model_t *m = b->m;
    uint64_t n = t->ne[2], slice = t->ne[1] * t->row_bytes;

    /* m->views was sized by st_model_open from the file's 3-D tensors, so
     * the addresses handed out here never move. */
    if (m->n_views + n > m->cap_views)
        return st_bind_error(b, ST_ERR_INTERNAL, "tensor '%s': no room for %" PRIu64 " views",
                             t->name, n);
    for (uint64_t i = 0; i < n; i++) {
        st_tensor_t *v = &m->views[m->n_views + i];
        *v = *t;
        v->n_dims = 2;
        v->ne[2] = 1;
        v->nbytes = slice;
        v->file_offset = t->file_offset + i * slice;
        v->data = (const uint8_t *)t->data + i * slice;
    }
    *out = &m->views[m->n_views];
    m->n_views += n;
    return ST_OK;
}

st_status_t st_bind_embd_output(st_bind_t *b)
{
    st_model_t *m = b->m;
    const st_hparams_t *hp = &m->hp;
    st_status_t s;

    if ((s = st_bind_tensor(b, -1, "token_embd.weight", hp->n_embd, hp->n_vocab, 0, 0,
                            &m->tok_embd)) != ST_OK ||
        (s = st_bind_tensor(b, -1, "output_norm.weight", hp->n_embd, 0, 0, ST_BIND_F32,
                            &m->output_norm)) != ST_OK ||
        (s = st_bind_tensor(b, -1, "output.weight", hp->n_embd, hp->n_vocab, 0, ST_BIND_OPT,
                            &m->output)) != ST_OK)
        return s;
    if (!m->output)
        m->output = m->tok_embd;
    /* Llama 3.1-style per-frequency rope factors change the math; refuse
     * rather than compute wrong logits. */
    if (st_gguf_find_tensor(b->g, "rope_freqs.weight"))
        return st_bind_error(b, ST_ERR_UNSUPPORTED, "tensor 'rope_freqs.weight': rope frequency "
                             "factors are not supported");
    return ST_OK;
}

st_status_t st_bind_dense_ffn(st_bind_t *b, int layer, uint32_t n_ff, const char *norm_name)
{
    st_layer_t *l = &b->m->layers[layer];
    uint64_t d = b->m->hp.n_embd;
    st_status_t s;

    if ((norm_name && (s = st_bind_tensor(b, layer, norm_name, d, 0, 0, ST_BIND_F32,
                                          &l->ffn_norm)) != ST_OK) ||
        (s = st_bind_tensor(b, layer, "ffn_gate", d, n_ff, 0, 0, &l->w_gate)) != ST_OK ||
        (s = st_bind_tensor(b, layer, "ffn_up", d, n_ff, 0, 0, &l->w_up)) != ST_OK ||
        (s = st_bind_tensor(b, layer, "ffn_down", n_ff, d, 0, 0, &l->w_down)) != ST_OK)
        return s;
    return ST_OK;
}
