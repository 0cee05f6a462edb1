/*
 * st_tensor.h - a read-only view of one weight tensor.
 *
 * Dimensions follow GGUF/ggml order: ne[0] is the innermost (contiguous)
 * dimension, so a 2-D weight matrix of `rows` outputs by `cols` inputs has
 * ne[0] = cols, ne[1] = rows, and row r starts at data + r * row_bytes.
 * `data` points into the mapped model file (CPU) and is never written.
 */
#ifndef ST_TENSOR_H
#define ST_TENSOR_H

#include <stdint.h>
#include "st_dtype.h"

#define ST_TENSOR_MAX_DIMS 4

typedef struct st_tensor {
    const char *name;                  /* NUL-terminated, owned by the file */
    st_dtype_t  type;
    uint32_t    n_dims;
    uint64_t    ne[ST_TENSOR_MAX_DIMS];/* unused dims are 1 */
    uint64_t    row_bytes;             /* bytes of one ne[0] row */
    uint64_t    nbytes;                /* total bytes */
    uint64_t    file_offset;           /* absolute offset in the file */
    const void *data;
} st_tensor_t;

#endif /* ST_TENSOR_H */
