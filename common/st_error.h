/*
 * st_error.h - a caller-owned buffer for one human-readable error line.
 *
 * Functions that validate outside input (model files, wire messages, HTTP
 * requests) take an optional `st_error_t *err` and, on failure, write one
 * line that names the source, the field and the offending value, e.g.
 *   "model.gguf: tensor 'blk.3.attn_q.weight': dims 4294967296 x 4294967296 overflow".
 * The caller decides whether and where to print it; the library never does
 * both (log once, where detected, is the caller's choice here).
 */
#ifndef ST_ERROR_H
#define ST_ERROR_H

#include <stddef.h>
#include "st_status.h"

#define ST_ERROR_MAX 512

typedef struct st_error {
    char msg[ST_ERROR_MAX];
} st_error_t;

/* Formats into err (if not NULL) and returns `status` for one-line returns:
 *   return st_error_set(err, ST_ERR_FORMAT, "%s: bad magic 0x%08x", path, m); */
st_status_t st_error_set(st_error_t *err, st_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes existing text: "ctx: <old message>". */
void st_error_prefix(st_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void st_error_clear(st_error_t *err)
{
    if (err) err->msg[0] = '\0';
}

#endif /* ST_ERROR_H */
