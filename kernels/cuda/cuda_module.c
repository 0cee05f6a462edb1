/*
 * cuda_module.c - anchors libstrata_cuda.so, the form of the CUDA backend
 * the strata binary loads with dlopen (kernels/backend.c). The reference
 * below pulls the backend out of the static library into the module; the
 * version script exports st_backend_cuda_ops and nothing else.
 */
#include "st_cuda.h"

const st_backend_ops_t *(*const st_cuda_module_anchor)(void) = st_backend_cuda_ops;
