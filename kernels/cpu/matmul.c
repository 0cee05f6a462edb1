/*
 * matmul.c - the CPU matmul driver: picks the kernel for the weight type
 * and batch size, quantizes the activations once per call and splits the
 * output rows over the pool.
 *
 * Q5_0, Q5_1 and Q2_K..Q6_K keep float activations (kgemv, cpu_impl.h);
 * levels without kgemv take the F16 path (dequantize a row, dot).
 *
 * Determinism: rows are handed out in chunks whose boundaries are multiples
 * of 16 (one cache line of f32 outputs) through an atomic counter, so any
 * thread may compute any chunk but every output element is computed by one
 * thread with the same instructions in the same order whatever the thread
 * count. Kernel choice depends only on the type and n, never on threads.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_impl.h"
#include "pool.h"
#include "st_log.h"

/* Below this many weight blocks x tokens, waking the pool costs more than
 * it saves (a fork/join is ~1 us; a block takes a few ns). */
#define MM_SERIAL_BLOCKS 2048

enum { MM_QGEMV, MM_QGEMM, MM_FLOAT, MM_KQ };

#define MM_MAX_MULTI 4   /* weights one dispatch may share an input between */

/* One weight of a job: its rows are chunks [c0, c0 + n_chunks) of the
 * job's common chunk counter. */
typedef struct mm_part {
    const st_tensor_t *w;
    float             *out;
    int                rows;
    int                chunk;
    int                c0;
    int                n_chunks;
} mm_part_t;

typedef struct mm_job {
    st_cpu_mm_t       *mm;
    int                kind;
    st_qmm_args_t      qa;         /* integer kinds; w, out, ldo set per part */
    const float       *x;          /* activations of this slice */
    int                with_dx16;
    int                repack;     /* also write xq2 (n_pad tokens) */
    int                tok_grain;  /* tokens per claim of the quantize phase */
    int                cols;
    int                n_parts;
    int                n_chunks;   /* over all parts */
    mm_part_t          part[MM_MAX_MULTI];
    _Atomic int        next_tok;   /* activation groups handed out */
    _Atomic int        done_tok;   /* activation rows quantized */
    _Atomic int        next_chunk;
} mm_job_t;

/* Types the level's qgemv reads against quantized activations; qgemm
 * (tiles) takes only the first three. */
static int is_tile_type(int type)
{
    return type == ST_DTYPE_Q4_0 || type == ST_DTYPE_Q4_1 || type == ST_DTYPE_Q8_0;
}

static int is_int_type(const st_cpu_kernels_t *k, int type)
{
    return is_tile_type(type) || (k->qgemv_q5 && (type == ST_DTYPE_Q5_0 || type == ST_DTYPE_Q5_1));
}

static size_t tscratch_need(const st_cpu_kernels_t *k, int two, uint32_t max_cols)
{
    st_q8_layout_t L;
    size_t need = (size_t)max_cols * sizeof(float) * (k->kgemv ? ST_KQ_ROWS : 1);
    st_q8_layout((int)max_cols, two, &L);
    if (k->qgemm_scratch)
        need = ST_MAX(need, k->qgemm_scratch(&L));
    return ST_ALIGN_UP(need + 64, (size_t)64);
}

static void mm_free_buffers(st_cpu_mm_t *mm)
{
    if (mm->tscratch)
        for (int i = 0; i < mm->n_threads; i++)
            free(mm->tscratch[i]);
    free(mm->tscratch);
    free(mm->xq);
    free(mm->xq2);
    mm->tscratch = NULL;
    mm->xq = NULL;
    mm->xq2 = NULL;
}

static st_status_t mm_alloc_buffers(st_cpu_mm_t *mm, uint32_t max_batch, uint32_t max_cols,
                                    st_error_t *err)
{
    st_q8_layout_t L;
    uint64_t xq_bytes;

    st_q8_layout((int)max_cols, mm->act_two, &L);
    if (st_mul_overflow_u64(L.stride, max_batch, &xq_bytes) || xq_bytes > (1ull << 40))
        return st_error_set(err, ST_ERR_OVERFLOW, "cpu backend: max_batch %u x max_cols %u too large",
                            max_batch, max_cols);
    mm->xq = aligned_alloc(64, ST_ALIGN_UP((size_t)xq_bytes, (size_t)64));
    mm->tscratch = calloc((size_t)mm->n_threads, sizeof *mm->tscratch);
    if (!mm->xq || !mm->tscratch)
        goto nomem;
    mm->xq_bytes = (size_t)xq_bytes;
    if (mm->k->repack) {
        int n_pad = (int)ST_ALIGN_UP(max_batch, (uint32_t)mm->k->repack_align);
        mm->xq2 = aligned_alloc(64, ST_ALIGN_UP(mm->k->repack_bytes(n_pad, &L), (size_t)64));
        if (!mm->xq2)
            goto nomem;
    }
    mm->tscratch_bytes = tscratch_need(mm->k, mm->act_two, max_cols);
    for (int i = 0; i < mm->n_threads; i++) {
        mm->tscratch[i] = aligned_alloc(64, mm->tscratch_bytes);
        if (!mm->tscratch[i])
            goto nomem;
    }
    mm->max_batch = max_batch;
    mm->max_cols = max_cols;
    return ST_OK;
nomem:
    mm_free_buffers(mm);
    return st_error_set(err, ST_ERR_NOMEM, "cpu backend: out of memory for matmul scratch "
                        "(max_batch %u, max_cols %u)", max_batch, max_cols);
}

st_status_t st_cpu_mm_init(st_cpu_mm_t *mm, const st_cpu_kernels_t *k, st_pool_t *pool,
                           int n_threads, int act_bits, uint32_t max_batch, uint32_t max_cols,
                           st_error_t *err)
{
    memset(mm, 0, sizeof *mm);
    mm->k = k;
    mm->pool = pool;
    mm->n_threads = n_threads;
    mm->act_two = act_bits == 16;
    return mm_alloc_buffers(mm, max_batch, ST_ALIGN_UP(max_cols, 256u), err);
}

void st_cpu_mm_fini(st_cpu_mm_t *mm)
{
    mm_free_buffers(mm);
}

/* A matmul wider than params.max_cols is a caller bug; growing the scratch
 * (off the normal path) keeps the result right and says so once per growth. */
static int mm_ensure_cols(st_cpu_mm_t *mm, int cols)
{
    st_error_t err;
    if ((uint32_t)cols <= mm->max_cols)
        return 1;
    st_warn("kernels", "cpu matmul with %d columns exceeds max_cols %u: growing scratch", cols,
            mm->max_cols);
    uint32_t batch = mm->max_batch;
    mm_free_buffers(mm);
    if (mm_alloc_buffers(mm, batch, ST_ALIGN_UP((uint32_t)cols, 256u), &err) != ST_OK) {
        st_error("kernels", "%s", err.msg);
        return 0;
    }
    return 1;
}

/* Quantizes (and repacks) the activations, shared by every thread that
 * joined. Tokens are claimed tok_grain at a time: the repacked layout puts
 * 16 consecutive tokens side by side in each 64-byte line, so claiming one
 * token at a time made two threads write the same lines (false sharing
 * cost more than the repack itself with 2 threads). */
static void mm_quantize(mm_job_t *j)
{
    const st_cpu_kernels_t *k = j->mm->k;
    const int n = j->qa.n, total = j->repack ? j->qa.n_pad : n, grain = j->tok_grain;
    int g;
    while ((g = atomic_fetch_add_explicit(&j->next_tok, 1, memory_order_relaxed)) * grain < total) {
        int t0 = g * grain, t1 = ST_MIN(t0 + grain, total);
        for (int t = t0; t < t1; t++) {
            uint8_t *row = t < n ? j->mm->xq + (size_t)t * j->qa.L.stride : NULL;
            if (row)
                k->quantize_row(j->x + (size_t)t * j->cols, &j->qa.L, row, j->with_dx16);
            if (j->repack)
                k->repack(row, &j->qa.L, t, j->qa.n_pad, t < n, j->mm->xq2);
        }
        atomic_fetch_add_explicit(&j->done_tok, t1 - t0, memory_order_release);
    }
    /* Every row must be quantized before any thread reads the activations. */
    while (atomic_load_explicit(&j->done_tok, memory_order_acquire) < total)
        st_cpu_relax();
}

static void mm_float_chunk(const mm_job_t *j, const mm_part_t *P, int r0, int r1, float *scratch)
{
    const st_cpu_kernels_t *k = j->mm->k;
    const uint8_t *wbase = P->w->data;
    for (int r = r0; r < r1; r++) {
        const uint8_t *src = wbase + (size_t)r * P->w->row_bytes;
        const float *wr = (const float *)src;
        if (P->w->type != ST_DTYPE_F32) {
            k->dequant_row(P->w->type, src, scratch, j->cols);
            wr = scratch;
        }
        for (int t = 0; t < j->qa.n; t++)
            P->out[(size_t)t * P->rows + r] = k->dot_f32(wr, j->x + (size_t)t * j->cols, j->cols);
    }
}

static void mm_worker(void *arg, int ith, int nth)
{
    mm_job_t *j = arg;
    void *scratch = j->mm->tscratch[ith];
    int c, p = 0;
    (void)nth;

    if (j->kind == MM_QGEMV || j->kind == MM_QGEMM)
        mm_quantize(j);
    while ((c = atomic_fetch_add_explicit(&j->next_chunk, 1, memory_order_relaxed)) < j->n_chunks) {
        while (c >= j->part[p].c0 + j->part[p].n_chunks)   /* chunks only grow */
            p++;
        const mm_part_t *P = &j->part[p];
        int r0 = (c - P->c0) * P->chunk, r1 = ST_MIN(r0 + P->chunk, P->rows);
        st_qmm_args_t qa;
        switch (j->kind) {
        case MM_QGEMV:
        case MM_QGEMM:
            qa = j->qa;
            qa.type = P->w->type;
            qa.w = P->w->data;
            qa.w_stride = P->w->row_bytes;
            qa.out = P->out;
            qa.ldo = P->rows;
            if (j->kind == MM_QGEMV)
                j->mm->k->qgemv(&qa, r0, r1, scratch);
            else
                j->mm->k->qgemm(&qa, r0, r1, scratch);
            break;
        case MM_KQ: {
            st_kmm_args_t ka = { .type = P->w->type, .w = P->w->data, .w_stride = P->w->row_bytes,
                                 .cols = j->cols, .x = j->x, .n = j->qa.n, .out = P->out,
                                 .ldo = P->rows };
            j->mm->k->kgemv(&ka, r0, r1, scratch);
            break;
        }
        default:
            mm_float_chunk(j, P, r0, r1, scratch);
            break;
        }
    }
}

/* One dispatch for n_w weights that read the same input rows x (t0 is the
 * slice's first token, for the outputs). The caller checked that the
 * weights share cols and either all are integer types or n_w == 1. */
static void mm_slice(st_cpu_mm_t *mm, int n_w, const st_tensor_t *const *w, const float *x,
                     int n, float *const *out, int t0)
{
    const int cols = (int)w[0]->ne[0];
    const st_cpu_kernels_t *k = mm->k;
    mm_job_t j;
    int nth = mm->n_threads;
    uint64_t blocks = 0;

    memset(&j, 0, sizeof j);
    j.mm = mm;
    j.x = x;
    j.cols = cols;
    j.qa.n = n;
    j.tok_grain = 1;
    if (is_int_type(k, w[0]->type)) {
        j.kind = k->qgemm && n >= k->tile_min_n && is_tile_type(w[0]->type) ? MM_QGEMM : MM_QGEMV;
        j.with_dx16 = j.kind == MM_QGEMM;
        if (j.kind == MM_QGEMM && k->repack && n >= k->repack_min_n) {
            j.repack = 1;
            j.tok_grain = k->repack_align;
            j.qa.n_pad = (int)ST_ALIGN_UP((size_t)n, (size_t)k->repack_align);
            j.qa.xq2 = mm->xq2;
        }
        j.qa.xq = mm->xq;
        st_q8_layout(cols, mm->act_two, &j.qa.L);
    } else if (k->kgemv && st_cpu_kq_type(w[0]->type)) {
        j.kind = MM_KQ;   /* float activations, weights decoded in place */
    } else {
        j.kind = MM_FLOAT;
    }
    for (int i = 0; i < n_w; i++)
        blocks += (uint64_t)w[i]->ne[1] * (uint64_t)(cols / ST_QK + 1) * (uint64_t)n;
    if (blocks < MM_SERIAL_BLOCKS)
        nth = 1;
    j.n_parts = n_w;
    for (int i = 0; i < n_w; i++) {
        mm_part_t *P = &j.part[i];
        const int rows = (int)w[i]->ne[1];
        /* One chunk per thread and weight. Chunks are still claimed
         * dynamically, so a worker that joins late finds its share taken
         * rather than holding the caller up. Finer chunks cost more than
         * the balance they buy: 2-thread decode (bench decode, interleaved
         * runs) gave 213-233 tokens/s with 8 chunks per thread, 204-206
         * with 16, 244-257 with 2 and 251-265 with 1; with a busy loop
         * stealing one core, 113-121 (8), 123-135 (2), 125-128 (1). */
        int target = (rows + nth - 1) / nth;
        P->w = w[i];
        P->rows = rows;
        P->out = out[i] + (size_t)t0 * rows;
        P->chunk = (int)ST_ALIGN_UP((size_t)ST_MAX(target, 16), (size_t)16);
        P->n_chunks = (rows + P->chunk - 1) / P->chunk;
        P->c0 = j.n_chunks;
        j.n_chunks += P->n_chunks;
    }
    st_pool_run(mm->pool, mm_worker, &j, nth);
}

static void mm_fail(int n_w, const st_tensor_t *const *w, int n, float *const *out)
{
    for (int i = 0; i < n_w; i++)
        for (size_t e = 0; e < (size_t)n * (size_t)w[i]->ne[1]; e++)
            out[i][e] = NAN;   /* a visible failure rather than stale values */
}

void st_cpu_mm_run_multi(st_cpu_mm_t *mm, int n_w, const st_tensor_t *const *w, const float *x,
                         int n, float *const *out)
{
    const int cols = n_w > 0 ? (int)w[0]->ne[0] : 0;
    int fuse = n_w <= MM_MAX_MULTI;

    if (n <= 0 || n_w <= 0)
        return;
    for (int i = 0; i < n_w; i++) {
        ST_ASSERT(w[i]->row_bytes == st_dtype_row_bytes(w[i]->type, w[i]->ne[0]));
        /* Integer weights share one quantization of x; float ones do not
         * quantize, so they (and mismatched widths) go one at a time. */
        if ((int)w[i]->ne[0] != cols || !is_int_type(mm->k, w[i]->type) || w[i]->ne[1] == 0 ||
            is_tile_type(w[i]->type) != is_tile_type(w[0]->type))   /* one kernel kind per job */
            fuse = 0;
    }
    if (!fuse) {
        for (int i = 0; i < n_w; i++)
            st_cpu_mm_run(mm, w[i], x, n, out[i]);
        return;
    }
    if (!mm_ensure_cols(mm, cols)) {
        mm_fail(n_w, w, n, out);
        return;
    }
    for (int t0 = 0; t0 < n; t0 += (int)mm->max_batch) {
        int nt = ST_MIN(n - t0, (int)mm->max_batch);
        mm_slice(mm, n_w, w, x + (size_t)t0 * cols, nt, out, t0);
    }
}

void st_cpu_mm_run(st_cpu_mm_t *mm, const st_tensor_t *w, const float *x, int n, float *out)
{
    const int cols = (int)w->ne[0], rows = (int)w->ne[1];

    ST_ASSERT(w->row_bytes == st_dtype_row_bytes(w->type, (uint64_t)cols));
    if (n <= 0 || rows <= 0)
        return;
    if (!mm_ensure_cols(mm, cols)) {
        mm_fail(1, &w, n, &out);
        return;
    }
    /* Batches beyond max_batch go through in slices that fit the scratch. */
    for (int t0 = 0; t0 < n; t0 += (int)mm->max_batch) {
        int nt = ST_MIN(n - t0, (int)mm->max_batch);
        mm_slice(mm, 1, &w, x + (size_t)t0 * cols, nt, &out, t0);
    }
}
