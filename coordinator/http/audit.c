/*
 * audit.c - the audit log: one JSON line per request, appended with a
 * single write(2) and, when sync is on, fdatasync(2) before the response
 * is completed, so a line the client has seen acknowledged survives a
 * crash. Rotation renames <file>.N-1 to <file>.N ... <file> to <file>.1.
 * The prompt itself is never written, only its SHA-256.
 */
#include "http_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct st_http_audit {
    char    *path;
    int      fd;
    uint64_t size;
    uint64_t max_bytes;
    uint32_t keep;
    int      sync;
};

static st_status_t audit_reopen(st_http_audit_t *a, st_error_t *err)
{
    struct stat sb;
    int fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "audit log %s: %s", a->path, strerror(errno));
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return st_error_set(err, ST_ERR_IO, "audit log %s: %s", a->path, strerror(errno));
    }
    if (a->fd >= 0)
        close(a->fd);
    a->fd = fd;
    a->size = (uint64_t)sb.st_size;
    return ST_OK;
}

st_status_t st_http_audit_open(const char *path, uint64_t max_bytes, uint32_t keep, int sync,
                               st_http_audit_t **out, st_error_t *err)
{
    st_http_audit_t *a = calloc(1, sizeof(*a));
    st_status_t st;
    if (!a)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    a->fd = -1;
    a->path = strdup(path);
    a->max_bytes = max_bytes ? max_bytes : 64ull << 20;
    a->keep = keep ? keep : 1;
    a->sync = sync;
    if (!a->path) {
        free(a);
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    }
    if ((st = audit_reopen(a, err)) != ST_OK) {
        st_http_audit_close(a);
        return st;
    }
    *out = a;
    return ST_OK;
}

void st_http_audit_close(st_http_audit_t *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    free(a->path);
    free(a);
}

static st_status_t audit_rotate(st_http_audit_t *a)
{
    size_t n = strlen(a->path) + 16;
    char *from = malloc(n), *to = malloc(n);
    st_status_t st = ST_OK;
    if (!from || !to) {
        st = ST_ERR_NOMEM;
        goto out;
    }
    for (uint32_t i = a->keep; i >= 1; i--) {
        if (i == 1)
            snprintf(from, n, "%s", a->path);
        else
            snprintf(from, n, "%s.%u", a->path, i - 1);
        snprintf(to, n, "%s.%u", a->path, i);
        if (rename(from, to) != 0 && errno != ENOENT) {
            st = ST_ERR_IO;
            goto out;
        }
    }
    st = audit_reopen(a, NULL);
out:
    free(from);
    free(to);
    return st;
}

char *st_http_audit_format(const st_http_audit_rec_t *r, size_t *len)
{
    st_http_buf_t b = {0};
    char ts[40];
    time_t secs = (time_t)(r->ts_ms / 1000);
    struct tm tm;
    const char *s;

    gmtime_r(&secs, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    st_http_buf_printf(&b, "{\"ts\":\"%s.%03dZ\",\"client_ip\":", ts, (int)(r->ts_ms % 1000));
    s = r->client_ip ? r->client_ip : "";
    st_http_buf_json_str(&b, s, strlen(s));
    st_http_buf_printf(&b, ",\"client_port\":%d,\"key_id\":", r->client_port);
    s = r->key_id ? r->key_id : "";
    st_http_buf_json_str(&b, s, strlen(s));
    st_http_buf_puts(&b, ",\"role\":");
    s = r->role ? r->role : "";
    st_http_buf_json_str(&b, s, strlen(s));
    st_http_buf_puts(&b, ",\"method\":");
    s = r->method ? r->method : "";
    st_http_buf_json_str(&b, s, strlen(s));
    st_http_buf_puts(&b, ",\"endpoint\":");
    s = r->endpoint ? r->endpoint : "";
    st_http_buf_json_str(&b, s, strnlen(s, 256));
    st_http_buf_printf(&b, ",\"status\":%d,\"prompt_sha256\":", r->status);
    s = r->prompt_sha256 ? r->prompt_sha256 : "";
    st_http_buf_json_str(&b, s, strlen(s));
    st_http_buf_printf(&b, ",\"prompt_tokens\":%u,\"completion_tokens\":%u,"
                       "\"response_bytes\":%llu,\"latency_ms\":%.3f}\n",
                       r->prompt_tokens, r->completion_tokens,
                       (unsigned long long)r->response_bytes, r->latency_ms);
    if (b.oom) {
        st_http_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

st_status_t st_http_audit_write(st_http_audit_t *a, const st_http_audit_rec_t *r)
{
    size_t len, off = 0;
    char *line = st_http_audit_format(r, &len);
    st_status_t st = ST_OK;

    if (!line)
        return ST_ERR_NOMEM;
    if (a->size > 0 && a->size + len > a->max_bytes && (st = audit_rotate(a)) != ST_OK)
        goto out;
    /* O_APPEND and one write per line: lines never interleave. */
    while (off < len) {
        ssize_t w = write(a->fd, line + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            st = ST_ERR_IO;
            goto out;
        }
        off += (size_t)w;
    }
    a->size += len;
    if (a->sync && fdatasync(a->fd) != 0)
        st = ST_ERR_IO;
out:
    free(line);
    return st;
}

st_status_t st_http_audit_tail(st_http_audit_t *a, uint32_t lines, char **out, size_t *len)
{
    /* Read at most the last 4 MiB: enough for thousands of lines. */
    const uint64_t window = 4ull << 20;
    int fd = open(a->path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    uint64_t start;
    char *buf;
    size_t n = 0, begin;
    uint32_t seen = 0;

    if (fd < 0)
        return ST_ERR_IO;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return ST_ERR_IO;
    }
    start = (uint64_t)sb.st_size > window ? (uint64_t)sb.st_size - window : 0;
    buf = malloc((size_t)((uint64_t)sb.st_size - start) + 1);
    if (!buf) {
        close(fd);
        return ST_ERR_NOMEM;
    }
    while (n < (size_t)((uint64_t)sb.st_size - start)) {
        ssize_t r = pread(fd, buf + n, (size_t)((uint64_t)sb.st_size - start) - n,
                          (off_t)(start + n));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    /* Walk back over `lines` newlines (the last byte is a newline). */
    begin = n;
    while (begin > 0) {
        if (buf[begin - 1] == '\n' && begin != n && ++seen == lines)
            break;
        begin--;
    }
    if (begin == 0 && start > 0) {       /* cut mid-line: skip the partial one */
        char *nl = memchr(buf, '\n', n);
        begin = nl ? (size_t)(nl - buf) + 1 : n;
    }
    memmove(buf, buf + begin, n - begin);
    n -= begin;
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return ST_OK;
}
