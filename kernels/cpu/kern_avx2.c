/*
 * kern_avx2.c - AVX2 + FMA + F16C kernels (Haswell and later, Zen).
 *
 * Compiled with -mavx2 -mfma -mf16c on this file only and entered only
 * after isa.c found those features at run time.
 *
 * Without VNNI the u8 x s8 products go through vpmaddubsw, which saturates
 * its 16-bit pair sums: nibbles (<= 15) times int8 are safe, but Q8_0 as
 * u = q + 128 (<= 255) would overflow, so Q8_0 uses the sign trick
 * |w| x sign(x, w) on the signed values instead and has no offset term.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_impl.h"
#include "kern_kq.h"

#define INLINE static inline __attribute__((always_inline))

INLINE uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

INLINE uint32_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

INLINE float ofactor(int type)
{
    return type == ST_DTYPE_Q4_1 ? 1.0f : type == ST_DTYPE_Q4_0 ? -8.0f : 0.0f;
}

INLINE __m128 pair_dm(int type, const uint8_t *b0, const uint8_t *b1)
{
    uint64_t v;
    if (type == ST_DTYPE_Q4_1) {
        v = rd32(b0) | (b1 ? (uint64_t)rd32(b1) << 32 : 0);
    } else {
        uint64_t d0 = rd16(b0), d1 = b1 ? rd16(b1) : 0;
        v = d0 | d0 << 16 | d1 << 32 | d1 << 48;
    }
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)v));
}

INLINE float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE int hsum256_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* ---- activation quantization (same results as the scalar version) ---- */

/* Packs 32 int32 (four vectors of 8, in order) to int8 at lo[0..15], hi[0..15]. */
INLINE void store_q8x32(const __m256i qi[4], int8_t *lo, int8_t *hi)
{
    /* packs interleave 128-bit lanes; the permute restores order */
    __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]);
    __m256i p16b = _mm256_packs_epi32(qi[2], qi[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm_storeu_si128((__m128i *)lo, _mm256_castsi256_si128(p8));
    _mm_storeu_si128((__m128i *)hi, _mm256_extracti128_si256(p8, 1));
}

static void quantize_row_avx2(const float *x, const st_q8_layout_t *L, uint8_t *row,
                              int with_dx16)
{
    int8_t *q = (int8_t *)row, *q2 = (int8_t *)(row + L->q2_off);
    float *xv = (float *)(row + L->xv_off);
    float *dx16 = (float *)(row + L->dx16_off);
    float *s = (float *)(row + L->s_off);
    const __m256 sign = _mm256_set1_ps(-0.0f);

    for (int p = 0; p < L->np; p++) {
        float dd[2] = {0.0f, 0.0f};
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
            const float *xb = x + (size_t)b * ST_QK;
            __m256 v[4], am;
            for (int k = 0; k < 4; k++)
                v[k] = _mm256_loadu_ps(xb + 8 * k);
            am = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                               _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            float amax = _mm_cvtss_f32(m4);
            float d = amax / 127.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            __m256 vid = _mm256_set1_ps(id);
            __m256i qi[4];
            for (int k = 0; k < 4; k++)
                qi[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
            store_q8x32(qi, lo, hi);
            if (L->two) {
                float d2 = d / 127.0f;
                float id2 = d2 != 0.0f ? 1.0f / d2 : 0.0f;
                __m256 vd = _mm256_set1_ps(d), vid2 = _mm256_set1_ps(id2);
                const __m256i k127 = _mm256_set1_epi32(127);
                __m256i q2i[4];
                for (int k = 0; k < 4; k++) {
                    __m256 r = _mm256_fnmadd_ps(vd, _mm256_cvtepi32_ps(qi[k]), v[k]);
                    q2i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(r, vid2));
                }
                store_q8x32(q2i, lo2, hi2);
                for (int k = 0; k < 4; k++)
                    qi[k] = _mm256_add_epi32(_mm256_mullo_epi32(qi[k], k127), q2i[k]);
                d = d2;
            }
            __m256i sum = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
            dd[h] = d;
            xv[p * 4 + 2 * h] = d;
            xv[p * 4 + 2 * h + 1] = s[b] = d * (float)hsum256_epi32(sum);
        }
        if (with_dx16)
            for (int i = 0; i < 16; i++)
                dx16[p * 16 + i] = dd[(i >> 2) & 1];
    }
}

/* ---- qgemv ---- */

/* The 16-bit pair sums of u * c for one activation plane (xa, xb). */
INLINE void pair_p16(int type, __m256i wl, __m256i wh, __m256i xa, __m256i xb, __m256i *pl,
                     __m256i *ph)
{
    if (type == ST_DTYPE_Q8_0) {
        /* |w| <= 128, |c| <= 127: pair sums <= 32512, no saturation */
        *pl = _mm256_maddubs_epi16(_mm256_abs_epi8(wl), _mm256_sign_epi8(xa, wl));
        *ph = _mm256_maddubs_epi16(_mm256_abs_epi8(wh), _mm256_sign_epi8(xb, wh));
    } else {
        /* |pair sums| <= 2 * 15 * 127 each, their sum fits int16 */
        *pl = _mm256_add_epi16(_mm256_maddubs_epi16(wl, xa), _mm256_maddubs_epi16(wh, xb));
        *ph = _mm256_setzero_si256();
    }
}

/* int32 lanes of sum w * c for a block pair: c = q1, or 127 q1 + q2 when
 * two (the x127 rides on the 16 -> 32-bit widening madd for free). */
INLINE __m256i pair_dot(int type, int two, const uint8_t *b0, const uint8_t *b1, const __m256i *x)
{
    const __m256i ones = _mm256_set1_epi16(1), k127 = _mm256_set1_epi16(127);
    __m256i wl, wh, pl, ph, dot;
    if (type == ST_DTYPE_Q8_0) {
        __m128i l0 = _mm_loadu_si128((const __m128i *)(b0 + 2));
        __m128i h0 = _mm_loadu_si128((const __m128i *)(b0 + 18));
        __m128i l1 = b1 ? _mm_loadu_si128((const __m128i *)(b1 + 2)) : _mm_setzero_si128();
        __m128i h1 = b1 ? _mm_loadu_si128((const __m128i *)(b1 + 18)) : _mm_setzero_si128();
        wl = _mm256_set_m128i(l1, l0);
        wh = _mm256_set_m128i(h1, h0);
    } else {
        const int off = type == ST_DTYPE_Q4_1 ? 4 : 2;
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        __m128i v0 = _mm_loadu_si128((const __m128i *)(b0 + off));
        __m128i v1 = b1 ? _mm_loadu_si128((const __m128i *)(b1 + off)) : _mm_setzero_si128();
        __m256i v = _mm256_set_m128i(v1, v0);
        wl = _mm256_and_si256(v, m4);
        wh = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    pair_p16(type, wl, wh, x[0], x[1], &pl, &ph);
    const __m256i m1 = two ? k127 : ones;
    dot = _mm256_madd_epi16(pl, m1);
    if (type == ST_DTYPE_Q8_0)
        dot = _mm256_add_epi32(dot, _mm256_madd_epi16(ph, m1));
    if (two) {
        pair_p16(type, wl, wh, x[2], x[3], &pl, &ph);
        dot = _mm256_add_epi32(dot, _mm256_madd_epi16(pl, ones));
        if (type == ST_DTYPE_Q8_0)
            dot = _mm256_add_epi32(dot, _mm256_madd_epi16(ph, ones));
    }
    return dot;
}

INLINE void gemv_pair(int type, int two, const uint8_t *b0, const uint8_t *b1, const __m256i *x,
                      __m128 xvp, __m256 *acc, __m128 *accm)
{
    const __m256i idx = _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2);
    __m256i dot = pair_dot(type, two, b0, b1, x);
    __m128 sc4 = _mm_mul_ps(pair_dm(type, b0, b1), xvp);
    *accm = _mm_add_ps(*accm, sc4);
    __m256 sc8 = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(sc4), idx);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), sc8, *acc);
}

/* Activation planes of pair p: q1 (lo, hi) and, when two, q2 (lo, hi). */
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

INLINE void gemv_rows(int type, int two, const st_qmm_args_t *a, int r, int R,
                      const uint8_t *xrow, float *out)
{
    const int bb = st_qblock_bytes(type);
    const int nfull = a->L.nb / 2;
    const float *xv = (const float *)(xrow + a->L.xv_off);
    const uint8_t *wr[4];
    __m256 acc[4];
    __m128 accm[4];
    __m256i x[4];

    for (int i = 0; i < R; i++) {
        wr[i] = a->w + (size_t)(r + i) * a->w_stride;
        acc[i] = _mm256_setzero_ps();
        accm[i] = _mm_setzero_ps();
    }
    for (int p = 0; p < nfull; p++) {
        load_x(two, xrow, &a->L, p, x);
        __m128 xvp = _mm_loadu_ps(xv + p * 4);
        for (int i = 0; i < R; i++) {
            const uint8_t *b0 = wr[i] + (size_t)(2 * p) * bb;
            _mm_prefetch((const char *)(b0 + ST_GEMV_PREFETCH), _MM_HINT_T0);
            gemv_pair(type, two, b0, b0 + bb, x, xvp, &acc[i], &accm[i]);
        }
    }
    if (a->L.nb & 1) {
        int p = nfull;
        load_x(two, xrow, &a->L, p, x);
        __m128 xvp = _mm_loadu_ps(xv + p * 4);
        for (int i = 0; i < R; i++)
            gemv_pair(type, two, wr[i] + (size_t)(2 * p) * bb, NULL, x, xvp, &acc[i], &accm[i]);
    }
    for (int i = 0; i < R; i++) {
        float m[4];
        _mm_storeu_ps(m, accm[i]);
        out[i] = hsum256(acc[i]) + ofactor(type) * (m[1] + m[3]);
    }
}

INLINE void qgemv_type(int type, int two, const st_qmm_args_t *a, int r0, int r1)
{
    for (int t = 0; t < a->n; t++) {
        const uint8_t *xrow = a->xq + (size_t)t * a->L.stride;
        float *o = a->out + (size_t)t * a->ldo;
        int r = r0;
        for (; r + 4 <= r1; r += 4)
            gemv_rows(type, two, a, r, 4, xrow, o + r);
        for (; r < r1; r++)
            gemv_rows(type, two, a, r, 1, xrow, o + r);
    }
}

static void qgemv_avx2(const st_qmm_args_t *a, int r0, int r1, void *scratch)
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

/* ---- float kernels ---- */

INLINE __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, z, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static float dot_f32_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static float sumsq_f32_avx2(const float *x, int n)
{
    return dot_f32_avx2(x, x, n);
}

static void scale_mul_avx2(const float *x, const float *w, float s, float *out, int n)
{
    __m256 vs = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
                                                _mm256_loadu_ps(w + i)));
    for (; i < n; i++)
        out[i] = x[i] * s * w[i];
}

static void swiglu_avx2(const float *g, const float *u, float *out, size_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 vg = _mm256_loadu_ps(g + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), vg));
        __m256 silu = _mm256_div_ps(vg, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* GELU (tanh form) x / (1 + e^-2u) times up; see kern_scalar.c */
static void geglu_avx2(const float *g, const float *u, float *out, size_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f), k = _mm256_set1_ps(-1.5957691216057308f);
    const __m256 c3 = _mm256_set1_ps(0.044715f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 t = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c3, x), _mm256_mul_ps(x, x), x));
        __m256 y = _mm256_div_ps(x, _mm256_add_ps(one, exp256(t)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(y, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
        const float x = g[i], t = -1.5957691216057308f * (x + 0.044715f * x * x * x);
        out[i] = x / (1.0f + expf(t)) * u[i];
    }
}

static void add_avx2(float *x, const float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        x[i] += y[i];
}

static void axpby_avx2(float *y, float a, const float *x, float b, int n)
{
    __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vb,
                                                _mm256_mul_ps(_mm256_loadu_ps(y + i), va)));
    for (; i < n; i++)
        y[i] = y[i] * a + x[i] * b;
}

static float exp_sum_avx2(float *x, float mx, int n)
{
    __m256 vm = _mm256_set1_ps(mx), s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        s = _mm256_add_ps(s, e);
    }
    float sum = hsum256(s);
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    return sum;
}

/* ---- float-activation matmul: Q5_0, Q5_1, Q2_K..Q6_K (kern_kq.h) ----
 * As in kern_avx512.c: four accumulators per token (vector k of a chunk
 * adds to accumulator k), 2 tokens per pass; n <= 2 decodes in registers,
 * larger n decodes a row once into scratch (the same floats). */

#define KQ_T256 2

INLINE void kq_w256(int type, const uint8_t *b, int c, const float *D, const float *O,
                    __m256 w[4])
{
    const int h = kq_block_elems(type) == 32 ? 0 : 2 * c;
    const __m256 d0 = _mm256_set1_ps(D[h]), o0 = _mm256_set1_ps(O[h]);
    const __m256 d1 = _mm256_set1_ps(D[h + 1]), o1 = _mm256_set1_ps(O[h + 1]);
    __m128i lo, hi;
    kq_u8(type, b, c, &lo, &hi);
    w[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), d0, o0);
    w[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), d0, o0);
    w[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), d1, o1);
    w[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), d1, o1);
}

INLINE void kq_acc256(__m256 acc[][4], int nt, const __m256 w[4], const float *x, size_t ldx, int c)
{
    for (int t = 0; t < nt; t++) {
        const float *xt = x + (size_t)t * ldx + 32 * (size_t)c;
        for (int k = 0; k < 4; k++)
            acc[t][k] = _mm256_fmadd_ps(w[k], _mm256_loadu_ps(xt + 8 * k), acc[t][k]);
    }
}

/* out[t * ldo] for nt (<= KQ_T256) tokens of one row: decoded from its
 * blocks wr, or (wr == NULL) read from the row already decoded into wf. */
INLINE void kq_row256(int type, const uint8_t *wr, const float *wf, int cols, const float *x,
                      size_t ldx, int nt, float *o, int ldo)
{
    const int be = kq_block_elems(type), bb = kq_block_bytes(type), cpb = be / 32;
    __m256 acc[KQ_T256][4];

    for (int t = 0; t < nt; t++)
        for (int k = 0; k < 4; k++)
            acc[t][k] = _mm256_setzero_ps();
    if (wr) {
        for (int blk = 0; blk < cols / be; blk++) {
            const uint8_t *b = wr + (size_t)blk * bb;
            float D[16], O[16];
            for (int l = 0; l < bb; l += 64)
                _mm_prefetch((const char *)b + ST_GEMV_PREFETCH + l, ST_GEMV_PF_HINT);
            kq_scales(type, b, D, O);
            for (int cc = 0; cc < cpb; cc++) {
                __m256 w[4];
                kq_w256(type, b, cc, D, O, w);
                kq_acc256(acc, nt, w, x, ldx, blk * cpb + cc);
            }
        }
    } else {
        for (int c = 0; c < cols / 32; c++) {
            __m256 w[4];
            for (int k = 0; k < 4; k++)
                w[k] = _mm256_load_ps(wf + 32 * c + 8 * k);
            kq_acc256(acc, nt, w, x, ldx, c);
        }
    }
    for (int t = 0; t < nt; t++)
        o[(size_t)t * ldo] = hsum256(_mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]),
                                                   _mm256_add_ps(acc[t][2], acc[t][3])));
}

INLINE void kgemv256_type(int type, const st_kmm_args_t *a, int r0, int r1, float *scratch)
{
    const int be = kq_block_elems(type), bb = kq_block_bytes(type), cpb = be / 32;
    if (a->n <= 2) {
        for (int r = r0; r < r1; r++) {
            const uint8_t *wr = a->w + (size_t)r * a->w_stride;
            if (a->n == 1)
                kq_row256(type, wr, NULL, a->cols, a->x, (size_t)a->cols, 1, a->out + r, a->ldo);
            else
                kq_row256(type, wr, NULL, a->cols, a->x, (size_t)a->cols, 2, a->out + r, a->ldo);
        }
        return;
    }
    /* larger n: ST_KQ_ROWS rows decoded into scratch, walked per 2 tokens
     * (the tokens' activations stay in L1; see kern_avx512.c) */
    for (int rg = r0; rg < r1; rg += ST_KQ_ROWS) {
        const int nr = ST_MIN(ST_KQ_ROWS, r1 - rg);
        for (int rr = 0; rr < nr; rr++) {
            const uint8_t *wr = a->w + (size_t)(rg + rr) * a->w_stride;
            for (int blk = 0; blk < a->cols / be; blk++) {
                const uint8_t *b = wr + (size_t)blk * bb;
                float D[16], O[16];
                kq_scales(type, b, D, O);
                for (int cc = 0; cc < cpb; cc++) {
                    __m256 w[4];
                    float *wf = scratch + (size_t)rr * a->cols + 32 * (size_t)(blk * cpb + cc);
                    kq_w256(type, b, cc, D, O, w);
                    for (int k = 0; k < 4; k++)
                        _mm256_store_ps(wf + 8 * k, w[k]);
                }
            }
        }
        for (int t0 = 0; t0 < a->n; t0 += 2) {
            const int nt = ST_MIN(2, a->n - t0);
            for (int rr = 0; rr < nr; rr++) {
                const float *wf = scratch + (size_t)rr * a->cols;
                float *o = a->out + (size_t)t0 * a->ldo + rg + rr;
                if (nt == 2)
                    kq_row256(type, NULL, wf, a->cols, a->x + (size_t)t0 * a->cols, (size_t)a->cols,
                              2, o, a->ldo);
                else
                    kq_row256(type, NULL, wf, a->cols, a->x + (size_t)t0 * a->cols, (size_t)a->cols,
                              1, o, a->ldo);
            }
        }
    }
}

static void kgemv_avx2(const st_kmm_args_t *a, int r0, int r1, float *scratch)
{
    switch (a->type) {
    case ST_DTYPE_Q5_0: kgemv256_type(ST_DTYPE_Q5_0, a, r0, r1, scratch); break;
    case ST_DTYPE_Q5_1: kgemv256_type(ST_DTYPE_Q5_1, a, r0, r1, scratch); break;
    case ST_DTYPE_Q2_K: kgemv256_type(ST_DTYPE_Q2_K, a, r0, r1, scratch); break;
    case ST_DTYPE_Q3_K: kgemv256_type(ST_DTYPE_Q3_K, a, r0, r1, scratch); break;
    case ST_DTYPE_Q4_K: kgemv256_type(ST_DTYPE_Q4_K, a, r0, r1, scratch); break;
    case ST_DTYPE_Q5_K: kgemv256_type(ST_DTYPE_Q5_K, a, r0, r1, scratch); break;
    case ST_DTYPE_Q6_K: kgemv256_type(ST_DTYPE_Q6_K, a, r0, r1, scratch); break;
    default: break;
    }
}

static void dequant_row_avx2(int type, const void *src, float *dst, int n)
{
    const uint16_t *h = src;
    int i = 0;
    switch (type) {
    case ST_DTYPE_F16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
        for (; i < n; i++)
            dst[i] = st_fp16_to_f32(h[i]);
        break;
    case ST_DTYPE_BF16:
        for (; i + 8 <= n; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
        for (; i < n; i++)
            dst[i] = st_bf16_to_f32(h[i]);
        break;
    default:
        st_cpu_dequant_row_ref(type, src, dst, n);
        break;
    }
}

/* Elements 8c..8c+7 of a KV-cache row of kv_type as floats, read in place:
 * F16 by F16C, Q8_0 as int8 -> int32 -> float times the block's fp16 scale
 * (a block of 32 is chunks 4b..4b+3). Callers pass the type as a constant. */
INLINE __m256 kv_row8(uint32_t type, const uint8_t *row, int c)
{
    if (type == ST_DTYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + (size_t)c * 16)));
    if (type == ST_DTYPE_Q8_0) {
        const uint8_t *b = row + (size_t)(c >> 2) * 34;
        uint16_t dh;
        memcpy(&dh, b, sizeof dh);
        __m128i q8 = _mm_loadl_epi64((const __m128i *)(b + 2 + (c & 3) * 8));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)),
                             _mm256_set1_ps(_cvtsh_ss(dh)));
    }
    return _mm256_loadu_ps((const float *)row + c * 8);
}

/* The 32 int8 of a Q8_0 block as 4 x 8 floats (unscaled). */
INLINE void q8_block8(const uint8_t *blk, __m256 w[4])
{
    __m128i lo = _mm_loadu_si128((const __m128i *)(blk + 2));
    __m128i hi = _mm_loadu_si128((const __m128i *)(blk + 18));
    w[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    w[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    w[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    w[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}

INLINE float q8_scale(const uint8_t *blk)
{
    uint16_t dh;
    memcpy(&dh, blk, sizeof dh);
    return _cvtsh_ss(dh);
}

/* One head of attention, 8 positions per online-softmax step, q and the
 * running output in registers, K/V rows decoded in registers (kv_row8).
 * Against the generic path (a kv_load, a dot and an axpy call per
 * position) this keeps the cache's bytes the only memory traffic, which is
 * what a compact cache saves. */
INLINE void attn_head_n8(uint32_t type, const float *q, const uint8_t *k, const uint8_t *v,
                         size_t row_bytes, int npos, int nq, float scale, float *out)
{
    __m256 qv[ST_ATTN_HEAD_MAX_DIM / 8], o[ST_ATTN_HEAD_MAX_DIM / 8];
    float m = -INFINITY, l = 0.0f;
    float p[8];

    for (int c = 0; c < nq; c++) {
        qv[c] = _mm256_mul_ps(_mm256_loadu_ps(q + c * 8), _mm256_set1_ps(scale));
        o[c] = _mm256_setzero_ps();
    }
    for (int j0 = 0; j0 < npos; j0 += 8) {
        const int cnt = ST_MIN(8, npos - j0);
        float bm = -INFINITY;
        for (int jj = 0; jj < 8; jj++) {
            if (jj >= cnt) {
                p[jj] = -INFINITY;
                continue;
            }
            const uint8_t *kr = k + (size_t)(j0 + jj) * row_bytes;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            if (type == ST_DTYPE_Q8_0) {
                /* d * (q . x) per block: one scale per 32 values */
                for (int c = 0; c < nq; c += 4) {
                    const uint8_t *blk = kr + (size_t)(c >> 2) * 34;
                    __m256 w[4];
                    q8_block8(blk, w);
                    __m256 t = _mm256_mul_ps(w[0], qv[c]);
                    t = _mm256_fmadd_ps(w[1], qv[c + 1], t);
                    t = _mm256_fmadd_ps(w[2], qv[c + 2], t);
                    t = _mm256_fmadd_ps(w[3], qv[c + 3], t);
                    a0 = _mm256_fmadd_ps(t, _mm256_set1_ps(q8_scale(blk)), a0);
                }
            } else {
                for (int c = 0; c < nq; c += 2) {
                    a0 = _mm256_fmadd_ps(kv_row8(type, kr, c), qv[c], a0);
                    a1 = _mm256_fmadd_ps(kv_row8(type, kr, c + 1), qv[c + 1], a1);
                }
            }
            p[jj] = hsum256(_mm256_add_ps(a0, a1));
            bm = fmaxf(bm, p[jj]);
        }
        float nm = fmaxf(m, bm);
        float corr = m == -INFINITY ? 0.0f : expf(m - nm);
        /* exp(-inf - nm) is 0 for the unused lanes */
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p), _mm256_set1_ps(nm)));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                _mm256_set1_epi32(cnt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))));
        l = l * corr + hsum256(e);
        _mm256_storeu_ps(p, e);
        for (int c = 0; c < nq; c++)
            o[c] = _mm256_mul_ps(o[c], _mm256_set1_ps(corr));
        for (int jj = 0; jj < cnt; jj++) {
            const uint8_t *vr = v + (size_t)(j0 + jj) * row_bytes;
            if (type == ST_DTYPE_Q8_0) {
                for (int c = 0; c < nq; c += 4) {
                    const uint8_t *blk = vr + (size_t)(c >> 2) * 34;
                    __m256 w[4], pd = _mm256_set1_ps(p[jj] * q8_scale(blk));
                    q8_block8(blk, w);
                    for (int i = 0; i < 4; i++)
                        o[c + i] = _mm256_fmadd_ps(w[i], pd, o[c + i]);
                }
                continue;
            }
            __m256 pj = _mm256_set1_ps(p[jj]);
            for (int c = 0; c < nq; c++)
                o[c] = _mm256_fmadd_ps(kv_row8(type, vr, c), pj, o[c]);
        }
        m = nm;
    }
    __m256 inv = _mm256_set1_ps(1.0f / l);
    for (int c = 0; c < nq; c++)
        _mm256_storeu_ps(out + c * 8, _mm256_mul_ps(o[c], inv));
}

INLINE void attn_head_t8(uint32_t type, const float *q, const uint8_t *k, const uint8_t *v,
                         size_t row_bytes, int npos, int head_dim, float scale, float *out)
{
    if (head_dim == 64)
        attn_head_n8(type, q, k, v, row_bytes, npos, 8, scale, out);
    else if (head_dim == 128)
        attn_head_n8(type, q, k, v, row_bytes, npos, 16, scale, out);
    else if (head_dim == 256)
        attn_head_n8(type, q, k, v, row_bytes, npos, 32, scale, out);
    else
        attn_head_n8(type, q, k, v, row_bytes, npos, head_dim / 8, scale, out);
}

static void attn_head_avx2(uint32_t kv_type, const float *q, const void *k, const void *v,
                           size_t row_bytes, int npos, int head_dim, float scale, float *out)
{
    if (kv_type == ST_DTYPE_F16)
        attn_head_t8(ST_DTYPE_F16, q, k, v, row_bytes, npos, head_dim, scale, out);
    else if (kv_type == ST_DTYPE_Q8_0)
        attn_head_t8(ST_DTYPE_Q8_0, q, k, v, row_bytes, npos, head_dim, scale, out);
    else
        attn_head_t8(ST_DTYPE_F32, q, k, v, row_bytes, npos, head_dim, scale, out);
}

/* A KV-cache row as floats for the generic attention path: F16 through
 * F16C, Q8_0 block by block (int8 -> int32 -> float times the block's fp16
 * scale). One row of one head at a time, into the caller's stack buffer. */
static void kv_load_avx2(uint32_t kv_type, const void *src, float *dst, int n)
{
    if (kv_type == ST_DTYPE_Q8_0) {
        const uint8_t *b = src;
        for (int i = 0; i + 32 <= n; i += 32, b += 34) {
            uint16_t dh;
            memcpy(&dh, b, sizeof dh);
            __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
            for (int c = 0; c < 4; c++) {
                __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * c)));
                _mm256_storeu_ps(dst + i + 8 * c, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
            }
        }
        return;
    }
    dequant_row_avx2((int)kv_type, src, dst, n);
}

static const st_cpu_kernels_t kernels_avx2 = {
    .isa = ST_CPU_ISA_AVX2,
    .quantize_row = quantize_row_avx2,
    .qgemv = qgemv_avx2,
    .qgemm = NULL,
    .qgemm_scratch = NULL,
    .tile_min_n = 0,
    .kgemv = kgemv_avx2,
    .dequant_row = dequant_row_avx2,
    .dot_f32 = dot_f32_avx2,
    .sumsq_f32 = sumsq_f32_avx2,
    .scale_mul = scale_mul_avx2,
    .swiglu = swiglu_avx2,
    .geglu = geglu_avx2,
    .add = add_avx2,
    .axpby = axpby_avx2,
    .kv_load = kv_load_avx2,
    .attn_head = attn_head_avx2,
    .exp_sum = exp_sum_avx2,
};

const st_cpu_kernels_t *st_cpu_kernels_avx2(void)
{
    return &kernels_avx2;
}
