/*
 * test_cuda_registry.c - the CUDA backend is compiled in and registered
 * whenever the build found nvcc, and opening it without a GPU fails cleanly.
 *
 * Runs on CPU-only CI. In a build without CUDA every test skips with the
 * reason; on a machine with a GPU the no-device test skips and the open
 * test checks the instance instead (test_cuda_ops.c exercises the ops).
 */
#include <string.h>

#include "st_kernels.h"
#include "st_test.h"

#ifdef STRATA_HAVE_CUDA
#include "st_cuda.h"

static int have_gpu(st_error_t *err)
{
    int n = 0;
    return st_cuda_device_count(&n, err) == ST_OK && n > 0;
}
#endif

ST_TEST(cuda_is_registered)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA (nvcc not found or STRATA_WITH_CUDA=OFF)");
#else
    const st_backend_ops_t *ops = st_backend_find("cuda");
    const char *const *names = st_backend_names();
    int listed = 0;

    ST_REQUIRE(ops != NULL);
    ST_CHECK(ops == st_backend_cuda_ops());
    ST_CHECK(ops->abi_version == ST_BACKEND_ABI_VERSION);
    ST_CHECK(strcmp(ops->name, "cuda") == 0);
    for (int i = 0; names[i]; i++)
        listed += strcmp(names[i], "cuda") == 0;
    ST_CHECK(listed == 1);
    /* Every member the executor calls must be present (weights_load is
     * optional in the interface, but a device backend needs it). */
    ST_CHECK(ops->create && ops->destroy && ops->describe && ops->alloc && ops->free);
    ST_CHECK(ops->to_device && ops->to_host && ops->sync && ops->weights_load);
    ST_CHECK(ops->get_rows && ops->rmsnorm && ops->matmul && ops->rope && ops->kv_store);
    ST_CHECK(ops->attention && ops->swiglu && ops->add);
    /* f32 KV cache only: a stage asked for f16/q8_0 on cuda refuses at load. */
    ST_CHECK(!(ops->features & (ST_BE_KV_F16 | ST_BE_KV_Q8_0)));
    ST_CHECK(st_backend_cpu_ops()->features & ST_BE_KV_F16);
    ST_CHECK(st_backend_cpu_ops()->features & ST_BE_KV_Q8_0);
#endif
}

ST_TEST(cuda_open_without_gpu_fails_cleanly)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA (nvcc not found or STRATA_WITH_CUDA=OFF)");
#else
    st_backend_params_t p = {.size = sizeof p, .device = 0, .max_batch = 4, .max_cols = 64};
    st_backend_t be = {0};
    st_error_t err, probe;
    st_status_t st;

    if (have_gpu(&probe))
        ST_SKIP("a CUDA device is present; this test covers machines without one");
    err.msg[0] = '\0';
    st = st_backend_open("cuda", &p, &be, &err);
    ST_CHECK(st == ST_ERR_NO_DEVICE);
    ST_CHECK(be.ops == NULL && be.ctx == NULL);
    ST_CHECK_MSG(strstr(err.msg, "no usable CUDA device") != NULL, "message: '%s'", err.msg);
    fprintf(stderr, "  (expected) %s\n", err.msg);
    /* Twice: the runtime's sticky error must not turn the second try into
     * something else. */
    ST_CHECK(st_backend_open("cuda", &p, &be, &err) == ST_ERR_NO_DEVICE);
    /* The probes report the same cleanly. */
    {
        double v = -1;
        ST_CHECK(st_cuda_copy_bandwidth(0, 1u << 20, &v, &err) == ST_ERR_NO_DEVICE);
        ST_CHECK(st_cuda_gemm_tflops(0, 64, 64, 64, &v, &err) == ST_ERR_NO_DEVICE);
        ST_CHECK(v == -1);
    }
#endif
}

ST_TEST(cuda_rejects_bad_params_before_touching_the_device)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA (nvcc not found or STRATA_WITH_CUDA=OFF)");
#else
    st_backend_params_t p = {.size = 4};
    st_backend_t be = {0};
    st_error_t err;

    ST_CHECK(st_backend_open("cuda", &p, &be, &err) == ST_ERR_INVALID);
    ST_CHECK(st_backend_open("cuda", NULL, &be, &err) == ST_ERR_INVALID);
    p.size = sizeof p;
    p.max_batch = 65536;
    ST_CHECK(st_backend_open("cuda", &p, &be, &err) == ST_ERR_RANGE);
    ST_CHECK(be.ops == NULL);
#endif
}

ST_TEST(cuda_open_with_gpu)
{
#ifndef STRATA_HAVE_CUDA
    ST_SKIP("built without CUDA (nvcc not found or STRATA_WITH_CUDA=OFF)");
#else
    st_backend_params_t p = {.size = sizeof p, .device = 0, .max_batch = 4, .max_cols = 64};
    st_backend_t be = {0};
    st_error_t err;

    if (!have_gpu(&err))
        ST_SKIP("no CUDA device: %s", err.msg);
    ST_REQUIRE(st_backend_open("cuda", &p, &be, &err) == ST_OK);
    ST_CHECK(strncmp(be.ops->describe(be.ctx), "cuda ", 5) == 0);
    ST_CHECK(be.ops->sync(be.ctx) == ST_OK);
    st_backend_close(&be);
    p.device = 1 << 20;
    ST_CHECK(st_backend_open("cuda", &p, &be, &err) == ST_ERR_NO_DEVICE);
#endif
}

int main(void)
{
    return st_test_main();
}
