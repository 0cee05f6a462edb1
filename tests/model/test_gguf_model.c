/*
 * test_gguf_model.c - st_model_open on tiny Llama files built in memory:
 * hyper-parameters and tensor binding on good files, then each metadata or
 * tensor problem refused with a one-line message naming the field. Also
 * the real model (env STRATA_MODEL) when it is present.
 */
#include <stdint.h>
#include <string.h>

#include "st_model.h"
#include "st_test.h"
#include "test_gguf_builder.h"

#define DEFAULT_MODEL "/root/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf"

typedef struct opts {
    const char *arch;
    uint32_t    n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_tokens;
    uint32_t    wtype, norm_type;
    int         separate_output;
    const char *skip_key;       /* metadata key to leave out */
    const char *skip_tensor;    /* tensor to leave out */
    const char *wide_tensor;    /* tensor whose ne[0] gets +32 */
    int32_t     bad_token_type; /* != 0: token 1 gets this type */
    void      (*extra)(gb_t *b);/* more kvs */
} opts_t;

static opts_t defaults(void)
{
    return (opts_t){.arch = "llama", .n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2,
                    .n_ff = 96, .n_vocab = 8, .n_tokens = 8, .wtype = ST_DTYPE_Q8_0,
                    .norm_type = ST_DTYPE_F32};
}

static void add_tensor(gb_t *b, const opts_t *o, const char *name, uint64_t ne0, uint64_t ne1,
                       uint32_t type)
{
    uint64_t ne[2] = {ne0, ne1};
    if (o->skip_tensor && !strcmp(o->skip_tensor, name))
        return;
    if (o->wide_tensor && !strcmp(o->wide_tensor, name))
        ne[0] += 32;
    gb_tensor(b, name, ne1 ? 2 : 1, ne, type);
}

#define KV(call, key) do { if (!o->skip_key || strcmp(o->skip_key, key)) call; } while (0)

static const char *build(gb_t *b, const opts_t *o)
{
    static const char *const tok[8] = {"<unk>", "<s>", "</s>", "a", "b", "c", "<0x41>", "d"};
    const char *tokens[64];
    int32_t types[64];
    char key[96], name[64];
    uint32_t head_dim = o->n_embd / o->n_head;

    gb_init(b);
    KV(gb_kv_str(b, "general.architecture", o->arch), "general.architecture");
    KV(gb_kv_str(b, "general.name", "tiny test"), "general.name");
#define AK(suffix, v) do { snprintf(key, sizeof(key), "%s.%s", o->arch, suffix); \
                           KV(gb_kv_u32(b, key, v), key); } while (0)
    AK("block_count", o->n_layer);
    AK("embedding_length", o->n_embd);
    AK("feed_forward_length", o->n_ff);
    AK("attention.head_count", o->n_head);
    AK("attention.head_count_kv", o->n_head_kv);
    AK("context_length", 256);
    snprintf(key, sizeof(key), "%s.rope.freq_base", o->arch);
    KV(gb_kv_f32(b, key, 500000.0f), key);
    snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon", o->arch);
    KV(gb_kv_f32(b, key, 1e-6f), key);
    for (uint32_t i = 0; i < o->n_tokens && i < 64; i++) {
        tokens[i] = i < 8 ? tok[i] : "z";
        types[i] = i < 3 ? 3 : i == 6 ? 6 : 1;
    }
    if (o->bad_token_type)
        types[1] = o->bad_token_type;
    KV(gb_kv_str(b, "tokenizer.ggml.model", "llama"), "tokenizer.ggml.model");
    KV(gb_kv_arr_str(b, "tokenizer.ggml.tokens", tokens, o->n_tokens), "tokenizer.ggml.tokens");
    KV(gb_kv_arr_i32(b, "tokenizer.ggml.token_type", types, o->n_tokens), "tokenizer.ggml.token_type");
    KV(gb_kv_u32(b, "tokenizer.ggml.bos_token_id", 1), "tokenizer.ggml.bos_token_id");
    KV(gb_kv_u32(b, "tokenizer.ggml.eos_token_id", 2), "tokenizer.ggml.eos_token_id");
    if (o->extra)
        o->extra(b);

    add_tensor(b, o, "token_embd.weight", o->n_embd, o->n_vocab, o->wtype);
    add_tensor(b, o, "output_norm.weight", o->n_embd, 0, o->norm_type);
    if (o->separate_output)
        add_tensor(b, o, "output.weight", o->n_embd, o->n_vocab, o->wtype);
    for (uint32_t l = 0; l < o->n_layer; l++) {
        const struct { const char *n; uint64_t ne0, ne1; int norm; } spec[] = {
            {"attn_norm", o->n_embd, 0, 1},
            {"attn_q", o->n_embd, (uint64_t)o->n_head * head_dim, 0},
            {"attn_k", o->n_embd, (uint64_t)o->n_head_kv * head_dim, 0},
            {"attn_v", o->n_embd, (uint64_t)o->n_head_kv * head_dim, 0},
            {"attn_output", (uint64_t)o->n_head * head_dim, o->n_embd, 0},
            {"ffn_norm", o->n_embd, 0, 1},
            {"ffn_gate", o->n_embd, o->n_ff, 0},
            {"ffn_up", o->n_embd, o->n_ff, 0},
            {"ffn_down", o->n_ff, o->n_embd, 0},
        };
        for (size_t k = 0; k < sizeof(spec) / sizeof(spec[0]); k++) {
            snprintf(name, sizeof(name), "blk.%u.%s.weight", l, spec[k].n);
            add_tensor(b, o, name, spec[k].ne0, spec[k].ne1, spec[k].norm ? o->norm_type : o->wtype);
        }
    }
    return gb_write(b, "llama");
}

static void expect_fail_(int *st_failed_, const opts_t *o, st_status_t want,
                         const char *const *needles, int line)
{
    gb_t b;
    st_model_t *m = NULL;
    st_error_t err;
    st_error_clear(&err);
    const char *path = build(&b, o);
    st_status_t s = st_model_open(path, NULL, &m, &err);
    ST_CHECK_MSG(s == want, "line %d: status %s, want %s (%s)", line, st_status_str(s),
                 st_status_str(want), err.msg);
    if (s == ST_OK)
        st_model_close(m);
    ST_CHECK_MSG(strchr(err.msg, '\n') == NULL, "line %d: newline in message", line);
    ST_CHECK_MSG(strncmp(err.msg, path, strlen(path)) == 0, "line %d: '%s' does not name the file",
                 line, err.msg);
    for (int i = 0; needles[i]; i++)
        ST_CHECK_MSG(strstr(err.msg, needles[i]) != NULL, "line %d: '%s' not in '%s'", line,
                     needles[i], err.msg);
    gb_free(&b);
}
#define EXPECT_FAIL(o, want, ...) \
    expect_fail_(st_failed_, (o), (want), (const char *const[]){__VA_ARGS__, NULL}, __LINE__)

typedef struct progress {
    uint64_t calls, last_done, total;
    int monotonic;
} progress_t;

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress_t *p = ctx;
    if (done < p->last_done || done > total)
        p->monotonic = 0;
    p->calls++;
    p->last_done = done;
    p->total = total;
}

ST_TEST(tiny_llama_binds)
{
    opts_t o = defaults();
    gb_t b;
    st_model_t *m;
    st_error_t err;

    ST_REQUIRE(st_model_open(build(&b, &o), NULL, &m, &err) == ST_OK);
    const st_hparams_t *hp = st_model_hparams(m);
    ST_CHECK(hp->n_layer == 2 && hp->n_embd == 64 && hp->n_ff == 96);
    ST_CHECK(hp->n_head == 4 && hp->n_head_kv == 2 && hp->head_dim == 16);
    ST_CHECK(hp->n_vocab == 8 && hp->n_ctx_train == 256 && hp->rope_dim == 16);
    ST_CHECK(hp->rope_theta == 500000.0f && hp->rope_freq_scale == 1.0f && hp->rms_eps == 1e-6f);
    ST_CHECK(strcmp(st_model_arch(m), "llama") == 0);
    ST_CHECK(strcmp(st_model_name(m), "tiny test") == 0);
    ST_CHECK(st_model_output(m) == st_model_tok_embd(m));     /* tied */
    const st_gguf_t *g = st_model_gguf(m);
    ST_CHECK(st_model_tok_embd(m) == st_gguf_find_tensor(g, "token_embd.weight"));
    ST_CHECK(st_model_output_norm(m) == st_gguf_find_tensor(g, "output_norm.weight"));
    const st_layer_t *l1 = st_model_layer(m, 1);
    ST_REQUIRE(l1 != NULL);
    ST_CHECK(l1->wk == st_gguf_find_tensor(g, "blk.1.attn_k.weight"));
    ST_CHECK(l1->wk->ne[0] == 64 && l1->wk->ne[1] == 32);
    ST_CHECK(l1->w_down->ne[0] == 96 && l1->w_down->ne[1] == 64);
    ST_CHECK(st_model_layer(m, 2) == NULL);
    uint64_t lb = 2 * 64 * 4 + st_dtype_row_bytes(ST_DTYPE_Q8_0, 64) * (64 + 32 + 32 + 64 + 96 + 96) +
                  st_dtype_row_bytes(ST_DTYPE_Q8_0, 96) * 64;
    ST_CHECK(st_model_layer_bytes(m, 0) == lb);
    ST_CHECK(st_model_layer_bytes(m, 5) == 0);
    ST_CHECK(st_model_embd_bytes(m) == st_dtype_row_bytes(ST_DTYPE_Q8_0, 64) * 8);
    ST_CHECK(st_model_output_bytes(m) == st_model_embd_bytes(m) + 64 * 4);
    ST_CHECK(st_model_kv_bytes_per_token_layer(m, ST_DTYPE_F32) == 2 * 2 * 16 * 4);
    ST_CHECK(st_model_kv_bytes_per_token_layer(m, ST_DTYPE_F16) == 2 * 2 * 16 * 2);

    progress_t p = {.monotonic = 1};
    ST_CHECK(st_model_prefetch(m, 0, 2, 3, on_progress, &p) == ST_OK);
    ST_CHECK(p.calls >= 1 && p.monotonic);
    /* tied output: the embedding is touched once */
    ST_CHECK(p.total == 2 * lb + st_model_embd_bytes(m) + 64 * 4);
    ST_CHECK(p.last_done == p.total);
    p = (progress_t){.monotonic = 1};
    ST_CHECK(st_model_prefetch(m, 1, 2, 0, on_progress, &p) == ST_OK);
    ST_CHECK(p.total == lb && p.last_done == lb);
    ST_CHECK(st_model_prefetch(m, 1, 3, 0, NULL, NULL) == ST_ERR_INVALID);
    ST_CHECK(st_model_prefetch(m, 2, 1, 0, NULL, NULL) == ST_ERR_INVALID);
    ST_CHECK(st_model_prefetch(m, 0, 0, 0, NULL, NULL) == ST_OK);
    st_model_close(m);
    gb_free(&b);
}

static void extra_linear(gb_t *b)
{
    gb_kv_str(b, "llama.rope.scaling.type", "linear");
    gb_kv_f32(b, "llama.rope.scaling.factor", 4.0f);
    gb_kv_u32(b, "llama.rope.dimension_count", 8);
}

static void extra_vocab8(gb_t *b) { gb_kv_u32(b, "llama.vocab_size", 8); }

ST_TEST(separate_output_and_options)
{
    opts_t o = defaults();
    gb_t b;
    st_model_t *m;
    st_error_t err;
    o.separate_output = 1;
    o.wtype = ST_DTYPE_F16;
    o.skip_key = "llama.attention.head_count_kv";   /* defaults to head_count */
    o.n_head_kv = 4;
    o.extra = extra_linear;
    ST_REQUIRE(st_model_open(build(&b, &o), NULL, &m, &err) == ST_OK);
    ST_CHECK(st_model_output(m) != st_model_tok_embd(m));
    ST_CHECK(st_model_output(m) == st_gguf_find_tensor(st_model_gguf(m), "output.weight"));
    ST_CHECK(st_model_hparams(m)->n_head_kv == 4);
    ST_CHECK(st_model_hparams(m)->rope_dim == 8);
    ST_CHECK(st_model_hparams(m)->rope_freq_scale == 0.25f);
    progress_t p = {.monotonic = 1};
    ST_CHECK(st_model_prefetch(m, 0, 0, 3, on_progress, &p) == ST_OK);
    ST_CHECK(p.total == 2 * st_model_embd_bytes(m) + 64 * 4 && p.last_done == p.total);
    st_model_close(m);
    gb_free(&b);

    /* no tokenizer tokens but llama.vocab_size */
    o = defaults();
    o.skip_key = "tokenizer.ggml.tokens";
    o.extra = extra_vocab8;
    ST_REQUIRE(st_model_open(build(&b, &o), NULL, &m, &err) == ST_OK);
    ST_CHECK(st_model_hparams(m)->n_vocab == 8);
    st_model_close(m);
    gb_free(&b);
    /* no general.name: the file name */
    o = defaults();
    o.skip_key = "general.name";
    ST_REQUIRE(st_model_open(build(&b, &o), NULL, &m, &err) == ST_OK);
    ST_CHECK(strcmp(st_model_name(m), strrchr(b.path, '/') + 1) == 0);
    st_model_close(m);
    gb_free(&b);
}

static void extra_yarn(gb_t *b)        { gb_kv_str(b, "llama.rope.scaling.type", "longrope"); }
static void extra_bos_oob(gb_t *b)     { gb_kv_u32(b, "tokenizer.ggml.padding_token_id", 8); }
static void extra_vocab_size(gb_t *b)  { gb_kv_u32(b, "llama.vocab_size", 9); }
static void extra_rope_dim(gb_t *b)    { gb_kv_u32(b, "llama.rope.dimension_count", 32); }
static void extra_eps(gb_t *b)         { gb_kv_f32(b, "llama.attention.layer_norm_rms_epsilon", -1.0f); }
static void extra_scores(gb_t *b)
{
    static const float sc[5] = {0};
    gb_kv_arr_f32(b, "tokenizer.ggml.scores", sc, 5);
}

ST_TEST(bad_models)
{
    opts_t o;

    o = defaults(); o.arch = "mamba";
    EXPECT_FAIL(&o, ST_ERR_UNSUPPORTED, "architecture 'mamba' is not supported (supported: llama, "
                "qwen2, qwen3, qwen3moe, gemma3, deepseek2)");
    o = defaults(); o.skip_key = "general.architecture";
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'general.architecture': missing");
    o = defaults(); o.skip_key = "llama.embedding_length";
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'llama.embedding_length': missing");
    o = defaults(); o.skip_key = "llama.context_length";
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'llama.context_length': missing");
    o = defaults(); o.n_head_kv = 3;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "head_count_kv", "3 does not divide head_count 4");
    o = defaults(); o.n_head = 5; o.n_head_kv = 5; o.wtype = ST_DTYPE_F32;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "head_count", "5 does not divide embedding_length 64");
    o = defaults(); o.n_layer = 0;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'llama.block_count': 0 outside 1..");
    o = defaults(); o.skip_tensor = "blk.1.ffn_down.weight";
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "tensor 'blk.1.ffn_down.weight': missing");
    o = defaults(); o.skip_tensor = "output_norm.weight";
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "tensor 'output_norm.weight': missing");
    o = defaults(); o.wide_tensor = "blk.0.attn_q.weight";
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "tensor 'blk.0.attn_q.weight': shape {96, 64", "expected {64, 64}");
    o = defaults(); o.norm_type = ST_DTYPE_F16;
    EXPECT_FAIL(&o, ST_ERR_UNSUPPORTED, "tensor 'output_norm.weight': type f16", "must be f32");
    o = defaults(); o.n_tokens = 7;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "tensor 'token_embd.weight': shape {64, 8", "expected {64, 7}");
    o = defaults(); o.extra = extra_vocab_size;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'tokenizer.ggml.tokens': 8 entries, vocabulary has 9");
    o = defaults(); o.skip_key = "tokenizer.ggml.tokens"; o.extra = NULL;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "no vocabulary size");
    o = defaults(); o.extra = extra_scores;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'tokenizer.ggml.scores': 5 entries, vocabulary has 8");
    o = defaults(); o.bad_token_type = 7;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'tokenizer.ggml.token_type'", "token 1 has type 7");
    o = defaults(); o.bad_token_type = -2147483647 - 1;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'tokenizer.ggml.token_type'", "type -2147483648");
    o = defaults(); o.bad_token_type = 6;   /* token 1 "<s>" marked as a byte token */
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "byte token 1 is '<s>'");
    o = defaults(); o.extra = extra_bos_oob;
    EXPECT_FAIL(&o, ST_ERR_RANGE, "key 'tokenizer.ggml.padding_token_id': token id 8 outside");
    o = defaults(); o.extra = extra_yarn;
    EXPECT_FAIL(&o, ST_ERR_UNSUPPORTED, "rope scaling 'longrope' is not supported");
    o = defaults(); o.extra = extra_rope_dim;
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'llama.rope.dimension_count': 32 outside 2..16");
    o = defaults(); o.extra = extra_eps; o.skip_key = "llama.attention.layer_norm_rms_epsilon";
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'llama.attention.layer_norm_rms_epsilon': -1 is not a "
                "positive finite number");
    o = defaults(); o.extra = extra_eps;    /* the builder wrote the key too */
    EXPECT_FAIL(&o, ST_ERR_FORMAT, "key 'llama.attention.layer_norm_rms_epsilon'", "duplicate");
}

/* block_count far beyond the tensors present: refused before allocating. */
ST_TEST(block_count_vs_tensors)
{
    opts_t o = defaults();
    gb_t b;
    st_model_t *m = NULL;
    st_error_t err;
    o.skip_key = "llama.block_count";
    build(&b, &o);
    gb_kv_u32(&b, "llama.block_count", 65536);
    const char *path = gb_write(&b, "layers");
    ST_CHECK(st_model_open(path, NULL, &m, &err) == ST_ERR_FORMAT);
    ST_CHECK(m == NULL);
    ST_CHECK_MSG(strstr(err.msg, "key 'llama.block_count': 65536 layers but the file has only "
                 "20 tensors") != NULL, "%s", err.msg);
    gb_free(&b);
}

ST_TEST(real_model)
{
    const char *path = getenv("STRATA_MODEL");
    st_model_t *m;
    st_error_t err;
    if (!path || !*path)
        path = DEFAULT_MODEL;
    if (access(path, R_OK) != 0)
        ST_SKIP("model %s not present (set STRATA_MODEL)", path);
    ST_REQUIRE(st_model_open(path, NULL, &m, &err) == ST_OK);
    const st_hparams_t *hp = st_model_hparams(m);
    if (strstr(path, "SmolLM2-135M")) {
        ST_CHECK(hp->n_layer == 30 && hp->n_embd == 576 && hp->n_ff == 1536);
        ST_CHECK(hp->n_head == 9 && hp->n_head_kv == 3 && hp->head_dim == 64);
        ST_CHECK(hp->n_vocab == 49152 && hp->rope_theta == 100000.0f);
        ST_CHECK(st_model_output(m) == st_model_tok_embd(m));
        ST_CHECK(st_model_tok_embd(m)->type == ST_DTYPE_Q8_0);
        ST_CHECK(st_model_layer(m, 29)->wq->type == ST_DTYPE_Q4_1);
    }
    progress_t p = {.monotonic = 1};
    ST_CHECK(st_model_prefetch(m, 0, hp->n_layer, 3, on_progress, &p) == ST_OK);
    ST_CHECK(p.monotonic && p.last_done == p.total && p.calls > 1);
    st_model_close(m);
}

int main(void) { return st_test_main(); }
