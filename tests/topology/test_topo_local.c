/*
 * test_topo_local.c - discovery on the machine the test runs on, checked
 * against what Linux says in /proc and /sys, and binding proven on a child
 * process: its Cpus_allowed_list and its memory policy after st_topo_bind.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "st_test.h"
#include "st_topo.h"

#define MPOL_BIND_MODE 2   /* linux/mempolicy.h: MPOL_BIND */

static st_topo_t *open_local(void)
{
    st_error_t err = {{0}};
    st_topo_t *t = NULL;
    st_topo_open_params_t p = { .size = sizeof(p), .no_cuda = 1 };
    if (st_topo_open(&p, &t, &err) != ST_OK) fprintf(stderr, "  %s\n", err.msg);
    return t;
}

/* Network interfaces backed by a device (what hwloc reports), from sysfs. */
static int sys_netdevs(char names[][32], int max)
{
    int n = 0;
    DIR *d = opendir("/sys/class/net");
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d)) && n < max;) {
        char p[300];
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof(p), "/sys/class/net/%s/device", e->d_name);
        if (access(p, F_OK) == 0) snprintf(names[n++], 32, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

ST_TEST(local_machine)
{
    st_topo_t *t = open_local();
    ST_REQUIRE(t);
    st_topo_summary_t s = st_topo_get_summary(t);
    cpu_set_t aff;
    ST_REQUIRE(sched_getaffinity(0, sizeof(aff), &aff) == 0);
    ST_CHECK(s.this_system == 1);
    ST_CHECK_MSG(s.n_pus >= (unsigned)CPU_COUNT(&aff), "%u PUs, affinity %d", s.n_pus, CPU_COUNT(&aff));
    ST_CHECK(s.n_numa >= 1 && s.n_cores >= 1 && s.n_cores <= s.n_pus);
    for (unsigned i = 0; i < s.n_numa; i++) {
        char p[128];
        snprintf(p, sizeof(p), "/sys/devices/system/node/node%u", st_topo_numa(t, i)->os_index);
        ST_CHECK_MSG(s.n_numa == 1 || access(p, F_OK) == 0, "%s", p);
        ST_CHECK(st_topo_numa(t, i)->memory_bytes > 0);
    }
    /* Every NIC netdev exists, and every device-backed netdev is found. */
    char names[64][32];
    int n = sys_netdevs(names, 64);
    ST_REQUIRE(n >= 0);
    unsigned found = 0;
    for (unsigned i = 0; i < s.n_nics; i++) {
        const st_topo_nic_t *nic = st_topo_nic(t, i);
        if (!nic->netdev) continue;
        char p[300];
        snprintf(p, sizeof(p), "/sys/class/net/%s", nic->netdev);
        ST_CHECK_MSG(access(p, F_OK) == 0, "%s", p);
        for (int k = 0; k < n; k++) found += !strcmp(names[k], nic->netdev);
        ST_CHECK(nic->ucx_dev && nic->ucx_dev[0]);
    }
    ST_CHECK_MSG(found == (unsigned)n, "hwloc found %u of the %d device-backed interfaces", found, n);

    st_error_t err;
    st_topo_place_t *pl = NULL;
    st_topo_place_params_t pp = { .size = sizeof(pp) };
    ST_REQUIRE(st_topo_place(t, &pp, &pl, &err) == ST_OK);
    unsigned expect = s.n_gpus ? s.n_gpus : s.n_numa;
    ST_CHECK(st_topo_place_count(pl) >= 1 && st_topo_place_count(pl) <= expect);
    for (unsigned i = 0; i < st_topo_place_count(pl); i++) {
        const st_topo_worker_t *w = st_topo_place_worker(pl, i);
        ST_CHECK(w->cpus && w->cpus[0] && w->explanation);
        ST_CHECK((w->nic >= 0) == (s.n_nics > 0));
        fprintf(stderr, "  %s\n", w->explanation);
    }
    st_topo_place_free(pl);
    st_topo_close(t);
}

static int read_status(pid_t pid, const char *key, char *out, size_t size)
{
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int rc = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            char *v = line + kl + 1;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\n")] = '\0';
            snprintf(out, size, "%s", v);
            rc = 0;
            break;
        }
    fclose(f);
    return rc;
}

/* What a thread sees of its own binding. */
typedef struct { int mode; unsigned long mask; char cpus[64]; } seen_t;

static void see_self(seen_t *s)
{
    unsigned long mask[16] = {0};
    int mode = -1;
    if (syscall(SYS_get_mempolicy, &mode, mask, 16 * 8 * sizeof(unsigned long), NULL, 0) != 0) mode = -1;
    s->mode = mode;
    s->mask = mask[0];
    cpu_set_t set;
    s->cpus[0] = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        size_t len = 0;
        for (int c = 0; c < CPU_SETSIZE && len + 8 < sizeof(s->cpus); c++)
            if (CPU_ISSET(c, &set)) len += (size_t)snprintf(s->cpus + len, sizeof(s->cpus) - len, "%s%d", len ? "," : "", c);
    }
}

static void *thread_main(void *arg)
{
    see_self(arg);
    return NULL;
}

ST_TEST(bind_child_process)
{
    st_topo_t *t = open_local();
    ST_REQUIRE(t);
    st_topo_summary_t s = st_topo_get_summary(t);
    if (s.n_pus < 2) { st_topo_close(t); ST_SKIP("one PU: a binding would not be observable"); }
    /* One worker per PU: the last worker owns one PU that is not the whole machine. */
    st_error_t err;
    st_topo_place_t *pl = NULL;
    st_topo_place_params_t pp = { .size = sizeof(pp), .n_workers = s.n_pus };
    ST_REQUIRE(st_topo_place(t, &pp, &pl, &err) == ST_OK);
    unsigned wi = st_topo_place_count(pl) - 1;
    const st_topo_worker_t *w = st_topo_place_worker(pl, wi);
    ST_REQUIRE(w->numa >= 0 && w->numa < 64);

    seen_t before;
    see_self(&before);
    ST_CHECK(before.mode != MPOL_BIND_MODE);   /* the test process itself is not bound */

    int up[2], down[2];
    ST_REQUIRE(pipe(up) == 0 && pipe(down) == 0);
    pid_t pid = fork();
    ST_REQUIRE(pid >= 0);
    if (pid == 0) {
        seen_t r[2];
        memset(r, 0, sizeof(r));
        st_error_t e;
        int ok = st_topo_bind(t, pl, wi, &e) == ST_OK;
        if (!ok) fprintf(stderr, "  child: %s\n", e.msg);
        see_self(&r[0]);
        pthread_t th;                      /* a thread started after binding inherits it */
        if (pthread_create(&th, NULL, thread_main, &r[1]) == 0) pthread_join(th, NULL);
        if (!ok) r[0].mode = -2;
        if (write(up[1], r, sizeof(r)) != (ssize_t)sizeof(r)) _exit(3);
        char c;
        if (read(down[0], &c, 1) != 1) _exit(4);   /* stay alive while the parent reads /proc */
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    seen_t r[2];
    ssize_t got = read(up[0], r, sizeof(r));
    char allowed[256] = "", mems[256] = "";
    int st_rc = read_status(pid, "Cpus_allowed_list", allowed, sizeof(allowed));
    read_status(pid, "Mems_allowed_list", mems, sizeof(mems));
    ST_CHECK(write(down[1], "x", 1) == 1);
    int status = 0;
    waitpid(pid, &status, 0);
    close(up[0]);
    close(down[1]);

    ST_REQUIRE(got == (ssize_t)sizeof(r));
    ST_REQUIRE(st_rc == 0);
    ST_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    fprintf(stderr, "  worker %u: cpus %s, numa %d; child Cpus_allowed_list %s, mempolicy mode %d mask 0x%lx\n",
            wi, w->cpus, w->numa, allowed, r[0].mode, r[0].mask);
    ST_CHECK_MSG(!strcmp(allowed, w->cpus), "Cpus_allowed_list '%s' != worker cpus '%s'", allowed, w->cpus);
    for (int k = 0; k < 2; k++) {
        ST_CHECK_MSG(r[k].mode == MPOL_BIND_MODE, "%s: mempolicy mode %d, want MPOL_BIND",
                     k ? "thread" : "main", r[k].mode);
        ST_CHECK_MSG(r[k].mask == (1ul << w->numa), "%s: nodemask 0x%lx", k ? "thread" : "main", r[k].mask);
        ST_CHECK_MSG(!strcmp(r[k].cpus, w->cpus), "%s: affinity %s", k ? "thread" : "main", r[k].cpus);
    }
    st_topo_place_free(pl);
    st_topo_close(t);
}

ST_TEST(bind_thread_pins_one_core)
{
    st_topo_t *t = open_local();
    ST_REQUIRE(t);
    st_error_t err;
    st_topo_place_t *pl = NULL;
    st_topo_place_params_t pp = { .size = sizeof(pp), .n_workers = 1 };
    ST_REQUIRE(st_topo_place(t, &pp, &pl, &err) == ST_OK);
    pid_t pid = fork();
    ST_REQUIRE(pid >= 0);
    if (pid == 0) {
        /* Thread 1 of a worker owning every PU: its second core. */
        seen_t r;
        if (st_topo_bind_thread(t, pl, 0, 1, &err) != ST_OK) _exit(2);
        see_self(&r);
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof(set), &set) != 0) _exit(3);
        _exit(CPU_COUNT(&set) >= 1 && CPU_COUNT(&set) <= 2 && (st_topo_get_summary(t).n_cores < 2 || !CPU_ISSET(0, &set)) ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ST_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    st_topo_place_free(pl);
    st_topo_close(t);
}

int main(void) { return st_test_main(); }
