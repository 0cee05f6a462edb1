/*
 * strata launch - one command for every rank of an MPI job:
 *
 *   mpirun -n 3 strata launch -m MODEL --secret-file S -p "Hello" -n 32
 *   srun --mpi=pmi2 strata launch -m MODEL --secret-file S ...   (configs/slurm/)
 *
 * Rank 0 runs the coordinator (`strata coordinator` with the same options,
 * waiting for K-1 workers); ranks 1..K-1 run `strata worker`. MPI is only
 * the bootstrap: rank 0 broadcasts its control address once; the secret is
 * never sent over MPI (every rank reads --secret-file or
 * STRATA_CLUSTER_SECRET), and nothing on the per-token path touches MPI.
 * MPI_Init is called only when a process manager started us (PMI_RANK,
 * PMI_SIZE, PMI_FD or PMIX_RANK set). An encrypted model: --key-file K goes
 * to the coordinator and to every worker (each reads its own copy of K and
 * of the encrypted file; the key never crosses MPI or the network).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"

const char st_cmd_launch_help[] = "mpirun/srun entry: rank 0 coordinates, other ranks are workers";

#ifndef STRATA_HAVE_CLUSTER
int st_cmd_launch(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "strata launch: built without cluster support (needs UCX and OpenSSL)\n");
    return 1;
}
#else
#include "st_cluster.h"

int st_cmd_coordinator(int argc, char **argv);
int st_cmd_worker(int argc, char **argv);

#define MAX_ARGS 256

static void usage(FILE *f)
{
    fprintf(f,
        "usage: mpirun -n K strata launch -m MODEL [--secret-file F] [options]\n"
        "  --port P            control port of rank 0 (default 7700)\n"
        "  --advertise HOST    name or address the workers reach rank 0 at\n"
        "                      (default: rank 0's host name)\n"
        "  every other option is `strata coordinator`'s (see its --help); the\n"
        "  workers take --secret-file, --threads, --transport, --no-bind,\n"
        "  --key-file and --worker-model from the same line\n"
        "  --key-file K        key of an encrypted model: rank 0 decrypts it, every\n"
        "                      worker decrypts its own layers (each needs the file)\n");
}

int st_cmd_launch(int argc, char **argv)
{
    const char *port = "7700", *advertise = NULL;
    char addr[ST_CTRL_ADDR_MAX], listen[64], host[256], name[32], workers[16];
    char *cargv[MAX_ARGS];
    int cargc = 0, rank = 0, size = 0, rc;
    st_error_t err;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
    if (argc + 8 > MAX_ARGS) {
        fprintf(stderr, "strata launch: too many options\n");
        return 2;
    }
    st_error_clear(&err);
    if (!st_cluster_mpi_detected()) {
        fprintf(stderr, "strata launch: not started by mpirun or srun --mpi=pmi2 (or built "
                "without MPI); use `strata coordinator` and `strata worker` instead\n");
        return 2;
    }
    if (st_cluster_mpi_init(&rank, &size, &err) != ST_OK) {
        fprintf(stderr, "strata launch: %s\n", err.msg);
        return 1;
    }
    if (size < 2) {
        fprintf(stderr, "strata launch: needs at least 2 ranks (1 coordinator + workers)\n");
        st_cluster_mpi_finalize();
        return 2;
    }
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--port"))
            port = argv[i + 1];
        else if (!strcmp(argv[i], "--advertise"))
            advertise = argv[i + 1];
    }
    memset(addr, 0, sizeof(addr));
    if (rank == 0) {
        if (!advertise) {
            if (gethostname(host, sizeof(host)) != 0)
                snprintf(host, sizeof(host), "127.0.0.1");
            host[sizeof(host) - 1] = '\0';
            advertise = host;
        }
        snprintf(addr, sizeof(addr), "%s:%s", advertise, port);
    }
    if (st_cluster_mpi_bcast(addr, sizeof(addr), &err) != ST_OK) {
        fprintf(stderr, "strata launch: %s\n", err.msg);
        st_cluster_mpi_finalize();
        return 1;
    }

    if (rank == 0) {
        cargv[cargc++] = "coordinator";
        for (int i = 1; i < argc; i++) {
            if ((!strcmp(argv[i], "--port") || !strcmp(argv[i], "--advertise")) && i + 1 < argc) {
                i++;
                continue;
            }
            cargv[cargc++] = argv[i];
        }
        snprintf(listen, sizeof(listen), "0.0.0.0:%s", port);
        snprintf(workers, sizeof(workers), "%d", size - 1);
        cargv[cargc++] = "--listen";
        cargv[cargc++] = listen;
        cargv[cargc++] = "--workers";
        cargv[cargc++] = workers;
        cargv[cargc] = NULL;
        fprintf(stderr, "strata launch: rank 0 of %d: coordinator at %s\n", size, addr);
        rc = st_cmd_coordinator(cargc, cargv);
    } else {
        snprintf(name, sizeof(name), "rank-%d", rank);
        cargv[cargc++] = "worker";
        cargv[cargc++] = "--join";
        cargv[cargc++] = addr;
        cargv[cargc++] = "--name";
        cargv[cargc++] = name;
        for (int i = 1; i < argc; i++) {
            const char *a = argv[i];
            if (!strcmp(a, "--no-bind")) {
                cargv[cargc++] = argv[i];
            } else if (i + 1 < argc && (!strcmp(a, "--secret-file") || !strcmp(a, "--threads") ||
                                        !strcmp(a, "-t") || !strcmp(a, "--transport") ||
                                        !strcmp(a, "--key-file"))) {
                cargv[cargc++] = argv[i];
                cargv[cargc++] = argv[++i];
            } else if (i + 1 < argc && !strcmp(a, "--worker-model")) {
                cargv[cargc++] = "--model";
                cargv[cargc++] = argv[++i];
            }
        }
        cargv[cargc] = NULL;
        rc = st_cmd_worker(cargc, cargv);
    }
    st_cluster_mpi_finalize();
    return rc;
}
#endif
