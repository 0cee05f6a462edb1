/*
 * cluster_local.c - a cluster of worker processes on this machine: what
 * `strata serve -m MODEL --workers N` runs (see st_cluster.h).
 *
 * The coordinator listens on 127.0.0.1, creates a fresh random secret and
 * starts `strata worker --join 127.0.0.1:PORT` N times. The secret reaches
 * the children through their environment (STRATA_CLUSTER_SECRET), which
 * only this user and root can read; it never appears on a command line.
 * With a key file (an encrypted model) each worker is given the model path
 * and --key-file on its command line.
 * Children that die are restarted (respawn) so the cluster re-plans back to
 * N stages; at shutdown they are drained, then terminated if they linger.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cluster_internal.h"
#include "st_log.h"
#include "st_util.h"

#define MOD "cluster"

extern char **environ;

/* The children's environment: ours, with the secret set. Built before any
 * fork because a child of a threaded process may not allocate. */
static st_status_t make_env(st_cluster_t *c, st_error_t *err)
{
    size_t n = 0, k = 0;
    static const char key[] = "STRATA_CLUSTER_SECRET=";

    while (environ && environ[n])
        n++;
    c->envp = calloc(n + 2, sizeof(char *));
    c->env_secret = malloc(sizeof(key) + strlen(c->secret_hex));
    if (!c->envp || !c->env_secret)
        return st_error_set(err, ST_ERR_NOMEM, "cluster: out of memory");
    strcpy(c->env_secret, key);
    strcat(c->env_secret, c->secret_hex);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], key, sizeof(key) - 1) != 0)
            c->envp[k++] = environ[i];
    c->envp[k++] = c->env_secret;
    c->envp[k] = NULL;
    return ST_OK;
}

/* Async-signal-safe: close_range(2) where the kernel has it, else a loop. */
static void close_fds_from(int first)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, ~0u, 0u) == 0)
        return;
#endif
    for (int fd = first; fd < 65536; fd++)
        close(fd);
}

st_status_t cl_spawn(st_cluster_t *c, uint32_t index, st_error_t *err)
{
    char threads[16], name[32], mem[24];
    const char *argv[24];
    int k = 0;
    pid_t pid;

    snprintf(threads, sizeof(threads), "%d", c->p.n_threads > 0 ? c->p.n_threads : 1);
    snprintf(name, sizeof(name), "local-%u", index);
    argv[k++] = c->bin;
    argv[k++] = "worker";
    argv[k++] = "--join";
    argv[k++] = c->listen_addr;
    argv[k++] = "--threads";
    argv[k++] = threads;
    argv[k++] = "--name";
    argv[k++] = name;
    argv[k++] = "--data-listen";
    argv[k++] = "127.0.0.1:0";
    if (!c->p.bind)
        argv[k++] = "--no-bind";
    if (c->p.worker_mem_bytes) {
        snprintf(mem, sizeof(mem), "%llu", (unsigned long long)c->p.worker_mem_bytes);
        argv[k++] = "--mem";
        argv[k++] = mem;
    }
    if (c->p.key_file) {
        /* An encrypted model: each worker decrypts its own layers from the
         * file (shards are never streamed in the clear). The key file's
         * path, not the key, is on the command line. */
        argv[k++] = "--model";
        argv[k++] = c->p.worker_model_path ? c->p.worker_model_path : c->p.model_path;
        argv[k++] = "--key-file";
        argv[k++] = c->p.key_file;
    }
    argv[k] = NULL;

    if (!c->envp)
        return st_error_set(err, ST_ERR_INVALID, "cluster: no environment for workers");
    pid = fork();
    if (pid < 0)
        return st_error_set(err, ST_ERR_IO, "cannot start a worker: fork: %s", strerror(errno));
    if (pid == 0) {
        /* Child of a threaded process: only async-signal-safe calls until
         * exec, so the environment was prepared beforehand. */
        if (c->p.worker_log) {
            int fd = open(c->p.worker_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) {
                dup2(fd, 2);
                close(fd);
            }
        }
        /* Nothing of ours crosses exec: UCX's sockets (its TCP transport's
         * listeners) and the front door's are not close-on-exec, and a
         * worker holding them would answer on the coordinator's ports. */
        close_fds_from(3);
        execve(c->bin, (char *const *)argv, c->envp);
        _exit(127);
    }
    c->children[index] = pid;
    c->child_started_ns[index] = st_now_ns();
    st_info(MOD, "started local worker %s (pid %d)", name, (int)pid);
    return ST_OK;
}

/* Restart back-off: a worker that dies again and again (a bad host, a
 * poisoned input, an attacker) is restarted after 0.25 s, 0.5 s, 1 s, ...
 * up to 30 s, so a crash loop costs little CPU and cannot flood the plan
 * with joins; one that ran for a minute starts a fresh count. */
#define CL_RESPAWN_MIN_MS  250u
#define CL_RESPAWN_MAX_MS  30000u
#define CL_RESPAWN_STABLE_NS (60ull * 1000000000ull)

static uint64_t respawn_delay_ms(uint32_t fails)
{
    uint64_t d = CL_RESPAWN_MIN_MS;
    for (uint32_t i = 1; i < fails && d < CL_RESPAWN_MAX_MS; i++)
        d *= 2;
    return d < CL_RESPAWN_MAX_MS ? d : CL_RESPAWN_MAX_MS;
}

static void count_pending(st_cluster_t *c, int restarted)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_children; i++)
        n += c->child_respawn_ns[i] != 0;
    pthread_mutex_lock(&c->lock);
    c->restarts_pending = n;
    c->restarts_total += (uint64_t)restarted;
    pthread_mutex_unlock(&c->lock);
}

/* Called by the control thread: reaps dead children and restarts them
 * once their back-off has passed. */
void cl_local_check(st_cluster_t *c)
{
    uint64_t now = st_now_ns();
    int changed = 0, restarted = 0;

    for (uint32_t i = 0; i < c->n_children; i++) {
        int status;
        pid_t r;
        if (c->children[i] <= 0) {
            if (c->child_respawn_ns[i] && now >= c->child_respawn_ns[i] &&
                !atomic_load(&c->stop)) {
                st_error_t err;
                st_error_clear(&err);
                c->child_respawn_ns[i] = 0;
                changed = 1;
                if (cl_spawn(c, i, &err) != ST_OK)
                    st_error(MOD, "%s", err.msg);
                else
                    restarted++;
            }
            continue;
        }
        r = waitpid(c->children[i], &status, WNOHANG);
        if (r != c->children[i])
            continue;
        c->children[i] = 0;
        if (WIFSIGNALED(status))
            st_warn(MOD, "local worker local-%u was killed by signal %d", i, WTERMSIG(status));
        else
            st_warn(MOD, "local worker local-%u exited with status %d", i, WEXITSTATUS(status));
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
            continue;   /* could not even start: respawning would spin */
        if (c->p.respawn && !atomic_load(&c->stop)) {
            if (now - c->child_started_ns[i] > CL_RESPAWN_STABLE_NS)
                c->child_fails[i] = 0;
            c->child_fails[i]++;
            uint64_t ms = respawn_delay_ms(c->child_fails[i]);
            c->child_respawn_ns[i] = now + ms * 1000000ull;
            changed = 1;
            st_warn(MOD, "local worker local-%u: died %u time(s) in a row; restarting it in "
                    "%.2f s", i, c->child_fails[i], (double)ms / 1000.0);
        }
    }
    if (changed)
        count_pending(c, restarted);
}

void cl_local_stop(st_cluster_t *c)
{
    uint64_t deadline = st_now_ns() + 3000000000ull;
    int sent_term = 0;

    for (;;) {
        uint32_t alive = 0;
        for (uint32_t i = 0; i < c->n_children; i++) {
            int status;
            if (c->children[i] <= 0)
                continue;
            if (waitpid(c->children[i], &status, WNOHANG) == c->children[i])
                c->children[i] = 0;
            else
                alive++;
        }
        if (!alive)
            break;
        if (st_now_ns() >= deadline) {
            for (uint32_t i = 0; i < c->n_children; i++)
                if (c->children[i] > 0)
                    kill(c->children[i], sent_term ? SIGKILL : SIGTERM);
            if (sent_term) {
                for (uint32_t i = 0; i < c->n_children; i++)
                    if (c->children[i] > 0) {
                        waitpid(c->children[i], NULL, 0);
                        c->children[i] = 0;
                    }
                break;
            }
            sent_term = 1;
            deadline = st_now_ns() + 2000000000ull;
        }
        usleep(20000);
    }
    free(c->envp);
    free(c->env_secret);
    c->envp = NULL;
    c->env_secret = NULL;
}

st_status_t st_cluster_local_create(const st_cluster_params_t *params, st_pipeline_t *out,
                                    st_error_t *err)
{
    st_cluster_params_t p;
    st_cluster_t *c;
    uint8_t raw[32];
    st_status_t st;
    ssize_t n;

    if (!params || params->size < sizeof(*params))
        return st_error_set(err, ST_ERR_INVALID, "cluster: missing parameters");
    if (params->n_workers == 0 || params->n_workers > CL_MAX_CHILDREN ||
        params->n_workers > ST_CTRL_MAX_STAGES)
        return st_error_set(err, ST_ERR_RANGE, "cluster: 1..%d local workers", ST_CTRL_MAX_STAGES);
    p = *params;
    if (!p.listen)
        p.listen = "127.0.0.1:0";
    if (!p.data_listen)
        p.data_listen = "127.0.0.1:0";
    /* A fresh secret per cluster, hex so it is a printable env value. */
    if (st_ctrl_random(raw, sizeof(raw)) != ST_OK)
        return st_error_set(err, ST_ERR_BACKEND, "cluster: no random source for the secret");
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf((char *)p.secret + 2 * i, 3, "%02x", raw[i]);
    p.secret_len = 2 * sizeof(raw);

    /* Pinning each local worker to its own cores pays when the machine has
     * a core left for the coordinator; with fewer, pinned workers cannot
     * move away from the coordinator or any other process and lose time
     * (measured on 2 cores, 2 workers, a busy machine: 200 tokens in
     * 3.3-3.9 s pinned against 1.6-2.1 s unpinned). */
    {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        if (p.bind && ncpu > 0 && ncpu < (long)p.n_workers + 1) {
            st_info(MOD, "%ld CPUs for %u local workers and the coordinator: not binding "
                    "the workers", ncpu, p.n_workers);
            p.bind = 0;
        }
    }
    st = cl_start(&p, &c, err);
    if (st != ST_OK)
        return st;
    memcpy(c->secret_hex, p.secret, p.secret_len);
    c->secret_hex[p.secret_len] = '\0';
    c->p.respawn = params->respawn;
    if (params->worker_log) {
        snprintf(c->log_copy, sizeof(c->log_copy), "%s", params->worker_log);
        c->p.worker_log = c->log_copy;
    }
    st = make_env(c, err);
    if (st != ST_OK)
        goto err;
    if (params->strata_bin) {
        snprintf(c->bin, sizeof(c->bin), "%s", params->strata_bin);
    } else {
        n = readlink("/proc/self/exe", c->bin, sizeof(c->bin) - 1);
        if (n <= 0) {
            st = st_error_set(err, ST_ERR_IO, "cluster: cannot find the strata binary");
            goto err;
        }
        c->bin[n] = '\0';
    }
    /* The control thread reaps and respawns children; it reads entry i only
     * once n_children (published with release order) covers it. */
    for (uint32_t i = 0; i < p.n_workers; i++) {
        st = cl_spawn(c, i, err);
        if (st != ST_OK)
            goto err;
        __atomic_store_n(&c->n_children, i + 1, __ATOMIC_RELEASE);
    }
    st = cl_wait_running(c, p.join_timeout_ms, p.load_timeout_ms, err);
    if (st != ST_OK)
        goto err;
    st_cluster_pipeline(c, out);
    return ST_OK;
err:
    st_cluster_free(c);
    return st;
}
