#define _GNU_SOURCE  /* memmem */
#include "text_stream.h"

#include <stdlib.h>
#include <string.h>

st_status_t st_stop_set_init(st_stop_set_t *ss, const char *const *stops, size_t max)
{
    memset(ss, 0, sizeof(*ss));
    for (size_t i = 0; i < max && i < ST_STOP_MAX && stops[i]; i++) {
        size_t l = strlen(stops[i]);
        if (l == 0)
            continue;
        if (l > ST_STOP_MAX_LEN) {
            st_stop_set_free(ss);
            return ST_ERR_RANGE;
        }
        ss->s[ss->n] = strdup(stops[i]);
        if (!ss->s[ss->n]) {
            st_stop_set_free(ss);
            return ST_ERR_NOMEM;
        }
        ss->len[ss->n++] = l;
    }
    return ST_OK;
}

void st_stop_set_free(st_stop_set_t *ss)
{
    for (size_t i = 0; i < ss->n; i++)
        free(ss->s[i]);
    memset(ss, 0, sizeof(*ss));
}

st_status_t st_text_stream_init(st_text_stream_t *ts, const st_tokenizer_t *tok,
                                const st_stop_set_t *stops, size_t max_tokens)
{
    memset(ts, 0, sizeof(*ts));
    st_detok_init(&ts->detok, tok);
    ts->stops = stops;
    /* Typical pieces are a few bytes: size for the common case up front so
     * growth (amortised doubling) is rare. */
    ts->cap = max_tokens * 8 + 256;
    ts->buf = malloc(ts->cap);
    ts->piece_cap = st_tokenizer_max_piece(tok) + 16;
    ts->piece = malloc(ts->piece_cap);
    if (!ts->buf || !ts->piece) {
        st_text_stream_free(ts);
        return ST_ERR_NOMEM;
    }
    return ST_OK;
}

void st_text_stream_free(st_text_stream_t *ts)
{
    free(ts->buf);
    free(ts->piece);
    ts->buf = ts->piece = NULL;
    ts->len = ts->cap = ts->emitted = 0;
}

static int reserve(st_text_stream_t *ts, size_t extra)
{
    size_t need = ts->len + extra + 1;
    if (need <= ts->cap)
        return 0;
    size_t cap = ts->cap * 2 > need ? ts->cap * 2 : need;
    char *nb = realloc(ts->buf, cap);
    if (!nb)
        return -1;
    ts->buf = nb;
    ts->cap = cap;
    return 0;
}

/* Length of the longest suffix of buf[from, len) that is a proper prefix of
 * some stop string: that much must be held back. */
static size_t holdback(const st_text_stream_t *ts, size_t from)
{
    size_t best = 0;
    for (size_t i = 0; i < ts->stops->n; i++) {
        size_t sl = ts->stops->len[i];
        size_t avail = ts->len - from;
        size_t k = sl - 1 < avail ? sl - 1 : avail;
        for (; k > best; k--)
            if (memcmp(ts->buf + ts->len - k, ts->stops->s[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

int st_text_stream_push(st_text_stream_t *ts, int32_t tok, const char **text, size_t *len)
{
    size_t n, search_from, cut = (size_t)-1;

    *text = ts->buf ? ts->buf + ts->emitted : "";
    *len = 0;
    if (ts->stopped || !ts->buf)
        return 1;
    n = st_detok_push(&ts->detok, tok, ts->piece, ts->piece_cap);
    if (n == 0)
        return 0;
    if (reserve(ts, n) != 0)
        return 0;   /* out of memory: drop text rather than crash */
    memcpy(ts->buf + ts->len, ts->piece, n);
    ts->len += n;
    ts->buf[ts->len] = '\0';

    if (ts->stops && ts->stops->n) {
        /* A stop string can begin in text not yet emitted only. */
        search_from = ts->emitted;
        for (size_t i = 0; i < ts->stops->n; i++) {
            char *hit = memmem(ts->buf + search_from, ts->len - search_from, ts->stops->s[i],
                               ts->stops->len[i]);
            if (hit && (size_t)(hit - ts->buf) < cut)
                cut = (size_t)(hit - ts->buf);
        }
        if (cut != (size_t)-1) {
            *text = ts->buf + ts->emitted;
            *len = cut - ts->emitted;
            ts->emitted = cut;
            ts->stopped = 1;
            return 1;
        }
        size_t hold = holdback(ts, ts->emitted);
        *text = ts->buf + ts->emitted;
        *len = ts->len - hold - ts->emitted;
        ts->emitted += *len;
        return 0;
    }
    *text = ts->buf + ts->emitted;
    *len = ts->len - ts->emitted;
    ts->emitted = ts->len;
    return 0;
}

const char *st_text_stream_finish(st_text_stream_t *ts, size_t *len)
{
    char tail[64];
    size_t n;

    *len = 0;
    if (!ts->buf)
        return "";
    if (!ts->stopped) {
        n = st_detok_flush(&ts->detok, tail, sizeof(tail));
        if (n && reserve(ts, n) == 0) {
            memcpy(ts->buf + ts->len, tail, n);
            ts->len += n;
            ts->buf[ts->len] = '\0';
        }
        *len = ts->len - ts->emitted;
    }
    const char *t = ts->buf + ts->emitted;
    ts->emitted = ts->len;
    ts->stopped = 1;
    return t;
}
