/*
 * model.c - binds a Llama-family model to the tensors of a GGUF file (see
 * st_model.h).
 *
 * Everything here is validation of outside input: hyper-parameters come from
 * metadata written by whatever converter produced the file, so each one is
 * range-checked and every required tensor is checked for presence, exact
 * shape and (for norms) type before a kernel can index it.
 */
#include "st_model.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "st_crypt.h"
#include "st_util.h"

#define ARCH_MAX 32u            /* longest architecture name we keep */
/* llama.cpp's token types (llama_token_type): 0 undefined .. 6 byte. An
 * index outside this range was a published out-of-bounds read in another
 * loader, so it is refused here for every consumer. */
#define TOKEN_TYPE_MAX  6
#define TOKEN_TYPE_BYTE 6

struct st_model {
    st_gguf_t          *gguf;
    st_llama_hparams_t  hp;
    st_llama_layer_t   *layers;
    const st_tensor_t  *tok_embd;
    const st_tensor_t  *output_norm;
    const st_tensor_t  *output;
    char                arch[ARCH_MAX + 1];
    char               *name;
    st_crypt_t         *crypt;     /* encrypted model: owns the plaintext */
};

/* Context for the validation helpers: file path and error sink. */
typedef struct check {
    const st_gguf_t *g;
    const char      *path;
    st_error_t      *err;
} check_t;

static st_status_t key_error(const check_t *c, const char *key, st_status_t s)
{
    int64_t i = st_gguf_find_key(c->g, key);
    if (s == ST_ERR_NOT_FOUND)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s': missing", c->path, key);
    return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s': %s (stored as %s)", c->path, key,
                        st_status_str(s), st_gguf_type_name(st_gguf_kv_type(c->g, i)));
}

/* A required (dflt == NULL) or optional u32 within [lo, hi]. */
static st_status_t get_u32(const check_t *c, const char *key, const uint32_t *dflt,
                           uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint32_t v = 0;
    st_status_t s = st_gguf_get_u32(c->g, key, &v);
    if (s == ST_ERR_NOT_FOUND && dflt) {
        *out = *dflt;
        return ST_OK;
    }
    if (s != ST_OK)
        return key_error(c, key, s);
    if (v < lo || v > hi)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s': %" PRIu32 " outside %" PRIu32
                            "..%" PRIu32, c->path, key, v, lo, hi);
    *out = v;
    return ST_OK;
}

/* An optional positive finite float. */
static st_status_t get_pos_f32(const check_t *c, const char *key, float dflt, float *out)
{
    float v = 0;
    st_status_t s = st_gguf_get_f32(c->g, key, &v);
    if (s == ST_ERR_NOT_FOUND) {
        *out = dflt;
        return ST_OK;
    }
    if (s != ST_OK)
        return key_error(c, key, s);
    if (!isfinite(v) || v <= 0.0f)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s': %g is not a positive finite "
                            "number", c->path, key, (double)v);
    *out = v;
    return ST_OK;
}

static void key_name(char *buf, size_t n, const char *arch, const char *suffix)
{
    snprintf(buf, n, "%s.%s", arch, suffix);
}

/* Rope scaling: only linear is implemented; anything else would silently
 * give wrong logits, so it is refused. */
static st_status_t read_rope_scaling(const check_t *c, const char *arch, st_llama_hparams_t *hp)
{
    char key[96], buf[64];
    st_str_t type;
    float factor = 1.0f;
    st_status_t s;

    hp->rope_freq_scale = 1.0f;
    key_name(key, sizeof(key), arch, "rope.scaling.type");
    s = st_gguf_get_str(c->g, key, &type);
    if (s == ST_OK) {
        int is_none = type.len == 4 && !memcmp(type.ptr, "none", 4);
        int is_linear = type.len == 6 && !memcmp(type.ptr, "linear", 6);
        if (!is_none && !is_linear)
            return st_error_set(c->err, ST_ERR_UNSUPPORTED, "%s: key '%s': rope scaling '%s' "
                                "is not supported (supported: none, linear)", c->path, key,
                                st_gguf_str_printable(type, buf, sizeof(buf)));
        if (is_none)
            return ST_OK;
        key_name(key, sizeof(key), arch, "rope.scaling.factor");
        if (st_gguf_find_key(c->g, key) < 0)
            key_name(key, sizeof(key), arch, "rope.scale_linear");
        if ((s = get_pos_f32(c, key, 1.0f, &factor)) != ST_OK)
            return s;
    } else if (s != ST_ERR_NOT_FOUND) {
        return key_error(c, key, s);
    } else {
        /* No scaling type: older converters wrote only rope.scale_linear. */
        key_name(key, sizeof(key), arch, "rope.scale_linear");
        if ((s = get_pos_f32(c, key, 1.0f, &factor)) != ST_OK)
            return s;
    }
    hp->rope_freq_scale = 1.0f / factor;
    return ST_OK;
}

static st_status_t read_hparams(const check_t *c, const char *arch, st_llama_hparams_t *hp)
{
    char key[96];
    uint32_t dflt;
    st_status_t s;

#define U32(suffix, dflt_ptr, lo, hi, dst)                                     \
    do {                                                                       \
        key_name(key, sizeof(key), arch, suffix);                              \
        if ((s = get_u32(c, key, dflt_ptr, lo, hi, dst)) != ST_OK) return s;   \
    } while (0)

    /* Upper bounds are sanity limits far above any real model; they keep
     * later size arithmetic (n_head * head_dim, KV bytes) inside 64 bits. */
    U32("block_count", NULL, 1, 1u << 16, &hp->n_layer);
    U32("embedding_length", NULL, 1, 1u << 20, &hp->n_embd);
    U32("feed_forward_length", NULL, 1, 1u << 22, &hp->n_ff);
    U32("attention.head_count", NULL, 1, 1u << 14, &hp->n_head);
    dflt = hp->n_head;
    U32("attention.head_count_kv", &dflt, 1, 1u << 14, &hp->n_head_kv);
    U32("context_length", NULL, 1, 1u << 30, &hp->n_ctx_train);
    if (hp->n_head % hp->n_head_kv != 0)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s.attention.head_count_kv': %"
                            PRIu32 " does not divide head_count %" PRIu32, c->path, arch,
                            hp->n_head_kv, hp->n_head);
    key_name(key, sizeof(key), arch, "attention.key_length");
    if (st_gguf_find_key(c->g, key) < 0 && hp->n_embd % hp->n_head != 0)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s.attention.head_count': %" PRIu32
                            " does not divide embedding_length %" PRIu32, c->path, arch,
                            hp->n_head, hp->n_embd);
    dflt = hp->n_embd / hp->n_head;
    U32("attention.key_length", &dflt, 2, 1u << 16, &hp->head_dim);
    if (hp->head_dim % 2 != 0)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s.attention.key_length': head "
                            "dimension %" PRIu32 " is odd (rope rotates pairs)", c->path, arch,
                            hp->head_dim);
    /* value_length, when present, must equal key_length: the attention
     * kernels use one head dimension for both. */
    key_name(key, sizeof(key), arch, "attention.value_length");
    dflt = hp->head_dim;
    {
        uint32_t vlen = 0;
        if ((s = get_u32(c, key, &dflt, 1, 1u << 16, &vlen)) != ST_OK)
            return s;
        if (vlen != hp->head_dim)
            return st_error_set(c->err, ST_ERR_UNSUPPORTED, "%s: key '%s': %" PRIu32 " differs "
                                "from key_length %" PRIu32, c->path, key, vlen, hp->head_dim);
    }
    dflt = hp->head_dim;
    U32("rope.dimension_count", &dflt, 2, hp->head_dim, &hp->rope_dim);
    if (hp->rope_dim % 2 != 0)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s.rope.dimension_count': %" PRIu32
                            " is odd", c->path, arch, hp->rope_dim);
#undef U32
    key_name(key, sizeof(key), arch, "rope.freq_base");
    if ((s = get_pos_f32(c, key, 10000.0f, &hp->rope_theta)) != ST_OK)
        return s;
    key_name(key, sizeof(key), arch, "attention.layer_norm_rms_epsilon");
    if ((s = get_pos_f32(c, key, 1e-5f, &hp->rms_eps)) != ST_OK)
        return s;
    return read_rope_scaling(c, arch, hp);
}

/* Vocabulary size and the token-indexed arrays that must agree with it. */
static st_status_t read_vocab(const check_t *c, const char *arch, st_llama_hparams_t *hp)
{
    static const char *const id_keys[] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.separator_token_id", "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    };
    static const char *const per_token[] = {
        "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
    };
    char key[96];
    uint64_t n_tokens = 0;
    st_gguf_type_t et;
    st_status_t s;

    key_name(key, sizeof(key), arch, "vocab_size");
    s = st_gguf_get_arr(c->g, "tokenizer.ggml.tokens", &et, &n_tokens, NULL);
    if (s != ST_OK && s != ST_ERR_NOT_FOUND)
        return key_error(c, "tokenizer.ggml.tokens", s);
    if (s == ST_OK && et != ST_GGUF_STRING)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key 'tokenizer.ggml.tokens': array of "
                            "%s, expected string", c->path, st_gguf_type_name(et));
    if (st_gguf_find_key(c->g, key) >= 0) {
        if ((s = get_u32(c, key, NULL, 1, INT32_MAX, &hp->n_vocab)) != ST_OK)
            return s;
    } else if (s == ST_OK) {
        if (n_tokens < 1 || n_tokens > INT32_MAX)
            return st_error_set(c->err, ST_ERR_FORMAT, "%s: key 'tokenizer.ggml.tokens': %"
                                PRIu64 " tokens outside 1..%d", c->path, n_tokens, INT32_MAX);
        hp->n_vocab = (uint32_t)n_tokens;
    } else {
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: no vocabulary size: neither '%s' nor "
                            "'tokenizer.ggml.tokens' is present", c->path, key);
    }

    for (size_t i = 0; i < ST_ARRAY_SIZE(per_token); i++) {
        uint64_t n;
        s = st_gguf_get_arr(c->g, per_token[i], &et, &n, NULL);
        if (s == ST_ERR_NOT_FOUND)
            continue;
        if (s != ST_OK)
            return key_error(c, per_token[i], s);
        if (n != hp->n_vocab)
            return st_error_set(c->err, ST_ERR_FORMAT, "%s: key '%s': %" PRIu64 " entries, "
                                "vocabulary has %" PRIu32, c->path, per_token[i], n, hp->n_vocab);
    }
    if (st_gguf_find_key(c->g, "tokenizer.ggml.token_type") >= 0) {
        for (uint64_t i = 0; i < hp->n_vocab; i++) {
            int64_t tt;
            s = st_gguf_arr_i64(c->g, "tokenizer.ggml.token_type", i, &tt);
            if (s != ST_OK)
                return st_error_set(c->err, ST_ERR_FORMAT, "%s: key 'tokenizer.ggml.token_type': "
                                    "element %" PRIu64 ": %s", c->path, i, st_status_str(s));
            if (tt < 0 || tt > TOKEN_TYPE_MAX)
                return st_error_set(c->err, ST_ERR_FORMAT, "%s: key 'tokenizer.ggml.token_type': "
                                    "token %" PRIu64 " has type %" PRId64 " outside 0..%d",
                                    c->path, i, tt, TOKEN_TYPE_MAX);
            /* A byte token must spell its byte as <0xHH>; a loader that
             * parses the hex into a 256-entry table relies on this. */
            st_str_t t;
            if (tt == TOKEN_TYPE_BYTE && n_tokens == hp->n_vocab &&
                st_gguf_arr_str(c->g, "tokenizer.ggml.tokens", i, &t) == ST_OK) {
                char buf[32];
                int ok = t.len == 6 && !memcmp(t.ptr, "<0x", 3) && t.ptr[5] == '>' &&
                         isxdigit((unsigned char)t.ptr[3]) && isxdigit((unsigned char)t.ptr[4]);
                if (!ok)
                    return st_error_set(c->err, ST_ERR_FORMAT, "%s: key 'tokenizer.ggml.tokens': "
                                        "byte token %" PRIu64 " is '%s', expected <0xHH>",
                                        c->path, i, st_gguf_str_printable(t, buf, sizeof(buf)));
            }
        }
    }
    for (size_t i = 0; i < ST_ARRAY_SIZE(id_keys); i++) {
        uint32_t id;
        s = st_gguf_get_u32(c->g, id_keys[i], &id);
        if (s == ST_ERR_NOT_FOUND)
            continue;
        if (s == ST_ERR_RANGE) {
            int64_t v;
            /* -1 is what some converters write for "none". */
            if (st_gguf_get_i64(c->g, id_keys[i], &v) == ST_OK && v == -1)
                continue;
        }
        if (s != ST_OK)
            return key_error(c, id_keys[i], s);
        if (id >= hp->n_vocab)
            return st_error_set(c->err, ST_ERR_RANGE, "%s: key '%s': token id %" PRIu32
                                " outside the vocabulary (0..%" PRIu32 ")", c->path,
                                id_keys[i], id, hp->n_vocab - 1);
    }
    return ST_OK;
}

/* A required tensor with exactly the shape {ne0} or {ne0, ne1}; `f32_only`
 * for norm weights, which kernels read as plain floats. */
static st_status_t need_tensor(const check_t *c, const char *name, uint64_t ne0, uint64_t ne1,
                               int f32_only, const st_tensor_t **out)
{
    const st_tensor_t *t = st_gguf_find_tensor(c->g, name);
    uint32_t want_dims = ne1 ? 2 : 1;

    if (!t)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: tensor '%s': missing", c->path, name);
    if (t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 && t->ne[1] != ne1))
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: tensor '%s': shape {%" PRIu64 ", %"
                            PRIu64 ", %" PRIu64 ", %" PRIu64 "} (%u dims), expected {%" PRIu64
                            ", %" PRIu64 "}", c->path, name, t->ne[0], t->ne[1], t->ne[2],
                            t->ne[3], t->n_dims, ne0, ne1 ? ne1 : 1);
    if (f32_only && t->type != ST_DTYPE_F32)
        return st_error_set(c->err, ST_ERR_UNSUPPORTED, "%s: tensor '%s': type %s, norm weights "
                            "must be f32", c->path, name, st_dtype_name(t->type));
    *out = t;
    return ST_OK;
}

static st_status_t bind_tensors(const check_t *c, st_model_t *m)
{
    const st_llama_hparams_t *hp = &m->hp;
    uint64_t q_dim = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kv_dim = (uint64_t)hp->n_head_kv * hp->head_dim;
    char name[64];
    st_status_t s;

    if ((s = need_tensor(c, "token_embd.weight", hp->n_embd, hp->n_vocab, 0, &m->tok_embd)) != ST_OK)
        return s;
    if ((s = need_tensor(c, "output_norm.weight", hp->n_embd, 0, 1, &m->output_norm)) != ST_OK)
        return s;
    if (st_gguf_find_tensor(c->g, "output.weight")) {
        if ((s = need_tensor(c, "output.weight", hp->n_embd, hp->n_vocab, 0, &m->output)) != ST_OK)
            return s;
    } else {
        m->output = m->tok_embd;
    }
    /* Llama 3.1-style per-frequency rope factors change the math; refuse
     * rather than compute wrong logits. */
    if (st_gguf_find_tensor(c->g, "rope_freqs.weight"))
        return st_error_set(c->err, ST_ERR_UNSUPPORTED, "%s: tensor 'rope_freqs.weight': rope "
                            "frequency factors are not supported", c->path);

    for (uint32_t i = 0; i < hp->n_layer; i++) {
        st_llama_layer_t *l = &m->layers[i];
        const struct { const char *n; uint64_t ne0, ne1; int f32; const st_tensor_t **dst; } spec[] = {
            {"attn_norm",   hp->n_embd, 0,          1, &l->attn_norm},
            {"attn_q",      hp->n_embd, q_dim,      0, &l->wq},
            {"attn_k",      hp->n_embd, kv_dim,     0, &l->wk},
            {"attn_v",      hp->n_embd, kv_dim,     0, &l->wv},
            {"attn_output", q_dim,      hp->n_embd, 0, &l->wo},
            {"ffn_norm",    hp->n_embd, 0,          1, &l->ffn_norm},
            {"ffn_gate",    hp->n_embd, hp->n_ff,   0, &l->w_gate},
            {"ffn_up",      hp->n_embd, hp->n_ff,   0, &l->w_up},
            {"ffn_down",    hp->n_ff,   hp->n_embd, 0, &l->w_down},
        };
        for (size_t k = 0; k < ST_ARRAY_SIZE(spec); k++) {
            snprintf(name, sizeof(name), "blk.%" PRIu32 ".%s.weight", i, spec[k].n);
            if ((s = need_tensor(c, name, spec[k].ne0, spec[k].ne1, spec[k].f32, spec[k].dst)) != ST_OK)
                return s;
        }
    }
    return ST_OK;
}

static st_status_t read_names(const check_t *c, st_model_t *m, st_str_t arch)
{
    st_str_t name;
    const char *base;

    st_gguf_str_printable(arch, m->arch, sizeof(m->arch));
    if (st_gguf_get_str(c->g, "general.name", &name) == ST_OK && name.len > 0) {
        size_t n = (size_t)ST_MIN(name.len, (uint64_t)255) + 4;
        m->name = malloc(n);
        if (m->name)
            st_gguf_str_printable(name, m->name, n);
    } else {
        base = strrchr(c->path, '/');
        m->name = strdup(base ? base + 1 : c->path);
    }
    if (!m->name)
        return st_error_set(c->err, ST_ERR_NOMEM, "%s: out of memory", c->path);
    return ST_OK;
}

/* Whether params (of the caller's size) reach field f. */
#define HAS_PARAM(p, f) ((p) && ((p)->size == 0 || (p)->size >= offsetof(st_model_open_params_t, f) \
                                                                   + sizeof((p)->f)))

/* An encrypted file: authenticate and decrypt its metadata, then read it
 * with the same GGUF parser as a plain file. */
static st_status_t open_encrypted(const char *path, const st_model_open_params_t *p,
                                  st_model_t *m, st_error_t *err)
{
    st_status_t s;

    if (!HAS_PARAM(p, key) || !p->key)
        return st_error_set(err, ST_ERR_AUTH, "%s: encrypted model: a key is needed "
                            "(--key-file)", path);
    s = st_crypt_open(path, p->key, HAS_PARAM(p, lock_memory) && p->lock_memory, &m->crypt, err);
    if (s != ST_OK)
        return s;
    return st_gguf_open_mem(path, st_crypt_plain(m->crypt), st_crypt_plain_size(m->crypt),
                            &m->gguf, err);
}

static st_status_t decrypt_tensor(st_model_t *m, const st_tensor_t *t, st_error_t *err)
{
    return st_crypt_decrypt_range(m->crypt, t->file_offset, t->nbytes, t->name, err);
}

/* Decrypts what the caller's stage reads: everything, or its layers plus
 * the embedding and/or head. */
static st_status_t decrypt_selected(st_model_t *m, const st_model_open_params_t *p,
                                    st_error_t *err)
{
    uint32_t first = HAS_PARAM(p, first_layer) ? p->first_layer : 0;
    uint32_t last = HAS_PARAM(p, last_layer) ? p->last_layer : 0;
    int embd = HAS_PARAM(p, with_embd) ? p->with_embd : 0;
    st_status_t s = ST_OK;

    if (last == 0) {
        /* Tensor by tensor first, so a failure names the tensor; then any
         * chunk left (padding between tensors). */
        for (uint64_t i = 0; i < st_gguf_n_tensors(m->gguf) && s == ST_OK; i++)
            s = decrypt_tensor(m, st_gguf_tensor(m->gguf, i), err);
        return s == ST_OK ? st_crypt_decrypt_all(m->crypt, err) : s;
    }
    if (first > last || last > m->hp.n_layer)
        return st_error_set(err, ST_ERR_RANGE, "%s: layer range [%" PRIu32 ", %" PRIu32 ") "
                            "outside the model's %" PRIu32 " layers", st_gguf_path(m->gguf),
                            first, last, m->hp.n_layer);
    for (uint32_t i = first; i < last && s == ST_OK; i++) {
        const st_llama_layer_t *l = &m->layers[i];
        const st_tensor_t *ts[] = {l->attn_norm, l->wq, l->wk, l->wv, l->wo, l->ffn_norm,
                                   l->w_gate, l->w_up, l->w_down};
        for (size_t k = 0; k < ST_ARRAY_SIZE(ts) && s == ST_OK; k++)
            s = decrypt_tensor(m, ts[k], err);
    }
    if (s == ST_OK && (embd & 1))
        s = decrypt_tensor(m, m->tok_embd, err);
    if (s == ST_OK && (embd & 2))
        s = decrypt_tensor(m, m->output_norm, err);
    if (s == ST_OK && (embd & 2))
        s = decrypt_tensor(m, m->output, err);
    return s;
}

st_status_t st_model_open(const char *path, const st_model_open_params_t *params,
                          st_model_t **out, st_error_t *err)
{
    int encrypted = 0;
    st_model_t *m;
    check_t c;
    st_str_t arch;
    char buf[64];
    st_status_t s;

    if (!path || !out)
        return st_error_set(err, ST_ERR_INVALID, "st_model_open: NULL argument");
    if (params && params->size != 0 && params->size < sizeof(uint32_t))
        return st_error_set(err, ST_ERR_INVALID, "st_model_open: params->size %" PRIu32
                            " too small", params->size);
    m = calloc(1, sizeof(*m));
    if (!m)
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", path);
    if ((s = st_crypt_probe(path, &encrypted, err)) != ST_OK)
        goto err_model;
    s = encrypted ? open_encrypted(path, params, m, err) : st_gguf_open(path, &m->gguf, err);
    if (s != ST_OK)
        goto err_model;
    c = (check_t){m->gguf, st_gguf_path(m->gguf), err};

    s = st_gguf_get_str(m->gguf, "general.architecture", &arch);
    if (s != ST_OK) {
        s = key_error(&c, "general.architecture", s);
        goto err_model;
    }
    if (!(arch.len == 5 && !memcmp(arch.ptr, "llama", 5))) {
        s = st_error_set(err, ST_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported "
                         "(supported: llama)", c.path,
                         st_gguf_str_printable(arch, buf, sizeof(buf)));
        goto err_model;
    }
    if ((s = read_names(&c, m, arch)) != ST_OK)
        goto err_model;
    if ((s = read_hparams(&c, m->arch, &m->hp)) != ST_OK)
        goto err_model;
    if ((s = read_vocab(&c, m->arch, &m->hp)) != ST_OK)
        goto err_model;
    /* Every layer needs 9 tensors: refuse a block_count the file cannot
     * back before allocating per-layer state for it. */
    if ((uint64_t)m->hp.n_layer * 9 > st_gguf_n_tensors(m->gguf)) {
        s = st_error_set(err, ST_ERR_FORMAT, "%s: key '%s.block_count': %" PRIu32 " layers but "
                         "the file has only %" PRIu64 " tensors", c.path, m->arch, m->hp.n_layer,
                         st_gguf_n_tensors(m->gguf));
        goto err_model;
    }
    m->layers = calloc(m->hp.n_layer, sizeof(st_llama_layer_t));
    if (!m->layers) {
        s = st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", c.path);
        goto err_model;
    }
    if ((s = bind_tensors(&c, m)) != ST_OK)
        goto err_model;
    if (m->crypt && (s = decrypt_selected(m, params, err)) != ST_OK)
        goto err_model;
    *out = m;
    return ST_OK;

err_model:
    st_model_close(m);
    return s;
}

void st_model_close(st_model_t *m)
{
    if (!m)
        return;
    free(m->layers);
    free(m->name);
    st_gguf_close(m->gguf);
    st_crypt_close(m->crypt);   /* after the reader that points into it */
    free(m);
}

uint64_t st_model_decrypted_bytes(const st_model_t *m)
{
    uint64_t bytes = 0;
    if (m && m->crypt)
        st_crypt_stats(m->crypt, NULL, NULL, &bytes);
    return bytes;
}

const st_llama_hparams_t *st_model_hparams(const st_model_t *m) { return &m->hp; }
const st_tensor_t *st_model_tok_embd(const st_model_t *m)        { return m->tok_embd; }
const st_tensor_t *st_model_output_norm(const st_model_t *m)     { return m->output_norm; }
const st_tensor_t *st_model_output(const st_model_t *m)          { return m->output; }
const st_gguf_t   *st_model_gguf(const st_model_t *m)            { return m->gguf; }
const char        *st_model_arch(const st_model_t *m)            { return m->arch; }
const char        *st_model_name(const st_model_t *m)            { return m->name; }

const st_llama_layer_t *st_model_layer(const st_model_t *m, uint32_t i)
{
    return i < m->hp.n_layer ? &m->layers[i] : NULL;
}

static uint64_t layer_bytes(const st_llama_layer_t *l)
{
    return l->attn_norm->nbytes + l->wq->nbytes + l->wk->nbytes + l->wv->nbytes +
           l->wo->nbytes + l->ffn_norm->nbytes + l->w_gate->nbytes + l->w_up->nbytes +
           l->w_down->nbytes;
}

uint64_t st_model_layer_bytes(const st_model_t *m, uint32_t i)
{
    return i < m->hp.n_layer ? layer_bytes(&m->layers[i]) : 0;
}

uint64_t st_model_embd_bytes(const st_model_t *m)
{
    return m->tok_embd->nbytes;
}

uint64_t st_model_output_bytes(const st_model_t *m)
{
    return m->output->nbytes + m->output_norm->nbytes;
}

uint64_t st_model_kv_bytes_per_token_layer(const st_model_t *m)
{
    return 2ull * m->hp.n_head_kv * m->hp.head_dim * sizeof(float);
}

/* ---- prefetch ------------------------------------------------------------ */

typedef struct prefetch {
    long                  page;
    uint64_t              done, total, next_report;
    st_model_progress_fn  fn;
    void                 *ctx;
    volatile uint8_t      sink;
} prefetch_t;

/* Progress is reported about every 16 MiB: often enough for a smooth bar,
 * rarely enough that the callback costs nothing next to the page faults. */
#define PREFETCH_REPORT_BYTES (16ull << 20)

static void touch_tensor(prefetch_t *p, const st_tensor_t *t)
{
    uintptr_t mask = ~((uintptr_t)p->page - 1);
    uintptr_t start = (uintptr_t)t->data, end = start + t->nbytes, next;

    /* Advisory only: when it fails the reads below fault the pages in. */
    (void)madvise((void *)(start & mask), end - (start & mask), MADV_WILLNEED);
    for (uintptr_t q = start; q < end; q = next) {
        next = ST_MIN((q & mask) + (uintptr_t)p->page, end);
        p->sink ^= *(const volatile uint8_t *)q;
        p->done += next - q;
        if (p->fn && p->done >= p->next_report) {
            p->fn(p->ctx, p->done, p->total);
            p->next_report = p->done + PREFETCH_REPORT_BYTES;
        }
    }
}

static void layer_tensors(const st_llama_layer_t *l, const st_tensor_t *ts[9])
{
    ts[0] = l->attn_norm; ts[1] = l->wq; ts[2] = l->wk; ts[3] = l->wv; ts[4] = l->wo;
    ts[5] = l->ffn_norm; ts[6] = l->w_gate; ts[7] = l->w_up; ts[8] = l->w_down;
}

st_status_t st_model_prefetch(const st_model_t *m, uint32_t first, uint32_t last,
                              int with_embd, st_model_progress_fn fn, void *ctx)
{
    prefetch_t p = {.fn = fn, .ctx = ctx};
    const st_tensor_t *ts[9];
    int out_is_embd;

    if (!m || first > last || last > m->hp.n_layer)
        return ST_ERR_INVALID;
    p.page = sysconf(_SC_PAGESIZE);
    if (p.page <= 0)
        p.page = 4096;
    /* A tied output is the embedding: touch it once. */
    out_is_embd = (with_embd & 2) && m->output == m->tok_embd;
    for (uint32_t i = first; i < last; i++)
        p.total += layer_bytes(&m->layers[i]);
    if (with_embd & 1)
        p.total += m->tok_embd->nbytes;
    if (with_embd & 2)
        p.total += (out_is_embd && (with_embd & 1) ? 0 : m->output->nbytes) + m->output_norm->nbytes;
    p.next_report = PREFETCH_REPORT_BYTES;

    if (with_embd & 1)
        touch_tensor(&p, m->tok_embd);
    for (uint32_t i = first; i < last; i++) {
        layer_tensors(&m->layers[i], ts);
        for (int k = 0; k < 9; k++)
            touch_tensor(&p, ts[k]);
    }
    if (with_embd & 2) {
        if (!(out_is_embd && (with_embd & 1)))
            touch_tensor(&p, m->output);
        touch_tensor(&p, m->output_norm);
    }
    if (fn)
        fn(ctx, p.done, p.total);
    return ST_OK;
}
