/*
 * test_kernels_matmul.c - workbench for the CPU matmul: every weight dtype,
 * odd shapes, every ISA level this CPU supports, 1/2/3 threads, against a
 * float64 reference built on st_dtype_dequantize_row.
 *
 * Every check runs with STRATA_ACT_BITS=16 (the default: two 8-bit levels)
 * and STRATA_ACT_BITS=8.
 *
 * Tolerances:
 *  - Q4_0 / Q4_1 / Q8_0 quantize activations per block of 32. One level:
 *    scale d1 = max|x|/127, round-to-nearest, so |x_i - d1 q_i| <= d1/2 and
 *    the dot's error is bounded by  sum_b (max_b|x| / 254) sum_{i in b}|w_i|
 *    (x1.01 for the rounding of x/dx). Two levels quantize the residual
 *    again with d2 = d1/127: the bound shrinks by 127. Float accumulation adds at most
 *    ~1e-5 of sum_i |x_i| (D_b u_max + |O_b|), the magnitudes the kernels
 *    really add (u up to 255 for Q8_0 as u8).
 *  - F32 / F16 / BF16 / Q6_K run in float on dequantized weights, and Q5_0 /
 *    Q5_1 / Q2_K..Q5_K in float on weights decoded in registers (fma(u, D,
 *    O): at most an ulp of w from the reference's rounding): 1e-5 of
 *    sum_i |w_i x_i| covers float accumulation over these lengths.
 * Quantized types are also checked against the same float64 dot taken on
 * the activations quantized as cpu_impl.h specifies (quant_act): then only
 * float rounding remains, bounded by the 1e-5 term above, which catches
 * wrong offsets or scales far smaller than the quantization error.
 * Bit-identity across thread counts is checked with memcmp.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt_util.h"
#include "st_test.h"
#include "st_util.h"

typedef struct ref {
    double *val;     /* [n][rows] */
    double *tol;     /* [n][rows] */
    double *qval;    /* [n][rows] quantized types: the same dot on the int8
                        activations the kernels are specified to use */
    double *qtol;    /* [n][rows] float rounding only */
} ref_t;

/* The activation quantization cpu_impl.h specifies, in plain C, as
 * doubles: d1 q1 (8 bits) or d2 (127 q1 + q2) (16 bits). */
static void quant_act(const float *x, int cols, int bits, double *xq)
{
    for (int b = 0; b < cols / 32; b++) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        float d2 = d / 127.0f, id2 = d2 != 0.0f ? 1.0f / d2 : 0.0f;
        for (int i = 0; i < 32; i++) {
            float xi = x[b * 32 + i];
            long q1 = lrintf(xi * id);
            if (bits == 8) {
                xq[b * 32 + i] = (double)d * (double)q1;
            } else {
                long q2 = lrintf(fmaf(-d, (float)q1, xi) * id2);
                xq[b * 32 + i] = (double)d2 * (double)(127 * q1 + q2);
            }
        }
    }
}

static void block_DO(int type, const uint8_t *blk, double *D, double *O, double *umax)
{
    uint16_t d, m;
    memcpy(&d, blk, 2);
    memcpy(&m, blk + 2, 2);
    *D = fabs(st_fp16_to_f32(d));
    switch (type) {
    case ST_DTYPE_Q4_1: *O = fabs(st_fp16_to_f32(m)); *umax = 15; break;
    case ST_DTYPE_Q4_0: *O = 8 * *D; *umax = 15; break;
    case ST_DTYPE_Q5_0: *O = 16 * *D; *umax = 31; break;
    case ST_DTYPE_Q5_1: *O = fabs(st_fp16_to_f32(m)); *umax = 31; break;
    default:            *O = 128 * *D; *umax = 255; break;
    }
}

static int make_ref(const st_tensor_t *w, const float *x, int n, int bits, int quant, ref_t *ref)
{
    const int rows = (int)w->ne[1], cols = (int)w->ne[0], type = w->type;
    float *wr = malloc((size_t)cols * sizeof *wr);
    ref->val = malloc((size_t)n * rows * sizeof(double));
    ref->tol = malloc((size_t)n * rows * sizeof(double));
    ref->qval = malloc((size_t)n * rows * sizeof(double));
    ref->qtol = malloc((size_t)n * rows * sizeof(double));
    double *xq = malloc((size_t)n * cols * sizeof *xq);
    if (!wr || !ref->val || !ref->tol || !ref->qval || !ref->qtol || !xq)
        return -1;
    for (int t = 0; t < n; t++)
        quant_act(x + (size_t)t * cols, cols, bits, xq + (size_t)t * cols);
    for (int r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        st_dtype_dequantize_row(w->type, row, wr, (uint64_t)cols);
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * cols;
            double acc = 0, absacc = 0, qbound = 0, mag = 0, qacc = 0;
            for (int c = 0; c < cols; c++) {
                acc += (double)wr[c] * xt[c];
                absacc += fabs((double)wr[c] * xt[c]);
                qacc += (double)wr[c] * xq[(size_t)t * cols + c];
            }
            ref->qval[(size_t)t * rows + r] = qacc;
            if (quant) {
                for (int b = 0; b < cols / 32; b++) {
                    double amax = 0, sw = 0, sx = 0, D, O, umax;
                    for (int i = 0; i < 32; i++) {
                        amax = fmax(amax, fabs(xt[b * 32 + i]));
                        sw += fabs(wr[b * 32 + i]);
                        sx += fabs(xt[b * 32 + i]);
                    }
                    block_DO(type, row + (size_t)b * st_dtype_row_bytes(type, 32), &D, &O, &umax);
                    qbound += amax / (bits == 8 ? 254.0 : 254.0 * 127.0) * sw;
                    mag += sx * (D * umax + O);
                }
                ref->tol[(size_t)t * rows + r] = 1.01 * qbound + 1e-5 * mag + 1e-30;
                ref->qtol[(size_t)t * rows + r] = 1e-5 * mag + 1e-30;
            } else {
                ref->tol[(size_t)t * rows + r] = 1e-5 * absacc + 1e-30;
                ref->qtol[(size_t)t * rows + r] = INFINITY;
            }
            ref->val[(size_t)t * rows + r] = acc;
        }
    }
    free(wr);
    free(xq);
    return 0;
}

static const int types[] = {ST_DTYPE_Q4_1, ST_DTYPE_Q8_0, ST_DTYPE_Q4_0, ST_DTYPE_F32,
                            ST_DTYPE_F16, ST_DTYPE_BF16, ST_DTYPE_Q6_K, ST_DTYPE_Q5_0,
                            ST_DTYPE_Q5_1, ST_DTYPE_Q2_K, ST_DTYPE_Q3_K, ST_DTYPE_Q4_K,
                            ST_DTYPE_Q5_K};

/* Runs one shape on every ISA and thread count; returns failures. */
static int check_shape_b(int type, int rows, int cols, int n, uint64_t seed, int verbose,
                         uint32_t max_batch)
{
    uint64_t s = seed;
    st_tensor_t w;
    ref_t ref = {0};
    int fails = 0;
    float *x = malloc((size_t)n * cols * sizeof *x);
    float *out = malloc((size_t)n * rows * sizeof *out);
    float *first = malloc((size_t)n * rows * sizeof *first);

    if (!x || !out || !first || kt_make_weight(&w, type, rows, cols, &s) != 0)
        return 1;
    kt_fill(x, (size_t)n * cols, 2.0f, &s);
    /* a few outliers, as real activations have */
    for (int t = 0; t < n; t++)
        x[(size_t)t * cols + (size_t)(kt_rng(&s) % (uint64_t)cols)] *= 20.0f;
    for (int bits = 16; bits >= 8; bits -= 8) {
        int any_int = 0;
        for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
            if (!st_cpu_isa_supported((st_cpu_isa_t)isa))
                continue;
            /* the reference (and tolerance) of the path this level takes */
            const int quant = st_cpu_int_activations((st_cpu_isa_t)isa, type);
            any_int |= quant;
            if (make_ref(&w, x, n, bits, quant, &ref) != 0)
                return 1;
            for (int nth = 1; nth <= 3; nth++) {
                st_backend_t be;
                if (kt_open_bits((st_cpu_isa_t)isa, nth, bits, max_batch, 1024, &be) != 0)
                    return fails + 1;
                memset(out, 0xff, (size_t)n * rows * sizeof *out);
                be.ops->matmul(be.ctx, &w, x, n, out);
                st_backend_close(&be);
                double worst = 0;
                for (size_t i = 0; i < (size_t)n * rows; i++) {
                    double e = fabs((double)out[i] - ref.val[i]);
                    double eq = fabs((double)out[i] - ref.qval[i]);
                    if (!(e <= ref.tol[i]) || !(eq <= ref.qtol[i])) {
                        if (fails < 5)
                            fprintf(stderr, "  %s %dx%d n=%d %s x%d act%d: [t%zu r%zu] got %.8g "
                                    "want %.8g tol %.3g (quantized-activation ref %.8g tol %.3g)\n",
                                    st_dtype_name(type), rows, cols, n, st_cpu_isa_name(isa), nth,
                                    bits, i / rows, i % rows, out[i], ref.val[i], ref.tol[i], ref.qval[i],
                                    ref.qtol[i]);
                        fails++;
                    }
                    if (ref.tol[i] > 0 && e / ref.tol[i] > worst)
                        worst = e / ref.tol[i];
                }
                if (verbose)
                    fprintf(stderr, "  %-5s %4dx%-5d n=%-3d %-10s x%d act%-2d: worst err/tol %.3f\n",
                            st_dtype_name(type), rows, cols, n, st_cpu_isa_name(isa), nth, bits,
                            worst);
                if (nth == 1) {
                    memcpy(first, out, (size_t)n * rows * sizeof *out);
                } else if (memcmp(first, out, (size_t)n * rows * sizeof *out) != 0) {
                    fprintf(stderr, "  %s %dx%d n=%d %s act%d: %d threads differ from 1 thread\n",
                            st_dtype_name(type), rows, cols, n, st_cpu_isa_name(isa), bits, nth);
                    fails++;
                }
            }
            free(ref.val);
            free(ref.tol);
            free(ref.qval);
            free(ref.qtol);
        }
        if (!any_int)
            break;   /* float paths do not depend on STRATA_ACT_BITS */
    }
    free((void *)w.data);
    free(x);
    free(out);
    free(first);
    return fails;
}

static int check_shape(int type, int rows, int cols, int n, uint64_t seed, int verbose)
{
    return check_shape_b(type, rows, cols, n, seed, verbose, 64);
}

ST_TEST(matmul_all_types_odd_shapes)
{
    static const int rows_list[] = {1, 7, 33, 577};
    /* 2..15 take the multi-token qgemv on AVX-512, 10 and up AMX where
     * present, 16 and up the AVX-512 tiles */
    static const int n_list[] = {1, 3, 4, 17};
    uint64_t seed = 1;
    for (size_t ti = 0; ti < ST_ARRAY_SIZE(types); ti++) {
        int type = types[ti];
        int cols_list[3] = {32, 96, 576};
        if (kt_block_elems(type) == 256) {
            cols_list[0] = 256; cols_list[1] = 512; cols_list[2] = 768;
        }
        for (size_t ri = 0; ri < ST_ARRAY_SIZE(rows_list); ri++)
            for (int ci = 0; ci < 3; ci++)
                for (size_t ni = 0; ni < ST_ARRAY_SIZE(n_list); ni++)
                    ST_CHECK_MSG(check_shape(type, rows_list[ri], cols_list[ci], n_list[ni],
                                             seed++, 0) == 0,
                                 "%s rows %d cols %d n %d", st_dtype_name(type), rows_list[ri],
                                 cols_list[ci], n_list[ni]);
    }
}

/* The real model's shapes and prefill-sized batches (several 32-token
 * AMX groups, a partial last one), n beyond max_batch (sliced), cols
 * beyond max_cols (scratch grows). */
ST_TEST(matmul_model_shapes)
{
    ST_CHECK(check_shape(ST_DTYPE_Q4_1, 192, 576, 1, 101, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q4_1, 576, 1536, 2, 102, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q4_1, 1536, 576, 21, 103, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q4_1, 576, 576, 64, 107, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q4_1, 200, 1536, 57, 108, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q8_0, 1000, 576, 5, 104, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q4_1, 100, 576, 12, 113, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q8_0, 51, 96, 10, 114, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q8_0, 999, 576, 40, 109, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q4_0, 64, 2080, 9, 105, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_Q4_0, 77, 2080, 33, 110, 1) == 0);
    ST_CHECK(check_shape(ST_DTYPE_F32, 70, 1536, 9, 106, 1) == 0);
    ST_CHECK(check_shape_b(ST_DTYPE_Q4_1, 99, 576, 45, 111, 1, 20) == 0);
    ST_CHECK(check_shape_b(ST_DTYPE_Q8_0, 33, 96, 17, 112, 1, 8) == 0);
}

/* The float-activation kernels (Q5_0, Q5_1, Q2_K..Q5_K): every n from 1
 * to 6 (AVX-512 decodes in registers up to 4 tokens, AVX2 up to 2, then
 * from a decoded row), odd rows, the model's widths, a batch sliced by
 * max_batch and a width beyond max_cols (1024 here: the scratch grows). */
ST_TEST(matmul_kq_types)
{
    uint64_t seed = 200;
    for (int i = 0; i < KT_N_KQ_TYPES; i++) {
        const int t = kt_kq_types[i], wide = kt_block_elems(t) == 32 ? 576 : 768;
        for (int n = 1; n <= 6; n++)
            ST_CHECK_MSG(check_shape(t, 35, wide, n, seed++, 0) == 0, "%s n %d",
                         st_dtype_name(t), n);
        ST_CHECK(check_shape(t, 576, 1536, 1, seed++, 1) == 0);
        ST_CHECK(check_shape(t, 192, 1536, 21, seed++, 1) == 0);
        ST_CHECK(check_shape_b(t, 99, 1536, 45, seed++, 1, 20) == 0);
    }
}

/* Weights whose rows are all one value make the expected result exact
 * enough to catch a transposed or misaligned output without references. */
ST_TEST(matmul_f32_exact_small)
{
    float wd[3 * 4] = {1, 2, 3, 4, 0, 1, 0, 1, -1, 0, 0, 0};
    float x[2 * 4] = {1, 1, 1, 1, 1, 2, 3, 4};
    float out[2 * 3];
    st_tensor_t w = { .name = "w", .type = ST_DTYPE_F32, .n_dims = 2, .ne = {4, 3, 1, 1},
                      .row_bytes = 16, .nbytes = 48, .data = wd };
    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
        st_backend_t be;
        if (!st_cpu_isa_supported((st_cpu_isa_t)isa))
            continue;
        ST_REQUIRE(kt_open((st_cpu_isa_t)isa, 2, 4, 64, &be) == 0);
        be.ops->matmul(be.ctx, &w, x, 2, out);
        st_backend_close(&be);
        ST_CHECK(out[0] == 10 && out[1] == 2 && out[2] == -1);
        ST_CHECK(out[3] == 30 && out[4] == 6 && out[5] == -1);
    }
}

/* Two levels must actually be closer to float64 than one: on a model-
 * sized shape the worst error over all outputs, relative to the 8-bit
 * bound, must shrink by far more than float noise could explain. */
static double worst_err(int type, int rows, int cols, int n, int bits, st_cpu_isa_t isa,
                        uint64_t seed)
{
    uint64_t s = seed;
    st_tensor_t w;
    ref_t ref = {0};
    st_backend_t be;
    double worst = -1;
    float *x = malloc((size_t)n * cols * sizeof *x);
    float *out = malloc((size_t)n * rows * sizeof *out);
    if (!x || !out || kt_make_weight(&w, type, rows, cols, &s) != 0)
        goto done;
    kt_fill(x, (size_t)n * cols, 2.0f, &s);
    if (make_ref(&w, x, n, 8, 1, &ref) != 0 || kt_open_bits(isa, 1, bits, 64, 2048, &be) != 0)
        goto done_w;
    be.ops->matmul(be.ctx, &w, x, n, out);
    st_backend_close(&be);
    worst = 0;
    for (size_t i = 0; i < (size_t)n * rows; i++)
        worst = fmax(worst, fabs((double)out[i] - ref.val[i]) / ref.tol[i]);
done_w:
    free((void *)w.data);
    free(ref.val);
    free(ref.tol);
    free(ref.qval);
    free(ref.qtol);
done:
    free(x);
    free(out);
    return worst;
}

ST_TEST(matmul_two_level_is_more_accurate)
{
    static const int ns[] = {1, 3, 40};
    static const int tys[] = {ST_DTYPE_Q4_1, ST_DTYPE_Q8_0, ST_DTYPE_Q4_0};
    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
        if (!st_cpu_isa_supported((st_cpu_isa_t)isa))
            continue;
        for (size_t ti = 0; ti < ST_ARRAY_SIZE(tys); ti++)
            for (size_t ni = 0; ni < ST_ARRAY_SIZE(ns); ni++) {
                double e8 = worst_err(tys[ti], 256, 1536, ns[ni], 8, (st_cpu_isa_t)isa, 7);
                double e16 = worst_err(tys[ti], 256, 1536, ns[ni], 16, (st_cpu_isa_t)isa, 7);
                ST_CHECK_MSG(e8 > 0 && e16 >= 0 && e16 * 20 < e8,
                             "%s n=%d %s: worst err/8-bit-bound %.4g (16 bits) vs %.4g (8 bits)",
                             st_dtype_name(tys[ti]), ns[ni], st_cpu_isa_name(isa), e16, e8);
            }
    }
}

ST_TEST(act_bits_env)
{
    st_backend_params_t p = { .size = sizeof p, .n_threads = 1, .max_batch = 4, .max_cols = 64 };
    st_error_t err = {{0}};
    st_backend_t be;
    setenv("STRATA_ACT_BITS", "12", 1);
    ST_CHECK(st_backend_open("cpu", &p, &be, &err) == ST_ERR_INVALID);
    ST_CHECK(strstr(err.msg, "STRATA_ACT_BITS") != NULL);
    unsetenv("STRATA_ACT_BITS");
    ST_REQUIRE(st_backend_open("cpu", &p, &be, &err) == ST_OK);
    ST_CHECK(strstr(be.ops->describe(be.ctx), "16-bit activations") != NULL);
    st_backend_close(&be);
    ST_REQUIRE(kt_open_bits(ST_CPU_ISA_SCALAR, 1, 8, 4, 64, &be) == 0);
    ST_CHECK(strstr(be.ops->describe(be.ctx), "8-bit activations") != NULL);
    st_backend_close(&be);
}

int main(void)
{
    return st_test_main();
}
