/*
 * st_util.h - small helpers used everywhere: internal asserts, checked size
 * arithmetic, clocks.
 *
 * Two kinds of checks (SQLite's habit): ST_ASSERT is for internal invariants
 * and disappears with NDEBUG; input from outside is never checked with it,
 * but with real code that returns an st_status_t.
 */
#ifndef ST_UTIL_H
#define ST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef NDEBUG
#  define ST_ASSERT(cond) ((void)0)
#else
#  include <assert.h>
#  define ST_ASSERT(cond) assert(cond)
#endif

#define ST_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ST_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ST_MAX(a, b) ((a) > (b) ? (a) : (b))
#define ST_UNUSED(x) ((void)(x))
#define ST_ALIGN_UP(x, a) (((x) + ((a) - 1)) / (a) * (a))
#define ST_LIKELY(x)   __builtin_expect(!!(x), 1)
#define ST_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Checked arithmetic on sizes: return 1 on overflow, else write *out. */
static inline int st_mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
static inline int st_add_overflow_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

/* Monotonic clock in nanoseconds. */
static inline uint64_t st_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double st_now_s(void)
{
    return (double)st_now_ns() * 1e-9;
}

#endif /* ST_UTIL_H */
