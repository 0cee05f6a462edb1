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

/* Element type of a weight as stored on the device. Matrices are 16-bit
 * (the tensor-core input types), 1-D tensors (norm weights) are f32. */
typedef enum cu_wtype { CU_W_F32 = 0, CU_W_F16 = 1, CU_W_BF16 = 2 } cu_wtype_t;

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
