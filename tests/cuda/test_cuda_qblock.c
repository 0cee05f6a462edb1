/*
 * test_cuda_qblock.c - the CUDA backend's quantized block math
 * (kernels/cuda/cuda_qblock.cuh, compiled for the host by nvcc) against the
 * CPU reference st_dtype_dequantize_row, on this machine's CPU: no GPU and
 * no CUDA runtime call is needed, so it runs in CPU-only CI and gives real
 * evidence for the device kernels' layouts and arithmetic.
 *
 * Rows are random bytes (every byte pattern is a valid block) with their
 * f16 scale fields redrawn among the finite halves, subnormals and 65504
 * included; rows lie back to back from a 256-byte aligned base, as in the
 * device copy, so every load the device would make misaligned is counted.
 * Checked per type:
 *   - each decoded unit of 32 weights against the reference: bit-identical
 *     for every type (cuda_qblock.cuh says why its fmaf rounds as the
 *     reference's multiply-then-add);
 *   - the mat-vec kernel's result for a row (32 lanes and the warp's xor
 *     butterfly, emulated) against a double-precision product of the
 *     reference weights, 1..8 token rows, odd row counts, row lengths from
 *     one block to 4096 (fewer units than lanes, uneven units per lane):
 *     |error| <= 1e-5 of sum |w x|, and of max |y| on rows with ordinary
 *     scales;
 *   - the same on rows of the real models' quantized tensors when their
 *     files are present (STRATA_MODEL, and the SmolLM2 Q4_1 and Gemma 3
 *     Q4_K_M files in ~/.cache/strata that scripts/fetch-model.sh writes).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "cuda_qblock_host.h"
#include "st_dtype.h"
#include "st_gguf.h"
#include "st_test.h"

static const int types[] = {ST_DTYPE_Q4_0, ST_DTYPE_Q4_1, ST_DTYPE_Q5_0, ST_DTYPE_Q5_1,
                            ST_DTYPE_Q8_0, ST_DTYPE_Q2_K, ST_DTYPE_Q3_K, ST_DTYPE_Q4_K,
                            ST_DTYPE_Q5_K, ST_DTYPE_Q6_K};
#define N_TYPES ((int)(sizeof types / sizeof types[0]))

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float unif(uint64_t *s)   /* [-1, 1) */
{
    return (float)((double)(rng(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

/* Byte offsets of a block's f16 fields (d, and m or dmin when present). */
static int half_fields(int type, int off[2])
{
    switch (type) {
    case ST_DTYPE_Q4_0: case ST_DTYPE_Q5_0: case ST_DTYPE_Q8_0:
        off[0] = 0; return 1;
    case ST_DTYPE_Q4_1: case ST_DTYPE_Q5_1: case ST_DTYPE_Q4_K: case ST_DTYPE_Q5_K:
        off[0] = 0; off[1] = 2; return 2;
    case ST_DTYPE_Q2_K: off[0] = 80; off[1] = 82; return 2;
    case ST_DTYPE_Q3_K: off[0] = 108; return 1;
    case ST_DTYPE_Q6_K: off[0] = 208; return 1;
    default: return 0;
    }
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

/* rows x cols of random blocks; wide: f16 fields any finite half, else
 * ordinary magnitudes (|d| in [0.001, 0.05), as in models). */
static uint8_t *make_rows(int type, int rows, int cols, int wide, uint64_t *s)
{
    const st_dtype_traits_t *tr = st_dtype_traits((uint32_t)type);
    const size_t rb = (size_t)st_dtype_row_bytes((uint32_t)type, (uint64_t)cols);
    const size_t bytes = (rb * (size_t)rows + 255) / 256 * 256;
    uint8_t *d = aligned_alloc(256, bytes);
    int off[2], nf = half_fields(type, off);

    if (!d)
        return NULL;
    for (size_t i = 0; i < bytes; i++)
        d[i] = (uint8_t)rng(s);
    for (size_t b = 0; b < rb * (size_t)rows / tr->block_bytes; b++) {
        uint8_t *blk = d + b * tr->block_bytes;
        for (int f = 0; f < nf; f++) {
            uint16_t h;
            if (wide) {
                do
                    h = (uint16_t)rng(s);
                while (((h >> 10) & 0x1f) == 0x1f);
            } else {
                float v = (0.001f + 0.049f * 0.5f * (unif(s) + 1.0f)) * (unif(s) < 0 ? -1.0f : 1.0f);
                h = st_f32_to_fp16(v);
            }
            put16(blk + off[f], h);
        }
    }
    return d;
}

ST_TEST(f16_conversion_is_exact)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float a = cuq_host_f16((uint16_t)h), b = st_fp16_to_f32((uint16_t)h);
        bad += memcmp(&a, &b, 4) != 0;
    }
    ST_CHECK_MSG(bad == 0, "%d of 65536 halves differ", bad);
}

ST_TEST(every_type_has_a_kernel)
{
    for (int i = 0; i < N_TYPES; i++)
        ST_CHECK_MSG(cuq_host_has(types[i]), "%s", st_dtype_name((uint32_t)types[i]));
    ST_CHECK(!cuq_host_has(ST_DTYPE_F16) && !cuq_host_has(ST_DTYPE_BF16) &&
             !cuq_host_has(ST_DTYPE_F32));
}

ST_TEST(units_match_the_reference)
{
    enum { ROWS = 7, BLOCKS = 37 };   /* 259 or 2072 units per type and scale kind */
    uint64_t s = 101;
    long misaligned0 = cuq_host_misaligned();

    for (int ti = 0; ti < N_TYPES; ti++) {
        const int type = types[ti], qk = (int)st_dtype_traits((uint32_t)type)->block_elems;
        const int cols = qk * BLOCKS;
        const size_t rb = (size_t)st_dtype_row_bytes((uint32_t)type, (uint64_t)cols);
        for (int wide = 0; wide < 2; wide++) {
            uint8_t *d = make_rows(type, ROWS, cols, wide, &s);
            float *ref = malloc((size_t)cols * sizeof(float));
            long units = 0, same = 0;
            double worst = 0;
            ST_REQUIRE(d && ref);
            for (int r = 0; r < ROWS; r++) {
                const uint8_t *row = d + (size_t)r * rb;
                st_dtype_dequantize_row((uint32_t)type, row, ref, (uint64_t)cols);
                for (int u = 0; u < cols / 32; u++, units++) {
                    float w[32];
                    double mx = 0;
                    int eq = 1;
                    cuq_host_unit(type, row, u, w);
                    for (int j = 0; j < 32; j++)
                        mx = fmax(mx, fabs((double)ref[32 * u + j]));
                    for (int j = 0; j < 32; j++) {
                        double e = fabs((double)w[j] - ref[32 * u + j]);
                        eq &= memcmp(&w[j], &ref[32 * u + j], 4) == 0;
                        if (mx > 0)
                            worst = fmax(worst, e / mx);
                    }
                    same += eq;
                }
            }
            ST_CHECK_MSG(same == units, "%s (%s scales): %ld of %ld units not bit-identical "
                         "(worst error %.3g of the unit's largest weight)",
                         st_dtype_name((uint32_t)type), wide ? "wide" : "ordinary", units - same,
                         units, worst);
            fprintf(stderr, "  %-5s %-8s scales: %ld of %ld units bit-identical\n",
                    st_dtype_name((uint32_t)type), wide ? "wide" : "ordinary", same, units);
            free(ref);
            free(d);
        }
    }
    ST_CHECK_MSG(cuq_host_misaligned() == misaligned0, "%ld misaligned loads",
                 cuq_host_misaligned() - misaligned0);
}

ST_TEST(warp_dot_matches_the_reference)
{
    static const int cols32[] = {32, 96, 576, 1056, 4096};   /* 1, 3, 18, 33, 128 units */
    static const int colsK[] = {256, 768, 2816, 4096};       /* 8, 24, 88, 128 units */
    static const int rows_l[] = {1, 3, 7};
    static const int ns[] = {1, 3, 8};
    uint64_t s = 202;
    long misaligned0 = cuq_host_misaligned();

    for (int ti = 0; ti < N_TYPES; ti++) {
        const int type = types[ti], kq = st_dtype_traits((uint32_t)type)->block_elems == 256;
        const int *cl = kq ? colsK : cols32, n_cl = kq ? 4 : 5;
        double worst_l1 = 0, worst_max = 0;
        for (int ci = 0; ci < n_cl; ci++)
            for (int ri = 0; ri < 3; ri++)
                for (int wide = 0; wide < 2; wide++) {
                    const int cols = cl[ci], rows = rows_l[ri], n = ns[(ci + ri + wide) % 3];
                    const size_t rb = (size_t)st_dtype_row_bytes((uint32_t)type, (uint64_t)cols);
                    uint8_t *d = make_rows(type, rows, cols, wide, &s);
                    float *x = malloc((size_t)n * cols * sizeof(float));
                    float *wf = malloc((size_t)cols * sizeof(float));
                    double ymax = 0, emax = 0;
                    ST_REQUIRE(d && x && wf);
                    for (size_t i = 0; i < (size_t)n * cols; i++)
                        x[i] = unif(&s);
                    for (int r = 0; r < rows; r++) {
                        const uint8_t *row = d + (size_t)r * rb;
                        float got[8];
                        st_dtype_dequantize_row((uint32_t)type, row, wf, (uint64_t)cols);
                        cuq_host_warp_row(type, row, cols, x, n, got);
                        for (int t = 0; t < n; t++) {
                            double ref = 0, l1 = 0;
                            for (int j = 0; j < cols; j++) {
                                double p = (double)wf[j] * x[(size_t)t * cols + j];
                                ref += p;
                                l1 += fabs(p);
                            }
                            double e = fabs((double)got[t] - ref);
                            ST_CHECK_MSG(e <= 1e-5 * l1 + 1e-30, "%s cols %d row %d t %d: "
                                         "got %.9g ref %.9g (|w x| sum %.3g)",
                                         st_dtype_name((uint32_t)type), cols, r, t, got[t], ref, l1);
                            if (l1 > 0)
                                worst_l1 = fmax(worst_l1, e / l1);
                            ymax = fmax(ymax, fabs(ref));
                            emax = fmax(emax, e);
                        }
                    }
                    if (!wide && ymax > 0) {
                        ST_CHECK_MSG(emax <= 1e-5 * ymax, "%s cols %d rows %d n %d: error %.3g "
                                     "of max |y|", st_dtype_name((uint32_t)type), cols, rows, n,
                                     emax / ymax);
                        worst_max = fmax(worst_max, emax / ymax);
                    }
                    free(wf);
                    free(x);
                    free(d);
                }
        fprintf(stderr, "  %-5s warp dot: worst error %.2g of sum |w x|, %.2g of max |y| "
                "(ordinary scales)\n", st_dtype_name((uint32_t)type), worst_l1, worst_max);
    }
    ST_CHECK_MSG(cuq_host_misaligned() == misaligned0, "%ld misaligned loads",
                 cuq_host_misaligned() - misaligned0);
}

/* One row against the reference: every unit bit-identical, and the warp's
 * products with n rows of x within 1e-5 of sum |w x|. Returns the worst
 * error relative to sum |w x|, or -1 on a mismatch. */
static double check_row(int type, const uint8_t *row, int cols, const float *x, int n, float *wf)
{
    float got[8], w[32];
    double worst = 0;

    st_dtype_dequantize_row((uint32_t)type, row, wf, (uint64_t)cols);
    for (int u = 0; u < cols / 32; u++) {
        cuq_host_unit(type, row, u, w);
        if (memcmp(w, wf + 32 * u, sizeof w) != 0)
            return -1;
    }
    cuq_host_warp_row(type, row, cols, x, n, got);
    for (int t = 0; t < n; t++) {
        double ref = 0, l1 = 0;
        for (int j = 0; j < cols; j++) {
            double p = (double)wf[j] * x[(size_t)t * cols + j];
            ref += p;
            l1 += fabs(p);
        }
        if (fabs((double)got[t] - ref) > 1e-5 * l1 + 1e-30)
            return -1;
        if (l1 > 0)
            worst = fmax(worst, fabs((double)got[t] - ref) / l1);
    }
    return worst;
}

ST_TEST(real_model_tensors_match_the_reference)
{
    static const char *const cached[] = {"SmolLM2-135M-Instruct.Q4_1.gguf",
                                         "gemma-3-270m-q4_k_m.gguf"};
    const char *env = getenv("STRATA_MODEL"), *home = getenv("HOME");
    char paths[3][512];
    int n_paths = 0, n_files = 0;
    uint64_t s = 303;

    if (env && *env)
        snprintf(paths[n_paths++], sizeof paths[0], "%s", env);
    for (int i = 0; i < 2 && home; i++) {
        snprintf(paths[n_paths], sizeof paths[0], "%s/.cache/strata/%s", home, cached[i]);
        if (!env || strcmp(env, paths[n_paths]) != 0)
            n_paths++;
    }
    for (int pi = 0; pi < n_paths; pi++) {
        long tensors[ST_DTYPE_COUNT_] = {0}, rows_checked = 0, bad = 0;
        double worst = 0;
        st_gguf_t *g = NULL;
        st_error_t err;
        if (access(paths[pi], R_OK) != 0)
            continue;
        ST_REQUIRE(st_gguf_open(paths[pi], &g, &err) == ST_OK);
        n_files++;
        for (uint64_t ti = 0; ti < st_gguf_n_tensors(g); ti++) {
            const st_tensor_t *t = st_gguf_tensor(g, ti);
            const int cols = (int)t->ne[0], n = 3;
            const uint64_t rows = t->nbytes / t->row_bytes;
            if (!cuq_host_has((int)t->type) || t->n_dims < 2 || cols > 65536)
                continue;
            tensors[t->type]++;
            /* first, middle and last rows, each copied to an aligned buffer as
             * on the device */
            uint8_t *row = aligned_alloc(256, (t->row_bytes + 255) / 256 * 256);
            float *x = malloc((size_t)n * cols * sizeof(float)), *wf = malloc((size_t)cols * 4);
            ST_REQUIRE(row && x && wf);
            for (size_t i = 0; i < (size_t)n * cols; i++)
                x[i] = unif(&s);
            const uint64_t pick[3] = {0, rows / 2, rows - 1};
            for (int k = 0; k < 3; k++) {
                memcpy(row, (const uint8_t *)t->data + pick[k] * t->row_bytes, t->row_bytes);
                double e = check_row((int)t->type, row, cols, x, n, wf);
                rows_checked++;
                if (e < 0) {
                    bad++;
                    fprintf(stderr, "  %s: row %llu of %s (%s) differs from the reference\n",
                            paths[pi], (unsigned long long)pick[k], t->name ? t->name : "?",
                            st_dtype_name(t->type));
                } else {
                    worst = fmax(worst, e);
                }
            }
            free(wf);
            free(x);
            free(row);
        }
        ST_CHECK_MSG(bad == 0, "%s: %ld of %ld rows differ", paths[pi], bad, rows_checked);
        fprintf(stderr, "  %s: %ld rows of", paths[pi], rows_checked);
        for (int ty = 0; ty < ST_DTYPE_COUNT_; ty++)
            if (tensors[ty])
                fprintf(stderr, " %ld %s", tensors[ty], st_dtype_name((uint32_t)ty));
        fprintf(stderr, " tensors; worst error %.2g of sum |w x|\n", worst);
        st_gguf_close(g);
    }
    if (!n_files)
        ST_SKIP("no model file (STRATA_MODEL, or scripts/fetch-model.sh's files in ~/.cache/strata)");
}

int main(void)
{
    return st_test_main();
}
