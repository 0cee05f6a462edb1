/*
 * kt_util.h - helpers shared by the kernel workbench tests: a seeded RNG,
 * random weight tensors of every dtype, and opening the CPU backend at a
 * forced instruction-set level and thread count.
 */
#ifndef KT_UTIL_H
#define KT_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_cpu.h"
#include "st_dtype.h"
#include "st_kernels.h"
#include "st_tensor.h"

static inline uint64_t kt_rng(uint64_t *s)
{
    /* splitmix64: reproducible across platforms */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static inline float kt_uniform(uint64_t *s)
{
    return (float)((double)(kt_rng(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static inline void kt_fill(float *x, size_t n, float scale, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = kt_uniform(s) * scale;
}

static inline void kt_put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

/* A random rows x cols weight tensor of `type` (owned: free t->data). Quant
 * payloads are random bytes (every byte pattern is a valid block); scales
 * are set to sane magnitudes so results stay in a realistic range. */
/* The block-quantized types added with the float-activation kernels
 * (Q5_0, Q5_1, Q2_K..Q6_K), for tests that loop over them. */
static const int kt_kq_types[] = {ST_DTYPE_Q5_0, ST_DTYPE_Q5_1, ST_DTYPE_Q2_K,
                                  ST_DTYPE_Q3_K, ST_DTYPE_Q4_K, ST_DTYPE_Q5_K, ST_DTYPE_Q6_K};
#define KT_N_KQ_TYPES ((int)(sizeof kt_kq_types / sizeof kt_kq_types[0]))

/* Smallest row length of a type (its block size). */
static inline int kt_block_elems(int type)
{
    const st_dtype_traits_t *tr = st_dtype_traits((uint32_t)type);
    return tr ? (int)tr->block_elems : 1;
}

static inline int kt_make_weight(st_tensor_t *t, int type, int rows, int cols, uint64_t *s)
{
    const st_dtype_traits_t *tr = st_dtype_traits((uint32_t)type);
    uint64_t rb = st_dtype_row_bytes((uint32_t)type, (uint64_t)cols);
    uint8_t *d;

    if (!tr || rb == 0)
        return -1;
    memset(t, 0, sizeof *t);
    d = malloc((size_t)rb * (size_t)rows + 64);
    if (!d)
        return -1;
    for (size_t i = 0; i < (size_t)rb * (size_t)rows + 64; i++)
        d[i] = (uint8_t)kt_rng(s);
    for (int r = 0; r < rows; r++) {
        uint8_t *row = d + (size_t)r * rb;
        for (int b = 0; b < cols / (int)tr->block_elems; b++) {
            uint8_t *blk = row + (size_t)b * tr->block_bytes;
            float sc = 0.01f + 0.02f * (kt_uniform(s) + 1.0f);
            switch (type) {
            case ST_DTYPE_F32: {
                float v = kt_uniform(s);
                memcpy(blk, &v, 4);
                break;
            }
            case ST_DTYPE_F16:  kt_put16(blk, st_f32_to_fp16(kt_uniform(s))); break;
            case ST_DTYPE_BF16: kt_put16(blk, st_f32_to_bf16(kt_uniform(s))); break;
            case ST_DTYPE_Q4_0:
            case ST_DTYPE_Q8_0: kt_put16(blk, st_f32_to_fp16(type == ST_DTYPE_Q8_0 ? sc / 8 : sc)); break;
            case ST_DTYPE_Q4_1:
                kt_put16(blk, st_f32_to_fp16(sc));
                kt_put16(blk + 2, st_f32_to_fp16(-8.0f * sc + 0.05f * kt_uniform(s)));
                break;
            case ST_DTYPE_Q5_0: kt_put16(blk, st_f32_to_fp16(sc / 2)); break;
            case ST_DTYPE_Q5_1:
                kt_put16(blk, st_f32_to_fp16(sc / 2));
                kt_put16(blk + 2, st_f32_to_fp16(-8.0f * sc + 0.05f * kt_uniform(s)));
                break;
            case ST_DTYPE_Q2_K:   /* d * (0..15) * (0..3) - dmin * (0..15) */
                kt_put16(blk + 80, st_f32_to_fp16(sc / 4));
                kt_put16(blk + 82, st_f32_to_fp16(sc / 3));
                break;
            case ST_DTYPE_Q3_K:   /* d * (-32..31) * (-4..3) */
                kt_put16(blk + 108, st_f32_to_fp16(sc / 16));
                break;
            case ST_DTYPE_Q4_K:   /* d * (0..63) * (0..15 or 31) - dmin * (0..63) */
            case ST_DTYPE_Q5_K:
                kt_put16(blk, st_f32_to_fp16(sc / (type == ST_DTYPE_Q4_K ? 32 : 64)));
                kt_put16(blk + 2, st_f32_to_fp16(sc / 8));
                break;
            case ST_DTYPE_Q6_K:
                for (int k = 0; k < 16; k++)
                    blk[192 + k] = (uint8_t)(int8_t)(kt_rng(s) % 64 - 32);
                kt_put16(blk + 208, st_f32_to_fp16(sc / 64));
                break;
            default:
                break;
            }
        }
    }
    t->name = "test.weight";
    t->type = (st_dtype_t)type;
    t->n_dims = 2;
    t->ne[0] = (uint64_t)cols;
    t->ne[1] = (uint64_t)rows;
    t->ne[2] = t->ne[3] = 1;
    t->row_bytes = rb;
    t->nbytes = rb * (uint64_t)rows;
    t->data = d;
    return 0;
}

/* Opens the CPU backend at `isa` with `nth` threads and STRATA_ACT_BITS =
 * act_bits (0: unset, the default); 0 on success. */
static inline int kt_open_bits(st_cpu_isa_t isa, int nth, int act_bits, uint32_t max_batch,
                               uint32_t max_cols, st_backend_t *be)
{
    static const char *const env[] = {"scalar", "avx2", "avx512", "amx"};
    st_backend_params_t p = { .size = sizeof p, .n_threads = nth, .max_batch = max_batch,
                              .max_cols = max_cols };
    st_error_t err = {{0}};
    st_status_t st;
    char bits[16];
    setenv("STRATA_CPU_ISA", env[isa], 1);
    if (act_bits) {
        snprintf(bits, sizeof bits, "%d", act_bits);
        setenv("STRATA_ACT_BITS", bits, 1);
    }
    st = st_backend_open("cpu", &p, be, &err);
    unsetenv("STRATA_CPU_ISA");
    unsetenv("STRATA_ACT_BITS");
    if (st != ST_OK)
        fprintf(stderr, "  open cpu/%s x%d act %d: %s\n", env[isa], nth, act_bits, err.msg);
    return st == ST_OK ? 0 : -1;
}

/* Opens the CPU backend at `isa` with `nth` threads; 0 on success. */
static inline int kt_open(st_cpu_isa_t isa, int nth, uint32_t max_batch, uint32_t max_cols,
                          st_backend_t *be)
{
    return kt_open_bits(isa, nth, 0, max_batch, max_cols, be);
}

#endif /* KT_UTIL_H */
