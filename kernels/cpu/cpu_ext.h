/*
 * cpu_ext.h - the CPU backend's ops for architectures beyond Llama
 * (cpu_ops_ext.c): general rope (NEOX, offsets, YaRN), biases, GeGLU,
 * scaling, soft-capping, strided copies and axpy. Internal to kernels/cpu.
 */
#ifndef ST_CPU_EXT_H
#define ST_CPU_EXT_H

#include <stddef.h>

#include "st_kernels.h"

struct st_cpu_kernels;
/* The ISA-level kernels of a CPU backend instance (cpu_backend.c). */
const struct st_cpu_kernels *st_cpu_ctx_kernels(void *ctx);

void st_cpu_rope_ex(void *ctx, const st_rope_args_t *r);
void st_cpu_add_row(void *ctx, float *x, const st_tensor_t *b, int n, int dim);
void st_cpu_scale(void *ctx, float *x, float a, size_t n);
void st_cpu_softcap(void *ctx, float *x, float c, size_t n);
void st_cpu_copy2d(void *ctx, float *dst, int dst_stride, const float *src, int src_stride,
                   int rows, int cols);
void st_cpu_axpy(void *ctx, float *x, float a, const float *y, size_t n);

#endif /* ST_CPU_EXT_H */
