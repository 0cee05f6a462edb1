/*
 * cli_util.h - small helpers shared by the command files: option parsing
 * with checked numbers, and the default model location.
 */
#ifndef ST_CLI_UTIL_H
#define ST_CLI_UTIL_H

#include <errno.h>
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

#endif /* ST_CLI_UTIL_H */
