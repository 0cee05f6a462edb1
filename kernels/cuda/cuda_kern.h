/*
 * cuda_kern.h - what the CUDA backend's device code (cuda_ops.cu,
 * cuda_qmv.cu, cuda_attn.cu, cuda_ext.cu) shares with its C host code: the
 * device weight types, the kernel limits, the launch parameters and the
 * launchers.
 *
 * Kept free of the project's C headers on purpose: the .cu files are C++,
 * and these declarations are all they need. The few static inline
 * functions are host arithmetic both sides need (the attention's split
 * plan, YaRN's range), so the host tests in tests/cuda use the very same. Each launcher only shapes the
 * grid, launches on the given stream and returns cudaGetLastError(); the
 * host side has validated every argument.
 */
#ifndef ST_CUDA_KERN_H
#define ST_CUDA_KERN_H

#include <math.h>
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
/* Attention: largest key width (head_dim) and value width (head_dim_v)
 * the kernels handle, 18 floats per lane: DeepSeek's absorbed MLA rows are
 * kv_lora_rank 512 + rope 64 = 576 wide, values 512. */
#define CU_ATT_MAX_HEAD_DIM 576
/* Attention partial results: (token, split) rows of max_cols floats. */
#define CU_ATT_PART_ROWS 256
/* rope_ex: most rotated pairs per head (the CPU backend's limit too). */
#define CU_ROPE_MAX_PAIRS 2048

/* First position a token at `pos` attends to under a sliding window of
 * `w` positions (w <= 0: none), as the CPU backend's attention. A macro so
 * host C and device code share one spelling. */
#define CU_ATT_FIRST_POS(pos, w) ((w) > 0 && (pos) + 1 > (w) ? (pos) + 1 - (w) : 0)

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
    float         *out;              /* [n_tokens][n_head * head_dim_v] */
    float         *part_o, *part_ml; /* used when n_splits > 1 */
    int            n_tokens, n_head, n_head_kv, head_dim, n_ctx;
    int            head_dim_v;       /* value width (V: first head_dim_v floats of the row) */
    int            kv_stride;        /* floats between cache rows */
    int            window;           /* > 0: positions pos - window + 1 .. pos */
    int            n_splits, chunk;  /* positions per split, from a token's first position */
    float          scale;
    float          softcap;          /* > 0: scores s -> softcap * tanh(s / softcap) */
} cu_attn_launch_t;

/* How the attention cuts each token's positions (first .. pos, at most
 * max_span of them) into splits: enough (token, head, split) blocks for
 * about four per SM, at least 64 positions per split, and the partial
 * results within the scratch (part_floats floats each for part_o and
 * part_ml). Host code; the host test checks the kernels under it. */
static inline void cu_attn_plan(int n_tokens, int n_head, int head_dim_v, int max_span, int n_sm,
                                size_t part_floats, int *n_splits, int *chunk)
{
    const size_t base = (size_t)n_tokens * (size_t)n_head;
    const size_t row = base * (size_t)(head_dim_v > 2 ? head_dim_v : 2);
    size_t want = (4u * (size_t)n_sm + base - 1) / base;
    size_t by_len = ((size_t)max_span + 63) / 64;
    size_t cap = row ? part_floats / row : 1;

    if (want > by_len)
        want = by_len;
    if (want > cap)
        want = cap;
    *n_splits = want > 1 ? (int)want : 1;
    *chunk = (max_span + *n_splits - 1) / *n_splits;
    /* Rounding the chunk up can leave the last splits empty: drop them. */
    if (*chunk > 0)
        *n_splits = (max_span + *chunk - 1) / *chunk;
    if (*n_splits < 1)
        *n_splits = 1;
}

/* Elements per lane of the kernel instance for keys of head_dim and values
 * of head_dim_v floats: 1, 2, 4, 8 or 18; 0 above CU_ATT_MAX_HEAD_DIM. */
static inline int cu_attn_lane_elems(int head_dim, int head_dim_v)
{
    const int w = head_dim > head_dim_v ? head_dim : head_dim_v;
    return w <= 32 ? 1 : w <= 64 ? 2 : w <= 128 ? 4 : w <= 256 ? 8 :
           w <= CU_ATT_MAX_HEAD_DIM ? 18 : 0;
}

cudaError_t cu_launch_attention(cudaStream_t s, const cu_attn_launch_t *a);

/* ---- ops for architectures beyond Llama (cuda_ext.cu, math in
 * cuda_ext.cuh; the CPU reference is kernels/cpu/cpu_ops_ext.c) ---- */

/* rope_ex: the st_rope_args_t of st_kernels.h with what the host derives
 * once per call (the frequency base and YaRN's correction range). */
typedef struct cu_rope_launch {
    float         *x;
    const int32_t *pos;              /* device */
    int            n, row_stride, n_heads, head_stride, offset;
    int            half;             /* rope_dim / 2 pairs, <= CU_ROPE_MAX_PAIRS */
    int            neox;
    double         inv_base;         /* theta^(-2 / rope_dim) */
    double         freq_scale, ext_factor, mscale;
    double         lo, hi;           /* YaRN ramp (ext_factor != 0) */
} cu_rope_launch_t;

/* YaRN's correction range (ggml's rope_yarn_corr_dims), the same
 * arithmetic as st_cpu_rope_ex: pairs below lo keep extrapolated angles,
 * pairs above hi interpolated ones, a linear ramp between. Host code. */
static inline double cu_rope_corr_dim(int n_dims, int n_ctx_orig, double n_rot, double base)
{
    return n_dims * log(n_ctx_orig / (n_rot * 2.0 * 3.14159265358979323846)) / (2.0 * log(base));
}

static inline void cu_rope_yarn_range(int rope_dim, int n_ctx_orig, double beta_fast,
                                      double beta_slow, double theta, double *lo, double *hi)
{
    *lo = fmax(0.0, floor(cu_rope_corr_dim(rope_dim, n_ctx_orig, beta_fast, theta)));
    *hi = fmin(rope_dim - 1.0, ceil(cu_rope_corr_dim(rope_dim, n_ctx_orig, beta_slow, theta)));
}

cudaError_t cu_launch_rope_ex(cudaStream_t s, const cu_rope_launch_t *r);
/* x[i][j] += b[j], n rows of dim */
cudaError_t cu_launch_add_row(cudaStream_t s, float *x, const float *b, int n, int dim);
cudaError_t cu_launch_geglu(cudaStream_t s, const float *gate, const float *up, size_t n,
                            float *out);
cudaError_t cu_launch_scale(cudaStream_t s, float *x, float a, size_t n);
cudaError_t cu_launch_softcap(cudaStream_t s, float *x, float c, size_t n);
cudaError_t cu_launch_copy2d(cudaStream_t s, float *dst, int dst_stride, const float *src,
                             int src_stride, int rows, int cols);
cudaError_t cu_launch_axpy(cudaStream_t s, float *x, float a, const float *y, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* ST_CUDA_KERN_H */
