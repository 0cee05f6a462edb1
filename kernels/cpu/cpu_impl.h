/*
 * cpu_impl.h - internals of the CPU backend shared by its files.
 *
 * The backend is split by subject:
 *   cpu_backend.c  the ops table, create/destroy, the small ops
 *   matmul.c       the matmul driver: activation quantization, row split
 *   pool.c         the persistent thread pool (pool.h)
 *   isa.c          CPU feature detection, STRATA_CPU_ISA, bandwidth probe
 *   kern_scalar.c, kern_avx2.c, kern_avx512.c, kern_amx.c (+ kern_x86.h)
 *                  one st_cpu_kernels_t table per instruction-set level;
 *                  the SIMD files are compiled with their -m flags (see
 *                  kernels/CMakeLists.txt) and entered only after a
 *                  run-time feature check.
 *
 * Integer matmul formulation (Q4_0, Q4_1, Q8_0 weights). Every weight block
 * b of 32 values is written as w_i = D_b * u_i + O_b with u_i unsigned
 * 8-bit:
 *   Q4_1: u = nibble,         D = d, O = m
 *   Q4_0: u = nibble,         D = d, O = -8 d
 *   Q8_0: u = q + 128 (u8),   D = d, O = -128 d
 * Activations are quantized per block of 32 in one or two 8-bit levels
 * (STRATA_ACT_BITS=8 or 16, read once at backend creation):
 *   level 1: d1 = max|x| / 127, q1 = round(x / d1)          (|q1| <= 127)
 *   level 2: r = x - d1 q1 (one fma), d2 = d1 / 127,
 *            q2 = round(r / d2)                               (|q2| <= 64)
 * so x ~= d1 q1 + d2 q2 = d2 (127 q1 + q2), a ~15-bit activation. With
 * c = q1 (8-bit) or 127 q1 + q2 (16-bit) and dx = d1 or d2,
 *   sum_i w_i x_i ~= D dx * sum_i u_i c_i + O s,   s = dx * sum(c)
 * and sum u*c = 127 sum(u q1) + sum(u q2) is two integer dots on the SAME
 * loaded weight block, combined exactly in int32 (|.| < 2^31 for u <= 255)
 * before the one float conversion: weights are read once, only the
 * integer work doubles. sum u*q is exactly what VNNI's vpdpbusd (u8 x s8)
 * and AMX's TDPBUSD compute. The scalar and AVX2 levels compute the same
 * quantity their own way (AVX2 keeps Q8_0 signed because maddubs would
 * saturate on u = q + 128).
 *
 * Why two levels: with 8-bit activations the real model's logits moved by
 * up to 0.3 (different per ISA), enough to flip greedy answers whose top-2
 * margin is ~0.1; the second level brings them within ~1e-3 of their range
 * (max|err| / max|logit| per position, against float64; docs/KERNELS.md).
 * Scales below ~1e-34 lose precision in d2 (a subnormal) and blocks whose
 * d2 underflows to zero read as zero: far below anything a model produces.
 *
 * Float-activation formulation (Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K:
 * st_cpu_kq_type). These weights are decoded block by block in registers
 * (kern_kq.h: w = fma(u, D, O) per chunk of 32) and multiplied with the
 * float activations as they are: no activation quantization, no
 * dequantized copy of the weights. A (row, token) element accumulates its
 * chunks into a fixed set of vector accumulators in chunk order whatever
 * n; larger n decodes a row once into per-thread scratch (the same floats)
 * and walks the tokens a few at a time, so results are batch invariant.
 *
 * Activation row layout (one row per token, `stride` bytes, 64-aligned),
 * blocks taken in pairs (b0 = 2p, b1 = 2p + 1; a missing last b1 is zero):
 *   q    [np][64] int8: b0 q0..15 | b1 q0..15 | b0 q16..31 | b1 q16..31
 *                        so that nibble-expanded Q4 pairs line up with it
 *   q2   [np][64] int8: level-2 values, same order (two-level rows only)
 *   xv   [np][4]  f32:  dx0, s0, dx1, s1
 *   dx16 [np][16] f32:  dx0 x4, dx1 x4, dx0 x4, dx1 x4 (only when asked:
 *                        the AVX-512 tile kernel's lane pattern)
 *   s    [np*2]   f32:  s per block
 */
#ifndef ST_CPU_IMPL_H
#define ST_CPU_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "st_cpu.h"
#include "st_kernels.h"
#include "st_util.h"

#define ST_QK 32   /* values per block of Q4_0 / Q4_1 / Q8_0 */
#define ST_ATTN_HEAD_MAX_DIM 256   /* Gemma 3: 256 */
/* qgemv prefetches each weight stream this many bytes ahead. The hardware
 * prefetcher alone left decode at ~55 tokens/s on the 2-core dev VM under
 * load; 4 KiB gave ~90, 8 KiB ~100 (SmolLM2, strata bench decode, 1 thread,
 * Intel Xeon). On an AMD EPYC (2026-12-07, same benchmark, 1 / 2 threads)
 * 16 KiB was best of 4..64 KiB: Gemma 3 270M decode 81 -> 93-99 / 129 ->
 * 136 tokens/s against 8 KiB, SmolLM2 239 -> 256 / 349 -> 352; 32 and 64
 * KiB fell back. Prefetches never fault, so running past the mapping's end
 * is harmless. */
#ifndef ST_GEMV_PREFETCH   /* -D overrides for experiments */
#define ST_GEMV_PREFETCH 16384
#endif
#ifndef ST_GEMV_PF_HINT
#define ST_GEMV_PF_HINT _MM_HINT_T0
#endif

/* Busy-wait hint for the short spins of the pool and the matmul driver. */
static inline void st_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

typedef struct st_q8_layout {
    int    nb;        /* blocks per row */
    int    np;        /* block pairs per row, (nb + 1) / 2 */
    int    two;       /* 1: two-level (16-bit) activations, q2 present */
    size_t q2_off;    /* byte offsets inside one row (q2_off: two only) */
    size_t xv_off;
    size_t dx16_off;
    size_t s_off;
    size_t stride;    /* bytes per activation row, multiple of 64 */
} st_q8_layout_t;

static inline void st_q8_layout(int cols, int two, st_q8_layout_t *L)
{
    L->nb = cols / ST_QK;
    L->np = (L->nb + 1) / 2;
    L->two = two != 0;
    L->q2_off = (size_t)L->np * 64;
    L->xv_off = L->q2_off + (two ? (size_t)L->np * 64 : 0);
    L->dx16_off = L->xv_off + (size_t)L->np * 16;
    L->s_off = L->dx16_off + (size_t)L->np * 64;
    L->stride = ST_ALIGN_UP(L->s_off + (size_t)L->np * 8, (size_t)64);
}

/* Bytes per weight block and where its quants start, for the int types. */
static inline int st_qblock_bytes(int type)
{
    switch (type) {
    case ST_DTYPE_Q4_0: return 18;
    case ST_DTYPE_Q4_1: return 20;
    case ST_DTYPE_Q5_0: return 22;
    case ST_DTYPE_Q5_1: return 24;
    default:            return 34;   /* Q8_0 */
    }
}

/* Rows a kgemv decodes into scratch at once for n beyond its register
 * tile; the driver's per-thread scratch holds ST_KQ_ROWS * max_cols floats. */
#define ST_KQ_ROWS 16

/* Weight types of the float-activation kernels (kgemv). */
static inline int st_cpu_kq_type(int type)
{
    return type == ST_DTYPE_Q5_0 || type == ST_DTYPE_Q5_1 || type == ST_DTYPE_Q2_K ||
           type == ST_DTYPE_Q3_K || type == ST_DTYPE_Q4_K || type == ST_DTYPE_Q5_K ||
           type == ST_DTYPE_Q6_K;
}

/* One float-activation matmul call (kgemv) as the kernels see it. */
typedef struct st_kmm_args {
    int            type;       /* st_cpu_kq_type */
    const uint8_t *w;          /* row 0 of the weights */
    size_t         w_stride;   /* bytes per weight row */
    int            cols;       /* a multiple of the type's block size */
    const float   *x;          /* [n][cols] activations */
    int            n;
    float         *out;        /* out[t * ldo + r] */
    int            ldo;
} st_kmm_args_t;

/* One integer-matmul call as the kernels see it. */
typedef struct st_qmm_args {
    int            type;       /* ST_DTYPE_Q4_0, Q4_1 or Q8_0 (and Q5_0, Q5_1: qgemv_q5) */
    const uint8_t *w;          /* row 0 of the weights */
    size_t         w_stride;   /* bytes per weight row */
    st_q8_layout_t L;          /* activation layout (cols = L.nb * 32) */
    const uint8_t *xq;         /* activation row 0 */
    const uint8_t *xq2;        /* repacked activations (kernels with ->repack) */
    int            n_pad;      /* tokens in xq2, n rounded up to repack_align */
    int            n;          /* token rows */
    float         *out;        /* out[t * ldo + r] */
    int            ldo;
} st_qmm_args_t;

/* One instruction-set level's kernels. Members marked optional may be NULL. */
typedef struct st_cpu_kernels {
    st_cpu_isa_t isa;
    /* Quantize one activation row of `cols` floats into the layout above;
     * with_dx16 also fills dx16. L->two selects one or two levels. */
    void (*quantize_row)(const float *x, const st_q8_layout_t *L, uint8_t *row, int with_dx16);
    /* out for rows [r0, r1) and all n tokens, weights read in place; any n.
     * Batch invariance: every integer kernel of a level (qgemv and qgemm,
     * for any n) must give each (row, token) element bit for bit the same
     * result, i.e. the same float operations in the same order; only the
     * integer block sums may be formed differently (they are exact).
     * Levels may differ from each other. */
    void (*qgemv)(const st_qmm_args_t *a, int r0, int r1, void *scratch);
    /* Nonzero: qgemv also reads Q5_0 and Q5_1 (for every n; qgemm never
     * does), so they take the integer path at this level instead of kgemv. */
    int qgemv_q5;
    /* Optional: tiled version for n >= tile_min_n, reusing each weight
     * block across several tokens. Needs dx16 and scratch of
     * qgemm_scratch(L) bytes. Per-element arithmetic must not depend on
     * r0/r1 alignment beyond the 16-row chunks the driver uses. */
    void (*qgemm)(const st_qmm_args_t *a, int r0, int r1, void *scratch);
    size_t (*qgemm_scratch)(const st_q8_layout_t *L);
    int tile_min_n;
    /* Optional: a second activation layout for qgemm when n >= repack_min_n
     * (AMX tiles). repack() writes token t (t < n_pad) from its quantized
     * row, or zeros when !valid (padding up to n_pad); both levels when
     * L->two. repack_bytes depends on L->two too. */
    void (*repack)(const uint8_t *xrow, const st_q8_layout_t *L, int t, int n_pad, int valid,
                   uint8_t *xq2);
    size_t (*repack_bytes)(int n_pad, const st_q8_layout_t *L);
    int repack_min_n;
    int repack_align;
    /* Optional: out for rows [r0, r1) and all n tokens of a st_cpu_kq_type
     * weight, decoded in place against float activations; scratch holds
     * ST_KQ_ROWS * cols floats (64-aligned; cols is a multiple of 32). Each (row, token) element must get the
     * same float operations whatever n. NULL: the driver dequantizes each
     * row (dequant_row) and uses dot_f32, as for F16/BF16/Q6_K. */
    void (*kgemv)(const st_kmm_args_t *a, int r0, int r1, float *scratch);
    /* Dequantize one weight row of n values (F16, BF16, Q6_K, ...). */
    void (*dequant_row)(int type, const void *src, float *dst, int n);
    float (*dot_f32)(const float *a, const float *b, int n);
    float (*sumsq_f32)(const float *x, int n);
    /* out[j] = x[j] * s * w[j] */
    void (*scale_mul)(const float *x, const float *w, float s, float *out, int n);
    void (*swiglu)(const float *g, const float *u, float *out, size_t n);
    /* out = gelu_tanh(g) * u (Gemma's GeGLU) */
    void (*geglu)(const float *g, const float *u, float *out, size_t n);
    void (*add)(float *x, const float *y, size_t n);
    /* y[j] = y[j] * a + x[j] * b  (attention's running output) */
    void (*axpby)(float *y, float a, const float *x, float b, int n);
    /* x[j] = exp(x[j] - m); returns the sum of the results (same order
     * on every call for the same n). */
    float (*exp_sum)(float *x, float m, int n);
    /* Optional: one attention head, out = softmax(scale * q.K^T) V over
     * npos positions whose k/v rows (of kv_type: F32, F16 or Q8_0, read in
     * place) are row_bytes apart. Handles head_dim % 16 == 0 && head_dim <=
     * ATTN_HEAD_MAX_DIM (Q8_0: % 32); NULL or other sizes use the generic
     * path in cpu_backend.c. */
    void (*attn_head)(uint32_t kv_type, const float *q, const void *k, const void *v,
                      size_t row_bytes, int npos, int head_dim, float scale, float *out);
    /* n values of a KV-cache row of kv_type (F16; Q8_0 with n % 32 == 0,
     * from a block boundary) as floats: the generic attention path decodes
     * one row of one head at a time into a stack buffer, never the cache. */
    void (*kv_load)(uint32_t kv_type, const void *src, float *dst, int n);
} st_cpu_kernels_t;

const st_cpu_kernels_t *st_cpu_kernels_scalar(void);
const st_cpu_kernels_t *st_cpu_kernels_avx2(void);    /* NULL when not compiled */
const st_cpu_kernels_t *st_cpu_kernels_avx512(void);  /* NULL when not compiled */
int st_cpu_amx_built(void);                           /* 0 when kern_amx.c is not compiled */
/* Turns a copy of the AVX-512 table into the AMX level's table. */
void st_cpu_kernels_amx_patch(st_cpu_kernels_t *k);
/* The table of a supported level, copied into *out (the backend keeps its
 * own copy: levels may be assembled from several files). */
void st_cpu_kernels_get(st_cpu_isa_t isa, st_cpu_kernels_t *out);

/* Shared scalar helpers (kern_scalar.c), also used as tails by SIMD files. */
void  st_cpu_quantize_row_ref(const float *x, const st_q8_layout_t *L, uint8_t *row,
                              int with_dx16);
void  st_cpu_dequant_row_ref(int type, const void *src, float *dst, int n);

/* ---- the matmul driver (matmul.c) ---- */

struct st_pool;
typedef struct st_cpu_mm {
    const st_cpu_kernels_t *k;
    struct st_pool         *pool;
    int                     n_threads;
    int                     act_two;     /* two-level activations (STRATA_ACT_BITS=16) */
    uint32_t                max_batch;
    uint32_t                max_cols;
    uint8_t                *xq;          /* max_batch activation rows */
    size_t                  xq_bytes;
    uint8_t                *xq2;         /* repacked activations, when k->repack */
    uint8_t               **tscratch;    /* per thread */
    size_t                  tscratch_bytes;
} st_cpu_mm_t;

/* act_bits: 8 or 16 (see the formulation above). */
st_status_t st_cpu_mm_init(st_cpu_mm_t *mm, const st_cpu_kernels_t *k, struct st_pool *pool,
                           int n_threads, int act_bits, uint32_t max_batch, uint32_t max_cols,
                           st_error_t *err);
void st_cpu_mm_fini(st_cpu_mm_t *mm);
void st_cpu_mm_run(st_cpu_mm_t *mm, const st_tensor_t *w, const float *x, int n, float *out);
/* out[i] = w[i] x for n_w weights reading the same x: one quantization of
 * x and one pool dispatch when all are integer types of equal width (and
 * n_w <= 4); otherwise one st_cpu_mm_run per weight. Same results either way. */
void st_cpu_mm_run_multi(st_cpu_mm_t *mm, int n_w, const st_tensor_t *const *w, const float *x,
                         int n, float *const *out);

#endif /* ST_CPU_IMPL_H */
