/*
 * cuda_attn.cuh - the arithmetic of the attention kernels (cuda_attn.cu),
 * shared with a host test that replays the kernels' order of operations on
 * the CPU (tests/cuda/cuda_ext_host.cu) and compares the result with the
 * CPU backend's attention.
 *
 * The kernels are SIMT (warp shuffles, shared memory), so what is shared is
 * each lane's and each merge step's arithmetic: a lane's share of q . k,
 * the score transform (scale is folded into q; soft-capping), one step of
 * the online softmax, a lane's update of its running output, the range of
 * positions of a split, every offset into q, the caches, the output and
 * the partial results, and the weights of the two merges (warps of a
 * block, splits of a token). Every multiply-add is an explicit fmaf, so
 * the host replay rounds as the device does; expf and tanhf are the only
 * operations whose last bit may differ between the two.
 */
#ifndef ST_CUDA_ATTN_CUH
#define ST_CUDA_ATTN_CUH

#include <math.h>

#include "cuda_kern.h"

#define CUA_HD __host__ __device__ __forceinline__

#ifdef __CUDA_ARCH__
#define CUA_UNROLL _Pragma("unroll")
#else
#define CUA_UNROLL
#endif

/* Warps per block: each takes every CUA_WARPS-th position of the split. */
#define CUA_WARPS 4

/* Positions [p0, p1) that split s covers for a token at pos: chunks of
 * `chunk` counted from the token's first position (its window's start),
 * so a windowed token deep in the context is not cut into empty splits. */
CUA_HD void cua_split_range(int pos, int window, int s, int chunk, int *p0, int *p1)
{
    const int first = CU_ATT_FIRST_POS(pos, window);
    const int a = first + s * chunk, b = a + chunk;
    *p0 = a;
    *p1 = b < pos + 1 ? b : pos + 1;
}

/* Where (token t, head h) reads and writes: its query row, its KV head's
 * first float at position 0 of its slot (rows kv_stride apart; keys the
 * first head_dim floats from there, values the first head_dim_v), its
 * output row, and split s's partial output and (max, sum) pair. */
CUA_HD size_t cua_q_off(const cu_attn_launch_t &a, int t, int h)
{
    return ((size_t)t * a.n_head + h) * a.head_dim;
}

CUA_HD size_t cua_kv_off(const cu_attn_launch_t &a, int t, int h)
{
    const int g = h / (a.n_head / a.n_head_kv);
    return (size_t)a.slot[t] * (size_t)a.n_ctx * (size_t)a.kv_stride + (size_t)g * a.head_dim;
}

CUA_HD size_t cua_out_off(const cu_attn_launch_t &a, int t, int h)
{
    return ((size_t)t * a.n_head + h) * a.head_dim_v;
}

CUA_HD size_t cua_part_off(const cu_attn_launch_t &a, int t, int h, int s)
{
    return ((size_t)t * a.n_head + h) * a.n_splits + s;   /* times head_dim_v, or 2 */
}

/* One lane's share of q . k over elements lane, lane + 32, ... < hd. */
template <int E>
CUA_HD float cua_lane_dot(const float *q, const float *kp, int lane, int hd)
{
    float d = 0.0f;
    CUA_UNROLL
    for (int e = 0; e < E; e++) {
        const int j = lane + 32 * e;
        if (j < hd)
            d = fmaf(q[e], kp[j], d);
    }
    return d;
}

/* The score of a position from its (already scaled) dot product. */
CUA_HD float cua_score(float d, float softcap)
{
    return softcap > 0.0f ? softcap * tanhf(d / softcap) : d;
}

/* Folds score d into the running maximum m and sum l; *corr rescales the
 * running output, *w weighs this position's value row. */
CUA_HD void cua_online(float *m, float *l, float d, float *corr, float *w)
{
    const float nm = fmaxf(*m, d);
    *corr = *m == -INFINITY ? 0.0f : expf(*m - nm);
    *w = expf(d - nm);
    *l = fmaf(*l, *corr, *w);
    *m = nm;
}

/* A lane's running output (elements lane, lane + 32, ... < hv) after one
 * position with value row vp. */
template <int E>
CUA_HD void cua_lane_acc(float *o, const float *vp, int lane, int hv, float corr, float w)
{
    CUA_UNROLL
    for (int e = 0; e < E; e++) {
        const int j = lane + 32 * e;
        if (j < hv)
            o[e] = fmaf(w, vp[j], o[e] * corr);
    }
}

/* Weight of a partial result with maximum m in a merge whose maximum is
 * M; a partial that saw no position (m = -inf) contributes nothing. */
CUA_HD float cua_merge_w(float m, float M)
{
    return m == -INFINITY ? 0.0f : expf(m - M);
}

#endif /* ST_CUDA_ATTN_CUH */
