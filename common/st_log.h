/*
 * st_log.h - leveled logging to stderr.
 *
 * The threshold comes from the STRATA_LOG environment variable
 * (error|warn|info|debug|trace, default info) and is read on each call:
 * logging is never on the per-token path, and reading it lazily keeps the
 * module free of mutable global state.
 */
#ifndef ST_LOG_H
#define ST_LOG_H

typedef enum st_log_level {
    ST_LOG_ERROR = 0,
    ST_LOG_WARN  = 1,
    ST_LOG_INFO  = 2,
    ST_LOG_DEBUG = 3,
    ST_LOG_TRACE = 4
} st_log_level_t;

void st_log_at(st_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int st_log_enabled(st_log_level_t level);

#define st_error(mod, ...) st_log_at(ST_LOG_ERROR, mod, __VA_ARGS__)
#define st_warn(mod, ...)  st_log_at(ST_LOG_WARN,  mod, __VA_ARGS__)
#define st_info(mod, ...)  st_log_at(ST_LOG_INFO,  mod, __VA_ARGS__)
#define st_debug(mod, ...) st_log_at(ST_LOG_DEBUG, mod, __VA_ARGS__)

#endif /* ST_LOG_H */
