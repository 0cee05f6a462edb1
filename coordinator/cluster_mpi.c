/*
 * cluster_mpi.c - the MPI bootstrap of `strata launch` (see st_cluster.h).
 *
 * MPI carries one message, once: rank 0's control address and, for a job
 * started without a secret, the per-job secret rank 0 draws here (see
 * docs/CLUSTER.md, "The per-job secret", for why the launcher's channel may
 * carry it). Everything after that (auth, plans, activations) goes over the
 * cluster's own control plane and transport, so the per-token path never
 * depends on MPI and the same binary runs without any MPI at all.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "st_cluster.h"
#include "st_ctrl.h"
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

/* The one bootstrap message, as MPI carries it. Every rank runs the same
 * binary in practice, but a version word costs nothing and turns a mixed
 * installation into a message instead of a misread secret. */
#define BOOT_VERSION 1u

typedef struct boot_wire {
    uint32_t version;                 /* BOOT_VERSION */
    int32_t  status;                  /* rank 0's st_status_t: not ST_OK, all fail */
    uint32_t secret_len;              /* 0 or ST_CLUSTER_JOB_SECRET_LEN */
    uint8_t  secret[ST_CLUSTER_JOB_SECRET_LEN];
    char     addr[ST_CTRL_ADDR_MAX];
} boot_wire_t;

st_status_t st_cluster_mpi_bootstrap(st_cluster_mpi_boot_t *b, int draw, st_error_t *err)
{
    boot_wire_t w;
    st_status_t st = ST_OK;
    int rank = 0;

    memset(&w, 0, sizeof(w));
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
        w.version = BOOT_VERSION;
        w.status = ST_OK;
        memcpy(w.addr, b->addr, sizeof(w.addr));
        w.addr[sizeof(w.addr) - 1] = '\0';
        if (draw) {
            /* RAND_bytes: OpenSSL's DRBG, seeded from the kernel (getrandom). */
            if (st_ctrl_random(w.secret, sizeof(w.secret)) == ST_OK)
                w.secret_len = ST_CLUSTER_JOB_SECRET_LEN;
            else
                w.status = ST_ERR_BACKEND;
        }
    }
    /* Rank 0 broadcasts even after a failure: the others must not wait. */
    if (MPI_Bcast(&w, (int)sizeof(w), MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
        st = st_error_set(err, ST_ERR_BACKEND, "MPI_Bcast of the coordinator address failed");
        goto out;
    }
    if (w.version != BOOT_VERSION) {
        st = st_error_set(err, ST_ERR_PROTOCOL, "MPI bootstrap: rank 0 runs another strata "
                          "(bootstrap version %u, this rank %u)", w.version, BOOT_VERSION);
        goto out;
    }
    if (w.status != ST_OK) {
        st = st_error_set(err, (st_status_t)w.status, "rank 0 could not draw the per-job "
                          "secret (RAND_bytes failed); give --secret-file");
        goto out;
    }
    if (w.secret_len != 0 && w.secret_len != ST_CLUSTER_JOB_SECRET_LEN) {
        st = st_error_set(err, ST_ERR_PROTOCOL, "MPI bootstrap: bad secret length %u",
                          w.secret_len);
        goto out;
    }
    w.addr[sizeof(w.addr) - 1] = '\0';
    memcpy(b->addr, w.addr, sizeof(b->addr));
    b->secret_len = w.secret_len;
    memcpy(b->secret, w.secret, sizeof(b->secret));
out:
    explicit_bzero(&w, sizeof(w));
    return st;
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

st_status_t st_cluster_mpi_bootstrap(st_cluster_mpi_boot_t *b, int draw, st_error_t *err)
{
    (void)b; (void)draw;
    return st_error_set(err, ST_ERR_UNSUPPORTED, "built without MPI (libmpich-dev)");
}

void st_cluster_mpi_finalize(void) {}

#endif
