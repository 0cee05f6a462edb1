/*
 * cmd_info.c - `strata info MODEL [--json]`: what a GGUF model file holds.
 *
 * Opens the file with st_model_open (so everything the runtime would refuse
 * is refused here too, with the same one-line error and exit status 1) and
 * prints the architecture, hyper-parameters, tokenizer kind, tensor types
 * and sizes. It reads only the header: no weight page is touched, so it is
 * instant even on a model far larger than memory.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli_util.h"
#include "st_dtype.h"
#include "st_gguf.h"
#include "st_model.h"

const char st_cmd_info_help[] = "show a model file's architecture, sizes and tokenizer";

typedef struct type_usage {
    uint64_t count, bytes;
} type_usage_t;

/* Length of the valid UTF-8 sequence at s (max n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, uint64_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xe0) == 0xc0) { len = 2; cp = s[0] & 0x1f; }
    else if ((s[0] & 0xf0) == 0xe0) { len = 3; cp = s[0] & 0x0f; }
    else if ((s[0] & 0xf8) == 0xf0) { len = 4; cp = s[0] & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* overlong forms, surrogates and values past U+10FFFF are invalid */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return len;
}

/* A JSON string literal of a file string: escapes, and U+FFFD for bytes
 * that are not UTF-8 so the output always parses. */
static void json_str(FILE *f, st_str_t s)
{
    const unsigned char *p = (const unsigned char *)s.ptr;
    fputc('"', f);
    for (uint64_t i = 0; i < s.len;) {
        unsigned char ch = p[i];
        size_t n;
        if (ch == '"' || ch == '\\') { fprintf(f, "\\%c", ch); i++; continue; }
        if (ch < 0x20 || ch == 0x7f) { fprintf(f, "\\u%04x", ch); i++; continue; }
        n = utf8_len(p + i, s.len - i);
        if (n == 0) { fputs("\\ufffd", f); i++; continue; }
        fwrite(p + i, 1, n, f);
        i += n;
    }
    fputc('"', f);
}

static st_str_t cstr(const char *s)
{
    return (st_str_t){s, strlen(s)};
}

static int usage(FILE *f)
{
    fprintf(f, "usage: strata info MODEL.gguf [--json] [--kv-type f32|f16|q8_0]\n"
               "  --json       print one JSON object instead of text\n"
               "  --kv-type T  the KV cache type kv_bytes_per_token is for (default f16,\n"
               "               the engine's); every type is listed as well\n");
    return f == stdout ? 0 : 2;
}

/* What a decode token costs, summed over the layers: KV bytes stored (and
 * what full per-head K and V would take: MLA stores a latent instead), layer
 * weight bytes read (a MoE layer: only its active experts) and the count of
 * sliding-window layers. */
typedef struct info_sums {
    uint64_t kv, kv_full, layer_bytes, active_bytes;
    uint32_t n_swa, n_moe;
} info_sums_t;

static const uint32_t kv_types[] = {ST_DTYPE_F32, ST_DTYPE_F16, ST_DTYPE_Q8_0};

static info_sums_t sums_of(const st_model_t *m, uint32_t kv_type)
{
    const st_hparams_t *hp = st_model_hparams(m);
    info_sums_t u = {0};
    u.kv = st_model_kv_bytes_per_token_layer(m, kv_type) * hp->n_layer;
    u.kv_full = st_model_kv_full_bytes_per_token_layer(m, kv_type) * hp->n_layer;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        const st_layer_t *l = st_model_layer(m, i);
        u.layer_bytes += st_model_layer_bytes(m, i);
        u.active_bytes += st_model_layer_active_bytes(m, i);
        u.n_swa += l->swa_window != 0;
        u.n_moe += l->is_moe != 0;
    }
    return u;
}

static const char *gating_name(st_gating_t g)
{
    return g == ST_GATING_SIGMOID ? "sigmoid" : "softmax";
}

static void print_text(const st_model_t *m, const type_usage_t *use, uint64_t total,
                       uint32_t kv_type)
{
    const st_gguf_t *g = st_model_gguf(m);
    const st_hparams_t *hp = st_model_hparams(m);
    st_str_t tmodel, tpre, tmpl;
    char buf[128], buf2[128];
    int have_pre = st_gguf_get_str(g, "tokenizer.ggml.pre", &tpre) == ST_OK;
    int have_model = st_gguf_get_str(g, "tokenizer.ggml.model", &tmodel) == ST_OK;
    int have_tmpl = st_gguf_get_str(g, "tokenizer.chat_template", &tmpl) == ST_OK;

    printf("file:           %s (%" PRIu64 " bytes, GGUF v%u, alignment %u)\n", st_gguf_path(g),
           st_gguf_file_size(g), st_gguf_version(g), st_gguf_alignment(g));
    printf("architecture:   %s\n", st_model_arch(m));
    printf("name:           %s\n", st_model_name(m));
    printf("layers:         %" PRIu32 "\n", hp->n_layer);
    printf("embedding:      %" PRIu32 "\n", hp->n_embd);
    printf("feed-forward:   %" PRIu32 "\n", hp->n_ff);
    printf("heads:          %" PRIu32 " (kv %" PRIu32 ", head dim %" PRIu32 ")\n", hp->n_head,
           hp->n_head_kv, hp->head_dim);
    printf("vocabulary:     %" PRIu32 "\n", hp->n_vocab);
    printf("context:        %" PRIu32 " (trained)\n", hp->n_ctx_train);
    printf("rope:           dim %" PRIu32 ", base %g, freq scale %g\n", hp->rope_dim,
           (double)hp->rope_theta, (double)hp->rope_freq_scale);
    printf("rms epsilon:    %g\n", (double)hp->rms_eps);
    printf("output:         %s\n", st_model_output(m) == st_model_tok_embd(m)
                                       ? "tied to token_embd.weight" : "output.weight");
    printf("tokenizer:      %s (pre %s)\n",
           have_model ? st_gguf_str_printable(tmodel, buf, sizeof(buf)) : "none",
           have_pre ? st_gguf_str_printable(tpre, buf2, sizeof(buf2)) : "none");
    printf("chat template:  %s\n", have_tmpl ? "present" : "absent");
    info_sums_t u = sums_of(m, kv_type);
    if (hp->kv_lora_rank) {
        printf("attention:      MLA, q_lora_rank %" PRIu32 ", kv_lora_rank %" PRIu32
               ", key %" PRIu32 " + rope %" PRIu32 ", value %" PRIu32 "\n", hp->q_lora_rank,
               hp->kv_lora_rank, hp->qk_nope_dim, hp->qk_rope_dim, hp->v_head_dim_mla);
    }
    if (u.n_swa)
        printf("attention:      sliding window %" PRIu32 " on %" PRIu32 " of %" PRIu32
               " layers (rope base %g there)\n", hp->swa_window, u.n_swa, hp->n_layer,
               (double)hp->rope_theta_swa);
    if (hp->n_expert) {
        printf("experts:        %" PRIu32 " (%" PRIu32 " used, %" PRIu32 " shared, width %" PRIu32
               ") in %" PRIu32 " layers, %" PRIu32 " dense first; %s gating", hp->n_expert,
               hp->n_expert_used, hp->n_expert_shared, hp->n_ff_exp, u.n_moe,
               hp->n_layer_dense_lead, gating_name(hp->expert_gating));
        if (hp->n_expert_group > 1)
            printf(", %" PRIu32 " groups (%" PRIu32 " used)", hp->n_expert_group,
                   hp->n_expert_group_used);
        printf("%s, scale %g\n", hp->expert_weights_norm ? ", weights normalized" : "",
               (double)hp->expert_weights_scale);
    }
    /* 0: rows that are not whole blocks of the type (q8_0 on heads < 32) */
    if (u.kv == 0)
        printf("kv cache:       %s not possible (rows of %" PRIu32 " values are not whole "
               "blocks)\n", st_dtype_name(kv_type), hp->kv_k_dim);
    else if (u.kv_full != u.kv)
        printf("kv cache:       %" PRIu64 " bytes per token (%s, all layers; full K/V would be %"
               PRIu64 ", %.1fx)\n", u.kv, st_dtype_name(kv_type), u.kv_full,
               (double)u.kv_full / (double)u.kv);
    else
        printf("kv cache:       %" PRIu64 " bytes per token (%s, all layers)\n", u.kv,
               st_dtype_name(kv_type));
    printf("kv by type:    ");
    for (size_t i = 0; i < sizeof kv_types / sizeof kv_types[0]; i++) {
        uint64_t b = sums_of(m, kv_types[i]).kv;
        if (b)
            printf(" %s %" PRIu64, st_dtype_name(kv_types[i]), b);
        else
            printf(" %s n/a", st_dtype_name(kv_types[i]));
    }
    printf(" bytes per token\n");
    printf("layer weights:  %" PRIu64 " bytes, %" PRIu64 " read per token\n", u.layer_bytes,
           u.active_bytes);
    printf("tensors:        %" PRIu64 " (%" PRIu64 " bytes)\n", st_gguf_n_tensors(g), total);
    for (uint32_t t = 0; t < ST_DTYPE_COUNT_; t++)
        if (use[t].count)
            printf("  %-6s %5" PRIu64 " tensors %14" PRIu64 " bytes\n", st_dtype_name(t),
                   use[t].count, use[t].bytes);
}

static void print_json(const st_model_t *m, const type_usage_t *use, uint64_t total,
                       uint32_t kv_type)
{
    const st_gguf_t *g = st_model_gguf(m);
    const st_hparams_t *hp = st_model_hparams(m);
    st_str_t s;
    int first = 1;

    printf("{\"file\": ");
    json_str(stdout, cstr(st_gguf_path(g)));
    printf(", \"file_size\": %" PRIu64 ", \"gguf_version\": %u, \"alignment\": %u",
           st_gguf_file_size(g), st_gguf_version(g), st_gguf_alignment(g));
    printf(", \"architecture\": ");
    json_str(stdout, cstr(st_model_arch(m)));
    printf(", \"name\": ");
    json_str(stdout, cstr(st_model_name(m)));
    printf(", \"hparams\": {\"n_layer\": %" PRIu32 ", \"n_embd\": %" PRIu32 ", \"n_ff\": %" PRIu32
           ", \"n_head\": %" PRIu32 ", \"n_head_kv\": %" PRIu32 ", \"head_dim\": %" PRIu32
           ", \"n_vocab\": %" PRIu32 ", \"n_ctx_train\": %" PRIu32 ", \"rope_dim\": %" PRIu32
           ", \"rope_theta\": %.9g, \"rope_freq_scale\": %.9g, \"rms_eps\": %.9g}",
           hp->n_layer, hp->n_embd, hp->n_ff, hp->n_head, hp->n_head_kv, hp->head_dim,
           hp->n_vocab, hp->n_ctx_train, hp->rope_dim, (double)hp->rope_theta,
           (double)hp->rope_freq_scale, (double)hp->rms_eps);
    printf(", \"tied_output\": %s", st_model_output(m) == st_model_tok_embd(m) ? "true" : "false");
    printf(", \"tokenizer\": {\"model\": ");
    if (st_gguf_get_str(g, "tokenizer.ggml.model", &s) == ST_OK) json_str(stdout, s);
    else printf("null");
    printf(", \"pre\": ");
    if (st_gguf_get_str(g, "tokenizer.ggml.pre", &s) == ST_OK) json_str(stdout, s);
    else printf("null");
    printf("}, \"chat_template\": %s",
           st_gguf_get_str(g, "tokenizer.chat_template", &s) == ST_OK ? "true" : "false");
    info_sums_t u = sums_of(m, kv_type);
    printf(", \"kv_type\": \"%s\", \"kv_bytes_per_token\": %" PRIu64
           ", \"kv_full_bytes_per_token\": %" PRIu64 ", \"layer_bytes\": %" PRIu64
           ", \"layer_bytes_per_token\": %" PRIu64, st_dtype_name(kv_type), u.kv, u.kv_full,
           u.layer_bytes, u.active_bytes);
    printf(", \"kv_bytes_per_token_by_type\": {");
    for (size_t i = 0; i < sizeof kv_types / sizeof kv_types[0]; i++) {
        uint64_t b = sums_of(m, kv_types[i]).kv;
        printf("%s\"%s\": ", i ? ", " : "", st_dtype_name(kv_types[i]));
        if (b)
            printf("%" PRIu64, b);
        else
            printf("null");   /* the type cannot hold these rows */
    }
    printf("}");
    if (hp->kv_lora_rank)
        printf(", \"mla\": {\"q_lora_rank\": %" PRIu32 ", \"kv_lora_rank\": %" PRIu32
               ", \"qk_nope_dim\": %" PRIu32 ", \"qk_rope_dim\": %" PRIu32 ", \"v_head_dim\": %"
               PRIu32 "}", hp->q_lora_rank, hp->kv_lora_rank, hp->qk_nope_dim, hp->qk_rope_dim,
               hp->v_head_dim_mla);
    if (u.n_swa)
        printf(", \"sliding_window\": {\"window\": %" PRIu32 ", \"layers\": %" PRIu32
               ", \"rope_theta\": %.9g}", hp->swa_window, u.n_swa, (double)hp->rope_theta_swa);
    if (hp->n_expert)
        printf(", \"moe\": {\"n_expert\": %" PRIu32 ", \"n_expert_used\": %" PRIu32
               ", \"n_expert_shared\": %" PRIu32 ", \"expert_ff\": %" PRIu32 ", \"moe_layers\": %"
               PRIu32 ", \"dense_lead\": %" PRIu32 ", \"gating\": \"%s\", \"groups\": %" PRIu32
               ", \"groups_used\": %" PRIu32 ", \"weights_norm\": %s, \"weights_scale\": %.9g}",
               hp->n_expert, hp->n_expert_used, hp->n_expert_shared, hp->n_ff_exp, u.n_moe,
               hp->n_layer_dense_lead, gating_name(hp->expert_gating), hp->n_expert_group,
               hp->n_expert_group_used, hp->expert_weights_norm ? "true" : "false",
               (double)hp->expert_weights_scale);
    printf(", \"n_tensors\": %" PRIu64 ", \"tensor_bytes\": %" PRIu64 ", \"types\": {",
           st_gguf_n_tensors(g), total);
    for (uint32_t t = 0; t < ST_DTYPE_COUNT_; t++) {
        if (!use[t].count)
            continue;
        printf("%s\"%s\": {\"count\": %" PRIu64 ", \"bytes\": %" PRIu64 "}", first ? "" : ", ",
               st_dtype_name(t), use[t].count, use[t].bytes);
        first = 0;
    }
    printf("}}\n");
}

int st_cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    uint32_t kv_type = ST_KV_TYPE_DEFAULT;
    type_usage_t use[ST_DTYPE_COUNT_] = {{0, 0}};
    uint64_t total = 0;
    st_model_t *m;
    st_error_t err;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--kv-type")) {
            const char *v = cli_value(argc, argv, &i);
            if (!v || cli_kv_type("--kv-type", v, &kv_type))
                return 2;
        }
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
        else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "strata info: unknown option '%s'\n", argv[i]);
            return usage(stderr);
        } else if (path) {
            fprintf(stderr, "strata info: more than one model file given\n");
            return usage(stderr);
        } else
            path = argv[i];
    }
    if (!path)
        return usage(stderr);

    st_error_clear(&err);
    if (st_model_open(path, NULL, &m, &err) != ST_OK) {
        fprintf(stderr, "strata info: %s\n", err.msg);
        return 1;
    }
    const st_gguf_t *g = st_model_gguf(m);
    for (uint64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_tensor_t *t = st_gguf_tensor(g, i);
        use[t->type].count++;
        use[t->type].bytes += t->nbytes;
        total += t->nbytes;
    }
    if (json)
        print_json(m, use, total, kv_type);
    else
        print_text(m, use, total, kv_type);
    st_model_close(m);
    return 0;
}
