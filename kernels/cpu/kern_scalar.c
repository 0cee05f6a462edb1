/*
 * kern_scalar.c - portable C kernels: the fallback on any CPU and the
 * reference the SIMD levels are tested against (besides the double-precision
 * references in tests/kernels).
 */
#include <math.h>
#include <string.h>

#include "cpu_impl.h"

static inline uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

void st_cpu_quantize_row_ref(const float *x, const st_q8_layout_t *L, uint8_t *row,
                             int with_dx16)
{
    int8_t *q = (int8_t *)row, *q2 = (int8_t *)(row + L->q2_off);
    float *xv = (float *)(row + L->xv_off);
    float *dx16 = (float *)(row + L->dx16_off);
    float *s = (float *)(row + L->s_off);

    for (int p = 0; p < L->np; p++) {
        float dd[2] = {0.0f, 0.0f};
        for (int h = 0; h < 2; h++) {
            int b = 2 * p + h, sum = 0;
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
            float amax = 0.0f;
            for (int i = 0; i < ST_QK; i++)
                amax = fmaxf(amax, fabsf(xb[i]));
            /* Same operations as the SIMD versions (divide, reciprocal,
             * round to nearest even, fma for the residual) so every level
             * quantizes alike. */
            float d = amax / 127.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            float d2 = d / 127.0f;
            float id2 = d2 != 0.0f ? 1.0f / d2 : 0.0f;
            for (int i = 0; i < ST_QK; i++) {
                int v = (int)lrintf(xb[i] * id);
                (i < 16 ? lo : hi - 16)[i] = (int8_t)v;
                if (L->two) {
                    /* |r| <= d/2, so |v2| <= 64 */
                    int v2 = (int)lrintf(fmaf(-d, (float)v, xb[i]) * id2);
                    (i < 16 ? lo2 : hi2 - 16)[i] = (int8_t)v2;
                    v = 127 * v + v2;
                }
                sum += v;
            }
            if (L->two)
                d = d2;
            dd[h] = d;
            xv[p * 4 + 2 * h] = d;
            xv[p * 4 + 2 * h + 1] = s[b] = d * (float)sum;
        }
        if (with_dx16)
            for (int i = 0; i < 16; i++)
                dx16[p * 16 + i] = dd[(i >> 2) & 1];
    }
}

void st_cpu_dequant_row_ref(int type, const void *src, float *dst, int n)
{
    st_dtype_dequantize_row((uint32_t)type, src, dst, (uint64_t)n);
}

static void kv_load_scalar(uint32_t kv_type, const void *src, float *dst, int n)
{
    st_dtype_dequantize_row(kv_type, src, dst, (uint64_t)n);
}

/* Activation value i (0..31) of block b in the paired layout. */
static inline int xq_at(const int8_t *q, int b, int i)
{
    int p = b >> 1, h = b & 1;
    return q[p * 64 + (i >> 4) * 32 + h * 16 + (i & 15)];
}

/* sum over block b of u * c for the weights' unsigned (Q4) or signed (Q8_0)
 * values, c the activation plane q. */
static int block_dot(int type, const uint8_t *w, const int8_t *q, int b)
{
    int sumi = 0;
    switch (type) {
    case ST_DTYPE_Q4_1:
        for (int j = 0; j < 16; j++)
            sumi += (w[4 + j] & 0xF) * xq_at(q, b, j) + (w[4 + j] >> 4) * xq_at(q, b, j + 16);
        break;
    case ST_DTYPE_Q4_0:
        for (int j = 0; j < 16; j++)
            sumi += ((w[2 + j] & 0xF) - 8) * xq_at(q, b, j) +
                    ((w[2 + j] >> 4) - 8) * xq_at(q, b, j + 16);
        break;
    default: /* Q8_0 */
        for (int j = 0; j < 32; j++)
            sumi += (int8_t)w[2 + j] * xq_at(q, b, j);
        break;
    }
    return sumi;
}

static float qdot_row(int type, const uint8_t *w, const st_q8_layout_t *L, const uint8_t *xrow)
{
    const int8_t *q = (const int8_t *)xrow, *q2 = (const int8_t *)(xrow + L->q2_off);
    const float *xv = (const float *)(xrow + L->xv_off);
    const int bb = st_qblock_bytes(type);
    float acc = 0.0f, accm = 0.0f;

    for (int b = 0; b < L->nb; b++, w += bb) {
        float dx = xv[(b >> 1) * 4 + (b & 1) * 2], sx = xv[(b >> 1) * 4 + (b & 1) * 2 + 1];
        float d = st_fp16_to_f32(rd16(w));
        /* |127 * sum(u q1)| <= 127 * 32 * 255 * 127 < 2^31 */
        int sumi = block_dot(type, w, q, b);
        if (L->two)
            sumi = 127 * sumi + block_dot(type, w, q2, b);
        if (type == ST_DTYPE_Q4_1)
            accm += st_fp16_to_f32(rd16(w + 2)) * sx;
        acc += (d * dx) * (float)sumi;
    }
    return acc + accm;
}

static void qgemv_scalar(const st_qmm_args_t *a, int r0, int r1, void *scratch)
{
    (void)scratch;
    for (int t = 0; t < a->n; t++) {
        const uint8_t *xrow = a->xq + (size_t)t * a->L.stride;
        for (int r = r0; r < r1; r++)
            a->out[(size_t)t * a->ldo + r] = qdot_row(a->type, a->w + (size_t)r * a->w_stride,
                                                      &a->L, xrow);
    }
}

/* Four partial sums: keeps the error of long F32 dots near sqrt(n)*eps and
 * lets the compiler pipeline the adds. */
static float dot_f32_scalar(const float *a, const float *b, int n)
{
    float s[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++)
            s[j] += a[i + j] * b[i + j];
    for (; i < n; i++)
        s[0] += a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static float sumsq_f32_scalar(const float *x, int n)
{
    return dot_f32_scalar(x, x, n);
}

static void scale_mul_scalar(const float *x, const float *w, float s, float *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = x[i] * s * w[i];
}

static void swiglu_scalar(const float *g, const float *u, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* GELU (tanh form) as x * sigmoid(2 u): 0.5 x (1 + tanh u) = x / (1 + e^-2u),
 * u = sqrt(2/pi) (x + 0.044715 x^3); the same formula at every level. */
static void geglu_scalar(const float *g, const float *u, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const float x = g[i], t = -1.5957691216057308f * (x + 0.044715f * x * x * x);
        out[i] = x / (1.0f + expf(t)) * u[i];
    }
}

static void add_scalar(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

static void axpby_scalar(float *y, float a, const float *x, float b, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = y[i] * a + x[i] * b;
}

static float exp_sum_scalar(float *x, float m, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    return s;
}

static const st_cpu_kernels_t kernels_scalar = {
    .isa = ST_CPU_ISA_SCALAR,
    .quantize_row = st_cpu_quantize_row_ref,
    .qgemv = qgemv_scalar,
    .qgemm = NULL,
    .qgemm_scratch = NULL,
    .tile_min_n = 0,
    .dequant_row = st_cpu_dequant_row_ref,
    .dot_f32 = dot_f32_scalar,
    .sumsq_f32 = sumsq_f32_scalar,
    .scale_mul = scale_mul_scalar,
    .swiglu = swiglu_scalar,
    .geglu = geglu_scalar,
    .add = add_scalar,
    .axpby = axpby_scalar,
    .kv_load = kv_load_scalar,
    .exp_sum = exp_sum_scalar,
};

const st_cpu_kernels_t *st_cpu_kernels_scalar(void)
{
    return &kernels_scalar;
}
