/*
 * cuda_qmv.cu - kernels that read quantized weights in their GGUF blocks:
 * the small-batch mat-vec (decode) and a dequantizer for embedding rows
 * and for the bf16 tiles of the large-batch (cuBLAS) path.
 *
 * The decode math is in cuda_qblock.cuh, shared with a host test; each
 * kernel is instantiated once per block type so the type's branches are
 * resolved at compile time. Inputs were validated by the C side
 * (cuda_backend.c).
 *
 * Mat-vec: one warp per output row, as the 16-bit kernel in cuda_ops.cu.
 * Lane i decodes units i, i + 32, ... (32 weights each) of the row once
 * and multiplies each with up to CU_MATVEC_MAX_N token rows of f32
 * activations; the warp then sums its lanes. A row is read once per step
 * whatever the batch, at the type's own size (Q4_0 0.5625 bytes a weight,
 * Q4_K 0.5625, Q6_K 0.8203, Q8_0 1.0625) instead of bf16's 2.
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda_kern.h"
#include "cuda_qblock.cuh"

#define QMV_WARPS 8       /* rows per block */
#define QDQ_THREADS 256

__device__ static inline float qmv_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <int T>
__global__ static void __launch_bounds__(QMV_WARPS * 32)
k_qmatvec(const uint8_t *__restrict__ w, size_t row_bytes, const float *__restrict__ x, int n,
          int rows, int cols, int vec, float *__restrict__ out)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * QMV_WARPS + warp;
    float acc[CU_MATVEC_MAX_N];

    if (row >= rows)
        return;
#pragma unroll
    for (int t = 0; t < CU_MATVEC_MAX_N; t++)
        acc[t] = 0.0f;
    cuq_lane_dot<T>(w + (size_t)row * row_bytes, cols, lane, x, n, vec, acc);
#pragma unroll
    for (int t = 0; t < CU_MATVEC_MAX_N; t++) {
        if (t < n) {
            float v = qmv_warp_sum(acc[t]);
            if (lane == 0)
                out[(size_t)t * rows + row] = v;
        }
    }
}

/* One thread per unit of 32 weights: decode, then store 32 f32 or bf16. */
template <int T>
__global__ static void k_qdequant(const uint8_t *__restrict__ w, size_t row_bytes,
                                  const int32_t *__restrict__ ids, int r0, int n_rows, int cols,
                                  int to_bf16, void *__restrict__ out)
{
    const int units = cols / 32;
    const size_t total = (size_t)n_rows * (size_t)units;

    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / (size_t)units), u = (int)(i % (size_t)units);
        const size_t src = ids ? (size_t)ids[r] : (size_t)r0 + (size_t)r;
        const size_t o = (size_t)r * (size_t)cols + (size_t)u * 32;
        float v[32];
        cuq_unit<T>(w + src * row_bytes, u, v);
        if (to_bf16) {
            /* 64 bytes at a 64-byte multiple of the (aligned) tile */
            uint4 *d = reinterpret_cast<uint4 *>(static_cast<__nv_bfloat16 *>(out) + o);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                uint32_t p[4];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    __nv_bfloat162 h = __floats2bfloat162_rn(v[8 * k + 2 * j], v[8 * k + 2 * j + 1]);
                    p[j] = *reinterpret_cast<uint32_t *>(&h);
                }
                d[k] = make_uint4(p[0], p[1], p[2], p[3]);
            }
        } else {
            float *d = static_cast<float *>(out) + o;
#pragma unroll
            for (int j = 0; j < 32; j++)
                d[j] = v[j];
        }
    }
}

template <int T>
static cudaError_t launch_qmatvec(cudaStream_t s, const void *w, size_t row_bytes, const float *x,
                                  int n, int rows, int cols, float *out)
{
    const int vec = ((uintptr_t)x % 16) == 0;
    const unsigned blocks = (unsigned)((rows + QMV_WARPS - 1) / QMV_WARPS);
    k_qmatvec<T><<<blocks, QMV_WARPS * 32, 0, s>>>(static_cast<const uint8_t *>(w), row_bytes, x,
                                                   n, rows, cols, vec, out);
    return cudaGetLastError();
}

template <int T>
static cudaError_t launch_qdequant(cudaStream_t s, const void *w, size_t row_bytes,
                                   const int32_t *ids, int r0, int n_rows, int cols, int to_bf16,
                                   void *out)
{
    const size_t total = (size_t)n_rows * (size_t)(cols / 32);
    size_t blocks = (total + QDQ_THREADS - 1) / QDQ_THREADS;
    /* a grid-stride loop covers the rest */
    blocks = blocks < 1 ? 1 : blocks > 65535u * 16u ? 65535u * 16u : blocks;
    k_qdequant<T><<<(unsigned)blocks, QDQ_THREADS, 0, s>>>(static_cast<const uint8_t *>(w),
                                                           row_bytes, ids, r0, n_rows, cols,
                                                           to_bf16, out);
    return cudaGetLastError();
}

#define QTYPE_CASES(F)                                                                \
    case CU_Q4_0: return F<CU_Q4_0>;                                                  \
    case CU_Q4_1: return F<CU_Q4_1>;                                                  \
    case CU_Q5_0: return F<CU_Q5_0>;                                                  \
    case CU_Q5_1: return F<CU_Q5_1>;                                                  \
    case CU_Q8_0: return F<CU_Q8_0>;                                                  \
    case CU_Q2_K: return F<CU_Q2_K>;                                                  \
    case CU_Q3_K: return F<CU_Q3_K>;                                                  \
    case CU_Q4_K: return F<CU_Q4_K>;                                                  \
    case CU_Q5_K: return F<CU_Q5_K>;                                                  \
    case CU_Q6_K: return F<CU_Q6_K>;

typedef cudaError_t (*qmatvec_fn)(cudaStream_t, const void *, size_t, const float *, int, int, int,
                                  float *);
typedef cudaError_t (*qdequant_fn)(cudaStream_t, const void *, size_t, const int32_t *, int, int,
                                   int, int, void *);

static qmatvec_fn qmatvec_for(cu_qtype_t qt)
{
    switch (qt) {
    QTYPE_CASES(launch_qmatvec)
    }
    return nullptr;
}

static qdequant_fn qdequant_for(cu_qtype_t qt)
{
    switch (qt) {
    QTYPE_CASES(launch_qdequant)
    }
    return nullptr;
}

extern "C" cudaError_t cu_launch_qmatvec(cudaStream_t s, const void *w, cu_qtype_t qt,
                                         size_t row_bytes, const float *x, int n, int rows,
                                         int cols, float *out)
{
    qmatvec_fn f = qmatvec_for(qt);
    return f ? f(s, w, row_bytes, x, n, rows, cols, out) : cudaErrorInvalidValue;
}

extern "C" cudaError_t cu_launch_qdequant(cudaStream_t s, const void *w, cu_qtype_t qt,
                                          size_t row_bytes, const int32_t *ids, int r0,
                                          int n_rows, int cols, cu_wtype_t out_wt, void *out)
{
    qdequant_fn f = qdequant_for(qt);
    if (!f || (out_wt != CU_W_F32 && out_wt != CU_W_BF16))
        return cudaErrorInvalidValue;
    return f(s, w, row_bytes, ids, r0, n_rows, cols, out_wt == CU_W_BF16, out);
}
