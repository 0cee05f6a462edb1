/*
 * test_cuda_ops.c - every op of the CUDA backend against the CPU backend on
 * random inputs with odd sizes (ggml's test-backend-ops habit): matmul on
 * both paths (mat-vec for <= 8 rows, cuBLAS above) and every weight type,
 * embedding rows, RMSNorm, RoPE, KV store and attention with and without
 * sequence splitting, SwiGLU and add; and the ops for architectures beyond
 * Llama (rope_ex NORM/NEOX with and without YaRN, add_row, GeGLU, scale,
 * softcap, copy2d, axpy), attention's extensions (sliding window,
 * soft-capping, values narrower than keys, a cache row stride: Gemma 3
 * and DeepSeek's absorbed MLA shapes), per-head RMSNorm over more rows
 * than max_batch, and matmuls on views of a 3-D weight (experts).
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
#include "cuda_kern.h"   /* CU_ATT_FIRST_POS */
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
        pp.cpu.ops->kv_store(pp.cpu.ctx, kk[0], vv[0], n, KV, slot, pos, kcc, vcc, NCTX, ST_DTYPE_F32);
        pp.gpu.ops->kv_store(pp.gpu.ctx, kk[1], vv[1], n, KV, slot, pos, kcg, vcg, NCTX, ST_DTYPE_F32);
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
        pp.gpu.ops->kv_store(pp.gpu.ctx, k, k, 1, 64, &sl, &p, k, k, 1, ST_DTYPE_F32);
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

#ifdef STRATA_HAVE_CUDA
/* A host f32 vector as a 1-D tensor view (bias, norm weight). */
static void vec_tensor(st_tensor_t *t, const char *name, float *data, int n)
{
    memset(t, 0, sizeof *t);
    t->name = name;
    t->type = ST_DTYPE_F32;
    t->n_dims = 1;
    t->ne[0] = (uint64_t)n;
    t->ne[1] = t->ne[2] = t->ne[3] = 1;
    t->row_bytes = t->nbytes = (uint64_t)n * 4;
    t->data = data;
}

static size_t n_differ(const float *a, const float *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += memcmp(&a[i], &b[i], 4) != 0;
    return d;
}

/* rel() skips NaN (fmax), so outputs that must be finite are counted too. */
static size_t n_nonfinite(const float *a, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += !isfinite(a[i]);
    return k;
}
#endif

ST_TEST(cuda_rope_ex_vs_cpu)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    /* rows of n_heads heads (head_stride apart) plus padding; offset and
     * rope_dim inside the head; YaRN cases at DeepSeek-like numbers */
    static const struct {
        const char *name;
        int n_heads, head_stride, offset, rope_dim, pad;
        float theta, freq_scale, ext_factor, mscale;
        int n_ctx_orig;
    } cases[] = {
        {"full128", 4, 128, 0, 128, 0, 500000.0f, 1.0f, 0.0f, 1.0f, 0},
        {"gemma256", 2, 256, 0, 256, 0, 1000000.0f, 0.125f, 0.0f, 1.0f, 0},
        {"offset", 3, 48, 32, 16, 5, 10000.0f, 1.0f, 0.0f, 1.0f, 0},
        {"yarn64", 4, 192, 128, 64, 0, 10000.0f, 0.025f, 1.0f, 1.3689f, 4096},
        {"yarn16", 1, 48, 32, 16, 3, 10000.0f, 0.25f, 1.0f, 1.0f, 64},
        {"yarn128", 2, 128, 0, 128, 0, 1000000.0f, 0.125f, 0.5f, 1.2079f, 8192},
    };
    enum { N = 37 };
    int32_t pos[N];
    pair_t pp;
    uint64_t s = 41;
    NEED_GPU(&pp, 64, 1024);
    for (int i = 0; i < N; i++)
        pos[i] = i < 4 ? (int32_t[]){0, 1, 8191, 8192}[i] : (int32_t)(kt_rng(&s) % 8193);
    for (size_t ci = 0; ci < ST_ARRAY_SIZE(cases); ci++)
        for (int neox = 0; neox < 2; neox++) {
            const int row = cases[ci].n_heads * cases[ci].head_stride + cases[ci].pad;
            const size_t len = (size_t)N * row;
            float *x = malloc(len * 4), *ref = malloc(len * 4), *got = malloc(len * 4);
            ST_REQUIRE(x && ref && got);
            kt_fill(x, len, 2.0f, &s);
            float *xc = put(&pp.cpu, x, len), *xg = put(&pp.gpu, x, len);
            ST_REQUIRE(xc && xg);
            st_rope_args_t r = {
                .n = N, .row_stride = row, .n_heads = cases[ci].n_heads,
                .head_stride = cases[ci].head_stride, .offset = cases[ci].offset,
                .rope_dim = cases[ci].rope_dim, .pos = pos, .neox = neox,
                .theta = cases[ci].theta, .freq_scale = cases[ci].freq_scale,
                .ext_factor = cases[ci].ext_factor, .beta_fast = 32.0f, .beta_slow = 1.0f,
                .n_ctx_orig = cases[ci].n_ctx_orig, .mscale = cases[ci].mscale,
            };
            r.x = xc;
            pp.cpu.ops->rope_ex(pp.cpu.ctx, &r);
            r.x = xg;
            pp.gpu.ops->rope_ex(pp.gpu.ctx, &r);
            ST_REQUIRE(get(&pp.cpu, ref, xc, len) == 0);
            ST_REQUIRE(get(&pp.gpu, got, xg, len) == 0);
            /* Same operations in the same order (cuda_ext.cuh): only the
             * device's double cos/sin (2 ulp) can move a float's last bit. */
            double rr = rel(got, ref, len);
            size_t d = n_differ(got, ref, len);
            ST_CHECK_MSG(rr < 1e-6, "%s %s: rel %.3g", cases[ci].name, neox ? "neox" : "norm", rr);
            fprintf(stderr, "  rope_ex %-8s %s: rel %.2g, %zu of %zu floats not bit-identical\n",
                    cases[ci].name, neox ? "neox" : "norm", rr, d, len);
            pp.cpu.ops->free(pp.cpu.ctx, xc);
            pp.gpu.ops->free(pp.gpu.ctx, xg);
            free(x); free(ref); free(got);
        }
    /* refused as the CPU backend refuses, reported by the next sync */
    {
        float *xg = pp.gpu.ops->alloc(pp.gpu.ctx, 64 * 4);
        st_rope_args_t r = {.x = xg, .n = 1, .row_stride = 64, .n_heads = 1, .head_stride = 64,
                            .offset = 8, .rope_dim = 64, .pos = pos, .theta = 10000.0f,
                            .freq_scale = 1.0f, .mscale = 1.0f};
        ST_REQUIRE(xg);
        pp.gpu.ops->rope_ex(pp.gpu.ctx, &r);
        ST_CHECK(pp.gpu.ops->sync(pp.gpu.ctx) == ST_ERR_INVALID);
        pp.gpu.ops->free(pp.gpu.ctx, xg);
    }
    close_pair(&pp);
#endif
}

ST_TEST(cuda_ext_elementwise_vs_cpu)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    const size_t n = 1000003;
    enum { ROWS = 70001, COLS = 3, BN = 5, BDIM = 1000 };   /* copy2d: more rows than grid.y */
    pair_t pp;
    uint64_t s = 43;
    NEED_GPU(&pp, 8, 64);
    float *g = malloc(n * 4), *u = malloc(n * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
    float bias[BDIM];
    st_tensor_t bt;
    ST_REQUIRE(g && u && ref && got);
    kt_fill(g, n, 12.0f, &s);
    kt_fill(u, n, 1.0f, &s);
    kt_fill(bias, BDIM, 1.0f, &s);
    vec_tensor(&bt, "test.bias", bias, BDIM);
    st_backend_t *bs[2] = {&pp.cpu, &pp.gpu};
    float *outs[2] = {ref, got};

    ST_CHECK(pp.gpu.ops->features & ST_BE_ATTN_EX);
    ST_CHECK(pp.gpu.ops->rope_ex && pp.gpu.ops->add_row && pp.gpu.ops->geglu &&
             pp.gpu.ops->scale && pp.gpu.ops->softcap && pp.gpu.ops->copy2d && pp.gpu.ops->axpy);

    /* geglu (GELU tanh form), then softcap of the result as logits */
    for (int b = 0; b < 2; b++) {
        float *dg = put(bs[b], g, n), *du = put(bs[b], u, n);
        ST_REQUIRE(dg && du);
        bs[b]->ops->geglu(bs[b]->ctx, dg, du, n, dg);   /* in place, as the executor does */
        ST_REQUIRE(get(bs[b], outs[b], dg, n) == 0);
        bs[b]->ops->free(bs[b]->ctx, dg);
        bs[b]->ops->free(bs[b]->ctx, du);
    }
    ST_CHECK_MSG(rel(got, ref, n) < 1e-6, "geglu rel %.3g", rel(got, ref, n));
    fprintf(stderr, "  geglu: rel %.2g\n", rel(got, ref, n));
    for (int b = 0; b < 2; b++) {
        float *dx = put(bs[b], g, n);
        ST_REQUIRE(dx);
        bs[b]->ops->scale(bs[b]->ctx, dx, 2.5f, n);         /* logits up to 30 */
        bs[b]->ops->softcap(bs[b]->ctx, dx, 15.0f, n);
        ST_REQUIRE(get(bs[b], outs[b], dx, n) == 0);
        bs[b]->ops->free(bs[b]->ctx, dx);
    }
    ST_CHECK_MSG(rel(got, ref, n) < 1e-6, "scale + softcap rel %.3g", rel(got, ref, n));
    fprintf(stderr, "  scale + softcap: rel %.2g, %zu of %zu not bit-identical\n",
            rel(got, ref, n), n_differ(got, ref, n), n);
    /* axpy: one rounding on both (the CPU's SIMD kernels fuse too) */
    for (int b = 0; b < 2; b++) {
        float *dx = put(bs[b], u, n), *dy = put(bs[b], g, n);
        ST_REQUIRE(dx && dy);
        bs[b]->ops->axpy(bs[b]->ctx, dx, -0.3711f, dy, n);
        ST_REQUIRE(get(bs[b], outs[b], dx, n) == 0);
        bs[b]->ops->free(bs[b]->ctx, dx);
        bs[b]->ops->free(bs[b]->ctx, dy);
    }
    ST_CHECK_MSG(rel(got, ref, n) < 1e-6, "axpy rel %.3g", rel(got, ref, n));
    fprintf(stderr, "  axpy: %zu of %zu not bit-identical (0 expected on an AVX2/AVX-512 host)\n",
            n_differ(got, ref, n), n);
    /* add_row: exact */
    for (int b = 0; b < 2; b++) {
        float *dx = put(bs[b], u, (size_t)BN * BDIM);
        ST_REQUIRE(dx);
        bs[b]->ops->add_row(bs[b]->ctx, dx, &bt, BN, BDIM);
        ST_REQUIRE(get(bs[b], outs[b], dx, (size_t)BN * BDIM) == 0);
        bs[b]->ops->free(bs[b]->ctx, dx);
    }
    ST_CHECK(memcmp(got, ref, (size_t)BN * BDIM * 4) == 0);
    /* copy2d: a column block of rows 7 apart into rows 4 apart at an offset */
    for (int b = 0; b < 2; b++) {
        float *src = put(bs[b], g, (size_t)ROWS * 7), *dst = put(bs[b], u, (size_t)ROWS * 4 + 1);
        ST_REQUIRE(src && dst);
        bs[b]->ops->copy2d(bs[b]->ctx, dst + 1, 4, src + 2, 7, ROWS, COLS);
        ST_REQUIRE(get(bs[b], outs[b], dst, (size_t)ROWS * 4 + 1) == 0);
        bs[b]->ops->free(bs[b]->ctx, src);
        bs[b]->ops->free(bs[b]->ctx, dst);
    }
    ST_CHECK(memcmp(got, ref, ((size_t)ROWS * 4 + 1) * 4) == 0);
    /* a bias the CPU refuses (not f32) is refused, once, by the next sync */
    {
        uint16_t h[BDIM];
        st_tensor_t b16 = bt;
        float *dx = pp.gpu.ops->alloc(pp.gpu.ctx, BDIM * 4);
        ST_REQUIRE(dx);
        memset(h, 0, sizeof h);
        b16.type = ST_DTYPE_F16;
        b16.row_bytes = b16.nbytes = sizeof h;
        b16.data = h;
        pp.gpu.ops->add_row(pp.gpu.ctx, dx, &b16, 1, BDIM);
        ST_CHECK(pp.gpu.ops->sync(pp.gpu.ctx) == ST_ERR_INVALID);
        ST_CHECK(pp.gpu.ops->sync(pp.gpu.ctx) == ST_OK);
        pp.gpu.ops->free(pp.gpu.ctx, dx);
    }
    close_pair(&pp);
    free(g); free(u); free(ref); free(got);
#endif
}

ST_TEST(cuda_attention_extensions_vs_cpu)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    /* window, softcap, values narrower than keys, padded rows, shared K/V
     * (MLA: 576-wide keys, the first 512 floats as values, one KV head) */
    static const struct {
        const char *name;
        int n_head, n_head_kv, hd, hv, stride, window;
        float softcap;
        int shared;
    } cases[] = {
        {"gqa-window-softcap", 8, 2, 40, 0, 0, 7, 50.0f, 0},
        {"hv64-stride300", 4, 2, 128, 64, 300, 33, 20.0f, 0},
        {"mla576", 16, 1, 576, 512, 576, 0, 0.0f, 1},
        {"hd256-window512", 4, 1, 256, 0, 0, 512, 0.0f, 0},
        {"hv96-hd48", 2, 2, 48, 96, 192, 0, 0.0f, 0},
    };
    enum { NCTX = 2100, NS = 3, NT = 24 };
    int32_t slot[NT], pos[NT];
    int n = 0;
    pair_t pp;
    uint64_t s = 47;
    NEED_GPU(&pp, 32, 16 * 576);
    for (int i = 0; i < 20; i++, n++) {   /* a prefill chunk ... */
        slot[n] = 0;
        pos[n] = 1000 + i;
    }
    slot[n] = 1; pos[n++] = 2047;         /* ... and decode tokens, deep and shallow */
    slot[n] = 2; pos[n++] = 5;
    slot[n] = 1; pos[n++] = 2048;
    slot[n] = 2; pos[n++] = 0;
    for (size_t ci = 0; ci < ST_ARRAY_SIZE(cases); ci++) {
        const int hd = cases[ci].hd, hv = cases[ci].hv ? cases[ci].hv : hd;
        const int stride = cases[ci].stride ? cases[ci].stride : cases[ci].n_head_kv * hd;
        const size_t cache_n = (size_t)NS * NCTX * stride;
        const size_t q_n = (size_t)NT * cases[ci].n_head * hd;
        const size_t o_n = (size_t)NT * cases[ci].n_head * hv;
        float *kc = malloc(cache_n * 4), *vc = malloc(cache_n * 4), *q = malloc(q_n * 4);
        float *ref = malloc(o_n * 4), *got = malloc(o_n * 4);
        ST_REQUIRE(kc && vc && q && ref && got);
        kt_fill(kc, cache_n, 1.0f, &s);
        kt_fill(vc, cache_n, 1.0f, &s);
        kt_fill(q, q_n, 2.0f, &s);
        /* Positions no token may read hold NaN: rows past each slot's last
         * position, and (windowed) rows before its first window. */
        for (int sl = 0; sl < NS; sl++) {
            int lo = NCTX, hi = -1;
            for (int t = 0; t < n; t++)
                if (slot[t] == sl) {
                    lo = ST_MIN(lo, CU_ATT_FIRST_POS(pos[t], cases[ci].window));
                    hi = ST_MAX(hi, pos[t]);
                }
            for (int p = 0; p < NCTX; p++)
                if (p < lo || p > hi)
                    for (int j = 0; j < stride; j++) {
                        kc[((size_t)sl * NCTX + p) * stride + j] = NAN;
                        vc[((size_t)sl * NCTX + p) * stride + j] = NAN;
                    }
        }
        float *kcc = put(&pp.cpu, kc, cache_n), *kcg = put(&pp.gpu, kc, cache_n);
        float *vcc = cases[ci].shared ? kcc : put(&pp.cpu, vc, cache_n);
        float *vcg = cases[ci].shared ? kcg : put(&pp.gpu, vc, cache_n);
        float *qc = put(&pp.cpu, q, q_n), *qg = put(&pp.gpu, q, q_n);
        float *oc = pp.cpu.ops->alloc(pp.cpu.ctx, o_n * 4);
        float *og = pp.gpu.ops->alloc(pp.gpu.ctx, o_n * 4);
        ST_REQUIRE(kcc && kcg && vcc && vcg && qc && qg && oc && og);
        /* the whole batch (prefill and decode together), then the decode
         * tokens alone (split over the sequence) */
        for (int part = 0; part < 2; part++) {
            const int t0 = part ? 20 : 0, nt = part ? n - 20 : n;
            st_attn_args_t a = {
                .n_tokens = nt, .n_head = cases[ci].n_head, .n_head_kv = cases[ci].n_head_kv,
                .head_dim = hd, .n_ctx = NCTX, .slot = slot + t0, .pos = pos + t0,
                .scale = 1.0f / sqrtf((float)hd), .window = cases[ci].window,
                .softcap = cases[ci].softcap, .head_dim_v = cases[ci].hv,
                .kv_stride = cases[ci].stride,
            };
            const size_t qo = (size_t)t0 * cases[ci].n_head * hd;
            const size_t oo = (size_t)nt * cases[ci].n_head * hv;
            a.q = qc + qo; a.k_cache = kcc; a.v_cache = vcc; a.out = oc;
            pp.cpu.ops->attention(pp.cpu.ctx, &a);
            a.q = qg + qo; a.k_cache = kcg; a.v_cache = vcg; a.out = og;
            pp.gpu.ops->attention(pp.gpu.ctx, &a);
            ST_REQUIRE(get(&pp.cpu, ref, oc, oo) == 0);
            ST_REQUIRE(get(&pp.gpu, got, og, oo) == 0);
            double r = rel(got, ref, oo);
            /* a read of a poisoned row or column would show as NaN */
            ST_CHECK_MSG(n_nonfinite(ref, oo) == 0 && n_nonfinite(got, oo) == 0,
                         "%s: %zu cpu / %zu cuda outputs not finite", cases[ci].name,
                         n_nonfinite(ref, oo), n_nonfinite(got, oo));
            ST_CHECK_MSG(r < 1e-5, "%s %s: rel %.3g", cases[ci].name, part ? "decode" : "batch",
                         r);
            fprintf(stderr, "  attention %-20s %s: rel %.2g\n", cases[ci].name,
                    part ? "decode" : "batch ", r);
        }
        pp.cpu.ops->free(pp.cpu.ctx, kcc); pp.gpu.ops->free(pp.gpu.ctx, kcg);
        if (!cases[ci].shared) {
            pp.cpu.ops->free(pp.cpu.ctx, vcc);
            pp.gpu.ops->free(pp.gpu.ctx, vcg);
        }
        pp.cpu.ops->free(pp.cpu.ctx, qc); pp.gpu.ops->free(pp.gpu.ctx, qg);
        pp.cpu.ops->free(pp.cpu.ctx, oc); pp.gpu.ops->free(pp.gpu.ctx, og);
        free(kc); free(vc); free(q); free(ref); free(got);
    }
    close_pair(&pp);
#endif
}

/* Per-head norms (Gemma 3, Qwen3) run n_tokens * n_head rows; matmuls on
 * the per-expert views of a 3-D weight reuse its uploaded blocks. */
ST_TEST(cuda_head_norm_rows_and_weight_views)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA");
#else
    enum { B = 16, H = 16, HD = 64, E = 4, ROWS = 96, COLS = 256 };
    float x[B * H * HD], ref[B * H * HD], got[B * H * HD], wv[HD];
    st_tensor_t nw, w3, views[E];
    pair_t pp;
    uint64_t s = 53;
    NEED_GPU(&pp, B, COLS);
    kt_fill(x, B * H * HD, 3.0f, &s);
    for (int i = 0; i < HD; i++)
        wv[i] = 1.0f + 0.2f * kt_uniform(&s);
    vec_tensor(&nw, "test.q_norm", wv, HD);
    {
        float *xc = put(&pp.cpu, x, B * H * HD), *xg = put(&pp.gpu, x, B * H * HD);
        ST_REQUIRE(xc && xg);
        pp.cpu.ops->rmsnorm(pp.cpu.ctx, xc, &nw, 1e-6f, B * H, HD, xc);
        pp.gpu.ops->rmsnorm(pp.gpu.ctx, xg, &nw, 1e-6f, B * H, HD, xg);   /* > max_batch rows */
        ST_REQUIRE(get(&pp.cpu, ref, xc, B * H * HD) == 0);
        ST_REQUIRE(get(&pp.gpu, got, xg, B * H * HD) == 0);
        ST_CHECK_MSG(rel(got, ref, B * H * HD) < 1e-5, "per-head rmsnorm rel %.3g",
                     rel(got, ref, B * H * HD));
        pp.cpu.ops->free(pp.cpu.ctx, xc);
        pp.gpu.ops->free(pp.gpu.ctx, xg);
    }
    /* A [COLS, ROWS, E] Q4_K tensor, uploaded whole, and its E views. */
    ST_REQUIRE(kt_make_weight(&w3, ST_DTYPE_Q4_K, ROWS * E, COLS, &s) == 0);
    w3.n_dims = 3;
    w3.ne[1] = ROWS;
    w3.ne[2] = E;
    for (int e = 0; e < E; e++) {
        views[e] = w3;
        views[e].n_dims = 2;
        views[e].ne[2] = 1;
        views[e].nbytes = w3.row_bytes * ROWS;
        views[e].data = (const uint8_t *)w3.data + (size_t)e * views[e].nbytes;
    }
    {
        const st_tensor_t *list[1] = {&w3};
        st_error_t err;
        ST_REQUIRE(pp.gpu.ops->weights_load(pp.gpu.ctx, list, 1, &err) == ST_OK);
    }
    /* 1 and 8 rows: the quantized mat-vec; 12: bf16 tiles and cuBLAS */
    for (int e = 0; e < E; e++)
        for (int ni = 0; ni < 3; ni++) {
            const int nb = (int[]){1, 8, 12}[ni];
            float xin[B * COLS], yr[B * ROWS], yg[B * ROWS];
            kt_fill(xin, (size_t)nb * COLS, 1.0f, &s);
            float *xc = put(&pp.cpu, xin, (size_t)nb * COLS);
            float *xg = put(&pp.gpu, xin, (size_t)nb * COLS);
            float *oc = pp.cpu.ops->alloc(pp.cpu.ctx, (size_t)nb * ROWS * 4);
            float *og = pp.gpu.ops->alloc(pp.gpu.ctx, (size_t)nb * ROWS * 4);
            ST_REQUIRE(xc && xg && oc && og);
            pp.cpu.ops->matmul(pp.cpu.ctx, &views[e], xc, nb, oc);
            pp.gpu.ops->matmul(pp.gpu.ctx, &views[e], xg, nb, og);
            ST_REQUIRE(get(&pp.cpu, yr, oc, (size_t)nb * ROWS) == 0);
            ST_REQUIRE(get(&pp.gpu, yg, og, (size_t)nb * ROWS) == 0);
            ST_CHECK_MSG(rel(yg, yr, (size_t)nb * ROWS) < 2e-2, "expert %d n %d: rel %.3g", e, nb,
                         rel(yg, yr, (size_t)nb * ROWS));
            if (nb <= 8)
                ST_CHECK_MSG(rel_exact(yg, &views[e], xin, nb) < 1e-5, "expert %d n %d: rel "
                             "%.3g against the exact product", e, nb,
                             rel_exact(yg, &views[e], xin, nb));
            pp.cpu.ops->free(pp.cpu.ctx, xc); pp.cpu.ops->free(pp.cpu.ctx, oc);
            pp.gpu.ops->free(pp.gpu.ctx, xg); pp.gpu.ops->free(pp.gpu.ctx, og);
        }
    close_pair(&pp);
    free((void *)w3.data);
#endif
}

int main(void)
{
    return st_test_main();
}
