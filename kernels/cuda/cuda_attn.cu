/*
 * cuda_attn.cu - causal attention over the f32 KV cache, split over the
 * sequence ("flash-decoding").
 *
 * One block scores positions [p0, p1) of one (token, head) pair with an
 * online softmax, where split s covers `chunk` positions from the token's
 * first one (position 0, or the start of its sliding window). In decode
 * there is one token and few heads, so a long context is cut into n_splits
 * chunks that run on different SMs; a second kernel merges the partial
 * (max, sum, output) triples. In prefill there are enough (token, head)
 * pairs to fill the GPU and n_splits is 1: the block then writes the
 * normalised output itself.
 *
 * Inside a block each warp takes every CUA_WARPS-th position; a lane holds
 * E = ceil(width / 32) elements of q and of its running output, so one
 * position costs one coalesced read of its K row and its V row. Heads that
 * share a KV head (grouped-query) read the same rows, mostly from L2.
 *
 * The extensions of st_attn_args_t are all here: a sliding window (the
 * first position), soft-capped scores, values narrower than keys
 * (head_dim_v: the first floats of each V row, as DeepSeek's absorbed MLA
 * reads its latent rows) and a cache row stride of its own (kv_stride).
 * The kernel is instantiated for E = 1, 2, 4, 8 and 18 (widths up to 32,
 * 64, 128, 256 and 576 = CU_ATT_MAX_HEAD_DIM); the per-lane arithmetic is
 * in cuda_attn.cuh, replayed by a host test.
 *
 * Known limit: prefill re-reads K/V once per query token (no query
 * tiling); see docs/CUDA.md.
 */
#include <cuda_runtime.h>
#include <math.h>

#include "cuda_attn.cuh"
#include "cuda_kern.h"

__device__ static inline float att_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <int E>
__global__ static void __launch_bounds__(CUA_WARPS * 32)
k_attn_split(cu_attn_launch_t a)
{
    __shared__ float sm_m[CUA_WARPS], sm_l[CUA_WARPS];
    __shared__ float sm_o[CUA_WARPS][32 * E];
    const int s = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int hd = a.head_dim, hv = a.head_dim_v;
    int p0, p1;
    cua_split_range(a.pos[t], a.window, s, a.chunk, &p0, &p1);
    const float *qh = a.q + cua_q_off(a, t, h);
    const float *kc = a.k_cache + cua_kv_off(a, t, h), *vc = a.v_cache + cua_kv_off(a, t, h);
    float q[E], o[E], m = -INFINITY, l = 0.0f;

#pragma unroll
    for (int e = 0; e < E; e++) {
        int j = lane + 32 * e;
        q[e] = j < hd ? qh[j] * a.scale : 0.0f;
        o[e] = 0.0f;
    }
    for (int p = p0 + warp; p < p1; p += CUA_WARPS) {
        const float *kp = kc + (size_t)p * a.kv_stride, *vp = vc + (size_t)p * a.kv_stride;
        float d = cua_score(att_warp_sum(cua_lane_dot<E>(q, kp, lane, hd)), a.softcap);
        float corr, w;
        cua_online(&m, &l, d, &corr, &w);
        cua_lane_acc<E>(o, vp, lane, hv, corr, w);
    }

    /* Merge the warps of this block. */
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < E; e++) {
        int j = lane + 32 * e;
        if (j < hv)
            sm_o[warp][j] = o[e];
    }
    __syncthreads();
    float M = -INFINITY, L = 0.0f, f[CUA_WARPS];
    for (int w = 0; w < CUA_WARPS; w++)
        M = fmaxf(M, sm_m[w]);
    for (int w = 0; w < CUA_WARPS; w++) {
        f[w] = cua_merge_w(sm_m[w], M);   /* an idle warp has m = -inf */
        L = fmaf(sm_l[w], f[w], L);
    }
    const size_t po = cua_part_off(a, t, h, s);
    for (int j = threadIdx.x; j < hv; j += blockDim.x) {
        float acc = 0.0f;
        for (int w = 0; w < CUA_WARPS; w++)
            acc = fmaf(sm_o[w][j], f[w], acc);
        if (a.n_splits == 1)
            a.out[cua_out_off(a, t, h) + j] = acc / L;   /* split 0 is never empty: L > 0 */
        else
            a.part_o[po * hv + j] = acc;
    }
    if (a.n_splits > 1 && threadIdx.x == 0) {
        a.part_ml[po * 2] = M;
        a.part_ml[po * 2 + 1] = L;
    }
}

/* One block per (head, token): merge the splits' partial results. */
__global__ static void k_attn_merge(cu_attn_launch_t a)
{
    const int h = blockIdx.x, t = blockIdx.y, hv = a.head_dim_v;
    const size_t p0 = cua_part_off(a, t, h, 0);
    const float *ml = a.part_ml + p0 * 2;
    float M = -INFINITY, L = 0.0f;

    for (int s = 0; s < a.n_splits; s++)
        M = fmaxf(M, ml[2 * s]);
    for (int s = 0; s < a.n_splits; s++)
        L = fmaf(ml[2 * s + 1], cua_merge_w(ml[2 * s], M), L);
    for (int j = threadIdx.x; j < hv; j += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < a.n_splits; s++)
            acc = fmaf(a.part_o[(p0 + s) * hv + j], cua_merge_w(ml[2 * s], M), acc);
        a.out[cua_out_off(a, t, h) + j] = acc / L;
    }
}

static_assert(18 * 32 == CU_ATT_MAX_HEAD_DIM, "the widest instance must cover CU_ATT_MAX_HEAD_DIM");

template <int E>
static cudaError_t launch_e(cudaStream_t s, const cu_attn_launch_t *a)
{
    dim3 grid((unsigned)a->n_splits, (unsigned)a->n_head, (unsigned)a->n_tokens);
    k_attn_split<E><<<grid, CUA_WARPS * 32, 0, s>>>(*a);
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_attention(cudaStream_t s, const cu_attn_launch_t *a)
{
    cudaError_t e;

    switch (cu_attn_lane_elems(a->head_dim, a->head_dim_v)) {
    case 1:  e = launch_e<1>(s, a); break;
    case 2:  e = launch_e<2>(s, a); break;
    case 4:  e = launch_e<4>(s, a); break;
    case 8:  e = launch_e<8>(s, a); break;
    case 18: e = launch_e<18>(s, a); break;
    default: return cudaErrorInvalidValue;   /* cuda_backend.c refuses wider heads */
    }
    if (e != cudaSuccess || a->n_splits == 1)
        return e;
    dim3 mgrid((unsigned)a->n_head, (unsigned)a->n_tokens);
    k_attn_merge<<<mgrid, 128, 0, s>>>(*a);
    return cudaGetLastError();
}
