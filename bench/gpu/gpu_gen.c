/*
 * gpu_gen.c - writes a random Llama-shaped GGUF (v3) file with bf16 or
 * quantized matrices, f32 norms and no tokenizer (llama.vocab_size gives
 * the vocabulary), for bench/gpu/check.sh.
 *
 * The GPU machine has no Python packages beyond PyTorch and no network, and
 * the 8B shape is 16 GB: values are drawn once into a 64 MiB pool per
 * scale and each tensor is written as slices of that pool at seeded random
 * offsets. Weights therefore repeat at a large period, which changes
 * nothing for speed or for comparing two backends on the same file.
 * Scales follow tests/tools/gen_model.py (matrices ~ U with std fan_in^-1/2,
 * embedding std 1, norms 1 + 0.1 u).
 *
 * Quantized matrices (--type) are random blocks, which are all valid: the
 * pool holds blocks of random bytes whose f16 scale fields are then set so
 * the weights have about the wanted std and no offset on average (the
 * second field of Q4_1/Q5_1/K types cancels the mean of the unsigned
 * codes), and tensors are written as whole-block slices of the pool.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_tool.h"
#include "st_dtype.h"

#define POOL_ELEMS (32u << 20)   /* bf16 values per pool: 64 MiB */
#define ALIGN 32u

enum { GG_U32 = 4, GG_F32 = 6, GG_STRING = 8 };

typedef struct gen_tensor {
    char     name[64];
    uint32_t n_dims;
    uint64_t ne[2];
    uint32_t type;       /* ST_DTYPE_F32 (norms) or the matrices' type */
    float    scale;      /* matrices: std; norms: unused */
    uint64_t offset;     /* in the data section */
    uint64_t bytes;
} gen_tensor_t;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static float rng_unif(uint64_t *s)
{
    return (float)((double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static int put(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

static int put_str(FILE *f, const char *s)
{
    uint64_t n = strlen(s);
    return put(f, &n, 8) || put(f, s, (size_t)n);
}

static int kv_u32(FILE *f, const char *k, uint32_t v)
{
    uint32_t t = GG_U32;
    return put_str(f, k) || put(f, &t, 4) || put(f, &v, 4);
}

static int kv_f32(FILE *f, const char *k, float v)
{
    uint32_t t = GG_F32;
    return put_str(f, k) || put(f, &t, 4) || put(f, &v, 4);
}

static int kv_str(FILE *f, const char *k, const char *v)
{
    uint32_t t = GG_STRING;
    return put_str(f, k) || put(f, &t, 4) || put_str(f, v);
}

static void add_t(gen_tensor_t *ts, int *n, uint32_t wtype, const char *name, uint64_t ne0,
                  uint64_t ne1, float scale)
{
    gen_tensor_t *t = &ts[(*n)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->type = ne1 ? wtype : ST_DTYPE_F32;
    t->scale = scale;
    t->bytes = st_dtype_row_bytes(t->type, ne0) * t->ne[1];
}

/* Where a quantized block keeps its f16 scale (d) and its second f16 field
 * (m or dmin, -1 when none), and the second field's value relative to d
 * that makes the weights' mean about zero (the mean code times the mean
 * sub-scale over the mean sub-min). */
static int qfields(uint32_t type, int *d_off, int *m_off, float *m_ratio)
{
    *m_off = -1;
    *m_ratio = 0;
    switch (type) {
    case ST_DTYPE_Q4_0: case ST_DTYPE_Q5_0: case ST_DTYPE_Q8_0: *d_off = 0; return 0;
    case ST_DTYPE_Q4_1: *d_off = 0; *m_off = 2; *m_ratio = -7.5f; return 0;    /* x = d q + m */
    case ST_DTYPE_Q5_1: *d_off = 0; *m_off = 2; *m_ratio = -15.5f; return 0;
    case ST_DTYPE_Q2_K: *d_off = 80; *m_off = 82; *m_ratio = 1.5f; return 0;   /* x = d s q - dmin m */
    case ST_DTYPE_Q3_K: *d_off = 108; return 0;
    case ST_DTYPE_Q4_K: *d_off = 0; *m_off = 2; *m_ratio = 7.5f; return 0;
    case ST_DTYPE_Q5_K: *d_off = 0; *m_off = 2; *m_ratio = 15.5f; return 0;
    case ST_DTYPE_Q6_K: *d_off = 208; return 0;
    default: return -1;
    }
}

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = st_f32_to_fp16(v);
    memcpy(p, &h, 2);
}

/* A pool of POOL_BYTES of random `type` blocks whose weights have about
 * std `sd`: the blocks are drawn with d = 1, their weights' RMS measured
 * with the reference dequantization, and d set to sd / RMS. */
static uint8_t *make_qpool(uint32_t type, float sd, uint64_t *rng, uint64_t *n_blocks)
{
    const st_dtype_traits_t *tr = st_dtype_traits(type);
    const uint64_t nb = POOL_ELEMS * 2u / tr->block_bytes;
    uint8_t *pool = malloc((size_t)(nb * tr->block_bytes));
    float w[256], ratio, d;
    double ss = 0;
    int d_off, m_off;

    if (!pool || qfields(type, &d_off, &m_off, &ratio) != 0) {
        free(pool);
        return NULL;
    }
    for (uint64_t i = 0; i < nb * tr->block_bytes; i += 8) {
        uint64_t r = rng_next(rng);
        uint64_t left = nb * tr->block_bytes - i;
        memcpy(pool + i, &r, (size_t)(left < 8 ? left : 8));
    }
    for (int pass = 0; pass < 2; pass++) {
        d = pass == 0 ? 1.0f : sd / (float)sqrt(ss / (4096.0 * tr->block_elems));
        for (uint64_t b = 0; b < (pass == 0 ? 4096u : nb); b++) {
            uint8_t *blk = pool + b * tr->block_bytes;
            put_f16(blk + d_off, d);
            if (m_off >= 0)
                put_f16(blk + m_off, ratio * d);
            if (pass == 0) {
                st_dtype_dequantize_row(type, blk, w, tr->block_elems);
                for (uint32_t j = 0; j < tr->block_elems; j++)
                    ss += (double)w[j] * w[j];
            }
        }
    }
    *n_blocks = nb;
    return pool;
}

int gpu_gen_model(const char *path, const gpu_shape_t *s, uint64_t seed)
{
    const uint32_t hd = s->dim / s->n_head, q_dim = s->dim, kv_dim = s->n_head_kv * hd;
    const int n_t = 2 + (s->tied ? 0 : 1) + 9 * (int)s->n_layer;
    const float sc_dim = 1.0f / sqrtf((float)s->dim), sc_ff = 1.0f / sqrtf((float)s->n_ff);
    const float scales[3] = {1.0f, sc_dim, sc_ff};
    const uint32_t wt = s->wtype ? s->wtype : ST_DTYPE_BF16;
    const st_dtype_traits_t *wtr = st_dtype_traits(wt);
    uint16_t *pool[3] = {NULL, NULL, NULL};
    uint8_t *qpool[3] = {NULL, NULL, NULL};
    uint64_t q_nb[3] = {0, 0, 0};
    int qd, qm;
    float qr;
    gen_tensor_t *ts = calloc((size_t)n_t, sizeof *ts);
    float *nbuf = malloc((size_t)s->dim * sizeof(float));
    uint64_t rng = seed, off = 0, n_kv = 11;
    uint32_t version = 3;
    char name[64];
    int n = 0, rc = -1;
    FILE *f = NULL;

    if (!ts || !nbuf || s->dim % s->n_head || s->n_head % s->n_head_kv)
        goto out;
    if (!wtr || (wt != ST_DTYPE_BF16 && qfields(wt, &qd, &qm, &qr) != 0)) {
        fprintf(stderr, "gen: matrices of type %s are not supported (bf16 or a quantized type)\n",
                st_dtype_name(wt));
        goto out;
    }
    /* Every matrix row (dim, q_dim and n_ff long) must be whole blocks. */
    if (s->dim % wtr->block_elems || s->n_ff % wtr->block_elems) {
        fprintf(stderr, "gen: %s rows need a multiple of %u values; shape %s has dim %u, ff %u\n",
                st_dtype_name(wt), wtr->block_elems, s->name, s->dim, s->n_ff);
        goto out;
    }
    /* One pool per scale: U(-a, a) has std a / sqrt(3). */
    for (int p = 0; p < 3; p++) {
        float a = scales[p] * 1.7320508f;
        if (wt != ST_DTYPE_BF16) {
            if (!(qpool[p] = make_qpool(wt, scales[p], &rng, &q_nb[p])))
                goto out;
            continue;
        }
        if (!(pool[p] = malloc((size_t)POOL_ELEMS * 2)))
            goto out;
        for (uint32_t i = 0; i < POOL_ELEMS; i++)
            pool[p][i] = st_f32_to_bf16(rng_unif(&rng) * a);
    }

    add_t(ts, &n, wt, "token_embd.weight", s->dim, s->n_vocab, scales[0]);
    add_t(ts, &n, wt, "output_norm.weight", s->dim, 0, 0);
    if (!s->tied)
        add_t(ts, &n, wt, "output.weight", s->dim, s->n_vocab, sc_dim);
    for (uint32_t l = 0; l < s->n_layer; l++) {
#define L(suffix, ne0, ne1, sc) \
        (snprintf(name, sizeof name, "blk.%u." suffix ".weight", l), add_t(ts, &n, wt, name, ne0, ne1, sc))
        L("attn_norm", s->dim, 0, 0);
        L("attn_q", s->dim, q_dim, sc_dim);
        L("attn_k", s->dim, kv_dim, sc_dim);
        L("attn_v", s->dim, kv_dim, sc_dim);
        L("attn_output", q_dim, s->dim, sc_dim);
        L("ffn_norm", s->dim, 0, 0);
        L("ffn_gate", s->dim, s->n_ff, sc_dim);
        L("ffn_up", s->dim, s->n_ff, sc_dim);
        L("ffn_down", s->n_ff, s->dim, sc_ff);
#undef L
    }
    for (int i = 0; i < n; i++) {
        ts[i].offset = off;
        off = (off + ts[i].bytes + ALIGN - 1) / ALIGN * ALIGN;
    }

    if (!(f = fopen(path, "wb")))
        goto out;
    {
        uint64_t nt = (uint64_t)n;
        if (put(f, "GGUF", 4) || put(f, &version, 4) || put(f, &nt, 8) || put(f, &n_kv, 8))
            goto out;
    }
    if (kv_str(f, "general.architecture", "llama") || kv_str(f, "general.name", s->name) ||
        kv_u32(f, "llama.context_length", 8192) || kv_u32(f, "llama.embedding_length", s->dim) ||
        kv_u32(f, "llama.block_count", s->n_layer) ||
        kv_u32(f, "llama.feed_forward_length", s->n_ff) ||
        kv_u32(f, "llama.attention.head_count", s->n_head) ||
        kv_u32(f, "llama.attention.head_count_kv", s->n_head_kv) ||
        kv_f32(f, "llama.rope.freq_base", s->rope_theta) ||
        kv_f32(f, "llama.attention.layer_norm_rms_epsilon", 1e-5f) ||
        kv_u32(f, "llama.vocab_size", s->n_vocab))
        goto out;
    for (int i = 0; i < n; i++) {
        if (put_str(f, ts[i].name) || put(f, &ts[i].n_dims, 4) ||
            put(f, ts[i].ne, 8u * ts[i].n_dims) || put(f, &ts[i].type, 4) ||
            put(f, &ts[i].offset, 8))
            goto out;
    }
    {
        long here = ftell(f);
        static const char zeros[ALIGN];
        if (here < 0 || put(f, zeros, (ALIGN - (size_t)here % ALIGN) % ALIGN))
            goto out;
    }
    off = 0;
    for (int i = 0; i < n; i++) {
        static const char zeros[ALIGN];
        if (put(f, zeros, (size_t)(ts[i].offset - off)))
            goto out;
        if (ts[i].type == ST_DTYPE_F32) {
            for (uint32_t j = 0; j < ts[i].ne[0]; j++)
                nbuf[j] = 1.0f + 0.1f * rng_unif(&rng);
            if (put(f, nbuf, (size_t)ts[i].bytes))
                goto out;
        } else if (wt != ST_DTYPE_BF16) {
            const int p = ts[i].scale == scales[0] ? 0 : ts[i].scale == sc_ff ? 2 : 1;
            uint64_t left = ts[i].bytes / wtr->block_bytes;   /* blocks */
            while (left) {
                uint64_t take = left < q_nb[p] / 2 ? left : q_nb[p] / 2;
                uint64_t start = rng_next(&rng) % (q_nb[p] - take + 1);
                if (put(f, qpool[p] + start * wtr->block_bytes, (size_t)(take * wtr->block_bytes)))
                    goto out;
                left -= take;
            }
        } else {
            const uint16_t *pl = pool[ts[i].scale == scales[0] ? 0 : ts[i].scale == sc_ff ? 2 : 1];
            uint64_t left = ts[i].bytes / 2;
            while (left) {
                uint64_t take = left < POOL_ELEMS / 2 ? left : POOL_ELEMS / 2;
                uint64_t start = rng_next(&rng) % (POOL_ELEMS - take + 1);
                if (put(f, pl + start, (size_t)take * 2))
                    goto out;
                left -= take;
            }
        }
        off = ts[i].offset + ts[i].bytes;
    }
    rc = 0;
out:
    if (f && fclose(f) != 0)
        rc = -1;
    if (rc != 0 && f)
        remove(path);
    for (int p = 0; p < 3; p++) {
        free(pool[p]);
        free(qpool[p]);
    }
    free(nbuf);
    free(ts);
    return rc;
}
