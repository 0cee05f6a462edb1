/*
 * test_kernels_kv.c - workbench for the compact KV cache: kv_store into F16
 * and Q8_0 rows and attention reading them in place, on every supported
 * ISA level and 1/2/3 threads, against a float64 attention over the same
 * rounded values (the cache dequantized by the reference decoder).
 *
 * Shapes: the SIMD head path (head_dim 64, 128, 256 with GQA), a width it
 * does not take (40, F16 only: Q8_0 needs whole blocks of 32), Gemma 3's
 * sliding window and soft-capped scores (generic path), and DeepSeek's
 * absorbed MLA (one latent row of 512 + 64 read as keys, its first 512 as
 * values, kv_stride 576, stored once through both pointers).
 *
 * Tolerance: once the values are rounded the kernels are float sums of at
 * most a few hundred terms, held to 1e-5 of the magnitude of the terms, as
 * the f32 workbench in test_kernels_ops.c is. Results must not depend on
 * the thread count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt_util.h"
#include "st_test.h"
#include "st_util.h"

#define FOR_EACH_BACKEND(be, isa, nth)                                              \
    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++)                               \
        if (st_cpu_isa_supported((st_cpu_isa_t)isa))                                \
            for (int nth = 1; nth <= 3; nth++)                                      \
                for (st_backend_t be, *be##_once = kt_open((st_cpu_isa_t)isa, nth, 64, 4096, &be) == 0 ? &be : NULL; \
                     be##_once; st_backend_close(&be), be##_once = NULL)

typedef struct kv_case {
    const char *name;
    int n_head, n_kv, hd, hv, stride;   /* hv, stride 0: hd, n_kv * hd */
    int window;
    float softcap;
    int mla;                            /* K and V are one cache */
} kv_case_t;

static void kv_attention_case(int *st_failed_, const kv_case_t *c, uint32_t type)
{
    const int hd = c->hd, hv = c->hv ? c->hv : hd;
    const int kv_dim = c->stride ? c->stride : c->n_kv * hd;
    const int n_ctx = 200, n_slots = 3, n = 7;
    int32_t slot[7] = {0, 2, 2, 1, 0, 2, 1}, pos[7] = {0, 63, 64, 129, 199, 150, 5};
    const size_t rb = st_dtype_row_bytes(type, (uint64_t)kv_dim);
    const size_t rows = (size_t)n_slots * n_ctx;
    uint64_t s = 77 + type;
    float *src_k = malloc(rows * kv_dim * 4), *src_v = malloc(rows * kv_dim * 4);
    uint8_t *kc = calloc(rows, rb), *vc = calloc(rows, rb);
    float *fk = malloc(rows * kv_dim * 4), *fv = malloc(rows * kv_dim * 4);
    float *q = malloc((size_t)n * c->n_head * hd * 4), *out = malloc((size_t)n * c->n_head * hv * 4);
    float *first = malloc((size_t)n * c->n_head * hv * 4);
    int32_t *all_slot = malloc(rows * 4), *all_pos = malloc(rows * 4);
    ST_REQUIRE(rb && src_k && src_v && kc && vc && fk && fv && q && out && first && all_slot &&
               all_pos);
    kt_fill(src_k, rows * kv_dim, 1.0f, &s);
    kt_fill(src_v, rows * kv_dim, 1.0f, &s);
    kt_fill(q, (size_t)n * c->n_head * hd, 1.0f, &s);
    /* Spread the magnitudes so Q8_0's per-block scales differ. */
    for (size_t i = 0; i < rows * kv_dim; i += 37)
        src_k[i] *= 6.0f;
    for (size_t r = 0; r < rows; r++) {
        all_slot[r] = (int32_t)(r / n_ctx);
        all_pos[r] = (int32_t)(r % n_ctx);
    }

    FOR_EACH_BACKEND(be, isa, nth) {
        /* Store every row through the backend, then check the bytes are the
         * reference rounding (st_dtype_quantize_row). */
        memset(kc, 0, rows * rb);
        memset(vc, 0, rows * rb);
        be.ops->kv_store(be.ctx, src_k, c->mla ? src_k : src_v, (int)rows, kv_dim, all_slot,
                         all_pos, kc, c->mla ? kc : vc, n_ctx, type);
        if (isa == 0 && nth == 1) {
            uint8_t *row = malloc(rb);
            ST_REQUIRE(row);
            for (size_t r = 0; r < rows; r += 41) {
                st_dtype_quantize_row(type, src_k + r * kv_dim, row, (uint64_t)kv_dim);
                ST_CHECK(memcmp(row, kc + r * rb, rb) == 0);
            }
            free(row);
            for (size_t r = 0; r < rows; r++) {
                st_dtype_dequantize_row(type, kc + r * rb, fk + r * kv_dim, (uint64_t)kv_dim);
                st_dtype_dequantize_row(type, (c->mla ? kc : vc) + r * rb, fv + r * kv_dim,
                                        (uint64_t)kv_dim);
            }
        }
        st_attn_args_t a = { .n_tokens = n, .n_head = c->n_head, .n_head_kv = c->n_kv,
                             .head_dim = hd, .q = q, .k_cache = kc, .v_cache = c->mla ? kc : vc,
                             .n_ctx = n_ctx, .slot = slot, .pos = pos,
                             .scale = 1.0f / sqrtf((float)hd), .out = out, .window = c->window,
                             .softcap = c->softcap, .head_dim_v = c->hv, .kv_stride = c->stride,
                             .kv_type = type };
        be.ops->attention(be.ctx, &a);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < c->n_head; h++) {
                int g = h / (c->n_head / c->n_kv);
                int p0 = c->window > 0 && pos[t] + 1 > c->window ? pos[t] + 1 - c->window : 0;
                const float *qh = q + ((size_t)t * c->n_head + h) * hd;
                const float *kb = fk + (size_t)slot[t] * n_ctx * kv_dim + g * hd;
                const float *vb = fv + (size_t)slot[t] * n_ctx * kv_dim + g * hd;
                double sc[200], mx = -1e300, sum = 0, o[576] = {0}, mag[576] = {0};
                for (int j = p0; j <= pos[t]; j++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += (double)qh[i] * kb[(size_t)j * kv_dim + i];
                    d *= 1.0f / sqrtf((float)hd);
                    if (c->softcap > 0)
                        d = c->softcap * tanh(d / c->softcap);
                    sc[j] = d;
                    mx = fmax(mx, d);
                }
                for (int j = p0; j <= pos[t]; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int j = p0; j <= pos[t]; j++)
                    for (int i = 0; i < hv; i++) {
                        o[i] += sc[j] / sum * vb[(size_t)j * kv_dim + i];
                        mag[i] += sc[j] / sum * fabs(vb[(size_t)j * kv_dim + i]);
                    }
                const float *got = out + ((size_t)t * c->n_head + h) * hv;
                int bad = 0;
                for (int i = 0; i < hv; i++)
                    bad += fabs(got[i] - o[i]) > 1e-5 * mag[i] + 1e-6;
                if (bad)
                    fprintf(stderr, "%s %s isa %d threads %d token %d head %d: %d values off\n",
                            c->name, st_dtype_name(type), isa, nth, t, h, bad);
                ST_CHECK(bad == 0);
            }
        if (nth == 1)
            memcpy(first, out, (size_t)n * c->n_head * hv * 4);
        else
            ST_CHECK(memcmp(first, out, (size_t)n * c->n_head * hv * 4) == 0);
    }
    free(src_k); free(src_v); free(kc); free(vc); free(fk); free(fv); free(q); free(out);
    free(first); free(all_slot); free(all_pos);
}

static const kv_case_t cases[] = {
    {"llama head 64 (SmolLM2)", 9, 3, 64, 0, 0, 0, 0.0f, 0},
    {"head 128", 4, 2, 128, 0, 0, 0, 0.0f, 0},
    {"gemma3 head 256", 4, 1, 256, 0, 0, 0, 0.0f, 0},
    {"gemma3 sliding window", 4, 1, 256, 0, 0, 48, 0.0f, 0},
    {"softcap (generic path)", 4, 2, 64, 0, 0, 0, 30.0f, 0},
    {"mla 512 + 64", 4, 1, 576, 512, 576, 0, 0.0f, 1},
    {"8 query heads per KV head", 16, 2, 64, 0, 0, 0, 0.0f, 0},
    {"5 query heads per KV head, window", 10, 2, 128, 0, 0, 40, 0.0f, 0},
};

ST_TEST(kv_f16_store_and_attention_vs_double)
{
    for (size_t i = 0; i < ST_ARRAY_SIZE(cases); i++)
        kv_attention_case(st_failed_, &cases[i], ST_DTYPE_F16);
    /* a width the SIMD head path does not take */
    kv_case_t odd = {"head 40", 6, 6, 40, 0, 0, 0, 0.0f, 0};
    kv_attention_case(st_failed_, &odd, ST_DTYPE_F16);
}

ST_TEST(kv_q8_0_store_and_attention_vs_double)
{
    for (size_t i = 0; i < ST_ARRAY_SIZE(cases); i++)
        kv_attention_case(st_failed_, &cases[i], ST_DTYPE_Q8_0);
}

/* f32 through the same entry points is the plain cache, bit for bit. */
ST_TEST(kv_f32_is_unchanged)
{
    kv_attention_case(st_failed_, &cases[0], ST_DTYPE_F32);
    kv_attention_case(st_failed_, &cases[5], ST_DTYPE_F32);
}

/* Q8_0 rounding as GGUF's reference: d = max|x|/127 in fp16, q = round(x/d). */
ST_TEST(kv_q8_0_block_layout)
{
    float x[32];
    uint8_t b[34];
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i - 16) * 0.25f;
    ST_REQUIRE(st_dtype_quantize_row(ST_DTYPE_Q8_0, x, b, 32) == 0);
    uint16_t dh;
    memcpy(&dh, b, 2);
    ST_CHECK(dh == st_f32_to_fp16(4.0f / 127.0f));
    ST_CHECK((int8_t)b[2] == -127);
    ST_CHECK((int8_t)b[2 + 16] == 0);
    ST_CHECK((int8_t)b[2 + 31] == (int8_t)lroundf(3.75f * 127.0f / 4.0f));
    ST_CHECK(st_dtype_quantize_row(ST_DTYPE_Q8_0, x, b, 31) == -1);
    ST_CHECK(st_dtype_quantize_row(ST_DTYPE_Q4_0, x, b, 32) == -1);
    uint32_t t = 99;
    ST_CHECK(st_kv_type_parse("q8_0", &t) == 0 && t == ST_DTYPE_Q8_0);
    ST_CHECK(st_kv_type_parse("f16", &t) == 0 && t == ST_DTYPE_F16);
    ST_CHECK(st_kv_type_parse("q4_0", &t) == -1 && t == ST_DTYPE_F16);
    ST_CHECK(!st_kv_type_valid(ST_DTYPE_Q4_0) && st_kv_type_valid(ST_DTYPE_F32));
}

int main(void)
{
    return st_test_main();
}
