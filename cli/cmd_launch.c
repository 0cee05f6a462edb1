/*
 * strata launch - one command for every rank of an MPI job:
 *
 *   mpirun -n 3 strata launch -m MODEL --port 8090         # HTTP API on rank 0:8090
 *   mpirun -n 3 strata launch -m MODEL -p "Hello" -n 32    # one-shot
 *   srun --mpi=pmi2 -n 3 strata launch -m MODEL --port 8090  (configs/slurm/)
 *
 * Rank 0 runs the coordinator (`strata coordinator` with the same options,
 * waiting for K-1 workers); ranks 1..K-1 run `strata worker`. --port is the
 * HTTP API's port, as in `serve` and `coordinator`; rank 0's control plane
 * is --control-port (default 7700) and --advertise.
 *
 * MPI is only the bootstrap: rank 0 broadcasts its control address once,
 * and, when the job was given no secret (no --secret-file, no
 * $STRATA_CLUSTER_SECRET on rank 0), a per-job secret it draws from the OS
 * CSPRNG. The launcher's channel is trusted with it (docs/CLUSTER.md, "The
 * per-job secret"): it is handed to the coordinator and workers of this
 * process in memory, never through argv, the environment or a file, and
 * dies with the job. With a secret given, every rank reads its own and
 * nothing secret crosses MPI. Nothing on the per-token path touches MPI.
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

#define MAX_ARGS 256

static void usage(FILE *f)
{
    fprintf(f,
        "usage: mpirun -n K strata launch -m MODEL [--port P] [--secret-file F] [options]\n"
        "       srun --mpi=pmi2 -n K strata launch -m MODEL [--port P] [options]\n"
        "  --port P            rank 0's HTTP API port (default 8080), as in serve and\n"
        "                      coordinator (it used to be the control port: that one is\n"
        "                      --control-port now)\n"
        "  --control-port P    rank 0's control port, which the workers join (default 7700)\n"
        "  --control-host H    address rank 0's control plane listens on (default 0.0.0.0)\n"
        "  --advertise HOST    name or address the workers reach rank 0 at (default:\n"
        "                      --control-host when it is one address, else rank 0's host name)\n"
        "  --secret-file F     cluster secret every rank reads; without it (and without\n"
        "                      $STRATA_CLUSTER_SECRET) rank 0 draws a random per-job secret\n"
        "                      and hands it to the other ranks over MPI (docs/CLUSTER.md)\n"
        "  every other option is `strata coordinator`'s (see its --help); the\n"
        "  workers take --secret-file, --threads, --transport, --no-bind,\n"
        "  --key-file and --worker-model from the same line\n"
        "  --key-file K        key of an encrypted model: rank 0 decrypts it, every\n"
        "                      worker decrypts its own layers (each needs the file)\n"
        "  --key-pkcs11 URI    the key unwrapped by a PKCS#11 token, on every rank\n");
}

/* A wildcard bind address is no address to give the workers. */
static int is_wildcard(const char *h)
{
    return !*h || !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strcmp(h, "[::]");
}

int st_cmd_launch(int argc, char **argv)
{
    const char *port = "7700", *ctl_host = "0.0.0.0", *advertise = NULL, *http_port = NULL;
    char *env_secret = getenv("STRATA_CLUSTER_SECRET");
    char host[256], name[32], workers[16];
    char *cargv[MAX_ARGS];
    st_cluster_mpi_boot_t boot;
    st_cli_secret_t job_secret;
    int cargc = 0, rank = 0, size = 0, given_secret = 0, rc = 1;
    long l;
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
    /* Options are checked before MPI_Init: every rank sees the same line,
     * so every rank stops with the same message. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--listen")) {
            fprintf(stderr, "strata launch: --listen is not a launch option: rank 0's "
                    "control address is --control-host/--control-port (and --advertise)\n");
            return 2;
        }
        if (strcmp(a, "--control-port") && strcmp(a, "--control-host") &&
            strcmp(a, "--advertise") && strcmp(a, "--port") && strcmp(a, "--secret-file"))
            continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "strata launch: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--control-port")) {
            if (cli_parse_long(a, argv[i + 1], 1, 65535, &l))
                return 2;
            port = argv[i + 1];
        } else if (!strcmp(a, "--control-host")) {
            ctl_host = argv[i + 1];
        } else if (!strcmp(a, "--advertise")) {
            advertise = argv[i + 1];
        } else if (!strcmp(a, "--port")) {
            http_port = argv[i + 1];
        } else {
            given_secret = 1;
        }
        i++;
    }
    /* The old meaning of `launch --port` was the control port; a script
     * written for it that now asks for both on one port gets told why. */
    if (http_port && !strcmp(http_port, port)) {
        fprintf(stderr, "strata launch: --port %s is the HTTP API's port and the control "
                "port is %s too; give rank 0's control plane another one with "
                "--control-port\n", http_port, port);
        return 2;
    }
    given_secret |= env_secret && *env_secret;
    st_error_clear(&err);
    if (!st_cluster_mpi_detected()) {
        if (getenv("SLURM_PROCID"))
            fprintf(stderr, "strata launch: started by srun without an MPI plugin (no "
                    "PMI_RANK/PMI_FD/PMIX_RANK): run `srun --mpi=pmi2 ...` (or set "
                    "MpiDefault=pmi2), or built without MPI\n");
        else
            fprintf(stderr, "strata launch: not started by mpirun or srun --mpi=pmi2 (or "
                    "built without MPI); use `strata coordinator` and `strata worker` "
                    "instead\n");
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
    memset(&boot, 0, sizeof(boot));
    if (rank == 0) {
        if (!advertise && !is_wildcard(ctl_host))
            advertise = ctl_host;
        if (!advertise) {
            if (gethostname(host, sizeof(host)) != 0)
                snprintf(host, sizeof(host), "127.0.0.1");
            host[sizeof(host) - 1] = '\0';
            advertise = host;
        }
        snprintf(boot.addr, sizeof(boot.addr),
                 strchr(advertise, ':') && advertise[0] != '[' ? "[%s]:%s" : "%s:%s",
                 advertise, port);
    }
    /* Rank 0's choice rules: it draws a secret only when it was given none,
     * and then every rank uses that one. */
    if (st_cluster_mpi_bootstrap(&boot, rank == 0 && !given_secret, &err) != ST_OK) {
        fprintf(stderr, "strata launch: rank %d: %s\n", rank, err.msg);
        goto out;
    }
    job_secret.bytes = boot.secret;
    job_secret.len = boot.secret_len;

    if (rank == 0) {
        cargv[cargc++] = "coordinator";
        for (int i = 1; i < argc; i++) {
            if ((!strcmp(argv[i], "--control-port") || !strcmp(argv[i], "--control-host") ||
                 !strcmp(argv[i], "--advertise")) && i + 1 < argc) {
                i++;
                continue;
            }
            cargv[cargc++] = argv[i];
        }
        snprintf(workers, sizeof(workers), "%d", size - 1);
        cargv[cargc++] = "--control-host";
        cargv[cargc++] = (char *)ctl_host;
        cargv[cargc++] = "--control-port";
        cargv[cargc++] = (char *)port;
        cargv[cargc++] = "--workers";
        cargv[cargc++] = workers;
        cargv[cargc] = NULL;
        fprintf(stderr, "strata launch: rank 0 of %d: coordinator at %s (%s)\n", size,
                boot.addr, boot.secret_len ? "per-job secret drawn by rank 0, sent over MPI"
                                           : "secret given to every rank");
        rc = st_cmd_coordinator_run(cargc, cargv, boot.secret_len ? &job_secret : NULL);
    } else {
        snprintf(name, sizeof(name), "rank-%d", rank);
        cargv[cargc++] = "worker";
        cargv[cargc++] = "--join";
        cargv[cargc++] = boot.addr;
        cargv[cargc++] = "--name";
        cargv[cargc++] = name;
        for (int i = 1; i < argc; i++) {
            const char *a = argv[i];
            if (!strcmp(a, "--no-bind")) {
                cargv[cargc++] = argv[i];
            } else if (i + 1 < argc && (!strcmp(a, "--secret-file") || !strcmp(a, "--threads") ||
                                        !strcmp(a, "-t") || !strcmp(a, "--transport") ||
                                        !strcmp(a, "--key-file") || !strcmp(a, "--key-pkcs11"))) {
                cargv[cargc++] = argv[i];
                cargv[cargc++] = argv[++i];
            } else if (i + 1 < argc && !strcmp(a, "--worker-model")) {
                cargv[cargc++] = "--model";
                cargv[cargc++] = argv[++i];
            }
        }
        cargv[cargc] = NULL;
        rc = st_cmd_worker_run(cargc, cargv, boot.secret_len ? &job_secret : NULL);
    }
out:
    explicit_bzero(&boot, sizeof(boot));
    st_cluster_mpi_finalize();
    return rc;
}
#endif
