/*
 * test_plan.c - the layer planner: examples with known answers and property
 * tests on random clusters (every layer once, contiguous ranges, memory
 * respected, balance within one layer's time of ideal, determinism).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "st_plan.h"
#include "st_test.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

typedef struct {
    uint64_t layers[ST_PLAN_MAX_LAYERS];
    st_plan_worker_t w[64];
    double lat[64 * 64];
    st_plan_params_t p;
} inst_t;

/* A model of n equal layers of 10 MiB, small KV, no embedding. */
static void inst_init(inst_t *in, uint32_t n_layer, uint32_t n_workers)
{
    memset(in, 0, sizeof(*in));
    for (uint32_t i = 0; i < n_layer; i++) in->layers[i] = 10 * MiB;
    for (uint32_t i = 0; i < n_workers; i++) {
        snprintf(in->w[i].name, sizeof(in->w[i].name), "w%u", i);
        in->w[i].mem_bytes = 64 * GiB;
        in->w[i].speed = 1.0;
    }
    in->p = (st_plan_params_t){
        .size = sizeof(st_plan_params_t),
        .model = { .n_layer = n_layer, .layer_bytes = in->layers, .embd_bytes = 20 * MiB,
                   .output_bytes = 20 * MiB, .kv_bytes_per_token_layer = 1024, .act_bytes_per_seq = MiB },
        .n_ctx = 1024, .n_seq = 1, .n_workers = n_workers, .workers = in->w,
    };
}

static uint32_t layers_of(const st_plan_t *plan, uint32_t worker)
{
    for (uint32_t s = 0; s < st_plan_n_stages(plan); s++)
        if (st_plan_stage(plan, s)->worker == worker) return st_plan_stage(plan, s)->n_layers;
    return 0;
}

/* Structural properties every successful plan must have. */
static int plan_ok(const st_plan_params_t *p, const st_plan_t *plan, char *why, size_t n)
{
    uint32_t next = 0, seen[1024] = {0};
    uint32_t ns = st_plan_n_stages(plan);
    if (ns == 0) { snprintf(why, n, "no stage"); return 0; }
    for (uint32_t s = 0; s < ns; s++) {
        const st_plan_stage_t *st = st_plan_stage(plan, s);
        if (st->first_layer != next) { snprintf(why, n, "stage %u starts at %u, expected %u", s, st->first_layer, next); return 0; }
        if (st->n_layers == 0) { snprintf(why, n, "stage %u empty", s); return 0; }
        if (st->total_bytes > p->workers[st->worker].mem_bytes) { snprintf(why, n, "stage %u over memory", s); return 0; }
        if (seen[st->worker]++) { snprintf(why, n, "worker %u used twice", st->worker); return 0; }
        if (st->holds_embd != (s == 0) || st->holds_output != (s == ns - 1)) { snprintf(why, n, "ends wrong at %u", s); return 0; }
        uint64_t m = st->kv_bytes + st->act_bytes + (st->holds_embd ? p->model.embd_bytes : 0)
                   + (st->holds_output ? p->model.output_bytes : 0)
                   - (st->holds_embd && st->holds_output ? p->model.shared_bytes : 0);
        for (uint32_t l = st->first_layer; l < st->first_layer + st->n_layers; l++) m += p->model.layer_bytes[l];
        if (m != st->total_bytes) { snprintf(why, n, "stage %u bytes %llu != %llu", s, (unsigned long long)st->total_bytes, (unsigned long long)m); return 0; }
        next += st->n_layers;
    }
    if (next != p->model.n_layer) { snprintf(why, n, "%u of %u layers assigned", next, p->model.n_layer); return 0; }
    for (uint32_t i = 0; i < st_plan_n_unused(plan); i++)
        if (seen[st_plan_unused(plan, i)->worker]++) { snprintf(why, n, "unused worker also used"); return 0; }
    for (uint32_t i = 0; i < p->n_workers; i++)
        if (seen[i] != 1) { snprintf(why, n, "worker %u neither used nor reported", i); return 0; }
    return 1;
}

ST_TEST(equal_workers_equal_split)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    for (uint32_t nw = 1; nw <= 3; nw++) {
        inst_init(&in, 30, nw);
        ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
        ST_CHECK(st_plan_n_stages(plan) == nw);
        for (uint32_t w = 0; w < nw; w++) ST_CHECK_MSG(layers_of(plan, w) == 30 / nw, "nw %u worker %u: %u", nw, w, layers_of(plan, w));
        ST_CHECK(st_plan_link_latency_us(plan) < 0);
        st_plan_free(plan);
    }
}

ST_TEST(half_speed_gets_half_the_layers)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    inst_init(&in, 30, 2);
    in.w[1].speed = 0.5;
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK(layers_of(plan, 0) == 20);
    ST_CHECK(layers_of(plan, 1) == 10);
    ST_CHECK_NEAR(st_plan_bottleneck_time(plan), st_plan_ideal_time(plan), 1e-6 * st_plan_ideal_time(plan));
    st_plan_free(plan);
}

/* A MoE model: every layer holds 40 MiB (all experts resident) but the
 * first two are dense and read all 40 MiB per token, the other six read
 * 10 MiB (their active experts). By bytes two equal workers split 4 | 4
 * (reads 100 | 40 MiB per token); by work the best cut is 2 | 6 (80 | 60). */
ST_TEST(moe_layers_weigh_by_active_bytes)
{
    static inst_t in;
    static uint64_t work[8];
    st_error_t err;
    st_plan_t *plan;
    inst_init(&in, 8, 2);
    for (uint32_t i = 0; i < 8; i++) {
        in.layers[i] = 40 * MiB;
        work[i] = i < 2 ? 40 * MiB : 10 * MiB;
    }
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK(layers_of(plan, 0) == 4 && layers_of(plan, 1) == 4);   /* bytes alone */
    st_plan_free(plan);
    in.p.model.layer_work = work;
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK(st_plan_stage(plan, 0)->n_layers == 2 && st_plan_stage(plan, 1)->n_layers == 6);
    st_plan_free(plan);
}

ST_TEST(too_small_worker_gets_none_and_is_reported)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    inst_init(&in, 30, 3);
    in.w[1].mem_bytes = 5 * MiB;    /* one layer needs 10 MiB + KV + 1 MiB scratch */
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK(st_plan_n_stages(plan) == 2);
    ST_CHECK(layers_of(plan, 0) == 15 && layers_of(plan, 2) == 15 && layers_of(plan, 1) == 0);
    ST_REQUIRE(st_plan_n_unused(plan) == 1);
    const st_plan_unused_t *u = st_plan_unused(plan, 0);
    ST_CHECK(u->worker == 1 && u->reason == ST_PLAN_UNUSED_TOO_SMALL);
    ST_CHECK(u->need_bytes == 10 * MiB + 1024ull * 1024 + MiB);
    st_plan_free(plan);
}

ST_TEST(memory_caps_a_fast_worker)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    char why[128];
    inst_init(&in, 30, 2);
    in.w[0].speed = 4.0;                  /* would take 24 layers... */
    in.w[0].mem_bytes = 130 * MiB;        /* ...but holds at most 9 with the embedding */
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK_MSG(plan_ok(&in.p, plan, why, sizeof why), "%s", why);
    ST_CHECK(layers_of(plan, 0) <= 10 && layers_of(plan, 0) >= 9);
    st_plan_free(plan);
}

ST_TEST(does_not_fit_says_what_is_missing)
{
    static inst_t in;
    st_error_t err = {{0}};
    st_plan_t *plan = NULL;
    inst_init(&in, 30, 2);
    in.w[0].mem_bytes = 100 * MiB;
    in.w[1].mem_bytes = 100 * MiB;        /* the model needs 300 MiB of weights */
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_RANGE);
    ST_CHECK(plan == NULL);
    ST_CHECK_MSG(strstr(err.msg, "missing in total") != NULL, "%s", err.msg);
    ST_CHECK_MSG(strstr(err.msg, "'w0' needs") != NULL && strstr(err.msg, "'w1' needs") != NULL, "%s", err.msg);

    in.w[0].mem_bytes = in.w[1].mem_bytes = MiB;   /* nobody holds one layer */
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_RANGE);
    ST_CHECK_MSG(strstr(err.msg, "no worker can hold a single layer") != NULL, "%s", err.msg);
}

/* A head tied to the embedding is one tensor: a single stage holding both
 * ends needs it once (it was counted twice, so a worker that fit the model
 * was refused), two stages each map it. */
ST_TEST(tied_head_counts_once_on_one_stage)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    inst_init(&in, 10, 1);
    in.p.model.shared_bytes = 20 * MiB;
    /* 10 x 10 MiB + 10 x 1 MiB KV + 20 MiB embedding/head + 1 MiB act */
    in.w[0].mem_bytes = 131 * MiB;
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK(st_plan_stage(plan, 0)->total_bytes == 131 * MiB);
    st_plan_free(plan);
    in.w[0].mem_bytes = 131 * MiB - 1;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_RANGE);
    ST_CHECK_MSG(strstr(err.msg, "needs 131.0 MiB") != NULL, "%s", err.msg);
    /* two stages: each end holds its copy */
    inst_init(&in, 10, 2);
    in.p.model.shared_bytes = 20 * MiB;
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK(st_plan_stage(plan, 0)->total_bytes + st_plan_stage(plan, 1)->total_bytes ==
             (100 + 10 + 40 + 2) * MiB);
    st_plan_free(plan);
    in.p.model.shared_bytes = 21 * MiB;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_INVALID);
}

ST_TEST(embedding_end_goes_to_the_worker_that_fits_it)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    char why[128];
    inst_init(&in, 4, 2);
    in.p.model.embd_bytes = 500 * MiB;    /* only w1 can hold the embedding */
    in.p.model.output_bytes = 0;
    in.w[0].mem_bytes = 100 * MiB;
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK_MSG(plan_ok(&in.p, plan, why, sizeof why), "%s", why);
    ST_CHECK(st_plan_stage(plan, 0)->worker == 1);
    st_plan_free(plan);
}

ST_TEST(order_follows_latency)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    inst_init(&in, 8, 4);
    /* Cheap path 0-2-1-3 (1 us per hop), every other pair 100 us. */
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) in.lat[a * 4 + b] = a == b ? 0 : 100;
    int path[4] = {0, 2, 1, 3};
    for (int k = 0; k + 1 < 4; k++) in.lat[path[k] * 4 + path[k + 1]] = in.lat[path[k + 1] * 4 + path[k]] = 1;
    in.p.latency_us = in.lat;
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_REQUIRE(st_plan_n_stages(plan) == 4);
    ST_CHECK_NEAR(st_plan_link_latency_us(plan), 3.0, 1e-9);
    int fwd = 1, rev = 1;
    for (int k = 0; k < 4; k++) {
        fwd &= (int)st_plan_stage(plan, (uint32_t)k)->worker == path[k];
        rev &= (int)st_plan_stage(plan, (uint32_t)k)->worker == path[3 - k];
    }
    ST_CHECK(fwd || rev);
    st_plan_free(plan);

    /* 14 workers: the 2-opt search path; a ring 0-13 shuffled by a stride. */
    inst_init(&in, 28, 14);
    for (int a = 0; a < 14; a++)
        for (int b = 0; b < 14; b++) in.lat[a * 14 + b] = a == b ? 0 : 50;
    for (int k = 0; k + 1 < 14; k++) {
        int a = (k * 5) % 14, b = ((k + 1) * 5) % 14;
        in.lat[a * 14 + b] = in.lat[b * 14 + a] = 2;
    }
    in.p.latency_us = in.lat;
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK_MSG(st_plan_link_latency_us(plan) <= 26.0 + 1e-9, "%g", st_plan_link_latency_us(plan));
    st_plan_free(plan);
}

ST_TEST(same_host_workers_stay_together)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    inst_init(&in, 9, 3);
    strcpy(in.w[0].host, "a");
    strcpy(in.w[1].host, "b");
    strcpy(in.w[2].host, "a");
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_REQUIRE(st_plan_n_stages(plan) == 3);
    ST_CHECK(st_plan_stage(plan, 0)->worker == 0);
    ST_CHECK(st_plan_stage(plan, 1)->worker == 2);
    ST_CHECK(st_plan_stage(plan, 2)->worker == 1);
    st_plan_free(plan);
}

ST_TEST(more_workers_than_layers)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan;
    char why[128];
    inst_init(&in, 4, 6);
    ST_REQUIRE(st_plan_compute(&in.p, &plan, &err) == ST_OK);
    ST_CHECK_MSG(plan_ok(&in.p, plan, why, sizeof why), "%s", why);
    ST_CHECK(st_plan_n_stages(plan) == 4);
    ST_CHECK(st_plan_n_unused(plan) == 2);
    for (uint32_t i = 0; i < st_plan_n_unused(plan); i++)
        ST_CHECK(st_plan_unused(plan, i)->reason == ST_PLAN_UNUSED_NOT_NEEDED);
    st_plan_free(plan);
}

ST_TEST(invalid_params_are_refused)
{
    static inst_t in;
    st_error_t err;
    st_plan_t *plan = NULL;
    inst_init(&in, 4, 2);
    in.w[1].speed = 0;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_INVALID);
    ST_CHECK(strstr(err.msg, "w1") != NULL);
    in.w[1].speed = NAN;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_INVALID);
    inst_init(&in, 4, 2);
    in.p.n_ctx = 0;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_INVALID);
    inst_init(&in, 4, 2);
    in.p.model.kv_bytes_per_token_layer = UINT64_MAX / 2;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_OVERFLOW);
    inst_init(&in, 4, 2);
    in.layers[2] = UINT64_MAX - 5;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_OVERFLOW);
    inst_init(&in, 4, 2);
    in.p.size = 8;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_INVALID);
    inst_init(&in, 4, 2);
    in.lat[1] = -1;
    in.p.latency_us = in.lat;
    ST_CHECK(st_plan_compute(&in.p, &plan, &err) == ST_ERR_INVALID);
    ST_CHECK(plan == NULL);
}

static uint64_t rng_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Random clusters: layers of uneven size, speeds 0.25..4, latencies. With
 * ample memory the slowest stage is within one layer's time of ideal; with
 * tight memory every stage still fits and failures are ST_ERR_RANGE. */
ST_TEST(property_random_clusters)
{
    static inst_t in, in2;
    uint64_t seed = 12345;
    int n_ok = 0, n_nofit = 0;
    char why[128];
    for (int iter = 0; iter < 400; iter++) {
        uint32_t L = 1 + (uint32_t)(rng_next(&seed) % 80), W = 1 + (uint32_t)(rng_next(&seed) % 10);
        int tight = iter % 2;
        inst_init(&in, L, W);
        uint64_t wmax = 0, sum = 0;
        for (uint32_t i = 0; i < L; i++) {
            in.layers[i] = (1 + rng_next(&seed) % 64) * MiB;
            wmax = in.layers[i] > wmax ? in.layers[i] : wmax;
            sum += in.layers[i];
        }
        double smin = 1e9;
        for (uint32_t i = 0; i < W; i++) {
            in.w[i].speed = 0.25 * (double)(1 + rng_next(&seed) % 16);
            smin = in.w[i].speed < smin ? in.w[i].speed : smin;
            in.w[i].mem_bytes = tight ? (rng_next(&seed) % (2 * sum / W + 1)) + MiB : 1024 * GiB;
            for (uint32_t j = 0; j < W; j++) in.lat[i * W + j] = i == j ? 0 : (double)(rng_next(&seed) % 100);
        }
        if (iter % 3) in.p.latency_us = in.lat;
        st_error_t err = {{0}};
        st_plan_t *plan = NULL, *plan2 = NULL;
        st_status_t s = st_plan_compute(&in.p, &plan, &err);
        if (s == ST_ERR_RANGE) {
            ST_CHECK_MSG(tight, "iter %d: ample memory but: %s", iter, err.msg);
            n_nofit++;
            continue;
        }
        ST_REQUIRE(s == ST_OK);
        n_ok++;
        ST_CHECK_MSG(plan_ok(&in.p, plan, why, sizeof why), "iter %d: %s", iter, why);
        if (!tight) {
            double bound = st_plan_ideal_time(plan) + (double)wmax / smin;
            ST_CHECK_MSG(st_plan_bottleneck_time(plan) <= bound * (1 + 1e-9),
                         "iter %d: slowest %g > ideal %g + one layer", iter,
                         st_plan_bottleneck_time(plan), st_plan_ideal_time(plan));
            ST_CHECK(st_plan_n_unused(plan) + st_plan_n_stages(plan) == W);
        }
        /* Determinism: an identical copy of the input gives the identical plan. */
        memcpy(&in2, &in, sizeof(in));
        in2.p.model.layer_bytes = in2.layers;
        in2.p.workers = in2.w;
        if (in.p.latency_us) in2.p.latency_us = in2.lat;
        ST_REQUIRE(st_plan_compute(&in2.p, &plan2, &err) == ST_OK);
        ST_CHECK(st_plan_n_stages(plan) == st_plan_n_stages(plan2));
        for (uint32_t k = 0; k < st_plan_n_stages(plan) && k < st_plan_n_stages(plan2); k++)
            ST_CHECK(memcmp(st_plan_stage(plan, k), st_plan_stage(plan2, k), sizeof(st_plan_stage_t)) == 0);
        st_plan_free(plan2);
        st_plan_free(plan);
    }
    ST_CHECK(n_ok > 200 && n_nofit > 10);   /* both kinds of cases were exercised */
    fprintf(stderr, "  %d plans, %d did not fit\n", n_ok, n_nofit);
}

/* Small tight instances against brute force: with two workers the planner
 * tries both orders, so it must succeed exactly when some split fits. */
ST_TEST(two_workers_fit_whenever_a_split_exists)
{
    static inst_t in;
    uint64_t seed = 777;
    for (int iter = 0; iter < 300; iter++) {
        uint32_t L = 1 + (uint32_t)(rng_next(&seed) % 12);
        inst_init(&in, L, 2);
        uint64_t sum = 0;
        for (uint32_t i = 0; i < L; i++) { in.layers[i] = (1 + rng_next(&seed) % 8) * MiB; sum += in.layers[i]; }
        in.p.model.embd_bytes = (rng_next(&seed) % 8) * MiB;
        in.p.model.output_bytes = (rng_next(&seed) % 8) * MiB;
        for (int w = 0; w < 2; w++) in.w[w].mem_bytes = (rng_next(&seed) % (sum + 20)) * MiB / 2 + 2 * MiB;
        /* brute force: a on the front with layers [0,c), b behind, either order, or one alone */
        int exists = 0;
        uint64_t kvl = 1024ull * 1024, act = MiB;
        for (int a = 0; a < 2 && !exists; a++) {
            for (uint32_t c = 0; c <= L && !exists; c++) {
                uint64_t m1 = act + (c ? in.p.model.embd_bytes : 0), m2 = act + (c < L ? in.p.model.output_bytes : 0);
                for (uint32_t l = 0; l < L; l++) { if (l < c) m1 += in.layers[l] + kvl; else m2 += in.layers[l] + kvl; }
                if (c == L) m1 += in.p.model.output_bytes;
                if (c == 0) m2 += in.p.model.embd_bytes;
                exists = (c == 0 || m1 <= in.w[a].mem_bytes) && (c == L || m2 <= in.w[1 - a].mem_bytes);
            }
        }
        st_error_t err;
        st_plan_t *plan = NULL;
        st_status_t s = st_plan_compute(&in.p, &plan, &err);
        ST_CHECK_MSG((s == ST_OK) == exists, "iter %d: planner %d, brute force %d", iter, s, exists);
        st_plan_free(plan);
    }
}

int main(void) { return st_test_main(); }
