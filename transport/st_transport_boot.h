/*
 * st_transport_boot.h - bootstrap of a transport pair under mpirun.
 *
 * MPI is used only to exchange listener addresses ("host:port" strings)
 * between the processes of `mpirun -n N strata ...`; all data then moves over
 * st_transport. MPI is initialised only when the process was started by an
 * MPI launcher (MPICH Hydra sets PMI_RANK/PMI_SIZE), so the same binary runs
 * stand-alone without touching MPI.
 *
 *   if (st_boot_launched()) {
 *       st_boot_t *b;
 *       st_boot_init(&err, &b);
 *       if (st_boot_rank(b) == 0) st_transport_address(t, addr, sizeof addr);
 *       st_boot_bcast(b, addr, sizeof addr, 0);
 *       ...
 *       st_boot_finalize(b);
 *   }
 *
 * Built without MPI (STRATA_WITH_MPI=OFF or no libmpich-dev) st_boot_init
 * returns ST_ERR_UNSUPPORTED.
 */
#ifndef ST_TRANSPORT_BOOT_H
#define ST_TRANSPORT_BOOT_H

#include <stddef.h>

#include "st_error.h"
#include "st_status.h"

typedef struct st_boot st_boot_t;

/* 1 when an MPI launcher started this process (PMI_RANK/PMI_SIZE, or Open
 * MPI's OMPI_COMM_WORLD_RANK, or PMIX_RANK). */
int st_boot_launched(void);
/* 1 when this build can bootstrap through MPI. */
int st_boot_available(void);

st_status_t st_boot_init(st_error_t *err, st_boot_t **out);
int  st_boot_rank(const st_boot_t *b);
int  st_boot_size(const st_boot_t *b);
/* Broadcasts len bytes of buf from rank root to every rank. */
st_status_t st_boot_bcast(st_boot_t *b, void *buf, size_t len, int root);
st_status_t st_boot_barrier(st_boot_t *b);
/* Finalises MPI and frees b. NULL is ignored. */
void st_boot_finalize(st_boot_t *b);

#endif /* ST_TRANSPORT_BOOT_H */
