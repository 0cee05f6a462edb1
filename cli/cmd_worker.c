/*
 * strata worker - one pipeline stage of a cluster (see worker/st_worker.h).
 *
 *   strata worker --join 10.0.0.1:7700 --secret-file /etc/strata/secret
 *
 * Joins the coordinator, proves it knows the cluster secret, loads the layer
 * range it is given and serves micro-batches until the coordinator drains
 * it or it receives SIGTERM/SIGINT (it then tells the coordinator it is
 * leaving). Exit status: 0 after a drain or a signal, 1 on an error (wrong
 * secret, coordinator unreachable or gone), 2 on bad options.
 *
 * --join names the coordinator's control address: its host and its
 * --control-port (7700 when only a host is given), the same name the
 * coordinator and `strata launch` use for that port.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"

const char st_cmd_worker_help[] = "run a cluster worker: join a coordinator and serve a layer range";

#ifndef STRATA_HAVE_CLUSTER
int st_cmd_worker(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "strata worker: built without cluster support (needs UCX and OpenSSL)\n");
    return 1;
}
#else
#include "st_worker.h"

/* The one piece of process-wide state: what a signal handler may touch. */
static volatile sig_atomic_t worker_stop;

static void on_signal(int sig)
{
    (void)sig;
    worker_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata worker --join HOST[:PORT] [options]\n"
        "  --join HOST[:PORT]    the coordinator's control address: its host and its\n"
        "                        --control-port (default 7700)\n"
        "  --secret-file F       cluster secret (default: $STRATA_CLUSTER_SECRET)\n"
        "  --name NAME           worker name (default: <hostname>-<pid>)\n"
        "  -m, --model PATH      this host's copy of the model (default: the plan's path)\n"
        "  --fetch-shard         receive this stage's tensors from the coordinator (into\n"
        "                        memory, only this stage's share) instead of opening a\n"
        "                        local copy; automatic when the model path does not exist\n"
        "  --key-file F          key of an encrypted model: only this stage's layers are\n"
        "                        decrypted, into memory (see strata encrypt-model)\n"
        "  --key-pkcs11 URI      the key unwrapped by a PKCS#11 token (docs/ENCRYPTION.md)\n"
        "  -t, --threads N       compute threads (default: the plan's)\n"
        "  --data-listen H:P     no longer opens a listener; a specific H picks the\n"
        "                        interface of UCX's TCP transport (port unused)\n"
        "  --transport TLS       UCX_TLS for the data plane (e.g. tcp, sm,self)\n"
        "  --no-bind             do not apply the topology placement\n"
        "  --mem SIZE            memory to advertise to the planner: bytes or 512MiB, 2G\n"
        "                        (default: MemAvailable)\n"
        "  --join-timeout S      keep retrying the coordinator this long (default 30)\n");
}

int st_cmd_worker(int argc, char **argv)
{
    return st_cmd_worker_run(argc, argv, NULL);
}

int st_cmd_worker_run(int argc, char **argv, const st_cli_secret_t *secret)
{
    st_worker_params_t p = st_worker_default_params();
    const char *secret_file = NULL, *v;
    char join[ST_CTRL_ADDR_MAX];
    struct sigaction sa;
    st_error_t err;
    long l;
    int rc = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-bind")) {
            p.bind = 0;
            continue;
        } else if (!strcmp(a, "--fetch-shard")) {
            p.fetch_shard = 1;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i)))
            return 2;
        if (!strcmp(a, "--join")) {
            p.join = v;
        } else if (!strcmp(a, "--secret-file")) {
            secret_file = v;
        } else if (!strcmp(a, "--name")) {
            p.name = v;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            p.model_path = v;
        } else if (!strcmp(a, "--key-file") || !strcmp(a, "--key-pkcs11")) {
            if (!(p.key_file = cli_key_value(a, v))) return 2;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_long(a, v, 1, 4096, &l)) return 2;
            p.n_threads = (int)l;
        } else if (!strcmp(a, "--data-listen")) {
            p.data_listen = v;
        } else if (!strcmp(a, "--transport")) {
            p.transport_tls = v;
        } else if (!strcmp(a, "--mem")) {
            if (cli_parse_size(a, v, &p.mem_bytes)) return 2;
        } else if (!strcmp(a, "--join-timeout")) {
            if (cli_parse_long(a, v, 0, 86400, &l)) return 2;
            p.join_timeout_ms = (uint32_t)l * 1000u;
        } else {
            fprintf(stderr, "strata worker: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!p.join) {
        usage(stderr);
        return 2;
    }
    /* A bare host (or [v6]) joins the default control port. */
    if (!strchr(p.join, ':') || (p.join[0] == '[' && p.join[strlen(p.join) - 1] == ']')) {
        snprintf(join, sizeof(join), "%s:%d", p.join, ST_CLI_CONTROL_PORT);
        p.join = join;
    }
    st_error_clear(&err);
    if (secret) {
        if (secret->len < ST_CTRL_SECRET_MIN || secret->len > sizeof(p.secret)) {
            fprintf(stderr, "strata worker: bad in-memory secret (%zu bytes)\n", secret->len);
            return 1;
        }
        memcpy(p.secret, secret->bytes, secret->len);
        p.secret_len = secret->len;
    } else if (st_ctrl_secret_load(secret_file, p.secret, sizeof(p.secret), &p.secret_len,
                                   &err) != ST_OK) {
        fprintf(stderr, "strata worker: %s\n", err.msg);
        return 1;
    }
    /* A worker has nothing to say on stdout; libraries that print there
     * (UCX warnings) must not mix into a launcher's output (mpirun, srun
     * collect every rank's stdout with the coordinator's answer). */
    fflush(stdout);
    dup2(STDERR_FILENO, STDOUT_FILENO);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    p.stop = &worker_stop;
    if (st_worker_run(&p, &err) != ST_OK) {
        fprintf(stderr, "strata worker: %s\n", err.msg);
        rc = 1;
    }
    explicit_bzero(p.secret, sizeof(p.secret));
    return rc;
}
#endif
