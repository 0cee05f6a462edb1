/*
 * test_cuda_ext.c - the CUDA backend's math for the ops beyond Llama
 * (kernels/cuda/cuda_ext.cuh) and for its attention with the extensions
 * (kernels/cuda/cuda_attn.cuh), compiled for the host by nvcc, against the
 * CPU backend, on this machine's CPU: no GPU and no CUDA runtime call.
 *
 * The launch parameters come from the backend itself (cu_rope_prepare,
 * cu_attn_prepare in cuda_backend.c: its checks, frequency base, YaRN
 * range, widths, strides and split plan), and the kernels' loops are
 * replayed around the shared functions (cuda_ext_host.cu), so what runs
 * here is what the device runs except for the hardware's own functions
 * (cos/sin in double, expf, tanhf) and the launch machinery.
 *
 * Checked:
 *   - rope_ex, NORM and NEOX pairs, with and without YaRN (ramp and
 *     mscale), at an offset inside the head and with padded rows, at
 *     positions 0..8192: bit-identical to the CPU backend (this host's cos
 *     and sin are the CPU backend's);
 *   - rope_ex's refusals match the CPU backend's limits;
 *   - GeGLU and soft-capping: bit-identical to the CPU backend at the
 *     scalar level (the same formula), within 1e-6 of its best SIMD level
 *     and of a double-precision reference; axpy bit-identical to the SIMD
 *     levels (one fma);
 *   - attention with a sliding window, soft-capped scores, values narrower
 *     than keys and a padded cache row (kv_stride), grouped-query and
 *     MLA-shaped (576-wide keys, 512-wide values read from the same rows,
 *     one KV head), prefill and decode tokens in several slots, under the
 *     split plan for an H100 (132 SMs), one SM and forced plans with empty
 *     splits: within 2e-6 of the CPU backend. Cache rows the attention must
 *     not read (before a window, after the last position, row padding, K
 *     columns past the value width) hold NaN, so a read of one shows;
 *   - the split plan keeps the partial results inside the scratch.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_ext_host.h"
#include "cuda_impl.h"
#include "st_kernels.h"
#include "st_test.h"

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

static void fill(float *x, size_t n, float scale, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = unif(s) * scale;
}

/* The CPU backend at an instruction-set level ("scalar", or NULL: best). */
static int open_cpu(const char *isa, st_backend_t *be)
{
    st_backend_params_t p = {.size = sizeof p, .n_threads = 2, .max_batch = 64, .max_cols = 4096};
    st_error_t err;
    st_status_t st;
    if (isa)
        setenv("STRATA_CPU_ISA", isa, 1);
    st = st_backend_open("cpu", &p, be, &err);
    unsetenv("STRATA_CPU_ISA");
    if (st != ST_OK)
        fprintf(stderr, "  cpu backend: %s\n", err.msg);
    return st == ST_OK ? 0 : -1;
}

static size_t n_differ(const float *a, const float *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

/* max |a - b| / max |b| (NaN anywhere: infinity) */
static double rel(const float *a, const float *b, size_t n)
{
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i]))
            return INFINITY;
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / m;
}

/* ---- rope_ex ---- */

typedef struct rope_case {
    const char *name;
    int n_heads, head_stride, offset, rope_dim, pad;   /* pad: extra floats per row */
    float theta, freq_scale, ext_factor, mscale;
    int n_ctx_orig;
} rope_case_t;

ST_TEST(rope_ex_matches_cpu_bit_for_bit)
{
    static const rope_case_t cases[] = {
        /* Llama-like full heads, plain scaling */
        {"full128", 4, 128, 0, 128, 0, 500000.0f, 1.0f, 0.0f, 1.0f, 0},
        /* Gemma 3 270M heads (256 rotated), linear scaling 1/8 */
        {"gemma256", 2, 256, 0, 256, 0, 1000000.0f, 0.125f, 0.0f, 1.0f, 0},
        /* partial rotation at an offset (MLA: rope part after 32 nope floats), padded rows */
        {"offset", 3, 48, 32, 16, 5, 10000.0f, 1.0f, 0.0f, 1.0f, 0},
        /* YaRN: DeepSeek-V3-like factor 40 on a 4096 context, mscale */
        {"yarn64", 4, 192, 128, 64, 0, 10000.0f, 0.025f, 1.0f, 1.3689f, 4096},
        /* YaRN at the arch-ref deepseek3's numbers (factor 4, 64 positions) */
        {"yarn16", 1, 48, 32, 16, 3, 10000.0f, 0.25f, 1.0f, 1.0f, 64},
        /* YaRN over a full 128-wide head with ext_factor < 1 */
        {"yarn128", 2, 128, 0, 128, 0, 1000000.0f, 0.125f, 0.5f, 1.2079f, 8192},
    };
    enum { N = 37 };
    int32_t pos[N];
    uint64_t s = 3;
    st_backend_t cpu;
    ST_REQUIRE(open_cpu(NULL, &cpu) == 0);
    for (int i = 0; i < N; i++)
        pos[i] = i < 4 ? (int32_t[]){0, 1, 8191, 8192}[i] : (int32_t)(rng(&s) % 8193);

    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (int neox = 0; neox < 2; neox++) {
            const rope_case_t *k = &cases[ci];
            const int row = k->n_heads * k->head_stride + k->pad;
            const size_t len = (size_t)N * row;
            float *ref = malloc(len * 4), *got = malloc(len * 4);
            st_rope_args_t r = {
                .n = N, .row_stride = row, .n_heads = k->n_heads, .head_stride = k->head_stride,
                .offset = k->offset, .rope_dim = k->rope_dim, .pos = pos, .neox = neox,
                .theta = k->theta, .freq_scale = k->freq_scale, .ext_factor = k->ext_factor,
                .beta_fast = 32.0f, .beta_slow = 1.0f, .n_ctx_orig = k->n_ctx_orig,
                .mscale = k->mscale,
            };
            cu_rope_launch_t L;
            st_error_t err;
            ST_REQUIRE(ref && got);
            fill(ref, len, 2.0f, &s);
            memcpy(got, ref, len * 4);
            r.x = ref;
            cpu.ops->rope_ex(cpu.ctx, &r);
            r.x = got;
            ST_REQUIRE(cu_rope_prepare(&r, &L, &err) == ST_OK);
            L.pos = pos;
            cux_host_rope_ex(&L);
            size_t d = n_differ(got, ref, len);
            ST_CHECK_MSG(d == 0, "%s %s: %zu of %zu floats differ (rel %.3g)", k->name,
                         neox ? "neox" : "norm", d, len, rel(got, ref, len));
            if (k->ext_factor != 0.0f && neox)
                fprintf(stderr, "  %s: yarn ramp [%g, %g]\n", k->name, L.lo, L.hi);
            free(ref);
            free(got);
        }
    st_backend_close(&cpu);
}

ST_TEST(rope_ex_refuses_what_the_cpu_refuses)
{
    int32_t pos = 3;
    float x[64];
    st_rope_args_t ok = {.x = x, .n = 1, .row_stride = 64, .n_heads = 1, .head_stride = 64,
                         .offset = 0, .rope_dim = 64, .pos = &pos, .theta = 10000.0f,
                         .freq_scale = 1.0f, .mscale = 1.0f};
    st_rope_args_t bad;
    cu_rope_launch_t L;
    st_error_t err;

    ST_CHECK(cu_rope_prepare(&ok, &L, &err) == ST_OK);
    ST_CHECK(L.half == 32 && L.inv_base == pow(10000.0, -2.0 / 64.0));
    bad = ok;
    bad.offset = 8;   /* 8 + 64 > 64 */
    ST_CHECK(cu_rope_prepare(&bad, &L, &err) == ST_ERR_INVALID);
    ST_CHECK(strstr(err.msg, "does not fit") != NULL);
    bad = ok;
    bad.rope_dim = 1;
    ST_CHECK(cu_rope_prepare(&bad, &L, &err) == ST_ERR_INVALID);
    bad = ok;
    bad.rope_dim = 2 * (CU_ROPE_MAX_PAIRS + 1);
    bad.head_stride = bad.rope_dim;
    ST_CHECK(cu_rope_prepare(&bad, &L, &err) == ST_ERR_INVALID);
}

/* ---- element-wise ---- */

ST_TEST(geglu_softcap_axpy_match_cpu)
{
    const size_t n = 100003;
    float *g = malloc(n * 4), *u = malloc(n * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
    float *dbl = malloc(n * 4);
    st_backend_t sc, best;
    uint64_t s = 9;
    ST_REQUIRE(g && u && ref && got && dbl);
    ST_REQUIRE(open_cpu("scalar", &sc) == 0);
    ST_REQUIRE(open_cpu(NULL, &best) == 0);
    fill(g, n, 12.0f, &s);   /* both tails of the sigmoid */
    fill(u, n, 1.0f, &s);
    g[0] = 0.0f; g[1] = -0.0f; g[2] = 30.0f; g[3] = -30.0f; g[4] = 1e-20f;

    cux_host_geglu(g, u, n, got);
    sc.ops->geglu(sc.ctx, g, u, n, ref);
    ST_CHECK_MSG(n_differ(got, ref, n) == 0, "geglu vs scalar cpu: %zu differ",
                 n_differ(got, ref, n));
    best.ops->geglu(best.ctx, g, u, n, ref);
    for (size_t i = 0; i < n; i++) {
        double x = g[i];
        dbl[i] = (float)(0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) *
                         u[i]);
    }
    double r_best = rel(got, ref, n), r_dbl = rel(got, dbl, n);
    ST_CHECK_MSG(r_best < 1e-6, "geglu vs %s cpu: rel %.3g", best.ops->describe(best.ctx), r_best);
    ST_CHECK_MSG(r_dbl < 1e-6, "geglu vs double: rel %.3g", r_dbl);
    fprintf(stderr, "  geglu: rel %.2g vs best cpu, %.2g vs double\n", r_best, r_dbl);

    static const float caps[] = {30.0f, 50.0f, 0.5f};
    for (size_t ci = 0; ci < 3; ci++) {
        memcpy(got, g, n * 4);
        memcpy(ref, g, n * 4);
        for (size_t i = 0; i < n; i++)   /* logits up to 8 caps */
            got[i] = ref[i] = g[i] * caps[ci] * 0.7f;
        cux_host_softcap(got, caps[ci], n);
        best.ops->softcap(best.ctx, ref, caps[ci], n);
        ST_CHECK_MSG(n_differ(got, ref, n) == 0, "softcap %g: %zu differ (rel %.3g)",
                     (double)caps[ci], n_differ(got, ref, n), rel(got, ref, n));
    }

    memcpy(got, u, n * 4);
    memcpy(ref, u, n * 4);
    cux_host_axpy(got, 0.3711f, g, n);
    best.ops->axpy(best.ctx, ref, 0.3711f, g, n);
    /* the SIMD levels fuse; the scalar one (and an AVX2 tail) rounds twice */
    if (strstr(best.ops->describe(best.ctx), "scalar"))
        ST_CHECK(rel(got, ref, n) < 1e-6);
    else
        ST_CHECK_MSG(n_differ(got, ref, n) == 0, "axpy: %zu differ", n_differ(got, ref, n));
    st_backend_close(&sc);
    st_backend_close(&best);
    free(g); free(u); free(ref); free(got); free(dbl);
}

/* ---- attention ---- */

typedef struct att_case {
    const char *name;
    int n_head, n_head_kv, hd, hv, stride;   /* hv, stride 0: defaults */
    int window;
    float softcap;
    int shared_kv;                           /* V read from the K cache (MLA) */
} att_case_t;

enum { AT_NCTX = 720, AT_SLOTS = 3, AT_MAXT = 24 };

/* Tokens of one call: a prefill chunk in slot 0, decode tokens in slots 1
 * and 2, deep and shallow. */
static int att_tokens(int32_t *slot, int32_t *pos)
{
    int n = 0;
    for (int i = 0; i < 20; i++, n++) {
        slot[n] = 0;
        pos[n] = 100 + i;
    }
    slot[n] = 1; pos[n++] = 699;
    slot[n] = 2; pos[n++] = 5;
    slot[n] = 1; pos[n++] = 700;   /* the next step of slot 1, same call */
    slot[n] = 2; pos[n++] = 0;
    return n;
}

/* Whether float j of a cache row is a key (or a value) some KV head reads. */
static int k_live(const att_case_t *k, int j)
{
    return j < k->n_head_kv * k->hd;
}

static int v_live(const att_case_t *k, int hv, int j)
{
    for (int g = 0; g < k->n_head_kv; g++)
        if (j >= g * k->hd && j < g * k->hd + hv)
            return 1;
    return 0;
}

/* NaN in every cache float no token may read: rows before a slot's first
 * window position or after its last position, and the columns of a live
 * row that are neither keys nor values read. */
static void poison(float *kc, float *vc, const att_case_t *k, int stride, int hv,
                   const int32_t *slot, const int32_t *pos, int n)
{
    for (int sl = 0; sl < AT_SLOTS; sl++) {
        int lo = AT_NCTX, hi = -1;
        for (int t = 0; t < n; t++)
            if (slot[t] == sl) {
                int f = CU_ATT_FIRST_POS(pos[t], k->window);
                lo = lo < f ? lo : f;
                hi = hi > pos[t] ? hi : pos[t];
            }
        for (int p = 0; p < AT_NCTX; p++) {
            float *kr = kc + ((size_t)sl * AT_NCTX + p) * stride;
            float *vr = vc + ((size_t)sl * AT_NCTX + p) * stride;
            const int row_live = p >= lo && p <= hi;
            for (int j = 0; j < stride; j++) {
                if (k->shared_kv) {
                    if (!row_live || !(k_live(k, j) || v_live(k, hv, j)))
                        kr[j] = NAN;
                    continue;
                }
                if (!row_live || !k_live(k, j))
                    kr[j] = NAN;
                if (!row_live || !v_live(k, hv, j))
                    vr[j] = NAN;
            }
        }
    }
}

ST_TEST(attention_extensions_match_cpu)
{
    static const att_case_t cases[] = {
        /* Gemma-like: GQA 8/2, sliding window, soft-capped scores */
        {"gqa-window-softcap", 8, 2, 40, 0, 0, 7, 50.0f, 0},
        /* both at once plus narrower values and a padded row: 2 kv heads of
         * 128 keys, 64 values, rows of 300 */
        {"hv64-stride300", 4, 2, 128, 64, 300, 33, 20.0f, 0},
        /* DeepSeek MLA, absorbed: one KV head, rows [latent 512 | rope 64],
         * values the latent, K and V the same cache */
        {"mla576", 4, 1, 576, 512, 576, 0, 0.0f, 1},
        /* the same with a window (no such model; the paths combine) */
        {"mla576-window", 2, 1, 576, 512, 576, 300, 0.0f, 1},
        /* Gemma 270M heads: 256 wide, window 512 over 700 positions */
        {"hd256-window", 4, 1, 256, 0, 0, 512, 0.0f, 0},
        /* no extension at all, 32 wide (E = 1) */
        {"plain32", 6, 3, 32, 0, 0, 0, 0.0f, 0},
        /* values wider than keys (E from hv) */
        {"hv96-hd48", 2, 2, 48, 96, 192, 0, 0.0f, 0},
    };
    static const int sms[] = {132, 1};
    int32_t slot[AT_MAXT], pos[AT_MAXT];
    const int n = att_tokens(slot, pos);
    st_backend_t cpu;
    uint64_t s = 17;
    ST_REQUIRE(open_cpu(NULL, &cpu) == 0);

    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const att_case_t *k = &cases[ci];
        const int hv = k->hv ? k->hv : k->hd, stride = k->stride ? k->stride : k->n_head_kv * k->hd;
        const size_t cache_n = (size_t)AT_SLOTS * AT_NCTX * stride;
        const size_t q_n = (size_t)n * k->n_head * k->hd, o_n = (size_t)n * k->n_head * hv;
        float *kc = malloc(cache_n * 4), *vc = k->shared_kv ? kc : malloc(cache_n * 4);
        float *q = malloc(q_n * 4), *ref = malloc(o_n * 4), *got = malloc(o_n * 4);
        ST_REQUIRE(kc && vc && q && ref && got);
        fill(kc, cache_n, 1.0f, &s);
        if (!k->shared_kv)
            fill(vc, cache_n, 1.0f, &s);
        fill(q, q_n, 2.0f, &s);   /* peaked enough for the softcap to matter */
        poison(kc, vc, k, stride, hv, slot, pos, n);

        st_attn_args_t a = {
            .n_tokens = n, .n_head = k->n_head, .n_head_kv = k->n_head_kv, .head_dim = k->hd,
            .q = q, .k_cache = kc, .v_cache = vc, .n_ctx = AT_NCTX, .slot = slot, .pos = pos,
            .scale = 1.0f / sqrtf((float)k->hd), .out = ref, .window = k->window,
            .softcap = k->softcap, .head_dim_v = k->hv, .kv_stride = k->stride,
        };
        cpu.ops->attention(cpu.ctx, &a);
        ST_CHECK_MSG(rel(ref, ref, o_n) == 0, "%s: the cpu reference read a poisoned float",
                     k->name);
        a.out = got;

        /* the backend's own plans, then forced ones (many empty splits) */
        for (int pi = 0; pi < 4; pi++) {
            cu_attn_launch_t L;
            st_error_t err;
            const size_t part_floats = (size_t)CU_ATT_PART_ROWS * 4096;
            ST_REQUIRE(cu_attn_prepare(&a, pi < 2 ? sms[pi] : 132, part_floats, &L, &err) == ST_OK);
            if (pi == 2) {            /* one position per split for the deep tokens */
                L.n_splits = 64;
                L.chunk = (701 + 63) / 64;
            } else if (pi == 3) {     /* uneven: 5 splits */
                L.n_splits = 5;
                L.chunk = (701 + 4) / 5;
            }
            int max_span = 0;
            for (int t = 0; t < n; t++) {
                int sp = pos[t] + 1 - CU_ATT_FIRST_POS(pos[t], k->window);
                max_span = max_span > sp ? max_span : sp;
            }
            ST_CHECK(L.n_splits >= 1 && (int64_t)L.n_splits * L.chunk >= max_span);
            if (pi < 2)   /* the backend's plans stay within its scratch */
                ST_CHECK((size_t)n * k->n_head * L.n_splits * (hv > 2 ? hv : 2) <= part_floats ||
                         L.n_splits == 1);
            float *po = malloc((size_t)n * k->n_head * L.n_splits * hv * 4);
            float *pm = malloc((size_t)n * k->n_head * L.n_splits * 2 * 4);
            ST_REQUIRE(po && pm);
            L.slot = slot;
            L.pos = pos;
            L.part_o = po;
            L.part_ml = pm;
            memset(got, 0xff, o_n * 4);   /* NaN: every output must be written */
            ST_REQUIRE(cua_host_attention(&L) == 0);
            double r = rel(got, ref, o_n);
            ST_CHECK_MSG(r < 2e-6, "%s plan %d (%d splits of %d): rel %.3g against the cpu",
                         k->name, pi, L.n_splits, L.chunk, r);
            fprintf(stderr, "  %-20s %2d splits of %3d: rel %.2g\n", k->name, L.n_splits,
                    L.chunk, r);
            free(po);
            free(pm);
        }
        free(q); free(ref); free(got);
        if (!k->shared_kv)
            free(vc);
        free(kc);
    }
    st_backend_close(&cpu);
}

ST_TEST(split_plan_bounds)
{
    uint64_t s = 41;
    int bad = 0;
    for (int it = 0; it < 200000; it++) {
        const int n_tokens = 1 + (int)(rng(&s) % 64), n_head = 1 + (int)(rng(&s) % 128);
        const int hv = 1 + (int)(rng(&s) % CU_ATT_MAX_HEAD_DIM);
        const int span = 1 + (int)(rng(&s) % (it % 2 ? 200 : 200000));
        const int n_sm = 1 + (int)(rng(&s) % 200);
        const size_t part = 1000 + (size_t)(rng(&s) % 20000000);
        int ns, chunk;
        cu_attn_plan(n_tokens, n_head, hv, span, n_sm, part, &ns, &chunk);
        bad += ns < 1 || chunk < 1 || (int64_t)ns * chunk < span ||
               (ns > 1 && ((size_t)n_tokens * n_head * ns * (size_t)(hv > 2 ? hv : 2) > part ||
                           ns > (span + 63) / 64 || (int64_t)(ns - 1) * chunk >= span));
    }
    ST_CHECK_MSG(bad == 0, "%d plans out of bounds", bad);
}

ST_TEST(attention_refusals)
{
    int32_t slot = 0, pos = 3;
    float dummy[4];
    st_attn_args_t a = {.n_tokens = 1, .n_head = 2, .n_head_kv = 1, .head_dim = 64, .q = dummy,
                        .k_cache = dummy, .v_cache = dummy, .n_ctx = 8, .slot = &slot,
                        .pos = &pos, .scale = 1.0f, .out = dummy};
    cu_attn_launch_t L;
    st_error_t err;

    ST_CHECK(cu_attn_prepare(&a, 132, 1 << 20, &L, &err) == ST_OK);
    ST_CHECK(L.head_dim_v == 64 && L.kv_stride == 64 && L.window == 0 && L.softcap == 0.0f);
    a.head_dim = CU_ATT_MAX_HEAD_DIM + 1;
    ST_CHECK(cu_attn_prepare(&a, 132, 1 << 20, &L, &err) == ST_ERR_UNSUPPORTED);
    a.head_dim = 64;
    a.head_dim_v = 80;
    a.kv_stride = 64;   /* 80 values do not fit rows of 64 */
    ST_CHECK(cu_attn_prepare(&a, 132, 1 << 20, &L, &err) == ST_ERR_INVALID);
    a.head_dim_v = 0;
    a.kv_stride = 0;
    a.window = -3;      /* no window, as the CPU reads it */
    a.softcap = -1.0f;
    ST_CHECK(cu_attn_prepare(&a, 132, 1 << 20, &L, &err) == ST_OK);
    ST_CHECK(L.window == 0 && L.softcap == 0.0f);
    /* The CUDA kernels read an f32 cache only: f16/q8_0 are refused by name. */
    a.kv_type = ST_DTYPE_F16;
    ST_CHECK(cu_attn_prepare(&a, 132, 1 << 20, &L, &err) == ST_ERR_UNSUPPORTED);
    ST_CHECK(strstr(err.msg, "f16") != NULL);
    a.kv_type = ST_DTYPE_Q8_0;
    ST_CHECK(cu_attn_prepare(&a, 132, 1 << 20, &L, &err) == ST_ERR_UNSUPPORTED);
}

int main(void)
{
    return st_test_main();
}
