/*
 * tokenizer.c - vocabulary loading and validation, special-token matching,
 * the encode entry point and decoding (see st_tokenizer.h).
 *
 * Everything read from the GGUF is validated here before use, because the
 * vocabulary is outside input like the rest of the file:
 *   - tokenizer.ggml.tokens must be a non-empty string array (< 2^24 ids);
 *   - token_type and scores, when present, must have exactly one entry per
 *     token, types in 0..6;
 *   - bos/eos/unk/pad/eot/eom ids must be in range (-1 / 0xFFFFFFFF = none);
 *   - byte tokens (type 6) must be spelled <0xNN>;
 *   - every merge "A B" must name two tokens of the vocabulary whose
 *     concatenation is a token too. A merge that does not is REFUSED with
 *     ST_ERR_FORMAT naming the merge index, as Hugging Face `tokenizers`
 *     refuses it: silently skipping would tokenize differently from the
 *     reference we test against, which is worse than not loading.
 * Decisions where references differ are documented where they are made.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_util.h"
#include "tokenizer_internal.h"
#include "unicode.h"

#define KEY_MODEL  "tokenizer.ggml.model"
#define KEY_PRE    "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_TYPES  "tokenizer.ggml.token_type"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_MERGES "tokenizer.ggml.merges"
#define MAX_VOCAB  (1u << 24)

/* ---- hashing ----------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    return k ^ (k >> 33);
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

int32_t st_tok_lookup(const st_tokenizer_t *t, const char *s, size_t len)
{
    for (uint32_t i = (uint32_t)hash_bytes(s, len) & t->text_mask;; i = (i + 1) & t->text_mask) {
        uint32_t v = t->text_hash[i];
        if (v == 0) return -1;
        const st_tok_entry_t *e = &t->tok[v - 1];
        if (e->text_len == len && memcmp(t->pool + e->text_off, s, len) == 0) return (int32_t)(v - 1);
    }
}

int st_tok_merge_find(const st_tokenizer_t *t, int32_t left, int32_t right, uint32_t *rank,
                      int32_t *result)
{
    if (!t->merges) return 0;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint32_t i = (uint32_t)hash_pair(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const st_merge_slot_t *s = &t->merges[i];
        if (s->key == UINT64_MAX) return 0;
        if (s->key == key) {
            *rank = s->rank;
            *result = s->result;
            return 1;
        }
    }
}

/* ---- loading ----------------------------------------------------------- */

static const char *printable(const char *p, size_t len, char *buf, size_t n)
{
    return st_gguf_str_printable((st_str_t){p, len}, buf, n);
}

/* Optional special id: absent -> -1; -1 (as i64 or u32) -> -1; else in range. */
static st_status_t read_special(const st_gguf_t *g, const char *key, uint32_t n_vocab,
                                int32_t *out, st_error_t *err)
{
    int64_t v;
    uint64_t u;
    st_status_t st = st_gguf_get_i64(g, key, &v);
    *out = -1;
    if (st == ST_ERR_NOT_FOUND) return ST_OK;
    if (st == ST_ERR_RANGE && st_gguf_get_u64(g, key, &u) == ST_OK)
        return st_error_set(err, ST_ERR_FORMAT, "%s: %s = %" PRIu64 " outside the vocabulary (%u tokens)",
                            st_gguf_path(g), key, u, n_vocab);
    if (st != ST_OK)
        return st_error_set(err, ST_ERR_FORMAT, "%s: %s: %s", st_gguf_path(g), key, st_status_str(st));
    if (v == -1 || v == 0xFFFFFFFFll) return ST_OK;
    if (v < 0 || v >= (int64_t)n_vocab)
        return st_error_set(err, ST_ERR_FORMAT, "%s: %s = %" PRId64 " outside the vocabulary (%u tokens)",
                            st_gguf_path(g), key, v, n_vocab);
    *out = (int32_t)v;
    return ST_OK;
}

static int parse_byte_token(const char *s, size_t len)
{
    /* "<0xNN>" */
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Byte-level BPE spells every byte as one printable code point; the piece is
 * the bytes themselves. A spelling outside the map (some vocabularies carry
 * a few) is kept as its UTF-8, which is what `tokenizers`' ByteLevel decoder
 * does with a character it cannot map. Returns the piece length written. */
static size_t bpe_unmap(const char *s, size_t len, char *out)
{
    size_t i = 0, n = 0;
    while (i < len) {
        uint32_t cp;
        size_t m = st_utf8_decode(s + i, len - i, &cp);
        int b = (st_utf8_valid_len(s + i, len - i) == m) ? st_tok_cp_to_byte(cp) : -1;
        if (b >= 0) out[n++] = (char)b;
        else { memcpy(out + n, s + i, m); n += m; }
        i += m;
    }
    return n;
}

/* SentencePiece spells a space U+2581 "▁" (e2 96 81). */
static size_t spm_unmap(const char *s, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            out[n++] = ' ';
            i += 3;
        } else {
            out[n++] = s[i++];
        }
    }
    return n;
}

static st_status_t load_tokens(st_tokenizer_t *t, const st_gguf_t *g, st_error_t *err)
{
    const char *path = st_gguf_path(g);
    st_gguf_type_t et;
    uint64_t n, total = 0;
    const void *data;
    char pbuf[64];

    if (st_gguf_get_arr(g, KEY_TOKENS, &et, &n, &data) != ST_OK || et != ST_GGUF_STRING)
        return st_error_set(err, ST_ERR_FORMAT, "%s: %s missing or not a string array", path, KEY_TOKENS);
    if (n == 0 || n > MAX_VOCAB)
        return st_error_set(err, ST_ERR_FORMAT, "%s: %s has %" PRIu64 " tokens (1..%u allowed)",
                            path, KEY_TOKENS, n, MAX_VOCAB);
    t->n_vocab = (uint32_t)n;
    t->tok = calloc(n, sizeof(*t->tok));
    if (!t->tok) return ST_ERR_NOMEM;

    /* types and scores: one per token, checked before the tokens use them */
    uint64_t tn = 0;
    if (st_gguf_get_arr(g, KEY_TYPES, &et, &tn, &data) == ST_OK) {
        if (tn != n)
            return st_error_set(err, ST_ERR_FORMAT, "%s: %s has %" PRIu64 " entries for %" PRIu64 " tokens",
                                path, KEY_TYPES, tn, n);
        for (uint64_t i = 0; i < n; i++) {
            int64_t v;
            if (et == ST_GGUF_INT32) {   /* the usual type: read it directly */
                int32_t v32;
                memcpy(&v32, (const char *)data + 4 * i, 4);
                v = v32;
            } else if (st_gguf_arr_i64(g, KEY_TYPES, i, &v) != ST_OK)
                return st_error_set(err, ST_ERR_FORMAT, "%s: %s is not an integer array", path, KEY_TYPES);
            if (v < 0 || v > ST_TT_BYTE)
                return st_error_set(err, ST_ERR_FORMAT, "%s: %s[%" PRIu64 "] = %" PRId64 " is not a token type (0..6)",
                                    path, KEY_TYPES, i, v);
            t->tok[i].type = (uint8_t)v;
        }
    } else {
        for (uint64_t i = 0; i < n; i++) t->tok[i].type = ST_TT_NORMAL;
    }
    if (st_gguf_get_arr(g, KEY_SCORES, &et, &tn, &data) == ST_OK) {
        if (tn != n)
            return st_error_set(err, ST_ERR_FORMAT, "%s: %s has %" PRIu64 " entries for %" PRIu64 " tokens",
                                path, KEY_SCORES, tn, n);
        for (uint64_t i = 0; i < n; i++) {
            double v;
            if (et == ST_GGUF_FLOAT32) {
                float f;
                memcpy(&f, (const char *)data + 4 * i, 4);
                v = f;
            } else if (st_gguf_arr_f64(g, KEY_SCORES, i, &v) != ST_OK) {
                return st_error_set(err, ST_ERR_FORMAT, "%s: %s is not a numeric array", path, KEY_SCORES);
            }
            t->tok[i].score = (float)v;
        }
    }

    /* pool: spelling + piece of each token (a piece is never longer) */
    for (uint64_t i = 0; i < n; i++) {
        st_str_t s;
        if (st_gguf_arr_str(g, KEY_TOKENS, i, &s) != ST_OK)
            return st_error_set(err, ST_ERR_FORMAT, "%s: %s[%" PRIu64 "] unreadable", path, KEY_TOKENS, i);
        if (s.len > 65535)
            return st_error_set(err, ST_ERR_FORMAT, "%s: token %" PRIu64 " is %" PRIu64 " bytes (max 65535)",
                                path, i, s.len);
        total += 2 * s.len;
    }
    t->pool = malloc(total + 1);
    if (!t->pool) return ST_ERR_NOMEM;

    size_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        st_tok_entry_t *e = &t->tok[i];
        st_str_t s;
        st_gguf_arr_str(g, KEY_TOKENS, i, &s);
        e->text_off = (uint32_t)at;
        e->text_len = (uint32_t)s.len;
        memcpy(t->pool + at, s.ptr, s.len);
        at += s.len;
        e->piece_off = (uint32_t)at;
        if (e->type == ST_TT_BYTE) {
            int b = parse_byte_token(s.ptr, s.len);
            if (b < 0)
                return st_error_set(err, ST_ERR_FORMAT, "%s: byte token %" PRIu64 " '%s' is not <0xNN>",
                                    path, i, printable(s.ptr, s.len, pbuf, sizeof(pbuf)));
            t->pool[at] = (char)b;
            e->piece_len = 1;
        } else if (e->type == ST_TT_CONTROL || e->type == ST_TT_UNKNOWN ||
                   e->type == ST_TT_USER_DEFINED) {
            /* added tokens are written as they read, in either kind */
            memcpy(t->pool + at, s.ptr, s.len);
            e->piece_len = (uint32_t)s.len;
        } else if (t->kind == ST_TOKENIZER_BPE) {
            e->piece_len = (uint32_t)bpe_unmap(s.ptr, s.len, t->pool + at);
        } else {
            e->piece_len = (uint32_t)spm_unmap(s.ptr, s.len, t->pool + at);
        }
        at += e->piece_len;
        if (e->piece_len > t->max_piece) t->max_piece = e->piece_len;
    }

    /* spelling -> id; on duplicates the first id wins */
    t->text_mask = pow2_at_least(2 * n) - 1;
    t->text_hash = calloc((size_t)t->text_mask + 1, sizeof(*t->text_hash));
    if (!t->text_hash) return ST_ERR_NOMEM;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        size_t len;
        const char *s = st_tok_text(t, (int32_t)i, &len);
        if (st_tok_lookup(t, s, len) >= 0) continue;
        uint32_t h = (uint32_t)hash_bytes(s, len) & t->text_mask;
        while (t->text_hash[h]) h = (h + 1) & t->text_mask;
        t->text_hash[h] = i + 1;
    }

    /* byte tokens */
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
    if (t->kind == ST_TOKENIZER_BPE) {
        for (int b = 0; b < 256; b++) {
            char sp[4];
            size_t m = st_utf8_encode(st_tok_byte_to_cp((uint8_t)b), sp);
            t->byte_tok[b] = st_tok_lookup(t, sp, m);
        }
    } else {
        for (uint32_t i = 0; i < t->n_vocab; i++)
            if (t->tok[i].type == ST_TT_BYTE) {
                uint8_t b = (uint8_t)t->pool[t->tok[i].piece_off];
                if (t->byte_tok[b] < 0) t->byte_tok[b] = (int32_t)i;
            }
    }
    return ST_OK;
}

static st_status_t load_merges(st_tokenizer_t *t, const st_gguf_t *g, st_error_t *err)
{
    const char *path = st_gguf_path(g);
    st_gguf_type_t et;
    uint64_t n;
    const void *data;
    char pbuf[96];

    if (st_gguf_get_arr(g, KEY_MERGES, &et, &n, &data) != ST_OK || et != ST_GGUF_STRING)
        return st_error_set(err, ST_ERR_FORMAT, "%s: %s missing or not a string array (needed by gpt2 tokenizers)",
                            path, KEY_MERGES);
    if (n >= UINT32_MAX / 4)
        return st_error_set(err, ST_ERR_FORMAT, "%s: %" PRIu64 " merges", path, n);
    t->n_merges = (uint32_t)n;
    t->merge_mask = pow2_at_least(2 * n + 1) - 1;
    t->merges = malloc(((size_t)t->merge_mask + 1) * sizeof(*t->merges));
    if (!t->merges) return ST_ERR_NOMEM;
    for (uint32_t i = 0; i <= t->merge_mask; i++) t->merges[i].key = UINT64_MAX;

    char *cat = malloc(2 * t->max_piece + 2 * 65536);
    if (!cat) return ST_ERR_NOMEM;
    st_status_t st = ST_OK;
    for (uint64_t r = 0; r < n; r++) {
        st_str_t s;
        const char *sp;
        if (st_gguf_arr_str(g, KEY_MERGES, r, &s) != ST_OK || s.len < 3 ||
            !(sp = memchr(s.ptr + 1, ' ', s.len - 1)) || sp == s.ptr + s.len - 1) {
            st = st_error_set(err, ST_ERR_FORMAT, "%s: merge %" PRIu64 " '%s' is not \"A B\"", path, r,
                              printable(s.ptr, s.len, pbuf, sizeof(pbuf)));
            break;
        }
        size_t la = (size_t)(sp - s.ptr), lb = s.len - la - 1;
        int32_t a = st_tok_lookup(t, s.ptr, la), b = st_tok_lookup(t, sp + 1, lb);
        memcpy(cat, s.ptr, la);
        memcpy(cat + la, sp + 1, lb);
        int32_t res = (a >= 0 && b >= 0) ? st_tok_lookup(t, cat, la + lb) : -1;
        if (res < 0) {
            st = st_error_set(err, ST_ERR_FORMAT, "%s: merge %" PRIu64 " '%s' %s: refused", path, r,
                              printable(s.ptr, s.len, pbuf, sizeof(pbuf)),
                              a < 0 ? "names an unknown left token" : b < 0 ? "names an unknown right token"
                                                                            : "makes a token not in the vocabulary");
            break;
        }
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint32_t h = (uint32_t)hash_pair(key) & t->merge_mask;
        while (t->merges[h].key != UINT64_MAX && t->merges[h].key != key) h = (h + 1) & t->merge_mask;
        if (t->merges[h].key == key) continue;   /* a repeated pair keeps its best rank */
        t->merges[h] = (st_merge_slot_t){key, (uint32_t)r, res};
    }
    free(cat);
    return st;
}

/* Buckets of matchable tokens by first byte, longest first. */
static st_status_t build_special(st_tokenizer_t *t)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->tok[i].type;
        if ((ty == ST_TT_CONTROL || ty == ST_TT_USER_DEFINED) && t->tok[i].text_len > 0) n++;
    }
    t->special = malloc((n ? n : 1) * sizeof(*t->special));
    if (!t->special) return ST_ERR_NOMEM;
    uint32_t count[257] = {0};
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->tok[i].type;
        if ((ty == ST_TT_CONTROL || ty == ST_TT_USER_DEFINED) && t->tok[i].text_len > 0)
            count[(uint8_t)t->pool[t->tok[i].text_off] + 1]++;
    }
    for (int b = 0; b < 256; b++) count[b + 1] += count[b];
    memcpy(t->special_start, count, sizeof(count));
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->tok[i].type;
        if ((ty == ST_TT_CONTROL || ty == ST_TT_USER_DEFINED) && t->tok[i].text_len > 0)
            t->special[count[(uint8_t)t->pool[t->tok[i].text_off]]++] = (int32_t)i;
    }
    t->n_special = n;
    /* insertion sort per bucket by length, descending (buckets are tiny) */
    for (int b = 0; b < 256; b++) {
        for (uint32_t i = t->special_start[b] + 1; i < t->special_start[b + 1]; i++) {
            int32_t v = t->special[i];
            uint32_t j = i;
            while (j > t->special_start[b] && t->tok[t->special[j - 1]].text_len < t->tok[v].text_len) {
                t->special[j] = t->special[j - 1];
                j--;
            }
            t->special[j] = v;
        }
    }
    return ST_OK;
}

static st_status_t pick_kind(st_tokenizer_t *t, const st_gguf_t *g, st_error_t *err)
{
    const char *path = st_gguf_path(g);
    st_str_t m, p;
    char pbuf[64];

    if (st_gguf_get_str(g, KEY_MODEL, &m) != ST_OK)
        return st_error_set(err, ST_ERR_FORMAT, "%s: %s missing (no tokenizer in this file)", path, KEY_MODEL);
    if (m.len == 5 && memcmp(m.ptr, "llama", 5) == 0) {
        t->kind = ST_TOKENIZER_SPM;
        return ST_OK;
    }
    if (!(m.len == 4 && memcmp(m.ptr, "gpt2", 4) == 0))
        return st_error_set(err, ST_ERR_UNSUPPORTED, "%s: %s = '%s' is not supported (llama, gpt2)", path,
                            KEY_MODEL, printable(m.ptr, m.len, pbuf, sizeof(pbuf)));
    t->kind = ST_TOKENIZER_BPE;
    t->pre = ST_PRE_GPT2;
    if (st_gguf_get_str(g, KEY_PRE, &p) != ST_OK) {
        snprintf(t->pre_name, sizeof(t->pre_name), "default");
        return ST_OK;
    }
    static const struct { const char *name; st_pre_kind_t pre; int ignore_merges; } known[] = {
        {"default", ST_PRE_GPT2, 0},   {"gpt2", ST_PRE_GPT2, 0},      {"gpt-2", ST_PRE_GPT2, 0},
        {"smollm", ST_PRE_SMOLLM, 0},  {"starcoder", ST_PRE_SMOLLM, 0}, {"refact", ST_PRE_SMOLLM, 0},
        {"llama3", ST_PRE_LLAMA3, 1},  {"llama-bpe", ST_PRE_LLAMA3, 1}, {"llama-v3", ST_PRE_LLAMA3, 1},
        {"qwen2", ST_PRE_QWEN2, 0},    {"deepseek-r1-qwen", ST_PRE_QWEN2, 0},
    };
    for (size_t i = 0; i < ST_ARRAY_SIZE(known); i++) {
        if (strlen(known[i].name) == p.len && memcmp(known[i].name, p.ptr, p.len) == 0) {
            t->pre = known[i].pre;
            t->ignore_merges = known[i].ignore_merges;
            snprintf(t->pre_name, sizeof(t->pre_name), "%s", known[i].name);
            return ST_OK;
        }
    }
    /* Refused rather than guessed: another regex silently gives other ids. */
    return st_error_set(err, ST_ERR_UNSUPPORTED,
                        "%s: %s = '%s' is not supported (default, gpt2, smollm, starcoder, llama3, llama-bpe, qwen2)",
                        path, KEY_PRE, printable(p.ptr, p.len, pbuf, sizeof(pbuf)));
}

static void add_eog(st_tokenizer_t *t, int32_t id)
{
    if (id < 0) return;
    for (uint32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    if (t->n_eog < ST_ARRAY_SIZE(t->eog)) t->eog[t->n_eog++] = id;
}

st_status_t st_tokenizer_create(const st_gguf_t *g, st_tokenizer_t **out, st_error_t *err)
{
    st_status_t st;
    st_tokenizer_t *t;
    int flag;

    if (!g || !out) return st_error_set(err, ST_ERR_INVALID, "st_tokenizer_create: NULL argument");
    t = calloc(1, sizeof(*t));
    if (!t) return st_error_set(err, ST_ERR_NOMEM, "tokenizer: out of memory");
    if ((st = pick_kind(t, g, err)) != ST_OK) goto err;
    if ((st = load_tokens(t, g, err)) != ST_OK) goto err_nomem;
    if (t->kind == ST_TOKENIZER_BPE && (st = load_merges(t, g, err)) != ST_OK) goto err_nomem;
    if ((st = build_special(t)) != ST_OK) goto err_nomem;

    static const struct { const char *key; size_t off; } ids[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(st_tokenizer_t, bos)},
        {"tokenizer.ggml.eos_token_id", offsetof(st_tokenizer_t, eos)},
        {"tokenizer.ggml.unknown_token_id", offsetof(st_tokenizer_t, unk)},
        {"tokenizer.ggml.padding_token_id", offsetof(st_tokenizer_t, pad)},
        {"tokenizer.ggml.eot_token_id", offsetof(st_tokenizer_t, eot)},
        {"tokenizer.ggml.eom_token_id", offsetof(st_tokenizer_t, eom)},
    };
    for (size_t i = 0; i < ST_ARRAY_SIZE(ids); i++) {
        int32_t v;
        if ((st = read_special(g, ids[i].key, t->n_vocab, &v, err)) != ST_OK) goto err;
        memcpy((char *)t + ids[i].off, &v, sizeof(v));
    }
    /* SentencePiece vocabularies mark their unknown token by type even when
     * the id key is absent. */
    if (t->unk < 0 && t->kind == ST_TOKENIZER_SPM)
        for (uint32_t i = 0; i < t->n_vocab && t->unk < 0; i++)
            if (t->tok[i].type == ST_TT_UNKNOWN) t->unk = (int32_t)i;

    /* llama.cpp's defaults when the keys are absent */
    t->add_bos = t->kind == ST_TOKENIZER_SPM;
    if (st_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &flag) == ST_OK) t->add_bos = flag;
    t->add_space_prefix = t->kind == ST_TOKENIZER_SPM;
    if (st_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &flag) == ST_OK)
        t->add_space_prefix = flag && t->kind == ST_TOKENIZER_SPM;

    add_eog(t, t->eos);
    add_eog(t, t->eot);
    add_eog(t, t->eom);
    static const char *const eog_text[] = {"<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>",
                                           "<end_of_turn>", "<|end|>", "</s>", "<|end_of_text|>"};
    for (size_t i = 0; i < ST_ARRAY_SIZE(eog_text); i++) {
        int32_t id = st_tok_lookup(t, eog_text[i], strlen(eog_text[i]));
        if (id >= 0 && t->tok[id].type == ST_TT_CONTROL) add_eog(t, id);
    }
    *out = t;
    return ST_OK;

err_nomem:
    if (st == ST_ERR_NOMEM) st_error_set(err, st, "%s: tokenizer: out of memory", st_gguf_path(g));
err:
    st_tokenizer_free(t);
    return st;
}

void st_tokenizer_free(st_tokenizer_t *t)
{
    if (!t) return;
    free(t->special);
    free(t->merges);
    free(t->text_hash);
    free(t->pool);
    free(t->tok);
    free(t);
}

st_tokenizer_kind_t st_tokenizer_kind(const st_tokenizer_t *t) { return t->kind; }
const char *st_tokenizer_kind_name(const st_tokenizer_t *t)
{
    return t->kind == ST_TOKENIZER_SPM ? "llama" : "gpt2";
}
const char *st_tokenizer_pre_name(const st_tokenizer_t *t) { return t->pre_name; }
uint32_t st_tokenizer_n_vocab(const st_tokenizer_t *t) { return t->n_vocab; }
int32_t st_tokenizer_bos(const st_tokenizer_t *t) { return t->bos; }
int32_t st_tokenizer_eos(const st_tokenizer_t *t) { return t->eos; }
size_t st_tokenizer_max_piece(const st_tokenizer_t *t) { return t->max_piece; }

int st_tokenizer_is_eog(const st_tokenizer_t *t, int32_t id)
{
    for (uint32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}

int32_t st_tokenizer_find(const st_tokenizer_t *t, const char *text)
{
    return text ? st_tok_lookup(t, text, strlen(text)) : -1;
}

/* ---- encoding ---------------------------------------------------------- */

static st_status_t encode_fragment(const st_tokenizer_t *t, const char *s, size_t len,
                                   st_tok_out_t *o)
{
    if (len == 0) return ST_OK;
    if (t->kind == ST_TOKENIZER_SPM) return st_tok_spm_encode(t, s, len, o);
    return st_tok_bpe_encode(t, s, len, o);
}

/* Longest matchable token at s (user-defined always, control when asked). */
static int32_t match_special(const st_tokenizer_t *t, const char *s, size_t len, int control)
{
    uint8_t b = (uint8_t)s[0];
    for (uint32_t i = t->special_start[b]; i < t->special_start[b + 1]; i++) {
        const st_tok_entry_t *e = &t->tok[t->special[i]];
        if (e->type == ST_TT_CONTROL && !control) continue;
        if (e->text_len <= len && memcmp(t->pool + e->text_off, s, e->text_len) == 0)
            return t->special[i];
    }
    return -1;
}

st_status_t st_tokenizer_encode(const st_tokenizer_t *t, const char *text, size_t len,
                                unsigned flags, int32_t *ids, size_t cap, size_t *n_out)
{
    st_tok_out_t o = {ids, ids ? cap : 0, 0};
    st_status_t st = ST_OK;
    size_t start = 0;

    if (!t || (!text && len) || !n_out) return ST_ERR_INVALID;
    if ((flags & ST_TOK_ADD_BOS) && t->add_bos && t->bos >= 0) st_tok_emit(&o, t->bos);
    /* Special tokens split the text first, as `tokenizers`' added vocabulary
     * does; the pieces between them are encoded on their own. SentencePiece
     * gets the space prefix again after each special token (llama.cpp and
     * the legacy Llama 2 tokenizer.json behave so). */
    for (size_t i = 0; i < len && t->n_special;) {
        int32_t id = match_special(t, text + i, len - i, (flags & ST_TOK_PARSE_SPECIAL) != 0);
        if (id < 0) {
            i++;
            continue;
        }
        if ((st = encode_fragment(t, text + start, i - start, &o)) != ST_OK) return st;
        st_tok_emit(&o, id);
        i += t->tok[id].text_len;
        start = i;
    }
    if ((st = encode_fragment(t, text + start, len - start, &o)) != ST_OK) return st;
    *n_out = o.n;
    return o.n > o.cap ? ST_ERR_RANGE : ST_OK;
}

/* ---- decoding ---------------------------------------------------------- */

static const char *piece_of(const st_tokenizer_t *t, int32_t id, int special, size_t *len)
{
    *len = 0;
    if (id < 0 || (uint32_t)id >= t->n_vocab) return "";
    const st_tok_entry_t *e = &t->tok[id];
    if ((e->type == ST_TT_CONTROL || e->type == ST_TT_UNKNOWN) && !special) return "";
    *len = e->piece_len;
    return t->pool + e->piece_off;
}

size_t st_tokenizer_piece(const st_tokenizer_t *t, int32_t id, int special, char *buf, size_t cap)
{
    size_t len;
    const char *p = piece_of(t, id, special, &len);
    if (buf && cap) memcpy(buf, p, ST_MIN(len, cap));
    return len;
}

void st_detok_init(st_detok_t *d, const st_tokenizer_t *t)
{
    memset(d, 0, sizeof(*d));
    d->tok = t;
    d->first = 1;
}

typedef struct sink {
    char  *out;
    size_t cap, n;
} sink_t;

/* Whole characters only; one that does not fit is dropped (NUL kept). */
static void sink_put(sink_t *s, const char *p, size_t n)
{
    if (s->n + n + 1 > s->cap) return;
    memcpy(s->out + s->n, p, n);
    s->n += n;
    s->out[s->n] = '\0';
}

static void sink_fffd(sink_t *s)
{
    sink_put(s, "\xEF\xBF\xBD", 3);
}

/* Is b acceptable as byte `pos` (>= 1) of a sequence starting with lead? */
static int utf8_next_ok(unsigned char lead, size_t pos, unsigned char b)
{
    if (pos == 1) {
        if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
        if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
        if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
        if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
    }
    return b >= 0x80 && b <= 0xBF;
}

/* UTF-8 state machine over the stream: an incomplete sequence waits in
 * d->pending; an invalid one becomes one U+FFFD for its maximal valid
 * prefix, as Python's 'replace' and WHATWG decoders do. */
static void detok_feed(st_detok_t *d, const char *p, size_t n, sink_t *s)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)p[i];
        if (d->n_pending) {
            unsigned char lead = (unsigned char)d->pending[0];
            if (utf8_next_ok(lead, d->n_pending, b)) {
                d->pending[d->n_pending++] = (char)b;
                if (d->n_pending == st_utf8_seq_len(lead)) {
                    sink_put(s, d->pending, d->n_pending);
                    d->n_pending = 0;
                }
                continue;
            }
            sink_fffd(s);
            d->n_pending = 0;
        }
        size_t need = st_utf8_seq_len(b);
        if (need == 1) sink_put(s, (const char *)&p[i], 1);
        else if (need == 0) sink_fffd(s);
        else d->pending[d->n_pending++] = (char)b;
    }
}

size_t st_detok_push(st_detok_t *d, int32_t id, char *out, size_t cap)
{
    sink_t s = {out, cap, 0};
    size_t len;
    const char *p = piece_of(d->tok, id, 0, &len);

    if (out && cap) out[0] = '\0';
    if (!out) s.cap = 0;
    if (d->first && len) {
        if (d->tok->kind == ST_TOKENIZER_SPM && d->tok->add_space_prefix && p[0] == ' ') {
            p++;
            len--;
        }
        d->first = 0;
    }
    detok_feed(d, p, len, &s);
    return s.n;
}

size_t st_detok_flush(st_detok_t *d, char *out, size_t cap)
{
    sink_t s = {out, out ? cap : 0, 0};
    if (out && cap) out[0] = '\0';
    if (d->n_pending) sink_fffd(&s);
    d->n_pending = 0;
    return s.n;
}
