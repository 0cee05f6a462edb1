/*
 * audit.c - the audit log file: one ECS JSON line per request (the line is
 * audit_line.c's), appended with a single write(2) and, when sync is on,
 * fdatasync(2) before the response is completed, so a line the client has
 * seen acknowledged survives a crash. The prompt is never written, only
 * its SHA-256.
 *
 * Each line carries the SHA-256 of the line before it (a hash chain, see
 * st_http_audit.h), across restarts and rotations: at open the last line
 * of the current file - or, when that is empty, of the newest rotated one -
 * is read back to continue from.
 *
 * Rotation: the configured path is the current file; it is renamed to
 * path.YYYY-MM-DD (the UTC day of its first line; .1, .2 ... when that name
 * is taken, e.g. after a size rotation) at the first write of a later UTC
 * day, at open when it holds an earlier day, and beyond max_bytes. After
 * each rotation, and at open, rotated files past retain_days are removed.
 * The clock is the record's own timestamp (and the caller's now_ms at
 * open), which is what lets tests drive rotation with made-up times.
 */
#include "http_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "st_log.h"

/* Lines are well under 2 KiB; this much of a file's end always holds the
 * last whole line, and of its start the first. */
#define EDGE_WINDOW (256u << 10)

struct st_http_audit {
    char    *path;
    char    *dir;                  /* directory of path, for retention */
    char    *base;                 /* file name of path */
    int      fd;
    uint64_t size;
    uint64_t max_bytes;
    uint32_t retain_days;
    int      sync;
    int64_t  day;                  /* UTC day of the current file's first line */
    uint64_t seq;                  /* of the last line written, 0 before the first */
    char     prev[65];             /* SHA-256 of the last line */
    int      need_nl;              /* a torn line ends the file: next write starts with '\n' */
    uint8_t  key[ST_HTTP_AUDIT_KEY_MAX];
    size_t   key_len;
};

static st_status_t open_current(st_http_audit_t *a, st_error_t *err)
{
    struct stat sb;
    /* O_RDWR: the last line is read back through the same descriptor. */
    int fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
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
    a->need_nl = 0;
    return ST_OK;
}

static int read_at(int fd, uint64_t off, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* The seq of a chained line; 0 when the line is not one (older format,
 * foreign, broken). */
static uint64_t line_seq(const char *line, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    json_t *seq = o ? json_object_get(o, "strata.audit.seq") : NULL;
    json_t *prev = o ? json_object_get(o, "strata.audit.prev_sha256") : NULL;
    uint64_t v = 0;
    if (json_is_integer(seq) && json_integer_value(seq) > 0 && json_is_string(prev))
        v = (uint64_t)json_integer_value(seq);
    json_decref(o);
    return v;
}

/* The UTC day of a line's "@timestamp" (or an older strata's "ts"). */
static int line_day(const char *line, size_t len, int64_t *day)
{
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    json_t *ts = o ? json_object_get(o, "@timestamp") : NULL;
    int ok;
    if (o && !ts)
        ts = json_object_get(o, "ts");
    ok = json_is_string(ts) && st_http_audit_day_parse(json_string_value(ts), day);
    json_decref(o);
    return ok;
}

/* Where the chain of a non-empty file stands: *seq and prev of its last
 * line; *chained 0 when that line has no chain fields; *torn when the file
 * does not end with a newline (a write cut short), whose fragment then
 * counts as a line of its own: the next line chains from it, and the
 * checker reports it. */
static st_status_t file_end(int fd, uint64_t size, int *chained, uint64_t *seq, char prev[65],
                            int *torn)
{
    size_t n = (size_t)(size < EDGE_WINDOW ? size : EDGE_WINDOW);
    char *buf;
    size_t end, start;

    if (n == 0)
        return ST_ERR_INVALID;
    if (!(buf = malloc(n)))
        return ST_ERR_NOMEM;
    if (read_at(fd, size - n, buf, n) != 0) {
        free(buf);
        return ST_ERR_IO;
    }
    end = n;
    *torn = buf[end - 1] != '\n';
    if (*torn) {
        start = end;
        while (start > 0 && buf[start - 1] != '\n')
            start--;
        st_http_sha256_hex(buf + start, end - start, prev);
        end = start;                   /* the whole line before the fragment, if any */
    }
    *seq = 0;
    *chained = 1;
    if (end > 0) {
        end--;                         /* drop its newline */
        start = end;
        while (start > 0 && buf[start - 1] != '\n')
            start--;
        *seq = line_seq(buf + start, end - start);
        *chained = *seq > 0;
        if (!*torn)
            st_http_sha256_hex(buf + start, end - start, prev);
    }
    if (*torn)
        (*seq)++;
    free(buf);
    return ST_OK;
}

static int64_t file_first_day(int fd, uint64_t size, int64_t fallback)
{
    size_t n = (size_t)(size < EDGE_WINDOW ? size : EDGE_WINDOW);
    char *buf = malloc(n ? n : 1), *nl;
    int64_t day = fallback;
    struct stat sb;

    if (buf && read_at(fd, 0, buf, n) == 0 && (nl = memchr(buf, '\n', n)) &&
        line_day(buf, (size_t)(nl - buf), &day)) {
        free(buf);
        return day;
    }
    free(buf);
    /* Unreadable first line: the file's own age is the best guess. */
    if (fstat(fd, &sb) == 0)
        day = st_http_audit_day((int64_t)sb.st_mtime * 1000);
    return day;
}

static void retention(st_http_audit_t *a, int64_t today)
{
    DIR *d;
    struct dirent *e;
    if (!a->retain_days || !(d = opendir(a->dir)))
        return;
    while ((e = readdir(d))) {
        int64_t day;
        uint32_t n;
        struct stat sb;
        if (!st_http_audit_rotated_name(a->base, e->d_name, &day, &n) ||
            !st_http_audit_expired(day, today, a->retain_days) ||
            fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            st_info("audit", "removed %s/%s: past the %u-day retention", a->dir, e->d_name,
                    a->retain_days);
        else
            st_warn("audit", "cannot remove %s/%s: %s", a->dir, e->d_name, strerror(errno));
    }
    closedir(d);
}

/* The newest rotated file (by day, then .N), NULL when none (caller frees). */
static char *newest_rotated(const st_http_audit_t *a)
{
    DIR *d = opendir(a->dir);
    struct dirent *e;
    char *best = NULL;
    int64_t bday = 0;
    uint32_t bn = 0;
    if (!d)
        return NULL;
    while ((e = readdir(d))) {
        int64_t day;
        uint32_t n;
        if (!st_http_audit_rotated_name(a->base, e->d_name, &day, &n))
            continue;
        if (!best || day > bday || (day == bday && n > bn)) {
            char *p = malloc(strlen(a->dir) + strlen(e->d_name) + 2);
            if (!p)
                continue;
            sprintf(p, "%s/%s", a->dir, e->d_name);
            free(best);
            best = p;
            bday = day;
            bn = n;
        }
    }
    closedir(d);
    return best;
}

static void continue_from_rotated(st_http_audit_t *a)
{
    char *p = newest_rotated(a);
    int fd, chained = 0, torn = 0;
    struct stat sb;
    uint64_t seq = 0;
    char prev[65];

    if (!p)
        return;
    fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size > 0 &&
        file_end(fd, (uint64_t)sb.st_size, &chained, &seq, prev, &torn) == ST_OK && chained) {
        a->seq = seq;
        memcpy(a->prev, prev, sizeof(prev));
    }
    if (fd >= 0)
        close(fd);
    free(p);
}

static st_status_t rotate(st_http_audit_t *a, st_error_t *err)
{
    size_t n = strlen(a->path) + 32;
    char *to = malloc(n), date[11];
    struct stat sb;
    st_status_t st;
    uint32_t i;

    if (!to)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    st_http_audit_day_str(a->day, date);
    /* One process writes the log, so a stat before the rename is enough
     * to never replace a rotated file. */
    for (i = 0; i < 100000; i++) {
        if (i == 0)
            snprintf(to, n, "%s.%s", a->path, date);
        else
            snprintf(to, n, "%s.%s.%u", a->path, date, i);
        if (lstat(to, &sb) != 0 && errno == ENOENT)
            break;
    }
    if (i == 100000 || rename(a->path, to) != 0) {
        st = st_error_set(err, ST_ERR_IO, "audit log: cannot rotate %s to %s: %s", a->path, to,
                          i == 100000 ? "no free name" : strerror(errno));
        free(to);
        return st;
    }
    if (a->sync) {
        int dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    free(to);
    return open_current(a, err);
}

static st_status_t split_path(st_http_audit_t *a)
{
    const char *slash = strrchr(a->path, '/');
    if (!slash) {
        a->dir = strdup(".");
        a->base = strdup(a->path);
    } else {
        a->dir = slash == a->path ? strdup("/") : strndup(a->path, (size_t)(slash - a->path));
        a->base = strdup(slash + 1);
    }
    return a->dir && a->base ? ST_OK : ST_ERR_NOMEM;
}

st_status_t st_http_audit_open(const st_http_audit_params_t *p, st_http_audit_t **out,
                               st_error_t *err)
{
    st_http_audit_t *a = calloc(1, sizeof(*a));
    int64_t today = st_http_audit_day(p->now_ms);
    char *key_path = NULL;
    int created = 0;
    st_status_t st;

    if (!a)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    a->fd = -1;
    a->max_bytes = p->max_bytes ? p->max_bytes : 64ull << 20;
    a->retain_days = p->retain_days;
    a->sync = p->sync;
    a->day = today;
    memcpy(a->prev, ST_HTTP_AUDIT_GENESIS, sizeof(a->prev));
    if (!(a->path = strdup(p->path)) || split_path(a) != ST_OK || !a->base[0]) {
        st = a->path && a->base && !a->base[0]
                 ? st_error_set(err, ST_ERR_INVALID, "audit log %s: not a file name", p->path)
                 : st_error_set(err, ST_ERR_NOMEM, "out of memory");
        goto err;
    }
    if ((st = open_current(a, err)) != ST_OK)
        goto err;
    if (a->size > 0) {
        int chained, torn;
        if ((st = file_end(a->fd, a->size, &chained, &a->seq, a->prev, &torn)) != ST_OK) {
            st = st_error_set(err, st, "audit log %s: cannot read its last line", a->path);
            goto err;
        }
        a->need_nl = torn;
        a->day = file_first_day(a->fd, a->size, today);
        if (torn)
            st_warn("audit", "%s ends in a cut-off line (a failed write): it stays, and "
                    "`strata audit verify` will name it", a->path);
        if (!chained) {
            st_warn("audit", "%s holds lines without a hash chain (an older strata): it is "
                    "rotated away and the chain starts afresh", a->path);
            a->seq = 0;
            memcpy(a->prev, ST_HTTP_AUDIT_GENESIS, sizeof(a->prev));
        }
        if ((!chained || a->day < today) && (st = rotate(a, err)) != ST_OK)
            goto err;
    } else {
        continue_from_rotated(a);
    }
    retention(a, today);

    if (p->hmac_key_path) {
        st = st_http_audit_key_load(p->hmac_key_path, 0, a->key, &a->key_len, NULL, err);
    } else {
        if (!(key_path = malloc(strlen(a->path) + sizeof(".hmac-key")))) {
            st = st_error_set(err, ST_ERR_NOMEM, "out of memory");
            goto err;
        }
        sprintf(key_path, "%s.hmac-key", a->path);
        st = st_http_audit_key_load(key_path, 1, a->key, &a->key_len, &created, err);
        if (st == ST_OK && created)
            st_warn("audit", "generated the HMAC key for export watermarks at %s (mode 0600); "
                    "auditors need it for `strata audit verify --hmac-key` "
                    "(or give one with --audit-hmac-key)", key_path);
        free(key_path);
    }
    if (st != ST_OK)
        goto err;
    *out = a;
    return ST_OK;

err:
    st_http_audit_close(a);
    return st;
}

void st_http_audit_close(st_http_audit_t *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    OPENSSL_cleanse(a->key, sizeof(a->key));
    free(a->path);
    free(a->dir);
    free(a->base);
    free(a);
}

static ssize_t write_all(int fd, const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    return (ssize_t)off;
}

st_status_t st_http_audit_write(st_http_audit_t *a, const st_http_audit_rec_t *r)
{
    int64_t day = st_http_audit_day(r->ts_ms);
    size_t len;
    ssize_t w;
    char *line = st_http_audit_format(r, a->seq + 1, a->prev, &len);
    st_status_t st = ST_OK;

    if (!line)
        return ST_ERR_NOMEM;
    if (a->size > 0 && (day > a->day || a->size + len > a->max_bytes)) {
        st_error_t err;
        /* A rotation that fails (a full or read-only directory) must not
         * cost the line: it goes on in the file at hand, retried tomorrow. */
        if (rotate(a, &err) != ST_OK) {
            st_warn("audit", "%s", err.msg);
            a->day = day;
        } else {
            retention(a, day);
        }
    }
    if (a->size == 0)
        a->day = day;
    if (a->need_nl) {
        if (write_all(a->fd, "\n", 1) != 1) {
            st = ST_ERR_IO;
            goto out;
        }
        a->need_nl = 0;
        a->size++;
    }
    /* O_APPEND and one write per line: lines never interleave. */
    w = write_all(a->fd, line, len);
    if (w > 0) {
        /* Even a cut-short line is in the file now: chain from what is
         * there, so the checker names that line and nothing after it. */
        a->seq++;
        st_http_sha256_hex(line, (size_t)w < len ? (size_t)w : len - 1, a->prev);
        a->size += (uint64_t)w;
        a->need_nl = (size_t)w < len;
    }
    if ((size_t)w != len)
        st = ST_ERR_IO;
    else if (a->sync && fdatasync(a->fd) != 0)
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

st_status_t st_http_audit_export(st_http_audit_t *a, uint32_t lines, const char *reader,
                                 char **out, size_t *len)
{
    st_http_buf_t b = {0};
    char *text;
    size_t n, i = 0;
    st_status_t st = st_http_audit_tail(a, lines, &text, &n);

    if (st != ST_OK)
        return st;
    while (i < n) {
        char *nl = memchr(text + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - text) : n;
        if (end > i)
            st_http_audit_watermark(&b, text + i, end - i, reader, a->key, a->key_len);
        i = end + 1;
    }
    free(text);
    if (b.oom) {
        st_http_buf_free(&b);
        return ST_ERR_NOMEM;
    }
    *out = b.p ? b.p : strdup("");
    *len = b.len;
    return *out ? ST_OK : ST_ERR_NOMEM;
}
