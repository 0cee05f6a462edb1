/*
 * test_sampler.c - the sampler against what each stage must do: greedy is
 * the argmax, top-k = 1 is greedy, draws follow the softmax (chi-square
 * test), top-p / min-p keep exactly the right set, the repetition penalty
 * moves the right logits, a seed fixes the sequence, and bad parameters are
 * refused naming the field.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "st_sampler.h"
#include "st_test.h"
#include "st_util.h"

#define NV 8

static st_sampler_t *make(float temp, int32_t k, float p, float min_p, uint64_t seed)
{
    st_sampler_params_t sp = st_sampler_default_params();
    sp.temperature = temp;
    sp.top_k = k;
    sp.top_p = p;
    sp.min_p = min_p;
    sp.seed = seed;
    sp.repeat_penalty = 1.0f;
    st_sampler_t *s = NULL;
    if (st_sampler_create(&sp, NV, &s) != ST_OK) return NULL;
    return s;
}

static const float base[NV] = {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.0f, 2.0f, -4.0f};

/* Draw n tokens from fresh copies of `base`; counts per id. */
static void draw(st_sampler_t *s, int n, int *count)
{
    float l[NV];
    memset(count, 0, NV * sizeof(int));
    for (int i = 0; i < n; i++) {
        memcpy(l, base, sizeof(l));
        int32_t id = st_sampler_sample(s, l);
        if (id >= 0 && id < NV) count[id]++;
    }
}

ST_TEST(greedy_is_argmax_lowest_id_on_ties)
{
    st_sampler_t *s = make(0.0f, 0, 1.0f, 0.0f, 1);
    float l[NV];
    ST_REQUIRE(s);
    memcpy(l, base, sizeof(l));
    ST_CHECK(st_sampler_sample(s, l) == 1);   /* ids 1 and 4 tie at 3.0 */
    l[6] = 9.0f;
    ST_CHECK(st_sampler_sample(s, l) == 6);
    st_sampler_free(s);
}

ST_TEST(top_k_1_equals_greedy)
{
    st_sampler_t *s = make(1.5f, 1, 1.0f, 0.0f, 7);
    int c[NV];
    ST_REQUIRE(s);
    draw(s, 200, c);
    ST_CHECK(c[1] == 200);
    st_sampler_free(s);
}

/* Chi-square statistic of the counts against softmax(base / temp) over the
 * ids in `keep` (renormalized). */
static double chi2(const int *count, int n, float temp, const int *keep)
{
    double p[NV], sum = 0, x = 0;
    for (int i = 0; i < NV; i++) {
        p[i] = keep[i] ? exp(base[i] / temp) : 0;
        sum += p[i];
    }
    for (int i = 0; i < NV; i++) {
        if (!keep[i]) continue;
        double e = n * p[i] / sum;
        x += (count[i] - e) * (count[i] - e) / e;
    }
    return x;
}

ST_TEST(draws_follow_the_softmax)
{
    /* 7 degrees of freedom: P(chi2 > 24.3) = 0.001. The seed is fixed, so
     * the test is deterministic; it fails if the distribution is wrong,
     * e.g. temperature applied twice or not at all (checked below). */
    const int n = 200000;
    int c[NV], all[NV] = {1, 1, 1, 1, 1, 1, 1, 1};
    st_sampler_t *s = make(0.7f, 0, 1.0f, 0.0f, 12345);
    ST_REQUIRE(s);
    draw(s, n, c);
    double x = chi2(c, n, 0.7f, all);
    fprintf(stderr, "  chi2 (df 7) = %.2f\n", x);
    ST_CHECK(x < 24.3);
    ST_CHECK(chi2(c, n, 1.0f, all) > 100);   /* the test can tell temperatures apart */
    st_sampler_free(s);
}

ST_TEST(top_p_keeps_the_smallest_set_reaching_p)
{
    /* probabilities at T=1, sorted: ids 1 and 4 (0.3146 each), 2 (0.1908),
     * 6 (0.1157), 0 (0.0426), ...; cumulative 0.3146, 0.6292, 0.8200, 0.9357 */
    const int n = 100000;
    int c[NV];
    st_sampler_t *s = make(1.0f, 0, 0.9f, 0.0f, 99);
    ST_REQUIRE(s);
    draw(s, n, c);
    int keep[NV] = {0, 1, 1, 0, 1, 0, 1, 0};
    for (int i = 0; i < NV; i++) ST_CHECK_MSG(!!c[i] == keep[i], "id %d drawn %d times", i, c[i]);
    ST_CHECK(chi2(c, n, 1.0f, keep) < 16.3);   /* df 3, p = 0.001 */
    st_sampler_free(s);

    s = make(1.0f, 0, 0.6f, 0.0f, 99);   /* 0.6292 >= 0.6: the two best only */
    ST_REQUIRE(s);
    draw(s, 20000, c);
    ST_CHECK(c[1] && c[4] && c[1] + c[4] == 20000);
    st_sampler_free(s);
}

ST_TEST(top_p_on_a_large_vocabulary)
{
    /* exercises the growing sorted prefix: 50k ids, near-flat head */
    enum { BIG = 50000 };
    static float l[BIG];
    st_sampler_params_t sp = st_sampler_default_params();
    sp.temperature = 1.0f;
    sp.top_k = 0;
    sp.top_p = 0.45f;
    sp.min_p = 0.0f;
    st_sampler_t *s;
    ST_REQUIRE(st_sampler_create(&sp, BIG, &s) == ST_OK);
    /* 1000 ids of logit 0, the rest -30: top_p 0.45 keeps 450 or 451 of them */
    int hi = 0;
    for (int r = 0; r < 2000; r++) {
        for (int i = 0; i < BIG; i++) l[i] = (i % 50 == 0) ? 0.0f : -30.0f;
        int32_t id = st_sampler_sample(s, l);
        ST_CHECK(id % 50 == 0);
        if (id >= 25000) hi++;   /* ties broken by lower id: only ids < 25000 kept */
    }
    ST_CHECK(hi == 0);
    st_sampler_free(s);
}

ST_TEST(min_p_drops_unlikely_tokens)
{
    /* keep p >= 0.3 * p_max: logit >= 3 + ln 0.3 = 1.796 -> ids 1, 4, 2, 6 */
    int c[NV];
    st_sampler_t *s = make(1.0f, 0, 1.0f, 0.3f, 5);
    ST_REQUIRE(s);
    draw(s, 50000, c);
    int keep[NV] = {0, 1, 1, 0, 1, 0, 1, 0};
    for (int i = 0; i < NV; i++) ST_CHECK_MSG(!!c[i] == keep[i], "id %d drawn %d times", i, c[i]);
    st_sampler_free(s);
}

ST_TEST(repetition_penalty)
{
    st_sampler_params_t sp = st_sampler_default_params();
    sp.temperature = 0.0f;
    sp.repeat_penalty = 2.0f;
    sp.repeat_last_n = 2;
    st_sampler_t *s;
    float l[NV];
    ST_REQUIRE(st_sampler_create(&sp, NV, &s) == ST_OK);
    st_sampler_accept(s, 1);
    st_sampler_accept(s, 1);   /* penalised once however often it repeats */
    memcpy(l, base, sizeof(l));
    ST_CHECK(st_sampler_sample(s, l) == 4);
    ST_CHECK(l[1] == 1.5f && l[4] == 3.0f);
    st_sampler_accept(s, 3);
    st_sampler_accept(s, 4);   /* window of 2: 1 has left it */
    memcpy(l, base, sizeof(l));
    ST_CHECK(st_sampler_sample(s, l) == 1);
    ST_CHECK(l[3] == -2.0f && l[4] == 1.5f && l[1] == 3.0f);
    st_sampler_accept(s, -5);    /* out of range ids are ignored */
    st_sampler_accept(s, NV);
    st_sampler_free(s);
}

ST_TEST(same_seed_same_sequence)
{
    int32_t a[64], b[64], c[64];
    float l[NV];
    st_sampler_t *s1 = make(1.0f, 0, 1.0f, 0.0f, 42), *s2 = make(1.0f, 0, 1.0f, 0.0f, 42),
                 *s3 = make(1.0f, 0, 1.0f, 0.0f, 43);
    ST_REQUIRE(s1 && s2 && s3);
    for (int i = 0; i < 64; i++) {
        memcpy(l, base, sizeof(l)); a[i] = st_sampler_sample(s1, l);
        memcpy(l, base, sizeof(l)); b[i] = st_sampler_sample(s2, l);
        memcpy(l, base, sizeof(l)); c[i] = st_sampler_sample(s3, l);
    }
    ST_CHECK(!memcmp(a, b, sizeof(a)));
    ST_CHECK(memcmp(a, c, sizeof(a)) != 0);
    st_sampler_reset(s1, 42);
    for (int i = 0; i < 64; i++) {
        memcpy(l, base, sizeof(l));
        ST_CHECK(st_sampler_sample(s1, l) == a[i]);
    }
    st_sampler_free(s1);
    st_sampler_free(s2);
    st_sampler_free(s3);
}

ST_TEST(nan_and_inf_logits_do_not_break_sampling)
{
    st_sampler_t *s = make(1.0f, 0, 0.9f, 0.0f, 3);
    float l[NV];
    ST_REQUIRE(s);
    for (int i = 0; i < NV; i++) l[i] = -INFINITY;
    l[5] = NAN;
    int32_t id = st_sampler_sample(s, l);
    ST_CHECK(id >= 0 && id < NV);
    for (int i = 0; i < NV; i++) l[i] = -INFINITY;
    l[2] = 0.0f;
    ST_CHECK(st_sampler_sample(s, l) == 2);
    st_sampler_free(s);
}

ST_TEST(bad_params_name_the_field)
{
    st_sampler_params_t p = st_sampler_default_params();
    const char *bad = "x";
    st_sampler_t *s = NULL;
    ST_CHECK(st_sampler_check_params(&p, &bad) == ST_OK && bad == NULL);
    static const struct { const char *field; float temp, top_p, min_p, pen; int32_t last_n; } cases[] = {
        {"temperature", -0.1f, 1, 0, 1, 64},  {"temperature", NAN, 1, 0, 1, 64},
        {"top_p", 0.8f, 0.0f, 0, 1, 64},      {"top_p", 0.8f, 1.01f, 0, 1, 64},
        {"min_p", 0.8f, 1, -0.5f, 1, 64},     {"min_p", 0.8f, 1, 1.5f, 1, 64},
        {"repeat_penalty", 0.8f, 1, 0, 0, 64}, {"repeat_last_n", 0.8f, 1, 0, 1, -1},
    };
    for (size_t i = 0; i < ST_ARRAY_SIZE(cases); i++) {
        p = st_sampler_default_params();
        p.temperature = cases[i].temp;
        p.top_p = cases[i].top_p;
        p.min_p = cases[i].min_p;
        p.repeat_penalty = cases[i].pen;
        p.repeat_last_n = cases[i].last_n;
        ST_CHECK(st_sampler_check_params(&p, &bad) == ST_ERR_RANGE);
        ST_CHECK_MSG(bad && !strcmp(bad, cases[i].field), "case %zu: %s", i, bad ? bad : "(null)");
        ST_CHECK(st_sampler_create(&p, NV, &s) == ST_ERR_RANGE && s == NULL);
    }
    p = st_sampler_default_params();
    ST_CHECK(st_sampler_create(&p, 0, &s) == ST_ERR_INVALID);
}

int main(void) { return st_test_main(); }
