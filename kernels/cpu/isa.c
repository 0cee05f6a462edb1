/*
 * isa.c - instruction-set detection, the STRATA_CPU_ISA override and the
 * read-bandwidth probe.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_impl.h"
#include "st_util.h"

#if defined(__x86_64__) && !defined(STRATA_NO_SIMD)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ST_ARCH_REQ_XCOMP_PERM 0x1023
#define ST_XFEATURE_XTILEDATA  18

/* AMX-TILE and AMX-INT8 in CPUID.(7,0):EDX, tile state enabled in XCR0, and
 * the kernel's permission to use it (Linux 5.16+ hands it out on request). */
static int amx_usable(void)
{
    unsigned a, b, c, d;
    if (!st_cpu_amx_built() || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 25)))
        return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))   /* OSXSAVE */
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17))
        return 0;
    return syscall(SYS_arch_prctl, ST_ARCH_REQ_XCOMP_PERM, ST_XFEATURE_XTILEDATA) == 0;
}
#endif

#if defined(__x86_64__) && !defined(STRATA_NO_SIMD)
/* F16C by CPUID (leaf 1, ECX bit 29): clang 14's __builtin_cpu_supports
 * does not know the "f16c" name, and the fuzz build uses clang. */
static int cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

int st_cpu_isa_supported(st_cpu_isa_t isa)
{
    switch (isa) {
    case ST_CPU_ISA_SCALAR:
        return 1;
#if defined(__x86_64__) && !defined(STRATA_NO_SIMD)
    case ST_CPU_ISA_AVX2:
        /* __builtin_cpu_supports also checks that the OS saves the state. */
        __builtin_cpu_init();
        return st_cpu_kernels_avx2() != NULL && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma") && cpu_has_f16c();
    case ST_CPU_ISA_AVX512:
        __builtin_cpu_init();
        return st_cpu_kernels_avx512() != NULL && st_cpu_isa_supported(ST_CPU_ISA_AVX2) &&
               __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
    case ST_CPU_ISA_AMX:
        return st_cpu_isa_supported(ST_CPU_ISA_AVX512) && amx_usable();
#endif
    default:
        return 0;
    }
}

st_cpu_isa_t st_cpu_isa_best(void)
{
    if (st_cpu_isa_supported(ST_CPU_ISA_AMX))
        return ST_CPU_ISA_AMX;
    if (st_cpu_isa_supported(ST_CPU_ISA_AVX512))
        return ST_CPU_ISA_AVX512;
    if (st_cpu_isa_supported(ST_CPU_ISA_AVX2))
        return ST_CPU_ISA_AVX2;
    return ST_CPU_ISA_SCALAR;
}

const char *st_cpu_isa_name(st_cpu_isa_t isa)
{
    switch (isa) {
    case ST_CPU_ISA_SCALAR: return "scalar";
    case ST_CPU_ISA_AVX2:   return "avx2";
    case ST_CPU_ISA_AVX512: return "avx512vnni";
    case ST_CPU_ISA_AMX:    return "avx512amx";
    default:                return "unknown";
    }
}

st_status_t st_cpu_isa_select(st_cpu_isa_t *out, st_error_t *err)
{
    const char *e = getenv("STRATA_CPU_ISA");
    st_cpu_isa_t isa;

    if (!e || !*e) {
        *out = st_cpu_isa_best();
        return ST_OK;
    }
    if (!strcmp(e, "scalar"))
        isa = ST_CPU_ISA_SCALAR;
    else if (!strcmp(e, "avx2"))
        isa = ST_CPU_ISA_AVX2;
    else if (!strcmp(e, "avx512") || !strcmp(e, "avx512vnni"))
        isa = ST_CPU_ISA_AVX512;
    else if (!strcmp(e, "amx") || !strcmp(e, "avx512amx"))
        isa = ST_CPU_ISA_AMX;
    else
        return st_error_set(err, ST_ERR_INVALID,
                            "STRATA_CPU_ISA='%.32s': expected scalar, avx2, avx512 or amx", e);
    if (!st_cpu_isa_supported(isa))
        return st_error_set(err, ST_ERR_UNSUPPORTED,
                            "STRATA_CPU_ISA=%s: this CPU (or build) does not support it", e);
    *out = isa;
    return ST_OK;
}

const char *st_cpu_isa_string(void)
{
    st_cpu_isa_t isa = ST_CPU_ISA_SCALAR;
    if (st_cpu_isa_select(&isa, NULL) != ST_OK)
        return "unknown";
    return st_cpu_isa_name(isa);
}

void st_cpu_kernels_get(st_cpu_isa_t isa, st_cpu_kernels_t *out)
{
    switch (isa) {
    case ST_CPU_ISA_AMX:
        /* AVX-512 for everything but the prefill matmul */
        *out = *st_cpu_kernels_avx512();
        st_cpu_kernels_amx_patch(out);
        break;
    case ST_CPU_ISA_AVX512: *out = *st_cpu_kernels_avx512(); break;
    case ST_CPU_ISA_AVX2:   *out = *st_cpu_kernels_avx2(); break;
    default:                *out = *st_cpu_kernels_scalar(); break;
    }
}

int st_cpu_int_activations(st_cpu_isa_t isa, int type)
{
    st_cpu_kernels_t k;
    if (type == ST_DTYPE_Q4_0 || type == ST_DTYPE_Q4_1 || type == ST_DTYPE_Q8_0)
        return 1;
    if (type != ST_DTYPE_Q5_0 && type != ST_DTYPE_Q5_1)
        return 0;
    st_cpu_kernels_get(isa, &k);
    return k.qgemv_q5;
}

/* ---- read bandwidth ---- */

/* A spin barrier: the probe's threads must start each pass together so the
 * passes overlap; pthread barriers cannot shrink if a thread fails to start. */
typedef struct bw_sync {
    _Atomic int go;          /* 1: run, -1: abort (a thread failed to start) */
    _Atomic int arrived;
    _Atomic int phase;
    int         n;
} bw_sync_t;

typedef struct bw_job {
    const uint64_t *buf;
    size_t          words;     /* this thread's share */
    int             passes;
    bw_sync_t      *sync;
    uint64_t        sink;
    double          best_s;    /* fastest pass, this thread */
} bw_job_t;

static void bw_barrier(bw_sync_t *s)
{
    int phase = atomic_load(&s->phase);
    if (atomic_fetch_add(&s->arrived, 1) == s->n - 1) {
        atomic_store(&s->arrived, 0);
        atomic_fetch_add(&s->phase, 1);
    } else {
        while (atomic_load(&s->phase) == phase)
            sched_yield();
    }
}

/* Eight independent accumulators let the compiler keep several loads in
 * flight (and vectorize); the xor makes every word matter. */
static uint64_t read_words(const uint64_t *p, size_t n)
{
    uint64_t a[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] ^= p[i + j];
    for (; i < n; i++)
        a[0] ^= p[i];
    return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

static void *bw_thread(void *arg)
{
    bw_job_t *j = arg;
    uint64_t sink = 0;
    int go;

    j->best_s = 1e30;
    while ((go = atomic_load(&j->sync->go)) == 0)
        sched_yield();
    if (go < 0)
        return NULL;
    for (int pass = 0; pass < j->passes; pass++) {
        bw_barrier(j->sync);
        uint64_t t0 = st_now_ns();
        sink ^= read_words(j->buf, j->words);
        double s = (double)(st_now_ns() - t0) * 1e-9;
        if (pass > 0 && s < j->best_s)   /* pass 0 warms TLB and caches */
            j->best_s = s;
    }
    j->sink = sink;
    return NULL;
}

double st_cpu_read_bandwidth_gbps(size_t bytes, int threads)
{
    const int passes = 8;
    size_t words = bytes / 8, per;
    uint64_t *buf = NULL;
    bw_job_t *jobs = NULL;
    pthread_t *tids = NULL;
    bw_sync_t sync = { .n = threads };
    double worst = 0.0, result = -1.0;
    int started;

    if (threads < 1 || threads > 1024 || words < (size_t)threads * 8)
        return -1.0;
    buf = aligned_alloc(64, ST_ALIGN_UP(words * 8, (size_t)64));
    jobs = calloc((size_t)threads, sizeof *jobs);
    tids = calloc((size_t)threads, sizeof *tids);
    if (!buf || !jobs || !tids)
        goto out;
    for (size_t i = 0; i < words; i++)      /* fault every page in */
        buf[i] = i * 0x9e3779b97f4a7c15ull;
    per = words / (size_t)threads;
    for (int t = 0; t < threads; t++) {
        jobs[t].buf = buf + (size_t)t * per;
        jobs[t].words = t == threads - 1 ? words - (size_t)t * per : per;
        jobs[t].passes = passes;
        jobs[t].sync = &sync;
    }
    for (started = 1; started < threads; started++)
        if (pthread_create(&tids[started], NULL, bw_thread, &jobs[started]) != 0)
            break;
    atomic_store(&sync.go, started == threads ? 1 : -1);
    if (started == threads)
        bw_thread(&jobs[0]);
    for (int t = 1; t < started; t++)
        pthread_join(tids[t], NULL);
    if (started < threads)
        goto out;
    /* The slowest thread's best pass bounds the aggregate rate. */
    for (int t = 0; t < threads; t++)
        if (jobs[t].best_s > worst)
            worst = jobs[t].best_s;
    if (worst > 0.0 && worst < 1e30)
        result = (double)(words * 8) / worst * 1e-9;
out:
    free(buf);
    free(jobs);
    free(tids);
    return result;
}

#ifdef STRATA_NO_SIMD
/* Non-x86 builds compile no SIMD files; the scalar level is the only one. */
const st_cpu_kernels_t *st_cpu_kernels_avx2(void)
{
    return NULL;
}

const st_cpu_kernels_t *st_cpu_kernels_avx512(void)
{
    return NULL;
}
#endif

#if defined(STRATA_NO_SIMD) || defined(STRATA_NO_AMX)
int st_cpu_amx_built(void)
{
    return 0;
}

void st_cpu_kernels_amx_patch(st_cpu_kernels_t *k)
{
    (void)k;
}
#endif
