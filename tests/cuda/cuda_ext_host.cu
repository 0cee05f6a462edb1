/*
 * cuda_ext_host.cu - the host side of kernels/cuda/cuda_ext.cuh and
 * cuda_attn.cuh, compiled by nvcc, behind the C entry points of
 * cuda_ext_host.h: the kernels' loops, in their order, around the shared
 * per-element and per-lane functions.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_attn.cuh"
#include "cuda_ext.cuh"
#include "cuda_ext_host.h"

extern "C" void cux_host_rope_ex(const cu_rope_launch_t *r)
{
    float cs[CU_ROPE_MAX_PAIRS], sn[CU_ROPE_MAX_PAIRS];
    if (r->n <= 0 || r->half <= 0 || r->half > CU_ROPE_MAX_PAIRS || r->n_heads <= 0)
        return;
    for (int i = 0; i < r->n; i++) {
        for (int j = 0; j < r->half; j++)
            cux_rope_cs(r->pos[i], j, *r, &cs[j], &sn[j]);
        for (int k = 0; k < r->n_heads * r->half; k++) {
            const int h = k / r->half, j = k - h * r->half;
            cux_rope_pair(cux_rope_head(*r, i, h), j, r->half, r->neox, cs[j], sn[j]);
        }
    }
}

extern "C" void cux_host_geglu(const float *g, const float *u, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = cux_geglu(g[i], u[i]);
}

extern "C" void cux_host_softcap(float *x, float c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = cux_softcap(x[i], c);
}

extern "C" void cux_host_axpy(float *x, float a, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = cux_axpy(x[i], a, y[i]);
}

/* ---- attention ---- */

/* v += __shfl_xor_sync(v, o) for o = 16, 8, 4, 2, 1 over 32 lanes; every
 * lane ends with the same sum (each pair adds the same two values). */
static float warp_sum(const float *lanes)
{
    float v[32], nv[32];
    memcpy(v, lanes, sizeof v);
    for (int o = 16; o > 0; o >>= 1) {
        for (int l = 0; l < 32; l++)
            nv[l] = v[l] + v[l ^ o];
        memcpy(v, nv, sizeof v);
    }
    return v[0];
}

template <int E>
static void split_block(const cu_attn_launch_t &a, int s, int h, int t)
{
    float sm_m[CUA_WARPS], sm_l[CUA_WARPS], sm_o[CUA_WARPS][32 * E];
    const int hd = a.head_dim, hv = a.head_dim_v;
    int p0, p1;
    cua_split_range(a.pos[t], a.window, s, a.chunk, &p0, &p1);
    const float *qh = a.q + cua_q_off(a, t, h);
    const float *kc = a.k_cache + cua_kv_off(a, t, h), *vc = a.v_cache + cua_kv_off(a, t, h);

    for (int warp = 0; warp < CUA_WARPS; warp++) {
        float q[32][E], o[32][E], m = -INFINITY, l = 0.0f;
        for (int lane = 0; lane < 32; lane++)
            for (int e = 0; e < E; e++) {
                int j = lane + 32 * e;
                q[lane][e] = j < hd ? qh[j] * a.scale : 0.0f;
                o[lane][e] = 0.0f;
            }
        for (int p = p0 + warp; p < p1; p += CUA_WARPS) {
            const float *kp = kc + (size_t)p * a.kv_stride, *vp = vc + (size_t)p * a.kv_stride;
            float part[32], corr, w;
            for (int lane = 0; lane < 32; lane++)
                part[lane] = cua_lane_dot<E>(q[lane], kp, lane, hd);
            /* m and l are the same in every lane: one copy is kept */
            cua_online(&m, &l, cua_score(warp_sum(part), a.softcap), &corr, &w);
            for (int lane = 0; lane < 32; lane++)
                cua_lane_acc<E>(o[lane], vp, lane, hv, corr, w);
        }
        sm_m[warp] = m;
        sm_l[warp] = l;
        for (int lane = 0; lane < 32; lane++)
            for (int e = 0; e < E; e++) {
                int j = lane + 32 * e;
                if (j < hv)
                    sm_o[warp][j] = o[lane][e];
            }
    }
    float M = -INFINITY, L = 0.0f, f[CUA_WARPS];
    for (int w = 0; w < CUA_WARPS; w++)
        M = fmaxf(M, sm_m[w]);
    for (int w = 0; w < CUA_WARPS; w++) {
        f[w] = cua_merge_w(sm_m[w], M);
        L = fmaf(sm_l[w], f[w], L);
    }
    const size_t po = cua_part_off(a, t, h, s);
    for (int j = 0; j < hv; j++) {
        float acc = 0.0f;
        for (int w = 0; w < CUA_WARPS; w++)
            acc = fmaf(sm_o[w][j], f[w], acc);
        if (a.n_splits == 1)
            a.out[cua_out_off(a, t, h) + j] = acc / L;
        else
            a.part_o[po * hv + j] = acc;
    }
    if (a.n_splits > 1) {
        a.part_ml[po * 2] = M;
        a.part_ml[po * 2 + 1] = L;
    }
}

static void merge_block(const cu_attn_launch_t &a, int h, int t)
{
    const int hv = a.head_dim_v;
    const size_t p0 = cua_part_off(a, t, h, 0);
    const float *ml = a.part_ml + p0 * 2;
    float M = -INFINITY, L = 0.0f;

    for (int s = 0; s < a.n_splits; s++)
        M = fmaxf(M, ml[2 * s]);
    for (int s = 0; s < a.n_splits; s++)
        L = fmaf(ml[2 * s + 1], cua_merge_w(ml[2 * s], M), L);
    for (int j = 0; j < hv; j++) {
        float acc = 0.0f;
        for (int s = 0; s < a.n_splits; s++)
            acc = fmaf(a.part_o[(p0 + s) * hv + j], cua_merge_w(ml[2 * s], M), acc);
        a.out[cua_out_off(a, t, h) + j] = acc / L;
    }
}

template <int E>
static void attention_e(const cu_attn_launch_t &a)
{
    for (int t = 0; t < a.n_tokens; t++)
        for (int h = 0; h < a.n_head; h++)
            for (int s = 0; s < a.n_splits; s++)
                split_block<E>(a, s, h, t);
    if (a.n_splits > 1)
        for (int t = 0; t < a.n_tokens; t++)
            for (int h = 0; h < a.n_head; h++)
                merge_block(a, h, t);
}

extern "C" int cua_host_attention(const cu_attn_launch_t *a)
{
    switch (cu_attn_lane_elems(a->head_dim, a->head_dim_v)) {   /* as cu_launch_attention */
    case 1:  attention_e<1>(*a); return 0;
    case 2:  attention_e<2>(*a); return 0;
    case 4:  attention_e<4>(*a); return 0;
    case 8:  attention_e<8>(*a); return 0;
    case 18: attention_e<18>(*a); return 0;
    default: return -1;
    }
}
