/*
 * cpu_backend.c - the CPU backend's ops table: create/destroy, memory, and
 * every op except matmul (matmul.c).
 *
 * Small ops (one token's rmsnorm, rope or attention over a short context)
 * run on the calling thread: waking the pool would cost more than the op.
 * Larger ones are split over the pool by rows, tokens or (token, head), so
 * that each output element is computed by exactly one thread with the same
 * code whatever the thread count.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu_ext.h"
#include "cpu_impl.h"
#include "pool.h"
#include "st_log.h"

#define CPU_DEFAULT_MAX_BATCH 512u
#define CPU_DEFAULT_MAX_COLS  8192u
/* Elementwise work below which an op stays on the caller. */
#define CPU_SERIAL_ELEMS 32768

/* sin/cos of the last rope call: one forward pass rotates q and k of every
 * layer at the same positions, so 2 * n_layer calls share one table.
 * Allocated on the first rope call (its size depends on rope_dim). */
typedef struct rope_cache {
    float   *cs, *sn;        /* [max_batch][cap_half] */
    int32_t *pos;            /* [max_batch] positions the table holds */
    int      n, half, cap_half;
    double   inv_freq_base;  /* with half: the table's rope_dim and theta */
    float    freq_scale;
} rope_cache_t;

typedef struct cpu_ctx {
    st_cpu_isa_t            isa;
    st_cpu_kernels_t        kt;       /* this level's kernels (a copy) */
    const st_cpu_kernels_t *k;        /* &kt */
    st_pool_t              *pool;
    int                     n_threads;
    st_cpu_mm_t             mm;
    uint32_t                max_batch;
    rope_cache_t            rope;
    char                    desc[96];
} cpu_ctx_t;

/* ---- lifetime ---- */

/* STRATA_ACT_BITS: 16 (default) quantizes activations for integer matmuls
 * in two 8-bit levels, 8 in one (see cpu_impl.h). Read once here, so the
 * per-op path never looks at the environment. */
static st_status_t act_bits_select(int *out, st_error_t *err)
{
    const char *e = getenv("STRATA_ACT_BITS");
    if (!e || !*e || !strcmp(e, "16")) {
        *out = 16;
        return ST_OK;
    }
    if (!strcmp(e, "8")) {
        *out = 8;
        return ST_OK;
    }
    return st_error_set(err, ST_ERR_INVALID, "STRATA_ACT_BITS='%.32s': expected 8 or 16", e);
}

static st_status_t cpu_create(const st_backend_params_t *p, void **out, st_error_t *err)
{
    st_backend_params_t prm = {0};
    st_status_t status;
    cpu_ctx_t *c;
    int act_bits = 16;

    if (!p || p->size < offsetof(st_backend_params_t, n_threads) + sizeof(int))
        return st_error_set(err, ST_ERR_INVALID, "cpu backend: params missing or size %u too small",
                            p ? p->size : 0u);
    memcpy(&prm, p, ST_MIN((size_t)p->size, sizeof prm));
    if (prm.n_threads <= 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        prm.n_threads = ncpu > 0 ? (int)ST_MIN(ncpu, 256L) : 1;
    }
    if (prm.n_threads > 1024)
        return st_error_set(err, ST_ERR_RANGE, "cpu backend: n_threads %d out of range 1..1024",
                            prm.n_threads);
    if (prm.max_batch == 0)
        prm.max_batch = CPU_DEFAULT_MAX_BATCH;
    if (prm.max_cols == 0)
        prm.max_cols = CPU_DEFAULT_MAX_COLS;
    if (prm.max_batch > (1u << 20) || prm.max_cols > (1u << 24))
        return st_error_set(err, ST_ERR_RANGE, "cpu backend: max_batch %u / max_cols %u too large",
                            prm.max_batch, prm.max_cols);

    status = act_bits_select(&act_bits, err);
    if (status != ST_OK)
        return status;
    c = calloc(1, sizeof *c);
    if (!c)
        return st_error_set(err, ST_ERR_NOMEM, "cpu backend: out of memory");
    status = st_cpu_isa_select(&c->isa, err);
    if (status != ST_OK)
        goto err_ctx;
    st_cpu_kernels_get(c->isa, &c->kt);
    c->k = &c->kt;
    c->n_threads = prm.n_threads;
    c->max_batch = prm.max_batch;
    status = st_pool_create(c->n_threads, &c->pool, err);
    if (status != ST_OK)
        goto err_ctx;
    status = st_cpu_mm_init(&c->mm, c->k, c->pool, c->n_threads, act_bits, prm.max_batch,
                            prm.max_cols, err);
    if (status != ST_OK)
        goto err_pool;
    snprintf(c->desc, sizeof c->desc, "cpu %s, %d thread%s, %d-bit activations",
             st_cpu_isa_name(c->isa), c->n_threads, c->n_threads == 1 ? "" : "s", act_bits);
    *out = c;
    return ST_OK;

err_pool:
    st_pool_destroy(c->pool);
err_ctx:
    free(c);
    return status;
}

static void cpu_destroy(void *ctx)
{
    cpu_ctx_t *c = ctx;
    if (!c)
        return;
    st_cpu_mm_fini(&c->mm);
    st_pool_destroy(c->pool);
    free(c->rope.cs);
    free(c->rope.sn);
    free(c->rope.pos);
    free(c);
}

static const char *cpu_describe(void *ctx)
{
    return ((cpu_ctx_t *)ctx)->desc;
}

/* ---- memory: host memory, 64-byte aligned for the SIMD loads ----
 *
 * Every block is an anonymous mapping with one header page in front that
 * records the mapping's size. Mappings are zero-filled by the kernel and
 * become resident only as they are written, so a KV cache sized for a long
 * context costs memory only for the positions actually filled (the decode
 * benchmark's peak-RSS budget depends on it; memset on a malloc'd block
 * would make all of it resident at once). Blocks are allocated at stage
 * creation, never per token, so the system-call cost does not matter. */

#define CPU_HDR 4096u

static void *cpu_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    size_t n = ST_ALIGN_UP(bytes ? bytes : 1, (size_t)CPU_HDR);
    if (n < bytes || n > SIZE_MAX - CPU_HDR)
        return NULL;
    uint8_t *p = mmap(NULL, n + CPU_HDR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memcpy(p, &n, sizeof(n));
    return p + CPU_HDR;
}

static void cpu_free(void *ctx, void *ptr)
{
    size_t n;
    (void)ctx;
    if (!ptr)
        return;
    uint8_t *base = (uint8_t *)ptr - CPU_HDR;
    memcpy(&n, base, sizeof(n));
    munmap(base, n + CPU_HDR);
}

static st_status_t cpu_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    if (bytes && dst != src)
        memmove(dst, src, bytes);
    return ST_OK;
}

static st_status_t cpu_sync(void *ctx)
{
    (void)ctx;   /* every CPU op completes before it returns */
    return ST_OK;
}

/* ---- a generic "split n items over the pool" helper ---- */

typedef struct items_job {
    void      (*fn)(void *arg, int i0, int i1);
    void       *arg;
    int         n;
    int         chunk;
    _Atomic int next;
} items_job_t;

static void items_worker(void *arg, int ith, int nth)
{
    items_job_t *j = arg;
    int c;
    (void)ith; (void)nth;
    while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) * j->chunk < j->n)
        j->fn(j->arg, c * j->chunk, ST_MIN((c + 1) * j->chunk, j->n));
}

/* fn over [0, n) in chunks of `chunk` items; on the caller when serial. */
static void run_items(cpu_ctx_t *c, int n, int chunk, int serial,
                      void (*fn)(void *arg, int i0, int i1), void *arg)
{
    if (serial || c->n_threads == 1 || n <= chunk) {
        fn(arg, 0, n);
        return;
    }
    items_job_t j = { .fn = fn, .arg = arg, .n = n, .chunk = chunk };
    atomic_init(&j.next, 0);
    st_pool_run(c->pool, items_worker, &j, 0);
}

/* ---- get_rows ---- */

static void cpu_get_rows(void *ctx, const st_tensor_t *emb, const int32_t *ids, int n, float *out)
{
    cpu_ctx_t *c = ctx;
    const int dim = (int)emb->ne[0];
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * dim;
        if (ids[i] < 0 || (uint64_t)ids[i] >= emb->ne[1]) {
            /* The executor validates token ids; this guards the mapping. */
            st_error("kernels", "get_rows: id %d outside 0..%llu", ids[i],
                     (unsigned long long)emb->ne[1] - 1);
            memset(o, 0, (size_t)dim * sizeof *o);
            continue;
        }
        c->k->dequant_row(emb->type, (const uint8_t *)emb->data + (size_t)ids[i] * emb->row_bytes,
                          o, dim);
    }
}

/* ---- rmsnorm ---- */

typedef struct norm_job {
    const st_cpu_kernels_t *k;
    const float *x, *w;
    float       *out;
    float        eps;
    int          dim;
} norm_job_t;

static void norm_rows(void *arg, int i0, int i1)
{
    norm_job_t *j = arg;
    for (int i = i0; i < i1; i++) {
        const float *x = j->x + (size_t)i * j->dim;
        double ms = (double)j->k->sumsq_f32(x, j->dim) / j->dim;
        float s = (float)(1.0 / sqrt(ms + (double)j->eps));
        j->k->scale_mul(x, j->w, s, j->out + (size_t)i * j->dim, j->dim);
    }
}

static void cpu_rmsnorm(void *ctx, const float *x, const st_tensor_t *w, float eps, int n, int dim,
                        float *out)
{
    cpu_ctx_t *c = ctx;
    if (w->type != ST_DTYPE_F32 || w->ne[0] < (uint64_t)dim) {
        st_error("kernels", "rmsnorm: weight '%s' is %s[%llu], need f32[%d]",
                 w->name ? w->name : "?", st_dtype_name(w->type), (unsigned long long)w->ne[0], dim);
        for (size_t i = 0; i < (size_t)n * (size_t)dim; i++)
            out[i] = NAN;
        return;
    }
    norm_job_t j = { c->k, x, w->data, out, eps, dim };
    run_items(c, n, 4, (size_t)n * (size_t)dim < CPU_SERIAL_ELEMS, norm_rows, &j);
}

/* ---- matmul ---- */

static void cpu_matmul(void *ctx, const st_tensor_t *w, const float *x, int n, float *out)
{
    cpu_ctx_t *c = ctx;
    st_cpu_mm_run(&c->mm, w, x, n, out);
}

static void cpu_matmul_multi(void *ctx, int n_w, const st_tensor_t *const *w, const float *x,
                             int n, float *const *out)
{
    cpu_ctx_t *c = ctx;
    st_cpu_mm_run_multi(&c->mm, n_w, w, x, n, out);
}

/* ---- rope ---- */

typedef struct rope_job {
    float         *x;
    const int32_t *pos;
    int            n_heads, head_dim, half;
    double         inv_freq_base;   /* theta^(-2/rope_dim) */
    double         freq_scale;
    float         *cs, *sn;         /* table rows, `stride` floats apart */
    int            stride;
    int            fill;            /* compute the table rows first */
} rope_job_t;

/* Angles pos * freq_scale * theta^(-2j/rope_dim), with theta^(-2j/rope_dim)
 * as a running product (relative error ~3e-14 after 256 steps); sin/cos in
 * double because angles reach thousands of radians. */
static void rope_fill_row(const rope_job_t *j, int i)
{
    float *cs = j->cs + (size_t)i * j->stride, *sn = j->sn + (size_t)i * j->stride;
    double f = (double)j->pos[i] * j->freq_scale;
    for (int jj = 0; jj < j->half; jj++) {
        cs[jj] = (float)cos(f);
        sn[jj] = (float)sin(f);
        f *= j->inv_freq_base;
    }
}

/* Rotates pairs [p0, p0 + cnt) of every head of one token. */
static void rope_apply(float *xt, int n_heads, int head_dim, int p0, int cnt, const float *cs,
                       const float *sn)
{
    for (int h = 0; h < n_heads; h++) {
        float *v = xt + (size_t)h * head_dim + 2 * p0;
        for (int jj = 0; jj < cnt; jj++) {
            float x0 = v[2 * jj], x1 = v[2 * jj + 1];
            v[2 * jj] = x0 * cs[jj] - x1 * sn[jj];
            v[2 * jj + 1] = x0 * sn[jj] + x1 * cs[jj];
        }
    }
}

static void rope_tokens(void *arg, int i0, int i1)
{
    rope_job_t *j = arg;
    for (int i = i0; i < i1; i++) {
        if (j->fill)
            rope_fill_row(j, i);
        rope_apply(j->x + (size_t)i * j->n_heads * j->head_dim, j->n_heads, j->head_dim, 0,
                   j->half, j->cs + (size_t)i * j->stride, j->sn + (size_t)i * j->stride);
    }
}

/* Points job->cs/sn at cached rows (fill = 0) or at rows to fill; returns 0
 * when the cache cannot hold this call. */
static int rope_cache_bind(cpu_ctx_t *c, rope_job_t *j, int n, float freq_scale)
{
    rope_cache_t *rc = &c->rope;
    if ((uint32_t)n > c->max_batch || j->half == 0)
        return 0;
    if (j->half > rc->cap_half) {
        size_t rows = c->max_batch;
        float *cs = malloc(rows * (size_t)j->half * sizeof *cs);
        float *sn = malloc(rows * (size_t)j->half * sizeof *sn);
        int32_t *pos = rc->pos ? rc->pos : malloc(rows * sizeof *pos);
        if (!cs || !sn || !pos) {
            free(cs);
            free(sn);
            if (!rc->pos)
                free(pos);
            return 0;
        }
        free(rc->cs);
        free(rc->sn);
        rc->cs = cs;
        rc->sn = sn;
        rc->pos = pos;
        rc->cap_half = j->half;
        rc->n = 0;
    }
    j->cs = rc->cs;
    j->sn = rc->sn;
    j->stride = rc->cap_half;
    j->fill = !(rc->n == n && rc->half == j->half && rc->inv_freq_base == j->inv_freq_base &&
                rc->freq_scale == freq_scale && memcmp(rc->pos, j->pos, (size_t)n * 4) == 0);
    if (j->fill) {
        memcpy(rc->pos, j->pos, (size_t)n * 4);
        rc->n = n;
        rc->half = j->half;
        rc->inv_freq_base = j->inv_freq_base;
        rc->freq_scale = freq_scale;
    }
    return 1;
}

#define ROPE_LOCAL_PAIRS 64   /* sin/cos on the stack when the cache cannot help */

/* Same values as rope_fill_row, a window of pairs at a time. */
static void rope_tokens_uncached(void *arg, int i0, int i1)
{
    const rope_job_t *j = arg;
    float cs[ROPE_LOCAL_PAIRS], sn[ROPE_LOCAL_PAIRS];
    for (int i = i0; i < i1; i++) {
        float *xt = j->x + (size_t)i * j->n_heads * j->head_dim;
        double f = (double)j->pos[i] * j->freq_scale;
        for (int p0 = 0; p0 < j->half; p0 += ROPE_LOCAL_PAIRS) {
            int cnt = ST_MIN(ROPE_LOCAL_PAIRS, j->half - p0);
            for (int jj = 0; jj < cnt; jj++) {
                cs[jj] = (float)cos(f);
                sn[jj] = (float)sin(f);
                f *= j->inv_freq_base;
            }
            rope_apply(xt, j->n_heads, j->head_dim, p0, cnt, cs, sn);
        }
    }
}

static void cpu_rope(void *ctx, float *x, int n, int n_heads, int head_dim, int rope_dim,
                     const int32_t *pos, float theta, float freq_scale)
{
    cpu_ctx_t *c = ctx;
    if (rope_dim > head_dim)
        rope_dim = head_dim;
    rope_job_t j = {
        .x = x, .pos = pos, .n_heads = n_heads, .head_dim = head_dim,
        .half = rope_dim / 2,
        .inv_freq_base = pow((double)theta, -2.0 / (double)rope_dim),
        .freq_scale = freq_scale,
    };
    if (n <= 0 || j.half <= 0)
        return;
    if (rope_cache_bind(c, &j, n, freq_scale))
        run_items(c, n, 4, n < 8, rope_tokens, &j);
    else
        run_items(c, n, 4, n < 8, rope_tokens_uncached, &j);
}

/* ---- kv_store ---- */

/* F16 and Q8_0 rows are converted here with the reference rounding
 * (st_dtype_quantize_row): kv_dim values per token and layer, next to the
 * matmuls that produced them, so it is not worth a kernel per level. */
static void cpu_kv_store(void *ctx, const float *k, const float *v, int n, int kv_dim,
                         const int32_t *slot, const int32_t *pos, void *k_cache, void *v_cache,
                         int n_ctx, uint32_t kv_type)
{
    const size_t rb = st_dtype_row_bytes(kv_type, (uint64_t)kv_dim);
    (void)ctx;
    if (!st_kv_type_valid(kv_type) || rb == 0) {
        st_error("kernels", "kv_store: rows of %d values cannot be stored as %s", kv_dim,
                 st_dtype_name(kv_type));
        return;
    }
    for (int i = 0; i < n; i++) {
        if (slot[i] < 0 || pos[i] < 0 || pos[i] >= n_ctx) {
            st_error("kernels", "kv_store: token %d at slot %d pos %d outside the cache (n_ctx %d)",
                     i, slot[i], pos[i], n_ctx);
            continue;
        }
        size_t off = ((size_t)slot[i] * (size_t)n_ctx + (size_t)pos[i]) * rb;
        st_dtype_quantize_row(kv_type, k + (size_t)i * kv_dim, (uint8_t *)k_cache + off,
                              (uint64_t)kv_dim);
        /* MLA stores its one latent row through both pointers. */
        if (v_cache != k_cache || v != k)
            st_dtype_quantize_row(kv_type, v + (size_t)i * kv_dim, (uint8_t *)v_cache + off,
                                  (uint64_t)kv_dim);
    }
}

/* ---- attention ---- */

#define ATT_BLOCK 64     /* positions scored at once (stack buffer) */
#define ATT_ROW_MAX 1024 /* widest F16/Q8_0 head row decoded on the stack (MLA: 576) */

typedef struct att_job {
    const st_cpu_kernels_t *k;
    const st_attn_args_t   *a;
} att_job_t;

static void att_one(const st_cpu_kernels_t *k, const st_attn_args_t *a, int t, int h)
{
    const int hd = a->head_dim, hv = a->head_dim_v > 0 ? a->head_dim_v : hd;
    const int kv_dim = a->kv_stride > 0 ? a->kv_stride : a->n_head_kv * hd;
    const int g = h / (a->n_head / a->n_head_kv);
    const uint32_t ty = a->kv_type;
    const size_t rb = st_dtype_row_bytes(ty, (uint64_t)kv_dim);
    const float *q = a->q + ((size_t)t * a->n_head + h) * hd;
    float *o = a->out + ((size_t)t * a->n_head + h) * hv;
    const int p = a->pos[t];
    /* A sliding window starts the scan at the oldest position it keeps. */
    const int p0 = a->window > 0 && p + 1 > a->window ? p + 1 - a->window : 0;
    float sc[ATT_BLOCK], m = -INFINITY, l = 0.0f;
    float kbuf[ATT_ROW_MAX], vbuf[ATT_ROW_MAX];

    memset(o, 0, (size_t)hv * sizeof *o);
    if (a->slot[t] < 0 || p < 0 || p >= a->n_ctx) {
        st_error("kernels", "attention: token %d at slot %d pos %d outside the cache (n_ctx %d)",
                 t, a->slot[t], p, a->n_ctx);
        return;
    }
    size_t base = (size_t)a->slot[t] * (size_t)a->n_ctx * rb +
                  st_dtype_row_bytes(ty, (uint64_t)g * hd);
    const uint8_t *kc = (const uint8_t *)a->k_cache + base, *vc = (const uint8_t *)a->v_cache + base;

    if (k->attn_head && hd % 16 == 0 && hd <= ST_ATTN_HEAD_MAX_DIM && hv == hd &&
        a->softcap <= 0.0f) {
        k->attn_head(ty, q, kc + (size_t)p0 * rb, vc + (size_t)p0 * rb, rb, p + 1 - p0, hd,
                     a->scale, o);
        return;
    }

    /* Online softmax over blocks of positions: the running output is
     * rescaled once per block when the maximum grows. F16/Q8_0 rows are
     * decoded one head row at a time into kbuf/vbuf (L1), never the cache. */
    for (int j0 = p0; j0 <= p; j0 += ATT_BLOCK) {
        int cnt = ST_MIN(ATT_BLOCK, p + 1 - j0);
        float bm = -INFINITY;
        for (int jj = 0; jj < cnt; jj++) {
            const uint8_t *kr = kc + (size_t)(j0 + jj) * rb;
            const float *kf = (const float *)kr;
            if (ty != ST_DTYPE_F32) {
                k->kv_load(ty, kr, kbuf, hd);
                kf = kbuf;
            }
            float x = k->dot_f32(q, kf, hd) * a->scale;
            if (a->softcap > 0.0f)
                x = a->softcap * tanhf(x / a->softcap);
            sc[jj] = x;
            bm = fmaxf(bm, x);
        }
        float nm = fmaxf(m, bm);
        float corr = m == -INFINITY ? 0.0f : expf(m - nm);
        l = l * corr + k->exp_sum(sc, nm, cnt);
        for (int jj = 0; jj < cnt; jj++) {
            const uint8_t *vr = vc + (size_t)(j0 + jj) * rb;
            const float *vf = (const float *)vr;
            if (ty != ST_DTYPE_F32) {
                k->kv_load(ty, vr, vbuf, hv);
                vf = vbuf;
            }
            k->axpby(o, jj == 0 ? corr : 1.0f, vf, sc[jj], hv);
        }
        m = nm;
    }
    float inv = 1.0f / l;
    for (int d = 0; d < hv; d++)
        o[d] *= inv;
}

static void att_items(void *arg, int i0, int i1)
{
    att_job_t *j = arg;
    for (int i = i0; i < i1; i++)
        att_one(j->k, j->a, i / j->a->n_head, i % j->a->n_head);
}

static void cpu_attention(void *ctx, const st_attn_args_t *a)
{
    cpu_ctx_t *c = ctx;
    uint64_t work = 0;
    if (a->n_head_kv <= 0 || a->n_head % a->n_head_kv != 0) {
        st_error("kernels", "attention: n_head %d is not a multiple of n_head_kv %d", a->n_head,
                 a->n_head_kv);
        return;
    }
    if (a->kv_type != ST_DTYPE_F32) {
        const int hd = a->head_dim, hv = a->head_dim_v > 0 ? a->head_dim_v : hd;
        const int kv_dim = a->kv_stride > 0 ? a->kv_stride : a->n_head_kv * hd;
        const int blk = a->kv_type == ST_DTYPE_Q8_0 ? 32 : 1;
        if (!st_kv_type_valid(a->kv_type) || hd > ATT_ROW_MAX || hv > ATT_ROW_MAX || hd % blk ||
            hv % blk || kv_dim % blk) {
            st_error("kernels", "attention: a %s cache cannot hold heads of %d/%d in rows of %d",
                     st_dtype_name(a->kv_type), hd, hv, kv_dim);
            return;
        }
    }
    for (int t = 0; t < a->n_tokens; t++)
        work += (uint64_t)(a->pos[t] > 0 ? a->pos[t] + 1 : 1);
    work *= (uint64_t)a->n_head * (uint64_t)a->head_dim;
    att_job_t j = { c->k, a };
    run_items(c, a->n_tokens * a->n_head, 1, work < CPU_SERIAL_ELEMS, att_items, &j);
}

/* ---- elementwise ---- */

typedef struct ew_job {
    const st_cpu_kernels_t *k;
    const float *a, *b;
    float       *out;
} ew_job_t;

#define EW_CHUNK 4096   /* floats per work item: 16 KiB, cache-line aligned */

static void swiglu_items(void *arg, int i0, int i1)
{
    ew_job_t *j = arg;
    size_t s = (size_t)i0 * EW_CHUNK, e = (size_t)i1 * EW_CHUNK;
    j->k->swiglu(j->a + s, j->b + s, j->out + s, e - s);
}

static void geglu_items(void *arg, int i0, int i1)
{
    ew_job_t *j = arg;
    size_t s = (size_t)i0 * EW_CHUNK, e = (size_t)i1 * EW_CHUNK;
    j->k->geglu(j->a + s, j->b + s, j->out + s, e - s);
}

static void add_items(void *arg, int i0, int i1)
{
    ew_job_t *j = arg;
    size_t s = (size_t)i0 * EW_CHUNK, e = (size_t)i1 * EW_CHUNK;
    j->k->add(j->out + s, j->b + s, e - s);
}

static void cpu_swiglu(void *ctx, const float *gate, const float *up, size_t n, float *out)
{
    cpu_ctx_t *c = ctx;
    size_t full = n / EW_CHUNK * EW_CHUNK;
    ew_job_t j = { c->k, gate, up, out };
    if (n < CPU_SERIAL_ELEMS || full / EW_CHUNK > (size_t)INT32_MAX) {
        c->k->swiglu(gate, up, out, n);
        return;
    }
    run_items(c, (int)(full / EW_CHUNK), 1, 0, swiglu_items, &j);
    if (full < n)
        c->k->swiglu(gate + full, up + full, out + full, n - full);
}

static void cpu_geglu(void *ctx, const float *gate, const float *up, size_t n, float *out)
{
    cpu_ctx_t *c = ctx;
    size_t full = n / EW_CHUNK * EW_CHUNK;
    ew_job_t j = { c->k, gate, up, out };
    if (n < CPU_SERIAL_ELEMS || full / EW_CHUNK > (size_t)INT32_MAX) {
        c->k->geglu(gate, up, out, n);
        return;
    }
    run_items(c, (int)(full / EW_CHUNK), 1, 0, geglu_items, &j);
    if (full < n)
        c->k->geglu(gate + full, up + full, out + full, n - full);
}

static void cpu_add(void *ctx, float *x, const float *y, size_t n)
{
    cpu_ctx_t *c = ctx;
    size_t full = n / EW_CHUNK * EW_CHUNK;
    ew_job_t j = { c->k, NULL, y, x };
    if (n < CPU_SERIAL_ELEMS || full / EW_CHUNK > (size_t)INT32_MAX) {
        c->k->add(x, y, n);
        return;
    }
    run_items(c, (int)(full / EW_CHUNK), 1, 0, add_items, &j);
    if (full < n)
        c->k->add(x + full, y + full, n - full);
}

static const st_backend_ops_t cpu_ops = {
    .abi_version = ST_BACKEND_ABI_VERSION,
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .describe = cpu_describe,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .sync = cpu_sync,
    .weights_load = NULL,
    .get_rows = cpu_get_rows,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .matmul_multi = cpu_matmul_multi,
    .features = ST_BE_ATTN_EX | ST_BE_KV_F16 | ST_BE_KV_Q8_0,
    .rope_ex = st_cpu_rope_ex,
    .add_row = st_cpu_add_row,
    .geglu = cpu_geglu,
    .scale = st_cpu_scale,
    .softcap = st_cpu_softcap,
    .copy2d = st_cpu_copy2d,
    .axpy = st_cpu_axpy,
};

const st_cpu_kernels_t *st_cpu_ctx_kernels(void *ctx)
{
    return ((cpu_ctx_t *)ctx)->k;
}

const st_backend_ops_t *st_backend_cpu_ops(void)
{
    return &cpu_ops;
}
