/* MPI bootstrap for transport benchmarks (see st_transport_boot.h). */
#include "st_transport_boot.h"

#include <limits.h>
#include <stdlib.h>

#ifdef ST_BOOT_HAVE_MPI
#include <mpi.h>
#endif

struct st_boot {
    int rank;
    int size;
};

int st_boot_launched(void)
{
    return (getenv("PMI_RANK") && getenv("PMI_SIZE")) || getenv("OMPI_COMM_WORLD_RANK") ||
           getenv("PMIX_RANK");
}

#ifdef ST_BOOT_HAVE_MPI

int st_boot_available(void) { return 1; }

st_status_t st_boot_init(st_error_t *err, st_boot_t **out)
{
    st_boot_t *b;
    int inited = 0;

    b = calloc(1, sizeof(*b));
    if (!b)
        return st_error_set(err, ST_ERR_NOMEM, "bootstrap: out of memory");
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        free(b);
        return st_error_set(err, ST_ERR_BACKEND, "bootstrap: MPI_Init failed");
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &b->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &b->size);
    *out = b;
    return ST_OK;
}

st_status_t st_boot_bcast(st_boot_t *b, void *buf, size_t len, int root)
{
    (void)b;
    if (len > INT_MAX)
        return ST_ERR_RANGE;
    return MPI_Bcast(buf, (int)len, MPI_BYTE, root, MPI_COMM_WORLD) == MPI_SUCCESS
           ? ST_OK : ST_ERR_BACKEND;
}

st_status_t st_boot_barrier(st_boot_t *b)
{
    (void)b;
    return MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS ? ST_OK : ST_ERR_BACKEND;
}

void st_boot_finalize(st_boot_t *b)
{
    if (!b)
        return;
    MPI_Finalize();
    free(b);
}

#else /* !ST_BOOT_HAVE_MPI */

int st_boot_available(void) { return 0; }

st_status_t st_boot_init(st_error_t *err, st_boot_t **out)
{
    (void)out;
    return st_error_set(err, ST_ERR_UNSUPPORTED, "built without MPI (STRATA_WITH_MPI, libmpich-dev)");
}

st_status_t st_boot_bcast(st_boot_t *b, void *buf, size_t len, int root)
{
    (void)b; (void)buf; (void)len; (void)root;
    return ST_ERR_UNSUPPORTED;
}

st_status_t st_boot_barrier(st_boot_t *b)
{
    (void)b;
    return ST_ERR_UNSUPPORTED;
}

void st_boot_finalize(st_boot_t *b)
{
    free(b);
}

#endif

int st_boot_rank(const st_boot_t *b) { return b->rank; }
int st_boot_size(const st_boot_t *b) { return b->size; }
