/*
 * cuda_qblock_host.h - C entry points into kernels/cuda/cuda_qblock.cuh
 * compiled by nvcc for the host (cuda_qblock_host.cu), so a C test can
 * check the CUDA kernels' block math against the CPU reference on a
 * machine without a GPU. No CUDA runtime call is made.
 */
#ifndef CUDA_QBLOCK_HOST_H
#define CUDA_QBLOCK_HOST_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when type (a GGUF/st_dtype number) has a quantized CUDA kernel. */
int   cuq_host_has(int type);
/* cuq_unit: weights 32u..32u+31 of a row of `type`. */
void  cuq_host_unit(int type, const uint8_t *row, int u, float w[32]);
/* What k_qmatvec's warp writes for one row: out[t] = row . x[t] for
 * t < n <= 8, the 32 lanes' cuq_lane_dot followed by the same xor
 * butterfly as __shfl_xor_sync (x rows of cols floats). */
void  cuq_host_warp_row(int type, const uint8_t *row, int cols, const float *x, int n,
                        float *out);
/* cuq_f16 on the host. */
float cuq_host_f16(uint16_t h);
/* Multi-byte loads so far whose address was not a multiple of their size
 * (each would fault on the device). */
long  cuq_host_misaligned(void);

#ifdef __cplusplus
}
#endif

#endif /* CUDA_QBLOCK_HOST_H */
