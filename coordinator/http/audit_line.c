/*
 * audit_line.c - what one audit line is: an Elastic Common Schema document
 * with dotted keys ("client.ip", not {"client":{"ip":..}}), the form the
 * ecs-logging libraries write and Filebeat expands with expand_keys, and
 * one that lets an export append its watermark as two more top-level keys
 * without touching the bytes the chain hashed. Also the UTC day arithmetic
 * of rotation and retention, and the HMAC key file.
 */
#include "http_internal.h"

#include "st_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#define ECS_VERSION "8.11.0"

/* Client-supplied bytes (the path) may be any octets: bytes above 0x7f are
 * written as \u00XX too, so every line is valid UTF-8 JSON whatever was
 * sent, and a truncated multi-byte character cannot break it. */
static void put_str(st_http_buf_t *b, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = s ? strnlen(s, max) : 0;
    st_http_buf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"' || c == '\\') {
            e[1] = (char)c;
            st_http_buf_put(b, e, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            st_http_buf_put(b, e, 6);
        } else {
            st_http_buf_put(b, (const char *)&c, 1);
        }
    }
    st_http_buf_put(b, "\"", 1);
}

static void put_key_str(st_http_buf_t *b, const char *key, const char *v, size_t max)
{
    st_http_buf_printf(b, ",\"%s\":", key);
    put_str(b, v, max);
}

char *st_http_audit_format(const st_http_audit_rec_t *r, uint64_t seq, const char prev[65],
                           size_t *len)
{
    st_http_buf_t b = {0};
    char ts[40];
    time_t secs = (time_t)(r->ts_ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    st_http_buf_printf(&b, "{\"@timestamp\":\"%s.%03dZ\",\"ecs.version\":\"" ECS_VERSION "\","
                       "\"event.kind\":\"event\",\"event.category\":[\"web\"],"
                       "\"event.type\":[\"access\"],\"event.outcome\":\"%s\","
                       "\"event.duration\":%llu",
                       ts, (int)(r->ts_ms % 1000), r->status < 400 ? "success" : "failure",
                       (unsigned long long)r->duration_ns);
    put_key_str(&b, "client.ip", r->client_ip, 64);
    st_http_buf_printf(&b, ",\"client.port\":%d", r->client_port);
    if (r->key_id && *r->key_id) {
        put_key_str(&b, "user.id", r->key_id, 64);
        if (r->role && *r->role) {
            st_http_buf_puts(&b, ",\"user.roles\":[");
            put_str(&b, r->role, 32);
            st_http_buf_puts(&b, "]");
        }
    }
    put_key_str(&b, "http.request.method", r->method, 16);
    put_key_str(&b, "url.path", r->path, 256);
    st_http_buf_printf(&b, ",\"http.response.status_code\":%d,\"http.response.body.bytes\":%llu",
                       r->status, (unsigned long long)r->response_bytes);
    if (r->request_id && *r->request_id)
        put_key_str(&b, "strata.request.id", r->request_id, 64);
    if (r->generation) {
        if (r->model && *r->model)
            put_key_str(&b, "strata.model", r->model, 256);
        if (r->prompt_sha256 && *r->prompt_sha256)
            put_key_str(&b, "strata.prompt_sha256", r->prompt_sha256, 64);
        st_http_buf_printf(&b, ",\"strata.prompt_tokens\":%u,\"strata.completion_tokens\":%u",
                           r->prompt_tokens, r->completion_tokens);
    }
    /* Last, so a reader sees the whole record before the chain fields. */
    st_http_buf_printf(&b, ",\"strata.audit.seq\":%llu,\"strata.audit.prev_sha256\":\"%.64s\"}\n",
                       (unsigned long long)seq, prev);
    if (b.oom) {
        st_http_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

void st_http_audit_mac(const uint8_t *key, size_t key_len, const char *line, size_t len,
                       const char *reader, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    /* HMAC over line "\n" reader: a line never holds a raw newline, so
     * the split between the two is unambiguous. */
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    size_t outl = 0;
    out[0] = '\0';
    if (ctx && EVP_MAC_init(ctx, key, key_len, params) == 1 &&
        EVP_MAC_update(ctx, (const unsigned char *)line, len) == 1 &&
        EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) == 1 &&
        EVP_MAC_update(ctx, (const unsigned char *)reader, strlen(reader)) == 1 &&
        EVP_MAC_final(ctx, md, &outl, sizeof(md)) == 1)
        md_len = (unsigned int)outl;
    for (unsigned int i = 0; i < md_len && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
}

void st_http_audit_watermark(st_http_buf_t *b, const char *line, size_t len, const char *reader,
                             const uint8_t *key, size_t key_len)
{
    char mac[65];
    if (len < 2 || line[len - 1] != '}')
        return;                        /* not one of our lines: the caller skips it */
    st_http_audit_mac(key, key_len, line, len, reader, mac);
    st_http_buf_put(b, line, len - 1);
    st_http_buf_puts(b, ",\"strata.export.reader_id\":");
    put_str(b, reader, ST_HTTP_AUDIT_READER_MAX);
    st_http_buf_printf(b, ",\"strata.export.hmac_sha256\":\"%s\"}\n", mac);
}

/* ---- UTC days (H. Hinnant's civil-date algorithms: exact, no time zone,
 * no timegm) ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int64_t st_http_audit_day(int64_t ms)
{
    const int64_t day_ms = 86400000;
    return ms >= 0 ? ms / day_ms : -((-ms + day_ms - 1) / day_ms);
}

void st_http_audit_day_str(int64_t day, char out[11])
{
    int64_t y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    snprintf(out, 11, "%04d-%02u-%02u", (int)(y % 10000), m % 100, d % 100);
}

int st_http_audit_day_parse(const char *s, int64_t *day)
{
    int v[3] = {0, 0, 0};
    static const int width[3] = {4, 2, 2};
    int64_t y, z;
    unsigned m, d;
    for (int f = 0, i = 0; f < 3; f++) {
        for (int k = 0; k < width[f]; k++, i++) {
            if (s[i] < '0' || s[i] > '9')
                return 0;
            v[f] = v[f] * 10 + (s[i] - '0');
        }
        if (f < 2 && s[i++] != '-')
            return 0;
    }
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31)
        return 0;
    z = days_from_civil(v[0], (unsigned)v[1], (unsigned)v[2]);
    civil_from_days(z, &y, &m, &d);
    if (y != v[0] || m != (unsigned)v[1] || d != (unsigned)v[2])
        return 0;                      /* 2024-02-30 and the like */
    *day = z;
    return 1;
}

int st_http_audit_rotated_name(const char *base, const char *name, int64_t *day, uint32_t *n)
{
    size_t bl = strlen(base);
    const char *p;
    uint64_t v = 0;
    if (strncmp(name, base, bl) != 0 || name[bl] != '.')
        return 0;
    p = name + bl + 1;
    if (strlen(p) < 10 || !st_http_audit_day_parse(p, day))
        return 0;
    p += 10;
    if (*p == '\0') {
        *n = 0;
        return 1;
    }
    if (*p++ != '.' || *p == '\0' || *p == '0')
        return 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || (v = v * 10 + (uint64_t)(*p - '0')) > 1000000)
            return 0;
    }
    *n = (uint32_t)v;
    return 1;
}

int st_http_audit_expired(int64_t day, int64_t today, uint32_t retain_days)
{
    return retain_days > 0 && day < today - (int64_t)retain_days;
}

/* ---- the HMAC key file ---- */

static st_status_t key_create(const char *path, st_error_t *err)
{
    uint8_t raw[32];
    char hex[66];
    int fd;
    size_t off = 0;
    st_status_t st = ST_OK;

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return st_error_set(err, ST_ERR_BACKEND, "RAND_bytes failed");
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    hex[64] = '\n';
    OPENSSL_cleanse(raw, sizeof(raw));
    /* O_EXCL: never replace a key that exports were watermarked with. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        st = errno == EEXIST ? ST_OK
                             : st_error_set(err, ST_ERR_IO, "audit HMAC key %s: %s", path,
                                            strerror(errno));
        goto out;
    }
    while (off < 65) {
        ssize_t w = write(fd, hex + off, 65 - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            st = st_error_set(err, ST_ERR_IO, "audit HMAC key %s: %s", path, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (st == ST_OK && fsync(fd) != 0)
        st = st_error_set(err, ST_ERR_IO, "audit HMAC key %s: %s", path, strerror(errno));
    close(fd);
    if (st != ST_OK)
        unlink(path);
out:
    OPENSSL_cleanse(hex, sizeof(hex));
    return st;
}

st_status_t st_http_audit_key_load(const char *path, int create, uint8_t key[ST_HTTP_AUDIT_KEY_MAX],
                                   size_t *key_len, int *created, st_error_t *err)
{
    uint8_t buf[ST_HTTP_AUDIT_KEY_MAX + 3];
    size_t n = 0;
    int fd;
    st_status_t st;

    if (created)
        *created = 0;
    if (create && access(path, F_OK) != 0 && errno == ENOENT) {
        if ((st = key_create(path, err)) != ST_OK)
            return st;
        if (created)
            *created = 1;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "audit HMAC key %s: %s", path, strerror(errno));
    {
        struct stat sb;
        if (fstat(fd, &sb) == 0 && (sb.st_mode & 077))
            st_warn("audit", "HMAC key %s is readable by others (mode %03o): anyone who can "
                    "read it can forge export watermarks; chmod 600 it", path,
                    (unsigned)(sb.st_mode & 0777));
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            return st_error_set(err, ST_ERR_IO, "audit HMAC key %s: %s", path, strerror(errno));
        }
        if (r == 0 || (n += (size_t)r) == sizeof(buf))
            break;
    }
    close(fd);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n < ST_HTTP_AUDIT_KEY_MIN || n > ST_HTTP_AUDIT_KEY_MAX) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return st_error_set(err, ST_ERR_FORMAT, "audit HMAC key %s: %zu bytes, need %d to %d",
                            path, n, ST_HTTP_AUDIT_KEY_MIN, ST_HTTP_AUDIT_KEY_MAX);
    }
    memcpy(key, buf, n);
    *key_len = n;
    OPENSSL_cleanse(buf, sizeof(buf));
    return ST_OK;
}
