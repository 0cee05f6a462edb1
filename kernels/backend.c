/*
 * backend.c - the registry of compiled-in backends.
 *
 * The table is a constant list, not something filled at run time: which
 * backends exist is a build-time fact (CUDA needs nvcc), so there is no
 * registration order to get wrong and no mutable global.
 *
 * CUDA seam: kernels/cuda provides `const st_backend_ops_t
 * *st_backend_cuda_ops(void)` and kernels/CMakeLists.txt defines
 * STRATA_HAVE_CUDA on st_kernels when it builds that directory.
 */
#include <string.h>

#include "st_kernels.h"

#ifdef STRATA_HAVE_CUDA
const st_backend_ops_t *st_backend_cuda_ops(void);
#endif

typedef const st_backend_ops_t *(*ops_getter_t)(void);

static const ops_getter_t backend_getters[] = {
    st_backend_cpu_ops,
#ifdef STRATA_HAVE_CUDA
    st_backend_cuda_ops,
#endif
};

static const char *const backend_names[] = {
    "cpu",
#ifdef STRATA_HAVE_CUDA
    "cuda",
#endif
    NULL
};

#define N_BACKENDS (sizeof backend_getters / sizeof backend_getters[0])

const char *const *st_backend_names(void)
{
    return backend_names;
}

const st_backend_ops_t *st_backend_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (strcmp(backend_names[i], name) == 0)
            return backend_getters[i]();
    return NULL;
}

st_status_t st_backend_open(const char *name, const st_backend_params_t *p, st_backend_t *out,
                            st_error_t *err)
{
    const st_backend_ops_t *ops = st_backend_find(name);
    void *ctx = NULL;
    st_status_t status;

    if (!ops)
        return st_error_set(err, ST_ERR_NOT_FOUND, "backend '%s' is not built in (have: cpu%s)",
                            name ? name : "(null)", N_BACKENDS > 1 ? ", cuda" : "");
    if (ops->abi_version != ST_BACKEND_ABI_VERSION)
        return st_error_set(err, ST_ERR_INTERNAL, "backend '%s': ABI version %u, expected %u",
                            name, ops->abi_version, ST_BACKEND_ABI_VERSION);
    status = ops->create(p, &ctx, err);
    if (status != ST_OK)
        return status;
    out->ops = ops;
    out->ctx = ctx;
    return ST_OK;
}

void st_backend_close(st_backend_t *b)
{
    if (!b || !b->ops)
        return;
    b->ops->destroy(b->ctx);
    b->ops = NULL;
    b->ctx = NULL;
}
