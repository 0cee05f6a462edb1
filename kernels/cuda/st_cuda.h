/*
 * st_cuda.h - the CUDA backend (kernels/cuda) and the device yardsticks its
 * benchmarks compare against.
 *
 * The backend itself is used only through the table in st_kernels.h, opened
 * by name like any other:
 *
 *   st_backend_params_t p = { .size = sizeof p, .device = 0,
 *                             .max_batch = 512, .max_cols = 14336 };
 *   if (st_backend_open("cuda", &p, &be, &err) == ST_ERR_NO_DEVICE) ...
 *
 * Weights are uploaded by ->weights_load (f16 and bf16 matrices as they
 * are, f32 and quantized matrices converted to bf16, 1-D tensors to f32).
 * Activations and KV caches live in device memory from ->alloc. Small
 * batches (<= 8 rows) multiply on a mat-vec kernel that streams each weight
 * once; larger ones convert the activations to 16 bits and run cuBLAS
 * (16-bit inputs, f32 accumulation and output). Compute ops return void:
 * an error inside one is kept and returned by the next ->sync/->to_host.
 *
 * The two probes below measure what decode and prefill are judged
 * against, on the same device in the same run:
 *
 *   double gbps, tflops;
 *   st_cuda_copy_bandwidth(0, 1u << 30, &gbps, &err);        // read + write
 *   st_cuda_gemm_tflops(0, 8192, 8192, 8192, &tflops, &err);  // bf16 cuBLAS
 */
#ifndef ST_CUDA_H
#define ST_CUDA_H

#include <stddef.h>

#include "st_error.h"
#include "st_kernels.h"
#include "st_status.h"

/* The CUDA backend's table (registered as "cuda" in kernels/backend.c). */
const st_backend_ops_t *st_backend_cuda_ops(void);

/* Number of CUDA devices usable here; ST_ERR_NO_DEVICE (with the CUDA
 * runtime's reason in err) when there are none or no driver. */
st_status_t st_cuda_device_count(int *out, st_error_t *err);

/* Device-to-device copy bandwidth in GB/s (1e9 bytes/s), counting the
 * bytes read plus the bytes written (2 x bytes per copy): the roofline a
 * decode step, which reads weights and writes little, is compared with.
 * Best of three rounds of ten copies of `bytes`. */
st_status_t st_cuda_copy_bandwidth(int device, size_t bytes, double *gbps, st_error_t *err);

/* TFLOP/s of one cuBLAS bf16 GEMM (C[m][n] bf16 = A[m][k] B[k][n], f32
 * accumulation), median of ten after warm-up: the ceiling for prefill. */
st_status_t st_cuda_gemm_tflops(int device, int m, int n, int k, double *tflops,
                                st_error_t *err);

#endif /* ST_CUDA_H */
