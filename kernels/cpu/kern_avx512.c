/*
 * kern_avx512.c - AVX-512 (F/BW/VL/DQ) + VNNI kernels.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
 * -mavx2 -mfma -mf16c set on this file only (kernels/CMakeLists.txt): a
 * per-file flag set is the same as a target attribute on every function
 * here, and works with gcc and clang alike. Nothing in this file runs
 * unless isa.c found those features at run time.
 *
 * Two integer matmul kernels (see cpu_impl.h for the formulation):
 *  - qgemv, for n < 16 tokens: streams weight rows straight from the
 *    mapping, in 256-bit registers (vpdpbusd ymm issues on two ports, zmm
 *    on one), two blocks per step; 4 rows x 1 token, or 2 rows x up to 4
 *    tokens sharing each expanded weight pair.
 *  - qgemm, for n >= 16 tokens (prefill): expands a tile of 16 weight rows
 *    once into u8 + per-lane scales in per-thread scratch, then runs a
 *    4-row x 4-token microkernel with 16 zmm accumulators, so each weight
 *    block loaded is used for 4 tokens and each activation block for 4
 *    rows. Per element the arithmetic is the same for every tile shape, so
 *    where a tile boundary falls never changes a result.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_impl.h"

#include "kern_x86.h"

/* Lane sums of four vectors at once, [sum a0, sum a1, sum a2, sum a3]. Each
 * sum is the same fixed tree over its own lanes whatever the other inputs
 * are, so padding with zero vectors never changes a result. Sharing the
 * shuffles costs ~3.5 uops per sum instead of ~8 for four separate
 * reductions, which was a fifth of the 4x4 tile's time. */
INLINE __m128 reduce4_512(__m512 a0, __m512 a1, __m512 a2, __m512 a3)
{
    __m512 e01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
    __m512 e23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
    __m512 f = _mm512_add_ps(_mm512_shuffle_f32x4(e01, e23, 0x88), _mm512_shuffle_f32x4(e01, e23, 0xDD));
    f = _mm512_add_ps(f, _mm512_permute_ps(f, 0xB1));
    f = _mm512_add_ps(f, _mm512_permute_ps(f, 0x4E));
    return _mm512_castps512_ps128(
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), f));
}

INLINE __m128 reduce4_256(__m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
    __m256 d = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
}

/* ---- activation quantization ---- */

static void quantize_row_avx512(const float *x, const st_q8_layout_t *L, uint8_t *row,
                                int with_dx16)
{
    int8_t *q = (int8_t *)row, *q2 = (int8_t *)(row + L->q2_off);
    float *xv = (float *)(row + L->xv_off);
    float *dx16 = (float *)(row + L->dx16_off);
    float *s = (float *)(row + L->s_off);
    const __m512 sign = _mm512_set1_ps(-0.0f);

    for (int p = 0; p < L->np; p++) {
        float d2[2] = {0.0f, 0.0f};
        for (int h = 0; h < 2; h++) {
            int b = 2 * p + h;
            int8_t *lo = q + p * 64 + h * 16, *hi = lo + 32;
            int8_t *lo2 = q2 + p * 64 + h * 16, *hi2 = lo2 + 32;
            if (b >= L->nb) {
                memset(lo, 0, 16);
                memset(hi, 0, 16);
                if (L->two) {
                    memset(lo2, 0, 16);
                    memset(hi2, 0, 16);
                }
                xv[p * 4 + 2 * h] = xv[p * 4 + 2 * h + 1] = s[b] = 0.0f;
                continue;
            }
            __m512 v0 = _mm512_loadu_ps(x + (size_t)b * ST_QK);
            __m512 v1 = _mm512_loadu_ps(x + (size_t)b * ST_QK + 16);
            __m512 am = _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1));
            float amax = _mm512_reduce_max_ps(am);
            float d = amax / 127.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            __m512 vid = _mm512_set1_ps(id);
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
            _mm_storeu_si128((__m128i *)lo, _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)hi, _mm512_cvtsepi32_epi8(q1));
            if (L->two) {
                /* level 2 on the residual; same operations as the scalar
                 * reference (fma residual, reciprocal, round to even) */
                float dl2 = d / 127.0f;
                float id2 = dl2 != 0.0f ? 1.0f / dl2 : 0.0f;
                __m512 vd = _mm512_set1_ps(d), vid2 = _mm512_set1_ps(id2);
                const __m512i k127 = _mm512_set1_epi32(127);
                __m512i r0 = _mm512_cvtps_epi32(
                    _mm512_mul_ps(_mm512_fnmadd_ps(vd, _mm512_cvtepi32_ps(q0), v0), vid2));
                __m512i r1 = _mm512_cvtps_epi32(
                    _mm512_mul_ps(_mm512_fnmadd_ps(vd, _mm512_cvtepi32_ps(q1), v1), vid2));
                _mm_storeu_si128((__m128i *)lo2, _mm512_cvtsepi32_epi8(r0));
                _mm_storeu_si128((__m128i *)hi2, _mm512_cvtsepi32_epi8(r1));
                q0 = _mm512_add_epi32(_mm512_mullo_epi32(q0, k127), r0);
                q1 = _mm512_add_epi32(_mm512_mullo_epi32(q1, k127), r1);
                d = dl2;
            }
            int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            d2[h] = d;
            xv[p * 4 + 2 * h] = d;
            xv[p * 4 + 2 * h + 1] = s[b] = d * (float)sum;
        }
        if (with_dx16) {
            __m128 a = _mm_set1_ps(d2[0]), c = _mm_set1_ps(d2[1]);
            _mm_storeu_ps(dx16 + p * 16 + 0, a);
            _mm_storeu_ps(dx16 + p * 16 + 4, c);
            _mm_storeu_ps(dx16 + p * 16 + 8, a);
            _mm_storeu_ps(dx16 + p * 16 + 12, c);
        }
    }
}

/* ---- qgemv: few tokens, weights streamed ---- */

/* sum u * c over a block pair into 8 int32 lanes; x = q1 lo, hi and, when
 * two, q2 lo, hi: 127 * dot(q1) + dot(q2), exact in int32. */
INLINE __m256i pair_dpbusd(int two, __m256i wl, __m256i wh, const __m256i *x)
{
    __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wl, x[0]);
    dot = _mm256_dpbusd_epi32(dot, wh, x[1]);
    if (two) {
        dot = _mm256_sub_epi32(_mm256_slli_epi32(dot, 7), dot);
        dot = _mm256_dpbusd_epi32(dot, wl, x[2]);
        dot = _mm256_dpbusd_epi32(dot, wh, x[3]);
    }
    return dot;
}

/* Activation planes of pair p of one row: q1 (lo, hi), q2 (lo, hi) when two. */
INLINE void load_x(int two, const uint8_t *xrow, const st_q8_layout_t *L, int p, __m256i *x)
{
    const int8_t *q = (const int8_t *)xrow + p * 64;
    x[0] = _mm256_loadu_si256((const __m256i *)q);
    x[1] = _mm256_loadu_si256((const __m256i *)(q + 32));
    if (two) {
        const int8_t *q2 = (const int8_t *)(xrow + L->q2_off) + p * 64;
        x[2] = _mm256_loadu_si256((const __m256i *)q2);
        x[3] = _mm256_loadu_si256((const __m256i *)(q2 + 32));
    }
}

INLINE void gemv_pair_w(int two, __m256i wl, __m256i wh, __m128 dm, const __m256i *x, __m128 xvp,
                        __m256 *acc, __m128 *accm)
{
    const __m256i idx = _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2);
    __m256i dot = pair_dpbusd(two, wl, wh, x);
    __m128 sc4 = _mm_mul_ps(dm, xvp);
    *accm = _mm_add_ps(*accm, sc4);
    __m256 sc8 = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(sc4), idx);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), sc8, *acc);
}

/* R rows x T tokens (R * T <= 8): each weight pair is expanded once and
 * used for T tokens. Every (row, token) element goes through gemv_pair in
 * the same order whatever R and T are. */
INLINE void gemv_tile(int type, int two, const st_qmm_args_t *a, int r, int R, int t0, int T)
{
    const int bb = st_qblock_bytes(type);
    const int nfull = a->L.nb / 2;
    const uint8_t *wr[4], *xr[4];
    __m256 acc[4][4];
    __m128 accm[4][4];

    for (int i = 0; i < R; i++)
        wr[i] = a->w + (size_t)(r + i) * a->w_stride;
    for (int j = 0; j < T; j++)
        xr[j] = a->xq + (size_t)(t0 + j) * a->L.stride;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            acc[i][j] = _mm256_setzero_ps();
            accm[i][j] = _mm_setzero_ps();
        }
    for (int p = 0; p <= nfull; p++) {
        if (p == nfull && !(a->L.nb & 1))
            break;
        for (int i = 0; i < R; i++) {
            const uint8_t *b0 = wr[i] + (size_t)(2 * p) * bb;
            const uint8_t *b1 = p < nfull ? b0 + bb : NULL;
            _mm_prefetch((const char *)(b0 + ST_GEMV_PREFETCH), _MM_HINT_T0);
            __m256i wl, wh;
            pair_u8(type, b0, b1, &wl, &wh);
            __m128 dm = pair_dm(type, b0, b1);
            for (int j = 0; j < T; j++) {
                const float *xv = (const float *)(xr[j] + a->L.xv_off) + p * 4;
                __m256i x[4];
                load_x(two, xr[j], &a->L, p, x);
                gemv_pair_w(two, wl, wh, dm, x, _mm_loadu_ps(xv), &acc[i][j], &accm[i][j]);
            }
        }
    }
    for (int j = 0; j < T; j++) {
        /* m lanes 1 and 3 hold sum(O * s); 0 and 2 are unused products */
        __m128 sums = reduce4_256(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
        __m128 m01 = _mm_shuffle_ps(accm[0][j], accm[1][j], 0xDD);   /* m0[1] m0[3] m1[1] m1[3] */
        __m128 m23 = _mm_shuffle_ps(accm[2][j], accm[3][j], 0xDD);
        __m128 msum = _mm_add_ps(_mm_shuffle_ps(m01, m23, 0x88), _mm_shuffle_ps(m01, m23, 0xDD));
        __m128 res = _mm_fmadd_ps(_mm_set1_ps(ofactor(type)), msum, sums);
        _mm_mask_storeu_ps(a->out + (size_t)(t0 + j) * a->ldo + r, (__mmask8)((1u << R) - 1), res);
    }
}

/* The decode hot path, 4 rows x 1 token: as gemv_tile, but the scales of
 * two rows are converted and multiplied in one 256-bit step (the products
 * are the same IEEE operations lane by lane, so results equal gemv_tile's).
 * Q4_1 1536x576 hot: 25-27 GB/s against 24 for gemv_tile (one thread). */
INLINE void gemv_r4t1(int type, int two, const st_qmm_args_t *a, int r, int t0)
{
    const int bb = st_qblock_bytes(type);
    const int nfull = a->L.nb / 2;
    const uint8_t *xr = a->xq + (size_t)t0 * a->L.stride;
    const uint8_t *wr[4];
    const __m256i lo = _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2);
    const __m256i hi = _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6);
    __m256 acc[4], accm[2];

    for (int i = 0; i < 4; i++) {
        wr[i] = a->w + (size_t)(r + i) * a->w_stride;
        acc[i] = _mm256_setzero_ps();
    }
    accm[0] = accm[1] = _mm256_setzero_ps();
    for (int p = 0; p <= nfull; p++) {
        if (p == nfull && !(a->L.nb & 1))
            break;
        __m256i x[4];
        load_x(two, xr, &a->L, p, x);
        const __m128 xv4 = _mm_loadu_ps((const float *)(xr + a->L.xv_off) + p * 4);
        const __m256 xv8 = _mm256_set_m128(xv4, xv4);
        for (int h = 0; h < 2; h++) {
            const uint8_t *b0[2], *b1[2];
            __m256i dot[2];
            for (int e = 0; e < 2; e++) {
                __m256i wl, wh;
                b0[e] = wr[2 * h + e] + (size_t)(2 * p) * bb;
                b1[e] = p < nfull ? b0[e] + bb : NULL;
                _mm_prefetch((const char *)(b0[e] + ST_GEMV_PREFETCH), _MM_HINT_T0);
                pair_u8(type, b0[e], b1[e], &wl, &wh);
                dot[e] = pair_dpbusd(two, wl, wh, x);
            }
            __m128i bits = _mm_set_epi64x((long long)pair_dm_bits(type, b0[1], b1[1]),
                                          (long long)pair_dm_bits(type, b0[0], b1[0]));
            __m256 sc8 = _mm256_mul_ps(_mm256_cvtph_ps(bits), xv8);
            accm[h] = _mm256_add_ps(accm[h], sc8);
            acc[2 * h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[0]),
                                         _mm256_permutevar8x32_ps(sc8, lo), acc[2 * h]);
            acc[2 * h + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[1]),
                                             _mm256_permutevar8x32_ps(sc8, hi), acc[2 * h + 1]);
        }
    }
    __m128 sums = reduce4_256(acc[0], acc[1], acc[2], acc[3]);
    /* accm[h] lanes: row 2h at 0..3, row 2h+1 at 4..7; O*s sit at 1, 3 */
    __m128 m01 = _mm_shuffle_ps(_mm256_castps256_ps128(accm[0]), _mm256_extractf128_ps(accm[0], 1), 0xDD);
    __m128 m23 = _mm_shuffle_ps(_mm256_castps256_ps128(accm[1]), _mm256_extractf128_ps(accm[1], 1), 0xDD);
    __m128 msum = _mm_add_ps(_mm_shuffle_ps(m01, m23, 0x88), _mm_shuffle_ps(m01, m23, 0xDD));
    __m128 res = _mm_fmadd_ps(_mm_set1_ps(ofactor(type)), msum, sums);
    _mm_storeu_ps(a->out + (size_t)t0 * a->ldo + r, res);
}

INLINE void qgemv_type(int type, int two, const st_qmm_args_t *a, int r0, int r1)
{
    for (int t0 = 0; t0 < a->n; t0 += 4) {
        const int T = ST_MIN(4, a->n - t0);
        int r = r0;
        switch (T) {
        case 1:
            /* Q8_0 measured ~5% slower in gemv_r4t1 (35 vs 37 GB/s hot) */
            for (; r + 4 <= r1; r += 4) {
                if (type == ST_DTYPE_Q8_0)
                    gemv_tile(type, two, a, r, 4, t0, 1);
                else
                    gemv_r4t1(type, two, a, r, t0);
            }
            for (; r < r1; r++)
                gemv_tile(type, two, a, r, 1, t0, 1);
            break;
        case 2:
            for (; r + 2 <= r1; r += 2)
                gemv_tile(type, two, a, r, 2, t0, 2);
            for (; r < r1; r++)
                gemv_tile(type, two, a, r, 1, t0, 2);
            break;
        case 3:
            for (; r + 2 <= r1; r += 2)
                gemv_tile(type, two, a, r, 2, t0, 3);
            for (; r < r1; r++)
                gemv_tile(type, two, a, r, 1, t0, 3);
            break;
        default:
            for (; r + 2 <= r1; r += 2)
                gemv_tile(type, two, a, r, 2, t0, 4);
            for (; r < r1; r++)
                gemv_tile(type, two, a, r, 1, t0, 4);
            break;
        }
    }
}

static void qgemv_avx512(const st_qmm_args_t *a, int r0, int r1, void *scratch)
{
    (void)scratch;
    switch (a->type * 2 + a->L.two) {
    case ST_DTYPE_Q4_1 * 2:     qgemv_type(ST_DTYPE_Q4_1, 0, a, r0, r1); break;
    case ST_DTYPE_Q4_1 * 2 + 1: qgemv_type(ST_DTYPE_Q4_1, 1, a, r0, r1); break;
    case ST_DTYPE_Q4_0 * 2:     qgemv_type(ST_DTYPE_Q4_0, 0, a, r0, r1); break;
    case ST_DTYPE_Q4_0 * 2 + 1: qgemv_type(ST_DTYPE_Q4_0, 1, a, r0, r1); break;
    case ST_DTYPE_Q8_0 * 2:     qgemv_type(ST_DTYPE_Q8_0, 0, a, r0, r1); break;
    default:                    qgemv_type(ST_DTYPE_Q8_0, 1, a, r0, r1); break;
    }
}

/* ---- qgemm: many tokens, 4x4 tiles over expanded weights ---- */

/* Per-thread scratch for one block of QG_ROWS weight rows. */
#define QG_ROWS 16
typedef struct tile_buf {
    uint8_t *wexp;    /* [QG_ROWS][np][64] u8 in the activation layout */
    float   *dw16;    /* [QG_ROWS][np][16] D in the dx16 lane pattern */
    float   *of;      /* [QG_ROWS][nb16] O * ofactor per block, zero padded */
    int      nb16;
} tile_buf_t;

static void tile_buf_at(const st_q8_layout_t *L, void *scratch, tile_buf_t *tb)
{
    uint8_t *p = scratch;
    tb->nb16 = (int)ST_ALIGN_UP((size_t)L->nb, (size_t)16);
    tb->wexp = p;
    p += (size_t)QG_ROWS * L->np * 64;
    tb->dw16 = (float *)p;
    p += (size_t)QG_ROWS * L->np * 64;
    tb->of = (float *)p;
}

static size_t qgemm_scratch_avx512(const st_q8_layout_t *L)
{
    return (size_t)QG_ROWS * L->np * 128 +
           (size_t)QG_ROWS * ST_ALIGN_UP((size_t)L->nb, (size_t)16) * 4 + 64;
}

/* Expands rows r..r+R-1 into slots 0..R-1 of the buffer. */
INLINE void tile_prep(int type, const st_qmm_args_t *a, int r, int R, const tile_buf_t *tb)
{
    const int bb = st_qblock_bytes(type), np = a->L.np, nb = a->L.nb;
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
    const float of = ofactor(type);

    for (int i = 0; i < R; i++) {
        const uint8_t *w = a->w + (size_t)(r + i) * a->w_stride;
        uint8_t *we = tb->wexp + (size_t)i * np * 64;
        float *dw = tb->dw16 + (size_t)i * np * 16;
        float *o = tb->of + (size_t)i * tb->nb16;
        for (int p = 0; p < np; p++) {
            const uint8_t *b0 = w + (size_t)(2 * p) * bb;
            const uint8_t *b1 = 2 * p + 1 < nb ? b0 + bb : NULL;
            __m256i wl, wh;
            float dm[4];
            pair_u8(type, b0, b1, &wl, &wh);
            _mm256_storeu_si256((__m256i *)(we + p * 64), wl);
            _mm256_storeu_si256((__m256i *)(we + p * 64 + 32), wh);
            __m128 v = pair_dm(type, b0, b1);
            _mm512_storeu_ps(dw + p * 16, _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v)));
            _mm_storeu_ps(dm, v);
            o[2 * p] = dm[1] * of;
            o[2 * p + 1] = dm[3] * of;   /* 2 * np <= nb16: nb16 is even and >= nb */
        }
        for (int b = 2 * np; b < tb->nb16; b++)
            o[b] = 0.0f;
    }
}

/* R rows x T tokens; every (row, token) element sees the same sequence of
 * operations whatever R and T are. */
INLINE void tile_kernel(int two, const st_qmm_args_t *a, const tile_buf_t *tb_all, int slot,
                        int r, int t0, int R, int T)
{
    /* rows r.. live in buffer slots slot.. */
    const int np_ = a->L.np;
    const tile_buf_t tbv = { tb_all->wexp + (size_t)slot * np_ * 64,
                             tb_all->dw16 + (size_t)slot * np_ * 16,
                             tb_all->of + (size_t)slot * tb_all->nb16, tb_all->nb16 };
    const tile_buf_t *tb = &tbv;
    const int np = a->L.np, nb = a->L.nb;
    const uint8_t *xr[4];
    __m512 acc[4][4];

    for (int j = 0; j < T; j++)
        xr[j] = a->xq + (size_t)(t0 + j) * a->L.stride;
    for (int i = 0; i < R; i++)
        for (int j = 0; j < T; j++)
            acc[i][j] = _mm512_setzero_ps();

    for (int p = 0; p < np; p++) {
        __m512i W[4];
        __m512 DW[4];
        for (int i = 0; i < R; i++) {
            W[i] = _mm512_loadu_si512(tb->wexp + ((size_t)i * np + p) * 64);
            DW[i] = _mm512_loadu_ps(tb->dw16 + ((size_t)i * np + p) * 16);
        }
        for (int j = 0; j < T; j++) {
            __m512i X = _mm512_loadu_si512(xr[j] + (size_t)p * 64);
            __m512i X2 = two ? _mm512_loadu_si512(xr[j] + a->L.q2_off + (size_t)p * 64)
                             : _mm512_setzero_si512();
            __m512 DX = _mm512_loadu_ps((const float *)(xr[j] + a->L.dx16_off) + p * 16);
            for (int i = 0; i < R; i++) {
                __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[i], X);
                if (two) {   /* 127 * dot(q1) + dot(q2), as pair_dpbusd */
                    d = _mm512_sub_epi32(_mm512_slli_epi32(d, 7), d);
                    d = _mm512_dpbusd_epi32(d, W[i], X2);
                }
                acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(DW[i], DX),
                                            acc[i][j]);
            }
        }
    }
    for (int b = 0; b < nb; b += 16) {
        __mmask16 m = nb - b >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nb - b)) - 1);
        for (int j = 0; j < T; j++) {
            __m512 S = _mm512_maskz_loadu_ps(m, (const float *)(xr[j] + a->L.s_off) + b);
            for (int i = 0; i < R; i++)
                acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(tb->of + (size_t)i * tb->nb16 + b),
                                            S, acc[i][j]);
        }
    }
    for (int j = 0; j < T; j++) {
        __m512 z = _mm512_setzero_ps();
        __m128 v = reduce4_512(acc[0][j], R > 1 ? acc[1][j] : z, R > 2 ? acc[2][j] : z,
                               R > 3 ? acc[3][j] : z);
        _mm_mask_storeu_ps(a->out + (size_t)(t0 + j) * a->ldo + r, (__mmask8)((1u << R) - 1), v);
    }
}

#define TILE_CASE(R, T) \
    case ((R) - 1) * 4 + (T) - 1: tile_kernel(TWO, a, tb, slot, r, t0, R, T); break;
#define TILE_CASES \
    TILE_CASE(1, 1) TILE_CASE(1, 2) TILE_CASE(1, 3) TILE_CASE(1, 4) \
    TILE_CASE(2, 1) TILE_CASE(2, 2) TILE_CASE(2, 3) TILE_CASE(2, 4) \
    TILE_CASE(3, 1) TILE_CASE(3, 2) TILE_CASE(3, 3) TILE_CASE(3, 4) \
    TILE_CASE(4, 1) TILE_CASE(4, 2) TILE_CASE(4, 3)

static void tile_dispatch(const st_qmm_args_t *a, const tile_buf_t *tb, int slot, int r, int t0,
                          int R, int T)
{
    if (a->L.two) {
#define TWO 1
        switch ((R - 1) * 4 + T - 1) {
        TILE_CASES
        default: tile_kernel(TWO, a, tb, slot, r, t0, 4, 4); break;
        }
#undef TWO
    } else {
#define TWO 0
        switch ((R - 1) * 4 + T - 1) {
        TILE_CASES
        default: tile_kernel(TWO, a, tb, slot, r, t0, 4, 4); break;
        }
#undef TWO
    }
}

/* Rows go in blocks of QG_ROWS: expand the block's weights once, then for
 * each group of 4 tokens run the 4-row tiles across the block. Walking rows
 * inside a token group writes each token's outputs as whole cache lines;
 * walking all tokens per 4 rows instead would touch n lines per tile that
 * are rows * 4 bytes apart, which for rows a multiple of 1024 all fall in
 * one L1 set (measured 2.5x slower on the 49152-row output head). */
static void qgemm_avx512(const st_qmm_args_t *a, int r0, int r1, void *scratch)
{
    tile_buf_t tb;
    tile_buf_at(&a->L, scratch, &tb);
    for (int rb = r0; rb < r1; rb += QG_ROWS) {
        int nr = ST_MIN(QG_ROWS, r1 - rb);
        switch (a->type) {
        case ST_DTYPE_Q4_1: tile_prep(ST_DTYPE_Q4_1, a, rb, nr, &tb); break;
        case ST_DTYPE_Q4_0: tile_prep(ST_DTYPE_Q4_0, a, rb, nr, &tb); break;
        default:            tile_prep(ST_DTYPE_Q8_0, a, rb, nr, &tb); break;
        }
        for (int t0 = 0; t0 < a->n; t0 += 4)
            for (int i = 0; i < nr; i += 4)
                tile_dispatch(a, &tb, i, rb + i, t0, ST_MIN(4, nr - i), ST_MIN(4, a->n - t0));
    }
}

/* ---- float kernels ---- */

/* exp(x) for x in float range: Cephes' polynomial on the reduced argument,
 * ~2 ulp; inputs are clamped so 2^n stays a normal float. */
INLINE __m512 exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 z = _mm512_mul_ps(x, x);
    __m512 y = _mm512_set1_ps(1.9875691500E-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
    y = _mm512_fmadd_ps(y, z, _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

INLINE __mmask16 tail_mask(int left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

static float dot_f32_avx512(const float *a, const float *b, int n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static float sumsq_f32_avx512(const float *x, int n)
{
    return dot_f32_avx512(x, x, n);
}

static void scale_mul_avx512(const float *x, const float *w, float s, float *out, int n)
{
    __m512 vs = _mm512_set1_ps(s);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i)));
    }
}

static void swiglu_avx512(const float *g, const float *u, float *out, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((int)ST_MIN(n - i, (size_t)16));
        __m512 vg = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), vg));
        __m512 silu = _mm512_div_ps(vg, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

static void add_avx512(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((int)ST_MIN(n - i, (size_t)16));
        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(x + i, m, v);
    }
}

static void axpby_avx512(float *y, float a, const float *x, float b, int n)
{
    __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + i), va);
        v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), vb, v);
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

static float exp_sum_avx512(float *x, float mx, int n)
{
    __m512 vm = _mm512_set1_ps(mx), s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm));
        e = _mm512_maskz_mov_ps(m, e);
        _mm512_mask_storeu_ps(x + i, m, e);
        s = _mm512_add_ps(s, e);
    }
    return _mm512_reduce_add_ps(s);
}

/* One head of attention, 16 positions at a time: the 16 scores come out of
 * one shared reduction (reduce4_512 x 4) instead of a horizontal sum per
 * position, and the running output stays in registers. Measured ~10x the
 * generic path (a dot and an axpy call per position). */
INLINE void attn_head_n(const float *q, const float *k, const float *v, size_t kv_stride,
                        int npos, int nq, float scale, float *out)
{
    __m512 qv[ST_ATTN_HEAD_MAX_DIM / 16], o[ST_ATTN_HEAD_MAX_DIM / 16];
    float m = -INFINITY, l = 0.0f;
    float p[16];

    for (int c = 0; c < nq; c++) {
        qv[c] = _mm512_mul_ps(_mm512_loadu_ps(q + c * 16), _mm512_set1_ps(scale));
        o[c] = _mm512_setzero_ps();
    }
    for (int j0 = 0; j0 < npos; j0 += 16) {
        const int cnt = ST_MIN(16, npos - j0);
        const __mmask16 valid = (__mmask16)((1u << cnt) - 1);
        __m128 part[4];
        for (int g = 0; g < 4; g++) {
            __m512 acc[4];
            for (int i = 0; i < 4; i++) {
                int jj = g * 4 + i;
                acc[i] = _mm512_setzero_ps();
                if (jj < cnt) {
                    const float *kr = k + (size_t)(j0 + jj) * kv_stride;
                    for (int c = 0; c < nq; c++)
                        acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(kr + c * 16), qv[c], acc[i]);
                }
            }
            part[g] = reduce4_512(acc[0], acc[1], acc[2], acc[3]);
        }
        __m512 sc = _mm512_castps128_ps512(part[0]);
        sc = _mm512_insertf32x4(sc, part[1], 1);
        sc = _mm512_insertf32x4(sc, part[2], 2);
        sc = _mm512_insertf32x4(sc, part[3], 3);
        sc = _mm512_mask_blend_ps(valid, _mm512_set1_ps(-INFINITY), sc);
        float nm = fmaxf(m, _mm512_reduce_max_ps(sc));
        float corr = m == -INFINITY ? 0.0f : expf(m - nm);
        __m512 e = _mm512_maskz_mov_ps(valid, exp512(_mm512_sub_ps(sc, _mm512_set1_ps(nm))));
        l = l * corr + _mm512_reduce_add_ps(e);
        _mm512_storeu_ps(p, e);
        for (int c = 0; c < nq; c++)
            o[c] = _mm512_mul_ps(o[c], _mm512_set1_ps(corr));
        for (int jj = 0; jj < cnt; jj++) {
            const float *vr = v + (size_t)(j0 + jj) * kv_stride;
            __m512 pj = _mm512_set1_ps(p[jj]);
            for (int c = 0; c < nq; c++)
                o[c] = _mm512_fmadd_ps(_mm512_loadu_ps(vr + c * 16), pj, o[c]);
        }
        m = nm;
    }
    __m512 inv = _mm512_set1_ps(1.0f / l);
    for (int c = 0; c < nq; c++)
        _mm512_storeu_ps(out + c * 16, _mm512_mul_ps(o[c], inv));
}

/* head_dim 64 (the model's) gets its own copy with the loops unrolled. */
static void attn_head_avx512(const float *q, const float *k, const float *v, size_t kv_stride,
                             int npos, int head_dim, float scale, float *out)
{
    if (head_dim == 64)
        attn_head_n(q, k, v, kv_stride, npos, 4, scale, out);
    else
        attn_head_n(q, k, v, kv_stride, npos, head_dim / 16, scale, out);
}

static void dequant_row_avx512(int type, const void *src, float *dst, int n)
{
    const uint16_t *h = src;
    int i = 0;
    switch (type) {
    case ST_DTYPE_F16:
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
        for (; i < n; i++)
            dst[i] = st_fp16_to_f32(h[i]);
        break;
    case ST_DTYPE_BF16:
        for (; i + 16 <= n; i += 16) {
            __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(h + i)));
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        }
        for (; i < n; i++)
            dst[i] = st_bf16_to_f32(h[i]);
        break;
    default:
        st_cpu_dequant_row_ref(type, src, dst, n);
        break;
    }
}

static const st_cpu_kernels_t kernels_avx512 = {
    .isa = ST_CPU_ISA_AVX512,
    .quantize_row = quantize_row_avx512,
    .qgemv = qgemv_avx512,
    .qgemm = qgemm_avx512,
    .qgemm_scratch = qgemm_scratch_avx512,
    .tile_min_n = 16,
    .dequant_row = dequant_row_avx512,
    .dot_f32 = dot_f32_avx512,
    .sumsq_f32 = sumsq_f32_avx512,
    .scale_mul = scale_mul_avx512,
    .swiglu = swiglu_avx512,
    .add = add_avx512,
    .axpby = axpby_avx512,
    .exp_sum = exp_sum_avx512,
    .attn_head = attn_head_avx512,
};

const st_cpu_kernels_t *st_cpu_kernels_avx512(void)
{
    return &kernels_avx512;
}
