/*
 * plan_workers.c - the workers file (format in st_plan.h and
 * docs/TOPOLOGY.md). It is outside input: every field is validated and an
 * error names the file, the line and the field.
 */
#include "st_plan.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "st_util.h"

#define WORKERS_FILE_MAX (16u << 20)  /* a described cluster is kilobytes */
#define TOK_MAX 16

struct st_plan_workers {
    uint32_t          n, cap;
    st_plan_worker_t *w;
    double           *lat;      /* [n * n], NULL when no link lines */
    uint8_t          *lat_set;  /* which pairs a link line gave */
    uint32_t          n_links;
};

int st_plan_parse_size(const char *s, uint64_t *out)
{
    static const struct { const char *suffix; uint64_t mul; } units[] = {
        {"", 1}, {"K", 1ull << 10}, {"KiB", 1ull << 10}, {"M", 1ull << 20}, {"MiB", 1ull << 20},
        {"G", 1ull << 30}, {"GiB", 1ull << 30}, {"T", 1ull << 40}, {"TiB", 1ull << 40},
    };
    char *end;
    if (!s || !isdigit((unsigned char)s[0])) return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int frac = *end == '.';
    double d = frac ? strtod(s, &end) : 0;
    if (errno) return -1;
    for (size_t i = 0; i < ST_ARRAY_SIZE(units); i++) {
        if (strcmp(end, units[i].suffix) != 0) continue;
        if (frac) {
            double b = d * (double)units[i].mul;
            if (!(b >= 0) || b >= 18446744073709551616.0) return -1;
            *out = (uint64_t)b;
            return 0;
        }
        return st_mul_overflow_u64(v, units[i].mul, out) ? -1 : 0;
    }
    return -1;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= ST_PLAN_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._:-+@/", s[i])) return 0;
    return 1;
}

static int find_worker(const st_plan_workers_t *ws, const char *name)
{
    for (uint32_t i = 0; i < ws->n; i++)
        if (strcmp(ws->w[i].name, name) == 0) return (int)i;
    return -1;
}

static st_status_t parse_worker(st_plan_workers_t *ws, char **tok, int nt, const char *src,
                                unsigned line, st_error_t *err)
{
    if (nt < 2)
        return st_error_set(err, ST_ERR_FORMAT, "%s:%u: 'worker' needs a name", src, line);
    if (!valid_name(tok[1]))
        return st_error_set(err, ST_ERR_FORMAT,
                            "%s:%u: worker name '%.64s' must be 1-63 characters of [A-Za-z0-9._:-+@/]",
                            src, line, tok[1]);
    if (find_worker(ws, tok[1]) >= 0)
        return st_error_set(err, ST_ERR_FORMAT, "%s:%u: worker '%s' defined twice", src, line, tok[1]);
    if (ws->n == ST_PLAN_MAX_WORKERS)
        return st_error_set(err, ST_ERR_RANGE, "%s:%u: more than %u workers", src, line,
                            ST_PLAN_MAX_WORKERS);
    if (ws->n == ws->cap) {
        uint32_t cap = ws->cap ? ws->cap * 2 : 8;
        st_plan_worker_t *w = realloc(ws->w, cap * sizeof(*w));
        if (!w) return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", src);
        ws->w = w;
        ws->cap = cap;
    }
    st_plan_worker_t w = { .speed = 1.0 };
    int have_mem = 0;
    snprintf(w.name, sizeof(w.name), "%s", tok[1]);
    for (int i = 2; i < nt; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq)
            return st_error_set(err, ST_ERR_FORMAT, "%s:%u: worker '%s': '%.64s' is not key=value",
                                src, line, w.name, tok[i]);
        *eq = '\0';
        const char *key = tok[i], *val = eq + 1;
        if (!strcmp(key, "mem") || !strcmp(key, "memory")) {
            if (st_plan_parse_size(val, &w.mem_bytes) != 0)
                return st_error_set(err, ST_ERR_FORMAT,
                                    "%s:%u: worker '%s': mem '%.64s' is not a size (bytes, or "
                                    "with K/M/G/T or KiB/MiB/GiB/TiB)", src, line, w.name, val);
            have_mem = 1;
        } else if (!strcmp(key, "speed")) {
            char *end;
            errno = 0;
            w.speed = strtod(val, &end);
            if (errno || end == val || *end || !(w.speed > 0) || !isfinite(w.speed))
                return st_error_set(err, ST_ERR_FORMAT,
                                    "%s:%u: worker '%s': speed '%.64s' must be a positive number",
                                    src, line, w.name, val);
        } else if (!strcmp(key, "host")) {
            if (!valid_name(val))
                return st_error_set(err, ST_ERR_FORMAT, "%s:%u: worker '%s': host '%.64s' is not a "
                                    "valid name", src, line, w.name, val);
            snprintf(w.host, sizeof(w.host), "%s", val);
        } else {
            return st_error_set(err, ST_ERR_FORMAT,
                                "%s:%u: worker '%s': unknown key '%.64s' (mem, speed, host)",
                                src, line, w.name, key);
        }
    }
    if (!have_mem)
        return st_error_set(err, ST_ERR_FORMAT, "%s:%u: worker '%s': mem= is required", src, line,
                            w.name);
    ws->w[ws->n++] = w;
    return ST_OK;
}

/* Links are kept as (a, b, value) until every worker is known. */
typedef struct link_rec { uint32_t a, b; double us; unsigned line; } link_rec_t;

static st_status_t parse_link(st_plan_workers_t *ws, char **tok, int nt, const char *src,
                              unsigned line, link_rec_t **links, uint32_t *n_links, st_error_t *err)
{
    if (nt != 4)
        return st_error_set(err, ST_ERR_FORMAT, "%s:%u: expected 'link A B MICROSECONDS'", src, line);
    int a = find_worker(ws, tok[1]), b = find_worker(ws, tok[2]);
    if (a < 0 || b < 0)
        return st_error_set(err, ST_ERR_FORMAT,
                            "%s:%u: link names unknown worker '%.64s' (declare workers before links)",
                            src, line, a < 0 ? tok[1] : tok[2]);
    if (a == b)
        return st_error_set(err, ST_ERR_FORMAT, "%s:%u: link from '%s' to itself", src, line, tok[1]);
    char *end;
    errno = 0;
    double us = strtod(tok[3], &end);
    if (errno || end == tok[3] || *end || !(us >= 0) || !isfinite(us))
        return st_error_set(err, ST_ERR_FORMAT,
                            "%s:%u: link %s %s: latency '%.64s' must be a number of microseconds >= 0",
                            src, line, tok[1], tok[2], tok[3]);
    if (*n_links == 0 || (*n_links >= 8 && (*n_links & (*n_links - 1)) == 0)) {  /* 8, 16, 32... */
        link_rec_t *l = realloc(*links, (*n_links ? *n_links * 2 : 8) * sizeof(*l));
        if (!l) return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", src);
        *links = l;
    }
    (*links)[(*n_links)++] = (link_rec_t){ (uint32_t)a, (uint32_t)b, us, line };
    return ST_OK;
}

static st_status_t build_matrix(st_plan_workers_t *ws, const link_rec_t *links, uint32_t n_links,
                                const char *src, st_error_t *err)
{
    size_t n = ws->n;
    ws->lat = calloc(n * n, sizeof(*ws->lat));
    ws->lat_set = calloc(n * n, 1);
    if (!ws->lat || !ws->lat_set) return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", src);
    for (uint32_t k = 0; k < n_links; k++) {
        const link_rec_t *l = &links[k];
        if (ws->lat_set[l->a * n + l->b])
            return st_error_set(err, ST_ERR_FORMAT, "%s:%u: link %s %s given twice", src, l->line,
                                ws->w[l->a].name, ws->w[l->b].name);
        ws->lat[l->a * n + l->b] = ws->lat[l->b * n + l->a] = l->us;
        ws->lat_set[l->a * n + l->b] = ws->lat_set[l->b * n + l->a] = 1;
    }
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n; b++)
            if (!ws->lat_set[a * n + b])
                return st_error_set(err, ST_ERR_FORMAT,
                                    "%s: link lines given but none for %s %s (every pair needs one)",
                                    src, ws->w[a].name, ws->w[b].name);
    ws->n_links = n_links;
    return ST_OK;
}

st_status_t st_plan_workers_parse(const char *text, size_t len, const char *source,
                                  st_plan_workers_t **out, st_error_t *err)
{
    const char *src = source ? source : "workers";
    st_status_t s = ST_OK;
    link_rec_t *links = NULL;
    uint32_t n_links = 0;
    char *buf = NULL;

    if (!text || !out) return st_error_set(err, ST_ERR_INVALID, "%s: no text", src);
    if (memchr(text, '\0', len))
        return st_error_set(err, ST_ERR_FORMAT, "%s: contains a NUL byte (not a text file)", src);
    st_plan_workers_t *ws = calloc(1, sizeof(*ws));
    buf = malloc(len + 1);
    if (!ws || !buf) { s = st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", src); goto err_ws; }
    memcpy(buf, text, len);
    buf[len] = '\0';

    unsigned line = 0;
    for (char *p = buf, *next; p; p = next) {
        line++;
        next = strchr(p, '\n');
        if (next) *next++ = '\0';
        char *hash = strchr(p, '#');
        if (hash) *hash = '\0';
        char *tok[TOK_MAX];
        int nt = 0;
        char *save = NULL;
        for (char *t = strtok_r(p, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
            if (nt == TOK_MAX) {
                s = st_error_set(err, ST_ERR_FORMAT, "%s:%u: more than %d fields", src, line, TOK_MAX);
                goto err_ws;
            }
            tok[nt++] = t;
        }
        if (nt == 0) continue;
        if (!strcmp(tok[0], "worker"))
            s = parse_worker(ws, tok, nt, src, line, err);
        else if (!strcmp(tok[0], "link"))
            s = parse_link(ws, tok, nt, src, line, &links, &n_links, err);
        else
            s = st_error_set(err, ST_ERR_FORMAT, "%s:%u: unknown line '%.64s' (worker, link)", src,
                             line, tok[0]);
        if (s != ST_OK) goto err_ws;
    }
    if (ws->n == 0) {
        s = st_error_set(err, ST_ERR_FORMAT, "%s: no 'worker' lines", src);
        goto err_ws;
    }
    if (n_links) {
        s = build_matrix(ws, links, n_links, src, err);
        if (s != ST_OK) goto err_ws;
    }
    free(links);
    free(buf);
    *out = ws;
    return ST_OK;

err_ws:
    free(links);
    free(buf);
    st_plan_workers_free(ws);
    return s;
}

st_status_t st_plan_workers_load(const char *path, st_plan_workers_t **out, st_error_t *err)
{
    st_status_t s;
    FILE *f = fopen(path, "rb");
    if (!f) return st_error_set(err, ST_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = malloc(WORKERS_FILE_MAX + 1);
    if (!buf) { fclose(f); return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", path); }
    size_t n = fread(buf, 1, WORKERS_FILE_MAX + 1, f);
    if (ferror(f))
        s = st_error_set(err, ST_ERR_IO, "%s: read error", path);
    else if (n > WORKERS_FILE_MAX)
        s = st_error_set(err, ST_ERR_FORMAT, "%s: larger than %u bytes", path, WORKERS_FILE_MAX);
    else
        s = st_plan_workers_parse(buf, n, path, out, err);
    free(buf);
    fclose(f);
    return s;
}

void st_plan_workers_free(st_plan_workers_t *ws)
{
    if (!ws) return;
    free(ws->w);
    free(ws->lat);
    free(ws->lat_set);
    free(ws);
}

uint32_t st_plan_workers_count(const st_plan_workers_t *ws) { return ws->n; }
const st_plan_worker_t *st_plan_workers_array(const st_plan_workers_t *ws) { return ws->w; }
const double *st_plan_workers_latency(const st_plan_workers_t *ws) { return ws->n_links ? ws->lat : NULL; }
