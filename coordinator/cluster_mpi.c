/*
 * cluster_mpi.c - the MPI bootstrap of `strata launch` (see st_cluster.h).
 *
 * MPI carries two things, once: each rank's number, and rank 0's control
 * address. Everything after that (auth, plans, activations) goes over the
 * cluster's own control plane and transport, so the per-token path never
 * depends on MPI and the same binary runs without any MPI at all.
 */
#include <stdlib.h>
#include <string.h>

#include "st_cluster.h"
#ifdef ST_CLUSTER_HAVE_MPI
#include <mpi.h>
#endif

static int pm_present(void)
{
    static const char *const vars[] = {"PMI_RANK", "PMI_SIZE", "PMI_FD", "PMIX_RANK"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

#ifdef ST_CLUSTER_HAVE_MPI

int st_cluster_mpi_detected(void) { return pm_present(); }

st_status_t st_cluster_mpi_init(int *rank, int *size, st_error_t *err)
{
    int inited = 0;
    if (!pm_present())
        return st_error_set(err, ST_ERR_UNSUPPORTED, "not started by mpirun or srun "
                            "(no PMI_RANK/PMI_SIZE/PMI_FD/PMIX_RANK in the environment)");
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(NULL, NULL) != MPI_SUCCESS)
        return st_error_set(err, ST_ERR_BACKEND, "MPI_Init failed");
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return ST_OK;
}

st_status_t st_cluster_mpi_bcast(char *addr, size_t len, st_error_t *err)
{
    if (len > 65536)
        return st_error_set(err, ST_ERR_RANGE, "MPI bootstrap: address buffer too large");
    if (MPI_Bcast(addr, (int)len, MPI_CHAR, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
        return st_error_set(err, ST_ERR_BACKEND, "MPI_Bcast of the coordinator address failed");
    addr[len - 1] = '\0';
    return ST_OK;
}

void st_cluster_mpi_finalize(void)
{
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) {
        MPI_Barrier(MPI_COMM_WORLD);
        MPI_Finalize();
    }
}

#else

int st_cluster_mpi_detected(void) { (void)pm_present; return 0; }

st_status_t st_cluster_mpi_init(int *rank, int *size, st_error_t *err)
{
    (void)rank; (void)size;
    return st_error_set(err, ST_ERR_UNSUPPORTED, "built without MPI (libmpich-dev)");
}

st_status_t st_cluster_mpi_bcast(char *addr, size_t len, st_error_t *err)
{
    (void)addr; (void)len;
    return st_error_set(err, ST_ERR_UNSUPPORTED, "built without MPI (libmpich-dev)");
}

void st_cluster_mpi_finalize(void) {}

#endif
