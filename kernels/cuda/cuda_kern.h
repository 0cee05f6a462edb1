/*
 * cuda_kern.h - what the CUDA backend's device code (cuda_ops.cu,
 * cuda_attn.cu) shares with its C host code: the device weight types, the
 * kernel limits and the launchers.
 *
 * Kept free of the project's C headers on purpose: the .cu files are C++,
 * and these declarations are all they need. Each launcher only shapes the
 * grid, launches on the given stream and returns cudaGetLastError(); the
 * host side has validated every argument.
 */
#ifndef ST_CUDA_KERN_H
#define ST_CUDA_KERN_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of a weight as stored on the device: quantized matrices
 * keep their GGUF blocks (CU_W_Q, the block type in cu_qtype_t), other
 * matrices are 16-bit (the tensor-core input types), 1-D tensors (norm
 * weights) are f32. */
typedef enum cu_wtype { CU_W_F32 = 0, CU_W_F16 = 1, CU_W_BF16 = 2, CU_W_Q = 3 } cu_wtype_t;

/* Block types the quantized kernels read in place (cuda_qblock.cuh). The
 * numbers are GGUF's, the same as st_dtype_t's (cuda_weights.c checks). */
typedef enum cu_qtype {
    CU_Q4_0 = 2, CU_Q4_1 = 3, CU_Q5_0 = 6, CU_Q5_1 = 7, CU_Q8_0 = 8,
    CU_Q2_K = 10, CU_Q3_K = 11, CU_Q4_K = 12, CU_Q5_K = 13, CU_Q6_K = 14
} cu_qtype_t;

/* Kinds of small host index arrays copied to the device (see cu_upload_idx). */
enum { CU_IDX_IDS = 0, CU_IDX_POS = 1, CU_IDX_SLOT = 2, CU_IDX_KINDS = 3 };

/* Up to this many token rows a matmul runs on the hand-written mat-vec
 * kernel (f32 activations, weights streamed once); above it, cuBLAS. The
 * cut-over is an estimate, not yet measured on a GPU (docs/CUDA.md). */
#define CU_MATVEC_MAX_N 8
/* Attention: largest head dimension the kernels handle (8 per lane). */
#define CU_ATT_MAX_HEAD_DIM 256
/* Attention partial results: (token, split) rows of max_cols floats. */
#define CU_ATT_PART_ROWS 256

cudaError_t cu_launch_get_rows(cudaStream_t s, const void *emb, cu_wtype_t wt, int cols,
                               const int32_t *ids, int n, float *out);
cudaError_t cu_launch_rmsnorm(cudaStream_t s, const float *x, const float *w, float eps, int n,
                              int dim, float *out);
cudaError_t cu_launch_rope(cudaStream_t s, float *x, int n, int n_heads, int head_dim,
                           int rope_dim, const int32_t *pos, double inv_freq_base,
                           double freq_scale);
cudaError_t cu_launch_kv_store(cudaStream_t s, const float *k, const float *v, int n, int kv_dim,
                               const int32_t *slot, const int32_t *pos, float *k_cache,
                               float *v_cache, int n_ctx);
cudaError_t cu_launch_swiglu(cudaStream_t s, const float *gate, const float *up, size_t n,
                             float *out);
cudaError_t cu_launch_add(cudaStream_t s, float *x, const float *y, size_t n);
/* f32 -> f16 or bf16 (wt), n elements. */
cudaError_t cu_launch_to16(cudaStream_t s, const float *x, size_t n, cu_wtype_t wt, void *out);
/* out[t][r] = W[r] . x[t] for t < n <= CU_MATVEC_MAX_N, W 16-bit [rows][cols]. */
cudaError_t cu_launch_matvec(cudaStream_t s, const void *w, cu_wtype_t wt, const float *x, int n,
                             int rows, int cols, float *out);

/* Quantized weights (cuda_qmv.cu): W is rows of row_bytes bytes of qtype
 * blocks, cols a multiple of 32, w 256-byte aligned (cudaMalloc).
 * qmatvec: out[t][r] = W[r] . x[t] for t < n <= CU_MATVEC_MAX_N, one warp
 * per row, f32 activations and accumulation.
 * qdequant: out row i = W row (ids ? ids[i] : r0 + i) for i < n_rows, as
 * f32 (get_rows) or bf16 (the cuBLAS path's tiles; out 16-byte aligned). */
cudaError_t cu_launch_qmatvec(cudaStream_t s, const void *w, cu_qtype_t qt, size_t row_bytes,
                              const float *x, int n, int rows, int cols, float *out);
cudaError_t cu_launch_qdequant(cudaStream_t s, const void *w, cu_qtype_t qt, size_t row_bytes,
                               const int32_t *ids, int r0, int n_rows, int cols, cu_wtype_t out_wt,
                               void *out);

typedef struct cu_attn_launch {
    const float   *q, *k_cache, *v_cache;
    const int32_t *slot, *pos;       /* device */
    float         *out;
    float         *part_o, *part_ml; /* used when n_splits > 1 */
    int            n_tokens, n_head, n_head_kv, head_dim, n_ctx;
    int            n_splits, chunk;  /* positions per split */
    float          scale;
} cu_attn_launch_t;

cudaError_t cu_launch_attention(cudaStream_t s, const cu_attn_launch_t *a);

#ifdef __cplusplus
}
#endif

#endif /* ST_CUDA_KERN_H */
