/*
 * cuda_attn.cu - causal attention over the f32 KV cache, split over the
 * sequence ("flash-decoding").
 *
 * One block scores positions [s * chunk, (s + 1) * chunk) of one (token,
 * head) pair with an online softmax. In decode there is one token and few
 * heads, so a long context is cut into n_splits chunks that run on
 * different SMs; a second kernel merges the partial (max, sum, output)
 * triples. In prefill there are enough (token, head) pairs to fill the GPU
 * and n_splits is 1: the block then writes the normalised output itself.
 *
 * Inside a block each warp takes every ATT_WARPS-th position; a lane holds
 * head_dim / 32 elements of q and of its running output, so one position
 * costs one coalesced read of its K row and its V row. Heads that share a
 * KV head (grouped-query) read the same rows, mostly from L2.
 *
 * Known limit: prefill re-reads K/V once per query token (no query
 * tiling); see docs/CUDA.md.
 */
#include <cuda_runtime.h>
#include <math.h>

#include "cuda_kern.h"

#define ATT_WARPS 4
#define ATT_EPL (CU_ATT_MAX_HEAD_DIM / 32)   /* elements per lane */

__device__ static inline float att_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ static void __launch_bounds__(ATT_WARPS * 32)
k_attn_split(cu_attn_launch_t a)
{
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS];
    __shared__ float sm_o[ATT_WARPS][CU_ATT_MAX_HEAD_DIM];
    const int s = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int hd = a.head_dim, kv_dim = a.n_head_kv * hd;
    const int g = h / (a.n_head / a.n_head_kv);
    const int len = a.pos[t] + 1;
    const int p0 = s * a.chunk;
    const int p1 = min(len, p0 + a.chunk);
    const float *qh = a.q + ((size_t)t * a.n_head + h) * hd;
    const size_t base = (size_t)a.slot[t] * (size_t)a.n_ctx * (size_t)kv_dim + (size_t)g * hd;
    const float *kc = a.k_cache + base, *vc = a.v_cache + base;
    float q[ATT_EPL], o[ATT_EPL], m = -INFINITY, l = 0.0f;

#pragma unroll
    for (int e = 0; e < ATT_EPL; e++) {
        int j = lane + 32 * e;
        q[e] = j < hd ? qh[j] * a.scale : 0.0f;
        o[e] = 0.0f;
    }
    for (int p = p0 + warp; p < p1; p += ATT_WARPS) {
        const float *kp = kc + (size_t)p * kv_dim, *vp = vc + (size_t)p * kv_dim;
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < ATT_EPL; e++) {
            int j = lane + 32 * e;
            if (j < hd)
                d += q[e] * kp[j];
        }
        d = att_warp_sum(d);
        float nm = fmaxf(m, d);
        float corr = m == -INFINITY ? 0.0f : expf(m - nm);
        float w = expf(d - nm);
        l = l * corr + w;
#pragma unroll
        for (int e = 0; e < ATT_EPL; e++) {
            int j = lane + 32 * e;
            if (j < hd)
                o[e] = o[e] * corr + w * vp[j];
        }
        m = nm;
    }

    /* Merge the warps of this block. */
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < ATT_EPL; e++) {
        int j = lane + 32 * e;
        if (j < hd)
            sm_o[warp][j] = o[e];
    }
    __syncthreads();
    float M = -INFINITY, L = 0.0f, f[ATT_WARPS];
    for (int w = 0; w < ATT_WARPS; w++)
        M = fmaxf(M, sm_m[w]);
    for (int w = 0; w < ATT_WARPS; w++) {
        /* an idle warp (no positions) has m = -inf and contributes nothing */
        f[w] = sm_m[w] == -INFINITY ? 0.0f : expf(sm_m[w] - M);
        L += sm_l[w] * f[w];
    }
    const size_t th = (size_t)t * a.n_head + h;
    for (int j = threadIdx.x; j < hd; j += blockDim.x) {
        float acc = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            acc += sm_o[w][j] * f[w];
        if (a.n_splits == 1)
            a.out[th * hd + j] = acc / L;   /* split 0 holds position 0: L > 0 */
        else
            a.part_o[(th * a.n_splits + s) * hd + j] = acc;
    }
    if (a.n_splits > 1 && threadIdx.x == 0) {
        a.part_ml[(th * a.n_splits + s) * 2] = M;
        a.part_ml[(th * a.n_splits + s) * 2 + 1] = L;
    }
}

/* One block per (head, token): merge the splits' partial results. */
__global__ static void k_attn_merge(cu_attn_launch_t a)
{
    const int h = blockIdx.x, t = blockIdx.y, hd = a.head_dim;
    const size_t th = (size_t)t * a.n_head + h;
    const float *ml = a.part_ml + th * a.n_splits * 2;
    float M = -INFINITY, L = 0.0f;

    for (int s = 0; s < a.n_splits; s++)
        M = fmaxf(M, ml[2 * s]);
    for (int s = 0; s < a.n_splits; s++)
        if (ml[2 * s] != -INFINITY)
            L += ml[2 * s + 1] * expf(ml[2 * s] - M);
    for (int j = threadIdx.x; j < hd; j += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < a.n_splits; s++)
            if (ml[2 * s] != -INFINITY)
                acc += a.part_o[(th * a.n_splits + s) * hd + j] * expf(ml[2 * s] - M);
        a.out[th * hd + j] = acc / L;
    }
}

extern "C" cudaError_t cu_launch_attention(cudaStream_t s, const cu_attn_launch_t *a)
{
    dim3 grid((unsigned)a->n_splits, (unsigned)a->n_head, (unsigned)a->n_tokens);
    cudaError_t e;

    k_attn_split<<<grid, ATT_WARPS * 32, 0, s>>>(*a);
    if ((e = cudaGetLastError()) != cudaSuccess || a->n_splits == 1)
        return e;
    dim3 mgrid((unsigned)a->n_head, (unsigned)a->n_tokens);
    k_attn_merge<<<mgrid, 128, 0, s>>>(*a);
    return cudaGetLastError();
}
