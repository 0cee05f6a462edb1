/*
 * tokenizer_bpe.c - byte-level BPE (tokenizer.ggml.model = "gpt2"): the
 * pre-tokenizer regexes written out by hand, and the merge loop.
 *
 * The regexes are the ones Hugging Face `tokenizers` runs (Oniguruma):
 *   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen2:  llama3 with \p{N} instead of \p{N}{1,3}
 *   smollm: Digits(individual_digits) first - each \p{N} character is its own
 *           piece - then gpt2 inside each piece.
 * Each matcher below tries the alternatives in the regex's order at one
 * position and returns where the match ends, which is how a backtracking
 * engine resolves them; the comments name the alternative. The text is
 * decoded to code points once (invalid UTF-8 bytes stand alone as "other"),
 * but words are handed out as byte ranges of the original text.
 *
 * BPE on a word: every byte starts as its own symbol (the vocabulary spells
 * bytes through GPT-2's byte->code point map, resolved at load time into
 * byte_tok[]), then the adjacent pair with the lowest merge rank is merged,
 * leftmost first on ties, until no pair has a merge - exactly the order of
 * `tokenizers`' BPE (a min-heap keyed by (rank, position)). The heap makes a
 * pathological word (100k spaces) O(n log n) instead of O(n^2).
 */
#include <stdlib.h>
#include <string.h>

#include "st_util.h"
#include "tokenizer_internal.h"
#include "unicode.h"

/* ---- byte <-> code point map (GPT-2's bytes_to_unicode) ---------------- */

static int byte_is_printable(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
}

uint32_t st_tok_byte_to_cp(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    if (b <= 32) return 256u + b;
    if (b >= 127 && b <= 160) return 256u + 33u + (b - 127u);
    return 256u + 33u + 34u;   /* 173, the soft hyphen */
}

int st_tok_cp_to_byte(uint32_t cp)
{
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 289 + 127);
    if (cp == 323) return 173;
    return -1;
}

/* ---- pre-tokenizers ---------------------------------------------------- */

enum { K_OTHER = 0, K_LETTER = 1, K_NUMBER = 2, K_SPACE = 3 };

typedef struct cps {
    uint32_t *cp;
    uint8_t  *k;
    uint32_t *off;   /* byte offset of each code point; off[n] = len */
    size_t    n;
} cps_t;

static st_status_t cps_decode(const char *s, size_t len, cps_t *c)
{
    c->cp = malloc((len + 1) * sizeof(*c->cp));
    c->k = malloc(len + 1);
    c->off = malloc((len + 1) * sizeof(*c->off));
    if (!c->cp || !c->k || !c->off) return ST_ERR_NOMEM;
    size_t i = 0, n = 0;
    while (i < len) {
        uint32_t cp;
        size_t m = st_utf8_decode(s + i, len - i, &cp);
        c->cp[n] = cp;
        c->off[n] = (uint32_t)i;
        if (st_unicode_is_space(cp)) c->k[n] = K_SPACE;
        else c->k[n] = (uint8_t)st_unicode_class(cp);   /* L=1, N=2, other=0 */
        n++;
        i += m;
    }
    c->off[n] = (uint32_t)len;
    c->n = n;
    return ST_OK;
}

static void cps_free(cps_t *c)
{
    free(c->cp);
    free(c->k);
    free(c->off);
}

static size_t run_of(const cps_t *c, size_t i, size_t end, int kind)
{
    while (i < end && c->k[i] == kind) i++;
    return i;
}

/* The contractions, case-sensitive (gpt2) or ASCII-case-insensitive (llama3). */
static size_t match_contraction(const cps_t *c, size_t i, size_t end, int icase)
{
    if (c->cp[i] != '\'' || i + 1 >= end) return 0;
    uint32_t a = c->cp[i + 1], b = i + 2 < end ? c->cp[i + 2] : 0;
    if (icase) {
        if (a >= 'A' && a <= 'Z') a += 32;
        if (b >= 'A' && b <= 'Z') b += 32;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
}

/* \s+(?!\S)|\s+ at a whitespace position: the run, less its last character
 * when more text follows and the run is longer than one. */
static size_t match_space_tail(const cps_t *c, size_t i, size_t end)
{
    size_t e = run_of(c, i, end, K_SPACE);
    if (e == end) return e;
    if (e - i >= 2) return e - 1;
    return i + 1;
}

static size_t match_gpt2(const cps_t *c, size_t i, size_t end)
{
    size_t e = match_contraction(c, i, end, 0);
    if (e) return e;
    /* ' ?\p{L}+' | ' ?\p{N}+' | ' ?[^\s\p{L}\p{N}]+' */
    size_t p = (c->cp[i] == ' ' && i + 1 < end && c->k[i + 1] != K_SPACE) ? i + 1 : i;
    if (c->k[p] != K_SPACE) return run_of(c, p, end, c->k[p]);
    return match_space_tail(c, i, end);
}

static size_t match_llama3(const cps_t *c, size_t i, size_t end, size_t max_digits)
{
    size_t e = match_contraction(c, i, end, 1);
    if (e) return e;
    int k = c->k[i];
    uint32_t cp = c->cp[i];
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (k == K_LETTER) return run_of(c, i, end, K_LETTER);
    if (k != K_NUMBER && cp != '\r' && cp != '\n' && i + 1 < end && c->k[i + 1] == K_LETTER)
        return run_of(c, i + 1, end, K_LETTER);
    /* \p{N}{1,max} */
    if (k == K_NUMBER) {
        e = i;
        while (e < end && e - i < max_digits && c->k[e] == K_NUMBER) e++;
        return e;
    }
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    size_t p = (cp == ' ' && i + 1 < end && c->k[i + 1] == K_OTHER) ? i + 1 : i;
    if (c->k[p] == K_OTHER) {
        e = run_of(c, p, end, K_OTHER);
        while (e < end && (c->cp[e] == '\r' || c->cp[e] == '\n')) e++;
        return e;
    }
    /* \s*[\r\n]+ : up to and including the last newline of the run */
    size_t run = run_of(c, i, end, K_SPACE), last = 0;
    for (size_t j = i; j < run; j++)
        if (c->cp[j] == '\r' || c->cp[j] == '\n') last = j + 1;
    if (last) return last;
    return match_space_tail(c, i, end);
}

st_status_t st_tok_pretokenize(st_pre_kind_t pre, const char *s, size_t len, st_tok_word_fn fn,
                               void *ctx)
{
    cps_t c = {0};
    st_status_t st = cps_decode(s, len, &c);
    if (st != ST_OK) goto out;

    for (size_t seg = 0; seg < c.n && st == ST_OK;) {
        /* smollm: a number character is a piece of its own, and the regex
         * runs inside the pieces between them. */
        size_t seg_end = c.n;
        if (pre == ST_PRE_SMOLLM) {
            if (c.k[seg] == K_NUMBER) {
                st = fn(ctx, s + c.off[seg], c.off[seg + 1] - c.off[seg]);
                seg++;
                continue;
            }
            seg_end = seg;
            while (seg_end < c.n && c.k[seg_end] != K_NUMBER) seg_end++;
        }
        for (size_t i = seg; i < seg_end && st == ST_OK;) {
            size_t e;
            switch (pre) {
            case ST_PRE_LLAMA3: e = match_llama3(&c, i, seg_end, 3); break;
            case ST_PRE_QWEN2:  e = match_llama3(&c, i, seg_end, 1); break;
            default:            e = match_gpt2(&c, i, seg_end); break;
            }
            ST_ASSERT(e > i && e <= seg_end);
            st = fn(ctx, s + c.off[i], c.off[e] - c.off[i]);
            i = e;
        }
        seg = seg_end;
    }
out:
    cps_free(&c);
    return st;
}

/* ---- merges ------------------------------------------------------------ */

typedef struct sym {
    int32_t id;
    int32_t prev, next;   /* -1 at the ends; id -1 once merged away */
} sym_t;

typedef struct cand {
    uint32_t rank;
    uint32_t pos;         /* left symbol */
    int32_t  left, right; /* ids when queued: stale entries are skipped */
} cand_t;

typedef struct bpe_ctx {
    const st_tokenizer_t *t;
    st_tok_out_t *out;
    sym_t  *sym;
    cand_t *heap;
    size_t  cap;   /* symbols the buffers hold */
    size_t  n_heap;
    size_t  heap_cap;
} bpe_ctx_t;

static int cand_less(const cand_t *a, const cand_t *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static st_status_t heap_push(bpe_ctx_t *b, cand_t c)
{
    if (b->n_heap == b->heap_cap) {
        size_t nc = b->heap_cap ? b->heap_cap * 2 : 64;
        cand_t *h = realloc(b->heap, nc * sizeof(*h));
        if (!h) return ST_ERR_NOMEM;
        b->heap = h;
        b->heap_cap = nc;
    }
    size_t i = b->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &b->heap[p])) break;
        b->heap[i] = b->heap[p];
        i = p;
    }
    b->heap[i] = c;
    return ST_OK;
}

static cand_t heap_pop(bpe_ctx_t *b)
{
    cand_t top = b->heap[0], last = b->heap[--b->n_heap];
    size_t i = 0, n = b->n_heap;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const cand_t *best = &last;
        if (l < n && cand_less(&b->heap[l], best)) { m = l; best = &b->heap[l]; }
        if (l + 1 < n && cand_less(&b->heap[l + 1], best)) m = l + 1;
        if (m == i) break;
        b->heap[i] = b->heap[m];
        i = m;
    }
    if (n) b->heap[i] = last;
    return top;
}

static st_status_t queue_pair(bpe_ctx_t *b, int32_t pos)
{
    int32_t nx = b->sym[pos].next;
    uint32_t rank;
    int32_t res;
    if (nx < 0) return ST_OK;
    if (!st_tok_merge_find(b->t, b->sym[pos].id, b->sym[nx].id, &rank, &res)) return ST_OK;
    return heap_push(b, (cand_t){rank, (uint32_t)pos, b->sym[pos].id, b->sym[nx].id});
}

static st_status_t bpe_word(void *vctx, const char *w, size_t len)
{
    bpe_ctx_t *b = vctx;
    const st_tokenizer_t *t = b->t;
    st_status_t st;

    if (t->ignore_merges) {
        int32_t id = -1;
        /* the vocabulary spells bytes through the map: build the spelling */
        char tmp[256];
        size_t n = 0;
        for (size_t i = 0; i < len && n + 2 <= sizeof(tmp); i++)
            n += st_utf8_encode(st_tok_byte_to_cp((uint8_t)w[i]), tmp + n);
        if (len * 2 <= sizeof(tmp)) id = st_tok_lookup(t, tmp, n);
        if (id >= 0) {
            st_tok_emit(b->out, id);
            return ST_OK;
        }
    }
    if (len > b->cap) {
        size_t nc = len > 2 * b->cap ? len : 2 * b->cap;
        sym_t *s = realloc(b->sym, nc * sizeof(*s));
        if (!s) return ST_ERR_NOMEM;
        b->sym = s;
        b->cap = nc;
    }
    /* one symbol per byte; a byte the vocabulary lacks becomes unk, or is
     * dropped without one (what `tokenizers` does) */
    int32_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = t->byte_tok[(uint8_t)w[i]];
        if (id < 0) id = t->unk;
        if (id < 0) continue;
        b->sym[n] = (sym_t){id, n - 1, n + 1};
        n++;
    }
    if (n == 0) return ST_OK;
    b->sym[n - 1].next = -1;
    b->n_heap = 0;
    for (int32_t i = 0; i + 1 < n; i++)
        if ((st = queue_pair(b, i)) != ST_OK) return st;
    while (b->n_heap) {
        cand_t c = heap_pop(b);
        sym_t *l = &b->sym[c.pos];
        if (l->id != c.left || l->next < 0 || b->sym[l->next].id != c.right) continue;
        uint32_t rank;
        int32_t res;
        st_tok_merge_find(t, c.left, c.right, &rank, &res);
        sym_t *r = &b->sym[l->next];
        l->id = res;
        l->next = r->next;
        if (r->next >= 0) b->sym[r->next].prev = (int32_t)c.pos;
        r->id = -1;
        if (l->prev >= 0 && (st = queue_pair(b, l->prev)) != ST_OK) return st;
        if ((st = queue_pair(b, (int32_t)c.pos)) != ST_OK) return st;
    }
    for (int32_t i = 0; i >= 0; i = b->sym[i].next)
        st_tok_emit(b->out, b->sym[i].id);
    return ST_OK;
}

st_status_t st_tok_bpe_encode(const st_tokenizer_t *t, const char *s, size_t len, st_tok_out_t *o)
{
    bpe_ctx_t b = {.t = t, .out = o};
    st_status_t st = st_tok_pretokenize(t->pre, s, len, bpe_word, &b);
    free(b.sym);
    free(b.heap);
    return st;
}
