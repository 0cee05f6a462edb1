/*
 * json.c - a growable byte buffer with a JSON string escaper, and OpenAI
 * error objects. Stream chunks are written with the escaper rather than
 * through jansson objects: one chunk per token is the hot path of the front
 * door, and this way it costs one append, not a tree build and a dump.
 */
#include "http_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int buf_reserve(st_http_buf_t *b, size_t extra)
{
    size_t cap;
    char *p;
    if (b->oom)
        return 0;
    if (b->len + extra + 1 <= b->cap)
        return 1;
    cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

void st_http_buf_put(st_http_buf_t *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void st_http_buf_puts(st_http_buf_t *b, const char *s) { st_http_buf_put(b, s, strlen(s)); }

void st_http_buf_printf(st_http_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void st_http_buf_json_str(st_http_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case: every byte becomes \u00XX. */
    if (!buf_reserve(b, n * 6 + 2))
        return;
    char *o = b->p + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':  *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                *o++ = '\\'; *o++ = 'u'; *o++ = '0'; *o++ = '0';
                *o++ = hex[c >> 4]; *o++ = hex[c & 15];
            } else {
                *o++ = (char)c;
            }
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
}

void st_http_buf_free(st_http_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

const char *st_http_error_type(int http_status)
{
    switch (http_status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default:  return http_status >= 500 ? "server_error" : "invalid_request_error";
    }
}

/* Messages may quote outside input cut at a byte limit; keep them valid
 * UTF-8 so the error itself is valid JSON. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 9;
        if (k == 9 || i + k >= n)
            return 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

char *st_http_json_error(const char *message, const char *type, const char *param,
                         const char *code)
{
    st_http_buf_t b = {0};
    char *msg = strdup(message ? message : "");
    size_t n;

    if (!msg)
        return NULL;
    n = strlen(msg);
    if (!utf8_valid((const unsigned char *)msg, n))
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)msg[i] >= 0x80)
                msg[i] = '?';
    st_http_buf_puts(&b, "{\"error\":{\"message\":");
    st_http_buf_json_str(&b, msg, n);
    st_http_buf_puts(&b, ",\"type\":");
    type = type ? type : "invalid_request_error";
    st_http_buf_json_str(&b, type, strlen(type));
    st_http_buf_puts(&b, ",\"param\":");
    if (param && *param)
        st_http_buf_json_str(&b, param, strlen(param));
    else
        st_http_buf_puts(&b, "null");
    st_http_buf_puts(&b, ",\"code\":");
    if (code && *code)
        st_http_buf_json_str(&b, code, strlen(code));
    else
        st_http_buf_puts(&b, "null");
    st_http_buf_puts(&b, "}}");
    free(msg);
    if (b.oom) {
        st_http_buf_free(&b);
        return NULL;
    }
    return b.p;
}
