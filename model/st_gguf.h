/*
 * st_gguf.h - a validating GGUF (v2, v3) reader over mmap.
 *
 *   st_error_t err;
 *   st_gguf_t *g;
 *   if (st_gguf_open("m.gguf", &g, &err) != ST_OK) { puts(err.msg); ... }
 *   uint32_t n_layer;
 *   st_gguf_get_u32(g, "llama.block_count", &n_layer);
 *   const st_tensor_t *t = st_gguf_find_tensor(g, "token_embd.weight");
 *   st_gguf_close(g);
 *
 * Everything read from the file is checked before use, in release builds:
 * magic, version, counts against the file size, string and array lengths,
 * value types, tensor types, dimension products (no overflow), row lengths
 * that are whole blocks, alignment, tensor data inside the file, duplicate
 * keys and tensor names. A failure fills `err` with one line naming the file,
 * the field and the offending value. Allocations are bounded by the file
 * size, so a hostile header cannot ask for gigabytes.
 *
 * Strings in the file are not NUL-terminated; accessors return st_str_t
 * views into the mapping (valid until st_gguf_close). Tensor names are copied
 * and NUL-terminated.
 */
#ifndef ST_GGUF_H
#define ST_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_status.h"
#include "st_tensor.h"

typedef struct st_gguf st_gguf_t;

typedef enum st_gguf_type {
    ST_GGUF_UINT8 = 0, ST_GGUF_INT8 = 1, ST_GGUF_UINT16 = 2, ST_GGUF_INT16 = 3,
    ST_GGUF_UINT32 = 4, ST_GGUF_INT32 = 5, ST_GGUF_FLOAT32 = 6, ST_GGUF_BOOL = 7,
    ST_GGUF_STRING = 8, ST_GGUF_ARRAY = 9, ST_GGUF_UINT64 = 10, ST_GGUF_INT64 = 11,
    ST_GGUF_FLOAT64 = 12,
    ST_GGUF_TYPE_COUNT_
} st_gguf_type_t;

typedef struct st_str {
    const char *ptr;   /* not NUL-terminated */
    uint64_t    len;
} st_str_t;

/* Open and validate. Tensor data stays in the mapping; nothing is read
 * eagerly beyond the header. */
st_status_t st_gguf_open(const char *path, st_gguf_t **out, st_error_t *err);
void        st_gguf_close(st_gguf_t *g);
/* The same parser and checks over `size` bytes at `base` that the caller
 * owns and keeps valid until st_gguf_close (which does not free them): how a
 * decrypted model (st_crypt.h) is read without a plaintext file. `name`
 * stands for the path in errors and st_gguf_path. */
st_status_t st_gguf_open_mem(const char *name, const void *base, uint64_t size,
                             st_gguf_t **out, st_error_t *err);

const char *st_gguf_path(const st_gguf_t *g);
uint32_t    st_gguf_version(const st_gguf_t *g);
uint64_t    st_gguf_file_size(const st_gguf_t *g);
const void *st_gguf_base(const st_gguf_t *g);        /* start of the mapping */
uint64_t    st_gguf_data_offset(const st_gguf_t *g); /* start of tensor data */
uint32_t    st_gguf_alignment(const st_gguf_t *g);

/* Metadata. Keys are looked up by exact name; -1 when absent. */
int64_t        st_gguf_n_kv(const st_gguf_t *g);
int64_t        st_gguf_find_key(const st_gguf_t *g, const char *key);
st_str_t       st_gguf_key_name(const st_gguf_t *g, int64_t i);
st_gguf_type_t st_gguf_kv_type(const st_gguf_t *g, int64_t i);

/* Typed getters. Integer getters accept any integer type whose value fits
 * (ST_ERR_RANGE otherwise); float getters accept f32/f64. They return
 * ST_ERR_NOT_FOUND when the key is absent and ST_ERR_TYPE on a type mismatch,
 * and write *out only on success. */
st_status_t st_gguf_get_u32(const st_gguf_t *g, const char *key, uint32_t *out);
st_status_t st_gguf_get_u64(const st_gguf_t *g, const char *key, uint64_t *out);
st_status_t st_gguf_get_i64(const st_gguf_t *g, const char *key, int64_t *out);
st_status_t st_gguf_get_f32(const st_gguf_t *g, const char *key, float *out);
st_status_t st_gguf_get_bool(const st_gguf_t *g, const char *key, int *out);
st_status_t st_gguf_get_str(const st_gguf_t *g, const char *key, st_str_t *out);

/* Arrays: element type and count. For numeric arrays `data` points at the
 * packed little-endian elements in the mapping (possibly unaligned: read them
 * with memcpy or the st_gguf_arr_* helpers). String arrays are read one
 * element at a time with st_gguf_arr_str (O(1): offsets are indexed at open). */
st_status_t st_gguf_get_arr(const st_gguf_t *g, const char *key, st_gguf_type_t *elem_type,
                            uint64_t *count, const void **data);
st_status_t st_gguf_arr_str(const st_gguf_t *g, const char *key, uint64_t i, st_str_t *out);
/* Numeric element i as double / int64 (any numeric element type). */
st_status_t st_gguf_arr_f64(const st_gguf_t *g, const char *key, uint64_t i, double *out);
st_status_t st_gguf_arr_i64(const st_gguf_t *g, const char *key, uint64_t i, int64_t *out);

/* Tensors. */
uint64_t           st_gguf_n_tensors(const st_gguf_t *g);
const st_tensor_t *st_gguf_tensor(const st_gguf_t *g, uint64_t i);
const st_tensor_t *st_gguf_find_tensor(const st_gguf_t *g, const char *name);

const char *st_gguf_type_name(st_gguf_type_t t);

/* A printable copy of a file string for messages: at most n-1 bytes, bytes
 * outside 0x20..0x7e replaced by '?', "..." when truncated. A hostile
 * string must not inject newlines into a one-line error. Returns buf. */
const char *st_gguf_str_printable(st_str_t s, char *buf, size_t n);

#endif /* ST_GGUF_H */
