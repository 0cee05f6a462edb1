/*
 * strata perplexity - teacher-forced accuracy of a KV cache type against a
 * reference type on real text.
 *
 * The text is tokenized (BOS as the model asks) and its first --max-tokens
 * tokens run through two stages in one process, one with --kv-type and one
 * with --ref-kv-type (default f32), in batches of --batch positions, every
 * position's logits kept. For each position i predicting token i+1 it
 * takes the two next-token distributions P (reference) and Q (tested):
 *
 *   KL(P || Q) = sum_v P(v) (log P(v) - log Q(v))     (nats, in double)
 *   top-1 agreement: argmax P == argmax Q
 *   perplexity of each: exp(mean -log P(token i+1))
 *
 * and prints the means, the largest KL and its position (--per-position
 * prints every position too, --json one object). Positions run 0..n-1 of
 * one sequence, so the later ones attend over the whole cache: the long
 * context is where a compact cache's rounding accumulates.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "st_gguf.h"
#include "st_stage.h"
#include "st_tokenizer.h"

const char st_cmd_perplexity_help[] =
    "KL divergence and top-1 agreement of a KV cache type against f32 on a text";

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata perplexity -m MODEL -f TEXT [options]\n"
        "  -m, --model PATH       GGUF model\n"
        "  -f, --file PATH        text to score (UTF-8)\n"
        "      --kv-type T        KV cache type tested: f16 (default), f32, q8_0\n"
        "      --ref-kv-type T    reference KV cache type (default f32)\n"
        "      --max-tokens N     score the first N tokens (default 2048)\n"
        "      --batch N          positions per forward call (default 64)\n"
        "  -t, --threads N        CPU threads (default: all cores)\n"
        "      --per-position     one line per position: i token kl top1_agree\n"
        "      --json             one JSON object\n");
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* log-softmax of one logits row into lp (double), returns the argmax. */
static int log_softmax(const float *x, int n, double *lp)
{
    int am = 0;
    double mx = x[0], sum = 0.0;
    for (int v = 1; v < n; v++)
        if (x[v] > x[am]) {
            am = v;
            mx = x[v];
        }
    for (int v = 0; v < n; v++)
        sum += exp((double)x[v] - mx);
    double lse = mx + log(sum);
    for (int v = 0; v < n; v++)
        lp[v] = (double)x[v] - lse;
    return am;
}

static st_status_t make_stage(const st_model_t *m, uint32_t n, uint32_t batch, int threads,
                              uint32_t kv_type, st_stage_t **out, st_error_t *err)
{
    st_stage_params_t sp = st_stage_default_params(m);
    sp.n_ctx = n;
    sp.max_batch = batch;
    sp.max_out = batch;
    sp.n_threads = threads;
    sp.kv_type = kv_type;
    return st_stage_create(&sp, out, err);
}

int st_cmd_perplexity(int argc, char **argv)
{
    const char *model_path = NULL, *file = NULL, *v;
    long threads = 0, max_tokens = 2048, batch = 64, l;
    uint32_t kv_type = ST_DTYPE_F16, ref_type = ST_DTYPE_F32, vocab;
    int json = 0, per_pos = 0, rc = 1;
    char *text = NULL;
    size_t text_len = 0, n_ids = 0;
    int32_t *ids = NULL, *pos = NULL, *slot = NULL;
    uint8_t *want = NULL;
    float *lr = NULL, *lt = NULL;
    double *pr = NULL, *pt = NULL;
    st_model_t *m = NULL;
    st_tokenizer_t *tok = NULL;
    st_stage_t *sr = NULL, *stt = NULL;
    st_error_t err;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strcmp(a, "--per-position")) { per_pos = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) file = v;
        else if (!strcmp(a, "--kv-type")) { if (cli_kv_type(a, v, &kv_type)) return 2; }
        else if (!strcmp(a, "--ref-kv-type")) { if (cli_kv_type(a, v, &ref_type)) return 2; }
        else if (!strcmp(a, "--max-tokens")) { if (cli_parse_long(a, v, 2, 1 << 20, &l)) return 2; max_tokens = l; }
        else if (!strcmp(a, "--batch")) { if (cli_parse_long(a, v, 1, 4096, &l)) return 2; batch = l; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (cli_parse_long(a, v, 1, 1024, &l)) return 2; threads = l; }
        else { fprintf(stderr, "strata perplexity: unknown option '%s'\n", a); usage(stderr); return 2; }
    }
    if (!model_path || !file) {
        usage(stderr);
        return 2;
    }
    if (!(text = read_file(file, &text_len))) {
        fprintf(stderr, "strata perplexity: cannot read '%s'\n", file);
        return 1;
    }
    st_error_clear(&err);
    if (st_model_open(model_path, NULL, &m, &err) != ST_OK ||
        st_tokenizer_create(st_model_gguf(m), &tok, &err) != ST_OK) {
        fprintf(stderr, "strata perplexity: %s\n", err.msg);
        goto out;
    }
    /* Encode into a buffer as large as the text (a token is >= 1 byte),
     * plus BOS, then keep the first max_tokens. */
    ids = malloc((text_len + 2) * sizeof(int32_t));
    if (!ids || st_tokenizer_encode(tok, text, text_len, ST_TOK_ADD_BOS, ids, text_len + 2,
                                    &n_ids) != ST_OK) {
        fprintf(stderr, "strata perplexity: cannot tokenize '%s'\n", file);
        goto out;
    }
    if (n_ids > (size_t)max_tokens)
        n_ids = (size_t)max_tokens;
    if (n_ids < 2) {
        fprintf(stderr, "strata perplexity: '%s' has fewer than 2 tokens\n", file);
        goto out;
    }
    const uint32_t n = (uint32_t)n_ids, B = (uint32_t)batch < n ? (uint32_t)batch : n;
    vocab = st_model_hparams(m)->n_vocab;
    if (make_stage(m, n, B, (int)threads, ref_type, &sr, &err) != ST_OK ||
        make_stage(m, n, B, (int)threads, kv_type, &stt, &err) != ST_OK) {
        fprintf(stderr, "strata perplexity: %s\n", err.msg);
        goto out;
    }
    pos = calloc(n, sizeof(int32_t));
    slot = calloc(n, sizeof(int32_t));
    want = malloc(n);
    lr = malloc((size_t)B * vocab * sizeof(float));
    lt = malloc((size_t)B * vocab * sizeof(float));
    pr = malloc((size_t)vocab * sizeof(double));
    pt = malloc((size_t)vocab * sizeof(double));
    if (!pos || !slot || !want || !lr || !lt || !pr || !pt) {
        fprintf(stderr, "strata perplexity: out of memory\n");
        goto out;
    }
    memset(want, 1, n);
    for (uint32_t i = 0; i < n; i++)
        pos[i] = (int32_t)i;

    double kl_sum = 0, kl_max = 0, nll_r = 0, nll_t = 0;
    uint32_t agree = 0, scored = 0, kl_max_at = 0;
    if (per_pos && !json)
        printf("# position token kl top1_agree\n");
    for (uint32_t i0 = 0; i0 < n; i0 += B) {
        st_stage_batch_t b = {0};
        st_stage_out_t o = {0};
        b.n = n - i0 < B ? n - i0 : B;
        b.tokens = ids + i0;
        b.pos = pos + i0;
        b.slot = slot + i0;
        b.want = want + i0;
        o.logits = lr;
        if (st_stage_forward(sr, &b, &o, &err) != ST_OK) {
            fprintf(stderr, "strata perplexity: %s\n", err.msg);
            goto out;
        }
        o.logits = lt;
        if (st_stage_forward(stt, &b, &o, &err) != ST_OK) {
            fprintf(stderr, "strata perplexity: %s\n", err.msg);
            goto out;
        }
        for (uint32_t j = 0; j < b.n && i0 + j + 1 < n; j++) {
            int ar = log_softmax(lr + (size_t)j * vocab, (int)vocab, pr);
            int at = log_softmax(lt + (size_t)j * vocab, (int)vocab, pt);
            double kl = 0;
            for (uint32_t x = 0; x < vocab; x++)
                kl += exp(pr[x]) * (pr[x] - pt[x]);
            int32_t next = ids[i0 + j + 1];
            nll_r -= pr[next];
            nll_t -= pt[next];
            kl_sum += kl;
            agree += ar == at;
            if (kl > kl_max) {
                kl_max = kl;
                kl_max_at = i0 + j;
            }
            scored++;
            if (per_pos && !json)
                printf("%u %d %.6g %d\n", i0 + j, next, kl, ar == at);
        }
    }
    const double kl_mean = kl_sum / scored, top1 = (double)agree / scored;
    if (json)
        printf("{\"model\":\"%s\",\"file\":\"%s\",\"kv_type\":\"%s\",\"ref_kv_type\":\"%s\","
               "\"tokens\":%u,\"scored\":%u,\"kl_mean\":%.9g,\"kl_max\":%.9g,\"kl_max_at\":%u,"
               "\"top1_agree\":%.6f,\"ppl_ref\":%.6f,\"ppl\":%.6f}\n",
               model_path, file, st_dtype_name(kv_type), st_dtype_name(ref_type), n, scored,
               kl_mean, kl_max, kl_max_at, top1, exp(nll_r / scored), exp(nll_t / scored));
    else {
        printf("text             %s: %u tokens, %u next-token predictions scored\n", file, n,
               scored);
        printf("kv cache         %s against %s\n", st_dtype_name(kv_type), st_dtype_name(ref_type));
        printf("KL(ref || kv)    mean %.3g nats, max %.3g at position %u\n", kl_mean, kl_max,
               kl_max_at);
        printf("top-1 agreement  %.2f %% (%u of %u)\n", 100.0 * top1, agree, scored);
        printf("perplexity       %.4f (%s), %.4f (%s)\n", exp(nll_t / scored),
               st_dtype_name(kv_type), exp(nll_r / scored), st_dtype_name(ref_type));
    }
    rc = 0;
out:
    free(pt); free(pr); free(lt); free(lr); free(want); free(slot); free(pos); free(ids);
    st_stage_free(stt);
    st_stage_free(sr);
    st_tokenizer_free(tok);
    st_model_close(m);
    free(text);
    return rc;
}
