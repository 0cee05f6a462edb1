/*
 * cuda_backend.c - the CUDA backend's table: lifetime, memory, and the host
 * side of every op (validation, index uploads, launch shapes).
 *
 * One instance owns one stream on one device; every op is queued on it in
 * call order, so the executor's sequence of ops needs no other ordering.
 * Scratch (16-bit matmul inputs, attention partials, index arrays, cuBLAS
 * workspace) is sized at create time from max_batch / max_cols; the ops
 * themselves allocate nothing.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"
#include "st_cuda.h"
#include "st_dtype.h"
#include "st_log.h"
#include "st_util.h"

#define CU_DEFAULT_MAX_BATCH 512u
#define CU_DEFAULT_MAX_COLS  16384u
/* cuBLAS workspace: 32 MiB is what NVIDIA recommends for Hopper. */
#define CU_BLAS_WS_BYTES (32u << 20)

/* ---- errors ---- */

void cu_fail(cu_ctx_t *c, st_status_t status, const char *fmt, ...)
{
    va_list ap;
    if (c->status != ST_OK)
        return;
    c->status = status;
    va_start(ap, fmt);
    vsnprintf(c->err.msg, sizeof c->err.msg, fmt, ap);
    va_end(ap);
    st_error("cuda", "%s", c->err.msg);
}

int cu_ok(cu_ctx_t *c, cudaError_t e, const char *what)
{
    if (ST_LIKELY(e == cudaSuccess))
        return 1;
    cu_fail(c, ST_ERR_BACKEND, "cuda: %s: %s (%s)", what, cudaGetErrorString(e),
            cudaGetErrorName(e));
    return 0;
}

int cu_blas_ok(cu_ctx_t *c, cublasStatus_t s, const char *what)
{
    if (ST_LIKELY(s == CUBLAS_STATUS_SUCCESS))
        return 1;
    cu_fail(c, ST_ERR_BACKEND, "cuda: %s: cuBLAS status %d", what, (int)s);
    return 0;
}

/* Binds the calling thread to this instance's device. Every entry point
 * calls it: one thread may drive instances on several GPUs, and the
 * runtime's current device is per thread. Cheap when already current. */
static int cu_use(cu_ctx_t *c)
{
    return cu_ok(c, cudaSetDevice(c->device), "cudaSetDevice");
}

/* Returns the sticky status once and clears it (see cuda_impl.h). */
static st_status_t take_status(cu_ctx_t *c)
{
    st_status_t st = c->status;
    c->status = ST_OK;
    return st;
}

st_status_t st_cuda_device_count(int *out, st_error_t *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        /* cudaGetDeviceCount leaves a sticky "last error"; clear it. */
        (void)cudaGetLastError();
        return st_error_set(err, ST_ERR_NO_DEVICE, "cuda: no usable CUDA device (%s)",
                            e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
    }
    *out = n;
    return ST_OK;
}

/* ---- lifetime ---- */

static void cu_destroy(void *ctx);

static st_status_t cu_create(const st_backend_params_t *p, void **out, st_error_t *err)
{
    st_backend_params_t prm = {0};
    struct cudaDeviceProp prop;
    cu_ctx_t *c;
    int n_dev = 0, pools = 0;
    st_status_t st;
    size_t idx_bytes;

    if (!p || p->size < offsetof(st_backend_params_t, max_cols) + sizeof(uint32_t))
        return st_error_set(err, ST_ERR_INVALID, "cuda backend: params missing or size %u too small",
                            p ? p->size : 0u);
    memcpy(&prm, p, ST_MIN((size_t)p->size, sizeof prm));
    if (prm.max_batch == 0)
        prm.max_batch = CU_DEFAULT_MAX_BATCH;
    if (prm.max_cols == 0)
        prm.max_cols = CU_DEFAULT_MAX_COLS;
    /* Token rows index a grid dimension limited to 65535 (get_rows,
     * kv_store, attention). */
    if (prm.max_batch > 65535u || prm.max_cols > (1u << 24))
        return st_error_set(err, ST_ERR_RANGE, "cuda backend: max_batch %u (<= 65535) / max_cols "
                            "%u too large", prm.max_batch, prm.max_cols);
    st = st_cuda_device_count(&n_dev, err);
    if (st != ST_OK)
        return st;
    if (prm.device < 0 || prm.device >= n_dev)
        return st_error_set(err, ST_ERR_NO_DEVICE, "cuda backend: device %d requested, %d present",
                            prm.device, n_dev);

    c = calloc(1, sizeof *c);
    if (!c)
        return st_error_set(err, ST_ERR_NOMEM, "cuda backend: out of memory");
    c->device = prm.device;
    c->max_batch = prm.max_batch;
    c->max_cols = prm.max_cols;
    {
        /* Device form of quantized weights: their own blocks (default) or
         * bf16 as before the quantized kernels, to compare the two. */
        const char *wf = getenv("STRATA_CUDA_WEIGHTS");
        if (wf && *wf && strcmp(wf, "native") && strcmp(wf, "bf16")) {
            free(c);
            return st_error_set(err, ST_ERR_INVALID, "cuda backend: STRATA_CUDA_WEIGHTS=%s "
                                "(expected native or bf16)", wf);
        }
        c->weights_bf16 = wf && !strcmp(wf, "bf16");
    }

#define CREATE_CHECK(call, what)                                                          \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) {                                                          \
            st = st_error_set(err, e_ == cudaErrorMemoryAllocation ? ST_ERR_NOMEM :       \
                              ST_ERR_BACKEND, "cuda backend: %s: %s", what,               \
                              cudaGetErrorString(e_));                                    \
            goto err_ctx;                                                                 \
        }                                                                                 \
    } while (0)

    CREATE_CHECK(cudaSetDevice(c->device), "cudaSetDevice");
    CREATE_CHECK(cudaGetDeviceProperties(&prop, c->device), "cudaGetDeviceProperties");
    c->n_sm = prop.multiProcessorCount;
    CREATE_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");

    /* A stream-ordered pool that keeps freed memory (release threshold at
     * the maximum), so freeing and re-allocating activations between
     * requests never returns to the driver. */
    CREATE_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, c->device),
                 "cudaDeviceGetAttribute");
    if (pools) {
        struct cudaMemPoolProps pp;
        uint64_t thr = UINT64_MAX;
        memset(&pp, 0, sizeof pp);
        pp.allocType = cudaMemAllocationTypePinned;
        pp.location.type = cudaMemLocationTypeDevice;
        pp.location.id = c->device;
        CREATE_CHECK(cudaMemPoolCreate(&c->pool, &pp), "cudaMemPoolCreate");
        c->have_pool = 1;
        CREATE_CHECK(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &thr),
                     "cudaMemPoolSetAttribute");
    }

    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        st = st_error_set(err, ST_ERR_BACKEND, "cuda backend: cublasCreate failed");
        goto err_ctx;
    }
    c->blas_ws_bytes = CU_BLAS_WS_BYTES;
    CREATE_CHECK(cudaMalloc(&c->blas_ws, c->blas_ws_bytes), "cuBLAS workspace");
    if (cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_bytes) != CUBLAS_STATUS_SUCCESS) {
        st = st_error_set(err, ST_ERR_BACKEND, "cuda backend: cuBLAS stream/workspace setup failed");
        goto err_ctx;
    }

    idx_bytes = (size_t)CU_IDX_KINDS * c->max_batch * sizeof(int32_t);
    CREATE_CHECK(cudaMallocHost((void **)&c->h_idx, idx_bytes), "pinned index buffer");
    CREATE_CHECK(cudaMalloc((void **)&c->d_idx, idx_bytes), "device index buffer");
    c->shadow = malloc(idx_bytes);
    if (!c->shadow) {
        st = st_error_set(err, ST_ERR_NOMEM, "cuda backend: out of memory");
        goto err_ctx;
    }
    for (int k = 0; k < CU_IDX_KINDS; k++)
        CREATE_CHECK(cudaEventCreateWithFlags(&c->idx_ev[k], cudaEventDisableTiming), "cudaEventCreate");
    for (int k = 0; k < 2; k++) {
        CREATE_CHECK(cudaMallocHost(&c->stage[k], CU_STAGE_BYTES), "pinned staging buffer");
        CREATE_CHECK(cudaEventCreateWithFlags(&c->stage_ev[k], cudaEventDisableTiming), "cudaEventCreate");
    }
    CREATE_CHECK(cudaMalloc(&c->x16, (size_t)c->max_batch * c->max_cols * 2u), "matmul scratch");
    CREATE_CHECK(cudaMalloc((void **)&c->att_part, (size_t)CU_ATT_PART_ROWS * c->max_cols * sizeof(float)),
                 "attention scratch");
    CREATE_CHECK(cudaMalloc((void **)&c->att_ml, (size_t)CU_ATT_PART_ROWS * c->max_cols * sizeof(float)),
                 "attention scratch");
#undef CREATE_CHECK

    snprintf(c->desc, sizeof c->desc, "cuda %s (sm_%d%d, %d SMs, %.0f GiB), device %d", prop.name,
             prop.major, prop.minor, c->n_sm, (double)prop.totalGlobalMem / (1u << 30), c->device);
    *out = c;
    return ST_OK;

err_ctx:
    cu_destroy(c);
    return st;
}

static void cu_destroy(void *ctx)
{
    cu_ctx_t *c = ctx;
    if (!c)
        return;
    /* Errors here cannot be reported to anyone; the device may already be
     * in a failed state, and each release is still attempted. */
    (void)cudaSetDevice(c->device);
    if (c->stream)
        (void)cudaStreamSynchronize(c->stream);
    cu_weights_free(c);
    cudaFree(c->att_ml);
    cudaFree(c->att_part);
    cudaFree(c->x16);
    for (int k = 0; k < 2; k++) {
        if (c->stage_ev[k])
            cudaEventDestroy(c->stage_ev[k]);
        cudaFreeHost(c->stage[k]);
    }
    for (int k = 0; k < CU_IDX_KINDS; k++)
        if (c->idx_ev[k])
            cudaEventDestroy(c->idx_ev[k]);
    free(c->shadow);
    cudaFree(c->d_idx);
    cudaFreeHost(c->h_idx);
    if (c->blas)
        cublasDestroy(c->blas);
    cudaFree(c->blas_ws);
    if (c->have_pool)
        cudaMemPoolDestroy(c->pool);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    free(c);
}

static const char *cu_describe(void *ctx)
{
    return ((cu_ctx_t *)ctx)->desc;
}

/* ---- memory ---- */

static void *cu_alloc(void *ctx, size_t bytes)
{
    cu_ctx_t *c = ctx;
    void *p = NULL;
    cudaError_t e;

    if (bytes == 0)
        bytes = 1;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    e = c->have_pool ? cudaMallocFromPoolAsync(&p, bytes, c->pool, c->stream)
                     : cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        /* An allocation failure is the caller's to report (NULL); it must
         * not poison the sticky status of later ops. */
        (void)cudaGetLastError();
        st_debug("cuda", "alloc of %zu bytes failed: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    /* Zeroed as the interface promises, and complete before returning so
     * the memory may be handed to another stream or the transport. */
    e = cudaMemsetAsync(p, 0, bytes, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        cu_ok(c, e, "zeroing a new allocation");
        if (c->have_pool)
            (void)cudaFreeAsync(p, c->stream);
        else
            (void)cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_free(void *ctx, void *ptr)
{
    cu_ctx_t *c = ctx;
    if (!ptr || !cu_use(c))
        return;
    if (c->have_pool)
        cu_ok(c, cudaFreeAsync(ptr, c->stream), "cudaFreeAsync");
    else
        cu_ok(c, cudaFree(ptr), "cudaFree");
}

static st_status_t cu_to_device(void *ctx, void *dst, const void *host_src, size_t bytes)
{
    cu_ctx_t *c = ctx;
    if (c->status != ST_OK || !cu_use(c))
        return take_status(c);
    /* From pageable memory the call returns once the source is staged, so
     * the caller may reuse its buffer at once. */
    if (!cu_ok(c, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->stream),
               "copy to device"))
        return take_status(c);
    return ST_OK;
}

static st_status_t cu_to_host(void *ctx, void *host_dst, const void *src, size_t bytes)
{
    cu_ctx_t *c = ctx;
    if (c->status != ST_OK || !cu_use(c))
        return take_status(c);
    if (!cu_ok(c, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c->stream),
               "copy to host") ||
        !cu_ok(c, cudaStreamSynchronize(c->stream), "stream synchronize"))
        return take_status(c);
    return ST_OK;
}

static st_status_t cu_sync(void *ctx)
{
    cu_ctx_t *c = ctx;
    if (c->status == ST_OK && cu_use(c))
        cu_ok(c, cudaStreamSynchronize(c->stream), "stream synchronize");
    return take_status(c);
}

/* ---- index arrays ---- */

/* Device copy of a host index array of kind `kind` (n <= max_batch). The
 * executor passes the same pos/slot arrays to every layer, so unchanged
 * contents are not sent again. NULL after cu_fail. */
static const int32_t *cu_upload_idx(cu_ctx_t *c, int kind, const int32_t *host, int n)
{
    size_t off = (size_t)kind * c->max_batch;
    size_t bytes = (size_t)n * sizeof(int32_t);

    if (c->shadow_n[kind] == (uint32_t)n && memcmp(c->shadow + off, host, bytes) == 0)
        return c->d_idx + off;
    /* The pinned buffer may still be the source of the previous copy. */
    if (!cu_ok(c, cudaEventSynchronize(c->idx_ev[kind]), "index upload wait"))
        return NULL;
    memcpy(c->h_idx + off, host, bytes);
    if (!cu_ok(c, cudaMemcpyAsync(c->d_idx + off, c->h_idx + off, bytes, cudaMemcpyHostToDevice,
                                  c->stream), "index upload") ||
        !cu_ok(c, cudaEventRecord(c->idx_ev[kind], c->stream), "index upload event"))
        return NULL;
    memcpy(c->shadow + off, host, bytes);
    c->shadow_n[kind] = (uint32_t)n;
    return c->d_idx + off;
}

/* Common entry check of the compute ops: n rows within the sized scratch. */
static int cu_enter(cu_ctx_t *c, int n, const char *op)
{
    if (c->status != ST_OK || !cu_use(c))
        return 0;
    if (n < 0 || (uint32_t)n > c->max_batch) {
        cu_fail(c, ST_ERR_RANGE, "cuda %s: %d rows, backend sized for %u", op, n, c->max_batch);
        return 0;
    }
    return n > 0;
}

/* Entry check of the ops that use no scratch sized by max_batch: any
 * number of rows (per-head norms see n_tokens * n_head of them). */
static int cu_enter_rows(cu_ctx_t *c, int n, const char *op)
{
    if (c->status != ST_OK || !cu_use(c))
        return 0;
    if (n < 0) {
        cu_fail(c, ST_ERR_RANGE, "cuda %s: %d rows", op, n);
        return 0;
    }
    return n > 0;
}

/* Positions and slots come from the network in the cluster: checked here
 * (the executor checks too, but the table may have other callers). */
static int cu_check_pos(cu_ctx_t *c, const int32_t *slot, const int32_t *pos, int n, int n_ctx,
                        const char *op)
{
    for (int i = 0; i < n; i++)
        if (slot[i] < 0 || pos[i] < 0 || pos[i] >= n_ctx) {
            cu_fail(c, ST_ERR_RANGE, "cuda %s: token %d at slot %d pos %d outside the cache "
                    "(n_ctx %d)", op, i, slot[i], pos[i], n_ctx);
            return 0;
        }
    return 1;
}

/* ---- ops ---- */

static void cu_get_rows(void *ctx, const st_tensor_t *emb, const int32_t *ids, int n, float *out)
{
    cu_ctx_t *c = ctx;
    const cu_weight_t *w;
    const int32_t *d_ids;

    if (!cu_enter(c, n, "get_rows") || !(w = cu_weight_get(c, emb)))
        return;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || (uint64_t)ids[i] >= w->rows) {
            cu_fail(c, ST_ERR_RANGE, "cuda get_rows: id %d outside %llu rows of '%s'", ids[i],
                    (unsigned long long)w->rows, emb->name ? emb->name : "?");
            return;
        }
    if (!(d_ids = cu_upload_idx(c, CU_IDX_IDS, ids, n)))
        return;
    if (w->wtype == CU_W_Q)
        cu_ok(c, cu_launch_qdequant(c->stream, w->dev, w->qtype, (size_t)w->row_bytes, d_ids, 0, n,
                                    (int)w->cols, CU_W_F32, out), "get_rows launch");
    else
        cu_ok(c, cu_launch_get_rows(c->stream, w->dev, w->wtype, (int)w->cols, d_ids, n, out),
              "get_rows launch");
}

static void cu_rmsnorm(void *ctx, const float *x, const st_tensor_t *wt, float eps, int n, int dim,
                       float *out)
{
    cu_ctx_t *c = ctx;
    const cu_weight_t *w;

    if (!cu_enter_rows(c, n, "rmsnorm") || !(w = cu_weight_get(c, wt)))
        return;
    if (w->wtype != CU_W_F32 || w->cols != (uint64_t)dim) {
        cu_fail(c, ST_ERR_INVALID, "cuda rmsnorm: weight '%s' is not an f32 vector of %d",
                wt->name ? wt->name : "?", dim);
        return;
    }
    cu_ok(c, cu_launch_rmsnorm(c->stream, x, (const float *)w->dev, eps, n, dim, out),
          "rmsnorm launch");
}

/* Quantized W: batches up to CU_MATVEC_MAX_N read the blocks in place
 * (one warp per row, f32 activations). Larger ones are compute bound:
 * tiles of rows are dequantized to bf16 into c->w16 and multiplied by
 * cuBLAS, each tile writing its rows of out (column-major, ld = rows); the
 * stream orders each tile's GEMM before the next dequantization. */
static void cu_matmul_q(cu_ctx_t *c, const cu_weight_t *w, const float *x, int n, float *out)
{
    const float one = 1.0f, zero = 0.0f;
    const int rows = (int)w->rows, cols = (int)w->cols;
    uint64_t tile_rows;

    if (n <= CU_MATVEC_MAX_N) {
        cu_ok(c, cu_launch_qmatvec(c->stream, w->dev, w->qtype, (size_t)w->row_bytes, x, n, rows,
                                   cols, out), "quantized matvec launch");
        return;
    }
    tile_rows = c->w16 ? c->w16_bytes / (w->cols * 2u) : 0;
    if (ST_UNLIKELY(tile_rows == 0)) {   /* upload sizes the tile for every CU_W_Q */
        cu_fail(c, ST_ERR_BACKEND, "cuda matmul: no dequantization tile for '%s'",
                w->key->name ? w->key->name : "?");
        return;
    }
    if (!cu_ok(c, cu_launch_to16(c->stream, x, (size_t)n * w->cols, CU_W_BF16, c->x16),
               "matmul input conversion"))
        return;
    for (uint64_t r0 = 0; r0 < w->rows; r0 += tile_rows) {
        const int k = (int)ST_MIN(tile_rows, w->rows - r0);
        if (!cu_ok(c, cu_launch_qdequant(c->stream, w->dev, w->qtype, (size_t)w->row_bytes, NULL,
                                         (int)r0, k, cols, CU_W_BF16, c->w16),
                   "dequantization tile launch") ||
            !cu_blas_ok(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, k, n, cols, &one,
                                        c->w16, CUDA_R_16BF, cols, c->x16, CUDA_R_16BF, cols,
                                        &zero, out + r0, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
                        "cublasGemmEx"))
            return;
    }
}

static void cu_matmul(void *ctx, const st_tensor_t *wt, const float *x, int n, float *out)
{
    cu_ctx_t *c = ctx;
    const cu_weight_t *w;
    const float one = 1.0f, zero = 0.0f;
    cudaDataType_t dt;

    if (!cu_enter(c, n, "matmul") || !(w = cu_weight_get(c, wt)))
        return;
    if (w->wtype == CU_W_F32 || w->cols > c->max_cols || w->rows > INT32_MAX) {
        cu_fail(c, ST_ERR_INVALID, "cuda matmul: '%s' (%llu x %llu) is not a matrix this backend "
                "was sized for (max_cols %u)", wt->name ? wt->name : "?",
                (unsigned long long)w->rows, (unsigned long long)w->cols, c->max_cols);
        return;
    }
    if (w->wtype == CU_W_Q) {
        cu_matmul_q(c, w, x, n, out);
        return;
    }
    if (n <= CU_MATVEC_MAX_N) {
        cu_ok(c, cu_launch_matvec(c->stream, w->dev, w->wtype, x, n, (int)w->rows, (int)w->cols,
                                  out), "matvec launch");
        return;
    }
    /* Row-major W[rows][cols] is column-major W^T, so out^T = W x^T is
     * GEMM(op(A) = A^T with A = W^T as stored, B = x^T as stored). */
    dt = w->wtype == CU_W_F16 ? CUDA_R_16F : CUDA_R_16BF;
    if (!cu_ok(c, cu_launch_to16(c->stream, x, (size_t)n * w->cols, w->wtype, c->x16),
               "matmul input conversion"))
        return;
    cu_blas_ok(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, n, (int)w->cols,
                               &one, w->dev, dt, (int)w->cols, c->x16, dt, (int)w->cols, &zero,
                               out, CUDA_R_32F, (int)w->rows, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

static void cu_rope(void *ctx, float *x, int n, int n_heads, int head_dim, int rope_dim,
                    const int32_t *pos, float theta, float freq_scale)
{
    cu_ctx_t *c = ctx;
    const int32_t *d_pos;
    double inv_freq_base;

    if (!cu_enter(c, n, "rope") || rope_dim < 2)
        return;
    /* Same clamping and frequency base as the CPU backend, so both rotate
     * by the same angles. */
    if (rope_dim > head_dim)
        rope_dim = head_dim;
    inv_freq_base = pow((double)theta, -2.0 / (double)rope_dim);
    if (!(d_pos = cu_upload_idx(c, CU_IDX_POS, pos, n)))
        return;
    cu_ok(c, cu_launch_rope(c->stream, x, n, n_heads, head_dim, rope_dim & ~1, d_pos,
                            inv_freq_base, (double)freq_scale), "rope launch");
}

/* The CUDA kernels keep an f32 cache: the table does not declare
 * ST_BE_KV_F16/Q8_0, so a stage asked for another type refuses at load;
 * this check only guards a caller that skipped it. */
static void cu_kv_store(void *ctx, const float *k, const float *v, int n, int kv_dim,
                        const int32_t *slot, const int32_t *pos, void *k_cache, void *v_cache,
                        int n_ctx, uint32_t kv_type)
{
    cu_ctx_t *c = ctx;
    const int32_t *d_slot, *d_pos;

    if (!cu_enter(c, n, "kv_store") || !cu_check_pos(c, slot, pos, n, n_ctx, "kv_store"))
        return;
    if (kv_type != ST_DTYPE_F32) {
        cu_fail(c, ST_ERR_UNSUPPORTED, "cuda kv_store: a %s KV cache is not supported (f32 only)",
                st_dtype_name(kv_type));
        return;
    }
    if (!(d_slot = cu_upload_idx(c, CU_IDX_SLOT, slot, n)) ||
        !(d_pos = cu_upload_idx(c, CU_IDX_POS, pos, n)))
        return;
    cu_ok(c, cu_launch_kv_store(c->stream, k, v, n, kv_dim, d_slot, d_pos, (float *)k_cache,
                                 (float *)v_cache, n_ctx),
          "kv_store launch");
}

st_status_t cu_attn_prepare(const st_attn_args_t *a, int n_sm, size_t part_floats,
                            cu_attn_launch_t *L, st_error_t *err)
{
    const int hv = a->head_dim_v > 0 ? a->head_dim_v : a->head_dim;
    const int stride = a->kv_stride > 0 ? a->kv_stride : a->n_head_kv * a->head_dim;
    int max_span = 0;

    if (a->n_tokens <= 0 || a->n_tokens > 65535 || a->n_head <= 0 || a->n_head > 65535 ||
        a->n_head_kv <= 0 || a->n_head % a->n_head_kv != 0 || a->head_dim <= 0 ||
        a->head_dim > CU_ATT_MAX_HEAD_DIM || hv > CU_ATT_MAX_HEAD_DIM)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "cuda attention: %d tokens, %d heads (%d "
                            "kv) of dim %d, values %d unsupported (dims <= %d)", a->n_tokens,
                            a->n_head, a->n_head_kv, a->head_dim, hv, CU_ATT_MAX_HEAD_DIM);
    if (a->kv_type != ST_DTYPE_F32)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "cuda attention: a %s KV cache is not "
                            "supported (f32 only)", st_dtype_name(a->kv_type));
    /* The last KV head's keys and values must lie within a cache row. */
    if ((int64_t)(a->n_head_kv - 1) * a->head_dim + ST_MAX(a->head_dim, hv) > stride)
        return st_error_set(err, ST_ERR_INVALID, "cuda attention: cache rows of %d floats "
                            "cannot hold %d kv heads of %d (values %d)", stride, a->n_head_kv,
                            a->head_dim, hv);
    for (int i = 0; i < a->n_tokens; i++)
        max_span = ST_MAX(max_span, a->pos[i] + 1 - CU_ATT_FIRST_POS(a->pos[i], a->window));

    memset(L, 0, sizeof *L);
    L->q = a->q;
    L->k_cache = (const float *)a->k_cache;
    L->v_cache = (const float *)a->v_cache;
    L->out = a->out;
    L->n_tokens = a->n_tokens;
    L->n_head = a->n_head;
    L->n_head_kv = a->n_head_kv;
    L->head_dim = a->head_dim;
    L->head_dim_v = hv;
    L->kv_stride = stride;
    L->window = a->window > 0 ? a->window : 0;
    L->n_ctx = a->n_ctx;
    L->scale = a->scale;
    L->softcap = a->softcap > 0.0f ? a->softcap : 0.0f;
    cu_attn_plan(a->n_tokens, a->n_head, hv, max_span, n_sm, part_floats, &L->n_splits,
                 &L->chunk);
    return ST_OK;
}

static void cu_attention(void *ctx, const st_attn_args_t *a)
{
    cu_ctx_t *c = ctx;
    cu_attn_launch_t L;
    st_error_t err;
    st_status_t st;

    if (!cu_enter(c, a->n_tokens, "attention") ||
        !cu_check_pos(c, a->slot, a->pos, a->n_tokens, a->n_ctx, "attention"))
        return;
    if ((st = cu_attn_prepare(a, c->n_sm, (size_t)CU_ATT_PART_ROWS * c->max_cols, &L, &err)) !=
        ST_OK) {
        cu_fail(c, st, "%s", err.msg);
        return;
    }
    L.part_o = c->att_part;
    L.part_ml = c->att_ml;
    if (!(L.slot = cu_upload_idx(c, CU_IDX_SLOT, a->slot, a->n_tokens)) ||
        !(L.pos = cu_upload_idx(c, CU_IDX_POS, a->pos, a->n_tokens)))
        return;
    cu_ok(c, cu_launch_attention(c->stream, &L), "attention launch");
}

static void cu_swiglu(void *ctx, const float *gate, const float *up, size_t n, float *out)
{
    cu_ctx_t *c = ctx;
    if (c->status != ST_OK || n == 0 || !cu_use(c))
        return;
    cu_ok(c, cu_launch_swiglu(c->stream, gate, up, n, out), "swiglu launch");
}

static void cu_add(void *ctx, float *x, const float *y, size_t n)
{
    cu_ctx_t *c = ctx;
    if (c->status != ST_OK || n == 0 || !cu_use(c))
        return;
    cu_ok(c, cu_launch_add(c->stream, x, y, n), "add launch");
}

/* ---- ops for architectures beyond Llama (kernels in cuda_ext.cu) ---- */

st_status_t cu_rope_prepare(const st_rope_args_t *r, cu_rope_launch_t *L, st_error_t *err)
{
    const int half = r->rope_dim / 2;

    /* The CPU backend's limits, refused the same way. */
    if (half <= 0 || half > CU_ROPE_MAX_PAIRS || r->offset < 0 || r->n_heads < 0 ||
        r->offset + r->rope_dim > r->head_stride)
        return st_error_set(err, ST_ERR_INVALID, "cuda rope_ex: rope_dim %d at offset %d does "
                            "not fit a head of %d", r->rope_dim, r->offset, r->head_stride);
    memset(L, 0, sizeof *L);
    L->x = r->x;
    L->n = r->n;
    L->row_stride = r->row_stride;
    L->n_heads = r->n_heads;
    L->head_stride = r->head_stride;
    L->offset = r->offset;
    L->half = half;
    L->neox = r->neox != 0;
    L->inv_base = pow((double)r->theta, -2.0 / (double)r->rope_dim);
    L->freq_scale = r->freq_scale;
    L->ext_factor = r->ext_factor;
    L->mscale = r->mscale;
    if (r->ext_factor != 0.0f)
        cu_rope_yarn_range(r->rope_dim, r->n_ctx_orig, r->beta_fast, r->beta_slow, r->theta,
                           &L->lo, &L->hi);
    return ST_OK;
}

static void cu_rope_ex(void *ctx, const st_rope_args_t *r)
{
    cu_ctx_t *c = ctx;
    cu_rope_launch_t L;
    st_error_t err;
    st_status_t st;

    if (!cu_enter(c, r->n, "rope_ex"))
        return;
    if ((st = cu_rope_prepare(r, &L, &err)) != ST_OK) {
        cu_fail(c, st, "%s", err.msg);
        return;
    }
    if (!(L.pos = cu_upload_idx(c, CU_IDX_POS, r->pos, r->n)))
        return;
    cu_ok(c, cu_launch_rope_ex(c->stream, &L), "rope_ex launch");
}

static void cu_add_row(void *ctx, float *x, const st_tensor_t *b, int n, int dim)
{
    cu_ctx_t *c = ctx;
    const cu_weight_t *w;

    if (!cu_enter_rows(c, n, "add_row") || dim <= 0)
        return;
    /* As the CPU backend: an f32 vector of at least dim (the device copy
     * of any 1-D tensor is f32, so the file's type is what is checked). */
    if (b->type != ST_DTYPE_F32 || b->ne[0] < (uint64_t)dim) {
        cu_fail(c, ST_ERR_INVALID, "cuda add_row: bias '%s' is %s[%llu], need f32[%d]",
                b->name ? b->name : "?", st_dtype_name(b->type), (unsigned long long)b->ne[0],
                dim);
        return;
    }
    if (!(w = cu_weight_get(c, b)))
        return;
    cu_ok(c, cu_launch_add_row(c->stream, x, (const float *)w->dev, n, dim), "add_row launch");
}

/* Common entry of the element-wise ops. */
static int cu_enter_ew(cu_ctx_t *c, size_t n)
{
    return c->status == ST_OK && n > 0 && cu_use(c);
}

static void cu_geglu(void *ctx, const float *gate, const float *up, size_t n, float *out)
{
    cu_ctx_t *c = ctx;
    if (cu_enter_ew(c, n))
        cu_ok(c, cu_launch_geglu(c->stream, gate, up, n, out), "geglu launch");
}

static void cu_scale(void *ctx, float *x, float a, size_t n)
{
    cu_ctx_t *c = ctx;
    if (cu_enter_ew(c, n))
        cu_ok(c, cu_launch_scale(c->stream, x, a, n), "scale launch");
}

static void cu_softcap(void *ctx, float *x, float cap, size_t n)
{
    cu_ctx_t *c = ctx;
    if (cu_enter_ew(c, n))
        cu_ok(c, cu_launch_softcap(c->stream, x, cap, n), "softcap launch");
}

static void cu_copy2d(void *ctx, float *dst, int dst_stride, const float *src, int src_stride,
                      int rows, int cols)
{
    cu_ctx_t *c = ctx;
    if (!cu_enter_rows(c, rows, "copy2d") || cols <= 0)
        return;
    cu_ok(c, cu_launch_copy2d(c->stream, dst, dst_stride, src, src_stride, rows, cols),
          "copy2d launch");
}

static void cu_axpy(void *ctx, float *x, float a, const float *y, size_t n)
{
    cu_ctx_t *c = ctx;
    if (cu_enter_ew(c, n))
        cu_ok(c, cu_launch_axpy(c->stream, x, a, y, n), "axpy launch");
}

static const st_backend_ops_t cuda_ops = {
    .abi_version = ST_BACKEND_ABI_VERSION,
    .name = "cuda",
    .create = cu_create,
    .destroy = cu_destroy,
    .describe = cu_describe,
    .alloc = cu_alloc,
    .free = cu_free,
    .to_device = cu_to_device,
    .to_host = cu_to_host,
    .sync = cu_sync,
    .weights_load = cu_weights_load,
    .get_rows = cu_get_rows,
    .rmsnorm = cu_rmsnorm,
    .matmul = cu_matmul,
    .rope = cu_rope,
    .kv_store = cu_kv_store,
    .attention = cu_attention,
    .swiglu = cu_swiglu,
    .add = cu_add,
    /* window, softcap, head_dim_v and kv_stride: cuda_attn.cu */
    .features = ST_BE_ATTN_EX,
    .rope_ex = cu_rope_ex,
    .add_row = cu_add_row,
    .geglu = cu_geglu,
    .scale = cu_scale,
    .softcap = cu_softcap,
    .copy2d = cu_copy2d,
    .axpy = cu_axpy,
};

const st_backend_ops_t *st_backend_cuda_ops(void)
{
    return &cuda_ops;
}
