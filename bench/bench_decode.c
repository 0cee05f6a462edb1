/*
 * strata bench decode - single-sequence prefill and decode speed of the
 * stage executor on one machine, against the machine's own read bandwidth.
 *
 * Decode of a small model is bound by streaming the weights once per token,
 * so the figure that matters is decode tokens/s x bytes read per token
 * compared with what this machine can read with the same threads
 * (measured here, same run). Prefill is a batched matrix-matrix pass.
 * Each phase is repeated --reps times; medians are reported.
 *
 * --depth D decodes at positions D..D+G-1 instead of after the prompt: the
 * cache is first filled to D (in prompt-sized chunks, untimed), so decode
 * reads D positions of K/V per layer per token, which is where the KV
 * cache's element type (--kv-type) shows.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_util.h"
#include "st_cpu.h"
#include "st_stage.h"
#include "st_util.h"

const char st_bench_decode_help[] = "prefill and decode tokens/s against the memory bandwidth";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Peak resident set (VmHWM) in bytes. */
static uint64_t peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_maxrss * 1024;
}

int st_bench_decode(int argc, char **argv)
{
    const char *model_path = NULL, *v;
    long threads = 0, P = 128, G = 128, reps = 3, ctx = 2048, depth = 0, l;
    uint32_t kv_type = ST_KV_TYPE_DEFAULT;
    int json = 0, check_rss = 0, rc = 1;
    st_model_t *m = NULL;
    st_stage_t *s = NULL;
    st_error_t err;
    int32_t *tok = NULL, *pos = NULL, *slot = NULL, id;
    double *pre = NULL, *dec = NULL;
    struct stat stt;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: strata bench decode -m MODEL [--threads N] [--prompt-tokens P] "
                   "[--gen-tokens G] [--reps R] [--ctx N] [--depth D] [--kv-type f32|f16|q8_0] "
                   "[--check-rss] [--json]\n");
            return 0;
        }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strcmp(a, "--check-rss")) { check_rss = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) { if (cli_parse_long(a, v, 1, 1024, &l)) return 2; threads = l; }
        else if (!strcmp(a, "--prompt-tokens")) { if (cli_parse_long(a, v, 1, 8192, &l)) return 2; P = l; }
        else if (!strcmp(a, "--gen-tokens")) { if (cli_parse_long(a, v, 1, 8192, &l)) return 2; G = l; }
        else if (!strcmp(a, "--reps")) { if (cli_parse_long(a, v, 1, 100, &l)) return 2; reps = l; }
        else if (!strcmp(a, "--ctx")) { if (cli_parse_long(a, v, 16, 1 << 20, &l)) return 2; ctx = l; }
        else if (!strcmp(a, "--depth")) { if (cli_parse_long(a, v, 0, 1 << 20, &l)) return 2; depth = l; }
        else if (!strcmp(a, "--kv-type")) { if (cli_kv_type(a, v, &kv_type)) return 2; }
        else { fprintf(stderr, "strata bench decode: unknown option '%s'\n", a); return 2; }
    }
    if (!model_path) {
        fprintf(stderr, "strata bench decode: -m MODEL is required\n");
        return 2;
    }
    if ((depth ? depth : P) + G > ctx) {
        fprintf(stderr, "strata bench decode: %s + gen tokens (%ld) exceed --ctx %ld\n",
                depth ? "depth" : "prompt", (depth ? depth : P) + G, ctx);
        return 2;
    }
    if (threads <= 0)
        threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (st_model_open(model_path, NULL, &m, &err) != ST_OK) {
        fprintf(stderr, "strata: %s\n", err.msg);
        return 1;
    }
    st_model_prefetch(m, 0, st_model_hparams(m)->n_layer, 3, NULL, NULL);
    {
        st_stage_params_t sp = st_stage_default_params(m);
        sp.n_ctx = (uint32_t)ctx;
        sp.max_batch = (uint32_t)P;
        sp.max_out = 1;
        sp.n_threads = (int)threads;
        sp.kv_type = kv_type;
        if (st_stage_create(&sp, &s, &err) != ST_OK) {
            fprintf(stderr, "strata: %s\n", err.msg);
            goto out;
        }
    }
    {
        st_sampler_params_t greedy = st_sampler_default_params();
        uint32_t vocab = st_model_hparams(m)->n_vocab;
        greedy.temperature = 0;
        tok = calloc((size_t)P, sizeof(int32_t));
        pos = calloc((size_t)P, sizeof(int32_t));
        slot = calloc((size_t)P, sizeof(int32_t));
        pre = calloc((size_t)reps, sizeof(double));
        dec = calloc((size_t)reps, sizeof(double));
        if (!tok || !pos || !slot || !pre || !dec)
            goto out;
        /* A fixed, deterministic prompt of ordinary token ids (clear of the
         * specials at both ends of a real vocabulary; a synthetic one of a
         * few hundred ids is used whole). */
        uint32_t lo = vocab > 4000 ? 1000 : 0, span = vocab > 4000 ? vocab - 2000 : vocab;
        for (long i = 0; i < P; i++) {
            tok[i] = (int32_t)(lo + (uint32_t)(i * 7919) % span);
            pos[i] = (int32_t)i;
        }
        /* Fill the cache to the depth with the same token sequence, so the
         * prompt runs below rewrite identical rows. */
        for (long d0 = 0; d0 < depth; d0 += P) {
            st_stage_batch_t b = {0};
            st_stage_out_t o = {0};
            long n = ST_MIN(P, depth - d0);
            for (long i = 0; i < n; i++) {
                tok[i] = (int32_t)(lo + (uint32_t)((d0 + i) * 7919) % span);
                pos[i] = (int32_t)(d0 + i);
            }
            st_stage_slot_setup(s, 0, &greedy);
            b.n = (uint32_t)n; b.tokens = tok; b.pos = pos; b.slot = slot;
            b.flags = ST_STAGE_SAMPLE;
            o.ids = &id;
            if (st_stage_forward(s, &b, &o, &err) != ST_OK) {
                fprintf(stderr, "strata: %s\n", err.msg);
                goto out;
            }
        }
        for (long i = 0; i < P; i++) {
            tok[i] = (int32_t)(lo + (uint32_t)(i * 7919) % span);
            pos[i] = (int32_t)i;
        }
        for (long r = 0; r < reps; r++) {
            st_stage_batch_t b = {0};
            st_stage_out_t o = {0};
            uint64_t t0, t1;
            st_stage_slot_setup(s, 0, &greedy);
            b.n = (uint32_t)P; b.tokens = tok; b.pos = pos; b.slot = slot;
            b.flags = ST_STAGE_SAMPLE;
            o.ids = &id;
            t0 = st_now_ns();
            if (st_stage_forward(s, &b, &o, &err) != ST_OK) {
                fprintf(stderr, "strata: %s\n", err.msg);
                goto out;
            }
            t1 = st_now_ns();
            pre[r] = (double)P / ((double)(t1 - t0) * 1e-9);
            t0 = st_now_ns();
            for (long g = 0; g < G; g++) {
                int32_t p = (int32_t)((depth ? depth : P) + g), sl = 0, in = id;
                b.n = 1; b.tokens = &in; b.pos = &p; b.slot = &sl;
                if (st_stage_forward(s, &b, &o, &err) != ST_OK) {
                    fprintf(stderr, "strata: %s\n", err.msg);
                    goto out;
                }
            }
            t1 = st_now_ns();
            dec[r] = (double)G / ((double)(t1 - t0) * 1e-9);
        }
    }
    {
        double pre_med = median(pre, (int)reps), dec_med = median(dec, (int)reps);
        /* Peak RSS first: the bandwidth probe below allocates a buffer the
         * size of the weights, which is the benchmark's, not the engine's. */
        uint64_t rss = peak_rss(), kv = st_stage_kv_bytes(s);
        /* Bytes per token count only the experts a token uses. The probe
         * reads as much as decode does, except for a MoE model: its tokens
         * pick other experts each step out of the whole file, so a probe of
         * the active bytes alone would sit in the cache and flatter decode. */
        const st_hparams_t *hp = st_model_hparams(m);
        uint64_t bpt = st_stage_weight_bytes(s);
        uint64_t fsize = stat(model_path, &stt) == 0 ? (uint64_t)stt.st_size : 0;
        uint64_t probe = hp->n_expert && fsize > bpt ? fsize : bpt;
        uint64_t kvt = st_model_kv_bytes_per_token_layer(m, kv_type) * hp->n_layer;
        uint64_t kvt_full = st_model_kv_full_bytes_per_token_layer(m, kv_type) * hp->n_layer;
        /* The engine's memory budget: the mapped file, the KV cache of the
         * whole context (allocated up front, resident as positions fill: at
         * --depth D of --ctx N the cache is D/N resident) and 64 MiB for
         * everything else (scratch, tokenizer, stacks). */
        uint64_t budget = fsize + kv + (64u << 20);
        int rss_ok = rss <= budget;
        double bw = st_cpu_read_bandwidth_gbps(probe, (int)threads);
        double frac = bw > 0 ? dec_med * (double)bpt / (bw * 1e9) : 0;
        if (json) {
            printf("{\"model\":\"%s\",\"threads\":%ld,\"isa\":\"%s\",\"prompt_tokens\":%ld,"
                   "\"gen_tokens\":%ld,\"reps\":%ld,\"prefill_tokens_per_s\":%.1f,"
                   "\"decode_tokens_per_s\":%.1f,\"bytes_per_token\":%llu,"
                   "\"read_bandwidth_gbps\":%.2f,\"bandwidth_fraction\":%.3f,"
                   "\"peak_rss_bytes\":%llu,\"file_bytes\":%llu,\"kv_cache_bytes\":%llu,"
                   "\"ctx\":%ld,\"arch\":\"%s\",\"n_expert\":%u,\"n_expert_used\":%u,"
                   "\"kv_bytes_per_token\":%llu,\"kv_full_bytes_per_token\":%llu,"
                   "\"kv_type\":\"%s\",\"depth\":%ld,\"peak_rss_budget_bytes\":%llu,"
                   "\"peak_rss_within_budget\":%s}\n",
                   model_path, threads, st_cpu_isa_string(), P, G, reps, pre_med, dec_med,
                   (unsigned long long)bpt, bw, frac, (unsigned long long)rss,
                   (unsigned long long)fsize, (unsigned long long)kv, ctx, st_model_arch(m),
                   hp->n_expert, hp->n_expert_used, (unsigned long long)kvt,
                   (unsigned long long)kvt_full, st_dtype_name(kv_type), depth,
                   (unsigned long long)budget, rss_ok ? "true" : "false");
        } else {
            printf("model            %s\n", model_path);
            printf("threads          %ld (%s)\n", threads, st_cpu_isa_string());
            printf("prefill          %.1f tokens/s  (%ld-token prompt, median of %ld)\n", pre_med, P, reps);
            printf("decode           %.1f tokens/s  (%ld tokens from position %ld, median of %ld)\n",
                   dec_med, G, depth ? depth : P, reps);
            if (hp->n_expert)
                printf("bytes per token  %.1f MB of weights (%u of %u experts per MoE layer)\n",
                       (double)bpt / 1e6, hp->n_expert_used, hp->n_expert);
            else
                printf("bytes per token  %.1f MB of weights\n", (double)bpt / 1e6);
            printf("kv per token     %llu bytes, %s (full K/V would be %llu)\n",
                   (unsigned long long)kvt, st_dtype_name(kv_type), (unsigned long long)kvt_full);
            printf("read bandwidth   %.2f GB/s measured with %ld threads over %.0f MB\n", bw, threads, (double)probe / 1e6);
            printf("decode/bandwidth %.1f %% of the read roofline (%.0f tokens/s)\n", 100 * frac,
                   bw * 1e9 / (double)bpt);
            printf("peak RSS         %.1f MB (file %.1f MB + KV cache %.1f MB for ctx %ld; budget +64 MiB = %.1f MB): %s\n",
                   (double)rss / 1e6, (double)fsize / 1e6, (double)kv / 1e6, ctx,
                   (double)budget / 1e6, rss_ok ? "within budget" : "OVER BUDGET");
        }
        if (check_rss && !rss_ok) {
            fprintf(stderr, "strata bench decode: peak RSS %.1f MB is over the budget of %.1f MB\n",
                    (double)rss / 1e6, (double)budget / 1e6);
            goto out;
        }
    }
    rc = 0;
out:
    free(tok); free(pos); free(slot); free(pre); free(dec);
    st_stage_free(s);
    st_model_close(m);
    return rc;
}
