/*
 * gpu_tool.c - `strata-gpu`: the GPU checks and benchmark behind
 * bench/gpu/check.sh (see gpu_tool.h for the subcommands).
 *
 * Everything runs through the stage executor, as a worker would: compare
 * opens the same model on the "cpu" and "cuda" backends and diffs their
 * logits; bench measures prefill and decode on "cuda" and states them
 * against the device's copy bandwidth and cuBLAS bf16 GEMM rate measured
 * in the same script (roofline). Nothing here needs Python, UCX or MPI.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_tool.h"
#include "st_cuda.h"
#include "st_dtype.h"
#include "st_stage.h"
#include "st_util.h"

/* Llama shapes: SmolLM2-135M, Llama-3.2-1B, Llama-3-8B. */
static const gpu_shape_t shapes[] = {
    {"small", 30, 576, 9, 3, 1536, 49152, 100000.0f, 1, ST_DTYPE_BF16},
    {"1b", 16, 2048, 32, 8, 8192, 128256, 500000.0f, 1, ST_DTYPE_BF16},
    {"8b", 32, 4096, 32, 8, 14336, 128256, 500000.0f, 0, ST_DTYPE_BF16},
};

static int usage(void)
{
    fprintf(stderr,
            "usage: strata-gpu gen OUT.gguf --shape small|1b|8b [--type bf16|q4_0|..|q6_k] [--layers N] [--seed S]\n"
            "       strata-gpu roofline [--device D]\n"
            "       strata-gpu compare -m MODEL [--tokens N] [--gen G] [--tol X] [--require-greedy]\n"
            "       strata-gpu bench -m MODEL --copy-gbps X --gemm-tflops Y [--prompt P] [--gen G]\n");
    return 2;
}

static const char *opt(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return dflt;
}

static int flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name))
            return 1;
    return 0;
}

static int32_t prompt_token(uint32_t i, uint32_t vocab)
{
    return (int32_t)((1000u + i * 7919u) % (vocab - 2u) + 1u);
}

static int32_t argmax(const float *x, uint32_t n)
{
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return (int32_t)b;
}

/* ---- gen ---- */

static int cmd_gen(int argc, char **argv)
{
    const char *shape = opt(argc, argv, "--shape", "small");
    const char *type = opt(argc, argv, "--type", "bf16");
    char name[64];
    gpu_shape_t s;
    uint32_t wt;
    size_t i;

    if (argc < 2 || argv[1][0] == '-')
        return usage();
    for (i = 0; i < ST_ARRAY_SIZE(shapes); i++)
        if (!strcmp(shapes[i].name, shape))
            break;
    if (i == ST_ARRAY_SIZE(shapes))
        return usage();
    s = shapes[i];
    s.n_layer = (uint32_t)atoi(opt(argc, argv, "--layers", "0"));
    if (s.n_layer == 0)
        s.n_layer = shapes[i].n_layer;
    for (wt = 0; wt < ST_DTYPE_COUNT_; wt++)
        if (st_dtype_valid(wt) && !strcmp(st_dtype_name(wt), type))
            break;
    if (wt == ST_DTYPE_COUNT_) {
        fprintf(stderr, "strata-gpu gen: unknown type '%s'\n", type);
        return usage();
    }
    s.wtype = wt;
    if (wt != ST_DTYPE_BF16) {
        /* the benchmark table names the model by general.name */
        snprintf(name, sizeof name, "%s-%s", s.name, type);
        s.name = name;
    }
    if (gpu_gen_model(argv[1], &s, strtoull(opt(argc, argv, "--seed", "1"), NULL, 10)) != 0) {
        fprintf(stderr, "strata-gpu gen: cannot write %s\n", argv[1]);
        return 1;
    }
    return 0;
}

/* ---- roofline ---- */

static int cmd_roofline(int argc, char **argv)
{
    int dev = atoi(opt(argc, argv, "--device", "0"));
    double gbps = 0, tflops = 0;
    st_error_t err;

    if (st_cuda_copy_bandwidth(dev, (size_t)1 << 30, &gbps, &err) != ST_OK ||
        st_cuda_gemm_tflops(dev, 8192, 8192, 8192, &tflops, &err) != ST_OK) {
        fprintf(stderr, "strata-gpu roofline: %s\n", err.msg);
        return 1;
    }
    printf("copy_gbps=%.1f gemm_tflops=%.1f\n", gbps, tflops);
    return 0;
}

/* ---- compare ---- */

typedef struct run_out {
    float   *prefill;   /* [n][vocab] */
    float   *steps;     /* [gen][vocab] */
    int32_t *ids;       /* [gen + 1]: greedy continuation */
} run_out_t;

static int run_backend(st_model_t *m, const char *backend, uint32_t n, uint32_t gen, run_out_t *r)
{
    const uint32_t V = st_model_hparams(m)->n_vocab;
    st_stage_params_t sp = st_stage_default_params(m);
    int32_t *tok = calloc(n, sizeof(int32_t)), *pos = calloc(n, sizeof(int32_t));
    int32_t *slot = calloc(n, sizeof(int32_t));
    uint8_t *want = malloc(n);
    st_stage_t *s = NULL;
    st_error_t err;
    int rc = -1;

    if (!tok || !pos || !slot || !want)
        goto out;
    sp.n_ctx = n + gen + 1;
    sp.max_batch = n;
    sp.max_out = n;
    sp.backend = backend;
    sp.kv_type = ST_DTYPE_F32;   /* the CUDA kernels keep an f32 cache; CPU alike to compare */
    if (st_stage_create(&sp, &s, &err) != ST_OK) {
        fprintf(stderr, "strata-gpu: %s: %s\n", backend, err.msg);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        tok[i] = prompt_token(i, V);
        pos[i] = (int32_t)i;
        want[i] = 1;
    }
    {
        st_stage_batch_t b = {.n = n, .tokens = tok, .pos = pos, .slot = slot, .want = want};
        st_stage_out_t o = {.logits = r->prefill};
        if (st_stage_forward(s, &b, &o, &err) != ST_OK) {
            fprintf(stderr, "strata-gpu: %s prefill: %s\n", backend, err.msg);
            goto out;
        }
    }
    r->ids[0] = argmax(r->prefill + (size_t)(n - 1) * V, V);
    for (uint32_t g = 0; g < gen; g++) {
        int32_t p = (int32_t)(n + g), sl = 0;
        st_stage_batch_t b = {.n = 1, .tokens = &r->ids[g], .pos = &p, .slot = &sl};
        st_stage_out_t o = {.logits = r->steps + (size_t)g * V};
        if (st_stage_forward(s, &b, &o, &err) != ST_OK) {
            fprintf(stderr, "strata-gpu: %s decode: %s\n", backend, err.msg);
            goto out;
        }
        r->ids[g + 1] = argmax(o.logits, V);
    }
    rc = 0;
out:
    st_stage_free(s);
    free(tok); free(pos); free(slot); free(want);
    return rc;
}

/* Largest |a - b| over the largest |b| of each row, maximised over rows. */
static double rel_err(const float *a, const float *b, uint32_t rows, uint32_t V, uint32_t *top1)
{
    double worst = 0;
    *top1 = 0;
    for (uint32_t r = 0; r < rows; r++) {
        const float *x = a + (size_t)r * V, *y = b + (size_t)r * V;
        double d = 0, mx = 1e-30;
        for (uint32_t i = 0; i < V; i++) {
            d = fmax(d, fabs((double)x[i] - y[i]));
            mx = fmax(mx, fabs((double)y[i]));
        }
        worst = fmax(worst, d / mx);
        *top1 += argmax(x, V) == argmax(y, V);
    }
    return worst;
}

static int cmd_compare(int argc, char **argv)
{
    const char *path = opt(argc, argv, "-m", NULL);
    uint32_t n = (uint32_t)atoi(opt(argc, argv, "--tokens", "32"));
    uint32_t gen = (uint32_t)atoi(opt(argc, argv, "--gen", "16"));
    double tol = atof(opt(argc, argv, "--tol", "0.05"));
    int need_greedy = flag(argc, argv, "--require-greedy");
    run_out_t r[2] = {{0}};
    st_model_t *m = NULL;
    st_error_t err;
    int rc = 1;
    uint32_t V, same = 0, top1_pf = 0, top1_dec = 0;
    double e_pf, e_dec = 0;

    if (!path || n < 1 || n > 4096 || gen > 4096)
        return usage();
    if (st_model_open(path, NULL, &m, &err) != ST_OK) {
        fprintf(stderr, "strata-gpu: %s\n", err.msg);
        return 1;
    }
    V = st_model_hparams(m)->n_vocab;
    for (int k = 0; k < 2; k++) {
        r[k].prefill = malloc((size_t)n * V * sizeof(float));
        r[k].steps = malloc(((size_t)gen + 1) * V * sizeof(float));
        r[k].ids = calloc(gen + 1, sizeof(int32_t));
        if (!r[k].prefill || !r[k].steps || !r[k].ids)
            goto out;
    }
    if (run_backend(m, "cpu", n, gen, &r[0]) || run_backend(m, "cuda", n, gen, &r[1]))
        goto out;
    e_pf = rel_err(r[1].prefill, r[0].prefill, n, V, &top1_pf);
    /* Decode logits are comparable only while both continuations agree. */
    while (same < gen && r[0].ids[same] == r[1].ids[same])
        same++;
    if (same)
        e_dec = rel_err(r[1].steps, r[0].steps, same, V, &top1_dec);
    same += same == gen && r[0].ids[gen] == r[1].ids[gen];
    printf("compare %s: prefill %u tokens rel.err %.2e, top-1 %u/%u; decode rel.err %.2e over "
           "%u steps; greedy ids equal for %u/%u\n", st_model_name(m), n, e_pf, top1_pf, n, e_dec,
           same < gen ? same : gen, same, gen + 1);
    rc = 0;
    if (e_pf > tol || e_dec > tol) {
        printf("FAIL: relative error above %.2e\n", tol);
        rc = 1;
    }
    if (top1_pf * 10 < n * 9) {
        printf("FAIL: prefill top-1 agreement %u/%u below 90%%\n", top1_pf, n);
        rc = 1;
    }
    if (need_greedy && same != gen + 1) {
        printf("FAIL: greedy continuations differ at step %u (cpu %d, cuda %d)\n", same,
               r[0].ids[same], r[1].ids[same]);
        rc = 1;
    }
out:
    for (int k = 0; k < 2; k++) {
        free(r[k].prefill); free(r[k].steps); free(r[k].ids);
    }
    st_model_close(m);
    return rc;
}

/* ---- bench ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_bench(int argc, char **argv)
{
    static const uint32_t batches[] = {1, 8, 64};
    const char *path = opt(argc, argv, "-m", NULL);
    const uint32_t P = (uint32_t)atoi(opt(argc, argv, "--prompt", "512"));
    const uint32_t G = (uint32_t)atoi(opt(argc, argv, "--gen", "32"));
    const uint32_t Pd = 32;   /* prompt of each decoding sequence */
    const double copy_gbps = atof(opt(argc, argv, "--copy-gbps", "0"));
    const double gemm_tflops = atof(opt(argc, argv, "--gemm-tflops", "0"));
    const uint32_t B_max = 64;
    st_model_t *m = NULL;
    st_stage_t *s = NULL;
    st_error_t err;
    int32_t *tok = NULL, *pos = NULL, *slot = NULL, *ids = NULL;
    float *logits = NULL;
    double t_pf[3], dec_tps[3], dec_frac[3];
    int rc = 1;

    if (!path || P < 1 || P > 8192 || G < 1 || G > 4096 || copy_gbps <= 0 || gemm_tflops <= 0)
        return usage();
    if (st_model_open(path, NULL, &m, &err) != ST_OK) {
        fprintf(stderr, "strata-gpu: %s\n", err.msg);
        return 1;
    }
    const st_hparams_t *hp = st_model_hparams(m);
    const uint32_t V = hp->n_vocab, q_dim = hp->n_head * hp->head_dim;
    const uint32_t kv_dim = hp->n_head_kv * hp->head_dim;
    {
        st_stage_params_t sp = st_stage_default_params(m);
        sp.n_ctx = ST_MAX(P, Pd + G + 1) + 1;
        sp.n_slots = B_max;
        sp.max_batch = ST_MAX(P, B_max);
        sp.max_out = B_max;
        sp.backend = "cuda";
        sp.kv_type = ST_DTYPE_F32;   /* the CUDA kernels keep an f32 cache */
        if (st_stage_create(&sp, &s, &err) != ST_OK) {
            fprintf(stderr, "strata-gpu: %s\n", err.msg);
            goto out;
        }
    }
    tok = calloc(ST_MAX(P, B_max), sizeof(int32_t));
    pos = calloc(ST_MAX(P, B_max), sizeof(int32_t));
    slot = calloc(ST_MAX(P, B_max), sizeof(int32_t));
    ids = calloc(B_max, sizeof(int32_t));
    logits = malloc((size_t)B_max * V * sizeof(float));
    if (!tok || !pos || !slot || !ids || !logits)
        goto out;

    /* Prefill: one sequence of P tokens, logits of the last; one warm-up
     * pass then three timed, median kept. */
    for (uint32_t i = 0; i < P; i++) {
        tok[i] = prompt_token(i, V);
        pos[i] = (int32_t)i;
        slot[i] = 0;
    }
    for (int r = -1; r < 3; r++) {
        st_stage_batch_t b = {.n = P, .tokens = tok, .pos = pos, .slot = slot};
        st_stage_out_t o = {.logits = logits};
        uint64_t t0 = st_now_ns();
        if (st_stage_forward(s, &b, &o, &err) != ST_OK) {
            fprintf(stderr, "strata-gpu: prefill: %s\n", err.msg);
            goto out;
        }
        if (r >= 0)
            t_pf[r] = (double)(st_now_ns() - t0) * 1e-9;
    }
    qsort(t_pf, 3, sizeof t_pf[0], cmp_double);

    /* Decode: B sequences (slots 0..B-1), each prefilled with Pd tokens,
     * then G steps of B tokens with greedy sampling, timed end to end
     * (logits to the host and the host sampler included, as a worker runs). */
    for (size_t bi = 0; bi < ST_ARRAY_SIZE(batches); bi++) {
        const uint32_t B = batches[bi];
        st_sampler_params_t greedy = st_sampler_default_params();
        uint64_t t0;
        double secs, bytes;
        greedy.temperature = 0;
        for (uint32_t q = 0; q < B; q++) {
            st_stage_batch_t b = {.n = Pd, .tokens = tok, .pos = pos, .slot = slot,
                                  .flags = ST_STAGE_SAMPLE};
            st_stage_out_t o = {.ids = &ids[q]};
            for (uint32_t i = 0; i < Pd; i++)
                slot[i] = (int32_t)q;
            if (st_stage_slot_setup(s, q, &greedy) != ST_OK ||
                st_stage_forward(s, &b, &o, &err) != ST_OK) {
                fprintf(stderr, "strata-gpu: decode prompt: %s\n", err.msg);
                goto out;
            }
        }
        t0 = st_now_ns();
        for (uint32_t g = 0; g < G; g++) {
            int32_t dpos[64], dslot[64], in[64];
            st_stage_batch_t b = {.n = B, .tokens = in, .pos = dpos, .slot = dslot,
                                  .flags = ST_STAGE_SAMPLE};
            uint8_t want[64];
            st_stage_out_t o = {.ids = ids};
            for (uint32_t q = 0; q < B; q++) {
                in[q] = ids[q];
                dpos[q] = (int32_t)(Pd + g);
                dslot[q] = (int32_t)q;
                want[q] = 1;
            }
            b.want = want;
            if (st_stage_forward(s, &b, &o, &err) != ST_OK) {
                fprintf(stderr, "strata-gpu: decode: %s\n", err.msg);
                goto out;
            }
        }
        secs = (double)(st_now_ns() - t0) * 1e-9;
        dec_tps[bi] = (double)B * G / secs;
        /* Bytes a step must move: every weight once, plus the K and V
         * rows each sequence attends to (mean length Pd + G/2). */
        bytes = (double)st_stage_weight_bytes(s) +
                (double)B * (Pd + G / 2.0 + 1) * kv_dim * 4.0 * 2.0 * hp->n_layer;
        dec_frac[bi] = bytes * G / secs / (copy_gbps * 1e9);
    }
    {
        /* Matmul FLOPs of the layers for P tokens, the head for one row,
         * and attention (QK and PV: 4 * len * q_dim per token per layer). */
        double layer = (double)hp->n_embd * (q_dim + 2.0 * kv_dim) + (double)q_dim * hp->n_embd +
                       3.0 * hp->n_embd * hp->n_ff;
        double flops = 2.0 * P * layer * hp->n_layer + 2.0 * V * hp->n_embd +
                       4.0 * ((double)P * (P + 1) / 2.0) * q_dim * hp->n_layer;
        double tf = flops / t_pf[1] / 1e12;
        printf("| %-22s | %9.0f | %6.1f (%4.1f%%) | %7.1f (%4.1f%%) | %7.1f (%4.1f%%) | %8.1f (%4.1f%%) |\n",
               st_model_name(m), P / t_pf[1], tf, 100 * tf / gemm_tflops, dec_tps[0],
               100 * dec_frac[0], dec_tps[1], 100 * dec_frac[1], dec_tps[2], 100 * dec_frac[2]);
    }
    rc = 0;
out:
    free(tok); free(pos); free(slot); free(ids); free(logits);
    st_stage_free(s);
    st_model_close(m);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (!strcmp(argv[1], "gen"))
        return cmd_gen(argc - 1, argv + 1);
    if (!strcmp(argv[1], "roofline"))
        return cmd_roofline(argc - 1, argv + 1);
    if (!strcmp(argv[1], "compare"))
        return cmd_compare(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench"))
        return cmd_bench(argc - 1, argv + 1);
    return usage();
}
