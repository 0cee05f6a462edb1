/*
 * pool.h - the CPU backend's persistent thread pool (fork/join).
 *
 * n_threads counts the calling thread: a pool of 2 starts one worker. The
 * workers are created once, with the backend; an op runs
 *
 *   st_pool_run(pool, fn, arg, nth);   // fn(arg, ith, nth) on threads 0..nth-1
 *
 * where thread 0 is the caller. Workers that are running join the job; the
 * caller runs fn too, then closes the job and waits only for the workers
 * that joined. A worker the OS has not scheduled in time simply misses the
 * job, so on a busy machine fn may run on fewer than nth threads (always
 * at least on the caller, ith 0, and never twice with one ith).
 *
 * fn must therefore share its work dynamically: each thread claims pieces
 * from an atomic counter until none are left (the matmul driver hands out
 * fixed 16-row chunks that way). Results then never depend on which thread
 * ran what, nor on how many ran.
 *
 * Workers wait for the next job by spinning briefly (ops of one forward
 * pass follow each other within microseconds) and then sleeping on a
 * futex, so an idle backend uses no CPU.
 */
#ifndef ST_CPU_POOL_H
#define ST_CPU_POOL_H

#include "st_error.h"
#include "st_status.h"

typedef struct st_pool st_pool_t;
typedef void (*st_pool_fn)(void *arg, int ith, int nth);

st_status_t st_pool_create(int n_threads, st_pool_t **out, st_error_t *err);
void        st_pool_destroy(st_pool_t *pool);
int         st_pool_size(const st_pool_t *pool);
/* Runs fn on up to min(nth, size) threads (nth <= 0: all), the caller
 * included, and returns when all that joined are done. Not reentrant: one
 * job at a time, from one caller thread. */
void        st_pool_run(st_pool_t *pool, st_pool_fn fn, void *arg, int nth);

#endif /* ST_CPU_POOL_H */
