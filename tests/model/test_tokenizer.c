/*
 * test_tokenizer.c - tokenizer unit tests: Unicode classes, the byte map,
 * pre-tokenizer splits, BPE and SentencePiece on small synthetic
 * vocabularies written as GGUF files here (so each rule is checked on a
 * vocabulary small enough to reason about), validation of hostile
 * vocabularies, and - when STRATA_MODEL names the SmolLM2 GGUF - ids checked
 * against Hugging Face `tokenizers`, round trips and the streaming decoder.
 * The full reference comparison is tests/py/test_tokenizer_*.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_test.h"
#include "st_tokenizer.h"
#include "st_util.h"
#include "tokenizer_internal.h"
#include "unicode.h"

/* ---- a minimal GGUF writer for synthetic vocabularies ------------------ */

typedef struct gw {
    FILE    *f;
    uint64_t n_kv;
} gw_t;

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s)
{
    w_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}

/* kv list is written after a placeholder header, patched at the end */
static void gw_begin(gw_t *g, const char *path)
{
    g->f = fopen(path, "wb");
    g->n_kv = 0;
    fwrite("GGUF", 1, 4, g->f);
    w_u32(g->f, 3);
    w_u64(g->f, 0);   /* tensors */
    w_u64(g->f, 0);   /* kvs, patched */
}
static void gw_str(gw_t *g, const char *k, const char *v)
{
    w_str(g->f, k);
    w_u32(g->f, ST_GGUF_STRING);
    w_str(g->f, v);
    g->n_kv++;
}
static void gw_u32(gw_t *g, const char *k, uint32_t v)
{
    w_str(g->f, k);
    w_u32(g->f, ST_GGUF_UINT32);
    w_u32(g->f, v);
    g->n_kv++;
}
static void gw_bool(gw_t *g, const char *k, int v)
{
    uint8_t b = (uint8_t)v;
    w_str(g->f, k);
    w_u32(g->f, ST_GGUF_BOOL);
    fwrite(&b, 1, 1, g->f);
    g->n_kv++;
}
static void gw_strs(gw_t *g, const char *k, const char *const *v, size_t n)
{
    w_str(g->f, k);
    w_u32(g->f, ST_GGUF_ARRAY);
    w_u32(g->f, ST_GGUF_STRING);
    w_u64(g->f, n);
    for (size_t i = 0; i < n; i++) w_str(g->f, v[i]);
    g->n_kv++;
}
static void gw_i32s(gw_t *g, const char *k, const int32_t *v, size_t n)
{
    w_str(g->f, k);
    w_u32(g->f, ST_GGUF_ARRAY);
    w_u32(g->f, ST_GGUF_INT32);
    w_u64(g->f, n);
    fwrite(v, 4, n, g->f);
    g->n_kv++;
}
static void gw_f32s(gw_t *g, const char *k, const float *v, size_t n)
{
    w_str(g->f, k);
    w_u32(g->f, ST_GGUF_ARRAY);
    w_u32(g->f, ST_GGUF_FLOAT32);
    w_u64(g->f, n);
    fwrite(v, 4, n, g->f);
    g->n_kv++;
}
static void gw_end(gw_t *g)
{
    fseek(g->f, 16, SEEK_SET);
    w_u64(g->f, g->n_kv);
    fclose(g->f);
}

static void tmp_path(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "/tmp/st_test_tok_%d_%s.gguf", (int)getpid(), tag);
}

/* Opens a written file as a tokenizer; returns the status, fills err. */
static st_status_t open_tok(const char *path, st_gguf_t **g, st_tokenizer_t **t, st_error_t *err)
{
    st_status_t st = st_gguf_open(path, g, err);
    if (st != ST_OK) return st;
    return st_tokenizer_create(*g, t, err);
}

/* Byte-level vocabulary: the 256 byte spellings, then merged tokens. */
#define BL_EXTRA 6
static const char *const bl_extra[BL_EXTRA] = {"ab", "abc", "Ġa", "Ġab", "<|ctl|>", "bc"};
static const char *const bl_merges[] = {"a b", "ab c", "Ġ a", "Ġa b", "b c"};

static void write_bytelevel(const char *path, const char *pre, const char *const *merges, size_t n_merges,
                            int bad_types, int32_t bos)
{
    static char spell[256][4];
    const char *toks[256 + BL_EXTRA];
    int32_t types[256 + BL_EXTRA];
    for (int b = 0; b < 256; b++) {
        size_t m = st_utf8_encode(st_tok_byte_to_cp((uint8_t)b), spell[b]);
        spell[b][m] = '\0';
        toks[b] = spell[b];
        types[b] = ST_TT_NORMAL;
    }
    for (int i = 0; i < BL_EXTRA; i++) {
        toks[256 + i] = bl_extra[i];
        types[256 + i] = ST_TT_NORMAL;
    }
    types[256 + 4] = ST_TT_CONTROL;
    gw_t g;
    gw_begin(&g, path);
    gw_str(&g, "tokenizer.ggml.model", "gpt2");
    if (pre) gw_str(&g, "tokenizer.ggml.pre", pre);
    gw_strs(&g, "tokenizer.ggml.tokens", toks, 256 + BL_EXTRA);
    gw_i32s(&g, "tokenizer.ggml.token_type", types, 256 + BL_EXTRA - (bad_types ? 1 : 0));
    gw_strs(&g, "tokenizer.ggml.merges", merges, n_merges);
    gw_u32(&g, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    gw_u32(&g, "tokenizer.ggml.eos_token_id", 256 + 4);
    gw_end(&g);
}

/* ---- pure functions ---------------------------------------------------- */

ST_TEST(byte_map_is_a_bijection)
{
    int seen[512] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = st_tok_byte_to_cp((uint8_t)b);
        ST_CHECK(cp < 512);
        ST_CHECK(st_tok_cp_to_byte(cp) == b);
        ST_CHECK(seen[cp & 511]++ == 0);
    }
    ST_CHECK(st_tok_byte_to_cp(' ') == 0x120);    /* "Ġ" */
    ST_CHECK(st_tok_byte_to_cp('\n') == 0x10A);   /* "Ċ" */
    ST_CHECK(st_tok_cp_to_byte(0x2581) == -1);
}

ST_TEST(unicode_classes)
{
    ST_CHECK(st_unicode_class('a') == ST_UCLASS_LETTER);
    ST_CHECK(st_unicode_class('7') == ST_UCLASS_NUMBER);
    ST_CHECK(st_unicode_class(0xE9) == ST_UCLASS_LETTER);     /* é */
    ST_CHECK(st_unicode_class(0x4E2D) == ST_UCLASS_LETTER);   /* 中 */
    ST_CHECK(st_unicode_class(0x0661) == ST_UCLASS_NUMBER);   /* Arabic-Indic 1 */
    ST_CHECK(st_unicode_class(0xBD) == ST_UCLASS_NUMBER);     /* ½ (No) */
    ST_CHECK(st_unicode_class(0x216B) == ST_UCLASS_NUMBER);   /* Ⅻ (Nl) */
    ST_CHECK(st_unicode_class(0x1F600) == ST_UCLASS_OTHER);   /* emoji */
    ST_CHECK(st_unicode_class(0x0301) == ST_UCLASS_OTHER);    /* combining mark */
    ST_CHECK(st_unicode_class(0x10FFFF) == ST_UCLASS_OTHER);
    ST_CHECK(st_unicode_is_space(' ') && st_unicode_is_space('\n') && st_unicode_is_space(0x3000));
    ST_CHECK(st_unicode_is_space(0xA0) && st_unicode_is_space(0x85));
    ST_CHECK(!st_unicode_is_space(0x200B) && !st_unicode_is_space(0x1C) && !st_unicode_is_space('x'));
    /* the table is sorted and disjoint, so bisection is valid */
    for (uint32_t i = 1; i < st_unicode_n_ranges; i++)
        ST_CHECK(st_unicode_ranges[i].lo > (st_unicode_ranges[i - 1].hi_class >> 2));
}

ST_TEST(utf8_decoding_is_total)
{
    uint32_t cp;
    ST_CHECK(st_utf8_decode("\xF0\x9F\x98\x80", 4, &cp) == 4 && cp == 0x1F600);
    ST_CHECK(st_utf8_decode("\xF0\x9F\x98", 3, &cp) == 1 && cp == 0xFFFD);   /* truncated */
    ST_CHECK(st_utf8_decode("\xC0\xAF", 2, &cp) == 1 && cp == 0xFFFD);       /* overlong */
    ST_CHECK(st_utf8_decode("\xED\xA0\x80", 3, &cp) == 1 && cp == 0xFFFD);   /* surrogate */
    ST_CHECK(st_utf8_decode("\x80", 1, &cp) == 1 && cp == 0xFFFD);
}

typedef struct words {
    char buf[512];
    size_t n;
} words_t;

static st_status_t collect(void *ctx, const char *w, size_t len)
{
    words_t *ws = ctx;
    if (ws->n + len + 2 < sizeof(ws->buf)) {
        memcpy(ws->buf + ws->n, w, len);
        ws->n += len;
        ws->buf[ws->n++] = '|';
        ws->buf[ws->n] = '\0';
    }
    return ST_OK;
}

static const char *split(st_pre_kind_t pre, const char *s, words_t *ws)
{
    ws->n = 0;
    ws->buf[0] = '\0';
    st_tok_pretokenize(pre, s, strlen(s), collect, ws);
    return ws->buf;
}

ST_TEST(pretokenizer_splits)
{
    words_t w;
    /* expectations are what the regexes give under Oniguruma (checked with
     * Hugging Face tokenizers' pre_tokenize_str) */
    ST_CHECK(!strcmp(split(ST_PRE_GPT2, "Hello  world", &w), "Hello| | world|"));
    ST_CHECK(!strcmp(split(ST_PRE_GPT2, "it's 12345!!", &w), "it|'s| 12345|!!|"));
    ST_CHECK(!strcmp(split(ST_PRE_GPT2, "a\t b\n\n", &w), "a|\t| b|\n\n|"));
    ST_CHECK(!strcmp(split(ST_PRE_GPT2, "IT'S", &w), "IT|'|S|"));
    ST_CHECK(!strcmp(split(ST_PRE_SMOLLM, "a 123b", &w), "a| |1|2|3|b|"));
    ST_CHECK(!strcmp(split(ST_PRE_LLAMA3, "IT'S 12345 (hello)\n\n x", &w), "IT|'S| |123|45| (|hello|)\n\n| x|"));
    ST_CHECK(!strcmp(split(ST_PRE_QWEN2, "x 123", &w), "x| |1|2|3|"));
    ST_CHECK(!strcmp(split(ST_PRE_LLAMA3, "a  \n\n  b", &w), "a|  \n\n| | b|"));
    /* invalid UTF-8 stays in the text, byte for byte */
    ST_CHECK(!strcmp(split(ST_PRE_GPT2, "a\xff" "b", &w), "a|\xff|b|"));
}

/* ---- synthetic byte-level BPE ------------------------------------------ */

ST_TEST(bpe_merges_by_rank)
{
    char path[128];
    st_error_t err = {{0}};
    st_gguf_t *g = NULL;
    st_tokenizer_t *t = NULL;
    int32_t ids[32];
    size_t n;

    tmp_path(path, sizeof(path), "bl");
    write_bytelevel(path, "gpt2", bl_merges, ST_ARRAY_SIZE(bl_merges), 0, 256 + 4);
    ST_REQUIRE(open_tok(path, &g, &t, &err) == ST_OK);
    ST_CHECK(st_tokenizer_kind(t) == ST_TOKENIZER_BPE);
    ST_CHECK(!strcmp(st_tokenizer_pre_name(t), "gpt2"));
    ST_CHECK(st_tokenizer_n_vocab(t) == 256 + BL_EXTRA);
    /* "abc": a+b (rank 0) before b+c (rank 4), then ab+c */
    ST_CHECK(st_tokenizer_encode(t, "abc", 3, 0, ids, 32, &n) == ST_OK);
    ST_CHECK(n == 1 && ids[0] == 256 + 1);
    /* " ab c": words " ab", " c"; in " ab", a+b (rank 0) wins over Ġ+a
     * (rank 2), which leaves no merge for Ġ+ab. Byte b's token id is b. */
    ST_CHECK(st_tokenizer_encode(t, " ab c", 5, 0, ids, 32, &n) == ST_OK);
    ST_CHECK(n == 4 && ids[0] == ' ' && ids[1] == 256 && ids[2] == ' ' && ids[3] == 'c');
    /* control token: text unless ST_TOK_PARSE_SPECIAL */
    ST_CHECK(st_tokenizer_encode(t, "a<|ctl|>", 8, ST_TOK_PARSE_SPECIAL, ids, 32, &n) == ST_OK);
    ST_CHECK(n == 2 && ids[0] == 'a' && ids[1] == 256 + 4);
    ST_CHECK(st_tokenizer_encode(t, "a<|ctl|>", 8, 0, ids, 32, &n) == ST_OK);
    ST_CHECK(n > 2);
    ST_CHECK(st_tokenizer_is_eog(t, 256 + 4) && !st_tokenizer_is_eog(t, 'a'));
    /* too small a buffer: ST_ERR_RANGE and the full count */
    ST_CHECK(st_tokenizer_encode(t, "a b c", 5, 0, ids, 2, &n) == ST_ERR_RANGE && n == 5);   /* a Ġ b Ġ c */
    ST_CHECK(st_tokenizer_encode(t, "", 0, 0, ids, 0, &n) == ST_OK && n == 0);
    /* bytes outside UTF-8 survive: one token per byte, decoded back */
    ST_CHECK(st_tokenizer_encode(t, "\xff\xfe", 2, 0, ids, 32, &n) == ST_OK && n == 2);
    char piece[8];
    ST_CHECK(st_tokenizer_piece(t, ids[0], 0, piece, sizeof(piece)) == 1 && (uint8_t)piece[0] == 0xff);
    ST_CHECK(st_tokenizer_piece(t, 256 + 4, 0, piece, sizeof(piece)) == 0);
    ST_CHECK(st_tokenizer_piece(t, 256 + 4, 1, piece, sizeof(piece)) == 7);
    ST_CHECK(st_tokenizer_find(t, "Ġab") == 256 + 3 && st_tokenizer_find(t, "zz") == -1);
    st_tokenizer_free(t);
    st_gguf_close(g);
    unlink(path);
}

ST_TEST(bpe_refuses_bad_vocabularies)
{
    char path[128];
    st_error_t err = {{0}};
    st_gguf_t *g = NULL;
    st_tokenizer_t *t = NULL;
    static const char *const unknown_part[] = {"a b", "q! c"};
    static const char *const no_result[] = {"a b", "c a"};
    static const char *const no_space[] = {"ab"};

    tmp_path(path, sizeof(path), "bad");
    write_bytelevel(path, "gpt2", unknown_part, 2, 0, 1);
    ST_CHECK(open_tok(path, &g, &t, &err) == ST_ERR_FORMAT && strstr(err.msg, "merge 1") &&
             strstr(err.msg, "unknown left token"));
    st_gguf_close(g); g = NULL;
    write_bytelevel(path, "gpt2", no_result, 2, 0, 1);
    ST_CHECK(open_tok(path, &g, &t, &err) == ST_ERR_FORMAT && strstr(err.msg, "not in the vocabulary"));
    st_gguf_close(g); g = NULL;
    write_bytelevel(path, "gpt2", no_space, 1, 0, 1);
    ST_CHECK(open_tok(path, &g, &t, &err) == ST_ERR_FORMAT && strstr(err.msg, "merge 0"));
    st_gguf_close(g); g = NULL;
    write_bytelevel(path, "gpt2", bl_merges, 1, 1, 1);
    ST_CHECK(open_tok(path, &g, &t, &err) == ST_ERR_FORMAT && strstr(err.msg, "token_type"));
    st_gguf_close(g); g = NULL;
    write_bytelevel(path, "gpt2", bl_merges, 1, 0, 999999);
    ST_CHECK(open_tok(path, &g, &t, &err) == ST_ERR_FORMAT && strstr(err.msg, "bos_token_id"));
    st_gguf_close(g); g = NULL;
    write_bytelevel(path, "mystery-regex", bl_merges, 1, 0, 1);
    ST_CHECK(open_tok(path, &g, &t, &err) == ST_ERR_UNSUPPORTED && strstr(err.msg, "mystery-regex"));
    st_gguf_close(g); g = NULL;
    ST_CHECK(t == NULL);
    unlink(path);
}

/* ---- synthetic SentencePiece ------------------------------------------- */

#define SPM_N (3 + 256 + 7)

static void write_spm(const char *path, int bad_byte)
{
    static char bytes[256][8];
    const char *toks[SPM_N];
    int32_t types[SPM_N];
    float scores[SPM_N];
    static const char *const words[7] = {"▁", "a", "b", "▁a", "ab", "▁ab", "<s>x"};
    static const float wscore[7] = {-1, -2, -3, -4, -5, -0.5f, 10};
    toks[0] = "<unk>"; types[0] = ST_TT_UNKNOWN; scores[0] = 0;
    toks[1] = "<s>"; types[1] = ST_TT_CONTROL; scores[1] = 0;
    toks[2] = "</s>"; types[2] = ST_TT_CONTROL; scores[2] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof(bytes[b]), "<0x%02X>", b);
        toks[3 + b] = bytes[b];
        types[3 + b] = ST_TT_BYTE;
        scores[3 + b] = 0;
    }
    if (bad_byte) toks[3 + 7] = "<0x1FF>";
    for (int i = 0; i < 7; i++) {
        toks[259 + i] = words[i];
        types[259 + i] = ST_TT_NORMAL;
        scores[259 + i] = wscore[i];
    }
    gw_t g;
    gw_begin(&g, path);
    gw_str(&g, "tokenizer.ggml.model", "llama");
    gw_strs(&g, "tokenizer.ggml.tokens", toks, SPM_N);
    gw_i32s(&g, "tokenizer.ggml.token_type", types, SPM_N);
    gw_f32s(&g, "tokenizer.ggml.scores", scores, SPM_N);
    gw_u32(&g, "tokenizer.ggml.bos_token_id", 1);
    gw_u32(&g, "tokenizer.ggml.eos_token_id", 2);
    gw_bool(&g, "tokenizer.ggml.add_space_prefix", 1);
    gw_end(&g);
}

ST_TEST(spm_merges_by_score_with_byte_fallback)
{
    char path[128];
    st_error_t err = {{0}};
    st_gguf_t *g = NULL;
    st_tokenizer_t *t = NULL;
    int32_t ids[32];
    size_t n;
    enum { SP = 259, A, B, SP_A, AB, SP_AB };

    tmp_path(path, sizeof(path), "spm");
    write_spm(path, 0);
    ST_REQUIRE(open_tok(path, &g, &t, &err) == ST_OK);
    ST_CHECK(st_tokenizer_kind(t) == ST_TOKENIZER_SPM && !strcmp(st_tokenizer_kind_name(t), "llama"));
    /* "ab" -> "▁ab": ▁+a (-4) vs a+b (-5): ▁a first, then ▁a+b = ▁ab */
    ST_CHECK(st_tokenizer_encode(t, "ab", 2, ST_TOK_ADD_BOS, ids, 32, &n) == ST_OK);
    ST_CHECK(n == 2 && ids[0] == 1 && ids[1] == SP_AB);
    /* "▁b▁é": no piece "▁b"; "é" has no piece: its two bytes */
    ST_CHECK(st_tokenizer_encode(t, "b é", strlen("b é"), 0, ids, 32, &n) == ST_OK);
    ST_CHECK(n == 5 && ids[0] == SP && ids[1] == B && ids[2] == SP && ids[3] == 3 + 0xC3 && ids[4] == 3 + 0xA9);
    /* a control piece is never produced from plain text */
    ST_CHECK(st_tokenizer_encode(t, "<s>x", 4, 0, ids, 32, &n) == ST_OK);
    ST_CHECK(n > 1 && ids[0] != 1 && ids[0] != 265);
    ST_CHECK(st_tokenizer_encode(t, "<s>x", 4, ST_TOK_PARSE_SPECIAL, ids, 32, &n) == ST_OK);
    ST_CHECK(n >= 2 && ids[0] == 1);
    /* decoding: leading space dropped once, byte tokens joined */
    st_detok_t d;
    char out[64] = "", buf[16];
    int32_t seq[] = {1, SP_AB, SP, B, SP, 3 + 0xC3, 3 + 0xA9};
    st_detok_init(&d, t);
    for (size_t i = 0; i < ST_ARRAY_SIZE(seq); i++) {
        size_t m = st_detok_push(&d, seq[i], buf, sizeof(buf));
        strncat(out, buf, m);
    }
    ST_CHECK_MSG(!strcmp(out, "ab b é"), "got '%s'", out);
    st_tokenizer_free(t);
    st_gguf_close(g);
    g = NULL;
    t = NULL;
    write_spm(path, 1);
    ST_CHECK(open_tok(path, &g, &t, &err) == ST_ERR_FORMAT && strstr(err.msg, "<0x1FF>"));
    st_gguf_close(g);
    unlink(path);
}

/* ---- the real model ---------------------------------------------------- */

/* STRATA_MODEL, else where the setup script puts the test model. */
static const char *model_path(void)
{
    static char buf[512];   /* written once per call, read right after: test code only */
    const char *p = getenv("STRATA_MODEL"), *home = getenv("HOME");
    if (p && *p) return access(p, R_OK) == 0 ? p : NULL;
    if (!home) return NULL;
    snprintf(buf, sizeof(buf), "%s/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf", home);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static int valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t m = st_utf8_valid_len(s + i, n - i);
        if (!m) return 0;
        i += m;
    }
    return 1;
}

static const char *const round_trip[] = {
    "Hello world, it's 12345 tests",
    "  spaces   and\ttabs\n\nnewlines\r\n",
    "Café naïve 你好，世界！ Привет مرحبا",
    "👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 🇺🇸",
    "<|im_start|>user\nHi<|im_end|>",
};

ST_TEST(smollm_matches_reference_and_round_trips)
{
    const char *path = model_path();
    if (!path) ST_SKIP("no model: set STRATA_MODEL to the SmolLM2-135M-Instruct GGUF");
    st_error_t err = {{0}};
    st_gguf_t *g = NULL;
    st_tokenizer_t *t = NULL;
    int32_t ids[512];
    size_t n;

    uint64_t t0 = st_now_ns();
    ST_REQUIRE(st_gguf_open(path, &g, &err) == ST_OK);
    uint64_t t1 = st_now_ns();
    ST_REQUIRE(st_tokenizer_create(g, &t, &err) == ST_OK);
    uint64_t t2 = st_now_ns();
    fprintf(stderr, "  gguf open %.2f ms, tokenizer create %.2f ms\n", (t1 - t0) * 1e-6, (t2 - t1) * 1e-6);
    ST_CHECK(!strcmp(st_tokenizer_pre_name(t), "smollm") && st_tokenizer_n_vocab(t) == 49152);
    ST_CHECK(st_tokenizer_bos(t) == 1 && st_tokenizer_eos(t) == 2);
    ST_CHECK(st_tokenizer_is_eog(t, 2) && st_tokenizer_is_eog(t, 0) && !st_tokenizer_is_eog(t, 1));
    ST_CHECK(st_tokenizer_find(t, "<|im_end|>") == 2);

    /* ids from Hugging Face tokenizers on the same vocabulary */
    static const int32_t hello[] = {19556, 905, 28, 357, 506, 216, 33, 34, 35, 36, 37, 3642};
    const char *s = round_trip[0];
    ST_REQUIRE(st_tokenizer_encode(t, s, strlen(s), ST_TOK_ADD_BOS, ids, 512, &n) == ST_OK);
    ST_CHECK(n == ST_ARRAY_SIZE(hello) && !memcmp(ids, hello, sizeof(hello)));   /* add_bos_token false */
    static const int32_t chat[] = {1, 4093, 198, 26843, 2};
    s = round_trip[4];
    ST_REQUIRE(st_tokenizer_encode(t, s, strlen(s), ST_TOK_PARSE_SPECIAL, ids, 512, &n) == ST_OK);
    ST_CHECK(n == ST_ARRAY_SIZE(chat) && !memcmp(ids, chat, sizeof(chat)));

    /* decode(encode(x)) == x, through the streaming decoder, which must
     * only ever hand out valid UTF-8 even though byte-level BPE splits
     * emoji and CJK characters across tokens */
    size_t cap = st_tokenizer_max_piece(t) + 16;
    char *piece = malloc(cap), out[1024];
    ST_REQUIRE(piece);
    int split_seen = 0;
    for (size_t k = 0; k < ST_ARRAY_SIZE(round_trip); k++) {
        s = round_trip[k];
        ST_REQUIRE(st_tokenizer_encode(t, s, strlen(s), ST_TOK_PARSE_SPECIAL, ids, 512, &n) == ST_OK);
        st_detok_t d;
        size_t o = 0;
        st_detok_init(&d, t);
        for (size_t i = 0; i < n; i++) {
            size_t m = st_detok_push(&d, ids[i], piece, cap);
            ST_CHECK(valid_utf8(piece, m));
            if (m == 0 && st_tokenizer_piece(t, ids[i], 0, NULL, 0) > 0) split_seen = 1;
            memcpy(out + o, piece, m);
            o += m;
        }
        o += st_detok_flush(&d, out + o, sizeof(out) - o);
        /* control tokens have no text in the streaming decoder */
        const char *want = k == 4 ? "user\nHi" : s;
        ST_CHECK_MSG(o == strlen(want) && !memcmp(out, want, o), "case %zu: '%.*s'", k, (int)o, out);
    }
    ST_CHECK(split_seen);   /* the emoji case really did split a character */

    /* a sequence cut mid-character: flush gives U+FFFD, never raw bytes */
    st_detok_t d;
    s = "😀";
    ST_REQUIRE(st_tokenizer_encode(t, s, strlen(s), 0, ids, 512, &n) == ST_OK && n >= 2);
    st_detok_init(&d, t);
    ST_CHECK(st_detok_push(&d, ids[0], piece, cap) == 0);
    ST_CHECK(st_detok_flush(&d, piece, cap) == 3 && !memcmp(piece, "\xEF\xBF\xBD", 3));
    free(piece);

    /* speed: a typical sentence well under a millisecond */
    s = "The quick brown fox jumps over the lazy dog, and it's 2024 already!";
    uint64_t a = st_now_ns();
    for (int r = 0; r < 1000; r++) st_tokenizer_encode(t, s, strlen(s), 0, ids, 512, &n);
    double us = (double)(st_now_ns() - a) / 1000 / 1000;
    fprintf(stderr, "  encode: %.2f us per %zu-byte sentence\n", us, strlen(s));
    ST_CHECK(us < 1000);
    st_tokenizer_free(t);
    st_gguf_close(g);
}

int main(void) { return st_test_main(); }
