/*
 * cuda_ext_host.h - C entry points into the CUDA backend's device math for
 * the ops beyond Llama (kernels/cuda/cuda_ext.cuh) and its attention
 * (kernels/cuda/cuda_attn.cuh), compiled by nvcc for the host
 * (cuda_ext_host.cu), so a C test can check them against the CPU backend
 * on a machine without a GPU. No CUDA runtime call is made.
 *
 * Each function does what the kernels do, in their order, on host memory:
 * the launch structs are the ones cuda_backend.c builds (cu_rope_prepare,
 * cu_attn_prepare), with host pointers where the device ones would be.
 */
#ifndef CUDA_EXT_HOST_H
#define CUDA_EXT_HOST_H

#include <stddef.h>

#include "cuda_kern.h"

#ifdef __cplusplus
extern "C" {
#endif

/* k_rope_ex: per row the sin/cos table, then every (head, pair). The
 * element-wise ops: k_geglu, k_softcap, k_axpy. (add_row, scale and
 * copy2d have no arithmetic beyond one add or multiply or none; the GPU
 * test covers them.) */
void cux_host_rope_ex(const cu_rope_launch_t *r);
void cux_host_geglu(const float *g, const float *u, size_t n, float *out);
void cux_host_softcap(float *x, float c, size_t n);
void cux_host_axpy(float *x, float a, const float *y, size_t n);

/* k_attn_split for every (split, head, token) block, its warps and lanes
 * replayed in the kernel's order (warp shuffles as the xor butterfly),
 * then k_attn_merge when a->n_splits > 1 (part_o, part_ml: host buffers
 * of n_tokens * n_head * n_splits * head_dim_v and * 2 floats). Returns 0,
 * or -1 for a width the kernels do not instantiate. */
int  cua_host_attention(const cu_attn_launch_t *a);

#ifdef __cplusplus
}
#endif

#endif /* CUDA_EXT_HOST_H */
