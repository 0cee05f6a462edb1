/*
 * st_dtype.h - element types of weight tensors and their block layout.
 *
 * The numbering is GGUF's (ggml_type), so a type read from a file is used
 * directly after st_dtype_valid(). Quantized types store rows as a sequence
 * of blocks: `block_elems` values packed into `block_bytes` bytes. A row's
 * length must be a multiple of block_elems; its size is
 * row_len / block_elems * block_bytes.
 *
 * Block layouts (little endian, as in GGUF):
 *   Q4_0  {f16 d; u8 qs[16]}                 x = d * (q - 8)
 *   Q4_1  {f16 d; f16 m; u8 qs[16]}          x = d * q + m
 *   Q8_0  {f16 d; i8 qs[32]}                 x = d * q
 *   Q6_K  {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}  (256 values)
 * Nibbles: byte j holds element j in its low half and element j+16 in its
 * high half (for Q4_0/Q4_1 blocks of 32).
 */
#ifndef ST_DTYPE_H
#define ST_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum st_dtype {
    ST_DTYPE_F32  = 0,
    ST_DTYPE_F16  = 1,
    ST_DTYPE_Q4_0 = 2,
    ST_DTYPE_Q4_1 = 3,
    ST_DTYPE_Q8_0 = 8,
    ST_DTYPE_Q6_K = 14,
    ST_DTYPE_BF16 = 30,
    ST_DTYPE_COUNT_ = 31   /* one past the largest GGUF type number we know */
} st_dtype_t;

typedef struct st_dtype_traits {
    const char *name;        /* "q4_1"; NULL for numbers we do not support */
    uint32_t    block_elems; /* values per block (1 for plain floats)       */
    uint32_t    block_bytes; /* bytes per block                             */
} st_dtype_traits_t;

/* Traits of a type, or NULL when the number is not a supported type. */
const st_dtype_traits_t *st_dtype_traits(uint32_t type);

static inline int st_dtype_valid(uint32_t type)
{
    return st_dtype_traits(type) != NULL;
}

const char *st_dtype_name(uint32_t type);   /* "unknown" when invalid */

/* Bytes of one row of `n` elements; 0 when n is not a whole number of
 * blocks or the type is invalid. */
uint64_t st_dtype_row_bytes(uint32_t type, uint64_t n);

/* IEEE half and bfloat16 conversions (portable, no F16C needed). */
float    st_fp16_to_f32(uint16_t h);
uint16_t st_f32_to_fp16(float f);
static inline float st_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}
uint16_t st_f32_to_bf16(float f);

/* Reference dequantization of `n` values (n a multiple of the block size)
 * from `src` to floats. Used by tests, embeddings and slow paths. */
void st_dtype_dequantize_row(uint32_t type, const void *src, float *dst, uint64_t n);

#endif /* ST_DTYPE_H */
