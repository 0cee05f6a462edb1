/*
 * cuda_ext.cuh - the per-element math of the CUDA ops for architectures
 * beyond Llama (cuda_ext.cu: rope_ex, add_row, geglu, scale, softcap,
 * copy2d, axpy), shared with a host test that runs it on the CPU and
 * compares it with the CPU backend (tests/cuda/test_cuda_ext.c).
 *
 * Every function repeats the CPU reference operation by operation:
 * st_cpu_rope_ex and friends in kernels/cpu/cpu_ops_ext.c, and the
 * scalar kernels of kernels/cpu/kern_scalar.c for GeGLU. The CPU
 * reference is built for baseline x86-64 (no FMA), so each product and sum
 * is rounded on its own; cuda_ext.cu is compiled with --fmad=false so the
 * device does not fuse them either (kernels/cuda/CMakeLists.txt). The one
 * deliberate fma is axpy's: the CPU backend's AVX2 and AVX-512 kernels
 * compute x + a*y with one rounding, and so does cux_axpy.
 *
 * What can still differ between a GPU and this host: the device's cos and
 * sin (double, within 2 ulp, then rounded to float), expf and tanhf (2
 * ulp); glibc's are correctly rounded or nearly so. Everything else gives
 * the same bits.
 */
#ifndef ST_CUDA_EXT_CUH
#define ST_CUDA_EXT_CUH

#include <math.h>
#include <stdint.h>

#include "cuda_kern.h"

#define CUX_HD __host__ __device__ __forceinline__

/* ---- rope_ex ---- */

/* Angle of pair j of a token at position pos: the base power is a running
 * product in double started from the position (f = pos, then f *=
 * inv_base once per pair, as the CPU loop does), scaled by freq_scale;
 * under YaRN, pairs are blended between that interpolated angle and the
 * extrapolated f by a ramp over [lo, hi]. */
CUX_HD double cux_rope_theta(int32_t pos, int j, const cu_rope_launch_t &r)
{
    double f = (double)pos;
    for (int i = 0; i < j; i++)
        f *= r.inv_base;
    double extrap = f, interp = f * r.freq_scale, th = interp;
    if (r.ext_factor != 0.0) {
        double y = (j - r.lo) / fmax(0.001, r.hi - r.lo);
        double ramp = (1.0 - fmin(1.0, fmax(0.0, y))) * r.ext_factor;
        th = interp * (1.0 - ramp) + extrap * ramp;
    }
    return th;
}

/* cos and sin of pair j's angle times mscale, rounded to float. */
CUX_HD void cux_rope_cs(int32_t pos, int j, const cu_rope_launch_t &r, float *c, float *s)
{
    const double th = cux_rope_theta(pos, j, r);
    *c = (float)(cos(th) * r.mscale);
    *s = (float)(sin(th) * r.mscale);
}

/* The first rotated float of head h of row i. */
CUX_HD float *cux_rope_head(const cu_rope_launch_t &r, int i, int h)
{
    return r.x + (size_t)i * (size_t)r.row_stride + (size_t)h * (size_t)r.head_stride + r.offset;
}

/* Rotates pair j of one head (v: the head's first rotated float): NEOX
 * pairs (j, j + half), the normal form adjacent (2j, 2j + 1). */
CUX_HD void cux_rope_pair(float *v, int j, int half, int neox, float c, float s)
{
    const int i0 = neox ? j : 2 * j, i1 = neox ? j + half : 2 * j + 1;
    const float x0 = v[i0], x1 = v[i1];
    v[i0] = x0 * c - x1 * s;
    v[i1] = x0 * s + x1 * c;
}

/* ---- element-wise ---- */

/* gate * sigmoid(2 sqrt(2/pi) (gate + 0.044715 gate^3)) * up: GELU's tanh
 * form (Gemma's gelu_pytorch_tanh) written with one exp, as geglu_scalar. */
CUX_HD float cux_geglu(float x, float u)
{
    const float t = -1.5957691216057308f * (x + 0.044715f * x * x * x);
    return x / (1.0f + expf(t)) * u;
}

CUX_HD float cux_softcap(float x, float c)
{
    return c * tanhf(x / c);
}

/* x + a * y, one rounding (the CPU's SIMD axpby: fma(y, a, x * 1)). */
CUX_HD float cux_axpy(float x, float a, float y)
{
    return fmaf(a, y, x);
}

#endif /* ST_CUDA_EXT_CUH */
