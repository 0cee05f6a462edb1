/*
 * test_kernels_batch.c - batch invariance of the CPU backend.
 *
 * A token's matmul output must not depend on how many tokens share the call
 * or where in the batch it sits: the kernels for different n (streaming
 * gemv, register tiles, AMX tiles) must do the same float operations in the
 * same order per (row, token). Otherwise two identical greedy requests
 * served together give different text, and a pipelined cluster cannot match
 * the single-process engine under concurrency.
 *
 * For every weight dtype with an integer path (and the float ones, and the
 * float-activation kernels of Q5_0/Q5_1/Q2_K..Q5_K), every
 * ISA level this CPU supports and both STRATA_ACT_BITS settings: out(n = 1)
 * of each token equals, byte for byte, the corresponding row of out(n = K)
 * for K in {2, 3, 5, 17, 40, 130}, with the K tokens taken from different
 * offsets of the input. Attention: a token's output alone equals its output
 * inside a prefill chunk of several tokens (same slot, same positions);
 * rmsnorm, rope and swiglu of a row alone equal the row inside a batch.
 * Results may differ between ISA levels; that is not checked here.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt_util.h"
#include "st_test.h"
#include "st_util.h"

#define NT 130

static const int batch_sizes[] = {2, 3, 5, 17, 40, 130};

static int check_matmul(int type, int rows, int cols, uint64_t seed)
{
    uint64_t s = seed;
    st_tensor_t w;
    int fails = 0;
    float *x = malloc((size_t)NT * cols * sizeof *x);
    float *one = malloc((size_t)NT * rows * sizeof *one);
    float *out = malloc((size_t)NT * rows * sizeof *out);

    if (!x || !one || !out || kt_make_weight(&w, type, rows, cols, &s) != 0) {
        free(x);
        free(one);
        free(out);
        return 1;
    }
    kt_fill(x, (size_t)NT * cols, 2.0f, &s);
    for (int t = 0; t < NT; t++)
        x[(size_t)t * cols + (size_t)(kt_rng(&s) % (uint64_t)cols)] *= 20.0f;

    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
        if (!st_cpu_isa_supported((st_cpu_isa_t)isa))
            continue;
        for (int bits = 16; bits >= 8; bits -= 8) {
            st_backend_t be;
            int nth = bits == 16 ? 2 : 1;
            if (kt_open_bits((st_cpu_isa_t)isa, nth, bits, NT, 2048, &be) != 0)
                return fails + 1;
            for (int t = 0; t < NT; t++)
                be.ops->matmul(be.ctx, &w, x + (size_t)t * cols, 1, one + (size_t)t * rows);
            for (size_t k = 0; k < sizeof batch_sizes / sizeof batch_sizes[0]; k++) {
                int K = batch_sizes[k];
                /* a few start offsets, so every token is seen at several
                 * positions inside a tile */
                for (int t0 = 0; t0 + K <= NT; t0 += K > 40 ? NT : 13 + K) {
                    memset(out, 0xff, (size_t)K * rows * sizeof *out);
                    be.ops->matmul(be.ctx, &w, x + (size_t)t0 * cols, K, out);
                    for (int t = 0; t < K; t++) {
                        const float *a = out + (size_t)t * rows, *b = one + (size_t)(t0 + t) * rows;
                        if (memcmp(a, b, (size_t)rows * sizeof *a) == 0)
                            continue;
                        int r = 0;
                        while (memcmp(&a[r], &b[r], sizeof *a) == 0)
                            r++;
                        if (fails < 8)
                            fprintf(stderr, "  %s %dx%d %s act%d: token %d in n=%d (offset %d) "
                                    "row %d: %.9g, alone %.9g\n", st_dtype_name(type), rows,
                                    cols, st_cpu_isa_name((st_cpu_isa_t)isa), bits, t0 + t, K,
                                    t, r, a[r], b[r]);
                        fails++;
                    }
                }
            }
            st_backend_close(&be);
        }
    }
    free((void *)(uintptr_t)w.data);
    free(x);
    free(one);
    free(out);
    return fails;
}

ST_TEST(matmul_batch_invariant_int_types)
{
    static const int types[] = {ST_DTYPE_Q4_0, ST_DTYPE_Q4_1, ST_DTYPE_Q8_0};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        ST_CHECK(check_matmul(types[i], 67, 96, 11 + i) == 0);      /* odd block count */
        ST_CHECK(check_matmul(types[i], 49, 576, 21 + i) == 0);     /* the model's width */
        ST_CHECK(check_matmul(types[i], 40, 1536, 31 + i) == 0);
    }
}

/* Q5_0, Q5_1, Q2_K..Q5_K keep float activations: n <= 4 (AVX2: 2) decodes
 * in registers, larger n from a row decoded into scratch; both must agree
 * bit for bit. Odd row counts, one block per row and several. */
ST_TEST(matmul_batch_invariant_kq_types)
{
    for (int i = 0; i < KT_N_KQ_TYPES; i++) {
        const int t = kt_kq_types[i], be = kt_block_elems(t);
        ST_CHECK_MSG(check_matmul(t, 67, be == 32 ? 96 : 256, 51 + i) == 0, "%s", st_dtype_name(t));
        ST_CHECK_MSG(check_matmul(t, 49, 1536, 61 + i) == 0, "%s", st_dtype_name(t));
    }
}

ST_TEST(matmul_batch_invariant_float_types)
{
    static const int types[] = {ST_DTYPE_F32, ST_DTYPE_F16, ST_DTYPE_BF16};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        ST_CHECK(check_matmul(types[i], 33, 96, 41 + i) == 0);
}

/* Attention: tokens at positions p0..p0+K-1 of one slot as one chunk, then
 * each alone, against the same cache; outputs must match byte for byte. */
static int check_attention(int head_dim, int n_head, int n_head_kv, uint64_t seed)
{
    const int n_ctx = 300, kvw = n_head_kv * head_dim, qw = n_head * head_dim;
    enum { K = 130 };
    const int p0 = 151;
    uint64_t s = seed;
    int fails = 0;
    float *kc = malloc((size_t)2 * n_ctx * kvw * sizeof *kc);
    float *vc = malloc((size_t)2 * n_ctx * kvw * sizeof *vc);
    float *q = malloc((size_t)K * qw * sizeof *q);
    float *chunk = malloc((size_t)K * qw * sizeof *chunk);
    float *alone = malloc((size_t)qw * sizeof *alone);
    int32_t slot[K], pos[K];

    if (!kc || !vc || !q || !chunk || !alone)
        return 1;
    kt_fill(kc, (size_t)2 * n_ctx * kvw, 1.0f, &s);
    kt_fill(vc, (size_t)2 * n_ctx * kvw, 1.0f, &s);
    kt_fill(q, (size_t)K * qw, 1.0f, &s);
    for (int i = 0; i < K; i++) {
        slot[i] = 1;
        pos[i] = p0 + i;
    }
    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
        if (!st_cpu_isa_supported((st_cpu_isa_t)isa))
            continue;
        for (int nth = 1; nth <= 2; nth++) {
            st_backend_t be;
            if (kt_open((st_cpu_isa_t)isa, nth, K, 2048, &be) != 0)
                return fails + 1;
            st_attn_args_t a = { .n_tokens = K, .n_head = n_head, .n_head_kv = n_head_kv,
                                 .head_dim = head_dim, .q = q, .k_cache = kc, .v_cache = vc,
                                 .n_ctx = n_ctx, .slot = slot, .pos = pos,
                                 .scale = 1.0f / sqrtf((float)head_dim), .out = chunk };
            be.ops->attention(be.ctx, &a);
            for (int i = 0; i < K; i++) {
                st_attn_args_t b = a;
                b.n_tokens = 1;
                b.q = q + (size_t)i * qw;
                b.slot = &slot[i];
                b.pos = &pos[i];
                b.out = alone;
                be.ops->attention(be.ctx, &b);
                if (memcmp(alone, chunk + (size_t)i * qw, (size_t)qw * sizeof *alone) != 0) {
                    if (fails < 5)
                        fprintf(stderr, "  attention hd%d %d/%d heads %s x%d: token %d of the "
                                "chunk differs from it alone\n", head_dim, n_head, n_head_kv,
                                st_cpu_isa_name((st_cpu_isa_t)isa), nth, i);
                    fails++;
                }
            }
            st_backend_close(&be);
        }
    }
    free(kc);
    free(vc);
    free(q);
    free(chunk);
    free(alone);
    return fails;
}

ST_TEST(attention_batch_invariant)
{
    ST_CHECK(check_attention(64, 9, 3, 5) == 0);    /* the model's shape */
    ST_CHECK(check_attention(48, 4, 4, 6) == 0);    /* generic path on AVX-512 too */
    ST_CHECK(check_attention(40, 6, 2, 7) == 0);
}

/* rmsnorm, rope and swiglu are per row / per element; check that a row's
 * result alone equals its result inside a batch, including rope beyond
 * max_batch (sin/cos then come from the stack, not the cached table). */
static int check_rowwise(st_cpu_isa_t isa, uint32_t max_batch)
{
    enum { N = 130, HEADS = 9, HD = 64, DIM = HEADS * HD };
    uint64_t s = 99;
    st_tensor_t w;
    st_backend_t be;
    int fails = 0;
    int32_t pos[N];
    float *x = malloc((size_t)N * DIM * sizeof *x), *u = malloc((size_t)N * DIM * sizeof *u);
    float *batch = malloc((size_t)N * DIM * sizeof *batch), *one = malloc(DIM * sizeof *one);

    if (!x || !u || !batch || !one || kt_make_weight(&w, ST_DTYPE_F32, 1, DIM, &s) != 0)
        return 1;
    kt_fill(x, (size_t)N * DIM, 3.0f, &s);
    kt_fill(u, (size_t)N * DIM, 3.0f, &s);
    for (int i = 0; i < N; i++)
        pos[i] = 7 + 3 * i;
    if (kt_open(isa, 2, max_batch, 2048, &be) != 0)
        return 1;
    for (int op = 0; op < 3; op++) {
        memcpy(batch, x, (size_t)N * DIM * sizeof *x);
        if (op == 0)
            be.ops->rmsnorm(be.ctx, x, &w, 1e-5f, N, DIM, batch);
        else if (op == 1)
            be.ops->rope(be.ctx, batch, N, HEADS, HD, HD, pos, 10000.0f, 1.0f);
        else
            be.ops->swiglu(be.ctx, x, u, (size_t)N * DIM, batch);
        for (int i = 0; i < N; i++) {
            const float *xi = x + (size_t)i * DIM;
            memcpy(one, xi, DIM * sizeof *one);
            if (op == 0)
                be.ops->rmsnorm(be.ctx, xi, &w, 1e-5f, 1, DIM, one);
            else if (op == 1)
                be.ops->rope(be.ctx, one, 1, HEADS, HD, HD, &pos[i], 10000.0f, 1.0f);
            else
                be.ops->swiglu(be.ctx, xi, u + (size_t)i * DIM, DIM, one);
            if (memcmp(one, batch + (size_t)i * DIM, DIM * sizeof *one) != 0) {
                if (fails < 5)
                    fprintf(stderr, "  %s %s max_batch %u: row %d alone differs from the batch\n",
                            op == 0 ? "rmsnorm" : op == 1 ? "rope" : "swiglu",
                            st_cpu_isa_name(isa), max_batch, i);
                fails++;
            }
        }
    }
    st_backend_close(&be);
    free((void *)(uintptr_t)w.data);
    free(x);
    free(u);
    free(batch);
    free(one);
    return fails;
}

ST_TEST(rowwise_ops_batch_invariant)
{
    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
        if (!st_cpu_isa_supported((st_cpu_isa_t)isa))
            continue;
        ST_CHECK(check_rowwise((st_cpu_isa_t)isa, 130) == 0);
        ST_CHECK(check_rowwise((st_cpu_isa_t)isa, 64) == 0);
    }
}

int main(void)
{
    return st_test_main();
}
