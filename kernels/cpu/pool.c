/*
 * pool.c - fork/join over persistent threads: a generation counter that is
 * also the futex word, and a job word that workers join through.
 *
 * Joining is what keeps a busy machine from stalling us: the caller waits
 * only for workers that joined the job before it closed it, never for a
 * worker the OS has not scheduled yet (on 2 shared cores a descheduled
 * worker would otherwise cost a whole time slice per op). Jobs therefore
 * hand out work dynamically; see pool.h.
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "st_log.h"
#include "st_util.h"

/* Spin iterations before a worker sleeps. One pause is ~40-140 cycles, so
 * this is on the order of 100 us: longer than the gap between two ops of a
 * forward pass, far shorter than the gap between requests. */
#define POOL_SPIN_WORKER 4000
/* The caller spins on the join; after this many pauses it yields, which
 * matters when more threads run than there are free cores. */
#define POOL_SPIN_JOIN   2000

typedef struct pool_thread {
    st_pool_t *pool;
    int        ith;
    pthread_t  tid;
} pool_thread_t;

struct st_pool {
    int             n;            /* threads including the caller */
    pool_thread_t  *threads;      /* [n], index 0 unused (the caller) */
    int             n_started;
    /* Written by the caller before the generation is bumped (release) and
     * read by workers after they see the bump (acquire). */
    st_pool_fn      fn;
    void           *arg;
    int             nth;
    _Atomic int     stop;         /* read by workers that may skip a job */
    _Alignas(64) _Atomic uint32_t gen;
    _Alignas(64) _Atomic int      n_sleeping;
    /* Job word: generation in the high 32 bits, then JOB_CLOSED, the job's
     * nth - 1 (bits 16..30) and the number of workers that joined (0..15). */
    _Alignas(64) _Atomic uint64_t job;
    _Alignas(64) _Atomic int      finished;   /* joined workers done */
};

#define JOB_CLOSED (1ull << 31)
#define JOB_COUNT  0xFFFFull
#define JOB_NTH(w) ((int)(((w) >> 16) & 0x7FFF) + 1)

/* Joins job `g` if it is still open and short of workers: returns this
 * worker's ith (1..nth-1), or 0 when it must sit this one out. */
static int job_join(st_pool_t *pool, uint32_t g)
{
    uint64_t cur = atomic_load_explicit(&pool->job, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(cur >> 32) != g || (cur & JOB_CLOSED) ||
            (int)(cur & JOB_COUNT) >= JOB_NTH(cur) - 1)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&pool->job, &cur, cur + 1,
                                                  memory_order_acq_rel, memory_order_acquire))
            return (int)(cur & JOB_COUNT) + 1;
    }
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void *worker_main(void *p)
{
    pool_thread_t *t = p;
    st_pool_t *pool = t->pool;
    uint32_t seen = 0;

    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen) {
            if (++spins < POOL_SPIN_WORKER) {
                cpu_relax();
                continue;
            }
            /* Dekker with the caller: we announce sleeping, then the kernel
             * re-checks gen; the caller bumps gen, then checks n_sleeping.
             * seq_cst on both sides means one of us sees the other. */
            atomic_fetch_add(&pool->n_sleeping, 1);
            if (atomic_load(&pool->gen) == seen)
                futex_wait(&pool->gen, seen);
            atomic_fetch_sub(&pool->n_sleeping, 1);
            spins = 0;
        }
        seen = g;
        if (atomic_load_explicit(&pool->stop, memory_order_acquire))
            break;
        /* job_join's acquire makes fn/arg/nth of generation g visible, and
         * the caller keeps them until this worker reports finished. */
        int ith = job_join(pool, g);
        if (ith > 0) {
            pool->fn(pool->arg, ith, JOB_NTH(atomic_load_explicit(&pool->job,
                                                                  memory_order_relaxed)));
            atomic_fetch_add_explicit(&pool->finished, 1, memory_order_release);
        }
    }
    return NULL;
}

/* Publishes a new job (fn/arg/nth already written) and wakes sleepers. */
static void pool_kick(st_pool_t *pool)
{
    uint32_t g = atomic_load_explicit(&pool->gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool->finished, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->job, (uint64_t)g << 32 | (uint64_t)(pool->nth - 1) << 16,
                          memory_order_release);
    atomic_store(&pool->gen, g);              /* seq_cst: see worker_main */
    if (atomic_load(&pool->n_sleeping) > 0)
        futex_wake_all(&pool->gen);
}

/* Closes the job to latecomers and waits for the workers that joined. */
static void pool_join(st_pool_t *pool)
{
    uint64_t prev = atomic_fetch_or_explicit(&pool->job, JOB_CLOSED, memory_order_acq_rel);
    int joined = (int)(prev & JOB_COUNT), spins = 0;
    while (atomic_load_explicit(&pool->finished, memory_order_acquire) < joined) {
        if (++spins < POOL_SPIN_JOIN) {
            cpu_relax();
        } else {
            sched_yield();
            spins = 0;
        }
    }
}

st_status_t st_pool_create(int n_threads, st_pool_t **out, st_error_t *err)
{
    st_status_t status;
    st_pool_t *pool;

    if (n_threads < 1 || n_threads > 1024)   /* the job word counts up to 0xFFFF joiners */
        return st_error_set(err, ST_ERR_INVALID, "thread pool: %d threads out of range 1..1024",
                            n_threads);
    pool = calloc(1, sizeof *pool);
    if (!pool)
        return st_error_set(err, ST_ERR_NOMEM, "thread pool: out of memory");
    pool->n = n_threads;
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    if (!pool->threads) {
        status = st_error_set(err, ST_ERR_NOMEM, "thread pool: out of memory");
        goto err_pool;
    }
    for (int i = 1; i < n_threads; i++) {
        pool_thread_t *t = &pool->threads[i];
        int rc;
        t->pool = pool;
        t->ith = i;
        rc = pthread_create(&t->tid, NULL, worker_main, t);
        if (rc != 0) {
            status = st_error_set(err, ST_ERR_BACKEND, "thread pool: pthread_create: %s",
                                  strerror(rc));
            goto err_threads;
        }
        pool->n_started++;
    }
    *out = pool;
    return ST_OK;

err_threads:
    atomic_store_explicit(&pool->stop, 1, memory_order_release);
    pool->nth = 1;
    pool_kick(pool);
    for (int i = 1; i <= pool->n_started; i++)
        pthread_join(pool->threads[i].tid, NULL);
    free(pool->threads);
err_pool:
    free(pool);
    return status;
}

void st_pool_destroy(st_pool_t *pool)
{
    if (!pool)
        return;
    atomic_store_explicit(&pool->stop, 1, memory_order_release);
    pool->nth = 1;
    pool_kick(pool);
    for (int i = 1; i <= pool->n_started; i++)
        pthread_join(pool->threads[i].tid, NULL);
    free(pool->threads);
    free(pool);
}

int st_pool_size(const st_pool_t *pool)
{
    return pool->n;
}

void st_pool_run(st_pool_t *pool, st_pool_fn fn, void *arg, int nth)
{
    if (nth <= 0 || nth > pool->n)
        nth = pool->n;
    if (nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    pool->nth = nth;
    pool_kick(pool);
    fn(arg, 0, nth);
    pool_join(pool);
}
