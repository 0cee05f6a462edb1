/*
 * cuda_ext.cu - the CUDA backend's ops for architectures beyond Llama:
 * general rope (NEOX pairs, offsets, YaRN), biases, GeGLU, scaling,
 * soft-capping, strided copies and axpy. Optional ops of st_kernels.h,
 * the same results as kernels/cpu/cpu_ops_ext.c.
 *
 * The math is in cuda_ext.cuh, shared with a host test. This file is
 * compiled with --fmad=false (CMakeLists.txt) so products and sums round
 * as the CPU reference's do; these ops are memory bound, fusing would buy
 * nothing. Each launcher only shapes the grid and returns
 * cudaGetLastError(); the C side (cuda_backend.c) validated the inputs.
 */
#include <cuda_runtime.h>
#include <math.h>

#include "cuda_ext.cuh"
#include "cuda_kern.h"

#define EXT_THREADS 256
#define ROPE_THREADS 128
#define ROW_BLOCKS_MAX 65535u   /* grid.y limit: rows beyond it are strided */

static unsigned ext_grid(size_t n)
{
    size_t b = (n + EXT_THREADS - 1) / EXT_THREADS;
    /* Grid-stride loops cover the rest. */
    return (unsigned)(b < 65535u * 8u ? (b ? b : 1) : 65535u * 8u);
}

/* ---- rope_ex: one block per row ---- */

/* The row's sin/cos table first (each angle once, in double, as the CPU
 * computes it), then every (head, pair) of the row rotated with it. */
__global__ static void __launch_bounds__(ROPE_THREADS) k_rope_ex(cu_rope_launch_t r)
{
    __shared__ float cs[CU_ROPE_MAX_PAIRS], sn[CU_ROPE_MAX_PAIRS];
    const int i = blockIdx.x;
    const int32_t p = r.pos[i];

    for (int j = threadIdx.x; j < r.half; j += blockDim.x)
        cux_rope_cs(p, j, r, &cs[j], &sn[j]);
    __syncthreads();
    for (int k = threadIdx.x; k < r.n_heads * r.half; k += blockDim.x) {
        const int h = k / r.half, j = k - h * r.half;
        cux_rope_pair(cux_rope_head(r, i, h), j, r.half, r.neox, cs[j], sn[j]);
    }
}

extern "C" cudaError_t cu_launch_rope_ex(cudaStream_t s, const cu_rope_launch_t *r)
{
    if (r->n <= 0 || r->half <= 0 || r->n_heads <= 0)
        return cudaSuccess;
    k_rope_ex<<<(unsigned)r->n, ROPE_THREADS, 0, s>>>(*r);
    return cudaGetLastError();
}

/* ---- per-row ops: add_row, copy2d ---- */

__global__ static void k_add_row(float *x, const float *b, int n, int dim)
{
    for (int i = blockIdx.y; i < n; i += gridDim.y)
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < dim; j += gridDim.x * blockDim.x)
            x[(size_t)i * dim + j] += b[j];
}

extern "C" cudaError_t cu_launch_add_row(cudaStream_t s, float *x, const float *b, int n, int dim)
{
    if (n <= 0 || dim <= 0)
        return cudaSuccess;
    dim3 grid((unsigned)((dim + EXT_THREADS - 1) / EXT_THREADS),
              (unsigned)n < ROW_BLOCKS_MAX ? (unsigned)n : ROW_BLOCKS_MAX);
    k_add_row<<<grid, EXT_THREADS, 0, s>>>(x, b, n, dim);
    return cudaGetLastError();
}

__global__ static void k_copy2d(float *dst, int dst_stride, const float *src, int src_stride,
                                int rows, int cols)
{
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        float *d = dst + (ptrdiff_t)r * dst_stride;
        const float *sr = src + (ptrdiff_t)r * src_stride;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x)
            d[j] = sr[j];
    }
}

extern "C" cudaError_t cu_launch_copy2d(cudaStream_t s, float *dst, int dst_stride,
                                        const float *src, int src_stride, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return cudaSuccess;
    dim3 grid((unsigned)((cols + EXT_THREADS - 1) / EXT_THREADS),
              (unsigned)rows < ROW_BLOCKS_MAX ? (unsigned)rows : ROW_BLOCKS_MAX);
    k_copy2d<<<grid, EXT_THREADS, 0, s>>>(dst, dst_stride, src, src_stride, rows, cols);
    return cudaGetLastError();
}

/* ---- element-wise ---- */

#define EW_LOOP(i, n)                                                             \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);      \
         i += (size_t)gridDim.x * blockDim.x)

__global__ static void k_geglu(const float *g, const float *u, size_t n, float *out)
{
    EW_LOOP(i, n)
        out[i] = cux_geglu(g[i], u[i]);
}

__global__ static void k_scale(float *x, float a, size_t n)
{
    EW_LOOP(i, n)
        x[i] *= a;
}

__global__ static void k_softcap(float *x, float c, size_t n)
{
    EW_LOOP(i, n)
        x[i] = cux_softcap(x[i], c);
}

__global__ static void k_axpy(float *x, float a, const float *y, size_t n)
{
    EW_LOOP(i, n)
        x[i] = cux_axpy(x[i], a, y[i]);
}

extern "C" cudaError_t cu_launch_geglu(cudaStream_t s, const float *gate, const float *up,
                                       size_t n, float *out)
{
    k_geglu<<<ext_grid(n), EXT_THREADS, 0, s>>>(gate, up, n, out);
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_scale(cudaStream_t s, float *x, float a, size_t n)
{
    k_scale<<<ext_grid(n), EXT_THREADS, 0, s>>>(x, a, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_softcap(cudaStream_t s, float *x, float c, size_t n)
{
    k_softcap<<<ext_grid(n), EXT_THREADS, 0, s>>>(x, c, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_axpy(cudaStream_t s, float *x, float a, const float *y, size_t n)
{
    k_axpy<<<ext_grid(n), EXT_THREADS, 0, s>>>(x, a, y, n);
    return cudaGetLastError();
}
