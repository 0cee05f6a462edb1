/*
 * cli_util.h - small helpers shared by the command files: option parsing
 * with checked numbers, the default model location, and the entry points
 * `strata launch` calls in-process.
 */
#ifndef ST_CLI_UTIL_H
#define ST_CLI_UTIL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_dtype.h"
#include "st_plan.h"

/* Parses a whole decimal/float argument or reports the option by name. */
static inline int cli_parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "strata: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* A memory size: bytes, or with K/M/G/T or KiB/MiB/GiB/TiB (binary), > 0. */
static inline int cli_parse_size(const char *opt, const char *s, uint64_t *out)
{
    uint64_t v;
    if (st_plan_parse_size(s, &v) || v == 0) {
        fprintf(stderr, "strata: %s expects a size (bytes, or with K/M/G/KiB/MiB/GiB), "
                "got '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static inline int cli_parse_double(const char *opt, const char *s, double lo, double hi,
                                   double *out)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "strata: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns argv[i+1] for an option that takes a value, or NULL (reported). */
static inline const char *cli_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "strata: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

/* The control plane's default port: `--control-port` of coordinator and
 * launch, and the port `worker --join HOST` assumes. */
#define ST_CLI_CONTROL_PORT 7700

/* A cluster secret handed over in memory: `strata launch` gives the
 * per-job secret rank 0 drew (and MPI broadcast) to the coordinator or
 * worker it runs in the same process, so the secret never appears in argv,
 * the environment or a file. NULL: the command loads --secret-file or
 * $STRATA_CLUSTER_SECRET as usual. */
typedef struct st_cli_secret {
    const uint8_t *bytes;
    size_t         len;
} st_cli_secret_t;

/* `strata coordinator` / `strata worker` with an optional in-memory secret
 * (st_cmd_coordinator / st_cmd_worker pass NULL). */
int st_cmd_coordinator_run(int argc, char **argv, const st_cli_secret_t *secret);
int st_cmd_worker_run(int argc, char **argv, const st_cli_secret_t *secret);

/* The value of --key-file or --key-pkcs11: both end up as the key "path"
 * st_crypt_key_load takes (a PKCS#11 URI starts with "pkcs11:"), so local
 * workers are handed the same string. NULL (after a message) when
 * --key-pkcs11 is not given a pkcs11: URI. */
static inline const char *cli_key_value(const char *opt, const char *v)
{
    if (!strcmp(opt, "--key-pkcs11") && strncmp(v, "pkcs11:", 7) != 0) {
        fprintf(stderr, "strata: --key-pkcs11 takes a PKCS#11 URI (pkcs11:token=...;object=..."
                "?module-path=...&x-wrapped-key=...), got '%s'\n", v);
        return NULL;
    }
    return v;
}

/* --kv-type f32|f16|q8_0: the KV cache's element type (st_dtype.h). */
/* serve and coordinator: prefix-cache pool over all stages (README, "Prefix reuse"). */
#define CLI_PREFIX_CACHE_DEFAULT (256ull << 20)

static inline int cli_kv_type(const char *opt, const char *v, uint32_t *out)
{
    if (st_kv_type_parse(v, out)) {
        fprintf(stderr, "strata: %s expects one of %s, got '%s'\n", opt, ST_KV_TYPE_NAMES, v);
        return -1;
    }
    return 0;
}

/* The KV type when --kv-type was not given: f16, except on the CUDA
 * backend, whose kernels keep an f32 cache (it refuses f16/q8_0 asked for
 * explicitly). */
static inline uint32_t cli_kv_default(const char *backend)
{
    return backend && !strcmp(backend, "cuda") ? ST_DTYPE_F32 : ST_KV_TYPE_DEFAULT;
}

#define CLI_KV_TYPE_USAGE \
    "      --kv-type T      KV cache elements: f16 (default; f32 on cuda), f32, q8_0\n"

#endif /* ST_CLI_UTIL_H */
