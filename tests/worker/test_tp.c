/*
 * test_tp.c - tensor-parallel partition (worker/st_tp.h) against the
 * unsplit layer on the CPU backend.
 *
 * The arithmetic tests check what each rank owns (heads, rows, columns,
 * bytes, KV dims, all-reduce points) and every refusal. The numeric tests
 * run a Llama-family layer (GQA attention with biases over a KV cache,
 * SwiGLU FFN) split 1, 2 and 4 ways: each rank computes its partial
 * outputs from its extracted slices, the partials are summed in rank order
 * at the two all-reduce points, and the result must match the unsplit
 * layer within 1e-5 of the largest output, for F32, Q8_0 and Q4_K weights
 * (the FFN shares of Q8_0 and Q4_K are uneven: 25 and 5 blocks). With the
 * real SmolLM2 file present, its layer 0 is checked the same way 3 ways.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kt_util.h"
#include "st_kernels.h"
#include "st_model.h"
#include "st_test.h"
#include "st_tp.h"

/* ---- an in-memory layer ------------------------------------------------- */

#define MAXT 32

typedef struct {
    st_hparams_t hp;
    st_layer_t   L;
    st_tensor_t  t[MAXT];
    char         names[MAXT][48];
    int          n;
    uint64_t     seed;
} mem_layer_t;

static const st_tensor_t *add_t(mem_layer_t *m, const char *name, int type, uint64_t ne0,
                                uint64_t ne1, uint64_t ne2, float scale)
{
    st_tensor_t *t = &m->t[m->n];

    if (type == ST_DTYPE_F32) {
        uint64_t n = ne0 * ne1 * ne2;
        float *d = malloc(n * sizeof(float));
        if (!d)
            return NULL;
        memset(t, 0, sizeof *t);
        for (uint64_t i = 0; i < n; i++)
            d[i] = scale < 0 ? 1.0f + 0.2f * kt_uniform(&m->seed) : scale * kt_uniform(&m->seed);
        t->type = ST_DTYPE_F32;
        t->ne[0] = ne0;
        t->ne[1] = ne1;
        t->ne[2] = ne2;
        t->ne[3] = 1;
        t->row_bytes = ne0 * 4;
        t->nbytes = n * 4;
        t->data = d;
    } else if (kt_make_weight(t, type, (int)(ne1 * ne2), (int)ne0, &m->seed) != 0) {
        return NULL;
    } else {
        t->ne[1] = ne1;
        t->ne[2] = ne2;
    }
    t->n_dims = ne2 > 1 ? 3 : ne1 > 1 ? 2 : 1;
    snprintf(m->names[m->n], sizeof m->names[0], "blk.0.%s.weight", name);
    t->name = m->names[m->n];
    m->L.all[m->L.n_all++] = t;
    m->n++;
    return t;
}

static void mem_free(mem_layer_t *m)
{
    for (int i = 0; i < m->n; i++)
        free((void *)m->t[i].data);
    memset(m, 0, sizeof *m);
}

/* Llama/qwen2: n_embd d, heads h/kv of hd, FFN f, weights of `type`. */
static int make_llama(mem_layer_t *m, int type, uint32_t d, uint32_t h, uint32_t kv, uint32_t hd,
                      uint32_t f, int bias)
{
    st_hparams_t *hp = &m->hp;
    st_layer_t *L = &m->L;
    float s = 1.0f / sqrtf((float)d);

    memset(m, 0, sizeof *m);
    m->seed = 0x7e57 + (uint64_t)type * 131 + d + f;
    hp->n_layer = 1;
    hp->n_embd = d;
    hp->n_ff = f;
    hp->n_head = h;
    hp->n_head_kv = kv;
    hp->head_dim = hp->head_dim_v = hd;
    hp->rope_dim = hd;
    hp->rope_theta = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->rms_eps = 1e-5f;
    hp->rope_mode = ST_ROPE_NORM;
    hp->attn_scale = 1.0f / sqrtf((float)hd);
    hp->embd_scale = 1.0f;
    hp->kv_k_dim = hp->kv_v_dim = kv * hd;
    L->attn_norm = add_t(m, "attn_norm", ST_DTYPE_F32, d, 1, 1, -1);
    L->wq = add_t(m, "attn_q", type, d, h * hd, 1, s);
    L->wk = add_t(m, "attn_k", type, d, kv * hd, 1, s);
    L->wv = add_t(m, "attn_v", type, d, kv * hd, 1, s);
    if (bias) {
        L->bq = add_t(m, "attn_q_bias", ST_DTYPE_F32, h * hd, 1, 1, 0.1f);
        L->bk = add_t(m, "attn_k_bias", ST_DTYPE_F32, kv * hd, 1, 1, 0.1f);
        L->bv = add_t(m, "attn_v_bias", ST_DTYPE_F32, kv * hd, 1, 1, 0.1f);
    }
    L->wo = add_t(m, "attn_output", type, h * hd, d, 1, 1.0f / sqrtf((float)(h * hd)));
    L->ffn_norm = add_t(m, "ffn_norm", ST_DTYPE_F32, d, 1, 1, -1);
    L->w_gate = add_t(m, "ffn_gate", type, d, f, 1, s);
    L->w_up = add_t(m, "ffn_up", type, d, f, 1, s);
    L->w_down = add_t(m, "ffn_down", type, f, d, 1, 1.0f / sqrtf((float)f));
    L->rope_theta = hp->rope_theta;
    L->rope_freq_scale = 1.0f;
    for (int i = 0; i < m->n; i++)
        if (!m->t[i].data)
            return -1;
    return m->n == (int)L->n_all ? 0 : -1;
}

/* ---- the layer math on the backend, for one rank (or the whole layer) ---- */

typedef struct {
    st_hparams_t hp;
    st_layer_t   L;
    st_tensor_t  views[MAXT];
    void        *store[MAXT];
    float *kc, *vc, *xn, *q, *k, *v, *att, *h1, *h2, *out;
} rank_t;

enum { N_SLOTS = 2, N_CTX = 16, MAX_B = 8 };

static int rank_bufs(st_backend_t *be, rank_t *r)
{
    const st_backend_ops_t *o = be->ops;
    void *c = be->ctx;
    size_t q = (size_t)r->hp.n_head * r->hp.head_dim, kv = r->hp.kv_k_dim, d = r->hp.n_embd;

    r->kc = o->alloc(c, (size_t)N_SLOTS * N_CTX * kv * 4);
    r->vc = o->alloc(c, (size_t)N_SLOTS * N_CTX * kv * 4);
    r->xn = o->alloc(c, MAX_B * d * 4);
    r->q = o->alloc(c, MAX_B * q * 4);
    r->att = o->alloc(c, MAX_B * q * 4);
    r->k = o->alloc(c, MAX_B * kv * 4);
    r->v = o->alloc(c, MAX_B * kv * 4);
    r->h1 = o->alloc(c, MAX_B * (size_t)r->hp.n_ff * 4);
    r->h2 = o->alloc(c, MAX_B * (size_t)r->hp.n_ff * 4);
    r->out = o->alloc(c, MAX_B * d * 4);
    return r->kc && r->vc && r->xn && r->q && r->att && r->k && r->v && r->h1 && r->h2 && r->out
               ? 0 : -1;
}

static void rank_free(st_backend_t *be, rank_t *r)
{
    float *b[] = {r->kc, r->vc, r->xn, r->q, r->att, r->k, r->v, r->h1, r->h2, r->out};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (b[i])
            be->ops->free(be->ctx, b[i]);
    for (int i = 0; i < MAXT; i++)
        free(r->store[i]);
    memset(r, 0, sizeof *r);
}

/* This rank's share of attention: r->out = wo[:, its heads] att(its heads). */
static void attn_partial(st_backend_t *be, rank_t *r, const float *x, int n, const int32_t *pos,
                         const int32_t *slot)
{
    const st_backend_ops_t *o = be->ops;
    void *c = be->ctx;
    const st_hparams_t *hp = &r->hp;
    const st_layer_t *L = &r->L;
    int hd = (int)hp->head_dim, qd = (int)hp->n_head * hd, kvd = (int)hp->n_head_kv * hd;
    st_attn_args_t a;

    o->rmsnorm(c, x, L->attn_norm, hp->rms_eps, n, (int)hp->n_embd, r->xn);
    o->matmul(c, L->wq, r->xn, n, r->q);
    o->matmul(c, L->wk, r->xn, n, r->k);
    o->matmul(c, L->wv, r->xn, n, r->v);
    if (L->bq) {
        o->add_row(c, r->q, L->bq, n, qd);
        o->add_row(c, r->k, L->bk, n, kvd);
        o->add_row(c, r->v, L->bv, n, kvd);
    }
    o->rope(c, r->q, n, (int)hp->n_head, hd, (int)hp->rope_dim, pos, hp->rope_theta, 1.0f);
    o->rope(c, r->k, n, (int)hp->n_head_kv, hd, (int)hp->rope_dim, pos, hp->rope_theta, 1.0f);
    o->kv_store(c, r->k, r->v, n, kvd, slot, pos, r->kc, r->vc, N_CTX, ST_DTYPE_F32);
    memset(&a, 0, sizeof a);
    a.n_tokens = n;
    a.n_head = (int)hp->n_head;
    a.n_head_kv = (int)hp->n_head_kv;
    a.head_dim = hd;
    a.q = r->q;
    a.k_cache = r->kc;
    a.v_cache = r->vc;
    a.n_ctx = N_CTX;
    a.slot = slot;
    a.pos = pos;
    a.scale = hp->attn_scale;
    a.out = r->att;
    o->attention(c, &a);
    o->matmul(c, L->wo, r->att, n, r->out);
    o->sync(c);
}

/* This rank's share of the FFN: r->out = down[:, its units] swiglu(...). */
static void ffn_partial(st_backend_t *be, rank_t *r, const float *x, int n)
{
    const st_backend_ops_t *o = be->ops;
    void *c = be->ctx;
    const st_layer_t *L = &r->L;

    o->rmsnorm(c, x, L->ffn_norm, r->hp.rms_eps, n, (int)r->hp.n_embd, r->xn);
    o->matmul(c, L->w_gate, r->xn, n, r->h1);
    o->matmul(c, L->w_up, r->xn, n, r->h2);
    o->swiglu(c, r->h1, r->h2, (size_t)n * L->w_gate->ne[1], r->h1);
    o->matmul(c, L->w_down, r->h1, n, r->out);
    o->sync(c);
}

/* The rank's layer: every tensor of the full layer replaced by its slice. */
static int rank_setup(st_backend_t *be, const st_hparams_t *hp, const st_layer_t *full,
                      uint32_t n_ranks, uint32_t rank, rank_t *r, st_tp_layer_t *tl)
{
    st_error_t err = {{0}};

    memset(r, 0, sizeof *r);
    if (st_tp_layer_split(hp, ST_FAMILY_LLAMA, full, n_ranks, rank, tl, &err) != ST_OK) {
        fprintf(stderr, "  split %u/%u: %s\n", rank, n_ranks, err.msg);
        return -1;
    }
    r->L = *full;
    for (uint32_t i = 0; i < tl->n_parts; i++) {
        const st_tp_part_t *p = &tl->parts[i];
        const st_tensor_t **fields[] = {&r->L.attn_norm, &r->L.wq, &r->L.wk, &r->L.wv,
                                        &r->L.bq, &r->L.bk, &r->L.bv, &r->L.q_norm,
                                        &r->L.k_norm, &r->L.wo, &r->L.ffn_norm,
                                        &r->L.w_gate, &r->L.w_up, &r->L.w_down};
        if (!(r->store[i] = malloc(p->bytes)) ||
            st_tp_part_extract(p, r->store[i], p->bytes, &r->views[i], &err) != ST_OK) {
            fprintf(stderr, "  extract %s: %s\n", p->t->name, err.msg);
            return -1;
        }
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
            if (*fields[f] == p->t)
                *fields[f] = &r->views[i];
        r->L.all[i] = &r->views[i];
    }
    st_tp_rank_hparams(hp, tl, &r->hp);
    return rank_bufs(be, r);
}

static double rel_err(const float *a, const float *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - ref[i]));
        mr = fmax(mr, fabs((double)ref[i]));
    }
    return mr > 0 ? md / mr : md;
}

/* Worst errors, relative to the largest reference value: of the all-reduced
 * attention and FFN outputs given the reference's input (the partition
 * alone), and of the residual stream after the layer when the split path
 * feeds its FFN its own reduced attention (end to end). */
typedef struct {
    double part, e2e;
} tp_err_t;

/* Runs the layer unsplit and split n_ranks ways over three steps (a mixed
 * prefill of two sequences, then two decode steps); -1 on a setup failure. */
static int run_split(const mem_layer_t *m, uint32_t n_ranks, tp_err_t *e)
{
    static const int32_t pos0[] = {0, 1, 2, 3, 4, 0, 1, 2}, slot0[] = {0, 0, 0, 0, 0, 1, 1, 1};
    const uint32_t d = m->hp.n_embd;
    st_backend_t be;
    rank_t ref, rk[4];
    st_tp_layer_t tl;
    float *x_ref = NULL, *x_tp = NULL, *sum = NULL;
    uint64_t seed = 99;
    uint32_t ok = 0;
    int setup = -1;

    st_backend_params_t bp = {.size = sizeof bp, .n_threads = 2, .max_batch = MAX_B,
                              .max_cols = 4096};
    st_error_t err = {{0}};

    memset(e, 0, sizeof *e);
    if (st_backend_open("cpu", &bp, &be, &err) != ST_OK) {
        fprintf(stderr, "  cpu backend: %s\n", err.msg);
        return -1;
    }
    memset(&ref, 0, sizeof ref);
    memset(rk, 0, sizeof rk);
    ref.hp = m->hp;
    ref.L = m->L;
    if (rank_bufs(&be, &ref) != 0)
        goto done;
    for (ok = 0; ok < n_ranks; ok++)
        if (rank_setup(&be, &m->hp, &m->L, n_ranks, ok, &rk[ok], &tl) != 0)
            goto done;
    x_ref = be.ops->alloc(be.ctx, MAX_B * d * 4);
    x_tp = be.ops->alloc(be.ctx, MAX_B * d * 4);
    sum = malloc(MAX_B * d * 4);
    if (!x_ref || !x_tp || !sum)
        goto done;
    setup = 0;

    for (int step = 0; step < 3; step++) {
        int32_t pos[MAX_B], slot[MAX_B];
        int n = step == 0 ? 8 : 2;

        for (int i = 0; i < n; i++) {
            pos[i] = step == 0 ? pos0[i] : (i == 0 ? 4 : 2) + step;
            slot[i] = step == 0 ? slot0[i] : i;
        }
        kt_fill(x_ref, (size_t)n * d, 1.0f, &seed);
        memcpy(x_tp, x_ref, (size_t)n * d * 4);

        /* attention, then all-reduce point 1 */
        attn_partial(&be, &ref, x_ref, n, pos, slot);
        memset(sum, 0, (size_t)n * d * 4);
        for (uint32_t r = 0; r < n_ranks; r++) {
            attn_partial(&be, &rk[r], x_tp, n, pos, slot);
            for (size_t j = 0; j < (size_t)n * d; j++)
                sum[j] += rk[r].out[j];
        }
        e->part = fmax(e->part, rel_err(sum, ref.out, (size_t)n * d));
        for (size_t j = 0; j < (size_t)n * d; j++) {
            x_ref[j] += ref.out[j];
            x_tp[j] += sum[j];
        }

        /* FFN, then all-reduce point 2: first from the reference's residual
         * (the partition alone), then from the split path's own (the whole
         * split layer, end to end) */
        ffn_partial(&be, &ref, x_ref, n);
        for (int pass = 0; pass < 2; pass++) {
            memset(sum, 0, (size_t)n * d * 4);
            for (uint32_t r = 0; r < n_ranks; r++) {
                ffn_partial(&be, &rk[r], pass == 0 ? x_ref : x_tp, n);
                for (size_t j = 0; j < (size_t)n * d; j++)
                    sum[j] += rk[r].out[j];
            }
            if (pass == 0)
                e->part = fmax(e->part, rel_err(sum, ref.out, (size_t)n * d));
        }
        for (size_t j = 0; j < (size_t)n * d; j++) {
            x_ref[j] += ref.out[j];
            x_tp[j] += sum[j];
        }
        e->e2e = fmax(e->e2e, rel_err(x_tp, x_ref, (size_t)n * d));
    }

done:
    free(sum);
    if (x_ref)
        be.ops->free(be.ctx, x_ref);
    if (x_tp)
        be.ops->free(be.ctx, x_tp);
    for (uint32_t r = 0; r < 4; r++)
        rank_free(&be, &rk[r]);
    rank_free(&be, &ref);   /* its tensors are the caller's: store[] is empty */
    st_backend_close(&be);
    return setup;
}

/* ---- partition arithmetic ------------------------------------------------ */

/* Over all ranks, each split part's ranges tile [0, ne[axis]) in rank order
 * and their bytes add up to the tensor's; replicated parts are whole. */
static int check_cover(const st_hparams_t *hp, st_family_t fam, const st_layer_t *L, uint32_t n)
{
    st_tp_layer_t tl[8];
    st_error_t err = {{0}};

    for (uint32_t r = 0; r < n; r++)
        if (st_tp_layer_split(hp, fam, L, n, r, &tl[r], &err) != ST_OK) {
            fprintf(stderr, "  %s\n", err.msg);
            return -1;
        }
    for (uint32_t i = 0; i < L->n_all; i++) {
        uint64_t next = 0, bytes = 0;
        for (uint32_t r = 0; r < n; r++) {
            const st_tp_part_t *p = &tl[r].parts[i];
            if (p->t != L->all[i] || p->split != tl[0].parts[i].split ||
                p->axis != tl[0].parts[i].axis)
                return -2;
            if (!p->split) {
                if (p->bytes != p->t->nbytes)
                    return -3;
                continue;
            }
            if (p->range.first != next || p->range.count == 0)
                return -4;
            next += p->range.count;
            bytes += p->bytes;
        }
        if (tl[0].parts[i].split && (next != L->all[i]->ne[tl[0].parts[i].axis] ||
                                     bytes != L->all[i]->nbytes))
            return -5;
    }
    return 0;
}

ST_TEST(llama_partition)
{
    mem_layer_t m;
    st_tp_layer_t tl;
    st_error_t err = {{0}};

    ST_REQUIRE(make_llama(&m, ST_DTYPE_Q8_0, 256, 8, 4, 32, 800, 1) == 0);
    for (uint32_t n = 1; n <= 4; n *= 2)
        ST_CHECK_MSG(check_cover(&m.hp, ST_FAMILY_LLAMA, &m.L, n) == 0, "n = %u", n);

    ST_REQUIRE(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 4, 1, &tl, &err) == ST_OK);
    ST_CHECK(tl.kv_heads.first == 1 && tl.kv_heads.count == 1);
    ST_CHECK(tl.heads.first == 2 && tl.heads.count == 2);   /* its group of 2 query heads */
    ST_CHECK(tl.kv_k_dim == 32 && tl.kv_v_dim == 32);
    /* 800 units = 25 blocks of 32: 7, 6, 6, 6 */
    ST_CHECK(tl.ff.first == 224 && tl.ff.count == 192);
    const st_tp_part_t *wq = st_tp_layer_part(&tl, m.L.wq), *wk = st_tp_layer_part(&tl, m.L.wk);
    const st_tp_part_t *wo = st_tp_layer_part(&tl, m.L.wo), *bq = st_tp_layer_part(&tl, m.L.bq);
    const st_tp_part_t *dn = st_tp_layer_part(&tl, m.L.w_down);
    const st_tp_part_t *nm = st_tp_layer_part(&tl, m.L.attn_norm);
    ST_REQUIRE(wq && wk && wo && bq && dn && nm);
    ST_CHECK(wq->split && wq->axis == 1 && wq->range.first == 64 && wq->range.count == 64);
    ST_CHECK(wk->split && wk->axis == 1 && wk->range.first == 32 && wk->range.count == 32);
    ST_CHECK(wo->split && wo->axis == 0 && wo->range.first == 64 && wo->range.count == 64);
    ST_CHECK(bq->split && bq->axis == 0 && bq->range.first == 64 && bq->range.count == 64);
    ST_CHECK(dn->split && dn->axis == 0 && dn->range.first == 224 && dn->range.count == 192);
    ST_CHECK(!nm->split && nm->bytes == m.L.attn_norm->nbytes);
    ST_CHECK(wo->bytes == 256 * st_dtype_row_bytes(ST_DTYPE_Q8_0, 64));
    ST_CHECK(tl.n_reduce == 2);
    ST_CHECK(tl.reduce[0].point == ST_TP_REDUCE_ATTN_OUT && tl.reduce[0].after == m.L.wo);
    ST_CHECK(tl.reduce[1].point == ST_TP_REDUCE_FFN_OUT && tl.reduce[1].after == m.L.w_down);
    ST_CHECK(tl.reduce[0].floats == 256 && tl.reduce[1].floats == 256);

    st_hparams_t rh;
    st_tp_rank_hparams(&m.hp, &tl, &rh);
    ST_CHECK(rh.n_head == 2 && rh.n_head_kv == 1 && rh.n_ff == 192 && rh.head_dim == 32 &&
             rh.n_embd == 256 && rh.kv_k_dim == 32 && rh.attn_scale == m.hp.attn_scale);

    /* n_ranks 1: everything whole on rank 0 */
    ST_REQUIRE(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 1, 0, &tl, &err) == ST_OK);
    for (uint32_t i = 0; i < tl.n_parts; i++)
        ST_CHECK(!tl.parts[i].split && tl.parts[i].bytes == m.L.all[i]->nbytes);
    mem_free(&m);
}

ST_TEST(llama_refusals)
{
    mem_layer_t m;
    st_tp_layer_t tl;
    st_error_t err = {{0}};

    ST_REQUIRE(make_llama(&m, ST_DTYPE_Q8_0, 256, 8, 4, 32, 800, 0) == 0);
    ST_CHECK(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 3, 0, &tl, &err) ==
             ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "4 KV heads do not divide over 3 ranks"), "%s", err.msg);
    ST_CHECK(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 8, 0, &tl, &err) ==
             ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "4 KV heads do not divide over 8 ranks"), "%s", err.msg);
    ST_CHECK(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 2, 2, &tl, &err) == ST_ERR_INVALID);
    ST_CHECK(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 0, 0, &tl, &err) == ST_ERR_INVALID);

    /* a tensor without a rule */
    st_tensor_t stray = m.t[1];
    stray.name = "blk.0.attn_sinks.weight";
    m.L.all[m.L.n_all++] = &stray;
    ST_CHECK(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 2, 0, &tl, &err) ==
             ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "'blk.0.attn_sinks.weight' has no tensor-parallel rule"), "%s",
                 err.msg);
    mem_free(&m);

    /* Q4_K, heads of 64: 4 ranks would own 128 columns of wo, half a block */
    ST_REQUIRE(make_llama(&m, ST_DTYPE_Q4_K, 256, 8, 4, 64, 1024, 0) == 0);
    ST_CHECK(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 2, 1, &tl, &err) == ST_OK);
    ST_CHECK(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 4, 1, &tl, &err) ==
             ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "blk.0.attn_output.weight (q4_k, blocks of 256 columns)") &&
                 strstr(err.msg, "columns 128..255"), "%s", err.msg);
    mem_free(&m);

    /* an FFN of one Q4_K block cannot be shared */
    ST_REQUIRE(make_llama(&m, ST_DTYPE_Q4_K, 256, 8, 4, 128, 256, 0) == 0);
    ST_CHECK(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 2, 0, &tl, &err) ==
             ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "blk.0.ffn_down.weight (q4_k, blocks of 256 columns)") &&
                 strstr(err.msg, "fewer than 2 ranks"), "%s", err.msg);
    mem_free(&m);
}

ST_TEST(extract_matches_full)
{
    mem_layer_t m;
    st_tp_layer_t tl;
    st_error_t err = {{0}};

    ST_REQUIRE(make_llama(&m, ST_DTYPE_Q4_K, 256, 8, 4, 128, 1280, 1) == 0);
    for (uint32_t r = 0; r < 4; r++) {
        ST_REQUIRE(st_tp_layer_split(&m.hp, ST_FAMILY_LLAMA, &m.L, 4, r, &tl, &err) == ST_OK);
        for (uint32_t i = 0; i < tl.n_parts; i++) {
            const st_tp_part_t *p = &tl.parts[i];
            const st_tensor_t *t = p->t;
            st_tensor_t v;
            uint8_t *buf = malloc(p->bytes);
            float *full = malloc(t->ne[0] * sizeof(float)), *part = malloc(t->ne[0] * 4);
            ST_REQUIRE(buf && full && part);
            ST_CHECK(st_tp_part_extract(p, buf, p->bytes - 1, &v, &err) == ST_ERR_RANGE);
            ST_REQUIRE(st_tp_part_extract(p, buf, p->bytes, &v, &err) == ST_OK);
            ST_CHECK(v.nbytes == p->bytes && v.type == t->type && v.name == t->name);
            ST_CHECK(v.row_bytes == st_dtype_row_bytes(v.type, v.ne[0]));
            ST_CHECK(v.ne[0] * v.ne[1] * v.ne[2] ==
                     (p->split ? t->ne[0] * t->ne[1] * t->ne[2] / t->ne[p->axis] * p->range.count
                               : t->ne[0] * t->ne[1] * t->ne[2]));
            /* every row of the view decodes to its slice of the full row */
            for (uint64_t row = 0; row < v.ne[1]; row++) {
                uint64_t src_row = p->split && p->axis == 1 ? row + p->range.first : row;
                uint64_t c0 = p->split && p->axis == 0 ? p->range.first : 0;
                st_dtype_dequantize_row(t->type, (const uint8_t *)t->data + src_row * t->row_bytes,
                                        full, t->ne[0]);
                st_dtype_dequantize_row(v.type, (const uint8_t *)v.data + row * v.row_bytes, part,
                                        v.ne[0]);
                ST_CHECK(!memcmp(part, full + c0, v.ne[0] * sizeof(float)));
            }
            free(buf);
            free(full);
            free(part);
        }
    }
    mem_free(&m);
}

/* DeepSeek-V2 style: MLA (no q lora) and a MoE FFN with shared experts. */
ST_TEST(deepseek2_partition)
{
    mem_layer_t m;
    st_hparams_t *hp = &m.hp;
    st_layer_t *L = &m.L;
    st_tp_layer_t tl;
    st_error_t err = {{0}};
    const uint32_t d = 256, H = 4, nope = 32, rope = 16, kvl = 64, vh = 32, E = 4, fe = 96;

    memset(&m, 0, sizeof m);
    m.seed = 5;
    hp->n_layer = 1;
    hp->n_embd = d;
    hp->n_head = H;
    hp->n_head_kv = 1;
    hp->head_dim = kvl + rope;
    hp->head_dim_v = kvl;
    hp->kv_lora_rank = kvl;
    hp->qk_nope_dim = nope;
    hp->qk_rope_dim = rope;
    hp->v_head_dim_mla = vh;
    hp->n_expert = E;
    hp->n_expert_used = 2;
    hp->n_expert_shared = 1;
    hp->n_ff_exp = hp->n_ff_shexp = fe;
    hp->kv_k_dim = kvl + rope;
    hp->kv_v_dim = 0;
    L->attn_norm = add_t(&m, "attn_norm", ST_DTYPE_F32, d, 1, 1, -1);
    L->wq = add_t(&m, "attn_q", ST_DTYPE_Q8_0, d, H * (nope + rope), 1, 0);
    L->wkv_a = add_t(&m, "attn_kv_a_mqa", ST_DTYPE_Q8_0, d, kvl + rope, 1, 0);
    L->kv_a_norm = add_t(&m, "attn_kv_a_norm", ST_DTYPE_F32, kvl, 1, 1, -1);
    L->wk_b = add_t(&m, "attn_k_b", ST_DTYPE_Q8_0, nope, kvl, H, 0);
    L->wv_b = add_t(&m, "attn_v_b", ST_DTYPE_Q8_0, kvl, vh, H, 0);
    L->wo = add_t(&m, "attn_output", ST_DTYPE_Q8_0, H * vh, d, 1, 0);
    L->ffn_norm = add_t(&m, "ffn_norm", ST_DTYPE_F32, d, 1, 1, -1);
    L->gate_inp = add_t(&m, "ffn_gate_inp", ST_DTYPE_F32, d, E, 1, 0.1f);
    L->gate_exps = add_t(&m, "ffn_gate_exps", ST_DTYPE_Q8_0, d, fe, E, 0);
    L->up_exps = add_t(&m, "ffn_up_exps", ST_DTYPE_Q8_0, d, fe, E, 0);
    L->down_exps = add_t(&m, "ffn_down_exps", ST_DTYPE_Q8_0, fe, d, E, 0);
    L->gate_shexp = add_t(&m, "ffn_gate_shexp", ST_DTYPE_Q8_0, d, fe, 1, 0);
    L->up_shexp = add_t(&m, "ffn_up_shexp", ST_DTYPE_Q8_0, d, fe, 1, 0);
    L->down_shexp = add_t(&m, "ffn_down_shexp", ST_DTYPE_Q8_0, fe, d, 1, 0);
    L->is_moe = 1;
    for (int i = 0; i < m.n; i++)
        ST_REQUIRE(m.t[i].data);

    for (uint32_t n = 1; n <= 2; n++)
        ST_CHECK_MSG(check_cover(hp, ST_FAMILY_DEEPSEEK2, L, n) == 0, "n = %u", n);
    /* 4 heads split 4 ways, but 96 expert units are 3 blocks of 32 */
    ST_CHECK(st_tp_layer_split(hp, ST_FAMILY_DEEPSEEK2, L, 4, 0, &tl, &err) == ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "blk.0.ffn_down_exps.weight (q8_0, blocks of 32 columns)"), "%s",
                 err.msg);
    ST_REQUIRE(st_tp_layer_split(hp, ST_FAMILY_DEEPSEEK2, L, 2, 1, &tl, &err) == ST_OK);
    ST_CHECK(tl.heads.first == 2 && tl.heads.count == 2);
    ST_CHECK(tl.kv_k_dim == kvl + rope && tl.kv_v_dim == 0);   /* the latent, whole */
    ST_CHECK(tl.ff.count == 0);
    ST_CHECK(tl.ff_exp.first == 64 && tl.ff_exp.count == 32);  /* 3 blocks: 2, 1 */
    ST_CHECK(tl.ff_shexp.first == 64 && tl.ff_shexp.count == 32);
    const st_tp_part_t *p;
    ST_CHECK((p = st_tp_layer_part(&tl, L->wq)) && p->axis == 1 && p->range.first == 96 &&
             p->range.count == 96);
    ST_CHECK((p = st_tp_layer_part(&tl, L->wk_b)) && p->axis == 2 && p->range.first == 2 &&
             p->range.count == 2);
    ST_CHECK((p = st_tp_layer_part(&tl, L->wv_b)) && p->axis == 2 && p->range.first == 2);
    ST_CHECK((p = st_tp_layer_part(&tl, L->wo)) && p->axis == 0 && p->range.first == 64 &&
             p->range.count == 64);
    ST_CHECK((p = st_tp_layer_part(&tl, L->wkv_a)) && !p->split);
    ST_CHECK((p = st_tp_layer_part(&tl, L->gate_inp)) && !p->split);
    ST_CHECK((p = st_tp_layer_part(&tl, L->gate_exps)) && p->axis == 1 && p->range.first == 64 &&
             p->bytes == E * 32 * m.L.gate_exps->row_bytes);
    ST_CHECK((p = st_tp_layer_part(&tl, L->down_exps)) && p->axis == 0 && p->range.first == 64 &&
             p->bytes == E * d * st_dtype_row_bytes(ST_DTYPE_Q8_0, 32));
    ST_CHECK(tl.reduce[1].point == ST_TP_REDUCE_FFN_OUT && tl.reduce[1].after == L->down_exps);

    /* 3-D column slices decode to the full tensor's columns, every expert */
    {
        st_tensor_t v;
        uint8_t *buf = malloc(p->bytes);
        float full[96], part[32];
        ST_REQUIRE(buf && st_tp_part_extract(p, buf, p->bytes, &v, &err) == ST_OK);
        ST_CHECK(v.ne[0] == 32 && v.ne[1] == d && v.ne[2] == E);
        for (uint64_t row = 0; row < (uint64_t)d * E; row++) {
            st_dtype_dequantize_row(ST_DTYPE_Q8_0,
                                    (const uint8_t *)L->down_exps->data + row * L->down_exps->row_bytes,
                                    full, 96);
            st_dtype_dequantize_row(ST_DTYPE_Q8_0, buf + row * v.row_bytes, part, 32);
            ST_CHECK(!memcmp(part, full + 64, sizeof part));
        }
        free(buf);
    }
    ST_CHECK(st_tp_layer_split(hp, ST_FAMILY_DEEPSEEK2, L, 8, 0, &tl, &err) == ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "4 attention heads do not divide over 8 ranks"), "%s", err.msg);
    mem_free(&m);
}

/* ---- the split layer against the unsplit one ------------------------------ */

/* tol_e2e: the end-to-end bound. Q4_0/Q4_1/Q8_0 matmuls quantize their
 * activations (~15 bits, st_cpu.h): the ~2e-7 by which the split path's
 * reduced attention differs (summation order) can move a level-2 rounding
 * of the FFN input by one step, 1/127^2 of a block's largest value, so the
 * end-to-end bound is 1e-4 there; the partition itself stays within 1e-5. */
static void check_numeric(int *st_failed_, int type, uint32_t hd, uint32_t f, int bias,
                          double tol_e2e)
{
    mem_layer_t m;

    ST_REQUIRE(make_llama(&m, type, 256, 8, 4, hd, f, bias) == 0);
    for (uint32_t n = 1; n <= 4; n *= 2) {
        tp_err_t e;
        ST_REQUIRE(run_split(&m, n, &e) == 0);
        fprintf(stderr, "  %s, %u-way: partials %.3g, end to end %.3g (relative)\n",
                st_dtype_name(type), n, e.part, e.e2e);
        ST_CHECK_MSG(e.part <= 1e-5, "%s %u-way: %g", st_dtype_name(type), n, e.part);
        ST_CHECK_MSG(e.e2e <= tol_e2e, "%s %u-way: %g", st_dtype_name(type), n, e.e2e);
        if (n == 1)
            ST_CHECK(e.part == 0 && e.e2e == 0);   /* one rank: the same computation */
    }
    mem_free(&m);
}

ST_TEST(layer_f32)  { check_numeric(st_failed_, ST_DTYPE_F32, 32, 768, 1, 1e-5); }
ST_TEST(layer_q8_0) { check_numeric(st_failed_, ST_DTYPE_Q8_0, 32, 800, 1, 1e-4); }
ST_TEST(layer_q4_k) { check_numeric(st_failed_, ST_DTYPE_Q4_K, 128, 1280, 0, 1e-5); }

/* ---- a real model, when its file is here ---------------------------------- */

static st_model_t *open_cached(const char *file, const char *env)
{
    const char *p = env ? getenv(env) : NULL, *home = getenv("HOME"), *cache = getenv("STRATA_CACHE");
    char path[1024];
    st_model_t *m = NULL;
    st_error_t err = {{0}};

    if (p && strstr(p, file))
        snprintf(path, sizeof path, "%s", p);
    else if (cache)
        snprintf(path, sizeof path, "%s/%s", cache, file);
    else
        snprintf(path, sizeof path, "%s/.cache/strata/%s", home ? home : "", file);
    if (access(path, R_OK) != 0)
        return NULL;
    if (st_model_open(path, NULL, &m, &err) != ST_OK) {
        fprintf(stderr, "  %s: %s\n", path, err.msg);
        return NULL;
    }
    return m;
}

/* SmolLM2-135M (9 query / 3 KV heads of 64, FFN 1536, Q4_1): 3 ranks own
 * one KV head each; its layer 0 split 3 ways against the unsplit layer. */
ST_TEST(smollm2_layer0)
{
    st_model_t *model = open_cached("SmolLM2-135M-Instruct.Q4_1.gguf", "STRATA_MODEL");
    st_tp_plan_t *plan = NULL;
    st_error_t err = {{0}};
    uint64_t total = 0, ranks = 0;
    mem_layer_t m;
    tp_err_t e;

    if (!model)
        ST_SKIP("SmolLM2-135M-Instruct.Q4_1.gguf not in ~/.cache/strata (scripts/fetch-model.sh)");
    const st_hparams_t *hp = st_model_hparams(model);
    ST_CHECK(st_tp_plan_create(model, 0, hp->n_layer, 2, &plan, &err) == ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "layer 0: tp: 3 KV heads do not divide over 2 ranks"), "%s",
                 err.msg);
    ST_REQUIRE(st_tp_plan_create(model, 0, hp->n_layer, 3, &plan, &err) == ST_OK);
    for (uint32_t l = 0; l < hp->n_layer; l++)
        total += st_model_layer_bytes(model, l);
    for (uint32_t r = 0; r < 3; r++)
        ranks += st_tp_plan_rank_bytes(plan, r);
    /* every rank holds the two f32 norms of each layer; everything else once */
    ST_CHECK(ranks == total + 2ull * hp->n_layer * 2 * hp->n_embd * 4);
    ST_CHECK(st_tp_plan_layer(plan, hp->n_layer, 0) == NULL && st_tp_plan_layer(plan, 0, 3) == NULL);
    const st_tp_layer_t *tl = st_tp_plan_layer(plan, 7, 2);
    ST_REQUIRE(tl);
    ST_CHECK(tl->kv_heads.first == 2 && tl->heads.first == 6 && tl->heads.count == 3);
    ST_CHECK(tl->ff.first == 1024 && tl->ff.count == 512);
    st_tp_plan_destroy(plan);

    memset(&m, 0, sizeof m);
    m.hp = *hp;
    m.L = *st_model_layer(model, 0);
    ST_REQUIRE(run_split(&m, 3, &e) == 0);
    fprintf(stderr, "  SmolLM2 layer 0, 3-way: partials %.3g, end to end %.3g (relative)\n",
            e.part, e.e2e);
    ST_CHECK(e.part <= 1e-5);
    ST_CHECK(e.e2e <= 1e-4);
    st_model_close(model);
}

/* Gemma 3 270M has one KV head: tensor parallelism needs KV-head
 * replication, which is not done, so any n > 1 is refused. */
ST_TEST(gemma3_refused)
{
    st_model_t *model = open_cached("gemma-3-270m-q4_k_m.gguf", NULL);
    st_tp_plan_t *plan = NULL;
    st_error_t err = {{0}};

    if (!model)
        ST_SKIP("gemma-3-270m-q4_k_m.gguf not in ~/.cache/strata (scripts/fetch-model.sh gemma3)");
    ST_CHECK(st_tp_plan_create(model, 0, st_model_hparams(model)->n_layer, 2, &plan, &err) ==
             ST_ERR_UNSUPPORTED);
    ST_CHECK_MSG(strstr(err.msg, "1 KV heads do not divide over 2 ranks"), "%s", err.msg);
    ST_REQUIRE(st_tp_plan_create(model, 0, st_model_hparams(model)->n_layer, 1, &plan, &err) ==
               ST_OK);
    st_tp_plan_destroy(plan);
    st_model_close(model);
}

int main(void)
{
    return st_test_main();
}

