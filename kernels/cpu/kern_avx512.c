/*
 * kern_avx512.c - AVX-512 (F/BW/VL/DQ) + VNNI kernels.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
 * -mavx2 -mfma -mf16c set on this file only (kernels/CMakeLists.txt): a
 * per-file flag set is the same as a target attribute on every function
 * here, and works with gcc and clang alike. Nothing in this file runs
 * unless isa.c found those features at run time.
 *
 * One integer matmul kernel for every n (see cpu_impl.h for the
 * formulation, and "integer matmul" below): weights of 16 rows are
 * transposed per block so that one vpdpbusd adds to all 16 rows' exact
 * block sums; each token's element then gets the same float operations in
 * the same order as the AMX level's fold. A token's result is therefore
 * the same whatever n and wherever it sits in the batch (batch
 * invariance; the previous streaming gemv and 4x4 register tiles summed
 * partial lanes in kernel-specific orders and differed in the last bits).
 * n = 1 dots the rows as loaded (four partial sums per row) and folds the
 * partials with one shared transpose-add; larger n transposes a 16-row
 * group once into per-thread scratch and walks the tokens 4 at a time.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_impl.h"

#include "kern_kq.h"
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

/* ---- integer matmul: one kernel for every n (batch invariance) ----
 *
 * A token's result must not depend on how many tokens share the call
 * (identical greedy requests served together must give the same text), so
 * every n runs the same per-element arithmetic, and it is the arithmetic
 * the AMX level's tiles fold with (kern_amx.c): per weight block b in
 * increasing order, the exact int32 block dot isum (127 * dot(q1) + dot(q2)
 * with two levels), then
 *     acc = fma((float)isum, D_b * dx_b, acc);  acc = fma(O_b, s_b, acc).
 * Only full block sums can be shared with AMX (one TDPBUSD per block), so
 * the weights of 16 rows are transposed per block into the tiles' "VNNI"
 * layout: W[k] lane i = values 4k..4k+3 of row i, and one vpdpbusd with a
 * broadcast activation dword adds 4 products to each row's block sum; 8
 * (16 with two levels) give 16 rows' complete sums in one zmm, no
 * horizontal reduction. The transpose (4x4 dword shuffles of 16 loaded
 * rows) is done once per 16 rows and reused by every token of the call. */

#define QT_ROWS 16

typedef struct qt_buf {
    uint32_t *wt;   /* [nb][8][16] u8 x4 per row */
    float    *d;    /* [nb][16] D per row */
    float    *o;    /* [nb][16] O * ofactor per row */
} qt_buf_t;

static size_t qt_scratch(const st_q8_layout_t *L)
{
    return (size_t)L->nb * (512 + 128) + 64;
}

static void qt_buf_at(const st_q8_layout_t *L, void *scratch, qt_buf_t *B)
{
    uint8_t *p = (uint8_t *)ST_ALIGN_UP((uintptr_t)scratch, (uintptr_t)64);
    B->wt = (uint32_t *)p;
    B->d = (float *)(p + (size_t)L->nb * 512);
    B->o = B->d + (size_t)L->nb * 16;
}

/* K[k] lane i = dword k of the 16 bytes at p[i] + off (i = 0..15). */
INLINE void tr16x4(const uint8_t *const p[16], size_t off, __m512i K[4])
{
    __m512i Z[4];
    for (int j = 0; j < 4; j++) {
        /* 128-bit lane l of Z[j] holds row 4l + j */
        __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p[j] + off)));
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p[4 + j] + off)), 1);
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p[8 + j] + off)), 2);
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p[12 + j] + off)), 3);
        Z[j] = z;
    }
    __m512i t0 = _mm512_unpacklo_epi32(Z[0], Z[1]), t1 = _mm512_unpackhi_epi32(Z[0], Z[1]);
    __m512i t2 = _mm512_unpacklo_epi32(Z[2], Z[3]), t3 = _mm512_unpackhi_epi32(Z[2], Z[3]);
    K[0] = _mm512_unpacklo_epi64(t0, t2);
    K[1] = _mm512_unpackhi_epi64(t0, t2);
    K[2] = _mm512_unpacklo_epi64(t1, t3);
    K[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* Row pointers and gather offsets of 16 rows from r (R <= 16 present;
 * missing lanes repeat row r and are never stored). */
typedef struct qt_rows {
    const uint8_t *grp;
    const uint8_t *rp[16];
    __m512i        vidx;
} qt_rows_t;

INLINE void qt_rows_init(const st_qmm_args_t *a, int r, int R, qt_rows_t *g)
{
    int32_t idx[16];
    g->grp = a->w + (size_t)r * a->w_stride;
    for (int i = 0; i < 16; i++) {
        int ii = i < R ? i : 0;
        idx[i] = (int32_t)((size_t)ii * a->w_stride);
        g->rp[i] = g->grp + (size_t)idx[i];
    }
    g->vidx = _mm512_loadu_si512(idx);
}

/* Q5_0 / Q5_1: bytes of the nibbles (the d and m before them: 2 or 4) and
 * of the 32-bit word of fifth bits (bit j for value j). */
INLINE size_t q5_qh_off(int type) { return type == ST_DTYPE_Q5_1 ? 4 : 2; }
INLINE int    is_q5(int type)     { return type == ST_DTYPE_Q5_0 || type == ST_DTYPE_Q5_1; }
INLINE size_t q_nib_off(int type)
{
    return type == ST_DTYPE_Q4_1 ? 4 : is_q5(type) ? q5_qh_off(type) + 4 : 2;
}

/* 0x10 in byte b of each dword where bit b of (x >> 0) is set, b = 0..3:
 * the four bits spread to the bytes' low bits by one multiply. */
INLINE __m512i q5_spread4(__m512i x)
{
    __m512i t = _mm512_mullo_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0xF)),
                                   _mm512_set1_epi32(0x00204081));
    return _mm512_slli_epi32(_mm512_and_si512(t, _mm512_set1_epi32(0x01010101)), 4);
}

/* For qt_one's layout (128-bit lane l of Z[k] = row 4l + k): adds 0x10 to
 * byte j of lane l of lo[k] where bit j of that row's word is set (values
 * 0..15) and to hi[k] where bit 16 + j is (values 16..31). The words are
 * read as scalars and turned into byte masks: cheaper than a gather and
 * byte shuffles (AMD's vpgatherdd is slow; measured ~3x on the n = 1 path). */
INLINE void q5_hbits_one(const uint8_t *const rp[16], size_t off, __m512i lo[4], __m512i hi[4])
{
    const __m512i c16 = _mm512_set1_epi8(0x10);
    for (int k = 0; k < 4; k++) {
        const uint64_t w0 = rd32(rp[k] + off), w1 = rd32(rp[4 + k] + off);
        const uint64_t w2 = rd32(rp[8 + k] + off), w3 = rd32(rp[12 + k] + off);
        const __mmask64 ml = (w0 & 0xFFFF) | (w1 & 0xFFFF) << 16 | (w2 & 0xFFFF) << 32 |
                             (w3 & 0xFFFF) << 48;
        const __mmask64 mh = (w0 >> 16) | (w1 >> 16) << 16 | (w2 >> 16) << 32 | (w3 >> 16) << 48;
        lo[k] = _mm512_mask_add_epi8(lo[k], ml, lo[k], c16);
        hi[k] = _mm512_mask_add_epi8(hi[k], mh, hi[k], c16);
    }
}

/* Block b of the 16 rows, transposed (W[k] lane i = values 4k..4k+3 of
 * row i, as u8), with D and O per row. */
INLINE void qt_block(int type, const qt_rows_t *g, int b, __m512i *W, __m512 *D, __m512 *O)
{
    const int bb = st_qblock_bytes(type);
    const size_t bo = (size_t)b * bb, qoff = q_nib_off(type);
    const __m512i m4 = _mm512_set1_epi8(0x0F), bias = _mm512_set1_epi8((char)0x80);
    __m512i K[4];

    /* the 16 rows are one contiguous stretch: stream it ahead */
    for (int l = 0; l < bb * 16; l += 64)
        _mm_prefetch((const char *)(g->grp + bo * 16 + (size_t)l + ST_GEMV_PREFETCH), ST_GEMV_PF_HINT);
    __m512i h = _mm512_i32gather_epi32(g->vidx, (const void *)(g->grp + bo), 1);
    *D = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h));
    *O = _mm512_mul_ps(type == ST_DTYPE_Q4_1 || type == ST_DTYPE_Q5_1
                           ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16)))
                           : *D,
                       _mm512_set1_ps(ofactor(type)));
    if (type == ST_DTYPE_Q8_0) {
        tr16x4(g->rp, bo + 2, K);
        for (int k = 0; k < 4; k++)
            W[k] = _mm512_xor_si512(K[k], bias);
        tr16x4(g->rp, bo + 18, K);
        for (int k = 0; k < 4; k++)
            W[4 + k] = _mm512_xor_si512(K[k], bias);
    } else {
        tr16x4(g->rp, bo + qoff, K);
        for (int k = 0; k < 4; k++) {
            W[k] = _mm512_and_si512(K[k], m4);
            W[4 + k] = _mm512_and_si512(_mm512_srli_epi16(K[k], 4), m4);
        }
        if (is_q5(type)) {   /* fifth bits: values 4k.. from bit 4k, 16 + 4k.. from 16 + 4k */
            const __m512i H = _mm512_i32gather_epi32(g->vidx, (const void *)(g->grp + bo + q5_qh_off(type)), 1);
            for (int k = 0; k < 4; k++) {
                W[k] = _mm512_or_si512(W[k], q5_spread4(_mm512_srli_epi32(H, 4 * k)));
                W[4 + k] = _mm512_or_si512(W[4 + k], q5_spread4(_mm512_srli_epi32(H, 16 + 4 * k)));
            }
        }
    }
}

/* Transposes rows r..r+R-1 into the buffer for reuse by every token. */
INLINE void qt_prep(int type, const st_qmm_args_t *a, int r, int R, const qt_buf_t *B)
{
    qt_rows_t g;
    qt_rows_init(a, r, R, &g);
    for (int b = 0; b < a->L.nb; b++) {
        __m512i W[8];
        __m512 D, O;
        qt_block(type, &g, b, W, &D, &O);
        for (int k = 0; k < 8; k++)
            _mm512_store_si512((__m512i *)(B->wt + (size_t)b * 128) + k, W[k]);
        _mm512_store_ps(B->d + (size_t)b * 16, D);
        _mm512_store_ps(B->o + (size_t)b * 16, O);
    }
}

/* Block sum of 16 rows with one activation plane q (block start in the
 * paired layout): two chains so vpdpbusd latency overlaps. */
INLINE __m512i qt_bdot(const __m512i *W, const uint8_t *q)
{
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++) {
        s0 = _mm512_dpbusd_epi32(s0, _mm512_load_si512(&W[k]), _mm512_set1_epi32((int)rd32(q + 4 * k)));
        s1 = _mm512_dpbusd_epi32(s1, _mm512_load_si512(&W[4 + k]),
                                 _mm512_set1_epi32((int)rd32(q + 32 + 4 * k)));
    }
    return _mm512_add_epi32(s0, s1);
}

/* 16 rows (R stored) x T tokens from t0. */
INLINE void qt_tokens(int two, const st_qmm_args_t *a, const qt_buf_t *B, int r, int R, int t0,
                      int T)
{
    const st_q8_layout_t *L = &a->L;
    const uint8_t *xr[4];
    __m512 acc[4];

    for (int j = 0; j < T; j++) {
        xr[j] = a->xq + (size_t)(t0 + j) * L->stride;
        acc[j] = _mm512_setzero_ps();
    }
    for (int b = 0; b < L->nb; b++) {
        const __m512i *W = (const __m512i *)(B->wt + (size_t)b * 128);
        const size_t xo = (size_t)(b >> 1) * 64 + (size_t)(b & 1) * 16;
        const int vo = (b >> 1) * 4 + (b & 1) * 2;
        const __m512 D = _mm512_load_ps(B->d + (size_t)b * 16);
        const __m512 O = _mm512_load_ps(B->o + (size_t)b * 16);
        for (int j = 0; j < T; j++) {
            __m512i is = qt_bdot(W, xr[j] + xo);
            if (two)   /* 127 * dot(q1) + dot(q2), exact in int32 */
                is = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(is, 7), is),
                                      qt_bdot(W, xr[j] + L->q2_off + xo));
            const float *xv = (const float *)(xr[j] + L->xv_off) + vo;
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(D, _mm512_set1_ps(xv[0])),
                                     acc[j]);
            acc[j] = _mm512_fmadd_ps(O, _mm512_set1_ps(xv[1]), acc[j]);
        }
    }
    const __mmask16 m = R >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << R) - 1);
    for (int j = 0; j < T; j++)
        _mm512_mask_storeu_ps(a->out + (size_t)(t0 + j) * a->ldo + r, m, acc[j]);
}

/* One token (decode). Transposing each block costs more shuffles than the
 * dot products themselves (port 5 was the limit: ~24 GB/s on data in
 * cache), so n = 1 works on the rows as loaded instead: Z[k] lane l holds
 * the 16 quant bytes of row 4l + k, one vpdpbusd against the block's 16
 * activations broadcast to every lane gives each row four partial sums,
 * and one shared 4x4 transpose-add (6 shuffles for 16 rows) turns the
 * partials into the rows' exact block sums in lane order. The integer sums
 * are exact however they are formed, and the float operations per element
 * are qt_tokens' in the same order, so results are bit for bit those of
 * every other n. */

/* Z[k] lane l = the 16 bytes at rp[4l + k] + off (k = 0..3). */
INLINE void qo_load(const uint8_t *const p[16], size_t off, __m512i Z[4])
{
    for (int k = 0; k < 4; k++) {
        __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p[k] + off)));
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p[4 + k] + off)), 1);
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p[8 + k] + off)), 2);
        Z[k] = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p[12 + k] + off)), 3);
    }
}

/* P[k] += partial sums of one activation plane: lo[k] holds values 0..15
 * of the block (u8), hi[k] values 16..31; q is the block's start in the
 * paired layout (values 0..15 at q, 16..31 at q + 32). */
INLINE void qo_dot(const __m512i lo[4], const __m512i hi[4], const uint8_t *q, __m512i P[4])
{
    const __m512i a = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)q));
    const __m512i c = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(q + 32)));
    for (int k = 0; k < 4; k++)
        P[k] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(P[k], lo[k], a), hi[k], c);
}

/* S lane 4l + k = the four dwords of lane l of P[k] added. */
INLINE __m512i qo_reduce(const __m512i P[4])
{
    __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[0], P[1]), _mm512_unpackhi_epi32(P[0], P[1]));
    __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[2], P[3]), _mm512_unpackhi_epi32(P[2], P[3]));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
}

INLINE void qt_one(int type, int two, const st_qmm_args_t *a, int r, int R, int t)
{
    const st_q8_layout_t *L = &a->L;
    const uint8_t *xr = a->xq + (size_t)t * L->stride;
    const float *xv = (const float *)(xr + L->xv_off);
    const int bb = st_qblock_bytes(type);
    const size_t qoff = q_nib_off(type);
    const __m512i m4 = _mm512_set1_epi8(0x0F), bias = _mm512_set1_epi8((char)0x80);
    const __m512 of = _mm512_set1_ps(ofactor(type));
    __m512 acc = _mm512_setzero_ps();
    qt_rows_t g;

    qt_rows_init(a, r, R, &g);
    for (int b = 0; b < L->nb; b++) {
        const size_t bo = (size_t)b * bb;
        const size_t xo = (size_t)(b >> 1) * 64 + (size_t)(b & 1) * 16;
        const int vo = (b >> 1) * 4 + (b & 1) * 2;
        __m512i lo[4], hi[4], P[4];

        for (int l = 0; l < bb * 16; l += 64)
            _mm_prefetch((const char *)(g.grp + bo * 16 + (size_t)l + ST_GEMV_PREFETCH),
                         ST_GEMV_PF_HINT);
        if (type == ST_DTYPE_Q8_0) {
            qo_load(g.rp, bo + 2, lo);
            qo_load(g.rp, bo + 18, hi);
            for (int k = 0; k < 4; k++) {
                lo[k] = _mm512_xor_si512(lo[k], bias);
                hi[k] = _mm512_xor_si512(hi[k], bias);
            }
        } else {
            qo_load(g.rp, bo + qoff, lo);
            for (int k = 0; k < 4; k++) {
                hi[k] = _mm512_and_si512(_mm512_srli_epi16(lo[k], 4), m4);
                lo[k] = _mm512_and_si512(lo[k], m4);
            }
            if (is_q5(type))
                q5_hbits_one(g.rp, bo + q5_qh_off(type), lo, hi);
        }
        for (int k = 0; k < 4; k++)
            P[k] = _mm512_setzero_si512();
        qo_dot(lo, hi, xr + xo, P);
        if (two) {   /* 127 * dot(q1) + dot(q2) on the partials: exact in int32 */
            for (int k = 0; k < 4; k++)
                P[k] = _mm512_sub_epi32(_mm512_slli_epi32(P[k], 7), P[k]);
            qo_dot(lo, hi, xr + L->q2_off + xo, P);
        }
        const __m512i is = qo_reduce(P);
        const __m512i h = _mm512_i32gather_epi32(g.vidx, (const void *)(g.grp + bo), 1);
        const __m512 D = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h));
        const __m512 O = _mm512_mul_ps(
            type == ST_DTYPE_Q4_1 || type == ST_DTYPE_Q5_1
                ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16)))
                : D,
            of);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(D, _mm512_set1_ps(xv[vo])), acc);
        acc = _mm512_fmadd_ps(O, _mm512_set1_ps(xv[vo + 1]), acc);
    }
    const __mmask16 m = R >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << R) - 1);
    _mm512_mask_storeu_ps(a->out + (size_t)t * a->ldo + r, m, acc);
}

INLINE void qt_type(int type, int two, const st_qmm_args_t *a, int r0, int r1, void *scratch)
{
    qt_buf_t B;
    qt_buf_at(&a->L, scratch, &B);
    for (int r = r0; r < r1; r += QT_ROWS) {
        const int R = ST_MIN(QT_ROWS, r1 - r);
        int t0 = 0;
        if (a->n == 1) {
            qt_one(type, two, a, r, R, 0);
            continue;
        }
        qt_prep(type, a, r, R, &B);
        for (; t0 + 4 <= a->n; t0 += 4)
            qt_tokens(two, a, &B, r, R, t0, 4);
        switch (a->n - t0) {
        case 1: qt_tokens(two, a, &B, r, R, t0, 1); break;
        case 2: qt_tokens(two, a, &B, r, R, t0, 2); break;
        case 3: qt_tokens(two, a, &B, r, R, t0, 3); break;
        default: break;
        }
    }
}

static void qgemv_avx512(const st_qmm_args_t *a, int r0, int r1, void *scratch)
{
    switch (a->type * 2 + a->L.two) {
    case ST_DTYPE_Q4_1 * 2:     qt_type(ST_DTYPE_Q4_1, 0, a, r0, r1, scratch); break;
    case ST_DTYPE_Q4_1 * 2 + 1: qt_type(ST_DTYPE_Q4_1, 1, a, r0, r1, scratch); break;
    case ST_DTYPE_Q4_0 * 2:     qt_type(ST_DTYPE_Q4_0, 0, a, r0, r1, scratch); break;
    case ST_DTYPE_Q4_0 * 2 + 1: qt_type(ST_DTYPE_Q4_0, 1, a, r0, r1, scratch); break;
    case ST_DTYPE_Q5_0 * 2:     qt_type(ST_DTYPE_Q5_0, 0, a, r0, r1, scratch); break;
    case ST_DTYPE_Q5_0 * 2 + 1: qt_type(ST_DTYPE_Q5_0, 1, a, r0, r1, scratch); break;
    case ST_DTYPE_Q5_1 * 2:     qt_type(ST_DTYPE_Q5_1, 0, a, r0, r1, scratch); break;
    case ST_DTYPE_Q5_1 * 2 + 1: qt_type(ST_DTYPE_Q5_1, 1, a, r0, r1, scratch); break;
    case ST_DTYPE_Q8_0 * 2:     qt_type(ST_DTYPE_Q8_0, 0, a, r0, r1, scratch); break;
    default:                    qt_type(ST_DTYPE_Q8_0, 1, a, r0, r1, scratch); break;
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

/* GELU (tanh form) x / (1 + e^-2u) times up; see kern_scalar.c */
static void geglu_avx512(const float *g, const float *u, float *out, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f), k = _mm512_set1_ps(-1.5957691216057308f);
    const __m512 c3 = _mm512_set1_ps(0.044715f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((int)ST_MIN(n - i, (size_t)16));
        __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        __m512 t = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(c3, x), _mm512_mul_ps(x, x), x));
        __m512 y = _mm512_div_ps(x, _mm512_add_ps(one, exp512(t)));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, u + i)));
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

/* Elements 16c..16c+15 of a KV-cache row of kv_type as floats, read in
 * place: F16 by F16C, Q8_0 as int8 -> int32 -> float times the block's
 * fp16 scale (a block of 32 is chunks 2b and 2b+1). The callers pass the
 * type as a constant, so each instance keeps one load form. */
INLINE __m512 kv_row16(uint32_t type, const uint8_t *row, int c)
{
    if (type == ST_DTYPE_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + (size_t)c * 32)));
    if (type == ST_DTYPE_Q8_0) {
        const uint8_t *b = row + (size_t)(c >> 1) * 34;
        uint16_t dh;
        memcpy(&dh, b, sizeof dh);
        __m128i q8 = _mm_loadu_si128((const __m128i *)(b + 2 + (c & 1) * 16));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q8)),
                             _mm512_set1_ps(_cvtsh_ss(dh)));
    }
    return _mm512_loadu_ps((const float *)row + c * 16);
}

/* One head of attention, 16 positions at a time: the 16 scores come out of
 * one shared reduction (reduce4_512 x 4) instead of a horizontal sum per
 * position, and the running output stays in registers. Measured ~10x the
 * generic path (a dot and an axpy call per position). K and V rows are
 * row_bytes apart and decoded in registers (kv_row16), never copied. */
INLINE void attn_head_n(uint32_t type, const float *q, const uint8_t *k, const uint8_t *v,
                        size_t row_bytes, int npos, int nq, float scale, float *out)
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
                    const uint8_t *kr = k + (size_t)(j0 + jj) * row_bytes;
                    for (int c = 0; c < nq; c++)
                        acc[i] = _mm512_fmadd_ps(kv_row16(type, kr, c), qv[c], acc[i]);
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
            const uint8_t *vr = v + (size_t)(j0 + jj) * row_bytes;
            __m512 pj = _mm512_set1_ps(p[jj]);
            for (int c = 0; c < nq; c++)
                o[c] = _mm512_fmadd_ps(kv_row16(type, vr, c), pj, o[c]);
        }
        m = nm;
    }
    __m512 inv = _mm512_set1_ps(1.0f / l);
    for (int c = 0; c < nq; c++)
        _mm512_storeu_ps(out + c * 16, _mm512_mul_ps(o[c], inv));
}

/* head_dim 64 (the model's), 128 and 256 get their own copies with the
 * loops unrolled, for each cache type. */
INLINE void attn_head_t(uint32_t type, const float *q, const uint8_t *k, const uint8_t *v,
                        size_t row_bytes, int npos, int head_dim, float scale, float *out)
{
    if (head_dim == 64)
        attn_head_n(type, q, k, v, row_bytes, npos, 4, scale, out);
    else if (head_dim == 128)
        attn_head_n(type, q, k, v, row_bytes, npos, 8, scale, out);
    else if (head_dim == 256)
        attn_head_n(type, q, k, v, row_bytes, npos, 16, scale, out);
    else
        attn_head_n(type, q, k, v, row_bytes, npos, head_dim / 16, scale, out);
}

static void attn_head_avx512(uint32_t kv_type, const float *q, const void *k, const void *v,
                             size_t row_bytes, int npos, int head_dim, float scale, float *out)
{
    if (kv_type == ST_DTYPE_F16)
        attn_head_t(ST_DTYPE_F16, q, k, v, row_bytes, npos, head_dim, scale, out);
    else if (kv_type == ST_DTYPE_Q8_0)
        attn_head_t(ST_DTYPE_Q8_0, q, k, v, row_bytes, npos, head_dim, scale, out);
    else
        attn_head_t(ST_DTYPE_F32, q, k, v, row_bytes, npos, head_dim, scale, out);
}

/* A KV-cache row as floats for the generic attention path (MLA widths). */
static void kv_load_avx512(uint32_t kv_type, const void *src, float *dst, int n)
{
    if (kv_type == ST_DTYPE_Q8_0) {
        for (int c = 0; c < n / 16; c++)
            _mm512_storeu_ps(dst + c * 16, kv_row16(ST_DTYPE_Q8_0, src, c));
        return;
    }
    const uint16_t *h = src;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
    for (; i < n; i++)
        dst[i] = st_fp16_to_f32(h[i]);
}

/* ---- float-activation matmul: Q5_0, Q5_1, Q2_K..Q6_K (kern_kq.h) ---- */

#define KQ_T512 4   /* tokens per pass over a row: 16 accumulators */

/* The 32 weights of chunk c of block b (its (D, O) pairs given). */
INLINE void kq_w512(int type, const uint8_t *b, int c, const float *D, const float *O,
                    __m512 *w0, __m512 *w1)
{
    const int h = kq_block_elems(type) == 32 ? 0 : 2 * c;
    __m512i u0, u1;
    if (type == ST_DTYPE_Q5_0 || type == ST_DTYPE_Q5_1) {
        /* the fifth bits straight from qh as lane masks */
        const int off = type == ST_DTYPE_Q5_1 ? 4 : 2;
        const uint32_t qh = kq_rd32(b + off);
        const __m128i m4 = _mm_set1_epi8(0x0F);
        const __m512i v16 = _mm512_set1_epi32(16);
        __m128i q = _mm_loadu_si128((const __m128i *)(b + off + 4));
        u0 = _mm512_cvtepu8_epi32(_mm_and_si128(q, m4));
        u1 = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m4));
        u0 = _mm512_mask_or_epi32(u0, (__mmask16)(qh & 0xFFFF), u0, v16);
        u1 = _mm512_mask_or_epi32(u1, (__mmask16)(qh >> 16), u1, v16);
    } else {
        __m128i lo, hi;
        kq_u8(type, b, c, &lo, &hi);
        u0 = _mm512_cvtepu8_epi32(lo);
        u1 = _mm512_cvtepu8_epi32(hi);
    }
    *w0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(u0), _mm512_set1_ps(D[h]), _mm512_set1_ps(O[h]));
    *w1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(u1), _mm512_set1_ps(D[h + 1]), _mm512_set1_ps(O[h + 1]));
}

/* Chunk c of nt tokens: even chunks add to accumulators 0 and 1, odd ones
 * to 2 and 3 (four chains per token, so one token alone still overlaps
 * its FMAs). The same for every nt. */
INLINE void kq_acc512(__m512 acc[][4], int nt, __m512 w0, __m512 w1, const float *x, size_t ldx,
                      int c, int a)
{
    for (int t = 0; t < nt; t++) {
        const float *xt = x + (size_t)t * ldx + 32 * (size_t)c;
        acc[t][a] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xt), acc[t][a]);
        acc[t][a + 1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xt + 16), acc[t][a + 1]);
    }
}

/* out[t * ldo] for nt (<= KQ_T512) tokens of one row: decoded from its
 * blocks wr, or (wr == NULL) read from the row already decoded into wf. */
INLINE void kq_row512(int type, const uint8_t *wr, const float *wf, int cols, const float *x,
                      size_t ldx, int nt, float *o, int ldo)
{
    const int be = kq_block_elems(type), bb = kq_block_bytes(type), cpb = be / 32;
    __m512 acc[KQ_T512][4];

    for (int t = 0; t < nt; t++)
        for (int k = 0; k < 4; k++)
            acc[t][k] = _mm512_setzero_ps();
    /* The accumulator pair (0 or 2) is spelled out as a constant, chunks
     * two at a time: an index computed from c kept the accumulators in
     * memory. A row of Q5 blocks may end on an even chunk. */
    if (wr && cpb == 8) {
        for (int blk = 0; blk < cols / be; blk++) {
            const uint8_t *b = wr + (size_t)blk * bb;
            float D[16], O[16];
            for (int l = 0; l < bb; l += 64)
                _mm_prefetch((const char *)b + ST_GEMV_PREFETCH + l, ST_GEMV_PF_HINT);
            kq_scales(type, b, D, O);
            for (int cc = 0; cc < cpb; cc += 2) {
                __m512 w0, w1;
                kq_w512(type, b, cc, D, O, &w0, &w1);
                kq_acc512(acc, nt, w0, w1, x, ldx, blk * cpb + cc, 0);
                kq_w512(type, b, cc + 1, D, O, &w0, &w1);
                kq_acc512(acc, nt, w0, w1, x, ldx, blk * cpb + cc + 1, 2);
            }
        }
    } else if (wr) {
        const int nb = cols / 32;
        for (int blk = 0; blk < nb; blk += 2) {
            for (int k = 0; k < 2 && blk + k < nb; k++) {
                const uint8_t *b = wr + (size_t)(blk + k) * bb;
                float D[2], O[2];
                __m512 w0, w1;
                _mm_prefetch((const char *)b + ST_GEMV_PREFETCH, ST_GEMV_PF_HINT);
                kq_scales(type, b, D, O);
                kq_w512(type, b, 0, D, O, &w0, &w1);
                if (k == 0)
                    kq_acc512(acc, nt, w0, w1, x, ldx, blk, 0);
                else
                    kq_acc512(acc, nt, w0, w1, x, ldx, blk + 1, 2);
            }
        }
    } else {
        const int nc = cols / 32;
        int c = 0;
        for (; c + 2 <= nc; c += 2) {
            kq_acc512(acc, nt, _mm512_load_ps(wf + 32 * c), _mm512_load_ps(wf + 32 * c + 16), x,
                      ldx, c, 0);
            kq_acc512(acc, nt, _mm512_load_ps(wf + 32 * c + 32), _mm512_load_ps(wf + 32 * c + 48),
                      x, ldx, c + 1, 2);
        }
        if (c < nc)
            kq_acc512(acc, nt, _mm512_load_ps(wf + 32 * c), _mm512_load_ps(wf + 32 * c + 16), x,
                      ldx, c, 0);
    }
    for (int t = 0; t < nt; t++)
        o[(size_t)t * ldo] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]),
                                                                _mm512_add_ps(acc[t][2], acc[t][3])));
}

INLINE void kq_row512_n(int type, const uint8_t *wr, const float *wf, int cols, const float *x,
                        size_t ldx, int nt, float *o, int ldo)
{
    switch (nt) {   /* a constant nt keeps the accumulators in registers */
    case 1:  kq_row512(type, wr, wf, cols, x, ldx, 1, o, ldo); break;
    case 2:  kq_row512(type, wr, wf, cols, x, ldx, 2, o, ldo); break;
    case 3:  kq_row512(type, wr, wf, cols, x, ldx, 3, o, ldo); break;
    default: kq_row512(type, wr, wf, cols, x, ldx, 4, o, ldo); break;
    }
}

/* n <= KQ_T512 decodes in registers as it goes (decode: the weights are
 * read once). Larger n decodes ST_KQ_ROWS rows once into scratch (exactly
 * the same floats) and walks them per group of 4 tokens, so the group's
 * activations stay in L1 while the decoded rows come from L2: walking
 * one row against all tokens instead streamed every token's activations
 * from L2 per row and ran at half the speed (31 against ~60 GFLOP/s,
 * bench kernels --types, 576x1536, n = 128). */
INLINE void kgemv512_type(int type, const st_kmm_args_t *a, int r0, int r1, float *scratch)
{
    const int be = kq_block_elems(type), bb = kq_block_bytes(type), cpb = be / 32;
    if (a->n <= KQ_T512) {
        for (int r = r0; r < r1; r++)
            kq_row512_n(type, a->w + (size_t)r * a->w_stride, NULL, a->cols, a->x, (size_t)a->cols,
                        a->n, a->out + r, a->ldo);
        return;
    }
    for (int rg = r0; rg < r1; rg += ST_KQ_ROWS) {
        const int nr = ST_MIN(ST_KQ_ROWS, r1 - rg);
        for (int rr = 0; rr < nr; rr++) {
            const uint8_t *wr = a->w + (size_t)(rg + rr) * a->w_stride;
            float *wrow = scratch + (size_t)rr * a->cols;
            for (int blk = 0; blk < a->cols / be; blk++) {
                const uint8_t *b = wr + (size_t)blk * bb;
                float D[16], O[16];
                kq_scales(type, b, D, O);
                for (int cc = 0; cc < cpb; cc++) {
                    __m512 w0, w1;
                    float *wf = wrow + 32 * (size_t)(blk * cpb + cc);
                    kq_w512(type, b, cc, D, O, &w0, &w1);
                    _mm512_store_ps(wf, w0);
                    _mm512_store_ps(wf + 16, w1);
                }
            }
        }
        for (int t0 = 0; t0 < a->n; t0 += KQ_T512)
            for (int rr = 0; rr < nr; rr++)
                kq_row512_n(type, NULL, scratch + (size_t)rr * a->cols, a->cols,
                            a->x + (size_t)t0 * a->cols, (size_t)a->cols, ST_MIN(KQ_T512, a->n - t0),
                            a->out + (size_t)t0 * a->ldo + rg + rr, a->ldo);
    }
}

static void kgemv_avx512(const st_kmm_args_t *a, int r0, int r1, float *scratch)
{
    switch (a->type) {
    case ST_DTYPE_Q5_0: kgemv512_type(ST_DTYPE_Q5_0, a, r0, r1, scratch); break;
    case ST_DTYPE_Q5_1: kgemv512_type(ST_DTYPE_Q5_1, a, r0, r1, scratch); break;
    case ST_DTYPE_Q2_K: kgemv512_type(ST_DTYPE_Q2_K, a, r0, r1, scratch); break;
    case ST_DTYPE_Q3_K: kgemv512_type(ST_DTYPE_Q3_K, a, r0, r1, scratch); break;
    case ST_DTYPE_Q4_K: kgemv512_type(ST_DTYPE_Q4_K, a, r0, r1, scratch); break;
    case ST_DTYPE_Q5_K: kgemv512_type(ST_DTYPE_Q5_K, a, r0, r1, scratch); break;
    case ST_DTYPE_Q6_K: kgemv512_type(ST_DTYPE_Q6_K, a, r0, r1, scratch); break;
    default: break;
    }
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
    .qgemv_q5 = 1,
    .qgemm = NULL,
    .qgemm_scratch = qt_scratch,
    .tile_min_n = 0,
    .kgemv = kgemv_avx512,
    .dequant_row = dequant_row_avx512,
    .dot_f32 = dot_f32_avx512,
    .sumsq_f32 = sumsq_f32_avx512,
    .scale_mul = scale_mul_avx512,
    .swiglu = swiglu_avx512,
    .geglu = geglu_avx512,
    .add = add_avx512,
    .axpby = axpby_avx512,
    .exp_sum = exp_sum_avx512,
    .attn_head = attn_head_avx512,
    .kv_load = kv_load_avx512,
};

const st_cpu_kernels_t *st_cpu_kernels_avx512(void)
{
    return &kernels_avx512;
}
