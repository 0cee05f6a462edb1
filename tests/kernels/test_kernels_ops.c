/*
 * test_kernels_ops.c - workbench for the CPU backend's other ops (get_rows,
 * rmsnorm, rope, kv_store, attention, swiglu, geglu, add) against float64
 * references, on every supported ISA level and 1/2/3 threads, plus the
 * registry, the ISA override, the thread pool and the bandwidth probe.
 *
 * Tolerances: these ops are float end to end. rmsnorm, attention and the
 * dots inside are sums of at most a few thousand terms: 1e-5 relative to
 * the magnitude of the terms covers float accumulation. rope is held to
 * 1e-5 of the vector's magnitude at positions up to 8000 (angles are
 * computed in double). swiglu uses a polynomial exp (~2 ulp) and a divide:
 * 1e-5 relative.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../kernels/cpu/pool.h"
#include "kt_util.h"
#include "st_test.h"
#include "st_util.h"

#define FOR_EACH_BACKEND(be, isa, nth)                                              \
    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++)                               \
        if (st_cpu_isa_supported((st_cpu_isa_t)isa))                                \
            for (int nth = 1; nth <= 3; nth++)                                      \
                for (st_backend_t be, *be##_once = kt_open((st_cpu_isa_t)isa, nth, 64, 4096, &be) == 0 ? &be : NULL; \
                     be##_once; st_backend_close(&be), be##_once = NULL)

static st_tensor_t f32_tensor(const float *d, int n)
{
    st_tensor_t t = { .name = "norm", .type = ST_DTYPE_F32, .n_dims = 1, .ne = {(uint64_t)n, 1, 1, 1},
                      .row_bytes = (uint64_t)n * 4, .nbytes = (uint64_t)n * 4, .data = d };
    return t;
}

ST_TEST(registry_and_isa_override)
{
    const char *const *names = st_backend_names();
    st_backend_t be;
    st_error_t err = {{0}};
    st_backend_params_t p = { .size = sizeof p, .n_threads = 1 };

    ST_REQUIRE(names && names[0] && !strcmp(names[0], "cpu"));
    ST_CHECK(st_backend_find("cpu") == st_backend_cpu_ops());
    ST_CHECK(st_backend_find("nope") == NULL);
    ST_CHECK(st_backend_open("nope", &p, &be, &err) == ST_ERR_NOT_FOUND);
    ST_CHECK(strstr(err.msg, "nope") != NULL);

    setenv("STRATA_CPU_ISA", "sse9", 1);
    ST_CHECK(st_backend_open("cpu", &p, &be, &err) == ST_ERR_INVALID);
    unsetenv("STRATA_CPU_ISA");

    p.size = 2;   /* too small to hold n_threads */
    ST_CHECK(st_backend_open("cpu", &p, &be, &err) == ST_ERR_INVALID);
    p.size = sizeof p;

    ST_REQUIRE(st_backend_open("cpu", &p, &be, &err) == ST_OK);
    ST_CHECK(strstr(be.ops->describe(be.ctx), st_cpu_isa_name(st_cpu_isa_best())) != NULL);
    ST_CHECK(strstr(be.ops->describe(be.ctx), "1 thread") != NULL);
    st_backend_close(&be);
    ST_CHECK(be.ops == NULL);

    ST_CHECK(st_cpu_isa_supported(ST_CPU_ISA_SCALAR));
    ST_CHECK(strcmp(st_cpu_isa_string(), st_cpu_isa_name(st_cpu_isa_best())) == 0);
    fprintf(stderr, "  best isa: %s\n", st_cpu_isa_name(st_cpu_isa_best()));
}

ST_TEST(memory_ops)
{
    st_backend_t be;
    ST_REQUIRE(kt_open(ST_CPU_ISA_SCALAR, 1, 4, 64, &be) == 0);
    float *d = be.ops->alloc(be.ctx, 100 * sizeof(float));
    float h[100], back[100];
    ST_REQUIRE(d != NULL);
    ST_CHECK(((uintptr_t)d & 63) == 0);
    for (int i = 0; i < 100; i++) {
        ST_CHECK(d[i] == 0.0f);
        h[i] = (float)i;
    }
    ST_CHECK(be.ops->to_device(be.ctx, d, h, sizeof h) == ST_OK);
    ST_CHECK(be.ops->to_host(be.ctx, back, d, sizeof back) == ST_OK);
    ST_CHECK(memcmp(h, back, sizeof h) == 0);
    ST_CHECK(be.ops->sync(be.ctx) == ST_OK);
    be.ops->free(be.ctx, d);
    st_backend_close(&be);
}

ST_TEST(get_rows_matches_dequantize)
{
    static const int types[] = {ST_DTYPE_Q8_0, ST_DTYPE_Q4_1, ST_DTYPE_F16, ST_DTYPE_BF16,
                                ST_DTYPE_F32, ST_DTYPE_Q6_K, ST_DTYPE_Q5_0, ST_DTYPE_Q5_1,
                                ST_DTYPE_Q2_K, ST_DTYPE_Q3_K, ST_DTYPE_Q4_K, ST_DTYPE_Q5_K};
    uint64_t s = 7;
    for (size_t ti = 0; ti < ST_ARRAY_SIZE(types); ti++) {
        st_tensor_t emb;
        const int dim = 512, vocab = 50;
        int32_t ids[5] = {0, 49, 3, 3, 17};
        float out[5 * 512], want[512];
        ST_REQUIRE(kt_make_weight(&emb, types[ti], vocab, dim, &s) == 0);
        FOR_EACH_BACKEND(be, isa, nth) {
            be.ops->get_rows(be.ctx, &emb, ids, 5, out);
            for (int i = 0; i < 5; i++) {
                st_dtype_dequantize_row(emb.type, (const uint8_t *)emb.data + (size_t)ids[i] * emb.row_bytes,
                                        want, dim);
                ST_CHECK_MSG(memcmp(want, out + i * dim, sizeof want) == 0, "%s id %d",
                             st_dtype_name(types[ti]), ids[i]);
            }
        }
        free((void *)emb.data);
    }
}

ST_TEST(rmsnorm_vs_double)
{
    static const int dims[] = {1, 17, 576, 1000};
    static const int ns[] = {1, 3, 70};
    uint64_t s = 11;
    for (size_t di = 0; di < ST_ARRAY_SIZE(dims); di++)
        for (size_t ni = 0; ni < ST_ARRAY_SIZE(ns); ni++) {
            int dim = dims[di], n = ns[ni];
            float *x = malloc((size_t)n * dim * 4), *w = malloc((size_t)dim * 4);
            float *out = malloc((size_t)n * dim * 4), *first = malloc((size_t)n * dim * 4);
            ST_REQUIRE(x && w && out && first);
            kt_fill(x, (size_t)n * dim, 3.0f, &s);
            kt_fill(w, (size_t)dim, 1.5f, &s);
            st_tensor_t wt = f32_tensor(w, dim);
            FOR_EACH_BACKEND(be, isa, nth) {
                be.ops->rmsnorm(be.ctx, x, &wt, 1e-5f, n, dim, out);
                for (int t = 0; t < n; t++) {
                    double ss = 0;
                    for (int i = 0; i < dim; i++)
                        ss += (double)x[t * dim + i] * x[t * dim + i];
                    double sc = 1.0 / sqrt(ss / dim + 1e-5);
                    for (int i = 0; i < dim; i++) {
                        double want = x[t * dim + i] * sc * w[i];
                        ST_CHECK_NEAR(out[t * dim + i], want, 1e-5 * fabs(want) + 1e-30);
                    }
                }
                if (nth == 1)
                    memcpy(first, out, (size_t)n * dim * 4);
                else
                    ST_CHECK(memcmp(first, out, (size_t)n * dim * 4) == 0);
            }
            free(x); free(w); free(out); free(first);
        }
}

static void rope_ref(double *v, int n_heads, int head_dim, int rope_dim, int pos, double theta,
                     double fs)
{
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < rope_dim / 2; j++) {
            double a = pos * fs * pow(theta, -2.0 * j / rope_dim);
            double *p = v + h * head_dim + 2 * j;
            double x0 = p[0], x1 = p[1];
            p[0] = x0 * cos(a) - x1 * sin(a);
            p[1] = x0 * sin(a) + x1 * cos(a);
        }
}

ST_TEST(rope_vs_double)
{
    struct { int n, heads, hd, rd; float theta, fs; } cases[] = {
        {1, 9, 64, 64, 10000.0f, 1.0f},
        {13, 3, 64, 64, 100000.0f, 1.0f},
        {5, 4, 128, 64, 500000.0f, 0.25f},   /* partial rotary dims */
        {70, 2, 256, 256, 10000.0f, 1.0f},   /* n > max_batch: uncached, 128 pairs */
    };
    uint64_t s = 23;
    for (size_t ci = 0; ci < ST_ARRAY_SIZE(cases); ci++) {
        int n = cases[ci].n, stride = cases[ci].heads * cases[ci].hd;
        float *x0 = malloc((size_t)n * stride * 4), *x = malloc((size_t)n * stride * 4);
        float *first = malloc((size_t)n * stride * 4);
        double *ref = malloc((size_t)n * stride * 8);
        int32_t *pos = malloc((size_t)n * 4);
        ST_REQUIRE(x0 && x && first && ref && pos);
        kt_fill(x0, (size_t)n * stride, 2.0f, &s);
        for (int t = 0; t < n; t++)
            pos[t] = t == 0 ? 0 : (int32_t)(kt_rng(&s) % 8000);
        for (int i = 0; i < n * stride; i++)
            ref[i] = x0[i];
        for (int t = 0; t < n; t++)
            rope_ref(ref + (size_t)t * stride, cases[ci].heads, cases[ci].hd, cases[ci].rd, pos[t],
                     cases[ci].theta, cases[ci].fs);
        FOR_EACH_BACKEND(be, isa, nth) {
            /* q then k of a layer: same positions, the second call may use
             * the cached table; the first head of x0 stands in for k. */
            float *k1 = malloc((size_t)n * cases[ci].hd * 4);
            ST_REQUIRE(k1);
            for (int t = 0; t < n; t++)
                memcpy(k1 + (size_t)t * cases[ci].hd, x0 + (size_t)t * stride, (size_t)cases[ci].hd * 4);
            memcpy(x, x0, (size_t)n * stride * 4);
            be.ops->rope(be.ctx, x, n, cases[ci].heads, cases[ci].hd, cases[ci].rd, pos,
                         cases[ci].theta, cases[ci].fs);
            be.ops->rope(be.ctx, k1, n, 1, cases[ci].hd, cases[ci].rd, pos, cases[ci].theta,
                         cases[ci].fs);
            for (int t = 0; t < n; t++)
                ST_CHECK(memcmp(k1 + (size_t)t * cases[ci].hd, x + (size_t)t * stride,
                                (size_t)cases[ci].hd * 4) == 0);
            free(k1);
            for (int t = 0; t < n; t++)
                for (int h = 0; h < cases[ci].heads; h++) {
                    const float *got = x + t * stride + h * cases[ci].hd;
                    const double *want = ref + t * stride + h * cases[ci].hd;
                    double norm = 0;
                    for (int i = 0; i < cases[ci].hd; i++)
                        norm += want[i] * want[i];
                    for (int i = 0; i < cases[ci].hd; i++)
                        ST_CHECK_NEAR(got[i], want[i], 1e-5 * sqrt(norm));
                }
            if (nth == 1)
                memcpy(first, x, (size_t)n * stride * 4);
            else
                ST_CHECK(memcmp(first, x, (size_t)n * stride * 4) == 0);
        }
        free(x0); free(x); free(first); free(ref); free(pos);
    }
}

/* Causal GQA attention with several slots, positions across the 64-position
 * blocks of the online softmax, against a two-pass float64 softmax. */
static void attention_case(int *st_failed_, int n_head, int n_kv, int hd)
{
    const int kv_dim = n_kv * hd, n_ctx = 200, n_slots = 3;
    const int n = 7;
    int32_t slot[7] = {0, 2, 2, 1, 0, 2, 1}, pos[7] = {0, 63, 64, 129, 199, 150, 5};
    uint64_t s = 31;
    size_t cache_n = (size_t)n_slots * n_ctx * kv_dim;
    float *kc = calloc(cache_n, 4), *vc = calloc(cache_n, 4);
    float *q = malloc((size_t)n * n_head * hd * 4), *out = malloc((size_t)n * n_head * hd * 4);
    float *first = malloc((size_t)n * n_head * hd * 4);
    float *k = malloc((size_t)n * kv_dim * 4), *v = malloc((size_t)n * kv_dim * 4);
    ST_REQUIRE(kc && vc && q && out && first && k && v);
    kt_fill(kc, cache_n, 1.0f, &s);
    kt_fill(vc, cache_n, 1.0f, &s);
    kt_fill(q, (size_t)n * n_head * hd, 1.0f, &s);
    kt_fill(k, (size_t)n * kv_dim, 1.0f, &s);
    kt_fill(v, (size_t)n * kv_dim, 1.0f, &s);

    FOR_EACH_BACKEND(be, isa, nth) {
        be.ops->kv_store(be.ctx, k, v, n, kv_dim, slot, pos, kc, vc, n_ctx, ST_DTYPE_F32);
        for (int t = 0; t < n; t++) {
            size_t off = ((size_t)slot[t] * n_ctx + pos[t]) * kv_dim;
            ST_CHECK(memcmp(kc + off, k + (size_t)t * kv_dim, (size_t)kv_dim * 4) == 0);
            ST_CHECK(memcmp(vc + off, v + (size_t)t * kv_dim, (size_t)kv_dim * 4) == 0);
        }
        st_attn_args_t a = { .n_tokens = n, .n_head = n_head, .n_head_kv = n_kv, .head_dim = hd,
                             .q = q, .k_cache = kc, .v_cache = vc, .n_ctx = n_ctx, .slot = slot,
                             .pos = pos, .scale = 1.0f / sqrtf((float)hd), .out = out };
        be.ops->attention(be.ctx, &a);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < n_head; h++) {
                int g = h / (n_head / n_kv);
                const float *qh = q + ((size_t)t * n_head + h) * hd;
                const float *kb = kc + (size_t)slot[t] * n_ctx * kv_dim + g * hd;
                const float *vb = vc + (size_t)slot[t] * n_ctx * kv_dim + g * hd;
                double sc[200], mx = -1e300, sum = 0, o[256] = {0}, mag[256] = {0};
                for (int j = 0; j <= pos[t]; j++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += (double)qh[i] * kb[(size_t)j * kv_dim + i];
                    sc[j] = d * (1.0f / sqrtf((float)hd));
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= pos[t]; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int j = 0; j <= pos[t]; j++)
                    for (int i = 0; i < hd; i++) {
                        o[i] += sc[j] / sum * vb[(size_t)j * kv_dim + i];
                        mag[i] += sc[j] / sum * fabs(vb[(size_t)j * kv_dim + i]);
                    }
                const float *got = out + ((size_t)t * n_head + h) * hd;
                for (int i = 0; i < hd; i++)
                    ST_CHECK_NEAR(got[i], o[i], 1e-5 * mag[i] + 1e-7);
            }
        if (nth == 1)
            memcpy(first, out, (size_t)n * n_head * hd * 4);
        else
            ST_CHECK(memcmp(first, out, (size_t)n * n_head * hd * 4) == 0);
    }
    free(kc); free(vc); free(q); free(out); free(first); free(k); free(v);
}

/* The model's GQA shape (SIMD head path), a wider head, and a head size
 * the SIMD path does not take (generic path), without grouping. */
ST_TEST(kv_store_and_attention_vs_double)
{
    attention_case(st_failed_, 9, 3, 64);
    attention_case(st_failed_, 4, 2, 128);
    attention_case(st_failed_, 4, 1, 256);   /* Gemma 3 */
    attention_case(st_failed_, 6, 6, 40);
}

ST_TEST(swiglu_geglu_and_add_vs_double)
{
    static const size_t ns[] = {1, 15, 1536, 100003};
    uint64_t s = 41;
    for (size_t ni = 0; ni < ST_ARRAY_SIZE(ns); ni++) {
        size_t n = ns[ni];
        float *g = malloc(n * 4), *u = malloc(n * 4), *out = malloc(n * 4), *x = malloc(n * 4);
        ST_REQUIRE(g && u && out && x);
        kt_fill(g, n, 12.0f, &s);
        kt_fill(u, n, 2.0f, &s);
        g[0] = -95.0f;   /* exp(-g) past float range: silu must go to -0, not NaN */
        FOR_EACH_BACKEND(be, isa, nth) {
            be.ops->swiglu(be.ctx, g, u, n, out);
            for (size_t i = 0; i < n; i++) {
                double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
                ST_CHECK_NEAR(out[i], want, 1e-5 * fabs(want) + 1e-30);
            }
            /* GeGLU, tanh form (HF's gelu_pytorch_tanh): 0.5 x (1 + tanh t)
             * = x / (1 + e^-2t), taken in double in the second form, which
             * does not cancel where tanh t nears -1. Far in that tail the
             * output is below 1e-9 of |up| and only that absolute bound
             * holds (the polynomial exp is relative to its clamped input). */
            be.ops->geglu(be.ctx, g, u, n, out);
            for (size_t i = 0; i < n; i++) {
                double xg = g[i], t = 0.7978845608028654 * (xg + 0.044715 * xg * xg * xg);
                double want = xg / (1.0 + exp(-2.0 * t)) * u[i];
                ST_CHECK_NEAR(out[i], want, 1e-5 * fabs(want) + 1e-9 * fabs(u[i]) + 1e-30);
            }
            memcpy(x, g, n * 4);
            be.ops->add(be.ctx, x, u, n);
            for (size_t i = 0; i < n; i++)
                ST_CHECK(x[i] == g[i] + u[i]);
        }
        free(g); free(u); free(out); free(x);
    }
}

/* ---- the pool ---- */

typedef struct pool_probe {
    _Atomic int calls;
    _Atomic int ith_mask;
    _Atomic int dup;         /* an ith seen twice */
    _Atomic int nth_bad;     /* calls that saw another nth than asked */
    int         want;
} pool_probe_t;

/* The caller's share waits (up to 1 s) for the workers to arrive, so a
 * round only completes short when a worker could not be scheduled at all. */
static void pool_probe_fn(void *arg, int ith, int nth)
{
    pool_probe_t *p = arg;
    if (atomic_fetch_or(&p->ith_mask, 1 << ith) & (1 << ith))
        atomic_fetch_add(&p->dup, 1);
    if (nth != p->want)
        atomic_fetch_add(&p->nth_bad, 1);
    atomic_fetch_add(&p->calls, 1);
    if (ith == 0) {
        double t0 = st_now_s();
        while (atomic_load(&p->calls) < p->want && st_now_s() - t0 < 1.0)
            ;
    }
}

ST_TEST(pool_fork_join)
{
    st_pool_t *pool;
    st_error_t err;
    int full = 0;
    ST_REQUIRE(st_pool_create(3, &pool, &err) == ST_OK);
    ST_CHECK(st_pool_size(pool) == 3);
    for (int round = 0; round < 400; round++) {
        pool_probe_t p = {0};
        int nth = round % 4;   /* 0 = all */
        p.want = nth == 0 ? 3 : nth;
        st_pool_run(pool, pool_probe_fn, &p, nth);
        ST_REQUIRE(atomic_load(&p.nth_bad) == 0 && atomic_load(&p.dup) == 0);
        ST_REQUIRE(atomic_load(&p.ith_mask) & 1);              /* the caller always runs */
        ST_REQUIRE(atomic_load(&p.calls) <= p.want);
        ST_REQUIRE(atomic_load(&p.ith_mask) < (1 << p.want));  /* ith < nth */
        full += atomic_load(&p.calls) == p.want;
        if (round % 100 == 0)
            usleep(3000);   /* let workers fall asleep, then wake them */
    }
    /* joining is best effort, but given a second every round fills up */
    ST_CHECK_MSG(full == 400, "%d of 400 rounds ran on all threads", full);
    st_pool_destroy(pool);
    ST_CHECK(st_pool_create(0, &pool, &err) == ST_ERR_INVALID);
}

static double proc_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* An idle backend must not burn CPU: workers spin ~100 us, then sleep. */
ST_TEST(idle_backend_uses_no_cpu)
{
    st_backend_t be;
    float x[64] = {0}, w[64 * 64] = {0}, out[64];
    st_tensor_t wt = { .name = "w", .type = ST_DTYPE_F32, .n_dims = 2, .ne = {64, 64, 1, 1},
                       .row_bytes = 256, .nbytes = sizeof w, .data = w };
    ST_REQUIRE(kt_open(st_cpu_isa_best(), 3, 4, 64, &be) == 0);
    be.ops->matmul(be.ctx, &wt, x, 1, out);
    usleep(50 * 1000);
    double c0 = proc_cpu_s(), t0 = st_now_s();
    usleep(300 * 1000);
    double used = proc_cpu_s() - c0, wall = st_now_s() - t0;
    fprintf(stderr, "  idle: %.4f s CPU over %.3f s wall with 3 threads\n", used, wall);
    ST_CHECK(used < 0.03);
    st_backend_close(&be);
}

ST_TEST(read_bandwidth_probe)
{
    double g1 = st_cpu_read_bandwidth_gbps(16u << 20, 1);
    double g2 = st_cpu_read_bandwidth_gbps(16u << 20, 2);
    fprintf(stderr, "  read bandwidth over 16 MiB: %.1f GB/s (1 thread), %.1f GB/s (2)\n", g1, g2);
    ST_CHECK(g1 > 0.1 && g2 > 0.1);
    ST_CHECK(st_cpu_read_bandwidth_gbps(16, 4) < 0);
}

int main(void)
{
    return st_test_main();
}
