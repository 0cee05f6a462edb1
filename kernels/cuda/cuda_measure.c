/*
 * cuda_measure.c - the device yardsticks of st_cuda.h: copy bandwidth and
 * a large cuBLAS bf16 GEMM, measured with CUDA events on a private stream.
 */
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "st_cuda.h"
#include "st_dtype.h"
#include "st_util.h"

#define CHECK(call, what)                                                                  \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            (void)cudaGetLastError();                                                      \
            st = st_error_set(err, ST_ERR_BACKEND, "cuda probe: %s: %s", what,             \
                              cudaGetErrorString(e_));                                     \
            goto out;                                                                      \
        }                                                                                  \
    } while (0)

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

st_status_t st_cuda_copy_bandwidth(int device, size_t bytes, double *gbps, st_error_t *err)
{
    void *a = NULL, *b = NULL;
    cudaStream_t s = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    st_status_t st = ST_OK;
    float best = 0.0f;
    int n;

    if ((st = st_cuda_device_count(&n, err)) != ST_OK)
        return st;
    if (bytes < (1u << 20) || device < 0 || device >= n)
        return st_error_set(err, ST_ERR_INVALID, "cuda probe: bad device %d or size %zu", device,
                            bytes);
    CHECK(cudaSetDevice(device), "cudaSetDevice");
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    CHECK(cudaEventCreate(&e0), "cudaEventCreate");
    CHECK(cudaEventCreate(&e1), "cudaEventCreate");
    CHECK(cudaMalloc(&a, bytes), "cudaMalloc");
    CHECK(cudaMalloc(&b, bytes), "cudaMalloc");
    CHECK(cudaMemsetAsync(a, 1, bytes, s), "cudaMemset");
    CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s), "warm-up copy");
    for (int round = 0; round < 3; round++) {
        float ms = 0.0f;
        CHECK(cudaEventRecord(e0, s), "cudaEventRecord");
        for (int i = 0; i < 10; i++)
            CHECK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, s),
                  "copy");
        CHECK(cudaEventRecord(e1, s), "cudaEventRecord");
        CHECK(cudaEventSynchronize(e1), "cudaEventSynchronize");
        CHECK(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
        if (ms > 0.0f) {
            float g = (float)(2.0 * 10.0 * (double)bytes / (ms * 1e-3) / 1e9);
            best = g > best ? g : best;
        }
    }
    *gbps = best;
out:
    cudaFree(a);
    cudaFree(b);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (s) cudaStreamDestroy(s);
    return st;
}

st_status_t st_cuda_gemm_tflops(int device, int m, int n, int k, double *tflops, st_error_t *err)
{
    const float one = 1.0f, zero = 0.0f;
    void *A = NULL, *B = NULL, *C = NULL, *ws = NULL;
    uint16_t *host = NULL;
    cublasHandle_t h = NULL;
    cudaStream_t s = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    st_status_t st = ST_OK;
    float ms[10];
    size_t big;
    uint64_t rng = 0x2545f4914f6cdd1dull;
    int nd;

    if ((st = st_cuda_device_count(&nd, err)) != ST_OK)
        return st;
    if (m <= 0 || n <= 0 || k <= 0 || m > 65536 || n > 65536 || k > 65536 || device < 0 ||
        device >= nd)
        return st_error_set(err, ST_ERR_INVALID, "cuda probe: bad GEMM %d x %d x %d on device %d",
                            m, n, k, device);
    big = (size_t)ST_MAX(ST_MAX(m, n), k) * (size_t)k;
    CHECK(cudaSetDevice(device), "cudaSetDevice");
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    CHECK(cudaEventCreate(&e0), "cudaEventCreate");
    CHECK(cudaEventCreate(&e1), "cudaEventCreate");
    CHECK(cudaMalloc(&A, (size_t)m * k * 2), "cudaMalloc");
    CHECK(cudaMalloc(&B, (size_t)k * n * 2), "cudaMalloc");
    CHECK(cudaMalloc(&C, (size_t)m * n * 2), "cudaMalloc");
    CHECK(cudaMalloc(&ws, 32u << 20), "cudaMalloc");
    /* Random operands: all-zero inputs draw less power and would flatter
     * the ceiling. */
    host = malloc(big * 2);
    if (!host) {
        st = st_error_set(err, ST_ERR_NOMEM, "cuda probe: out of memory");
        goto out;
    }
    for (size_t i = 0; i < big; i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        host[i] = st_f32_to_bf16((float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0));
    }
    CHECK(cudaMemcpy(A, host, (size_t)m * k * 2, cudaMemcpyHostToDevice), "upload");
    CHECK(cudaMemcpy(B, host, (size_t)k * n * 2, cudaMemcpyHostToDevice), "upload");
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS || cublasSetStream(h, s) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(h, ws, 32u << 20) != CUBLAS_STATUS_SUCCESS) {
        st = st_error_set(err, ST_ERR_BACKEND, "cuda probe: cuBLAS setup failed");
        goto out;
    }
    for (int i = 0; i < 13; i++) {
        if (i >= 3)
            CHECK(cudaEventRecord(e0, s), "cudaEventRecord");
        cublasStatus_t bs = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16BF,
                                         m, B, CUDA_R_16BF, k, &zero, C, CUDA_R_16BF, m,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            st = st_error_set(err, ST_ERR_BACKEND, "cuda probe: cublasGemmEx status %d", (int)bs);
            goto out;
        }
        if (i >= 3) {
            CHECK(cudaEventRecord(e1, s), "cudaEventRecord");
            CHECK(cudaEventSynchronize(e1), "cudaEventSynchronize");
            CHECK(cudaEventElapsedTime(&ms[i - 3], e0, e1), "cudaEventElapsedTime");
        }
    }
    qsort(ms, 10, sizeof ms[0], cmp_float);
    *tflops = ms[5] > 0 ? 2.0 * m * (double)n * k / ((double)ms[5] * 1e-3) / 1e12 : 0.0;
out:
    if (h) cublasDestroy(h);
    free(host);
    cudaFree(A); cudaFree(B); cudaFree(C); cudaFree(ws);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (s) cudaStreamDestroy(s);
    return st;
}
