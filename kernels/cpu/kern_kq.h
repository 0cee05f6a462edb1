/*
 * kern_kq.h - weight decoding for the float-activation matmul of Q5_0,
 * Q5_1 and Q2_K..Q6_K (cpu_impl.h: st_cpu_kq_type), shared by the AVX2 and
 * AVX-512 files (static inline: each compiles it with its own -m flags;
 * include only from files built with at least AVX2 + F16C).
 *
 * Every type is read as chunks of 32 values, w = D[h] * u + O[h] with u a
 * small unsigned integer and h the chunk's half of 16 (see st_dtype.h):
 *   kq_scales   the (D, O) pairs of one block: 2 for Q5_0/Q5_1 (one chunk
 *               per block), 16 for the K types (8 chunks per block;
 *               Q6_K: 16 int8 scales, O = -32 D)
 *   kq_u8       the 32 u of chunk c of a block, bytes 0..15 and 16..31
 * The float weight is then fma(u, D, O), formed the same way whatever n so
 * that a (row, token) element never depends on the batch. This decoding is
 * written independently of the reference in common/dtype.c, which the
 * tests compare it against.
 */
#ifndef ST_KERN_KQ_H
#define ST_KERN_KQ_H

#include <immintrin.h>
#include <string.h>

#include "cpu_impl.h"

#define KQ_INLINE static inline __attribute__((always_inline))

KQ_INLINE float kq_h2f(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return _cvtsh_ss(v);
}

KQ_INLINE uint32_t kq_rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Values per block and bytes per block of a kq type. */
KQ_INLINE int kq_block_elems(int type)
{
    return type == ST_DTYPE_Q5_0 || type == ST_DTYPE_Q5_1 ? 32 : 256;
}

KQ_INLINE int kq_block_bytes(int type)
{
    switch (type) {
    case ST_DTYPE_Q5_0: return 22;
    case ST_DTYPE_Q5_1: return 24;
    case ST_DTYPE_Q2_K: return 84;
    case ST_DTYPE_Q3_K: return 110;
    case ST_DTYPE_Q4_K: return 144;
    case ST_DTYPE_Q6_K: return 210;
    default:            return 176;   /* Q5_K */
    }
}

/* (D[h], O[h]) for the halves h of one block: h = 0, 1 for Q5_0/Q5_1,
 * 0..15 for the K types. */
KQ_INLINE void kq_scales(int type, const uint8_t *b, float *D, float *O)
{
    switch (type) {
    case ST_DTYPE_Q5_0: {
        float d = kq_h2f(b);
        D[0] = D[1] = d;
        O[0] = O[1] = -16.0f * d;   /* exact: fma(u, d, -16 d) = d (u - 16) rounded once */
        break;
    }
    case ST_DTYPE_Q5_1:
        D[0] = D[1] = kq_h2f(b);
        O[0] = O[1] = kq_h2f(b + 2);
        break;
    case ST_DTYPE_Q2_K: {
        const float d = kq_h2f(b + 80), dm = kq_h2f(b + 82);
        for (int i = 0; i < 16; i++) {
            D[i] = d * (float)(b[i] & 15);
            O[i] = -(dm * (float)(b[i] >> 4));
        }
        break;
    }
    case ST_DTYPE_Q3_K: {
        /* scale i: 4 low bits from nibble (i >> 3) of byte 96 + (i & 7),
         * 2 high bits from byte 104 + (i & 3) at bit 2 (i >> 2); bias 32 */
        const uint8_t *s = b + 96;
        const float d = kq_h2f(b + 108);
        for (int i = 0; i < 16; i++) {
            int lo = (s[i & 7] >> (4 * (i >> 3))) & 15;
            int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
            D[i] = d * (float)((hi << 4 | lo) - 32);
            O[i] = -4.0f * D[i];
        }
        break;
    }
    case ST_DTYPE_Q6_K: {
        /* 16 signed 8-bit scales at byte 192, one per half; d at 208; the
         * six-bit u are biased by 32: fma(u, D, -32 D) = D (u - 32) rounded
         * once, as the reference's d * sc * q */
        const float d = kq_h2f(b + 208);
        for (int i = 0; i < 16; i++) {
            D[i] = d * (float)(int8_t)b[192 + i];
            O[i] = -32.0f * D[i];
        }
        break;
    }
    default: {   /* Q4_K, Q5_K: 8 six-bit (scale, min) pairs in 12 bytes */
        const uint8_t *s = b + 4;
        const float d = kq_h2f(b), dm = kq_h2f(b + 2);
        for (int j = 0; j < 8; j++) {
            int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
            int mn = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
            D[2 * j] = D[2 * j + 1] = d * (float)sc;
            O[2 * j] = O[2 * j + 1] = -(dm * (float)mn);
        }
        break;
    }
    }
}

/* Byte k of the result is 0x10 (Q5: the fifth bit) where bit k of the
 * 16-bit word `bits` is set, else 0. */
KQ_INLINE __m128i kq_bits16_to_bytes(uint32_t bits, char val)
{
    const __m128i sel = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m128i bit = _mm_set1_epi64x((long long)0x8040201008040201ull);
    __m128i v = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)bits), sel);
    v = _mm_cmpeq_epi8(_mm_and_si128(v, bit), bit);
    return _mm_and_si128(v, _mm_set1_epi8(val));
}

/* The u of chunk c of block b: lo = values 0..15, hi = 16..31. */
KQ_INLINE void kq_u8(int type, const uint8_t *b, int c, __m128i *lo, __m128i *hi)
{
    const __m128i m4 = _mm_set1_epi8(0x0F), m2 = _mm_set1_epi8(0x03), one = _mm_set1_epi8(1);
    switch (type) {
    case ST_DTYPE_Q5_0:
    case ST_DTYPE_Q5_1: {
        const int off = type == ST_DTYPE_Q5_1 ? 4 : 2;
        const uint32_t qh = kq_rd32(b + off);
        __m128i q = _mm_loadu_si128((const __m128i *)(b + off + 4));
        *lo = _mm_or_si128(_mm_and_si128(q, m4), kq_bits16_to_bytes(qh & 0xFFFF, 0x10));
        *hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), m4),
                           kq_bits16_to_bytes(qh >> 16, 0x10));
        break;
    }
    case ST_DTYPE_Q2_K:
    case ST_DTYPE_Q3_K: {
        const uint8_t *q = b + (type == ST_DTYPE_Q2_K ? 16 : 32) + 32 * (c >> 2);
        const __m128i sh = _mm_cvtsi32_si128(2 * (c & 3));
        __m128i q0 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)q), sh), m2);
        __m128i q1 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(q + 16)), sh), m2);
        if (type == ST_DTYPE_Q3_K) {
            /* third bit: bit c of hmask[l] (bytes 0..31), moved to bit 2 */
            const __m128i hc = _mm_cvtsi32_si128(c);
            __m128i h0 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)b), hc), one);
            __m128i h1 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(b + 16)), hc), one);
            q0 = _mm_or_si128(q0, _mm_slli_epi16(h0, 2));
            q1 = _mm_or_si128(q1, _mm_slli_epi16(h1, 2));
        }
        *lo = q0;
        *hi = q1;
        break;
    }
    case ST_DTYPE_Q6_K: {
        /* chunk c = 4 g + k of 32 values: the low 4 bits are nibble (k >> 1)
         * of ql[64 g + 32 (k & 1) + l], the high 2 bits sit at bit 2 k of
         * qh[32 g + l] (bytes 128..191) */
        const uint8_t *q = b + 64 * (c >> 2) + 32 * (c & 1), *qh = b + 128 + 32 * (c >> 2);
        const __m128i sh = _mm_cvtsi32_si128(4 * ((c >> 1) & 1));
        const __m128i sh2 = _mm_cvtsi32_si128(2 * (c & 3));
        __m128i q0 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)q), sh), m4);
        __m128i q1 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(q + 16)), sh), m4);
        __m128i h0 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)qh), sh2), m2);
        __m128i h1 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(qh + 16)), sh2), m2);
        *lo = _mm_or_si128(q0, _mm_slli_epi16(h0, 4));
        *hi = _mm_or_si128(q1, _mm_slli_epi16(h1, 4));
        break;
    }
    default: {   /* Q4_K, Q5_K: chunks 2i, 2i+1 = low, high nibbles of qs[32i..] */
        const uint8_t *q = b + (type == ST_DTYPE_Q4_K ? 16 : 48) + 32 * (c >> 1);
        const __m128i sh = _mm_cvtsi32_si128(4 * (c & 1));
        __m128i q0 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)q), sh), m4);
        __m128i q1 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(q + 16)), sh), m4);
        if (type == ST_DTYPE_Q5_K) {
            /* fifth bit: bit c of qh[l] (bytes 16..47), moved to bit 4 */
            const __m128i hc = _mm_cvtsi32_si128(c);
            __m128i h0 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(b + 16)), hc), one);
            __m128i h1 = _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128((const __m128i *)(b + 32)), hc), one);
            q0 = _mm_or_si128(q0, _mm_slli_epi16(h0, 4));
            q1 = _mm_or_si128(q1, _mm_slli_epi16(h1, 4));
        }
        *lo = q0;
        *hi = q1;
        break;
    }
    }
}

#endif /* ST_KERN_KQ_H */
