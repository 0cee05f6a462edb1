/*
 * cuda_ops.cu - the CUDA backend's element-wise and mat-vec kernels.
 *
 * Each launcher only shapes the grid and returns cudaGetLastError(); inputs
 * were validated by the C side (cuda_backend.c). Activations are f32; the
 * matrices here are 16-bit (f16 as in the file, f32 and, with
 * STRATA_CUDA_WEIGHTS=bf16, quantized ones as bf16). Quantized matrices in
 * their own blocks have their kernels in cuda_qmv.cu.
 *
 * Decode is memory bound: the mat-vec kernel gives each warp one output row,
 * streams that row once in 16-byte loads and reuses it for up to
 * CU_MATVEC_MAX_N tokens, so batch 1..8 reads the weights once per step.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda_kern.h"

#define EW_THREADS 256
#define MV_WARPS 8   /* rows per block */

static unsigned grid_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    /* Grid-stride loops cover the rest; 65535 * 8 blocks is plenty. */
    return (unsigned)(b < 65535u * 8u ? (b ? b : 1) : 65535u * 8u);
}

__device__ static inline float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ static inline float load_w(const void *w, cu_wtype_t wt, size_t i)
{
    switch (wt) {
    case CU_W_F16:  return __half2float(((const __half *)w)[i]);
    case CU_W_BF16: return __bfloat162float(((const __nv_bfloat16 *)w)[i]);
    default:        return ((const float *)w)[i];
    }
}

/* ---- embedding rows ---- */

__global__ static void k_get_rows(const void *emb, cu_wtype_t wt, int cols, const int32_t *ids,
                                  int n, float *out)
{
    int t = blockIdx.y;
    size_t row = (size_t)ids[t] * (size_t)cols;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x)
        out[(size_t)t * cols + j] = load_w(emb, wt, row + (size_t)j);
}

extern "C" cudaError_t cu_launch_get_rows(cudaStream_t s, const void *emb, cu_wtype_t wt,
                                          int cols, const int32_t *ids, int n, float *out)
{
    dim3 grid((unsigned)((cols + EW_THREADS - 1) / EW_THREADS), (unsigned)n);
    k_get_rows<<<grid, EW_THREADS, 0, s>>>(emb, wt, cols, ids, n, out);
    return cudaGetLastError();
}

/* ---- RMSNorm: one block per row ---- */

__global__ static void k_rmsnorm(const float *x, const float *w, float eps, int dim, float *out)
{
    __shared__ float part[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *orow = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;

    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        ss += xr[j] * xr[j];
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
        v = warp_sum(v);
        if (threadIdx.x == 0)
            part[0] = v;
    }
    __syncthreads();
    /* Same formula as the CPU backend: x / sqrt(mean(x^2) + eps) * w. In
     * place (x == out) is safe: each element is read and written by the
     * same thread, after the reduction. */
    float inv = 1.0f / sqrtf(part[0] / (float)dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        orow[j] = xr[j] * inv * w[j];
}

extern "C" cudaError_t cu_launch_rmsnorm(cudaStream_t s, const float *x, const float *w,
                                         float eps, int n, int dim, float *out)
{
    k_rmsnorm<<<(unsigned)n, EW_THREADS, 0, s>>>(x, w, eps, dim, out);
    return cudaGetLastError();
}

/* ---- RoPE: one thread per (token, pair), looping over heads ---- */

__global__ static void k_rope(float *x, int n, int n_heads, int head_dim, int half,
                              const int32_t *pos, double inv_freq_base, double freq_scale)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n * half)
        return;
    int t = idx / half, j = idx % half;
    /* Angles reach thousands of radians: computed in double like the CPU
     * backend (H100/H200 have full-rate-enough FP64 for this op). */
    double a = (double)pos[t] * freq_scale * pow(inv_freq_base, (double)j);
    float c = (float)cos(a), sn = (float)sin(a);
    float *xt = x + (size_t)t * n_heads * head_dim + 2 * j;
    for (int h = 0; h < n_heads; h++) {
        float *v = xt + (size_t)h * head_dim;
        float x0 = v[0], x1 = v[1];
        v[0] = x0 * c - x1 * sn;
        v[1] = x0 * sn + x1 * c;
    }
}

extern "C" cudaError_t cu_launch_rope(cudaStream_t s, float *x, int n, int n_heads, int head_dim,
                                      int rope_dim, const int32_t *pos, double inv_freq_base,
                                      double freq_scale)
{
    int pairs = rope_dim / 2;
    if (pairs == 0 || n == 0)
        return cudaSuccess;
    unsigned blocks = (unsigned)((n * pairs + EW_THREADS - 1) / EW_THREADS);
    k_rope<<<blocks, EW_THREADS, 0, s>>>(x, n, n_heads, head_dim, pairs, pos, inv_freq_base,
                                         freq_scale);
    return cudaGetLastError();
}

/* ---- KV store ---- */

__global__ static void k_kv_store(const float *k, const float *v, int kv_dim, const int32_t *slot,
                                  const int32_t *pos, float *kc, float *vc, int n_ctx)
{
    int t = blockIdx.y;
    size_t dst = ((size_t)slot[t] * (size_t)n_ctx + (size_t)pos[t]) * (size_t)kv_dim;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < kv_dim; j += gridDim.x * blockDim.x) {
        kc[dst + j] = k[(size_t)t * kv_dim + j];
        vc[dst + j] = v[(size_t)t * kv_dim + j];
    }
}

extern "C" cudaError_t cu_launch_kv_store(cudaStream_t s, const float *k, const float *v, int n,
                                          int kv_dim, const int32_t *slot, const int32_t *pos,
                                          float *k_cache, float *v_cache, int n_ctx)
{
    dim3 grid((unsigned)((kv_dim + EW_THREADS - 1) / EW_THREADS), (unsigned)n);
    k_kv_store<<<grid, EW_THREADS, 0, s>>>(k, v, kv_dim, slot, pos, k_cache, v_cache, n_ctx);
    return cudaGetLastError();
}

/* ---- element-wise ---- */

__global__ static void k_swiglu(const float *g, const float *u, size_t n, float *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float a = g[i];
        out[i] = a / (1.0f + expf(-a)) * u[i];
    }
}

extern "C" cudaError_t cu_launch_swiglu(cudaStream_t s, const float *gate, const float *up,
                                        size_t n, float *out)
{
    k_swiglu<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(gate, up, n, out);
    return cudaGetLastError();
}

__global__ static void k_add(float *x, const float *y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

extern "C" cudaError_t cu_launch_add(cudaStream_t s, float *x, const float *y, size_t n)
{
    k_add<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(x, y, n);
    return cudaGetLastError();
}

__global__ static void k_to16(const float *x, size_t n, cu_wtype_t wt, void *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        if (wt == CU_W_F16)
            ((__half *)out)[i] = __float2half_rn(x[i]);
        else
            ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn(x[i]);
    }
}

extern "C" cudaError_t cu_launch_to16(cudaStream_t s, const float *x, size_t n, cu_wtype_t wt,
                                      void *out)
{
    k_to16<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(x, n, wt, out);
    return cudaGetLastError();
}

/* ---- mat-vec for small batches ---- */

__device__ static inline void unpack8(uint4 raw, cu_wtype_t wt, float *w)
{
    const uint32_t u[4] = {raw.x, raw.y, raw.z, raw.w};
    for (int i = 0; i < 4; i++) {
        if (wt == CU_W_BF16) {
            /* bf16 -> f32 is a 16-bit shift */
            w[2 * i]     = __uint_as_float(u[i] << 16);
            w[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
        } else {
            __half2 h = *reinterpret_cast<const __half2 *>(&u[i]);
            float2 f = __half22float2(h);
            w[2 * i] = f.x;
            w[2 * i + 1] = f.y;
        }
    }
}

/* vec: rows are 16-byte aligned and cols % 8 == 0, x 16-byte aligned. */
__global__ static void __launch_bounds__(MV_WARPS * 32)
k_matvec(const void *w, cu_wtype_t wt, const float *x, int n, int rows, int cols, int vec,
         float *out)
{
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * MV_WARPS + warp;
    float acc[CU_MATVEC_MAX_N];

    if (row >= rows)
        return;
#pragma unroll
    for (int t = 0; t < CU_MATVEC_MAX_N; t++)
        acc[t] = 0.0f;
    if (vec) {
        const uint4 *wr = reinterpret_cast<const uint4 *>(
            (const char *)w + (size_t)row * (size_t)cols * 2u);
        int n8 = cols / 8;
#pragma unroll 4
        for (int c8 = lane; c8 < n8; c8 += 32) {
            float wf[8];
            unpack8(__ldg(wr + c8), wt, wf);
#pragma unroll
            for (int t = 0; t < CU_MATVEC_MAX_N; t++) {
                if (t < n) {
                    const float4 *xp = reinterpret_cast<const float4 *>(
                        x + (size_t)t * cols + (size_t)c8 * 8);
                    float4 a = __ldg(xp), b = __ldg(xp + 1);
                    acc[t] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w +
                              wf[4] * b.x + wf[5] * b.y + wf[6] * b.z + wf[7] * b.w;
                }
            }
        }
    } else {
        size_t base = (size_t)row * (size_t)cols;
        for (int c = lane; c < cols; c += 32) {
            float wv = load_w(w, wt, base + (size_t)c);
#pragma unroll
            for (int t = 0; t < CU_MATVEC_MAX_N; t++)
                if (t < n)
                    acc[t] += wv * x[(size_t)t * cols + c];
        }
    }
#pragma unroll
    for (int t = 0; t < CU_MATVEC_MAX_N; t++) {
        if (t < n) {
            float v = warp_sum(acc[t]);
            if (lane == 0)
                out[(size_t)t * rows + row] = v;
        }
    }
}

extern "C" cudaError_t cu_launch_matvec(cudaStream_t s, const void *w, cu_wtype_t wt,
                                        const float *x, int n, int rows, int cols, float *out)
{
    int vec = (cols % 8) == 0 && ((uintptr_t)w % 16) == 0 && ((uintptr_t)x % 16) == 0;
    unsigned blocks = (unsigned)((rows + MV_WARPS - 1) / MV_WARPS);
    k_matvec<<<blocks, MV_WARPS * 32, 0, s>>>(w, wt, x, n, rows, cols, vec, out);
    return cudaGetLastError();
}
