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
 *   Q5_0  {f16 d; u8 qh[4]; u8 qs[16]}       x = d * (q - 16)
 *   Q5_1  {f16 d; f16 m; u8 qh[4]; u8 qs[16]} x = d * q + m
 *   Q8_0  {f16 d; i8 qs[32]}                 x = d * q
 * Nibbles: byte j holds element j in its low half and element j+16 in its
 * high half (for Q4_0/Q4_1/Q5_0/Q5_1 blocks of 32); Q5's fifth bit of
 * element j is bit j of the little-endian word qh.
 *
 * K types: super-blocks of 256 values with sub-block scales.
 *   Q2_K  {u8 scales[16]; u8 qs[64]; f16 d, dmin}             84 bytes
 *         sub-block of 16: x = d*(sc & 15) * q - dmin*(sc >> 4), q 2 bits
 *   Q3_K  {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}     110 bytes
 *         sub-block of 16: x = d*(sc - 32) * (q - 4), q = 2 bits of qs |
 *         one hmask bit << 2; 16 six-bit scales packed in 12 bytes
 *   Q4_K  {f16 d, dmin; u8 scales[12]; u8 qs[128]}            144 bytes
 *   Q5_K  {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} 176 bytes
 *         sub-block of 32: x = d*sc * q - dmin*m, 8 six-bit (sc, m)
 *         pairs packed in 12 bytes; q 4 bits (+ one qh bit for Q5_K)
 *   Q6_K  {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}      210 bytes
 * The bit positions are llama.cpp's (ggml-common.h); dtype.c spells them
 * out in st_dtype_dequantize_row.
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
    ST_DTYPE_Q5_0 = 6,
    ST_DTYPE_Q5_1 = 7,
    ST_DTYPE_Q8_0 = 8,
    ST_DTYPE_Q2_K = 10,
    ST_DTYPE_Q3_K = 11,
    ST_DTYPE_Q4_K = 12,
    ST_DTYPE_Q5_K = 13,
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

/* Q2_K..Q5_K as the kernels read them: every chunk c (0..7) of 32 values
 * of a 256-value super-block is w = D[h] * u + O[h] with u an unsigned
 * integer of 2..5 bits and h = 2c + (l >= 16) the half (16 values) that
 * element l of the chunk belongs to (Q4_K and Q5_K give both halves the
 * same pair; Q3_K has O = -4 D). kq_scales unpacks the 16 (D, O) pairs of
 * one block, kq_unit the 32 u of chunk c. Reference C; the SIMD kernels
 * reimplement kq_unit and share kq_scales (a few scalar operations per
 * 256 values). Other types give zeros. */
void st_dtype_kq_scales(uint32_t type, const void *block, float D[16], float O[16]);
void st_dtype_kq_unit(uint32_t type, const void *block, int c, uint8_t u[32]);

/* ---- KV cache element types ----
 * The KV cache stores K/V rows as F32, F16 (the default) or Q8_0 (GGUF's
 * block of 32 int8 with an fp16 scale, quantized as each row is written).
 * st_kv_type_parse reads "f32" | "f16" | "q8_0"; st_kv_type_valid says
 * whether a number from outside (wire, config) is one of them. */
#define ST_KV_TYPE_DEFAULT ST_DTYPE_F16
#define ST_KV_TYPE_NAMES   "f32, f16, q8_0"
static inline int st_kv_type_valid(uint32_t type)
{
    return type == ST_DTYPE_F32 || type == ST_DTYPE_F16 || type == ST_DTYPE_Q8_0;
}
/* 0 and *out set when s names a KV type; -1 otherwise (*out untouched). */
int st_kv_type_parse(const char *s, uint32_t *out);

/* Reference quantization of n floats into a row of `type` (F32, F16 or
 * Q8_0; n a multiple of the block size). Q8_0 rounds as ggml's
 * quantize_row_q8_0_ref: d = max|x| / 127 stored as fp16, q = round(x / d)
 * with the float d (not its fp16 rounding). Other types: nothing written,
 * returns -1. */
int st_dtype_quantize_row(uint32_t type, const float *src, void *dst, uint64_t n);

#endif /* ST_DTYPE_H */
