/*
 * test_gguf_builder.h - builds GGUF files in memory for the reader's tests.
 *
 *   gb_t b; gb_init(&b);
 *   gb_kv_str(&b, "general.architecture", "llama");
 *   gb_tensor(&b, "w", 2, (uint64_t[]){32, 4}, ST_DTYPE_F32);
 *   const char *path = gb_write(&b, "name");   // temp file, removed by gb_free
 *
 * Tensor offsets are assigned in order, aligned to b.alignment (set it when
 * the file declares general.alignment); gb_tensor_at places one by hand.
 * Raw writers (gb_raw_*) let a test emit any byte sequence it wants, for
 * the malformed cases. Header fields can be overridden before gb_write.
 */
#ifndef TEST_GGUF_BUILDER_H
#define TEST_GGUF_BUILDER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_dtype.h"
#include "st_gguf.h"

typedef struct gb_buf {
    uint8_t *p;
    size_t   len, cap;
} gb_buf_t;

typedef struct gb {
    gb_buf_t kv, ti;          /* kv section, tensor-info section */
    uint64_t n_kv, n_tensors;
    uint32_t magic, version;
    uint32_t alignment;       /* used to place tensors and pad the header */
    uint64_t next_off;        /* next free data offset */
    uint64_t data_bytes;      /* bytes of tensor data to write */
    int64_t  trunc;           /* >= 0: cut the file to this many bytes */
    int      have_counts;     /* use n_kv_override / n_tensors_override */
    uint64_t n_kv_override, n_tensors_override;
    char     path[256];
} gb_t;

static inline void gb_put(gb_buf_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) { fprintf(stderr, "out of memory\n"); exit(2); }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static inline void gb_u8(gb_buf_t *b, uint8_t v)   { gb_put(b, &v, 1); }
static inline void gb_u32(gb_buf_t *b, uint32_t v) { gb_put(b, &v, 4); }
static inline void gb_u64(gb_buf_t *b, uint64_t v) { gb_put(b, &v, 8); }
static inline void gb_strn(gb_buf_t *b, const char *s, uint64_t n) { gb_u64(b, n); gb_put(b, s, (size_t)n); }
static inline void gb_str(gb_buf_t *b, const char *s) { gb_strn(b, s, strlen(s)); }

static inline void gb_init(gb_t *b)
{
    memset(b, 0, sizeof(*b));
    b->magic = 0x46554747u;
    b->version = 3;
    b->alignment = 32;
    b->trunc = -1;
}

static inline void gb_free(gb_t *b)
{
    free(b->kv.p);
    free(b->ti.p);
    if (b->path[0]) unlink(b->path);
    memset(b, 0, sizeof(*b));
}

/* Starts a kv: key + type; the caller writes the value with gb_u32 etc. */
static inline gb_buf_t *gb_kv(gb_t *b, const char *key, st_gguf_type_t t)
{
    gb_str(&b->kv, key);
    gb_u32(&b->kv, (uint32_t)t);
    b->n_kv++;
    return &b->kv;
}

static inline void gb_kv_u32(gb_t *b, const char *k, uint32_t v) { gb_u32(gb_kv(b, k, ST_GGUF_UINT32), v); }
static inline void gb_kv_i32(gb_t *b, const char *k, int32_t v)  { gb_u32(gb_kv(b, k, ST_GGUF_INT32), (uint32_t)v); }
static inline void gb_kv_u64(gb_t *b, const char *k, uint64_t v) { gb_u64(gb_kv(b, k, ST_GGUF_UINT64), v); }
static inline void gb_kv_f32(gb_t *b, const char *k, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    gb_u32(gb_kv(b, k, ST_GGUF_FLOAT32), u);
}
static inline void gb_kv_bool(gb_t *b, const char *k, int v) { gb_u8(gb_kv(b, k, ST_GGUF_BOOL), (uint8_t)v); }
static inline void gb_kv_str(gb_t *b, const char *k, const char *v) { gb_str(gb_kv(b, k, ST_GGUF_STRING), v); }

static inline void gb_kv_arr_str(gb_t *b, const char *k, const char *const *v, uint64_t n)
{
    gb_buf_t *kv = gb_kv(b, k, ST_GGUF_ARRAY);
    gb_u32(kv, ST_GGUF_STRING);
    gb_u64(kv, n);
    for (uint64_t i = 0; i < n; i++) gb_str(kv, v[i]);
}

static inline void gb_kv_arr_i32(gb_t *b, const char *k, const int32_t *v, uint64_t n)
{
    gb_buf_t *kv = gb_kv(b, k, ST_GGUF_ARRAY);
    gb_u32(kv, ST_GGUF_INT32);
    gb_u64(kv, n);
    gb_put(kv, v, n * 4);
}

static inline void gb_kv_arr_f32(gb_t *b, const char *k, const float *v, uint64_t n)
{
    gb_buf_t *kv = gb_kv(b, k, ST_GGUF_ARRAY);
    gb_u32(kv, ST_GGUF_FLOAT32);
    gb_u64(kv, n);
    gb_put(kv, v, n * 4);
}

/* A tensor info at an explicit data offset, with an explicit byte size to
 * reserve in the data section (0: nothing). */
static inline void gb_tensor_at(gb_t *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                         uint32_t type, uint64_t offset, uint64_t reserve)
{
    gb_str(&b->ti, name);
    gb_u32(&b->ti, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) gb_u64(&b->ti, ne[d]);
    gb_u32(&b->ti, type);
    gb_u64(&b->ti, offset);
    b->n_tensors++;
    /* hostile offsets (tests of wrapping sums) reserve nothing */
    if (offset < (1ull << 30) && offset + reserve > b->data_bytes) b->data_bytes = offset + reserve;
}

/* A well-formed tensor placed after the previous one. */
static inline void gb_tensor(gb_t *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type)
{
    uint64_t n = 1;
    for (uint32_t d = 1; d < n_dims; d++) n *= ne[d];
    uint64_t bytes = st_dtype_row_bytes(type, ne[0]) * n;
    gb_tensor_at(b, name, n_dims, ne, type, b->next_off, bytes);
    b->next_off = (b->next_off + bytes + b->alignment - 1) / b->alignment * b->alignment;
}

/* Writes the file to a temporary path and returns it. Tensor data are
 * filled with a deterministic byte pattern. */
static inline const char *gb_write(gb_t *b, const char *tag)
{
    gb_buf_t f = {0};
    const char *dir = getenv("TMPDIR");
    gb_u32(&f, b->magic);
    gb_u32(&f, b->version);
    gb_u64(&f, b->have_counts ? b->n_tensors_override : b->n_tensors);
    gb_u64(&f, b->have_counts ? b->n_kv_override : b->n_kv);
    gb_put(&f, b->kv.p, b->kv.len);
    gb_put(&f, b->ti.p, b->ti.len);
    while (f.len % b->alignment) gb_u8(&f, 0);
    for (uint64_t i = 0; i < b->data_bytes; i++) gb_u8(&f, (uint8_t)(i * 7 + 3));
    if (b->trunc >= 0 && (size_t)b->trunc < f.len) f.len = (size_t)b->trunc;

    if (b->path[0]) unlink(b->path);
    snprintf(b->path, sizeof(b->path), "%s/st_gguf_%s_%d_XXXXXX", dir ? dir : "/tmp", tag,
             (int)getpid());
    int fd = mkstemp(b->path);
    if (fd < 0 || write(fd, f.p, f.len) != (ssize_t)f.len) {
        fprintf(stderr, "cannot write %s\n", b->path);
        exit(2);
    }
    close(fd);
    free(f.p);
    return b->path;
}

#endif /* TEST_GGUF_BUILDER_H */
