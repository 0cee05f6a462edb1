/*
 * st_tokenizer.h - tokenizers built from GGUF metadata.
 *
 *   st_tokenizer_t *tok;
 *   st_tokenizer_create(gguf, &tok, &err);
 *   int32_t ids[256]; size_t n;
 *   st_tokenizer_encode(tok, "Hello", 5, ST_TOK_ADD_BOS | ST_TOK_PARSE_SPECIAL, ids, 256, &n);
 *   st_tokenizer_free(tok);
 *
 * Two kinds, chosen by tokenizer.ggml.model:
 *   "llama" - SentencePiece-style BPE over scores, with byte fallback
 *             (<0xNN> tokens) and the add_space_prefix setting;
 *   "gpt2"  - byte-level BPE over merges, with the pre-tokenizer regex the
 *             model declares in tokenizer.ggml.pre (llama3, smollm/gpt2, ...).
 * Encoding matches Hugging Face `tokenizers` on the same vocabulary (tested
 * in tests/py). Special/control tokens (<|im_start|>...) are recognised in
 * text only with ST_TOK_PARSE_SPECIAL, as chat templates need.
 *
 * Decoding is per token to bytes. A streaming decoder (st_detok_t) holds back
 * an incomplete UTF-8 sequence split across tokens so callers never emit
 * invalid UTF-8 mid-stream.
 */
#ifndef ST_TOKENIZER_H
#define ST_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_gguf.h"
#include "st_status.h"

typedef struct st_tokenizer st_tokenizer_t;

enum {
    ST_TOK_ADD_BOS       = 1u << 0, /* prepend BOS if the model asks for it (add_bos_token) */
    ST_TOK_PARSE_SPECIAL = 1u << 1  /* match control tokens written as text */
};

typedef enum st_tokenizer_kind {
    ST_TOKENIZER_SPM  = 1,   /* "llama" */
    ST_TOKENIZER_BPE  = 2    /* "gpt2"  */
} st_tokenizer_kind_t;

st_status_t st_tokenizer_create(const st_gguf_t *g, st_tokenizer_t **out, st_error_t *err);
void        st_tokenizer_free(st_tokenizer_t *t);

st_tokenizer_kind_t st_tokenizer_kind(const st_tokenizer_t *t);
const char *st_tokenizer_kind_name(const st_tokenizer_t *t);   /* "llama"/"gpt2" */
const char *st_tokenizer_pre_name(const st_tokenizer_t *t);    /* pre-tokenizer, "" if none */
uint32_t    st_tokenizer_n_vocab(const st_tokenizer_t *t);
int32_t     st_tokenizer_bos(const st_tokenizer_t *t);   /* -1 when none */
int32_t     st_tokenizer_eos(const st_tokenizer_t *t);   /* -1 when none */
/* True for end-of-generation tokens: EOS, EOT, <|im_end|>, <|eot_id|>, ... */
int         st_tokenizer_is_eog(const st_tokenizer_t *t, int32_t id);
/* Id of a token given its exact text, or -1. */
int32_t     st_tokenizer_find(const st_tokenizer_t *t, const char *text);

/* Encode `len` bytes of UTF-8 text. Writes at most `cap` ids; *n_out gets the
 * number of ids the full encoding has (so a caller can retry with a larger
 * buffer: ST_ERR_RANGE when it exceeds cap). */
st_status_t st_tokenizer_encode(const st_tokenizer_t *t, const char *text, size_t len,
                                unsigned flags, int32_t *ids, size_t cap, size_t *n_out);

/* Bytes of one token as it appears in text (byte-level and byte-fallback
 * tokens decoded; control tokens give their text only when `special`).
 * Returns the number of bytes the piece has; writes at most cap of them. */
size_t st_tokenizer_piece(const st_tokenizer_t *t, int32_t id, int special, char *buf, size_t cap);
/* Longest piece of the vocabulary in bytes: a st_detok_push buffer of
 * max_piece + 16 bytes never truncates. (Added by the tokenizer module.) */
size_t st_tokenizer_max_piece(const st_tokenizer_t *t);

/* Streaming detokenizer: push ids, get out complete UTF-8 only. */
typedef struct st_detok {
    const st_tokenizer_t *tok;
    char     pending[8];   /* bytes of an incomplete UTF-8 sequence */
    uint32_t n_pending;
    int      first;        /* SentencePiece drops the leading space of the first piece */
} st_detok_t;

void   st_detok_init(st_detok_t *d, const st_tokenizer_t *t);
/* Appends the text of `id` to out (at most cap bytes, NUL-terminated) and
 * returns the number of bytes written: only complete UTF-8 sequences.
 * Control tokens give no text. A character that does not fit in cap is
 * dropped, so give at least st_tokenizer_max_piece() + 16 bytes. */
size_t st_detok_push(st_detok_t *d, int32_t id, char *out, size_t cap);
/* Flushes what is pending (invalid leftovers become U+FFFD). */
size_t st_detok_flush(st_detok_t *d, char *out, size_t cap);

#endif /* ST_TOKENIZER_H */
