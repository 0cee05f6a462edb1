/*
 * plan.c - the layer planner (see st_plan.h for the algorithm in brief and
 * docs/TOPOLOGY.md for the reasoning).
 */
#include "st_plan.h"
#include "plan_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "st_util.h"

/* Held-Karp over subsets is exact and costs 2^n * n^2: 12 workers is 600k
 * steps. Above that, the best nearest-neighbour path improved by 2-opt (n^3
 * per pass) up to 64 workers; larger clusters keep the host-grouped order. */
#define PLAN_EXACT_ORDER_MAX 12
#define PLAN_SEARCH_ORDER_MAX 64

/* Everything st_plan_compute needs while it works, derived from params. */
typedef struct plan_ctx {
    const st_plan_params_t *p;
    uint32_t  L;
    uint64_t *pb;        /* [L+1] prefix sums of layer weight bytes */
    double   *pw;        /* [L+1] prefix sums of layer work */
    uint64_t  kvl;       /* KV bytes of one layer for n_ctx x n_seq tokens */
    uint64_t  act;       /* activation bytes of one stage */
} plan_ctx_t;

/* Memory of a stage holding layers [i, j), i < j. The caller checked once
 * that the sum of everything fits in 64 bits, so no partial sum overflows. */
static uint64_t stage_mem(const plan_ctx_t *c, uint32_t i, uint32_t j)
{
    uint64_t m = (c->pb[j] - c->pb[i]) + (uint64_t)(j - i) * c->kvl + c->act;
    if (i == 0) m += c->p->model.embd_bytes;
    if (j == c->L) m += c->p->model.output_bytes;
    if (i == 0 && j == c->L) m -= c->p->model.shared_bytes;   /* a tied head, held once */
    return m;
}

static double stage_time(const plan_ctx_t *c, uint32_t i, uint32_t j, double speed)
{
    return (c->pw[j] - c->pw[i]) / speed;
}

static double lat(const st_plan_params_t *p, uint32_t a, uint32_t b)
{
    return p->latency_us[(size_t)a * p->n_workers + b];
}

static double path_cost(const st_plan_params_t *p, const uint32_t *o, uint32_t n)
{
    double s = 0;
    for (uint32_t k = 1; k < n; k++) s += lat(p, o[k - 1], o[k]);
    return s;
}

/* Stable grouping by host (first appearance decides the group's place):
 * optimal when the only thing known is "same host is cheaper". */
static void order_by_host(const st_plan_params_t *p, const uint32_t *u, uint32_t n, uint32_t *o)
{
    uint32_t k = 0;
    char *done = calloc(n, 1);
    if (!done) { memcpy(o, u, n * sizeof(*o)); return; }
    for (uint32_t a = 0; a < n; a++) {
        if (done[a]) continue;
        const char *h = p->workers[u[a]].host;
        for (uint32_t b = a; b < n; b++) {
            if (done[b]) continue;
            if (b == a || (h[0] && strcmp(h, p->workers[u[b]].host) == 0)) {
                o[k++] = u[b];
                done[b] = 1;
            }
        }
    }
    free(done);
}

static st_status_t order_exact(const st_plan_params_t *p, const uint32_t *u, uint32_t n, uint32_t *o)
{
    size_t full = ((size_t)1 << n) - 1;
    double *dp = malloc(((size_t)1 << n) * n * sizeof(*dp));
    int8_t *prev = malloc(((size_t)1 << n) * n);
    if (!dp || !prev) { free(dp); free(prev); return ST_ERR_NOMEM; }
    for (size_t i = 0; i < ((size_t)1 << n) * n; i++) { dp[i] = INFINITY; prev[i] = -1; }
    for (uint32_t a = 0; a < n; a++) dp[((size_t)1 << a) * n + a] = 0;
    for (size_t m = 1; m <= full; m++) {
        for (uint32_t a = 0; a < n; a++) {
            double cur = dp[m * n + a];
            if (!(m & ((size_t)1 << a)) || isinf(cur)) continue;
            for (uint32_t b = 0; b < n; b++) {
                if (m & ((size_t)1 << b)) continue;
                size_t nm = m | ((size_t)1 << b);
                double v = cur + lat(p, u[a], u[b]);
                if (v < dp[nm * n + b]) { dp[nm * n + b] = v; prev[nm * n + b] = (int8_t)a; }
            }
        }
    }
    uint32_t end = 0;
    for (uint32_t a = 1; a < n; a++)
        if (dp[full * n + a] < dp[full * n + end]) end = a;
    size_t m = full;
    for (uint32_t k = n; k-- > 0;) {
        o[k] = u[end];
        int8_t pa = prev[m * n + end];
        m &= ~((size_t)1 << end);
        if (pa < 0) break;
        end = (uint32_t)pa;
    }
    free(dp);
    free(prev);
    return ST_OK;
}

/* Nearest-neighbour paths from every start; keeps the cheapest. */
static void order_nearest(const st_plan_params_t *p, const uint32_t *u, uint32_t n, uint32_t *o)
{
    uint32_t path[PLAN_SEARCH_ORDER_MAX];
    char used[PLAN_SEARCH_ORDER_MAX];
    double best = path_cost(p, o, n);
    for (uint32_t s = 0; s < n; s++) {
        memset(used, 0, n);
        path[0] = s;
        used[s] = 1;
        for (uint32_t k = 1; k < n; k++) {
            uint32_t nb = n;
            for (uint32_t b = 0; b < n; b++)
                if (!used[b] && (nb == n || lat(p, u[path[k - 1]], u[b]) < lat(p, u[path[k - 1]], u[nb])))
                    nb = b;
            path[k] = nb;
            used[nb] = 1;
        }
        double c = 0;
        for (uint32_t k = 1; k < n; k++) c += lat(p, u[path[k - 1]], u[path[k]]);
        if (c < best) {
            best = c;
            for (uint32_t k = 0; k < n; k++) o[k] = u[path[k]];
        }
    }
}

/* 2-opt on a path: reverse o[i..j] while that lowers the cost. The full cost
 * is recomputed because the matrix may be asymmetric. */
static void order_two_opt(const st_plan_params_t *p, uint32_t *o, uint32_t n)
{
    double best = path_cost(p, o, n);
    for (int improved = 1, pass = 0; improved && pass < 100; pass++) {
        improved = 0;
        for (uint32_t i = 0; i + 1 < n; i++) {
            for (uint32_t j = i + 1; j < n; j++) {
                for (uint32_t a = i, b = j; a < b; a++, b--) { uint32_t t = o[a]; o[a] = o[b]; o[b] = t; }
                double c = path_cost(p, o, n);
                if (c < best - 1e-12 * (1 + fabs(best))) { best = c; improved = 1; }
                else for (uint32_t a = i, b = j; a < b; a++, b--) { uint32_t t = o[a]; o[a] = o[b]; o[b] = t; }
            }
        }
    }
}

/* Picks the pipeline order of the usable workers u[0..n). */
static st_status_t order_workers(const st_plan_params_t *p, const uint32_t *u, uint32_t n, uint32_t *o)
{
    order_by_host(p, u, n, o);
    if (!p->latency_us || n < 2)
        return ST_OK;

    uint32_t *cand = malloc(n * sizeof(*cand));
    if (!cand) return ST_ERR_NOMEM;
    memcpy(cand, o, n * sizeof(*cand));
    if (n <= PLAN_EXACT_ORDER_MAX) {
        st_status_t s = order_exact(p, u, n, cand);
        if (s != ST_OK) { free(cand); return s; }
    } else if (n <= PLAN_SEARCH_ORDER_MAX) {
        order_nearest(p, u, n, cand);
        order_two_opt(p, cand, n);
    }
    /* Keep the given (host-grouped) order when it is already as good: plans
     * then read in the order the operator wrote the workers. */
    double c0 = path_cost(p, o, n), c1 = path_cost(p, cand, n);
    if (c1 < c0 - 1e-9 * (1 + fabs(c0)))
        memcpy(o, cand, n * sizeof(*o));
    free(cand);
    return ST_OK;
}

/* Bottleneck DP: f[k][j] = the smallest possible slowest-stage time when the
 * first k workers of o hold layers [0, j). Workers may be left empty. With
 * mem_check == 0 memory is ignored (used to explain failures). */
static double split_bottleneck(const plan_ctx_t *c, const uint32_t *o, uint32_t K,
                               int mem_check, double *f)
{
    uint32_t L = c->L;
    for (uint32_t j = 0; j <= L; j++) f[j] = j == 0 ? 0 : INFINITY;
    for (uint32_t k = 1; k <= K; k++) {
        const st_plan_worker_t *w = &c->p->workers[o[k - 1]];
        double *fp = f + (size_t)(k - 1) * (L + 1), *fk = f + (size_t)k * (L + 1);
        for (uint32_t j = 0; j <= L; j++) {
            double best = fp[j];
            for (uint32_t i = j; i-- > 0;) {
                if (mem_check && stage_mem(c, i, j) > w->mem_bytes) break;  /* grows as i drops */
                double v = ST_MAX(fp[i], stage_time(c, i, j, w->speed));
                if (v < best) best = v;
            }
            fk[j] = best;
        }
    }
    return f[(size_t)K * (L + 1) + L];
}

/* Second DP: among splits whose every stage is <= tmax, the one with the
 * smallest sum of squared distances to the ideal stage time (an empty worker
 * counts as distance `ideal`). Writes the cut points: cut[k] = first layer of
 * worker k, cut[K] = L. */
static st_status_t split_balance(const plan_ctx_t *c, const uint32_t *o, uint32_t K, int mem_check,
                                 double tmax, double ideal, uint32_t *cut)
{
    uint32_t L = c->L;
    size_t n = (size_t)(K + 1) * (L + 1);
    double *g = malloc(n * sizeof(*g));
    uint32_t *arg = malloc(n * sizeof(*arg));
    if (!g || !arg) { free(g); free(arg); return ST_ERR_NOMEM; }
    for (uint32_t j = 0; j <= L; j++) g[j] = j == 0 ? 0 : INFINITY;
    for (uint32_t k = 1; k <= K; k++) {
        const st_plan_worker_t *w = &c->p->workers[o[k - 1]];
        double *gp = g + (size_t)(k - 1) * (L + 1), *gk = g + (size_t)k * (L + 1);
        uint32_t *ak = arg + (size_t)k * (L + 1);
        for (uint32_t j = 0; j <= L; j++) {
            double best = gp[j] + ideal * ideal;
            uint32_t bi = j;
            for (uint32_t i = j; i-- > 0;) {
                if (mem_check && stage_mem(c, i, j) > w->mem_bytes) break;
                double t = stage_time(c, i, j, w->speed);
                if (t > tmax || isinf(gp[i])) continue;
                double v = gp[i] + (t - ideal) * (t - ideal);
                if (v < best) { best = v; bi = i; }
            }
            gk[j] = best;
            ak[j] = bi;
        }
    }
    st_status_t s = ST_OK;
    if (isinf(g[n - 1])) {
        s = ST_ERR_INTERNAL;  /* the bottleneck DP found a split, this must too */
    } else {
        uint32_t j = L;
        cut[K] = L;
        for (uint32_t k = K; k >= 1; k--) {
            j = arg[(size_t)k * (L + 1) + j];
            cut[k - 1] = j;
        }
        ST_ASSERT(cut[0] == 0);
    }
    free(g);
    free(arg);
    return s;
}

static double ideal_time(const plan_ctx_t *c, const uint32_t *o, uint32_t K)
{
    double s = 0;
    for (uint32_t k = 0; k < K; k++) s += c->p->workers[o[k]].speed;
    return c->pw[c->L] / s;
}

/* Writes the "does not fit" message: total shortfall and the workers whose
 * memory-blind balanced share does not fit them. */
static st_status_t explain_no_fit(const plan_ctx_t *c, const uint32_t *o, uint32_t K,
                                  double *f, uint32_t *cut, st_error_t *err)
{
    const st_plan_params_t *p = c->p;
    char msg[ST_ERROR_MAX];
    size_t len = 0;
    double have = 0, need;  /* in double: only printed, and sums of many workers may pass 2^64 */
    for (uint32_t k = 0; k < K; k++) have += (double)p->workers[o[k]].mem_bytes;

    double t = split_bottleneck(c, o, K, 0, f);
    st_status_t s = split_balance(c, o, K, 0, t * (1 + 1e-9), ideal_time(c, o, K), cut);
    if (s != ST_OK) return st_error_set(err, s, "plan: cannot explain the failed split");
    uint32_t used = 0;
    for (uint32_t k = 0; k < K; k++) used += cut[k] < cut[k + 1];
    need = (double)c->pb[c->L] + (double)c->L * (double)c->kvl + (double)p->model.embd_bytes
         + (double)p->model.output_bytes + (double)used * (double)c->act
         - (used == 1 ? (double)p->model.shared_bytes : 0);

    len += (size_t)snprintf(msg + len, sizeof(msg) - len,
                            "model does not fit: needs %.1f MiB (weights, KV cache for %u x %u tokens"
                            "%s%.0llu%s, activations) on %u workers with %.1f MiB",
                            need / 1048576.0, p->n_ctx, p->n_seq,
                            p->pool_tokens ? " + a prefix cache of " : "",
                            (unsigned long long)p->pool_tokens,
                            p->pool_tokens ? " tokens (--prefix-cache)" : "", K, have / 1048576.0);
    if (need > have && len < sizeof(msg))
        len += (size_t)snprintf(msg + len, sizeof(msg) - len, ", %.1f MiB missing in total",
                                (need - have) / 1048576.0);
    for (uint32_t k = 0; k < K && len < sizeof(msg); k++) {
        if (cut[k] == cut[k + 1]) continue;
        const st_plan_worker_t *w = &p->workers[o[k]];
        uint64_t m = stage_mem(c, cut[k], cut[k + 1]);
        if (m <= w->mem_bytes) continue;
        len += (size_t)snprintf(msg + len, sizeof(msg) - len,
                                "; '%s' needs %.1f MiB more for layers %u-%u (%.1f MiB, has %.1f MiB)",
                                w->name, (m - w->mem_bytes) / 1048576.0, cut[k], cut[k + 1] - 1,
                                m / 1048576.0, w->mem_bytes / 1048576.0);
    }
    return st_error_set(err, ST_ERR_RANGE, "%s", msg);
}

static st_status_t validate(const st_plan_params_t *p, st_error_t *err)
{
    if (!p || p->size < sizeof(*p))
        return st_error_set(err, ST_ERR_INVALID, "plan: params missing or size %u too small",
                            p ? p->size : 0);
    if (p->model.n_layer == 0 || p->model.n_layer > ST_PLAN_MAX_LAYERS || !p->model.layer_bytes)
        return st_error_set(err, ST_ERR_INVALID, "plan: n_layer %u (1..%u, with layer_bytes)",
                            p->model.n_layer, ST_PLAN_MAX_LAYERS);
    if (p->model.shared_bytes > p->model.embd_bytes || p->model.shared_bytes > p->model.output_bytes)
        return st_error_set(err, ST_ERR_INVALID, "plan: shared_bytes %llu exceed the embedding "
                            "or the output bytes", (unsigned long long)p->model.shared_bytes);
    if (p->n_ctx == 0 || p->n_seq == 0)
        return st_error_set(err, ST_ERR_INVALID, "plan: n_ctx %u and n_seq %u must be > 0",
                            p->n_ctx, p->n_seq);
    if (p->n_workers == 0 || p->n_workers > ST_PLAN_MAX_WORKERS || !p->workers)
        return st_error_set(err, ST_ERR_INVALID, "plan: %u workers (1..%u)", p->n_workers,
                            ST_PLAN_MAX_WORKERS);
    for (uint32_t i = 0; i < p->n_workers; i++) {
        const st_plan_worker_t *w = &p->workers[i];
        if (!memchr(w->name, 0, sizeof(w->name)) || !w->name[0] || !memchr(w->host, 0, sizeof(w->host)))
            return st_error_set(err, ST_ERR_INVALID, "plan: worker %u: name or host not a string", i);
        if (!(w->speed > 0) || !isfinite(w->speed))
            return st_error_set(err, ST_ERR_INVALID, "plan: worker '%s': speed %g must be > 0",
                                w->name, w->speed);
        for (uint32_t j = 0; p->latency_us && j < p->n_workers; j++) {
            double v = lat(p, i, j);
            if (!(v >= 0) || !isfinite(v))
                return st_error_set(err, ST_ERR_INVALID, "plan: latency %s -> %s is %g",
                                    w->name, p->workers[j].name, v);
        }
    }
    return ST_OK;
}

st_status_t st_plan_compute(const st_plan_params_t *p, st_plan_t **out, st_error_t *err)
{
    st_status_t s = validate(p, err);
    if (s != ST_OK) return s;

    plan_ctx_t c = { .p = p, .L = p->model.n_layer };
    uint32_t L = c.L, N = p->n_workers, K = 0;
    st_plan_t *plan = NULL;
    uint32_t *u = NULL, *o = NULL, *cut = NULL;
    double *f = NULL;

    /* One overflow check for everything a single stage could hold. */
    uint64_t total = 0, kv_tok;
    if (st_mul_overflow_u64(p->n_ctx, p->n_seq, &kv_tok) ||
        st_add_overflow_u64(kv_tok, p->pool_tokens, &kv_tok) ||
        st_mul_overflow_u64(kv_tok, p->model.kv_bytes_per_token_layer, &c.kvl) ||
        st_mul_overflow_u64(p->model.act_bytes_per_seq, p->n_seq, &c.act) ||
        st_add_overflow_u64(p->model.embd_bytes, p->model.output_bytes, &total) ||
        st_add_overflow_u64(total, c.act, &total))
        return st_error_set(err, ST_ERR_OVERFLOW, "plan: KV/activation/embedding sizes overflow");
    c.pb = malloc((L + 1) * sizeof(*c.pb));
    c.pw = malloc((L + 1) * sizeof(*c.pw));
    if (!c.pb || !c.pw) { s = ST_ERR_NOMEM; goto err_ctx; }
    c.pb[0] = 0;
    c.pw[0] = 0;
    uint64_t min_layer = UINT64_MAX;
    for (uint32_t i = 0; i < L; i++) {
        uint64_t lb = p->model.layer_bytes[i], with_kv;
        if (st_add_overflow_u64(c.pb[i], lb, &c.pb[i + 1]) ||
            st_add_overflow_u64(lb, c.kvl, &with_kv) ||
            st_add_overflow_u64(total, with_kv, &total)) {
            s = st_error_set(err, ST_ERR_OVERFLOW, "plan: layer sizes overflow at layer %u", i);
            goto err_ctx;
        }
        min_layer = ST_MIN(min_layer, with_kv);
    }
    /* A layer's time is the bytes one decode token reads in it over the
     * speed: every weight of a dense layer, only the active experts of a MoE
     * layer (whose memory, above, still counts all of them). Layers that
     * read nothing count as equal. */
    const uint64_t *work = p->model.layer_work ? p->model.layer_work : p->model.layer_bytes;
    double work_total = 0;
    for (uint32_t i = 0; i < L; i++) work_total += (double)work[i];
    for (uint32_t i = 0; i < L; i++)
        c.pw[i + 1] = c.pw[i] + (work_total > 0 ? (double)work[i] : 1.0);

    plan = calloc(1, sizeof(*plan));
    u = malloc(N * sizeof(*u));
    o = malloc(N * sizeof(*o));
    cut = malloc((N + 1) * sizeof(*cut));
    if (!plan || !u || !o || !cut) { s = ST_ERR_NOMEM; goto err_plan; }
    plan->workers = malloc(N * sizeof(*plan->workers));
    plan->stages = calloc(ST_MIN(N, L), sizeof(*plan->stages));
    plan->unused = calloc(N, sizeof(*plan->unused));
    if (!plan->workers || !plan->stages || !plan->unused) { s = ST_ERR_NOMEM; goto err_plan; }
    memcpy(plan->workers, p->workers, N * sizeof(*plan->workers));
    plan->n_workers = N;
    plan->n_layer = L;
    plan->n_ctx = p->n_ctx;
    plan->n_seq = p->n_seq;

    uint64_t one_layer = min_layer + c.act;  /* cannot overflow: <= total */
    uint32_t biggest = 0;
    for (uint32_t i = 0; i < N; i++) {
        if (p->workers[i].mem_bytes > p->workers[biggest].mem_bytes) biggest = i;
        if (p->workers[i].mem_bytes < one_layer) {
            plan->unused[plan->n_unused++] = (st_plan_unused_t){
                .worker = i, .reason = ST_PLAN_UNUSED_TOO_SMALL, .need_bytes = one_layer };
        } else {
            u[K++] = i;
        }
    }
    if (K == 0) {
        s = st_error_set(err, ST_ERR_RANGE,
                         "model does not fit: no worker can hold a single layer: the smallest stage "
                         "needs %.1f MiB (weights + KV cache for %u x %u tokens%s%.0llu%s + "
                         "activations), the largest worker '%s' has %.1f MiB (%.1f MiB missing)",
                         one_layer / 1048576.0, p->n_ctx, p->n_seq,
                         p->pool_tokens ? " + a prefix cache of " : "",
                         (unsigned long long)p->pool_tokens, p->pool_tokens ? " tokens" : "",
                         p->workers[biggest].name,
                         p->workers[biggest].mem_bytes / 1048576.0,
                         (one_layer - p->workers[biggest].mem_bytes) / 1048576.0);
        goto err_plan;
    }
    s = order_workers(p, u, K, o);
    if (s != ST_OK) goto err_plan;

    f = malloc((size_t)(K + 1) * (L + 1) * sizeof(*f));
    if (!f) { s = ST_ERR_NOMEM; goto err_plan; }
    double tstar = split_bottleneck(&c, o, K, 1, f);
    if (isinf(tstar) && K > 1) {
        /* The embedding and the head sit at the two ends: the reversed order
         * has the same latency when links are symmetric and may fit. */
        for (uint32_t a = 0, b = K - 1; a < b; a++, b--) { uint32_t t = o[a]; o[a] = o[b]; o[b] = t; }
        tstar = split_bottleneck(&c, o, K, 1, f);
        if (isinf(tstar))
            for (uint32_t a = 0, b = K - 1; a < b; a++, b--) { uint32_t t = o[a]; o[a] = o[b]; o[b] = t; }
    }
    if (isinf(tstar)) {
        s = explain_no_fit(&c, o, K, f, cut, err);
        goto err_plan;
    }
    plan->ideal = ideal_time(&c, o, K);
    s = split_balance(&c, o, K, 1, tstar * (1 + 1e-9), plan->ideal, cut);
    if (s != ST_OK) {
        st_error_set(err, s, "plan: balancing pass found no split");
        goto err_plan;
    }

    plan->latency_us = p->latency_us ? 0 : -1;
    int prev = -1;
    for (uint32_t k = 0; k < K; k++) {
        const st_plan_worker_t *w = &p->workers[o[k]];
        if (cut[k] == cut[k + 1]) {
            plan->unused[plan->n_unused++] = (st_plan_unused_t){
                .worker = o[k], .reason = ST_PLAN_UNUSED_NOT_NEEDED };
            continue;
        }
        st_plan_stage_t *st = &plan->stages[plan->n_stages++];
        st->worker = o[k];
        st->first_layer = cut[k];
        st->n_layers = cut[k + 1] - cut[k];
        st->holds_embd = cut[k] == 0;
        st->holds_output = cut[k + 1] == L;
        st->kv_bytes = (uint64_t)st->n_layers * c.kvl;
        st->act_bytes = c.act;
        st->total_bytes = stage_mem(&c, cut[k], cut[k + 1]);
        st->weight_bytes = st->total_bytes - st->kv_bytes - st->act_bytes;
        st->time = stage_time(&c, cut[k], cut[k + 1], w->speed);
        plan->bottleneck = ST_MAX(plan->bottleneck, st->time);
        if (p->latency_us && prev >= 0) plan->latency_us += lat(p, (uint32_t)prev, o[k]);
        prev = (int)o[k];
    }
    free(f);
    free(cut);
    free(o);
    free(u);
    free(c.pw);
    free(c.pb);
    *out = plan;
    return ST_OK;

err_plan:
    free(f);
    free(cut);
    free(o);
    free(u);
    st_plan_free(plan);
err_ctx:
    free(c.pw);
    free(c.pb);
    if (s == ST_ERR_NOMEM) st_error_set(err, s, "plan: out of memory");
    return s;
}

void st_plan_free(st_plan_t *plan)
{
    if (!plan) return;
    free(plan->workers);
    free(plan->stages);
    free(plan->unused);
    free(plan);
}

uint32_t st_plan_n_stages(const st_plan_t *plan) { return plan->n_stages; }
uint32_t st_plan_n_unused(const st_plan_t *plan) { return plan->n_unused; }
double st_plan_ideal_time(const st_plan_t *plan) { return plan->ideal; }
double st_plan_bottleneck_time(const st_plan_t *plan) { return plan->bottleneck; }
double st_plan_link_latency_us(const st_plan_t *plan) { return plan->latency_us; }

const st_plan_stage_t *st_plan_stage(const st_plan_t *plan, uint32_t i)
{
    return i < plan->n_stages ? &plan->stages[i] : NULL;
}

const st_plan_unused_t *st_plan_unused(const st_plan_t *plan, uint32_t i)
{
    return i < plan->n_unused ? &plan->unused[i] : NULL;
}

const st_plan_worker_t *st_plan_worker(const st_plan_t *plan, uint32_t index)
{
    return index < plan->n_workers ? &plan->workers[index] : NULL;
}
