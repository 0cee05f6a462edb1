/*
 * cuda_impl.h - internals of the CUDA backend, shared by its C host code
 * (cuda_backend.c, cuda_weights.c); the device code sees only
 * cuda_kern.h.
 *
 * The split is deliberate: everything that validates, allocates or decides
 * is plain C compiled with the project's warnings and sanitizers; the .cu
 * files hold only kernels and thin launchers that return the launch's
 * cudaError_t. The launchers are extern "C" so the C side calls them
 * directly.
 *
 * Errors: the table's compute ops return void, so a failure inside one is
 * recorded in the context (cu_fail, first error wins, logged once) and
 * later ops become no-ops until ->sync or ->to_host returns the status and
 * clears it. A CUDA fault that poisons the device context keeps failing on
 * every later call, which is what the caller then sees.
 */
#ifndef ST_CUDA_IMPL_H
#define ST_CUDA_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "cuda_kern.h"
#include "st_error.h"
#include "st_kernels.h"
#include "st_status.h"
#include "st_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Pinned staging buffers for weight upload: two, used alternately so the
 * host converts one chunk while the copy engine moves the other. */
#define CU_STAGE_BYTES (32u << 20)

/* Large-batch matmuls on quantized weights dequantize row tiles of W to
 * bf16 into one scratch buffer of at most this size and run cuBLAS on
 * each tile (docs/CUDA.md). 64 MiB is 8192 rows of 4096 columns. */
#define CU_DEQ_TILE_BYTES (64u << 20)

typedef struct cu_weight {
    const st_tensor_t *key;     /* the model's tensor view (NULL: empty slot) */
    void              *dev;     /* device copy */
    cu_wtype_t         wtype;   /* device form; CU_W_Q: the file's blocks */
    cu_qtype_t         qtype;   /* block type when wtype is CU_W_Q */
    uint64_t           row_bytes; /* bytes of one device row */
    uint64_t           cols;    /* ne[0] */
    uint64_t           rows;    /* ne[1] * ne[2] * ne[3] */
    int                alias;   /* dev lies inside another entry's copy (a view): not freed */
} cu_weight_t;

typedef struct cu_ctx {
    int              device;
    cudaStream_t     stream;
    cublasHandle_t   blas;
    void            *blas_ws;       /* cuBLAS workspace, fixed at create */
    size_t           blas_ws_bytes;
    cudaMemPool_t    pool;          /* activations and KV caches */
    int              have_pool;
    int              n_sm;
    uint32_t         max_batch, max_cols;

    st_status_t      status;        /* sticky error of the void ops */
    st_error_t       err;

    /* Index arrays (token ids, positions, slots): pinned host copy, device
     * copy, and the host contents last sent, so the per-layer calls of one
     * forward pass (same pos/slot arrays) upload once. */
    int32_t         *h_idx;         /* pinned, CU_IDX_KINDS * max_batch */
    int32_t         *d_idx;         /* device, same shape */
    int32_t         *shadow;        /* malloc, same shape */
    uint32_t         shadow_n[CU_IDX_KINDS];
    cudaEvent_t      idx_ev[CU_IDX_KINDS];

    void            *x16;           /* matmul input in 16 bits: max_batch * max_cols */
    void            *w16;           /* bf16 tile of a quantized W (large batches) */
    size_t           w16_bytes;     /* its size: grown by uploads, <= CU_DEQ_TILE_BYTES */
    int              weights_bf16;  /* STRATA_CUDA_WEIGHTS=bf16: dequantize on upload */
    float           *att_part;      /* CU_ATT_PART_ROWS * max_cols */
    float           *att_ml;        /* CU_ATT_PART_ROWS * max_cols */

    cu_weight_t     *wmap;          /* open addressing on the tensor pointer */
    size_t           wmap_cap, wmap_n;
    uint64_t         weight_bytes;  /* device bytes of uploaded weights */
    uint64_t         weight_q_bytes; /* of which quantized blocks */
    void            *stage[2];      /* pinned upload staging */
    cudaEvent_t      stage_ev[2];

    char             desc[192];
} cu_ctx_t;

/* ---- error helpers (cuda_backend.c) ---- */

/* Records the first error of the void ops and logs it; later ones are dropped. */
void cu_fail(cu_ctx_t *c, st_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 1 when e is cudaSuccess, else records "cuda: what: <error string>" and returns 0. */
int  cu_ok(cu_ctx_t *c, cudaError_t e, const char *what);
int  cu_blas_ok(cu_ctx_t *c, cublasStatus_t s, const char *what);

/* ---- launch parameters (cuda_backend.c) ---- */

/* What rope_ex and attention launch for the table's arguments: the same
 * checks and derived values (frequency base, YaRN range; widths, stride,
 * split plan for a device of n_sm SMs with part_floats floats of each
 * partial buffer). No device access: the host test
 * (tests/cuda/test_cuda_ext.c) replays the kernels under exactly these.
 * The device pointers of the index arrays and partial buffers are left
 * NULL; attention expects positions and slots already checked. */
st_status_t cu_rope_prepare(const st_rope_args_t *r, cu_rope_launch_t *L, st_error_t *err);
st_status_t cu_attn_prepare(const st_attn_args_t *a, int n_sm, size_t part_floats,
                            cu_attn_launch_t *L, st_error_t *err);

/* ---- weights (cuda_weights.c) ---- */

st_status_t cu_weights_load(void *ctx, const st_tensor_t *const *tensors, size_t n,
                            st_error_t *err);
/* The device copy of t. A tensor weights_load did not see is either a
 * view of rows of one it did (the per-expert and per-head matrices of a
 * 3-D tensor, st_bind_views): then it aliases those rows of the uploaded
 * copy; or it is uploaded now (a synchronous, allocating path meant for
 * tests and tools). NULL after cu_fail. */
const cu_weight_t *cu_weight_get(cu_ctx_t *c, const st_tensor_t *t);
void        cu_weights_free(cu_ctx_t *c);

#ifdef __cplusplus
}
#endif

#endif /* ST_CUDA_IMPL_H */
