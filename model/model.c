/*
 * model.c - opens a model: the GGUF file, its architecture's binding
 * (model/arch.c), the vocabulary checks every architecture shares,
 * decryption of encrypted files, sizes and prefetch (see st_model.h).
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

#include "model_internal.h"
#include "st_util.h"

/* llama.cpp's token types (llama_token_type): 0 undefined .. 6 byte. An
 * index outside this range was a published out-of-bounds read in another
 * loader, so it is refused here for every consumer. */
#define TOKEN_TYPE_MAX  6
#define TOKEN_TYPE_BYTE 6

/* Vocabulary size and the token-indexed arrays that must agree with it. */
static st_status_t read_vocab(st_bind_t *c, st_hparams_t *hp)
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

    snprintf(key, sizeof(key), "%s.vocab_size", c->arch);
    s = st_gguf_get_arr(c->g, "tokenizer.ggml.tokens", &et, &n_tokens, NULL);
    if (s != ST_OK && s != ST_ERR_NOT_FOUND)
        return st_bind_key_error(c, "tokenizer.ggml.tokens", s);
    if (s == ST_OK && et != ST_GGUF_STRING)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: key 'tokenizer.ggml.tokens': array of "
                            "%s, expected string", c->path, st_gguf_type_name(et));
    if (st_gguf_find_key(c->g, key) >= 0) {
        if ((s = st_bind_u32(c, "vocab_size", NULL, 1, INT32_MAX, &hp->n_vocab)) != ST_OK)
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
            return st_bind_key_error(c, per_token[i], s);
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
            return st_bind_key_error(c, id_keys[i], s);
        if (id >= hp->n_vocab)
            return st_error_set(c->err, ST_ERR_RANGE, "%s: key '%s': token id %" PRIu32
                                " outside the vocabulary (0..%" PRIu32 ")", c->path,
                                id_keys[i], id, hp->n_vocab - 1);
    }
    return ST_OK;
}

static st_status_t read_names(st_bind_t *c, st_model_t *m, st_str_t arch)
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
        const st_layer_t *l = &m->layers[i];
        for (uint32_t k = 0; k < l->n_all && s == ST_OK; k++)
            s = decrypt_tensor(m, l->all[k], err);
    }
    if (s == ST_OK && (embd & 1))
        s = decrypt_tensor(m, m->tok_embd, err);
    if (s == ST_OK && (embd & 2))
        s = decrypt_tensor(m, m->output_norm, err);
    if (s == ST_OK && (embd & 2))
        s = decrypt_tensor(m, m->output, err);
    return s;
}

/* Room for the 2-D views of every 3-D tensor (experts, MLA heads): sized
 * once so that the addresses bindings hand out never move. The cap bounds
 * what a hostile file can make us allocate (DeepSeek-V3 needs ~60k). */
#define MAX_VIEWS (1u << 20)

static st_status_t size_views(st_bind_t *b, st_model_t *m)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < st_gguf_n_tensors(m->gguf); i++) {
        const st_tensor_t *t = st_gguf_tensor(m->gguf, i);
        if (t->n_dims == 3)
            n += t->ne[2];
        if (n > MAX_VIEWS)
            return st_bind_error(b, ST_ERR_FORMAT, "3-D tensors hold more than %u slices "
                                 "(tensor '%s')", MAX_VIEWS, t->name);
    }
    if (n == 0)
        return ST_OK;
    m->views = calloc(n, sizeof *m->views);
    if (!m->views)
        return st_bind_error(b, ST_ERR_NOMEM, "out of memory for %" PRIu64 " tensor views", n);
    m->cap_views = n;
    return ST_OK;
}

st_status_t st_model_open(const char *path, const st_model_open_params_t *params,
                          st_model_t **out, st_error_t *err)
{
    int encrypted = 0;
    st_model_t *m;
    st_bind_t b;
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
    b = (st_bind_t){m->gguf, st_gguf_path(m->gguf), m->arch, err, m};

    s = st_gguf_get_str(m->gguf, "general.architecture", &arch);
    if (s != ST_OK) {
        s = st_bind_key_error(&b, "general.architecture", s);
        goto err_model;
    }
    m->arch_desc = st_arch_find(arch.ptr, arch.len);
    if (!m->arch_desc) {
        s = st_error_set(err, ST_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported "
                         "(supported: %s)", b.path, st_gguf_str_printable(arch, buf, sizeof(buf)),
                         st_model_supported_archs());
        goto err_model;
    }
    if ((s = read_names(&b, m, arch)) != ST_OK ||
        (s = st_bind_common(&b)) != ST_OK ||
        (s = read_vocab(&b, &m->hp)) != ST_OK)
        goto err_model;
    /* Every layer needs several tensors: refuse a block_count the file
     * cannot back before allocating per-layer state for it. */
    if ((uint64_t)m->hp.n_layer * 4 > st_gguf_n_tensors(m->gguf)) {
        s = st_error_set(err, ST_ERR_FORMAT, "%s: key '%s.block_count': %" PRIu32 " layers but "
                         "the file has only %" PRIu64 " tensors", b.path, m->arch, m->hp.n_layer,
                         st_gguf_n_tensors(m->gguf));
        goto err_model;
    }
    m->layers = calloc(m->hp.n_layer, sizeof(st_layer_t));
    if (!m->layers) {
        s = st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", b.path);
        goto err_model;
    }
    for (uint32_t i = 0; i < m->hp.n_layer; i++) {
        m->layers[i].rope_theta = m->hp.rope_theta;
        m->layers[i].rope_freq_scale = m->hp.rope_freq_scale;
    }
    if ((s = size_views(&b, m)) != ST_OK ||
        (s = st_bind_embd_output(&b)) != ST_OK ||
        (s = m->arch_desc->bind(&b)) != ST_OK)
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
    free(m->views);
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

const st_hparams_t *st_model_hparams(const st_model_t *m)        { return &m->hp; }
const st_tensor_t *st_model_tok_embd(const st_model_t *m)        { return m->tok_embd; }
const st_tensor_t *st_model_output_norm(const st_model_t *m)     { return m->output_norm; }
const st_tensor_t *st_model_output(const st_model_t *m)          { return m->output; }
const st_gguf_t   *st_model_gguf(const st_model_t *m)            { return m->gguf; }
const char        *st_model_arch(const st_model_t *m)            { return m->arch; }
const char        *st_model_name(const st_model_t *m)            { return m->name; }
st_family_t        st_model_family(const st_model_t *m)          { return m->arch_desc->family; }

const st_layer_t *st_model_layer(const st_model_t *m, uint32_t i)
{
    return i < m->hp.n_layer ? &m->layers[i] : NULL;
}

static uint64_t layer_bytes(const st_layer_t *l)
{
    uint64_t b = 0;
    for (uint32_t k = 0; k < l->n_all; k++)
        b += l->all[k]->nbytes;
    return b;
}

uint64_t st_model_layer_bytes(const st_model_t *m, uint32_t i)
{
    return i < m->hp.n_layer ? layer_bytes(&m->layers[i]) : 0;
}

uint64_t st_model_layer_active_bytes(const st_model_t *m, uint32_t i)
{
    const st_layer_t *l;
    uint64_t b, routed = 0;

    if (i >= m->hp.n_layer)
        return 0;
    l = &m->layers[i];
    b = layer_bytes(l);
    if (!l->is_moe)
        return b;
    /* A token reads n_expert_used of the n_expert slices of each stacked
     * expert tensor; the rest of the layer it reads whole. */
    const st_tensor_t *exps[] = {l->gate_exps, l->up_exps, l->down_exps};
    for (size_t k = 0; k < ST_ARRAY_SIZE(exps); k++)
        if (exps[k])
            routed += exps[k]->nbytes;
    return b - routed + routed / m->hp.n_expert * m->hp.n_expert_used;
}

uint64_t st_model_embd_bytes(const st_model_t *m)
{
    return m->tok_embd->nbytes;
}

uint64_t st_model_output_bytes(const st_model_t *m)
{
    return m->output->nbytes + m->output_norm->nbytes;
}

uint64_t st_model_kv_bytes_per_token_layer(const st_model_t *m, uint32_t kv_type)
{
    return st_dtype_row_bytes(kv_type, m->hp.kv_k_dim) + st_dtype_row_bytes(kv_type, m->hp.kv_v_dim);
}

uint64_t st_model_kv_full_bytes_per_token_layer(const st_model_t *m, uint32_t kv_type)
{
    const st_hparams_t *hp = &m->hp;
    if (hp->kv_lora_rank)   /* MLA: every head's key (nope + rope) and value */
        return st_dtype_row_bytes(kv_type, (uint64_t)hp->n_head *
                                  (hp->qk_nope_dim + hp->qk_rope_dim + hp->v_head_dim_mla));
    return st_model_kv_bytes_per_token_layer(m, kv_type);
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

st_status_t st_model_prefetch(const st_model_t *m, uint32_t first, uint32_t last,
                              int with_embd, st_model_progress_fn fn, void *ctx)
{
    prefetch_t p = {.fn = fn, .ctx = ctx};
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
        const st_layer_t *l = &m->layers[i];
        for (uint32_t k = 0; k < l->n_all; k++)
            touch_tensor(&p, l->all[k]);
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
