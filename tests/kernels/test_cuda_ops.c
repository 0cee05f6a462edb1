/*
 * test_cuda_ops.c - every op of the CUDA backend against the CPU backend on
 * random inputs with odd sizes (ggml's test-backend-ops habit): matmul on
 * both paths (mat-vec for <= 8 rows, cuBLAS above) and every weight type,
 * embedding rows, RMSNorm, RoPE, KV store and attention with and without
 * sequence splitting, SwiGLU and add.
 *
 * Quantized weights run in both device forms: their own blocks (the
 * quantized mat-vec, and dequantized bf16 tiles for cuBLAS) and bf16 from
 * upload (STRATA_CUDA_WEIGHTS=bf16); the quantized mat-vec is also held to
 * 1e-5 of the exact product, and quantized embedding rows to bit equality
 * with the CPU's.
 *
 * Needs a GPU: without one (or in a build without CUDA) each test skips
 * with the reason. bench/gpu/check.sh runs it on the GPU machine.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kt_util.h"
#include "st_test.h"
#include "st_util.h"

#ifdef STRATA_HAVE_CUDA
#include "st_cuda.h"
#include "st_gguf.h"

typedef struct pair {
    st_backend_t cpu, gpu;
} pair_t;

#define NEED_GPU(pp, mb, mc)                                                               \
    do {                                                                                   \
        st_error_t e_;                                                                     \
        int n_;                                                                            \
        if (st_cuda_device_count(&n_, &e_) != ST_OK)                                       \
            ST_SKIP("no CUDA device: %s", e_.msg);                                         \
        ST_REQUIRE(open_pair(pp, mb, mc) == 0);                                            \
    } while (0)

static int open_pair(pair_t *pp, uint32_t max_batch, uint32_t max_cols)
{
    st_backend_params_t p = {.size = sizeof p, .n_threads = 2, .max_batch = max_batch,
                             .max_cols = max_cols};
    st_error_t err;
    if (st_backend_open("cpu", &p, &pp->cpu, &err) != ST_OK) {
        fprintf(stderr, "  cpu: %s\n", err.msg);
        return -1;
    }
    if (st_backend_open("cuda", &p, &pp->gpu, &err) != ST_OK) {
        fprintf(stderr, "  cuda: %s\n", err.msg);
        st_backend_close(&pp->cpu);
        return -1;
    }
    return 0;
}

static void close_pair(pair_t *pp)
{
    st_backend_close(&pp->cpu);
    st_backend_close(&pp->gpu);
}

/* Backend copy of n host floats. */
static float *put(st_backend_t *b, const float *h, size_t n)
{
    float *d = b->ops->alloc(b->ctx, n * sizeof(float));
    if (d && b->ops->to_device(b->ctx, d, h, n * sizeof(float)) != ST_OK) {
        b->ops->free(b->ctx, d);
        return NULL;
    }
    return d;
}

static int get(st_backend_t *b, float *h, const float *d, size_t n)
{
    return b->ops->to_host(b->ctx, h, d, n * sizeof(float)) == ST_OK ? 0 : -1;
}

/* max |a - b| / max |b| */
static double rel(const float *a, const float *b, size_t n)
{
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / m;
}

/* max over t, r of |got - ref| / max |ref|, ref in double from the
 * reference dequantization of W (st_dtype_dequantize_row) and f32 x. */
static double rel_exact(const float *got, const st_tensor_t *t, const float *x, int n)
{
    const int cols = (int)t->ne[0], rows = (int)t->ne[1];
    float *wf = malloc((size_t)cols * sizeof(float));
    double d = 0, m = 1e-30;
    if (!wf)
        return 1e30;
    for (int r = 0; r < rows; r++) {
        st_dtype_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * t->row_bytes, wf,
                                (uint64_t)cols);
        for (int i = 0; i < n; i++) {
            double y = 0;
            for (int j = 0; j < cols; j++)
                y += (double)wf[j] * x[(size_t)i * cols + j];
            d = fmax(d, fabs((double)got[(size_t)i * rows + r] - y));
            m = fmax(m, fabs(y));
        }
    }
    free(wf);
    return d / m;
}
#endif

ST_TEST(cuda_matmul_all_types_both_paths)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    static const int types[] = {ST_DTYPE_BF16, ST_DTYPE_F16, ST_DTYPE_F32, ST_DTYPE_Q8_0,
                                ST_DTYPE_Q4_0, ST_DTYPE_Q4_1, ST_DTYPE_Q6_K, ST_DTYPE_Q5_0,
                                ST_DTYPE_Q5_1, ST_DTYPE_Q2_K, ST_DTYPE_Q3_K, ST_DTYPE_Q4_K,
                                ST_DTYPE_Q5_K};
    static const int ns[] = {1, 3, 8, 9, 37};
    enum { ROWS = 67, NMAX = 37, CMAX = 2816 };
    /* Quantized weights twice: in their own blocks (the default: the
     * quantized mat-vec for <= 8 rows, dequantized bf16 tiles and cuBLAS
     * above), and dequantized to bf16 on upload (STRATA_CUDA_WEIGHTS=bf16). */
    for (int form = 0; form < 2; form++) {
        pair_t pp;
        uint64_t s = 7;
        if (form)
            setenv("STRATA_CUDA_WEIGHTS", "bf16", 1);
        {
            st_error_t e_;
            int n_;
            if (st_cuda_device_count(&n_, &e_) != ST_OK) {
                unsetenv("STRATA_CUDA_WEIGHTS");
                ST_SKIP("no CUDA device: %s", e_.msg);
            }
            int rc = open_pair(&pp, 64, CMAX);
            unsetenv("STRATA_CUDA_WEIGHTS");
            ST_REQUIRE(rc == 0);
        }
        /* Tensor views must outlive the backend (weights are keyed by them). */
        st_tensor_t w[ST_ARRAY_SIZE(types)][2];
        float *x = malloc((size_t)NMAX * CMAX * 4), *ref = malloc((size_t)NMAX * ROWS * 4);
        float *got = malloc((size_t)NMAX * ROWS * 4);
        ST_REQUIRE(x && ref && got);
        for (size_t ti = 0; ti < ST_ARRAY_SIZE(types); ti++)
            for (int shape = 0; shape < 2; shape++) {
                /* 256 columns suit every block size; shape 1: 100 (not a
                 * multiple of 8) takes the 16-bit mat-vec's scalar path for
                 * plain floats; 1056 (33 blocks: lanes with one and two
                 * units) or 2816 (11 super-blocks, 88 units) for quantized. */
                int plain = types[ti] == ST_DTYPE_BF16 || types[ti] == ST_DTYPE_F16 ||
                            types[ti] == ST_DTYPE_F32;
                int cols = shape == 0 ? 256 : plain ? 100 : kt_block_elems(types[ti]) == 256 ? 2816 : 1056;
                ST_REQUIRE(kt_make_weight(&w[ti][shape], types[ti], ROWS, cols, &s) == 0);
            }
        for (size_t ti = 0; ti < ST_ARRAY_SIZE(types); ti++)
            for (int shape = 0; shape < 2; shape++)
                for (size_t ni = 0; ni < ST_ARRAY_SIZE(ns); ni++) {
                    const st_tensor_t *t = &w[ti][shape];
                    int n = ns[ni], cols = (int)t->ne[0], rows = (int)t->ne[1];
                    int quant = kt_block_elems(types[ti]) > 1;
                    kt_fill(x, (size_t)n * cols, 1.0f, &s);
                    float *xc = put(&pp.cpu, x, (size_t)n * cols), *xg = put(&pp.gpu, x, (size_t)n * cols);
                    float *oc = pp.cpu.ops->alloc(pp.cpu.ctx, (size_t)n * rows * 4);
                    float *og = pp.gpu.ops->alloc(pp.gpu.ctx, (size_t)n * rows * 4);
                    ST_REQUIRE(xc && xg && oc && og);
                    pp.cpu.ops->matmul(pp.cpu.ctx, t, xc, n, oc);
                    pp.gpu.ops->matmul(pp.gpu.ctx, t, xg, n, og);
                    ST_REQUIRE(get(&pp.cpu, ref, oc, (size_t)n * rows) == 0);
                    ST_REQUIRE(get(&pp.gpu, got, og, (size_t)n * rows) == 0);
                    /* bf16 rounding of activations (cuBLAS path) or of f32
                     * weights bounds the difference; layout bugs give O(1). */
                    double r = rel(got, ref, (size_t)n * rows);
                    ST_CHECK_MSG(r < 2e-2, "%s cols %d n %d form %d: rel %.3g",
                                 st_dtype_name((uint32_t)types[ti]), cols, n, form, r);
                    /* The quantized mat-vec reads exact weights and f32
                     * activations: only f32 accumulation separates it from
                     * the double-precision product. */
                    if (quant && form == 0 && n <= 8) {
                        double re = rel_exact(got, t, x, n);
                        ST_CHECK_MSG(re < 1e-5, "%s cols %d n %d quantized mat-vec: rel %.3g "
                                     "against the exact product", st_dtype_name((uint32_t)types[ti]),
                                     cols, n, re);
                    }
                    pp.cpu.ops->free(pp.cpu.ctx, xc); pp.cpu.ops->free(pp.cpu.ctx, oc);
                    pp.gpu.ops->free(pp.gpu.ctx, xg); pp.gpu.ops->free(pp.gpu.ctx, og);
                }
        close_pair(&pp);
        for (size_t ti = 0; ti < ST_ARRAY_SIZE(types); ti++)
            for (int shape = 0; shape < 2; shape++)
                free((void *)w[ti][shape].data);
        free(x); free(ref); free(got);
    }
#endif
}

/* Real quantized tensors, when a model file is there (STRATA_MODEL, else
 * the SmolLM2 Q4_1 / Gemma 3 Q4_K_M files of scripts/fetch-model.sh): the
 * first tensor of each block type through both matmul paths, against the
 * CPU backend and (mat-vec) the exact product. */
ST_TEST(cuda_matmul_real_model_tensors)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    static const char *const cached[] = {"SmolLM2-135M-Instruct.Q4_1.gguf",
                                         "gemma-3-270m-q4_k_m.gguf"};
    static const int ns[] = {1, 8, 9};
    const char *env = getenv("STRATA_MODEL"), *home = getenv("HOME");
    char paths[3][512];
    int n_paths = 0, n_checked = 0;
    uint64_t s = 31;
    pair_t pp;

    NEED_GPU(&pp, 16, 16384);
    if (env && *env)
        snprintf(paths[n_paths++], sizeof paths[0], "%s", env);
    for (int i = 0; i < 2 && home; i++)
        snprintf(paths[n_paths++], sizeof paths[0], "%s/.cache/strata/%s", home, cached[i]);
    for (int pi = 0; pi < n_paths; pi++) {
        int seen[ST_DTYPE_COUNT_] = {0};
        st_gguf_t *g = NULL;
        st_error_t err;
        FILE *f = fopen(paths[pi], "rb");
        if (!f)
            continue;
        fclose(f);
        ST_REQUIRE(st_gguf_open(paths[pi], &g, &err) == ST_OK);
        for (uint64_t ti = 0; ti < st_gguf_n_tensors(g); ti++) {
            const st_tensor_t *t = st_gguf_tensor(g, ti);
            const int cols = (int)t->ne[0], rows = (int)(t->nbytes / t->row_bytes);
            if (kt_block_elems(t->type) < 32 || t->n_dims != 2 || seen[t->type] || cols > 16384)
                continue;
            seen[t->type] = 1;
            float *x = malloc((size_t)9 * cols * 4), *ref = malloc((size_t)9 * rows * 4);
            float *got = malloc((size_t)9 * rows * 4);
            ST_REQUIRE(x && ref && got);
            for (size_t ni = 0; ni < ST_ARRAY_SIZE(ns); ni++) {
                const int n = ns[ni];
                kt_fill(x, (size_t)n * cols, 1.0f, &s);
                float *xc = put(&pp.cpu, x, (size_t)n * cols), *xg = put(&pp.gpu, x, (size_t)n * cols);
                float *oc = pp.cpu.ops->alloc(pp.cpu.ctx, (size_t)n * rows * 4);
                float *og = pp.gpu.ops->alloc(pp.gpu.ctx, (size_t)n * rows * 4);
                ST_REQUIRE(xc && xg && oc && og);
                pp.cpu.ops->matmul(pp.cpu.ctx, t, xc, n, oc);
                pp.gpu.ops->matmul(pp.gpu.ctx, t, xg, n, og);
                ST_REQUIRE(get(&pp.cpu, ref, oc, (size_t)n * rows) == 0);
                ST_REQUIRE(get(&pp.gpu, got, og, (size_t)n * rows) == 0);
                double r = rel(got, ref, (size_t)n * rows);
                ST_CHECK_MSG(r < 2e-2, "%s (%s) n %d: rel %.3g against the cpu backend",
                             t->name ? t->name : "?", st_dtype_name(t->type), n, r);
                if (n <= 8) {
                    double re = rel_exact(got, t, x, n);
                    ST_CHECK_MSG(re < 1e-5, "%s (%s) n %d: rel %.3g against the exact product",
                                 t->name ? t->name : "?", st_dtype_name(t->type), n, re);
                }
                fprintf(stderr, "  %s %s [%d x %d] n %d: rel %.2g vs cpu\n", t->name ? t->name : "?",
                        st_dtype_name(t->type), rows, cols, n, r);
                pp.cpu.ops->free(pp.cpu.ctx, xc); pp.cpu.ops->free(pp.cpu.ctx, oc);
                pp.gpu.ops->free(pp.gpu.ctx, xg); pp.gpu.ops->free(pp.gpu.ctx, og);
            }
            free(x); free(ref); free(got);
            n_checked++;
        }
        st_gguf_close(g);
    }
    close_pair(&pp);
    if (!n_checked)
        ST_SKIP("no quantized model file (STRATA_MODEL or ~/.cache/strata)");
#endif
}

ST_TEST(cuda_get_rows_rmsnorm_rope)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    enum { N = 5, DIM = 120, HEADS = 6, HD = 20 };
    int32_t ids[N] = {0, 66, 3, 3, 41}, pos[N] = {0, 1, 17, 900, 4095};
    float ref[N * DIM], got[N * DIM], x[N * DIM], wv[DIM];
    st_tensor_t emb_bf, emb_q8, emb_q4k, emb_q6k, norm;
    pair_t pp;
    uint64_t s = 11;
    NEED_GPU(&pp, 16, 256);
    ST_REQUIRE(kt_make_weight(&emb_bf, ST_DTYPE_BF16, 67, DIM, &s) == 0);
    ST_REQUIRE(kt_make_weight(&emb_q8, ST_DTYPE_Q8_0, 67, 128, &s) == 0);
    ST_REQUIRE(kt_make_weight(&emb_q4k, ST_DTYPE_Q4_K, 67, 512, &s) == 0);
    ST_REQUIRE(kt_make_weight(&emb_q6k, ST_DTYPE_Q6_K, 67, 256, &s) == 0);
    for (int i = 0; i < DIM; i++)
        wv[i] = 1.0f + 0.2f * kt_uniform(&s);
    memset(&norm, 0, sizeof norm);
    norm.name = "norm";
    norm.type = ST_DTYPE_F32;
    norm.n_dims = 1;
    norm.ne[0] = DIM;
    norm.ne[1] = norm.ne[2] = norm.ne[3] = 1;
    norm.row_bytes = norm.nbytes = DIM * 4;
    norm.data = wv;

    const st_tensor_t *embs[4] = {&emb_bf, &emb_q8, &emb_q4k, &emb_q6k};
    for (int e = 0; e < 4; e++) {
        int cols = (int)embs[e]->ne[0];
        float *big_ref = malloc((size_t)N * cols * 4), *big_got = malloc((size_t)N * cols * 4);
        ST_REQUIRE(big_ref && big_got);
        float *oc = pp.cpu.ops->alloc(pp.cpu.ctx, (size_t)N * cols * 4);
        float *og = pp.gpu.ops->alloc(pp.gpu.ctx, (size_t)N * cols * 4);
        ST_REQUIRE(oc && og);
        pp.cpu.ops->get_rows(pp.cpu.ctx, embs[e], ids, N, oc);
        pp.gpu.ops->get_rows(pp.gpu.ctx, embs[e], ids, N, og);
        ST_REQUIRE(get(&pp.cpu, big_ref, oc, (size_t)N * cols) == 0);
        ST_REQUIRE(get(&pp.gpu, big_got, og, (size_t)N * cols) == 0);
        /* bf16 stays exact; quantized rows are decoded from their blocks
         * on the device, bit-identical to the reference routine (the CPU
         * backend's SIMD decode may order Q6_K's products differently) */
        ST_CHECK(rel(big_got, big_ref, (size_t)N * cols) < 1e-6);
        for (int i = 0; i < N; i++)
            st_dtype_dequantize_row(embs[e]->type, (const uint8_t *)embs[e]->data +
                                    (size_t)ids[i] * embs[e]->row_bytes,
                                    big_ref + (size_t)i * cols, (uint64_t)cols);
        ST_CHECK_MSG(memcmp(big_got, big_ref, (size_t)N * cols * 4) == 0, "%s rows differ from "
                     "the reference (rel %.3g)", st_dtype_name(embs[e]->type),
                     rel(big_got, big_ref, (size_t)N * cols));
        pp.cpu.ops->free(pp.cpu.ctx, oc);
        pp.gpu.ops->free(pp.gpu.ctx, og);
        free(big_ref);
        free(big_got);
    }

    kt_fill(x, N * DIM, 3.0f, &s);
    {
        float *xc = put(&pp.cpu, x, N * DIM), *xg = put(&pp.gpu, x, N * DIM);
        ST_REQUIRE(xc && xg);
        pp.cpu.ops->rmsnorm(pp.cpu.ctx, xc, &norm, 1e-5f, N, DIM, xc);   /* in place */
        pp.gpu.ops->rmsnorm(pp.gpu.ctx, xg, &norm, 1e-5f, N, DIM, xg);
        ST_REQUIRE(get(&pp.cpu, ref, xc, N * DIM) == 0);
        ST_REQUIRE(get(&pp.gpu, got, xg, N * DIM) == 0);
        ST_CHECK(rel(got, ref, N * DIM) < 1e-5);

        /* rope over the normalised rows: 6 heads of 20, 16 dims rotated */
        pp.cpu.ops->rope(pp.cpu.ctx, xc, N, HEADS, HD, 16, pos, 10000.0f, 0.5f);
        pp.gpu.ops->rope(pp.gpu.ctx, xg, N, HEADS, HD, 16, pos, 10000.0f, 0.5f);
        ST_REQUIRE(get(&pp.cpu, ref, xc, N * DIM) == 0);
        ST_REQUIRE(get(&pp.gpu, got, xg, N * DIM) == 0);
        ST_CHECK(rel(got, ref, N * DIM) < 1e-5);
        pp.cpu.ops->free(pp.cpu.ctx, xc);
        pp.gpu.ops->free(pp.gpu.ctx, xg);
    }
    close_pair(&pp);
    free((void *)emb_bf.data);
    free((void *)emb_q8.data);
    free((void *)emb_q4k.data);
    free((void *)emb_q6k.data);
#endif
}

ST_TEST(cuda_kv_store_and_attention)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    /* head_dim 40 (not a multiple of 32), grouped-query 6/2, two slots; a
     * prefill chunk of 20 tokens, then single tokens deep in the context
     * (sequence split into several chunks). */
    enum { NH = 6, NKV = 2, HD = 40, KV = NKV * HD, QD = NH * HD, NCTX = 700, NS = 2, NT = 20 };
    const size_t cache_n = (size_t)NS * NCTX * KV;
    float q[NT * QD], k[NT * KV], v[NT * KV], ref[NT * QD], got[NT * QD];
    int32_t slot[NT], pos[NT];
    pair_t pp;
    uint64_t s = 23;
    NEED_GPU(&pp, 32, 512);
    float *kc_h = malloc(cache_n * 4), *vc_h = malloc(cache_n * 4);
    ST_REQUIRE(kc_h && vc_h);
    kt_fill(kc_h, cache_n, 1.0f, &s);
    kt_fill(vc_h, cache_n, 1.0f, &s);
    float *kcc = put(&pp.cpu, kc_h, cache_n), *vcc = put(&pp.cpu, vc_h, cache_n);
    float *kcg = put(&pp.gpu, kc_h, cache_n), *vcg = put(&pp.gpu, vc_h, cache_n);
    float *qc = pp.cpu.ops->alloc(pp.cpu.ctx, sizeof q), *qg = pp.gpu.ops->alloc(pp.gpu.ctx, sizeof q);
    float *kk[2], *vv[2];
    float *oc = pp.cpu.ops->alloc(pp.cpu.ctx, sizeof q), *og = pp.gpu.ops->alloc(pp.gpu.ctx, sizeof q);
    ST_REQUIRE(kcc && vcc && kcg && vcg && qc && qg && oc && og);

    for (int round = 0; round < 2; round++) {
        int n = round == 0 ? NT : 3;
        for (int t = 0; t < n; t++) {
            slot[t] = round == 0 ? 1 : t % 2;
            pos[t] = round == 0 ? 100 + t : (int32_t[]){5, 511, 699}[t];
        }
        kt_fill(q, (size_t)n * QD, 1.0f, &s);
        kt_fill(k, (size_t)n * KV, 1.0f, &s);
        kt_fill(v, (size_t)n * KV, 1.0f, &s);
        kk[0] = put(&pp.cpu, k, (size_t)n * KV); vv[0] = put(&pp.cpu, v, (size_t)n * KV);
        kk[1] = put(&pp.gpu, k, (size_t)n * KV); vv[1] = put(&pp.gpu, v, (size_t)n * KV);
        ST_REQUIRE(kk[0] && vv[0] && kk[1] && vv[1]);
        ST_REQUIRE(pp.cpu.ops->to_device(pp.cpu.ctx, qc, q, (size_t)n * QD * 4) == ST_OK);
        ST_REQUIRE(pp.gpu.ops->to_device(pp.gpu.ctx, qg, q, (size_t)n * QD * 4) == ST_OK);
        pp.cpu.ops->kv_store(pp.cpu.ctx, kk[0], vv[0], n, KV, slot, pos, kcc, vcc, NCTX);
        pp.gpu.ops->kv_store(pp.gpu.ctx, kk[1], vv[1], n, KV, slot, pos, kcg, vcg, NCTX);
        st_attn_args_t a = {.n_tokens = n, .n_head = NH, .n_head_kv = NKV, .head_dim = HD,
                            .n_ctx = NCTX, .slot = slot, .pos = pos, .scale = 0.158f};
        a.q = qc; a.k_cache = kcc; a.v_cache = vcc; a.out = oc;
        pp.cpu.ops->attention(pp.cpu.ctx, &a);
        a.q = qg; a.k_cache = kcg; a.v_cache = vcg; a.out = og;
        pp.gpu.ops->attention(pp.gpu.ctx, &a);
        ST_REQUIRE(get(&pp.cpu, ref, oc, (size_t)n * QD) == 0);
        ST_REQUIRE(get(&pp.gpu, got, og, (size_t)n * QD) == 0);
        ST_CHECK_MSG(rel(got, ref, (size_t)n * QD) < 1e-4, "round %d rel %.3g", round,
                     rel(got, ref, (size_t)n * QD));
        for (int b = 0; b < 2; b++) {
            st_backend_t *be = b ? &pp.gpu : &pp.cpu;
            be->ops->free(be->ctx, kk[b]);
            be->ops->free(be->ctx, vv[b]);
        }
    }
    /* The caches themselves must match after the stores. */
    {
        float *a = malloc(cache_n * 4), *b = malloc(cache_n * 4);
        ST_REQUIRE(a && b);
        ST_REQUIRE(get(&pp.cpu, a, kcc, cache_n) == 0 && get(&pp.gpu, b, kcg, cache_n) == 0);
        ST_CHECK(memcmp(a, b, cache_n * 4) == 0);
        free(a);
        free(b);
    }
    close_pair(&pp);
    free(kc_h);
    free(vc_h);
#endif
}

ST_TEST(cuda_swiglu_add_and_errors)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    const size_t n = 1000003;
    pair_t pp;
    uint64_t s = 5;
    NEED_GPU(&pp, 8, 64);
    float *g = malloc(n * 4), *u = malloc(n * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
    ST_REQUIRE(g && u && ref && got);
    kt_fill(g, n, 6.0f, &s);
    kt_fill(u, n, 1.0f, &s);
    st_backend_t *bs[2] = {&pp.cpu, &pp.gpu};
    float *outs[2] = {ref, got};
    for (int b = 0; b < 2; b++) {
        float *dg = put(bs[b], g, n), *du = put(bs[b], u, n);
        ST_REQUIRE(dg && du);
        bs[b]->ops->swiglu(bs[b]->ctx, dg, du, n, dg);   /* in place, as the executor does */
        bs[b]->ops->add(bs[b]->ctx, dg, du, n);
        ST_REQUIRE(get(bs[b], outs[b], dg, n) == 0);
        bs[b]->ops->free(bs[b]->ctx, dg);
        bs[b]->ops->free(bs[b]->ctx, du);
    }
    ST_CHECK(rel(got, ref, n) < 1e-5);

    /* A bad position is caught on the host and reported by the next sync,
     * once; the instance keeps working afterwards. */
    {
        int32_t sl = 0, p = 64;
        float *k = pp.gpu.ops->alloc(pp.gpu.ctx, 64 * 4);
        ST_REQUIRE(k);
        pp.gpu.ops->kv_store(pp.gpu.ctx, k, k, 1, 64, &sl, &p, k, k, 1);
        ST_CHECK(pp.gpu.ops->sync(pp.gpu.ctx) == ST_ERR_RANGE);
        ST_CHECK(pp.gpu.ops->sync(pp.gpu.ctx) == ST_OK);
        pp.gpu.ops->add(pp.gpu.ctx, k, k, 64);
        ST_CHECK(pp.gpu.ops->sync(pp.gpu.ctx) == ST_OK);
        pp.gpu.ops->free(pp.gpu.ctx, k);
    }
    close_pair(&pp);
    free(g); free(u); free(ref); free(got);
#endif
}

int main(void)
{
    return st_test_main();
}
