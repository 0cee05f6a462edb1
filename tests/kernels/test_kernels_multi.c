/*
 * test_kernels_multi.c - the optional matmul_multi op of the CPU backend.
 *
 * The stage executor sends Q/K/V and gate/up through matmul_multi, which
 * quantizes the shared input once and runs every weight in one pool
 * dispatch. Its outputs must equal, byte for byte, one matmul call per
 * weight: for every ISA level this CPU has, 1 and 2 threads, both
 * activation settings, and batch sizes on both sides of the tile and
 * repack thresholds (1, 5, 17, 40, 130), including 130 > max_batch 64,
 * which goes through in slices. A set with a float weight (no shared
 * quantization) must fall back and still match.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt_util.h"
#include "st_test.h"
#include "st_util.h"

#define NT      130
#define MAXB    64
#define NW      3

static const int batch_sizes[] = {1, 5, 17, 40, 130};

/* Weights with the given types and row counts, all `cols` wide. */
static int check_multi(const int *types, const int *rows, int cols, uint64_t seed)
{
    uint64_t s = seed;
    st_tensor_t w[NW];
    const st_tensor_t *wp[NW];
    float *x = malloc((size_t)NT * cols * sizeof *x);
    float *sep[NW] = {0}, *fus[NW] = {0};
    int fails = 0, made = 0;

    if (!x)
        return 1;
    for (int i = 0; i < NW; i++) {
        sep[i] = malloc((size_t)NT * rows[i] * sizeof(float));
        fus[i] = malloc((size_t)NT * rows[i] * sizeof(float));
        if (!sep[i] || !fus[i] || kt_make_weight(&w[i], types[i], rows[i], cols, &s) != 0) {
            fails = 1;
            goto out;
        }
        made++;
        wp[i] = &w[i];
    }
    kt_fill(x, (size_t)NT * cols, 2.0f, &s);
    for (int t = 0; t < NT; t++)
        x[(size_t)t * cols + (size_t)(kt_rng(&s) % (uint64_t)cols)] *= 20.0f;

    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
        if (!st_cpu_isa_supported((st_cpu_isa_t)isa))
            continue;
        for (int nth = 1; nth <= 2; nth++) {
            for (int bits = 16; bits >= 8; bits -= 8) {
                st_backend_t be;
                if (kt_open_bits((st_cpu_isa_t)isa, nth, bits, MAXB, 2048, &be) != 0) {
                    fails++;
                    goto out;
                }
                if (!be.ops->matmul_multi) {
                    fprintf(stderr, "  cpu backend has no matmul_multi\n");
                    st_backend_close(&be);
                    fails++;
                    goto out;
                }
                for (size_t k = 0; k < sizeof batch_sizes / sizeof batch_sizes[0]; k++) {
                    int n = batch_sizes[k];
                    for (int i = 0; i < NW; i++) {
                        memset(sep[i], 0xff, (size_t)n * rows[i] * sizeof(float));
                        memset(fus[i], 0xee, (size_t)n * rows[i] * sizeof(float));
                        be.ops->matmul(be.ctx, &w[i], x, n, sep[i]);
                    }
                    be.ops->matmul_multi(be.ctx, NW, wp, x, n, fus);
                    for (int i = 0; i < NW; i++) {
                        if (memcmp(sep[i], fus[i], (size_t)n * rows[i] * sizeof(float)) == 0)
                            continue;
                        if (fails < 8)
                            fprintf(stderr, "  %s weight %d (%s %dx%d) act%d x%d n=%d: fused != "
                                    "separate\n", st_cpu_isa_name((st_cpu_isa_t)isa), i,
                                    st_dtype_name(types[i]), rows[i], cols, bits, nth, n);
                        fails++;
                    }
                }
                st_backend_close(&be);
            }
        }
    }
out:
    for (int i = 0; i < made; i++)
        free((void *)(uintptr_t)w[i].data);
    for (int i = 0; i < NW; i++) {
        free(sep[i]);
        free(fus[i]);
    }
    free(x);
    return fails;
}

ST_TEST(multi_equals_separate_same_type)
{
    static const int q41[NW] = {ST_DTYPE_Q4_1, ST_DTYPE_Q4_1, ST_DTYPE_Q4_1};
    static const int q40[NW] = {ST_DTYPE_Q4_0, ST_DTYPE_Q4_0, ST_DTYPE_Q4_0};
    static const int rows_qkv[NW] = {576, 192, 192};   /* the model's Q/K/V */
    static const int rows_odd[NW] = {67, 16, 33};
    ST_CHECK(check_multi(q41, rows_qkv, 576, 5) == 0);
    ST_CHECK(check_multi(q40, rows_odd, 96, 6) == 0);
}

ST_TEST(multi_equals_separate_mixed_types)
{
    /* integer types mixed: one quantization still serves all */
    static const int mix[NW] = {ST_DTYPE_Q8_0, ST_DTYPE_Q4_1, ST_DTYPE_Q4_0};
    /* a float weight: falls back to one matmul per weight */
    static const int flt[NW] = {ST_DTYPE_Q4_1, ST_DTYPE_F16, ST_DTYPE_Q8_0};
    static const int rows[NW] = {80, 48, 112};
    ST_CHECK(check_multi(mix, rows, 576, 7) == 0);
    ST_CHECK(check_multi(flt, rows, 96, 8) == 0);
    /* float-activation types (kgemv) beside integer ones: also one matmul each */
    static const int kq[NW] = {ST_DTYPE_Q4_K, ST_DTYPE_Q4_1, ST_DTYPE_Q5_0};
    static const int kq2[NW] = {ST_DTYPE_Q5_K, ST_DTYPE_Q3_K, ST_DTYPE_Q2_K};
    ST_CHECK(check_multi(kq, rows, 512, 9) == 0);
    ST_CHECK(check_multi(kq2, rows, 256, 10) == 0);
}

int main(void)
{
    return st_test_main();
}
