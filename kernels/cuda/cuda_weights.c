/*
 * cuda_weights.c - weight upload for the CUDA backend and the map from the
 * model's tensor views to their device copies.
 *
 * Device forms (cu_weight_t.wtype):
 *   - quantized matrices (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K,
 *     Q5_K, Q6_K: every block type st_dtype_valid accepts) keep the file's
 *     GGUF blocks, byte for byte (CU_W_Q). The kernels of cuda_qmv.cu read
 *     them in place: decode streams the type's own bytes per weight
 *     (0.5625 for Q4_0 and Q4_K) instead of bf16's 2. Large batches
 *     dequantize tiles of rows to bf16 for cuBLAS; the tile buffer is
 *     sized here, by the uploads, so the ops allocate nothing.
 *     STRATA_CUDA_WEIGHTS=bf16 restores the previous form (dequantized to
 *     bf16 on upload), for comparison on a GPU;
 *   - f16 and bf16 matrices are copied as they are (the tensor cores take
 *     both); f32 matrices are stored as bf16, via the reference routine;
 *   - 1-D tensors (norm weights) become f32.
 *
 * Upload runs through two pinned staging buffers: the host fills one while
 * the copy engine drains the other.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"
#include "st_dtype.h"
#include "st_log.h"
#include "st_util.h"

static size_t wmap_slot(const cu_ctx_t *c, const st_tensor_t *t)
{
    uint64_t h = (uint64_t)(uintptr_t)t * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (c->wmap_cap - 1);
}

static cu_weight_t *wmap_find(const cu_ctx_t *c, const st_tensor_t *t)
{
    if (!c->wmap_cap)
        return NULL;
    for (size_t i = wmap_slot(c, t);; i = (i + 1) & (c->wmap_cap - 1)) {
        if (c->wmap[i].key == t)
            return &c->wmap[i];
        if (!c->wmap[i].key)
            return NULL;
    }
}

/* Room for one more entry (load factor <= 1/2). */
static st_status_t wmap_reserve(cu_ctx_t *c, st_error_t *err)
{
    cu_weight_t *old = c->wmap, *nw;
    size_t old_cap = c->wmap_cap, cap = old_cap ? old_cap : 64;

    while ((c->wmap_n + 1) * 2 > cap)
        cap *= 2;
    if (cap == old_cap)
        return ST_OK;
    nw = calloc(cap, sizeof *nw);
    if (!nw)
        return st_error_set(err, ST_ERR_NOMEM, "cuda weights: out of memory for the tensor map");
    c->wmap = nw;
    c->wmap_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].key)
            continue;
        size_t j = wmap_slot(c, old[i].key);
        while (nw[j].key)
            j = (j + 1) & (cap - 1);
        nw[j] = old[i];
    }
    free(old);
    return ST_OK;
}

/* cu_qtype_t spells the GGUF numbers again for the device code, which
 * sees no project header. */
#define SAME_NUM(a, b) ((int)(a) == (int)(b))
_Static_assert(SAME_NUM(CU_Q4_0, ST_DTYPE_Q4_0) && SAME_NUM(CU_Q4_1, ST_DTYPE_Q4_1) &&
               SAME_NUM(CU_Q5_0, ST_DTYPE_Q5_0) && SAME_NUM(CU_Q5_1, ST_DTYPE_Q5_1) &&
               SAME_NUM(CU_Q8_0, ST_DTYPE_Q8_0) && SAME_NUM(CU_Q2_K, ST_DTYPE_Q2_K) &&
               SAME_NUM(CU_Q3_K, ST_DTYPE_Q3_K) && SAME_NUM(CU_Q4_K, ST_DTYPE_Q4_K) &&
               SAME_NUM(CU_Q5_K, ST_DTYPE_Q5_K) && SAME_NUM(CU_Q6_K, ST_DTYPE_Q6_K),
               "cu_qtype_t must match st_dtype_t");
#undef SAME_NUM

/* 1 when the quantized kernels read this type in place. */
static int has_qkernel(st_dtype_t type)
{
    switch (type) {
    case ST_DTYPE_Q4_0: case ST_DTYPE_Q4_1: case ST_DTYPE_Q5_0: case ST_DTYPE_Q5_1:
    case ST_DTYPE_Q8_0: case ST_DTYPE_Q2_K: case ST_DTYPE_Q3_K: case ST_DTYPE_Q4_K:
    case ST_DTYPE_Q5_K: case ST_DTYPE_Q6_K:
        return 1;
    default:
        return 0;
    }
}

/* Converts `rows` rows of t starting at `r0` into dst in device form. */
static void convert_rows(const st_tensor_t *t, cu_wtype_t wt, uint64_t r0, uint64_t rows,
                         float *tmp, void *dst)
{
    const uint8_t *src = (const uint8_t *)t->data + r0 * t->row_bytes;
    uint64_t cols = t->ne[0];
    int same = wt == CU_W_Q || (wt == CU_W_F32 && t->type == ST_DTYPE_F32) ||
               (wt == CU_W_F16 && t->type == ST_DTYPE_F16) ||
               (wt == CU_W_BF16 && t->type == ST_DTYPE_BF16);

    if (same) {
        memcpy(dst, src, (size_t)(rows * t->row_bytes));
        return;
    }
    for (uint64_t r = 0; r < rows; r++) {
        st_dtype_dequantize_row(t->type, src + r * t->row_bytes, tmp, cols);
        if (wt == CU_W_F32) {
            memcpy((float *)dst + r * cols, tmp, (size_t)cols * sizeof(float));
        } else {
            uint16_t *o = (uint16_t *)dst + r * cols;
            for (uint64_t j = 0; j < cols; j++)
                o[j] = st_f32_to_bf16(tmp[j]);
        }
    }
}

/* Grows the bf16 tile buffer of the large-batch path to hold `rows` rows
 * of `cols` (capped at CU_DEQ_TILE_BYTES; at least one row). */
static st_status_t tile_reserve(cu_ctx_t *c, const char *name, uint64_t cols, uint64_t rows,
                                st_error_t *err)
{
    const uint64_t row16 = cols * 2u, fit = CU_DEQ_TILE_BYTES / row16;   /* caller: fit >= 1 */
    const uint64_t want = (rows < fit ? rows : fit) * row16;
    cudaError_t e;

    if (want <= c->w16_bytes)
        return ST_OK;
    /* A queued matmul may still read the old tile. */
    if ((e = cudaStreamSynchronize(c->stream)) != cudaSuccess)
        return st_error_set(err, ST_ERR_BACKEND, "cuda weights: %s", cudaGetErrorString(e));
    cudaFree(c->w16);
    c->w16 = NULL;
    c->w16_bytes = 0;
    if ((e = cudaMalloc(&c->w16, (size_t)want)) != cudaSuccess) {
        (void)cudaGetLastError();
        c->w16 = NULL;
        return st_error_set(err, ST_ERR_NOMEM, "cuda weights: tensor '%s': cannot allocate a "
                            "%llu-byte dequantization tile (%s)", name, (unsigned long long)want,
                            cudaGetErrorString(e));
    }
    c->w16_bytes = (size_t)want;
    return ST_OK;
}

/* Uploads one tensor into a new map entry. */
static st_status_t upload(cu_ctx_t *c, const st_tensor_t *t, st_error_t *err)
{
    const char *name = t->name ? t->name : "?";
    uint64_t rows = 1, dev_bytes, dev_row, per_chunk;
    cu_weight_t w;
    float *tmp = NULL;
    st_status_t st;
    cudaError_t e;
    int k = 0;

    /* The views come from a validated model file, but this is the last
     * place before raw memory is read: check the shape adds up. */
    if (!t->data || !st_dtype_valid(t->type) || t->n_dims < 1 || t->n_dims > ST_TENSOR_MAX_DIMS ||
        t->ne[0] == 0 || t->row_bytes != st_dtype_row_bytes(t->type, t->ne[0]))
        return st_error_set(err, ST_ERR_FORMAT, "cuda weights: tensor '%s' has no data or an "
                            "inconsistent shape", name);
    for (uint32_t d = 1; d < t->n_dims; d++)
        if (st_mul_overflow_u64(rows, t->ne[d], &rows))
            return st_error_set(err, ST_ERR_OVERFLOW, "cuda weights: tensor '%s' too large", name);
    if (rows * t->row_bytes != t->nbytes)
        return st_error_set(err, ST_ERR_FORMAT, "cuda weights: tensor '%s': %llu bytes, expected "
                            "%llu", name, (unsigned long long)t->nbytes,
                            (unsigned long long)(rows * t->row_bytes));

    memset(&w, 0, sizeof w);
    w.key = t;
    w.cols = t->ne[0];
    w.rows = rows;
    if (t->n_dims == 1)
        w.wtype = CU_W_F32;
    else if (t->type == ST_DTYPE_F16)
        w.wtype = CU_W_F16;
    else if (has_qkernel(t->type) && !c->weights_bf16)
        w.wtype = CU_W_Q;
    else
        w.wtype = CU_W_BF16;
    w.qtype = w.wtype == CU_W_Q ? (cu_qtype_t)t->type : CU_Q4_0;
    dev_row = w.wtype == CU_W_Q ? t->row_bytes : w.cols * (w.wtype == CU_W_F32 ? 4u : 2u);
    w.row_bytes = dev_row;
    /* A quantized row must also fit the bf16 tile of the large-batch path. */
    if (dev_row > CU_STAGE_BYTES || (w.wtype == CU_W_Q && w.cols * 2u > CU_DEQ_TILE_BYTES) ||
        st_mul_overflow_u64(dev_row, rows, &dev_bytes))
        return st_error_set(err, ST_ERR_UNSUPPORTED, "cuda weights: tensor '%s': rows of %llu "
                            "elements are too long", name, (unsigned long long)w.cols);
    if ((st = wmap_reserve(c, err)) != ST_OK)
        return st;
    if (w.wtype == CU_W_Q && (st = tile_reserve(c, name, w.cols, rows, err)) != ST_OK)
        return st;
    if (!(tmp = malloc((size_t)w.cols * sizeof(float))))
        return st_error_set(err, ST_ERR_NOMEM, "cuda weights: out of memory");
    e = cudaMalloc(&w.dev, (size_t)dev_bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        st = st_error_set(err, ST_ERR_NOMEM, "cuda weights: tensor '%s': cannot allocate %llu "
                          "device bytes (%s)", name, (unsigned long long)dev_bytes,
                          cudaGetErrorString(e));
        goto err_tmp;
    }

    per_chunk = CU_STAGE_BYTES / dev_row;
    for (uint64_t r0 = 0; r0 < rows; r0 += per_chunk, k ^= 1) {
        uint64_t n = ST_MIN(per_chunk, rows - r0);
        /* The buffer's previous copy must be done before it is refilled. */
        if ((e = cudaEventSynchronize(c->stage_ev[k])) != cudaSuccess)
            goto err_cuda;
        convert_rows(t, w.wtype, r0, n, tmp, c->stage[k]);
        if ((e = cudaMemcpyAsync((uint8_t *)w.dev + r0 * dev_row, c->stage[k], (size_t)(n * dev_row),
                                 cudaMemcpyHostToDevice, c->stream)) != cudaSuccess ||
            (e = cudaEventRecord(c->stage_ev[k], c->stream)) != cudaSuccess)
            goto err_cuda;
    }
    free(tmp);
    {
        size_t i = wmap_slot(c, t);
        while (c->wmap[i].key)
            i = (i + 1) & (c->wmap_cap - 1);
        c->wmap[i] = w;
        c->wmap_n++;
    }
    c->weight_bytes += dev_bytes;
    if (w.wtype == CU_W_Q)
        c->weight_q_bytes += dev_bytes;
    return ST_OK;

err_cuda:
    st = st_error_set(err, ST_ERR_BACKEND, "cuda weights: tensor '%s': upload failed: %s", name,
                      cudaGetErrorString(e));
    (void)cudaStreamSynchronize(c->stream);
    cudaFree(w.dev);
err_tmp:
    free(tmp);
    return st;
}

st_status_t cu_weights_load(void *ctx, const st_tensor_t *const *tensors, size_t n,
                            st_error_t *err)
{
    cu_ctx_t *c = ctx;
    st_status_t st;
    cudaError_t e;

    if (c->status != ST_OK) {
        st = c->status;
        c->status = ST_OK;
        return st_error_set(err, st, "%s", c->err.msg);
    }
    if ((e = cudaSetDevice(c->device)) != cudaSuccess)
        return st_error_set(err, ST_ERR_BACKEND, "cuda weights: cudaSetDevice: %s",
                            cudaGetErrorString(e));
    for (size_t i = 0; i < n; i++) {
        /* NULL entries and repeats (a tied output head) are skipped. */
        if (!tensors[i] || wmap_find(c, tensors[i]))
            continue;
        if ((st = upload(c, tensors[i], err)) != ST_OK)
            return st;
    }
    /* The staging buffers are reused by the next call; and a stage that
     * starts computing right after loading must see whole weights. */
    if ((e = cudaStreamSynchronize(c->stream)) != cudaSuccess)
        return st_error_set(err, ST_ERR_BACKEND, "cuda weights: upload failed: %s",
                            cudaGetErrorString(e));
    st_debug("cuda", "weights on device: %.1f MB in %zu tensors (%.1f MB as quantized blocks), "
             "dequantization tile %.1f MB", (double)c->weight_bytes / 1e6, c->wmap_n,
             (double)c->weight_q_bytes / 1e6, (double)c->w16_bytes / 1e6);
    return ST_OK;
}

/* An entry for t aliasing whole rows of an uploaded tensor that holds t's
 * bytes, with the same type and row length (its device form is then the
 * one upload would choose for t). Returns 1 when one was added. The scan
 * runs once per view, at its first use. */
static int alias_view(cu_ctx_t *c, const st_tensor_t *t)
{
    const uint8_t *d = t->data;
    st_error_t err;

    if (!d || t->n_dims < 2 || t->row_bytes == 0 || t->nbytes % t->row_bytes != 0)
        return 0;
    for (size_t i = 0; i < c->wmap_cap; i++) {
        const cu_weight_t *p = &c->wmap[i];
        const st_tensor_t *k = p->key;
        const uint8_t *kd;
        cu_weight_t w;

        if (!k || p->alias || k->n_dims < 2 || k->type != t->type || k->ne[0] != t->ne[0] ||
            k->row_bytes != t->row_bytes)
            continue;
        kd = k->data;
        if (d < kd || d + t->nbytes > kd + k->nbytes || (size_t)(d - kd) % k->row_bytes != 0)
            continue;
        w = *p;
        w.key = t;
        w.dev = (uint8_t *)p->dev + (size_t)(d - kd) / k->row_bytes * p->row_bytes;
        w.rows = t->nbytes / t->row_bytes;
        w.alias = 1;
        if (wmap_reserve(c, &err) != ST_OK)   /* may move the entries: p is stale after */
            return 0;
        {
            size_t j = wmap_slot(c, t);
            while (c->wmap[j].key)
                j = (j + 1) & (c->wmap_cap - 1);
            c->wmap[j] = w;
            c->wmap_n++;
        }
        return 1;
    }
    return 0;
}

const cu_weight_t *cu_weight_get(cu_ctx_t *c, const st_tensor_t *t)
{
    const cu_weight_t *w = wmap_find(c, t);
    st_error_t err;

    if (ST_LIKELY(w != NULL))
        return w;
    if (!t) {
        cu_fail(c, ST_ERR_INVALID, "cuda: NULL weight tensor");
        return NULL;
    }
    if (alias_view(c, t))
        return wmap_find(c, t);
    st_debug("cuda", "tensor '%s' was not in weights_load; uploading it now",
             t->name ? t->name : "?");
    if (upload(c, t, &err) != ST_OK) {
        cu_fail(c, ST_ERR_BACKEND, "%s", err.msg);
        return NULL;
    }
    return wmap_find(c, t);
}

void cu_weights_free(cu_ctx_t *c)
{
    for (size_t i = 0; i < c->wmap_cap; i++)
        if (c->wmap[i].key && !c->wmap[i].alias)
            cudaFree(c->wmap[i].dev);
    free(c->wmap);
    c->wmap = NULL;
    c->wmap_cap = c->wmap_n = 0;
    c->weight_bytes = c->weight_q_bytes = 0;
    cudaFree(c->w16);
    c->w16 = NULL;
    c->w16_bytes = 0;
}
