/*
 * backend.c - the registry of compiled-in backends.
 *
 * The table is a constant list, not something filled at run time: which
 * backends exist is a build-time fact (CUDA needs nvcc), so there is no
 * registration order to get wrong and no mutable global.
 *
 * CUDA: kernels/cuda provides `const st_backend_ops_t
 * *st_backend_cuda_ops(void)`, built twice: as a static library that GPU
 * tools link directly, and as the loadable module libstrata_cuda.so. The
 * strata binary does not link CUDA at all: "cuda" is loaded with dlopen the
 * first time it is asked for, so a CPU-only node needs no CUDA libraries and
 * pays no memory for them (cuBLAS alone maps ~130 MB).
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_kernels.h"
#include "st_log.h"

#ifdef STRATA_HAVE_CUDA
/* Defined when a tool links kernels/cuda statically; else NULL. */
const st_backend_ops_t *st_backend_cuda_ops(void) __attribute__((weak));

/* Looks for the module: $STRATA_CUDA_MODULE, then beside the executable,
 * then ../lib relative to it, then the loader's search path. The handle is
 * never closed: the backend's code must stay mapped while any instance
 * lives, and loading twice returns the same handle. */
static const st_backend_ops_t *cuda_from_module(void)
{
    char exe[PATH_MAX], path[PATH_MAX + 64];
    const char *env = getenv("STRATA_CUDA_MODULE");
    const char *cands[4];
    size_t nc = 0;
    ssize_t n;
    void *h = NULL;

    if (env && *env)
        cands[nc++] = env;
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
    } else {
        exe[0] = '\0';
    }
    for (size_t i = 0; i < nc && !h; i++)
        h = dlopen(cands[i], RTLD_NOW | RTLD_LOCAL);
    if (!h && exe[0]) {
        snprintf(path, sizeof(path), "%s/libstrata_cuda.so", exe);
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
    if (!h && exe[0]) {
        snprintf(path, sizeof(path), "%s/../lib/libstrata_cuda.so", exe);
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
    if (!h)
        h = dlopen("libstrata_cuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        st_warn("kernels", "cuda backend module not loadable: %s", dlerror());
        return NULL;
    }
    const st_backend_ops_t *(*get)(void);
    *(void **)&get = dlsym(h, "st_backend_cuda_ops");
    return get ? get() : NULL;
}

static const st_backend_ops_t *cuda_ops(void)
{
    return st_backend_cuda_ops ? st_backend_cuda_ops() : cuda_from_module();
}
#endif

typedef const st_backend_ops_t *(*ops_getter_t)(void);

static const ops_getter_t backend_getters[] = {
    st_backend_cpu_ops,
#ifdef STRATA_HAVE_CUDA
    cuda_ops,
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
