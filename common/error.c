#include "st_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

st_status_t st_error_set(st_error_t *err, st_status_t status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return status;
}

void st_error_prefix(st_error_t *err, const char *fmt, ...)
{
    char pre[ST_ERROR_MAX], old[ST_ERROR_MAX];
    va_list ap;

    if (!err) return;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    snprintf(err->msg, sizeof(err->msg), "%s: %s", pre, old);
}
