/*
 * cluster_off.c - st_cluster.h in a build without cluster support (no UCX
 * transport or no OpenSSL): every entry point answers ST_ERR_UNSUPPORTED
 * with the reason, so callers such as `strata serve --workers N` link and
 * explain instead of failing to build. Compiled only in that case (see
 * coordinator/CMakeLists.txt).
 */
#include <string.h>

#include "st_cluster.h"

#define WHY "built without cluster support (needs the UCX transport and OpenSSL libcrypto)"

st_cluster_params_t st_cluster_default_params(void)
{
    st_cluster_params_t p;
    memset(&p, 0, sizeof(p));
    p.size = sizeof(p);
    return p;
}

st_status_t st_cluster_create(const st_cluster_params_t *p, st_cluster_t **out, st_error_t *err)
{
    (void)p; (void)out;
    return st_error_set(err, ST_ERR_UNSUPPORTED, WHY);
}

st_status_t st_cluster_local_create(const st_cluster_params_t *p, st_pipeline_t *out,
                                    st_error_t *err)
{
    (void)p; (void)out;
    return st_error_set(err, ST_ERR_UNSUPPORTED, WHY);
}

void st_cluster_pipeline(st_cluster_t *c, st_pipeline_t *out) { (void)c; memset(out, 0, sizeof(*out)); }
void st_cluster_free(st_cluster_t *c) { (void)c; }
const char *st_cluster_address(const st_cluster_t *c) { (void)c; return ""; }
void st_cluster_stats(st_cluster_t *c, st_cluster_stats_t *out) { (void)c; memset(out, 0, sizeof(*out)); }
void st_cluster_stats_reset(st_cluster_t *c) { (void)c; }
void st_cluster_refresh(st_cluster_t *c, int timeout_ms) { (void)c; (void)timeout_ms; }
int  st_cluster_mpi_detected(void) { return 0; }
st_status_t st_cluster_mpi_init(int *rank, int *size, st_error_t *err)
{
    (void)rank; (void)size;
    return st_error_set(err, ST_ERR_UNSUPPORTED, WHY);
}
st_status_t st_cluster_mpi_bootstrap(st_cluster_mpi_boot_t *b, int draw, st_error_t *err)
{
    (void)b; (void)draw;
    return st_error_set(err, ST_ERR_UNSUPPORTED, WHY);
}
void st_cluster_mpi_finalize(void) {}
