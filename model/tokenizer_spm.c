/*
 * tokenizer_spm.c - SentencePiece-style BPE (tokenizer.ggml.model =
 * "llama"), the algorithm of sentencepiece's bpe_model.cc:
 *   - spaces become U+2581 "▁", and "▁" is prepended when add_space_prefix;
 *   - every UTF-8 character starts as a symbol;
 *   - repeatedly merge the adjacent pair whose concatenation is a vocabulary
 *     piece with the highest score, leftmost first on ties;
 *   - a final symbol that is not a piece is written as its bytes (<0xNN>
 *     byte-fallback tokens), or as unk when the vocabulary has no byte tokens.
 * Only normal and user-defined pieces take part, as in sentencepiece, where
 * control pieces (<s>) live outside the piece table: plain text "<s>" must
 * not turn into the control token (llama.cpp lets it; we follow
 * sentencepiece, the reference the tests compare against).
 */
#include <stdlib.h>
#include <string.h>

#include "st_util.h"
#include "tokenizer_internal.h"
#include "unicode.h"

typedef struct spm_sym {
    uint32_t off, len;    /* bytes in the normalized text */
    int32_t  prev, next;  /* -1 at the ends */
} spm_sym_t;

typedef struct spm_cand {
    float    score;
    uint32_t left;
    uint32_t len;         /* left.len + right.len when queued: stale check */
} spm_cand_t;

static int spm_better(const spm_cand_t *a, const spm_cand_t *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct spm_ctx {
    const st_tokenizer_t *t;
    const char *s;        /* normalized text */
    spm_sym_t  *sym;
    spm_cand_t *heap;
    size_t      n_heap, heap_cap;
} spm_ctx_t;

static int32_t piece_id(const st_tokenizer_t *t, const char *s, size_t len)
{
    int32_t id = st_tok_lookup(t, s, len);
    if (id < 0) return -1;
    uint8_t ty = t->tok[id].type;
    return (ty == ST_TT_NORMAL || ty == ST_TT_USER_DEFINED || ty == ST_TT_UNDEFINED) ? id : -1;
}

static st_status_t spm_push(spm_ctx_t *c, spm_cand_t v)
{
    if (c->n_heap == c->heap_cap) {
        size_t nc = c->heap_cap ? 2 * c->heap_cap : 64;
        spm_cand_t *h = realloc(c->heap, nc * sizeof(*h));
        if (!h) return ST_ERR_NOMEM;
        c->heap = h;
        c->heap_cap = nc;
    }
    size_t i = c->n_heap++;
    while (i > 0 && spm_better(&v, &c->heap[(i - 1) / 2])) {
        c->heap[i] = c->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    c->heap[i] = v;
    return ST_OK;
}

static spm_cand_t spm_pop(spm_ctx_t *c)
{
    spm_cand_t top = c->heap[0], last = c->heap[--c->n_heap];
    size_t i = 0, n = c->n_heap;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const spm_cand_t *best = &last;
        if (l < n && spm_better(&c->heap[l], best)) { m = l; best = &c->heap[l]; }
        if (l + 1 < n && spm_better(&c->heap[l + 1], best)) m = l + 1;
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = last;
    return top;
}

static st_status_t spm_try(spm_ctx_t *c, int32_t left)
{
    if (left < 0) return ST_OK;
    const spm_sym_t *l = &c->sym[left];
    if (l->next < 0) return ST_OK;
    uint32_t len = l->len + c->sym[l->next].len;
    int32_t id = piece_id(c->t, c->s + l->off, len);
    if (id < 0) return ST_OK;
    return spm_push(c, (spm_cand_t){c->t->tok[id].score, (uint32_t)left, len});
}

st_status_t st_tok_spm_encode(const st_tokenizer_t *t, const char *s, size_t len, st_tok_out_t *o)
{
    spm_ctx_t c = {.t = t};
    st_status_t st = ST_OK;
    char *norm = NULL;
    size_t n = 0;

    /* normalize: optional "▁" prefix, ' ' -> "▁" (at most 3x the input) */
    if (len > (SIZE_MAX - 3) / 3) return ST_ERR_OVERFLOW;
    norm = malloc(3 * len + 3);
    c.sym = malloc((len + 1) * sizeof(*c.sym));
    if (!norm || !c.sym) {
        st = ST_ERR_NOMEM;
        goto out;
    }
    if (t->add_space_prefix) {
        memcpy(norm, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ') {
            memcpy(norm + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            norm[n++] = s[i];
        }
    }
    c.s = norm;

    int32_t n_sym = 0;
    for (size_t i = 0; i < n;) {
        size_t m = st_utf8_valid_len(norm + i, n - i);
        if (m == 0) m = 1;   /* a stray byte is its own symbol: bytes fallback */
        c.sym[n_sym] = (spm_sym_t){(uint32_t)i, (uint32_t)m, n_sym - 1, n_sym + 1};
        n_sym++;
        i += m;
    }
    if (n_sym == 0) goto out;
    c.sym[n_sym - 1].next = -1;
    for (int32_t i = 0; i + 1 < n_sym; i++)
        if ((st = spm_try(&c, i)) != ST_OK) goto out;
    while (c.n_heap) {
        spm_cand_t v = spm_pop(&c);
        spm_sym_t *l = &c.sym[v.left];
        if (l->len == 0 || l->next < 0 || l->len + c.sym[l->next].len != v.len) continue;
        spm_sym_t *r = &c.sym[l->next];
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) c.sym[r->next].prev = (int32_t)v.left;
        r->len = 0;
        if ((st = spm_try(&c, l->prev)) != ST_OK) goto out;
        if ((st = spm_try(&c, (int32_t)v.left)) != ST_OK) goto out;
    }
    for (int32_t i = 0; i >= 0; i = c.sym[i].next) {
        const spm_sym_t *y = &c.sym[i];
        int32_t id = piece_id(t, norm + y->off, y->len);
        if (id >= 0) {
            st_tok_emit(o, id);
            continue;
        }
        for (uint32_t k = 0; k < y->len; k++) {
            int32_t b = t->byte_tok[(uint8_t)norm[y->off + k]];
            if (b >= 0) st_tok_emit(o, b);
            else if (t->unk >= 0) {
                st_tok_emit(o, t->unk);   /* one unk per character, not per byte */
                break;
            }
        }
    }
out:
    free(norm);
    free(c.sym);
    free(c.heap);
    return st;
}
