/*
 * tokenizer_internal.h - what tokenizer.c (vocabulary, special tokens,
 * decoding), tokenizer_bpe.c (pre-tokenizers, byte-level BPE) and
 * tokenizer_spm.c (SentencePiece BPE) share. Not a public header.
 *
 * Token text is kept twice when it differs: `text` is the vocabulary string
 * exactly as in the file (what st_tokenizer_find and merges use; byte-level
 * BPE spells a space "Ġ"), `piece` is the bytes the token stands for in text
 * (what decoding emits). Both live in one owned pool, so the tokenizer does
 * not depend on the GGUF mapping staying open.
 */
#ifndef ST_TOKENIZER_INTERNAL_H
#define ST_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "st_tokenizer.h"

/* GGUF token types (llama.cpp's llama_token_type). */
enum {
    ST_TT_UNDEFINED = 0,
    ST_TT_NORMAL = 1,
    ST_TT_UNKNOWN = 2,
    ST_TT_CONTROL = 3,
    ST_TT_USER_DEFINED = 4,
    ST_TT_UNUSED = 5,
    ST_TT_BYTE = 6
};

typedef enum st_pre_kind {
    ST_PRE_GPT2 = 0,   /* HF ByteLevel regex ("default", "gpt2", ...) */
    ST_PRE_SMOLLM,     /* every \p{N} isolated, then the GPT-2 regex   */
    ST_PRE_LLAMA3,     /* Llama 3 regex, numbers in groups of 1..3     */
    ST_PRE_QWEN2       /* Llama 3 regex with single numbers            */
} st_pre_kind_t;

typedef struct st_tok_entry {
    uint32_t text_off, text_len;    /* vocabulary spelling */
    uint32_t piece_off, piece_len;  /* bytes in text */
    float    score;
    uint8_t  type;
} st_tok_entry_t;

/* One merge: (left, right) -> result at priority `rank` (lower first). */
typedef struct st_merge_slot {
    uint64_t key;      /* left << 32 | right; UINT64_MAX when empty */
    uint32_t rank;
    int32_t  result;
} st_merge_slot_t;

struct st_tokenizer {
    st_tokenizer_kind_t kind;
    st_pre_kind_t       pre;
    char                pre_name[32];

    uint32_t        n_vocab;
    st_tok_entry_t *tok;
    char           *pool;
    size_t          max_piece;

    /* text -> id, open addressing; slot holds id + 1, 0 when empty */
    uint32_t *text_hash;
    uint32_t  text_mask;

    st_merge_slot_t *merges;   /* BPE only */
    uint32_t         merge_mask;
    uint32_t         n_merges;

    int32_t byte_tok[256];     /* BPE: token of one raw byte; SPM: <0xNN>; -1 none */

    /* Tokens matched as whole strings before pre-tokenization: user-defined
     * always, control with ST_TOK_PARSE_SPECIAL. Bucketed by first byte,
     * longest first, for leftmost-longest matching. */
    int32_t  *special;
    uint32_t  n_special;
    uint32_t  special_start[257];

    int32_t bos, eos, unk, pad, eot, eom;
    int32_t eog[16];
    uint32_t n_eog;
    int add_bos;
    int add_space_prefix;      /* SPM */
    int ignore_merges;         /* BPE: whole word in vocab wins (Llama 3) */
};

/* Output accumulator: counts everything, stores what fits. */
typedef struct st_tok_out {
    int32_t *ids;
    size_t   cap;
    size_t   n;
} st_tok_out_t;

static inline void st_tok_emit(st_tok_out_t *o, int32_t id)
{
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* Vocabulary lookup by exact spelling; -1 when absent. */
int32_t st_tok_lookup(const st_tokenizer_t *t, const char *s, size_t len);

static inline const char *st_tok_text(const st_tokenizer_t *t, int32_t id, size_t *len)
{
    *len = t->tok[id].text_len;
    return t->pool + t->tok[id].text_off;
}

/* Merge table lookup: rank and result of (left, right), 0 when no merge. */
int st_tok_merge_find(const st_tokenizer_t *t, int32_t left, int32_t right,
                      uint32_t *rank, int32_t *result);

/* Encode a fragment of plain text (no special tokens in it). Fragments
 * start the text or follow a special token, so SPM prefixes each with a
 * space when add_space_prefix is set. */
st_status_t st_tok_bpe_encode(const st_tokenizer_t *t, const char *s, size_t len, st_tok_out_t *o);
st_status_t st_tok_spm_encode(const st_tokenizer_t *t, const char *s, size_t len, st_tok_out_t *o);

/* Pre-tokenizer: splits s into words; calls fn for each. Exposed for tests. */
typedef st_status_t (*st_tok_word_fn)(void *ctx, const char *w, size_t len);
st_status_t st_tok_pretokenize(st_pre_kind_t pre, const char *s, size_t len, st_tok_word_fn fn,
                               void *ctx);

/* GPT-2's reversible byte <-> printable code point map. */
uint32_t st_tok_byte_to_cp(uint8_t b);
int      st_tok_cp_to_byte(uint32_t cp);   /* -1 when cp is not in the map */

#endif /* ST_TOKENIZER_INTERNAL_H */
