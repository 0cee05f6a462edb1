/*
 * kern_x86.h - block helpers shared by the AVX-512 and AMX kernel files
 * (static inline: each file compiles them with its own -m flags). Include
 * only from files built with at least AVX2 + F16C.
 */
#ifndef ST_KERN_X86_H
#define ST_KERN_X86_H

#include <immintrin.h>
#include <string.h>

#include "cpu_impl.h"

#define INLINE static inline __attribute__((always_inline))

INLINE uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

INLINE uint32_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* Factor on the O slot of pair_dm: Q4_1 and Q5_1 carry m itself, Q4_0,
 * Q5_0 and Q8_0 carry d and their offset is a power-of-two multiple of it
 * (exact). */
INLINE float ofactor(int type)
{
    switch (type) {
    case ST_DTYPE_Q4_1:
    case ST_DTYPE_Q5_1: return 1.0f;
    case ST_DTYPE_Q4_0: return -8.0f;
    case ST_DTYPE_Q5_0: return -16.0f;
    default:            return -128.0f;
    }
}

/* [D0, O0, D1, O1] of a block pair as floats; b1 == NULL: second block zero. */
INLINE __m128 pair_dm(int type, const uint8_t *b0, const uint8_t *b1)
{
    uint64_t v;
    if (type == ST_DTYPE_Q4_1) {
        v = rd32(b0) | (b1 ? (uint64_t)rd32(b1) << 32 : 0);
    } else {
        uint64_t d0 = rd16(b0), d1 = b1 ? rd16(b1) : 0;
        v = d0 | d0 << 16 | d1 << 32 | d1 << 48;
    }
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)v));
}

/* The fp16 bits of pair_dm, before conversion. */
INLINE uint64_t pair_dm_bits(int type, const uint8_t *b0, const uint8_t *b1)
{
    if (type == ST_DTYPE_Q4_1)
        return rd32(b0) | (b1 ? (uint64_t)rd32(b1) << 32 : 0);
    uint64_t d0 = rd16(b0), d1 = b1 ? rd16(b1) : 0;
    return d0 | d0 << 16 | d1 << 32 | d1 << 48;
}

/* The u8 values of a block pair in the activation layout:
 * wl = b0 u0..15 | b1 u0..15, wh = b0 u16..31 | b1 u16..31. */
INLINE void pair_u8(int type, const uint8_t *b0, const uint8_t *b1, __m256i *wl, __m256i *wh)
{
    if (type == ST_DTYPE_Q8_0) {
        const __m256i bias = _mm256_set1_epi8((char)0x80);
        __m128i l0 = _mm_loadu_si128((const __m128i *)(b0 + 2));
        __m128i h0 = _mm_loadu_si128((const __m128i *)(b0 + 18));
        __m128i l1 = b1 ? _mm_loadu_si128((const __m128i *)(b1 + 2)) : _mm_setzero_si128();
        __m128i h1 = b1 ? _mm_loadu_si128((const __m128i *)(b1 + 18)) : _mm_setzero_si128();
        *wl = _mm256_xor_si256(_mm256_set_m128i(l1, l0), bias);
        *wh = _mm256_xor_si256(_mm256_set_m128i(h1, h0), bias);
    } else {
        const int off = type == ST_DTYPE_Q4_1 ? 4 : 2;
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        __m128i v0 = _mm_loadu_si128((const __m128i *)(b0 + off));
        __m128i v1 = b1 ? _mm_loadu_si128((const __m128i *)(b1 + off)) : _mm_setzero_si128();
        __m256i v = _mm256_set_m128i(v1, v0);
        *wl = _mm256_and_si256(v, m4);
        *wh = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
}

#endif /* ST_KERN_X86_H */
