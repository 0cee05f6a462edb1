/*
 * bench_kernels.c - `strata bench kernels`: the CPU matmul on the real
 * model's shapes (SmolLM2-135M, Q4_1 layers + Q8_0 output head), per ISA
 * level, against the machine's measured read bandwidth.
 *
 * Decode (n = 1) streams every weight once per token, so it is reported as
 * GB/s of weights read; to read from memory as a real decode does, each
 * shape is replicated as many times as the model has such matrices (about
 * 96 MB in all) and one pass walks all copies. Prefill (n = 128) is compute
 * bound and reported in GFLOP/s (2 * rows * cols * n per matmul) on one
 * copy. Every figure is the median over repetitions. The "model" lines sum
 * the shapes as one token (decode) or one 128-token prompt (prefill) would
 * use them: matmul time only, without attention and the small ops; a
 * prompt needs logits for its last token only, so prefill counts the
 * output head at n = 1.
 *
 * `--types q4_k,q5_0,...` (or `all`) adds, per level, one line per weight
 * type on a 576x1536 matrix (the ffn_down shape: its width suits every
 * block size), replicated over ~96 MB for the n = 1 figure, so that types
 * can be compared on the same shape.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_cpu.h"
#include "st_dtype.h"
#include "st_kernels.h"
#include "st_util.h"

const char st_bench_kernels_help[] =
    "CPU matmul GB/s (n=1) and GFLOP/s (n=128) on the model's shapes per ISA level";

typedef struct shape {
    const char *name;
    int         type, rows, cols;
    int         count;      /* matrices of this shape in the model */
} shape_t;

static const shape_t shapes[] = {
    {"attn_q/attn_output q4_1 576x576",  ST_DTYPE_Q4_1, 576,   576,  60},
    {"attn_k/attn_v q4_1 192x576",       ST_DTYPE_Q4_1, 192,   576,  60},
    {"ffn_gate/ffn_up q4_1 1536x576",    ST_DTYPE_Q4_1, 1536,  576,  60},
    {"ffn_down q4_1 576x1536",           ST_DTYPE_Q4_1, 576,   1536, 30},
    {"output q8_0 49152x576",            ST_DTYPE_Q8_0, 49152, 576,  1},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])
#define PREFILL_N 128

/* The per-type table: every weight type on one shape (--types). */
#define TYPE_ROWS 576
#define TYPE_COLS 1536
#define TYPE_ARENA (96u << 20)
#define MAX_TYPES 16

typedef struct result {
    double dec_s, dec_gbps;      /* per matmul, n = 1, weights streamed */
    double hot_gbps;             /* n = 1, one copy repeated: cache resident */
    double pre_s, pre_gflops;    /* per matmul, n = PREFILL_N */
} result_t;

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float frand(uint64_t *s)
{
    return (float)((double)(rng(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

/* Random blocks with realistic fp16 scales (random bytes there could be
 * inf/nan and make timing meaningless on some paths). */
static uint8_t *make_weights(const shape_t *sh, size_t *bytes, uint64_t *s)
{
    size_t rb = (size_t)st_dtype_row_bytes((uint32_t)sh->type, (uint64_t)sh->cols);
    size_t n = rb * (size_t)sh->rows;
    size_t bsz = sh->type == ST_DTYPE_Q4_1 ? 20 : 34;
    uint8_t *w = aligned_alloc(64, ST_ALIGN_UP(n, (size_t)64));
    if (!w)
        return NULL;
    for (size_t i = 0; i < n; i++)
        w[i] = (uint8_t)rng(s);
    for (size_t b = 0; b < n / bsz; b++) {
        uint16_t d = st_f32_to_fp16(0.01f + 0.01f * frand(s)), m = st_f32_to_fp16(-0.08f);
        memcpy(w + b * bsz, &d, 2);
        if (sh->type == ST_DTYPE_Q4_1)
            memcpy(w + b * bsz + 2, &m, 2);
    }
    *bytes = n;
    return w;
}

/* fp16 fields per block (byte offsets) of the block types: set to sane
 * scales in a buffer of random bytes, as make_weights does. */
static int f16_fields(int type, int off[2])
{
    switch (type) {
    case ST_DTYPE_Q4_0: case ST_DTYPE_Q5_0: case ST_DTYPE_Q8_0:
        off[0] = 0; return 1;
    case ST_DTYPE_Q4_1: case ST_DTYPE_Q5_1: case ST_DTYPE_Q4_K: case ST_DTYPE_Q5_K:
        off[0] = 0; off[1] = 2; return 2;
    case ST_DTYPE_Q2_K: off[0] = 80; off[1] = 82; return 2;
    case ST_DTYPE_Q3_K: off[0] = 108; return 1;
    case ST_DTYPE_Q6_K: off[0] = 208; return 1;
    default: return 0;
    }
}

/* Makes the first `bytes` of the random arena valid weights of `type`:
 * finite scales, and finite non-subnormal values for plain floats. */
static void patch_arena(uint8_t *a, size_t bytes, int type, uint64_t *s)
{
    const st_dtype_traits_t *tr = st_dtype_traits((uint32_t)type);
    int off[2], nf = f16_fields(type, off);
    if (type == ST_DTYPE_F32) {
        for (size_t i = 0; i + 4 <= bytes; i += 4) {
            float v = frand(s);
            memcpy(a + i, &v, 4);
        }
    } else if (type == ST_DTYPE_F16 || type == ST_DTYPE_BF16) {
        for (size_t i = 0; i + 2 <= bytes; i += 2) {
            uint16_t v = type == ST_DTYPE_F16 ? st_f32_to_fp16(frand(s)) : st_f32_to_bf16(frand(s));
            memcpy(a + i, &v, 2);
        }
    } else {
        for (size_t b = 0; b + tr->block_bytes <= bytes; b += tr->block_bytes)
            for (int k = 0; k < nf; k++) {
                uint16_t d = st_f32_to_fp16(0.01f + 0.01f * frand(s));
                memcpy(a + b + off[k], &d, 2);
            }
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Times `fn` passes until at least min_reps and min_s, at most max_reps;
 * returns the median pass time in seconds. */
#define MAX_REPS 41
static double time_passes(st_backend_t *be, st_tensor_t *ws, int copies, const float *x, int n,
                          float *out, int min_reps, double min_s)
{
    double t[MAX_REPS], start = st_now_s();
    int reps = 0;
    for (int c = 0; c < copies; c++)   /* warm-up pass */
        be->ops->matmul(be->ctx, &ws[c], x, n, out);
    while (reps < MAX_REPS && (reps < min_reps || st_now_s() - start < min_s)) {
        double t0 = st_now_s();
        for (int c = 0; c < copies; c++)
            be->ops->matmul(be->ctx, &ws[c], x, n, out);
        t[reps++] = st_now_s() - t0;
    }
    return median(t, reps);
}

/* One per-type line: copies of a TYPE_ROWS x TYPE_COLS weight of `type`
 * over the arena (patched for the type), timed like the model shapes. */
static void bench_type(st_backend_t *be, int type, uint8_t *arena, const float *x, float *out,
                       int min_reps, double min_s, result_t *r, uint64_t *seed)
{
    st_tensor_t *ws;
    uint64_t rb = st_dtype_row_bytes((uint32_t)type, TYPE_COLS);
    size_t bytes = (size_t)rb * TYPE_ROWS;
    int copies = (int)(TYPE_ARENA / bytes), hot = ST_MIN(copies, 8);
    double flops = 2.0 * TYPE_ROWS * TYPE_COLS * PREFILL_N;

    ws = calloc((size_t)copies, sizeof *ws);
    if (!ws) {
        memset(r, 0, sizeof *r);
        return;
    }
    patch_arena(arena, (size_t)copies * bytes, type, seed);
    for (int c = 0; c < copies; c++) {
        st_tensor_t *t = &ws[c];
        t->name = "bench.type";
        t->type = (st_dtype_t)type;
        t->n_dims = 2;
        t->ne[0] = TYPE_COLS;
        t->ne[1] = TYPE_ROWS;
        t->ne[2] = t->ne[3] = 1;
        t->row_bytes = rb;
        t->nbytes = bytes;
        t->data = arena + (size_t)c * bytes;
    }
    r->dec_s = time_passes(be, ws, copies, x, 1, out, min_reps, min_s) / copies;
    r->dec_gbps = (double)bytes / r->dec_s * 1e-9;
    for (int c = 1; c < hot; c++)
        ws[c] = ws[0];
    r->hot_gbps = (double)bytes / (time_passes(be, ws, hot, x, 1, out, min_reps, min_s) / hot) * 1e-9;
    r->pre_s = time_passes(be, ws, 1, x, PREFILL_N, out, min_reps, min_s);
    r->pre_gflops = flops / r->pre_s * 1e-9;
    free(ws);
}

static int bench_isa(st_cpu_isa_t isa, int threads, const float *x, float *out,
                     st_tensor_t *const *ws, result_t *res, int quiet, const int *types,
                     int n_types, uint8_t *arena, result_t *tres)
{
    static const char *const env[] = {"scalar", "avx2", "avx512", "amx"};
    st_backend_params_t p = { .size = sizeof p, .n_threads = threads, .max_batch = PREFILL_N,
                              .max_cols = 1536 };
    st_backend_t be;
    st_error_t err = {{0}};
    st_status_t st;
    /* The scalar level is ~50x slower; fewer repetitions keep the run short. */
    int min_reps = isa == ST_CPU_ISA_SCALAR ? 3 : 9;
    double min_s = isa == ST_CPU_ISA_SCALAR ? 0.2 : 0.4;

    setenv("STRATA_CPU_ISA", env[isa], 1);
    st = st_backend_open("cpu", &p, &be, &err);
    unsetenv("STRATA_CPU_ISA");
    if (st != ST_OK) {
        fprintf(stderr, "bench kernels: %s\n", err.msg);
        return -1;
    }
    if (!quiet)
        printf("\n[%s]\n%-34s %10s %9s %9s %11s %10s\n", be.ops->describe(be.ctx), "shape",
               "n=1 us", "GB/s", "hot GB/s", "n=128 ms", "GFLOP/s");
    for (size_t i = 0; i < N_SHAPES; i++) {
        const shape_t *sh = &shapes[i];
        double bytes = (double)ws[i][0].nbytes;
        double flops = 2.0 * sh->rows * sh->cols * PREFILL_N;
        res[i].dec_s = time_passes(&be, ws[i], sh->count, x, 1, out, min_reps, min_s) / sh->count;
        res[i].dec_gbps = bytes / res[i].dec_s * 1e-9;
        /* The same copy over and over: what the kernel does when the weights
         * come from cache, i.e. its compute speed. */
        {
            st_tensor_t rep[8];
            for (int c = 0; c < 8; c++)
                rep[c] = ws[i][0];
            res[i].hot_gbps = bytes / (time_passes(&be, rep, 8, x, 1, out, min_reps, min_s) / 8) * 1e-9;
        }
        res[i].pre_s = time_passes(&be, ws[i], 1, x, PREFILL_N, out, min_reps, min_s);
        res[i].pre_gflops = flops / res[i].pre_s * 1e-9;
        if (!quiet)
            printf("%-34s %10.1f %9.1f %9.1f %11.3f %10.1f\n", sh->name, res[i].dec_s * 1e6,
                   res[i].dec_gbps, res[i].hot_gbps, res[i].pre_s * 1e3, res[i].pre_gflops);
    }
    uint64_t seed = 7;
    for (int i = 0; i < n_types; i++) {
        char name[40];
        bench_type(&be, types[i], arena, x, out, min_reps, min_s, &tres[i], &seed);
        snprintf(name, sizeof name, "type %s %dx%d", st_dtype_name(types[i]), TYPE_ROWS, TYPE_COLS);
        if (!quiet)
            printf("%-34s %10.1f %9.1f %9.1f %11.3f %10.1f\n", name, tres[i].dec_s * 1e6,
                   tres[i].dec_gbps, tres[i].hot_gbps, tres[i].pre_s * 1e3, tres[i].pre_gflops);
    }
    st_backend_close(&be);
    return 0;
}

/* Matmul seconds per decoded token and per PREFILL_N-token prompt. */
static void model_times(const result_t *r, double *dec, double *pre)
{
    *dec = *pre = 0;
    for (size_t i = 0; i < N_SHAPES; i++) {
        *dec += r[i].dec_s * shapes[i].count;
        *pre += (shapes[i].rows == 49152 ? r[i].dec_s : r[i].pre_s) * shapes[i].count;
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: strata bench kernels [--threads N] [--isa scalar|avx2|avx512|amx] "
               "[--types LIST|all] [--json]\n"
               "  --threads N  backend threads including the caller (default: all cores)\n"
               "  --isa L      only this level (default: every level the CPU supports)\n"
               "  --types L    also every weight type in L (comma separated: q4_k,q5_0,...; all:\n"
               "               every supported type) on a %dx%d matrix\n"
               "  --json       one JSON object on stdout instead of the table\n", TYPE_ROWS, TYPE_COLS);
}

/* "q4_k,q5_0" or "all" -> type numbers; -1 on an unknown name. */
static int parse_types(const char *list, int *types)
{
    int n = 0;
    if (!strcmp(list, "all")) {
        for (uint32_t t = 0; t < ST_DTYPE_COUNT_ && n < MAX_TYPES; t++)
            if (st_dtype_valid(t))
                types[n++] = (int)t;
        return n;
    }
    while (*list) {
        size_t len = strcspn(list, ",");
        int found = -1;
        for (uint32_t t = 0; t < ST_DTYPE_COUNT_; t++)
            if (st_dtype_valid(t) && strlen(st_dtype_name(t)) == len &&
                !strncmp(st_dtype_name(t), list, len))
                found = (int)t;
        if (found < 0 || n == MAX_TYPES) {
            fprintf(stderr, "bench kernels: unknown weight type '%.*s'\n", (int)len, list);
            return -1;
        }
        types[n++] = found;
        list += len + (list[len] == ',');
    }
    return n;
}

int st_bench_kernels(int argc, char **argv)
{
    int types[MAX_TYPES], n_types = 0;
    uint8_t *arena = NULL;
    static result_t tres[ST_CPU_ISA_COUNT_][MAX_TYPES];
    int threads = 0, json = 0, only = -1, rc = 1;
    uint64_t seed = 42;
    st_tensor_t *ws[N_SHAPES] = {0};
    result_t res[ST_CPU_ISA_COUNT_][N_SHAPES];
    int ran[ST_CPU_ISA_COUNT_] = {0};
    float *x = NULL, *out = NULL;
    double total_bytes = 0, bw;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--types") && i + 1 < argc) {
            n_types = parse_types(argv[++i], types);
            if (n_types < 0) {
                usage(stderr);
                return 2;
            }
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *v = argv[++i];
            only = !strcmp(v, "scalar") ? 0 : !strcmp(v, "avx2") ? 1
                 : !strcmp(v, "avx512") || !strcmp(v, "avx512vnni") ? 2
                 : !strcmp(v, "amx") || !strcmp(v, "avx512amx") ? 3 : -2;
            if (only == -2) {
                usage(stderr);
                return 2;
            }
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }

    x = aligned_alloc(64, (size_t)PREFILL_N * 1536 * sizeof *x);
    out = malloc((size_t)PREFILL_N * 49152 * sizeof *out);
    if (!x || !out)
        goto out;
    for (size_t i = 0; i < (size_t)PREFILL_N * 1536; i++)
        x[i] = frand(&seed) * 2.0f;
    if (n_types > 0) {
        arena = aligned_alloc(64, TYPE_ARENA);
        if (!arena)
            goto out;
        for (size_t i = 0; i < TYPE_ARENA; i += 8) {
            uint64_t v = rng(&seed);
            memcpy(arena + i, &v, 8);
        }
    }
    for (size_t i = 0; i < N_SHAPES; i++) {
        const shape_t *sh = &shapes[i];
        ws[i] = calloc((size_t)sh->count, sizeof *ws[i]);
        if (!ws[i])
            goto out;
        for (int c = 0; c < sh->count; c++) {
            st_tensor_t *t = &ws[i][c];
            size_t bytes;
            uint8_t *d = make_weights(sh, &bytes, &seed);
            if (!d)
                goto out;
            t->name = sh->name;
            t->type = (st_dtype_t)sh->type;
            t->n_dims = 2;
            t->ne[0] = (uint64_t)sh->cols;
            t->ne[1] = (uint64_t)sh->rows;
            t->ne[2] = t->ne[3] = 1;
            t->row_bytes = st_dtype_row_bytes((uint32_t)sh->type, (uint64_t)sh->cols);
            t->nbytes = bytes;
            t->data = d;
            total_bytes += (double)bytes;
        }
    }

    bw = st_cpu_read_bandwidth_gbps(96u << 20, threads);
    /* Other processes on the cores skew wall-clock medians; say how busy
     * the machine was. */
    double load1 = -1;
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf", &load1) != 1)
            load1 = -1;
        fclose(lf);
    }
    if (!json)
        printf("strata bench kernels: %d thread%s, best isa %s, weights %.1f MB, load average %.2f\n"
               "read bandwidth (96 MiB, %d threads): %.1f GB/s\n",
               threads, threads == 1 ? "" : "s", st_cpu_isa_name(st_cpu_isa_best()),
               total_bytes * 1e-6, load1, threads, bw);

    for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
        if ((only >= 0 && isa != only) || !st_cpu_isa_supported((st_cpu_isa_t)isa))
            continue;
        if (bench_isa((st_cpu_isa_t)isa, threads, x, out, ws, res[isa], json, types, n_types,
                      arena, tres[isa]) != 0)
            goto out;
        ran[isa] = 1;
        double dec = 0, pre = 0;
        model_times(res[isa], &dec, &pre);
        if (!json)
            printf("model decode (matmuls only): %.3f ms/token = %.0f tokens/s, %.1f GB/s\n"
                   "model prefill %d tokens (matmuls only): %.1f ms = %.0f tokens/s\n",
                   dec * 1e3, 1.0 / dec, total_bytes / dec * 1e-9, PREFILL_N, pre * 1e3,
                   PREFILL_N / pre);
    }

    if (json) {
        printf("{\"bench\":\"kernels\",\"threads\":%d,\"best_isa\":\"%s\",\"read_gbps\":%.2f,"
               "\"load_avg\":%.2f,\"weight_bytes\":%.0f,\"prefill_n\":%d,\"isa\":[",
               threads, st_cpu_isa_name(st_cpu_isa_best()), bw, load1, total_bytes, PREFILL_N);
        int first = 1;
        for (int isa = 0; isa < ST_CPU_ISA_COUNT_; isa++) {
            if (!ran[isa])
                continue;
            double dec = 0, pre = 0;
            model_times(res[isa], &dec, &pre);
            printf("%s{\"name\":\"%s\",\"shapes\":[", first ? "" : ",", st_cpu_isa_name(isa));
            first = 0;
            for (size_t i = 0; i < N_SHAPES; i++) {
                const result_t *r = &res[isa][i];
                printf("%s{\"name\":\"%s\",\"type\":\"%s\",\"rows\":%d,\"cols\":%d,\"count\":%d,"
                       "\"decode_us\":%.3f,\"decode_gbps\":%.3f,\"hot_gbps\":%.3f,\"prefill_ms\":%.4f,"
                       "\"prefill_gflops\":%.3f}",
                       i ? "," : "", shapes[i].name, st_dtype_name(shapes[i].type), shapes[i].rows,
                       shapes[i].cols, shapes[i].count, r->dec_s * 1e6, r->dec_gbps, r->hot_gbps, r->pre_s * 1e3,
                       r->pre_gflops);
            }
            printf("],\"types\":[");
            for (int i = 0; i < n_types; i++) {
                const result_t *r = &tres[isa][i];
                printf("%s{\"type\":\"%s\",\"rows\":%d,\"cols\":%d,\"decode_us\":%.3f,"
                       "\"decode_gbps\":%.3f,\"hot_gbps\":%.3f,\"prefill_ms\":%.4f,"
                       "\"prefill_gflops\":%.3f}", i ? "," : "", st_dtype_name(types[i]),
                       TYPE_ROWS, TYPE_COLS, r->dec_s * 1e6, r->dec_gbps, r->hot_gbps,
                       r->pre_s * 1e3, r->pre_gflops);
            }
            printf("],\"model_decode_ms\":%.4f,\"model_decode_tps\":%.1f,"
                   "\"model_prefill_ms\":%.3f,\"model_prefill_tps\":%.1f}",
                   dec * 1e3, 1.0 / dec, pre * 1e3, PREFILL_N / pre);
        }
        printf("]}\n");
    }
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "bench kernels: setup failed (out of memory?)\n");
    for (size_t i = 0; i < N_SHAPES; i++) {
        if (!ws[i])
            continue;
        for (int c = 0; c < shapes[i].count; c++)
            free((void *)ws[i][c].data);
        free(ws[i]);
    }
    free(arena);
    free(x);
    free(out);
    return rc;
}
