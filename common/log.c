#include "st_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static st_log_level_t threshold(void)
{
    const char *s = getenv("STRATA_LOG");
    if (!s || !*s)                  return ST_LOG_INFO;
    if (!strcmp(s, "error"))        return ST_LOG_ERROR;
    if (!strcmp(s, "warn"))         return ST_LOG_WARN;
    if (!strcmp(s, "debug"))        return ST_LOG_DEBUG;
    if (!strcmp(s, "trace"))        return ST_LOG_TRACE;
    return ST_LOG_INFO;
}

int st_log_enabled(st_log_level_t level)
{
    return level <= threshold();
}

void st_log_at(st_log_level_t level, const char *module, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug", "trace"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (!st_log_enabled(level))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld strata[%s] %s: ",
                 tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                 module ? module : "-", names[level]);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs of a whole line so concurrent writers do not interleave. */
    strncat(line, "\n", sizeof(line) - strlen(line) - 1);
    fputs(line, stderr);
}
