/*
 * cuda_qblock_host.cu - the host side of kernels/cuda/cuda_qblock.cuh,
 * compiled by nvcc, behind the C entry points of cuda_qblock_host.h.
 */
#include <stdint.h>

static long misaligned;
#define CUQ_HOST_ALIGN_CHECK(p, bytes) \
    (misaligned += ((uintptr_t)(p) % (uintptr_t)(bytes)) != 0)

#include "cuda_qblock.cuh"
#include "cuda_qblock_host.h"

template <int T>
static void unit_t(const uint8_t *row, int u, float *w)
{
    cuq_unit<T>(row, u, w);
}

template <int T>
static void warp_row_t(const uint8_t *row, int cols, const float *x, int n, float *out)
{
    float lanes[32][CU_MATVEC_MAX_N];
    for (int l = 0; l < 32; l++) {
        for (int t = 0; t < CU_MATVEC_MAX_N; t++)
            lanes[l][t] = 0.0f;
        cuq_lane_dot<T>(row, cols, l, x, n, 1, lanes[l]);
    }
    /* v += __shfl_xor_sync(v, o) for o = 16, 8, 4, 2, 1: every lane adds
     * its partner's value of the previous round; lane 0 writes. */
    for (int t = 0; t < n; t++) {
        float v[32], nv[32];
        for (int l = 0; l < 32; l++)
            v[l] = lanes[l][t];
        for (int o = 16; o > 0; o >>= 1) {
            for (int l = 0; l < 32; l++)
                nv[l] = v[l] + v[l ^ o];
            for (int l = 0; l < 32; l++)
                v[l] = nv[l];
        }
        out[t] = v[0];
    }
}

#define CASES(F, ...)                                                  \
    switch (type) {                                                    \
    case CU_Q4_0: F<CU_Q4_0>(__VA_ARGS__); return 1;                   \
    case CU_Q4_1: F<CU_Q4_1>(__VA_ARGS__); return 1;                   \
    case CU_Q5_0: F<CU_Q5_0>(__VA_ARGS__); return 1;                   \
    case CU_Q5_1: F<CU_Q5_1>(__VA_ARGS__); return 1;                   \
    case CU_Q8_0: F<CU_Q8_0>(__VA_ARGS__); return 1;                   \
    case CU_Q2_K: F<CU_Q2_K>(__VA_ARGS__); return 1;                   \
    case CU_Q3_K: F<CU_Q3_K>(__VA_ARGS__); return 1;                   \
    case CU_Q4_K: F<CU_Q4_K>(__VA_ARGS__); return 1;                   \
    case CU_Q5_K: F<CU_Q5_K>(__VA_ARGS__); return 1;                   \
    case CU_Q6_K: F<CU_Q6_K>(__VA_ARGS__); return 1;                   \
    default: return 0;                                                 \
    }

static int unit_any(int type, const uint8_t *row, int u, float *w)
{
    CASES(unit_t, row, u, w)
}

static int warp_row_any(int type, const uint8_t *row, int cols, const float *x, int n, float *out)
{
    CASES(warp_row_t, row, cols, x, n, out)
}

extern "C" int cuq_host_has(int type)
{
    switch (type) {
    case CU_Q4_0: case CU_Q4_1: case CU_Q5_0: case CU_Q5_1: case CU_Q8_0:
    case CU_Q2_K: case CU_Q3_K: case CU_Q4_K: case CU_Q5_K: case CU_Q6_K:
        return 1;
    default:
        return 0;
    }
}

extern "C" void cuq_host_unit(int type, const uint8_t *row, int u, float w[32])
{
    if (!unit_any(type, row, u, w))
        for (int j = 0; j < 32; j++)
            w[j] = 0.0f;
}

extern "C" void cuq_host_warp_row(int type, const uint8_t *row, int cols, const float *x, int n,
                                  float *out)
{
    if (!warp_row_any(type, row, cols, x, n, out))
        for (int t = 0; t < n; t++)
            out[t] = 0.0f;
}

extern "C" float cuq_host_f16(uint16_t h)
{
    return cuq_f16(h);
}

extern "C" long cuq_host_misaligned(void)
{
    return misaligned;
}
