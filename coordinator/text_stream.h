/*
 * text_stream.h - a request's generated text as it streams: detokenizes,
 * holds back text that could be the start of a stop string, and cuts at the
 * first stop string found, even when it spans several tokens.
 * Internal to coordinator/.
 */
#ifndef ST_TEXT_STREAM_H
#define ST_TEXT_STREAM_H

#include <stddef.h>

#include "st_status.h"
#include "st_tokenizer.h"

#define ST_STOP_MAX 8
#define ST_STOP_MAX_LEN 256

typedef struct st_stop_set {
    char  *s[ST_STOP_MAX];
    size_t len[ST_STOP_MAX];
    size_t n;
} st_stop_set_t;

/* Copies up to `max` non-empty strings from a NULL-terminated list.
 * ST_ERR_RANGE when one is longer than ST_STOP_MAX_LEN. */
st_status_t st_stop_set_init(st_stop_set_t *ss, const char *const *stops, size_t max);
void        st_stop_set_free(st_stop_set_t *ss);

typedef struct st_text_stream {
    st_detok_t           detok;
    const st_stop_set_t *stops;
    char                *buf;      /* all text so far */
    char                *piece;    /* one token's text */
    size_t               piece_cap;
    size_t               len, cap;
    size_t               emitted;  /* bytes of buf already handed out */
    int                  stopped;
} st_text_stream_t;

st_status_t st_text_stream_init(st_text_stream_t *ts, const st_tokenizer_t *tok,
                                const st_stop_set_t *stops, size_t max_tokens);
void        st_text_stream_free(st_text_stream_t *ts);
/* Adds a token. text and len receive the new text safe to emit now (valid until the next
 * call). Returns 1 when a stop string was found: the text before it has
 * been returned and the stream is finished. */
int         st_text_stream_push(st_text_stream_t *ts, int32_t tok, const char **text, size_t *len);
/* End of generation (length/EOS): returns what was held back. */
const char *st_text_stream_finish(st_text_stream_t *ts, size_t *len);

#endif /* ST_TEXT_STREAM_H */
