/*
 * unicode.h - the little Unicode the tokenizers need: UTF-8 decoding that
 * never reads past the end and never fails, and the character classes the
 * pre-tokenizer regexes use (\p{L}, \p{N}, \s).
 *
 *   uint32_t cp; size_t n = st_utf8_decode(s, len, &cp);   // n >= 1
 *   if (st_unicode_class(cp) == ST_UCLASS_LETTER) ...
 *
 * Classes come from a range table generated offline from Python's
 * unicodedata (tests/tools/gen_unicode_tables.py -> unicode_tables.c), so
 * there is no dependency on a regex or ICU library. Whitespace is the
 * Unicode White_Space property, which is what Oniguruma's \s (used by
 * Hugging Face tokenizers) matches; it is short enough to write by hand.
 * Internal to model/: not part of the public API.
 */
#ifndef ST_UNICODE_H
#define ST_UNICODE_H

#include <stddef.h>
#include <stdint.h>

typedef enum st_uclass {
    ST_UCLASS_OTHER  = 0,
    ST_UCLASS_LETTER = 1,   /* general category L* */
    ST_UCLASS_NUMBER = 2    /* general category N* */
} st_uclass_t;

typedef struct st_unicode_range {
    uint32_t lo;
    uint32_t hi_class;   /* hi << 2 | class */
} st_unicode_range_t;

extern const char st_unicode_version[];
extern const uint32_t st_unicode_n_ranges;
extern const st_unicode_range_t st_unicode_ranges[];

/* Decodes one code point from s[0..len) (len >= 1). Malformed or truncated
 * sequences, overlongs and surrogates decode as U+FFFD consuming one byte,
 * the way Rust's from_utf8_lossy and Python's 'replace' consume them. */
size_t st_utf8_decode(const char *s, size_t len, uint32_t *cp);

/* Length of the valid UTF-8 sequence starting at s, or 0 if the bytes there
 * are not a complete valid sequence (used by the streaming detokenizer). */
size_t st_utf8_valid_len(const char *s, size_t len);

/* Expected total length of a sequence from its lead byte (0: not a lead). */
size_t st_utf8_seq_len(unsigned char lead);

/* Encodes cp (<= 0x10FFFF) into out[4]; returns bytes written. */
size_t st_utf8_encode(uint32_t cp, char *out);

st_uclass_t st_unicode_class(uint32_t cp);
int         st_unicode_is_space(uint32_t cp);

#endif /* ST_UNICODE_H */
