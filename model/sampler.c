/*
 * sampler.c - logits to the next token (see st_sampler.h for the order of
 * operations).
 *
 * Cost per token matters (it runs once per generated token on the last
 * stage), so nothing is allocated here after create and no full sort is
 * done unless the truncation needs it: top-k selects its k best with a
 * quickselect (O(n)) and sorts only those; top-p without top-k sorts the
 * best 64, 512, 4096, ... until their mass reaches p, which for real
 * distributions is the first step. Ties between equal logits are broken by
 * the lower id everywhere, so results do not depend on the sort.
 *
 * Random numbers: splitmix64 (Steele, Lea & Flood; passes BigCrush), so a
 * seed means the same stream on every machine; the draw uses 53 bits. Its
 * state advances by a constant per draw, so the stream after k draws is the
 * stream of another seed (st_sampler_seed_after): a sequence replayed on a
 * new last stage after a failure continues with exactly the draws it would
 * have made (one per token whenever temperature > 0). This replaced
 * xoshiro256**, whose state cannot be fast-forwarded through the seed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "st_sampler.h"
#include "st_util.h"

#define MAX_REPEAT_LAST_N (1 << 20)

typedef struct cand {
    float   logit;
    int32_t id;
} cand_t;

struct st_sampler {
    st_sampler_params_t p;
    uint32_t  n_vocab;
    cand_t   *cand;
    double   *prob;
    int32_t  *hist;        /* ring of the last repeat_last_n accepted ids */
    uint32_t  hist_n, hist_pos;
    uint32_t *stamp;       /* per id: last sample() that penalised it */
    uint32_t  stamp_gen;
    uint64_t  rng;         /* splitmix64 state */
};

st_sampler_params_t st_sampler_default_params(void)
{
    return (st_sampler_params_t){
        .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
        .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0,
    };
}

st_status_t st_sampler_check_params(const st_sampler_params_t *p, const char **bad_field)
{
    const char *bad = NULL;
    if (!p) bad = "params";
    else if (!(p->temperature >= 0.0f) || !isfinite(p->temperature)) bad = "temperature";
    else if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) bad = "top_p";
    else if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) bad = "min_p";
    else if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty)) bad = "repeat_penalty";
    else if (p->repeat_last_n < 0 || p->repeat_last_n > MAX_REPEAT_LAST_N) bad = "repeat_last_n";
    if (bad_field) *bad_field = bad;
    return bad ? ST_ERR_RANGE : ST_OK;
}

/* ---- random numbers ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t st_sampler_seed_after(uint64_t seed, uint64_t draws)
{
    return seed + draws * 0x9e3779b97f4a7c15ull;   /* splitmix64's step, mod 2^64 */
}

void st_sampler_reset(st_sampler_t *s, uint64_t seed)
{
    s->rng = seed;
    s->hist_n = s->hist_pos = 0;
    s->p.seed = seed;
}

st_status_t st_sampler_create(const st_sampler_params_t *p, uint32_t n_vocab, st_sampler_t **out)
{
    st_sampler_t *s;
    if (!out || n_vocab == 0 || n_vocab > INT32_MAX) return ST_ERR_INVALID;
    if (st_sampler_check_params(p, NULL) != ST_OK) return ST_ERR_RANGE;
    s = calloc(1, sizeof(*s));
    if (!s) return ST_ERR_NOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
    s->prob = malloc((size_t)n_vocab * sizeof(*s->prob));
    s->stamp = calloc(n_vocab, sizeof(*s->stamp));
    s->hist = malloc((size_t)(p->repeat_last_n ? p->repeat_last_n : 1) * sizeof(*s->hist));
    if (!s->cand || !s->prob || !s->stamp || !s->hist) {
        st_sampler_free(s);
        return ST_ERR_NOMEM;
    }
    st_sampler_reset(s, p->seed);
    *out = s;
    return ST_OK;
}

void st_sampler_free(st_sampler_t *s)
{
    if (!s) return;
    free(s->cand);
    free(s->prob);
    free(s->stamp);
    free(s->hist);
    free(s);
}

void st_sampler_accept(st_sampler_t *s, int32_t id)
{
    uint32_t cap = (uint32_t)s->p.repeat_last_n;
    if (cap == 0 || id < 0 || (uint32_t)id >= s->n_vocab) return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % cap;
    if (s->hist_n < cap) s->hist_n++;
}

/* ---- truncation -------------------------------------------------------- */

static int better(const cand_t *a, const cand_t *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Rearranges c so that its k best come first (in no order). */
static void select_best(cand_t *c, size_t n, size_t k)
{
    size_t lo = 0, hi = n;   /* the k-th best lies in [lo, hi) */
    while (hi - lo > 1) {
        /* median of three as pivot, moved to the end */
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        if (better(&c[mid], &c[lo])) { cand_t t = c[mid]; c[mid] = c[lo]; c[lo] = t; }
        if (better(&c[last], &c[lo])) { cand_t t = c[last]; c[last] = c[lo]; c[lo] = t; }
        if (better(&c[mid], &c[last])) { cand_t t = c[mid]; c[mid] = c[last]; c[last] = t; }
        cand_t pivot = c[last];
        size_t store = lo;
        for (size_t i = lo; i < last; i++)
            if (better(&c[i], &pivot)) { cand_t t = c[i]; c[i] = c[store]; c[store] = t; store++; }
        c[last] = c[store];
        c[store] = pivot;
        if (store == k || store + 1 == k) return;
        if (store > k) hi = store;
        else lo = store + 1;
    }
}

static int cmp_cand(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    return better(x, y) ? -1 : better(y, x) ? 1 : 0;
}

static void sort_best(cand_t *c, size_t n, size_t k)
{
    if (k < n) select_best(c, n, k);
    qsort(c, ST_MIN(k, n), sizeof(*c), cmp_cand);
}

/* Probabilities of c[0..n) at temperature 1, relative to c[0] (the best). */
static double softmax(const cand_t *c, size_t n, double *p, float temp)
{
    double sum = 0.0, mx = c[0].logit;
    for (size_t i = 0; i < n; i++) {
        p[i] = exp(((double)c[i].logit - mx) / temp);
        sum += p[i];
    }
    return sum;
}

static void apply_penalty(st_sampler_t *s, float *logits)
{
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f || s->hist_n == 0) return;
    if (++s->stamp_gen == 0) {   /* wrapped: forget all marks */
        memset(s->stamp, 0, s->n_vocab * sizeof(*s->stamp));
        s->stamp_gen = 1;
    }
    for (uint32_t i = 0; i < s->hist_n; i++) {
        int32_t id = s->hist[i];
        if (s->stamp[id] == s->stamp_gen) continue;   /* once per distinct token */
        s->stamp[id] = s->stamp_gen;
        logits[id] = logits[id] > 0 ? logits[id] / pen : logits[id] * pen;
    }
}

int32_t st_sampler_sample(st_sampler_t *s, float *logits)
{
    const st_sampler_params_t *p = &s->p;
    size_t n = s->n_vocab;

    apply_penalty(s, logits);

    if (p->temperature == 0.0f) {
        int32_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (logits[i] > logits[best] || (isnan(logits[best]) && !isnan(logits[i]))) best = (int32_t)i;
        return best;
    }

    for (size_t i = 0; i < n; i++) {
        float l = logits[i];
        s->cand[i] = (cand_t){isnan(l) ? -INFINITY : l, (int32_t)i};
    }
    cand_t *c = s->cand;
    size_t sorted;
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        n = (size_t)p->top_k;
        sort_best(c, s->n_vocab, n);
        sorted = n;
    } else {
        sort_best(c, n, ST_MIN(n, (size_t)64));
        sorted = ST_MIN(n, (size_t)64);
    }
    if (c[0].logit == -INFINITY) return c[0].id;

    if (p->top_p < 1.0f) {
        /* grow the sorted prefix until it holds mass top_p */
        for (;;) {
            double total = softmax(c, n, s->prob, 1.0f), cum = 0.0;
            size_t keep = 0;
            while (keep < sorted) {
                cum += s->prob[keep++];
                if (cum >= p->top_p * total) break;
            }
            if (cum >= p->top_p * total || sorted == n) {
                n = keep;
                break;
            }
            size_t next = ST_MIN(n, sorted * 8);
            sort_best(c, n, next);
            sorted = next;
        }
    }
    if (p->min_p > 0.0f) {
        /* keep p_i >= min_p * p_max, i.e. logit >= max + log(min_p) */
        double floor_ = (double)c[0].logit + log((double)p->min_p);
        size_t keep = 1;   /* c[0] is the best and always stays */
        for (size_t i = 1; i < n; i++)
            if ((double)c[i].logit >= floor_) {
                cand_t t = c[keep];
                c[keep++] = c[i];
                c[i] = t;
            }
        n = keep;
    }

    double total = softmax(c, n, s->prob, p->temperature);
    double u = (double)(splitmix64(&s->rng) >> 11) * 0x1.0p-53 * total, cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        cum += s->prob[i];
        if (u < cum) return c[i].id;
    }
    return c[n - 1].id;   /* rounding: u landed on the total */
}
