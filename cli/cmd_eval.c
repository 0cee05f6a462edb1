/*
 * strata eval - logits of a model for a token sequence, for tests and
 * debugging: every position's logits as raw little-endian float32
 * [n_tokens][n_vocab], computed in batches of --batch tokens (the same
 * batched path prefill uses; --batch 1 runs token by token).
 *
 * The KV cache is f32 unless --kv-type says otherwise: the logits are
 * compared with float references at tight tolerances.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "st_stage.h"

const char st_cmd_eval_help[] = "write the logits of every position of a token sequence (testing)";

static int parse_ids(const char *s, int32_t **out, uint32_t *n_out)
{
    uint32_t n = 1, k = 0;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    int32_t *ids = calloc(n, sizeof(int32_t));
    if (!ids)
        return -1;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || k >= n) {
            free(ids);
            return -1;
        }
        ids[k++] = (int32_t)v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p) {
            free(ids);
            return -1;
        }
    }
    *out = ids;
    *n_out = k;
    return 0;
}

int st_cmd_eval(int argc, char **argv)
{
    const char *model_path = NULL, *tokens = NULL, *out_path = NULL, *backend = "cpu", *v;
    long threads = 0, batch = 512, l;
    uint32_t kv_type = ST_DTYPE_F32;
    int32_t *ids = NULL, *pos = NULL, *slot = NULL;
    uint8_t *want = NULL;
    float *logits = NULL;
    uint32_t n = 0;
    st_model_t *m = NULL;
    st_stage_t *s = NULL;
    st_error_t err;
    FILE *f = NULL;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: strata eval -m MODEL --tokens 1,2,3 --out FILE [--batch N] [--threads N] "
                   "[--kv-type f32|f16|q8_0]\n");
            return 0;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--tokens")) tokens = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--kv-type")) {
            if (cli_kv_type(a, v, &kv_type)) return 2;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            if (cli_parse_long(a, v, 1, 1024, &l)) return 2;
            threads = l;
        } else if (!strcmp(a, "--batch")) {
            if (cli_parse_long(a, v, 1, 4096, &l)) return 2;
            batch = l;
        } else {
            fprintf(stderr, "strata eval: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (!model_path || !tokens || !out_path) {
        fprintf(stderr, "usage: strata eval -m MODEL --tokens 1,2,3 --out FILE\n");
        return 2;
    }
    if (parse_ids(tokens, &ids, &n) || n == 0) {
        fprintf(stderr, "strata eval: --tokens expects comma-separated token ids\n");
        return 2;
    }
    if (st_model_open(model_path, NULL, &m, &err) != ST_OK) {
        fprintf(stderr, "strata: %s\n", err.msg);
        goto out;
    }
    {
        st_stage_params_t sp = st_stage_default_params(m);
        uint32_t vocab = st_model_hparams(m)->n_vocab;
        sp.n_ctx = n;
        sp.max_batch = (uint32_t)batch;
        sp.max_out = (uint32_t)batch;
        sp.n_threads = (int)threads;
        sp.backend = backend;
        sp.kv_type = kv_type;
        if (st_stage_create(&sp, &s, &err) != ST_OK) {
            fprintf(stderr, "strata: %s\n", err.msg);
            goto out;
        }
        pos = calloc(n, sizeof(int32_t));
        slot = calloc(n, sizeof(int32_t));
        want = malloc(n);
        logits = malloc((size_t)n * vocab * sizeof(float));
        if (!pos || !slot || !want || !logits) {
            fprintf(stderr, "strata: out of memory\n");
            goto out;
        }
        memset(want, 1, n);
        for (uint32_t i = 0; i < n; i++)
            pos[i] = (int32_t)i;
        for (uint32_t i = 0; i < n; i += (uint32_t)batch) {
            st_stage_batch_t b = {0};
            st_stage_out_t o = {0};
            b.n = n - i < (uint32_t)batch ? n - i : (uint32_t)batch;
            b.tokens = ids + i;
            b.pos = pos + i;
            b.slot = slot + i;
            b.want = want + i;
            o.logits = logits + (size_t)i * vocab;
            if (st_stage_forward(s, &b, &o, &err) != ST_OK) {
                fprintf(stderr, "strata: %s\n", err.msg);
                goto out;
            }
        }
        f = fopen(out_path, "wb");
        if (!f || fwrite(logits, sizeof(float) * vocab, n, f) != n) {
            fprintf(stderr, "strata: cannot write '%s'\n", out_path);
            goto out;
        }
    }
    rc = 0;
out:
    if (f && fclose(f) != 0)
        rc = 1;
    free(ids); free(pos); free(slot); free(want); free(logits);
    st_stage_free(s);
    st_model_close(m);
    return rc;
}
