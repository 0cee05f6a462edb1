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

#endif /* ST_CLI_UTIL_H */
