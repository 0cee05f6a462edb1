/*
 * gguf.c - validating GGUF v2/v3 reader over mmap (see st_gguf.h).
 *
 * The header is parsed once at open with a bounds-checked cursor; every
 * length and count read from the file is compared with the bytes that are
 * left before anything is allocated or skipped, so the memory this module
 * allocates is at most a small multiple of the file size. Lookups use sorted
 * name indexes (binary search) rather than a hash table: duplicate detection
 * and lookup stay O(n log n) whatever names a hostile file chooses.
 */
#include "st_gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_util.h"

#define GGUF_MAGIC         0x46554747u /* "GGUF" read little endian */
#define GGUF_HEADER_BYTES  24u         /* magic, version, n_tensors, n_kv */
#define GGUF_DEFAULT_ALIGN 32u
/* Smallest encodings, used to refuse counts the file cannot hold before
 * allocating for them: a kv is key length (8) + key (>= 1) + type (4) + a
 * value (>= 1); a tensor info is name length (8) + name (>= 1) + n_dims (4)
 * + one dim (8) + type (4) + offset (8). */
#define GGUF_MIN_KV_BYTES     14u
#define GGUF_MIN_TENSOR_BYTES 33u
#define GGUF_MAX_KEY_LEN      65535u   /* GGUF spec */
#define GGUF_MAX_NAME_LEN     64u      /* GGUF spec: tensor names <= 64 bytes */
#define GGUF_MAX_ARRAY_DEPTH  8u       /* nested arrays: bound the recursion */

typedef struct gguf_kv {
    st_str_t       key;
    st_gguf_type_t type;
    const uint8_t *val;      /* scalar: its bytes; string: its characters */
    uint64_t       len;      /* string: length; array: element count */
    st_gguf_type_t elem;     /* array element type */
    uint64_t      *str_off;  /* string arrays: file offset of each element's length */
} gguf_kv_t;

/* One entry of a sorted name index (keys or tensor names). */
typedef struct name_ix {
    const char *p;
    uint64_t    len;
    uint64_t    idx;
} name_ix_t;

struct st_gguf {
    char          *path;
    const uint8_t *map;
    uint64_t       size;
    uint32_t       version;
    uint32_t       alignment;
    uint64_t       data_offset;
    int64_t        n_kv;
    gguf_kv_t     *kv;
    name_ix_t     *kv_ix;       /* sorted by key */
    uint64_t       n_tensors;
    st_tensor_t   *tensors;
    char          *names;       /* NUL-terminated tensor names, one block */
    name_ix_t     *tensor_ix;   /* sorted by name */
    int            owns_map;    /* 0: st_gguf_open_mem, the caller owns the bytes */
};

/* Bounds-checked reader. `field` names what is being read, for errors. */
typedef struct cursor {
    const uint8_t *base;
    uint64_t       pos, size;
    const char    *path;
    st_error_t    *err;
    char           field[160];
} cursor_t;

static const uint32_t scalar_size[ST_GGUF_TYPE_COUNT_] = {
    [ST_GGUF_UINT8] = 1, [ST_GGUF_INT8] = 1, [ST_GGUF_UINT16] = 2, [ST_GGUF_INT16] = 2,
    [ST_GGUF_UINT32] = 4, [ST_GGUF_INT32] = 4, [ST_GGUF_FLOAT32] = 4, [ST_GGUF_BOOL] = 1,
    [ST_GGUF_UINT64] = 8, [ST_GGUF_INT64] = 8, [ST_GGUF_FLOAT64] = 8,
};

const char *st_gguf_type_name(st_gguf_type_t t)
{
    static const char *const names[ST_GGUF_TYPE_COUNT_] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
        "u64", "i64", "f64",
    };
    return (unsigned)t < ST_GGUF_TYPE_COUNT_ ? names[t] : "unknown";
}

/* ---- cursor -------------------------------------------------------------- */

static st_status_t cur_need(cursor_t *c, uint64_t n)
{
    if (n > c->size - c->pos)
        return st_error_set(c->err, ST_ERR_FORMAT,
                            "%s: %s: needs %" PRIu64 " bytes at offset %" PRIu64
                            " but the file has %" PRIu64 " left",
                            c->path, c->field, n, c->pos, c->size - c->pos);
    return ST_OK;
}

static st_status_t cur_u32(cursor_t *c, uint32_t *v)
{
    st_status_t s = cur_need(c, 4);
    if (s != ST_OK) return s;
    memcpy(v, c->base + c->pos, 4);
    c->pos += 4;
    return ST_OK;
}

static st_status_t cur_u64(cursor_t *c, uint64_t *v)
{
    st_status_t s = cur_need(c, 8);
    if (s != ST_OK) return s;
    memcpy(v, c->base + c->pos, 8);
    c->pos += 8;
    return ST_OK;
}

/* A GGUF string: u64 length then bytes. The length is checked against the
 * bytes left in the file, so a huge length never turns into a huge skip. */
static st_status_t cur_str(cursor_t *c, st_str_t *out)
{
    uint64_t len;
    st_status_t s = cur_u64(c, &len);
    if (s != ST_OK) return s;
    if (len > c->size - c->pos)
        return st_error_set(c->err, ST_ERR_FORMAT,
                            "%s: %s: string length %" PRIu64 " exceeds the %" PRIu64
                            " bytes left in the file", c->path, c->field, len,
                            c->size - c->pos);
    out->ptr = (const char *)(c->base + c->pos);
    out->len = len;
    c->pos += len;
    return ST_OK;
}

const char *st_gguf_str_printable(st_str_t s, char *buf, size_t n)
{
    size_t j = 0, keep = n > 4 ? n - 4 : 0;   /* room for "..." and NUL */
    uint64_t i;
    for (i = 0; i < s.len && j < keep; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        buf[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (i < s.len && n >= 4) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    if (n)
        buf[ST_MIN(j, n - 1)] = '\0';
    return buf;
}

#define printable st_gguf_str_printable

/* ---- metadata ------------------------------------------------------------ */

static int scalar_bool_ok(const cursor_t *c)
{
    return c->base[c->pos] <= 1;
}

/* Validates and skips one value of type `t` (used for nested arrays, whose
 * contents are not indexed). */
static st_status_t skip_value(cursor_t *c, uint32_t t, unsigned depth);

static st_status_t skip_array(cursor_t *c, unsigned depth)
{
    uint32_t et;
    uint64_t count, min_elem;
    st_status_t s;

    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: %s: arrays nested deeper than %u",
                            c->path, c->field, GGUF_MAX_ARRAY_DEPTH);
    if ((s = cur_u32(c, &et)) != ST_OK || (s = cur_u64(c, &count)) != ST_OK)
        return s;
    if (et >= ST_GGUF_TYPE_COUNT_)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: %s: unknown array element type %u",
                            c->path, c->field, et);
    min_elem = et == ST_GGUF_STRING ? 8 : et == ST_GGUF_ARRAY ? 12 : scalar_size[et];
    if (count > (c->size - c->pos) / min_elem)
        return st_error_set(c->err, ST_ERR_FORMAT,
                            "%s: %s: array count %" PRIu64 " of %s exceeds the %" PRIu64
                            " bytes left in the file", c->path, c->field, count,
                            st_gguf_type_name((st_gguf_type_t)et), c->size - c->pos);
    if (et != ST_GGUF_STRING && et != ST_GGUF_ARRAY && et != ST_GGUF_BOOL) {
        c->pos += count * min_elem;       /* fits: checked above */
        return ST_OK;
    }
    for (uint64_t i = 0; i < count; i++)
        if ((s = skip_value(c, et, depth + 1)) != ST_OK)
            return s;
    return ST_OK;
}

static st_status_t skip_value(cursor_t *c, uint32_t t, unsigned depth)
{
    st_str_t str;
    st_status_t s;

    if (t == ST_GGUF_STRING)
        return cur_str(c, &str);
    if (t == ST_GGUF_ARRAY)
        return skip_array(c, depth);
    if ((s = cur_need(c, scalar_size[t])) != ST_OK)
        return s;
    if (t == ST_GGUF_BOOL && !scalar_bool_ok(c))
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: %s: bool value %u is not 0 or 1",
                            c->path, c->field, c->base[c->pos]);
    c->pos += scalar_size[t];
    return ST_OK;
}

/* Reads the value of one kv into `kv` (its key and type already set). */
static st_status_t read_value(cursor_t *c, gguf_kv_t *kv)
{
    st_status_t s;
    uint32_t et;
    st_str_t str;

    switch (kv->type) {
    case ST_GGUF_STRING:
        if ((s = cur_str(c, &str)) != ST_OK) return s;
        kv->val = (const uint8_t *)str.ptr;
        kv->len = str.len;
        return ST_OK;
    case ST_GGUF_ARRAY: {
        uint64_t start = c->pos, count;
        if ((s = cur_u32(c, &et)) != ST_OK || (s = cur_u64(c, &count)) != ST_OK)
            return s;
        if (et >= ST_GGUF_TYPE_COUNT_)
            return st_error_set(c->err, ST_ERR_FORMAT,
                                "%s: %s: unknown array element type %u", c->path, c->field, et);
        kv->elem = (st_gguf_type_t)et;
        kv->len = count;
        kv->val = c->base + c->pos;
        if (et == ST_GGUF_STRING) {
            /* Index the elements so st_gguf_arr_str is O(1). Each element
             * takes at least 8 bytes, which bounds the allocation. */
            if (count > (c->size - c->pos) / 8)
                return st_error_set(c->err, ST_ERR_FORMAT,
                                    "%s: %s: array count %" PRIu64 " of string exceeds the %"
                                    PRIu64 " bytes left in the file", c->path, c->field,
                                    count, c->size - c->pos);
            kv->str_off = malloc((count ? count : 1) * sizeof(uint64_t));
            if (!kv->str_off)
                return st_error_set(c->err, ST_ERR_NOMEM, "%s: %s: out of memory (%" PRIu64
                                    " strings)", c->path, c->field, count);
            for (uint64_t i = 0; i < count; i++) {
                uint64_t len;
                kv->str_off[i] = c->pos;
                if ((s = cur_u64(c, &len)) != ST_OK)
                    return s;
                if (len > c->size - c->pos)
                    return st_error_set(c->err, ST_ERR_FORMAT, "%s: %s: element %" PRIu64
                                        ": string length %" PRIu64 " exceeds the %" PRIu64
                                        " bytes left in the file", c->path, c->field, i, len,
                                        c->size - c->pos);
                c->pos += len;
            }
            return ST_OK;
        }
        /* Numeric, bool and nested arrays: validate by skipping. */
        c->pos = start;
        return skip_array(c, 1);
    }
    default:
        kv->val = c->base + c->pos;
        return skip_value(c, kv->type, 0);
    }
}

static int name_cmp(const void *a, const void *b)
{
    const name_ix_t *x = a, *y = b;
    uint64_t n = ST_MIN(x->len, y->len);
    int r = n ? memcmp(x->p, y->p, n) : 0;
    if (r) return r;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Binary search of a sorted index; returns the entry's idx or -1. */
static int64_t ix_find(const name_ix_t *ix, uint64_t n, const char *name, size_t len)
{
    name_ix_t key = {name, len, 0};
    const name_ix_t *hit = ix ? bsearch(&key, ix, n, sizeof(*ix), name_cmp) : NULL;
    return hit ? (int64_t)hit->idx : -1;
}

static st_status_t read_kvs(st_gguf_t *g, cursor_t *c, st_error_t *err)
{
    char pbuf[96];
    st_status_t s;

    g->kv = calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof(gguf_kv_t));
    g->kv_ix = calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof(name_ix_t));
    if (!g->kv || !g->kv_ix)
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory for %" PRId64 " keys",
                            g->path, g->n_kv);
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv_t *kv = &g->kv[i];
        uint32_t t;

        snprintf(c->field, sizeof(c->field), "key #%" PRId64 " name", i);
        if ((s = cur_str(c, &kv->key)) != ST_OK)
            return s;
        if (kv->key.len == 0 || kv->key.len > GGUF_MAX_KEY_LEN)
            return st_error_set(err, ST_ERR_FORMAT, "%s: key #%" PRId64 ": name length %"
                                PRIu64 " outside 1..%u", g->path, i, kv->key.len,
                                GGUF_MAX_KEY_LEN);
        snprintf(c->field, sizeof(c->field), "key '%s'", printable(kv->key, pbuf, sizeof(pbuf)));
        if ((s = cur_u32(c, &t)) != ST_OK)
            return s;
        if (t >= ST_GGUF_TYPE_COUNT_)
            return st_error_set(err, ST_ERR_FORMAT, "%s: %s: unknown value type %u",
                                g->path, c->field, t);
        kv->type = (st_gguf_type_t)t;
        if ((s = read_value(c, kv)) != ST_OK)
            return s;
        g->kv_ix[i] = (name_ix_t){kv->key.ptr, kv->key.len, (uint64_t)i};
    }
    qsort(g->kv_ix, (size_t)g->n_kv, sizeof(name_ix_t), name_cmp);
    for (int64_t i = 1; i < g->n_kv; i++)
        if (name_cmp(&g->kv_ix[i - 1], &g->kv_ix[i]) == 0) {
            st_str_t k = {g->kv_ix[i].p, g->kv_ix[i].len};
            return st_error_set(err, ST_ERR_FORMAT, "%s: key '%s': duplicate key", g->path,
                                printable(k, pbuf, sizeof(pbuf)));
        }
    return ST_OK;
}

/* ---- tensors ------------------------------------------------------------- */

static st_status_t read_tensor_info(st_gguf_t *g, cursor_t *c, uint64_t i, char **name_at)
{
    st_tensor_t *t = &g->tensors[i];
    const st_dtype_traits_t *tr;
    uint32_t n_dims, type;
    uint64_t n_rows = 1;
    st_str_t name;
    char pbuf[96];
    st_status_t s;

    snprintf(c->field, sizeof(c->field), "tensor #%" PRIu64 " name", i);
    if ((s = cur_str(c, &name)) != ST_OK)
        return s;
    if (name.len == 0 || name.len > GGUF_MAX_NAME_LEN)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: tensor #%" PRIu64 " '%s': name length %"
                            PRIu64 " outside 1..%u", g->path, i,
                            printable(name, pbuf, sizeof(pbuf)), name.len, GGUF_MAX_NAME_LEN);
    for (uint64_t k = 0; k < name.len; k++)
        if ((unsigned char)name.ptr[k] < 0x20 || (unsigned char)name.ptr[k] == 0x7f)
            return st_error_set(c->err, ST_ERR_FORMAT, "%s: tensor #%" PRIu64
                                " '%s': name contains control byte 0x%02x", g->path, i,
                                printable(name, pbuf, sizeof(pbuf)),
                                (unsigned char)name.ptr[k]);
    memcpy(*name_at, name.ptr, name.len);
    (*name_at)[name.len] = '\0';
    t->name = *name_at;
    *name_at += name.len + 1;

    snprintf(c->field, sizeof(c->field), "tensor '%s'", t->name);
    if ((s = cur_u32(c, &n_dims)) != ST_OK)
        return s;
    if (n_dims < 1 || n_dims > ST_TENSOR_MAX_DIMS)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: %s: n_dims %u outside 1..%d",
                            g->path, c->field, n_dims, ST_TENSOR_MAX_DIMS);
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < ST_TENSOR_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if ((s = cur_u64(c, &t->ne[d])) != ST_OK)
            return s;
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX)
            return st_error_set(c->err, ST_ERR_FORMAT, "%s: %s: ne[%u] = %" PRIu64
                                " outside 1..INT64_MAX", g->path, c->field, d, t->ne[d]);
    }
    if ((s = cur_u32(c, &type)) != ST_OK)
        return s;
    tr = st_dtype_traits(type);
    if (!tr)
        return st_error_set(c->err, ST_ERR_UNSUPPORTED, "%s: %s: unknown or unsupported "
                            "tensor type %u", g->path, c->field, type);
    t->type = (st_dtype_t)type;
    if ((s = cur_u64(c, &t->file_offset)) != ST_OK)   /* relative until data_offset is known */
        return s;

    /* Element count must not wrap (a published loader bug: dims whose
     * product wraps to a small size, then out-of-bounds reads). */
    uint64_t n_elems = t->ne[0];
    for (uint32_t d = 1; d < n_dims; d++) {
        if (__builtin_mul_overflow(n_elems, t->ne[d], &n_elems) || n_elems > (uint64_t)INT64_MAX)
            return st_error_set(c->err, ST_ERR_OVERFLOW, "%s: %s: dims %" PRIu64 " x %" PRIu64
                                " x %" PRIu64 " x %" PRIu64 " overflow", g->path, c->field,
                                t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
        n_rows *= t->ne[d];
    }
    if (t->ne[0] % tr->block_elems != 0)
        return st_error_set(c->err, ST_ERR_FORMAT, "%s: %s: ne[0] = %" PRIu64 " is not a "
                            "multiple of the %s block size %u", g->path, c->field, t->ne[0],
                            tr->name, tr->block_elems);
    t->row_bytes = t->ne[0] / tr->block_elems * tr->block_bytes;
    if (__builtin_mul_overflow(t->row_bytes, n_rows, &t->nbytes))
        return st_error_set(c->err, ST_ERR_OVERFLOW, "%s: %s: size %" PRIu64 " x %" PRIu64
                            " bytes overflows", g->path, c->field, t->row_bytes, n_rows);
    return ST_OK;
}

static int offset_cmp(const void *a, const void *b)
{
    const st_tensor_t *x = *(const st_tensor_t *const *)a, *y = *(const st_tensor_t *const *)b;
    return x->file_offset < y->file_offset ? -1 : x->file_offset > y->file_offset;
}

/* Places every tensor in the data section: aligned, inside the file, no
 * two overlapping. */
static st_status_t place_tensors(st_gguf_t *g, st_error_t *err)
{
    const st_tensor_t **by_off;
    st_status_t s = ST_OK;

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        st_tensor_t *t = &g->tensors[i];
        uint64_t rel = t->file_offset, end;

        if (rel % g->alignment != 0)
            return st_error_set(err, ST_ERR_FORMAT, "%s: tensor '%s': offset %" PRIu64
                                " is not a multiple of the alignment %u", g->path, t->name,
                                rel, g->alignment);
        if (g->data_offset > g->size || __builtin_add_overflow(g->data_offset, rel, &t->file_offset)
            || __builtin_add_overflow(t->file_offset, t->nbytes, &end) || end > g->size)
            return st_error_set(err, ST_ERR_FORMAT, "%s: tensor '%s': data at offset %" PRIu64
                                " + %" PRIu64 " bytes runs past the end of the file (%" PRIu64
                                " bytes, data section at %" PRIu64 ")", g->path, t->name, rel,
                                t->nbytes, g->size, g->data_offset);
        t->data = g->map + t->file_offset;
    }
    if (g->n_tensors < 2)
        return ST_OK;
    by_off = malloc(g->n_tensors * sizeof(*by_off));
    if (!by_off)
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        by_off[i] = &g->tensors[i];
    qsort(by_off, g->n_tensors, sizeof(*by_off), offset_cmp);
    for (uint64_t i = 1; i < g->n_tensors; i++) {
        const st_tensor_t *a = by_off[i - 1], *b = by_off[i];
        if (b->file_offset < a->file_offset + a->nbytes) {
            s = st_error_set(err, ST_ERR_FORMAT, "%s: tensor '%s': data at offset %" PRIu64
                             " overlaps tensor '%s' (%" PRIu64 " + %" PRIu64 ")", g->path,
                             b->name, b->file_offset - g->data_offset, a->name,
                             a->file_offset - g->data_offset, a->nbytes);
            break;
        }
    }
    free(by_off);
    return s;
}

static st_status_t read_tensors(st_gguf_t *g, cursor_t *c, st_error_t *err)
{
    char *name_at;
    st_status_t s;

    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof(st_tensor_t));
    g->tensor_ix = calloc(g->n_tensors ? g->n_tensors : 1, sizeof(name_ix_t));
    g->names = malloc(g->n_tensors * (GGUF_MAX_NAME_LEN + 1) + 1);
    if (!g->tensors || !g->tensor_ix || !g->names)
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory for %" PRIu64 " tensors",
                            g->path, g->n_tensors);
    name_at = g->names;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if ((s = read_tensor_info(g, c, i, &name_at)) != ST_OK)
            return s;
        g->tensor_ix[i] = (name_ix_t){g->tensors[i].name, strlen(g->tensors[i].name), i};
    }
    qsort(g->tensor_ix, g->n_tensors, sizeof(name_ix_t), name_cmp);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if (name_cmp(&g->tensor_ix[i - 1], &g->tensor_ix[i]) == 0)
            return st_error_set(err, ST_ERR_FORMAT, "%s: tensor '%s': duplicate tensor name",
                                g->path, g->tensor_ix[i].p);
    return ST_OK;
}

/* ---- open / close -------------------------------------------------------- */

static st_status_t map_file(st_gguf_t *g, st_error_t *err)
{
    struct stat st;
    st_status_t s = ST_OK;
    int fd = open(g->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "%s: cannot open: %s", g->path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        s = st_error_set(err, ST_ERR_IO, "%s: cannot stat: %s", g->path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        s = st_error_set(err, ST_ERR_IO, "%s: not a regular file", g->path);
        goto out;
    }
    g->size = (uint64_t)st.st_size;
    if (g->size < GGUF_HEADER_BYTES) {
        s = st_error_set(err, ST_ERR_FORMAT, "%s: header: file is %" PRIu64 " bytes, a GGUF "
                         "header needs %u", g->path, g->size, GGUF_HEADER_BYTES);
        goto out;
    }
    void *m = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        s = st_error_set(err, ST_ERR_IO, "%s: cannot mmap %" PRIu64 " bytes: %s", g->path,
                         g->size, strerror(errno));
        goto out;
    }
    g->map = m;
out:
    close(fd);
    return s;
}

static st_status_t read_alignment(st_gguf_t *g, st_error_t *err)
{
    uint64_t a;
    st_status_t s;

    g->alignment = GGUF_DEFAULT_ALIGN;
    s = st_gguf_get_u64(g, "general.alignment", &a);
    if (s == ST_ERR_NOT_FOUND)
        return ST_OK;
    if (s != ST_OK)
        return st_error_set(err, ST_ERR_FORMAT, "%s: key 'general.alignment': %s (type %s)",
                            g->path, st_status_str(s),
                            st_gguf_type_name(st_gguf_kv_type(g, st_gguf_find_key(g, "general.alignment"))));
    if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 30))
        return st_error_set(err, ST_ERR_FORMAT, "%s: key 'general.alignment': %" PRIu64
                            " is not a power of two in 1..2^30", g->path, a);
    g->alignment = (uint32_t)a;
    return ST_OK;
}

/* Parses and validates the bytes at g->map (g->size of them, >= the 24-byte
 * header): shared by the file and the memory entry points, so a decrypted
 * model passes exactly the checks a plain file does. */
static st_status_t parse(st_gguf_t *g, st_error_t *err)
{
    cursor_t c;
    uint32_t magic = 0;
    uint64_t n_kv = 0;
    st_status_t s;

    c = (cursor_t){.base = g->map, .pos = 0, .size = g->size, .path = g->path, .err = err};
    snprintf(c.field, sizeof(c.field), "header");
    cur_u32(&c, &magic);                /* size >= 24 was checked by the caller */
    cur_u32(&c, &g->version);
    cur_u64(&c, &g->n_tensors);
    cur_u64(&c, &n_kv);
    if (magic != GGUF_MAGIC)
        return st_error_set(err, ST_ERR_FORMAT, "%s: header: bad magic 0x%08x (expected 'GGUF')",
                            g->path, magic);
    if (g->version == 1)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "%s: header: GGUF version 1 is not supported "
                            "(re-convert the model to GGUF v3)", g->path);
    if (g->version != 2 && g->version != 3)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "%s: header: GGUF version %u is not supported "
                            "(2 or 3; a big-endian file reads as 0x%08x)", g->path, g->version,
                            g->version);
    /* Counts beyond what the file can hold are refused before allocating. */
    if (n_kv > (g->size - c.pos) / GGUF_MIN_KV_BYTES)
        return st_error_set(err, ST_ERR_FORMAT, "%s: header: kv count %" PRIu64 " exceeds what %"
                            PRIu64 " bytes can hold", g->path, n_kv, g->size);
    if (g->n_tensors > (g->size - c.pos - n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES)
        return st_error_set(err, ST_ERR_FORMAT, "%s: header: tensor count %" PRIu64 " exceeds what %"
                            PRIu64 " bytes can hold", g->path, g->n_tensors, g->size);
    g->n_kv = (int64_t)n_kv;
    if ((s = read_kvs(g, &c, err)) != ST_OK || (s = read_alignment(g, err)) != ST_OK ||
        (s = read_tensors(g, &c, err)) != ST_OK)
        return s;
    g->data_offset = ST_ALIGN_UP(c.pos, (uint64_t)g->alignment);
    return place_tensors(g, err);
}

static st_status_t new_gguf(const char *path, st_gguf_t **out, st_error_t *err)
{
    st_gguf_t *g = calloc(1, sizeof(*g));
    if (!g)
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", path);
    g->path = strdup(path);
    if (!g->path) {
        free(g);
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", path);
    }
    *out = g;
    return ST_OK;
}

st_status_t st_gguf_open(const char *path, st_gguf_t **out, st_error_t *err)
{
    st_gguf_t *g = NULL;
    st_status_t s;

    if (!path || !out)
        return st_error_set(err, ST_ERR_INVALID, "st_gguf_open: NULL argument");
    if ((s = new_gguf(path, &g, err)) != ST_OK)
        return s;
    g->owns_map = 1;
    if ((s = map_file(g, err)) != ST_OK || (s = parse(g, err)) != ST_OK) {
        st_gguf_close(g);
        return s;
    }
    *out = g;
    return ST_OK;
}

st_status_t st_gguf_open_mem(const char *name, const void *base, uint64_t size,
                             st_gguf_t **out, st_error_t *err)
{
    st_gguf_t *g = NULL;
    st_status_t s;

    if (!name || !base || !out)
        return st_error_set(err, ST_ERR_INVALID, "st_gguf_open_mem: NULL argument");
    if (size < GGUF_HEADER_BYTES)
        return st_error_set(err, ST_ERR_FORMAT, "%s: header: %" PRIu64 " bytes, a GGUF header "
                            "needs %u", name, size, GGUF_HEADER_BYTES);
    if ((s = new_gguf(name, &g, err)) != ST_OK)
        return s;
    g->map = base;
    g->size = size;
    if ((s = parse(g, err)) != ST_OK) {
        st_gguf_close(g);
        return s;
    }
    *out = g;
    return ST_OK;
}

void st_gguf_close(st_gguf_t *g)
{
    if (!g)
        return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++)
            free(g->kv[i].str_off);
    free(g->kv);
    free(g->kv_ix);
    free(g->tensors);
    free(g->tensor_ix);
    free(g->names);
    if (g->map && g->owns_map)
        munmap((void *)g->map, (size_t)g->size);
    free(g->path);
    free(g);
}

/* ---- accessors ----------------------------------------------------------- */

const char *st_gguf_path(const st_gguf_t *g)       { return g->path; }
uint32_t    st_gguf_version(const st_gguf_t *g)    { return g->version; }
uint64_t    st_gguf_file_size(const st_gguf_t *g)  { return g->size; }
const void *st_gguf_base(const st_gguf_t *g)       { return g->map; }
uint64_t    st_gguf_data_offset(const st_gguf_t *g){ return g->data_offset; }
uint32_t    st_gguf_alignment(const st_gguf_t *g)  { return g->alignment; }
int64_t     st_gguf_n_kv(const st_gguf_t *g)       { return g->n_kv; }
uint64_t    st_gguf_n_tensors(const st_gguf_t *g)  { return g->n_tensors; }

int64_t st_gguf_find_key(const st_gguf_t *g, const char *key)
{
    if (!g || !key)
        return -1;
    return ix_find(g->kv_ix, (uint64_t)g->n_kv, key, strlen(key));
}

st_str_t st_gguf_key_name(const st_gguf_t *g, int64_t i)
{
    if (!g || i < 0 || i >= g->n_kv)
        return (st_str_t){"", 0};
    return g->kv[i].key;
}

st_gguf_type_t st_gguf_kv_type(const st_gguf_t *g, int64_t i)
{
    if (!g || i < 0 || i >= g->n_kv)
        return ST_GGUF_TYPE_COUNT_;
    return g->kv[i].type;
}

const st_tensor_t *st_gguf_tensor(const st_gguf_t *g, uint64_t i)
{
    return (g && i < g->n_tensors) ? &g->tensors[i] : NULL;
}

const st_tensor_t *st_gguf_find_tensor(const st_gguf_t *g, const char *name)
{
    int64_t i;
    if (!g || !name)
        return NULL;
    i = ix_find(g->tensor_ix, g->n_tensors, name, strlen(name));
    return i < 0 ? NULL : &g->tensors[i];
}

/* Reads one numeric value of type t at p. Integers go to *iv (with *is_u
 * set for unsigned 64-bit values above INT64_MAX), floats to *fv. Returns 0
 * for an integer, 1 for a float, -1 for a non-numeric type. */
static int read_num(st_gguf_type_t t, const uint8_t *p, int64_t *iv, uint64_t *uv, double *fv)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            uint64_t u64; int64_t i64; float f32; double f64; } v;
    if ((unsigned)t >= ST_GGUF_TYPE_COUNT_ || scalar_size[t] == 0)
        return -1;
    memcpy(&v, p, scalar_size[t]);
    *uv = 0;
    switch (t) {
    case ST_GGUF_UINT8:  *iv = v.u8;  return 0;
    case ST_GGUF_BOOL:   *iv = v.u8;  return 0;
    case ST_GGUF_INT8:   *iv = v.i8;  return 0;
    case ST_GGUF_UINT16: *iv = v.u16; return 0;
    case ST_GGUF_INT16:  *iv = v.i16; return 0;
    case ST_GGUF_UINT32: *iv = v.u32; return 0;
    case ST_GGUF_INT32:  *iv = v.i32; return 0;
    case ST_GGUF_INT64:  *iv = v.i64; return 0;
    case ST_GGUF_UINT64:
        *uv = v.u64;
        *iv = v.u64 > (uint64_t)INT64_MAX ? -1 : (int64_t)v.u64;
        return v.u64 > (uint64_t)INT64_MAX ? 2 : 0;
    case ST_GGUF_FLOAT32: *fv = v.f32; return 1;
    case ST_GGUF_FLOAT64: *fv = v.f64; return 1;
    default: return -1;
    }
}

static const gguf_kv_t *kv_get(const st_gguf_t *g, const char *key)
{
    int64_t i = st_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

/* Integer value of a scalar kv: kind 2 means an unsigned value above INT64_MAX. */
static st_status_t get_int(const st_gguf_t *g, const char *key, int64_t *iv, uint64_t *uv, int *big)
{
    const gguf_kv_t *kv = kv_get(g, key);
    double fv;
    int k;
    if (!kv)
        return ST_ERR_NOT_FOUND;
    if (kv->type == ST_GGUF_BOOL)
        return ST_ERR_TYPE;
    k = read_num(kv->type, kv->val, iv, uv, &fv);
    if (k != 0 && k != 2)
        return ST_ERR_TYPE;
    *big = k == 2;
    return ST_OK;
}

st_status_t st_gguf_get_u32(const st_gguf_t *g, const char *key, uint32_t *out)
{
    int64_t iv = 0; uint64_t uv = 0; int big = 0;
    st_status_t s = get_int(g, key, &iv, &uv, &big);
    if (s != ST_OK) return s;
    if (big || iv < 0 || iv > (int64_t)UINT32_MAX) return ST_ERR_RANGE;
    *out = (uint32_t)iv;
    return ST_OK;
}

st_status_t st_gguf_get_u64(const st_gguf_t *g, const char *key, uint64_t *out)
{
    int64_t iv = 0; uint64_t uv = 0; int big = 0;
    st_status_t s = get_int(g, key, &iv, &uv, &big);
    if (s != ST_OK) return s;
    if (big) { *out = uv; return ST_OK; }
    if (iv < 0) return ST_ERR_RANGE;
    *out = (uint64_t)iv;
    return ST_OK;
}

st_status_t st_gguf_get_i64(const st_gguf_t *g, const char *key, int64_t *out)
{
    int64_t iv = 0; uint64_t uv = 0; int big = 0;
    st_status_t s = get_int(g, key, &iv, &uv, &big);
    if (s != ST_OK) return s;
    if (big) return ST_ERR_RANGE;
    *out = iv;
    return ST_OK;
}

st_status_t st_gguf_get_f32(const st_gguf_t *g, const char *key, float *out)
{
    const gguf_kv_t *kv = kv_get(g, key);
    int64_t iv = 0; uint64_t uv = 0; double fv = 0;
    if (!kv) return ST_ERR_NOT_FOUND;
    if (kv->type != ST_GGUF_FLOAT32 && kv->type != ST_GGUF_FLOAT64) return ST_ERR_TYPE;
    read_num(kv->type, kv->val, &iv, &uv, &fv);
    *out = (float)fv;
    return ST_OK;
}

st_status_t st_gguf_get_bool(const st_gguf_t *g, const char *key, int *out)
{
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return ST_ERR_NOT_FOUND;
    if (kv->type != ST_GGUF_BOOL) return ST_ERR_TYPE;
    *out = kv->val[0] != 0;
    return ST_OK;
}

st_status_t st_gguf_get_str(const st_gguf_t *g, const char *key, st_str_t *out)
{
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return ST_ERR_NOT_FOUND;
    if (kv->type != ST_GGUF_STRING) return ST_ERR_TYPE;
    out->ptr = (const char *)kv->val;
    out->len = kv->len;
    return ST_OK;
}

st_status_t st_gguf_get_arr(const st_gguf_t *g, const char *key, st_gguf_type_t *elem_type,
                            uint64_t *count, const void **data)
{
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return ST_ERR_NOT_FOUND;
    if (kv->type != ST_GGUF_ARRAY) return ST_ERR_TYPE;
    if (elem_type) *elem_type = kv->elem;
    if (count) *count = kv->len;
    if (data) *data = kv->val;
    return ST_OK;
}

st_status_t st_gguf_arr_str(const st_gguf_t *g, const char *key, uint64_t i, st_str_t *out)
{
    const gguf_kv_t *kv = kv_get(g, key);
    uint64_t len, off;
    if (!kv) return ST_ERR_NOT_FOUND;
    if (kv->type != ST_GGUF_ARRAY || kv->elem != ST_GGUF_STRING) return ST_ERR_TYPE;
    if (i >= kv->len) return ST_ERR_RANGE;
    off = kv->str_off[i];
    memcpy(&len, g->map + off, 8);
    out->ptr = (const char *)(g->map + off + 8);
    out->len = len;
    return ST_OK;
}

static st_status_t arr_num(const st_gguf_t *g, const char *key, uint64_t i, int64_t *iv,
                           uint64_t *uv, double *fv, int *kind)
{
    const gguf_kv_t *kv = kv_get(g, key);
    if (!kv) return ST_ERR_NOT_FOUND;
    if (kv->type != ST_GGUF_ARRAY || kv->elem >= ST_GGUF_TYPE_COUNT_ || scalar_size[kv->elem] == 0)
        return ST_ERR_TYPE;
    if (i >= kv->len) return ST_ERR_RANGE;
    *kind = read_num(kv->elem, kv->val + i * scalar_size[kv->elem], iv, uv, fv);
    return *kind < 0 ? ST_ERR_TYPE : ST_OK;
}

st_status_t st_gguf_arr_f64(const st_gguf_t *g, const char *key, uint64_t i, double *out)
{
    int64_t iv = 0; uint64_t uv = 0; double fv = 0; int kind = -1;
    st_status_t s = arr_num(g, key, i, &iv, &uv, &fv, &kind);
    if (s != ST_OK) return s;
    *out = kind == 1 ? fv : kind == 2 ? (double)uv : (double)iv;
    return ST_OK;
}

st_status_t st_gguf_arr_i64(const st_gguf_t *g, const char *key, uint64_t i, int64_t *out)
{
    int64_t iv = 0; uint64_t uv = 0; double fv = 0; int kind = -1;
    st_status_t s = arr_num(g, key, i, &iv, &uv, &fv, &kind);
    if (s != ST_OK) return s;
    if (kind == 1) return ST_ERR_TYPE;
    if (kind == 2) return ST_ERR_RANGE;
    *out = iv;
    return ST_OK;
}
