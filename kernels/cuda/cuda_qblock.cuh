/*
 * cuda_qblock.cuh - the decode math of the GGUF block types, shared by the
 * CUDA backend's quantized kernels (cuda_qmv.cu) and a host test that
 * checks it against the CPU reference (tests/cuda/test_cuda_qblock.c).
 *
 * Everything here is __host__ __device__: nvcc compiles the same source
 * for the GPU and for the host, so the host test runs the very arithmetic
 * the kernels run (the same operations in the same order, fmaf included)
 * on a machine without a GPU. Only the loads differ: the device uses
 * aligned __ldg loads of 2, 4 or 16 bytes, the host memcpy. The host path
 * calls CUQ_HOST_ALIGN_CHECK(p, bytes) on every multi-byte load, so a test
 * that places rows as the device does (rows back to back from an aligned
 * base) catches a load that would fault on the device.
 *
 * The unit of work is 32 consecutive weights of a row: one block of the
 * 32-value types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), one of the eight chunks of
 * a 256-value K super-block (Q2_K..Q6_K; chunk c holds values 32c..32c+31,
 * the same split as st_dtype_kq_unit). cuq_unit<T> decodes unit u of a row
 * into 32 floats; cuq_lane_dot<T> is one lane's share of a warp's dot
 * products (units lane, lane + 32, ...), which the mat-vec kernel then
 * sums across the warp.
 *
 * Block layouts follow the CPU reference exactly (st_dtype_dequantize_row
 * in common/dtype.c, itself ggml's layout, see common/st_dtype.h), and so
 * do the decoded values, bit for bit: the types with an offset (x = D*q +
 * O: Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) use one fmaf where the reference
 * multiplies then adds, but D*q is exact in f32 there (an f16 scale has 11
 * significant bits, times a sub-scale of at most 6 bits and q of at most
 * 5), so both round only the sum. Q6_K's product can round, and it is
 * computed as the reference does, (d * scale) * q.
 */
#ifndef ST_CUDA_QBLOCK_CUH
#define ST_CUDA_QBLOCK_CUH

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cuda_fp16.h>

#include "cuda_kern.h"

#define CUQ_HD __host__ __device__ __forceinline__

/* Full unrolling keeps w[32] and the word arrays in registers on the
 * device; the host compiler does not know the pragma. */
#ifdef __CUDA_ARCH__
#define CUQ_UNROLL _Pragma("unroll")
#else
#define CUQ_UNROLL
#endif

#ifndef CUQ_HOST_ALIGN_CHECK
#define CUQ_HOST_ALIGN_CHECK(p, bytes) ((void)0)
#endif

/* Bytes of one block of each type (common/dtype.c's table). */
template <int T> struct cuq_block;
template <> struct cuq_block<CU_Q4_0> { static constexpr int bytes = 18; };
template <> struct cuq_block<CU_Q4_1> { static constexpr int bytes = 20; };
template <> struct cuq_block<CU_Q5_0> { static constexpr int bytes = 22; };
template <> struct cuq_block<CU_Q5_1> { static constexpr int bytes = 24; };
template <> struct cuq_block<CU_Q8_0> { static constexpr int bytes = 34; };
template <> struct cuq_block<CU_Q2_K> { static constexpr int bytes = 84; };
template <> struct cuq_block<CU_Q3_K> { static constexpr int bytes = 110; };
template <> struct cuq_block<CU_Q4_K> { static constexpr int bytes = 144; };
template <> struct cuq_block<CU_Q5_K> { static constexpr int bytes = 176; };
template <> struct cuq_block<CU_Q6_K> { static constexpr int bytes = 210; };

/* ---- loads (p aligned to the load's size; rows start 256-aligned) ---- */

CUQ_HD uint32_t cuq_ld16(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return __ldg(reinterpret_cast<const unsigned short *>(p));
#else
    uint16_t v;
    CUQ_HOST_ALIGN_CHECK(p, 2);
    memcpy(&v, p, 2);
    return v;
#endif
}

CUQ_HD uint32_t cuq_ld32(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return __ldg(reinterpret_cast<const unsigned int *>(p));
#else
    uint32_t v;
    CUQ_HOST_ALIGN_CHECK(p, 4);
    memcpy(&v, p, 4);
    return v;
#endif
}

/* nw little-endian 32-bit words from p, which is A-byte aligned (2, 4 or
 * 16; nw a multiple of 4 when A is 16). */
template <int A>
CUQ_HD void cuq_words(const uint8_t *p, uint32_t *q, int nw)
{
    if constexpr (A == 16) {
CUQ_UNROLL
        for (int i = 0; i < nw; i += 4) {
#ifdef __CUDA_ARCH__
            uint4 v = __ldg(reinterpret_cast<const uint4 *>(p) + i / 4);
            q[i] = v.x;
            q[i + 1] = v.y;
            q[i + 2] = v.z;
            q[i + 3] = v.w;
#else
            CUQ_HOST_ALIGN_CHECK(p + 4 * i, 16);
            memcpy(q + i, p + 4 * i, 16);
#endif
        }
    } else if constexpr (A == 4) {
CUQ_UNROLL
        for (int i = 0; i < nw; i++)
            q[i] = cuq_ld32(p + 4 * i);
    } else {
        static_assert(A == 2, "alignment 2, 4 or 16");
CUQ_UNROLL
        for (int i = 0; i < nw; i++)
            q[i] = cuq_ld16(p + 4 * i) | (cuq_ld16(p + 4 * i + 2) << 16);
    }
}

/* Byte k of a word array (k known at compile time after unrolling). */
CUQ_HD uint32_t cuq_byte(const uint32_t *q, int k)
{
    return (q[k >> 2] >> (8 * (k & 3))) & 0xFFu;
}

/* ---- conversions ---- */

/* IEEE half bits to float, exact for every value (as st_fp16_to_f32). */
CUQ_HD float cuq_f16(uint32_t h)
{
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half((unsigned short)h));
#else
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    float f;
    if (exp == 0) {
        f = (float)mant * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    u = sign | (exp == 31 ? 0x7f800000u | (mant << 13) : ((exp + 112u) << 23) | (mant << 13));
    memcpy(&f, &u, 4);
    return f;
#endif
}

/* (float)q - off, exact for 0 <= q < 2^22 and small integer off: the bits
 * 0x4B000000 | q are the float 2^23 + q, and one add removes 2^23 + off.
 * A float add instead of an integer-to-float conversion, which runs at a
 * lower rate than the add on NVIDIA GPUs (CUDA C++ Programming Guide,
 * arithmetic instruction throughput). */
CUQ_HD float cuq_i2f(uint32_t q, float off)
{
    uint32_t b = 0x4B000000u | q;
    float f;
#ifdef __CUDA_ARCH__
    f = __uint_as_float(b);
#else
    memcpy(&f, &b, 4);
#endif
    return f - (8388608.0f + off);
}

/* ---- one unit: 32 weights ---- */

/* Decodes unit u (weights 32u..32u+31) of a row of type T into w. */
template <int T>
CUQ_HD void cuq_unit(const uint8_t *row, int u, float *w)
{
    if constexpr (T == CU_Q4_0 || T == CU_Q4_1) {
        /* {f16 d; [f16 m;] u8 qs[16]}: byte j holds element j (low nibble)
         * and j + 16 (high nibble) */
        constexpr int has_m = T == CU_Q4_1;
        const uint8_t *b = row + (size_t)u * cuq_block<T>::bytes;
        const float d = cuq_f16(cuq_ld16(b));
        const float m = has_m ? cuq_f16(cuq_ld16(b + 2)) : 0.0f;
        uint32_t q[4];
        cuq_words<has_m ? 4 : 2>(b + (has_m ? 4 : 2), q, 4);
CUQ_UNROLL
        for (int j = 0; j < 16; j++) {
            uint32_t by = cuq_byte(q, j);
            if constexpr (has_m) {
                w[j]      = fmaf(d, cuq_i2f(by & 15u, 0.0f), m);
                w[j + 16] = fmaf(d, cuq_i2f(by >> 4, 0.0f), m);
            } else {
                w[j]      = d * cuq_i2f(by & 15u, 8.0f);
                w[j + 16] = d * cuq_i2f(by >> 4, 8.0f);
            }
        }
    } else if constexpr (T == CU_Q5_0 || T == CU_Q5_1) {
        /* {f16 d; [f16 m;] u8 qh[4]; u8 qs[16]}: as Q4, the fifth bit of
         * element j is bit j of the little-endian word qh */
        constexpr int has_m = T == CU_Q5_1;
        const uint8_t *b = row + (size_t)u * cuq_block<T>::bytes;
        const float d = cuq_f16(cuq_ld16(b));
        const float m = has_m ? cuq_f16(cuq_ld16(b + 2)) : 0.0f;
        uint32_t qh, q[4];
        if constexpr (has_m) {
            qh = cuq_ld32(b + 4);
            cuq_words<4>(b + 8, q, 4);
        } else {
            qh = cuq_ld16(b + 2) | (cuq_ld16(b + 4) << 16);
            cuq_words<2>(b + 6, q, 4);
        }
CUQ_UNROLL
        for (int j = 0; j < 16; j++) {
            uint32_t by = cuq_byte(q, j);
            uint32_t lo = (by & 15u) | (((qh >> j) & 1u) << 4);
            uint32_t hi = (by >> 4) | (((qh >> (j + 16)) & 1u) << 4);
            if constexpr (has_m) {
                w[j]      = fmaf(d, cuq_i2f(lo, 0.0f), m);
                w[j + 16] = fmaf(d, cuq_i2f(hi, 0.0f), m);
            } else {
                w[j]      = d * cuq_i2f(lo, 16.0f);
                w[j + 16] = d * cuq_i2f(hi, 16.0f);
            }
        }
    } else if constexpr (T == CU_Q8_0) {
        /* {f16 d; i8 qs[32]}; (int8)b + 128 == b ^ 0x80 */
        const uint8_t *b = row + (size_t)u * cuq_block<T>::bytes;
        const float d = cuq_f16(cuq_ld16(b));
        uint32_t q[8];
        cuq_words<2>(b + 2, q, 8);
CUQ_UNROLL
        for (int j = 0; j < 32; j++)
            w[j] = d * cuq_i2f(cuq_byte(q, j) ^ 0x80u, 128.0f);
    } else if constexpr (T == CU_Q2_K) {
        /* {u8 scales[16]; u8 qs[64]; f16 d, dmin}: values 128h + 32j + l
         * are bits 2j of qs[32h + l]; half i of 16 values has scale
         * d * (scales[i] & 15) and offset -dmin * (scales[i] >> 4) */
        const uint8_t *b = row + (size_t)(u >> 3) * cuq_block<T>::bytes;
        const int c = u & 7, sh = 2 * (c & 3);
        const float d = cuq_f16(cuq_ld16(b + 80)), dmin = cuq_f16(cuq_ld16(b + 82));
        const uint32_t sc = cuq_ld16(b + 2 * c);   /* halves 2c, 2c + 1 */
        const float D0 = d * cuq_i2f(sc & 15u, 0.0f), O0 = -(dmin * cuq_i2f((sc >> 4) & 15u, 0.0f));
        const float D1 = d * cuq_i2f((sc >> 8) & 15u, 0.0f), O1 = -(dmin * cuq_i2f(sc >> 12, 0.0f));
        uint32_t q[8];
        cuq_words<4>(b + 16 + 32 * (c >> 2), q, 8);
CUQ_UNROLL
        for (int l = 0; l < 32; l++) {
            float v = cuq_i2f((cuq_byte(q, l) >> sh) & 3u, 0.0f);
            w[l] = l < 16 ? fmaf(D0, v, O0) : fmaf(D1, v, O1);
        }
    } else if constexpr (T == CU_Q3_K) {
        /* {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: low two bits as
         * Q2_K (qs at 32), the third bit of value 32c + l is bit c of
         * hmask[l]; x = d * (s - 32) * (q - 4) with s six bits: low four
         * in the nibbles of scales[0..7] (scale i in byte i & 7, high
         * nibble for i >= 8), top two in byte 8 + (i & 3) at bit 2 (i >> 2) */
        const uint8_t *b = row + (size_t)(u >> 3) * cuq_block<T>::bytes;
        const int c = u & 7, sh = 2 * (c & 3);
        const float d = cuq_f16(cuq_ld16(b + 108));
        const uint32_t lo = cuq_ld16(b + 96 + ((2 * c) & 7)) >> (4 * (c >> 2));
        const uint32_t hi = cuq_ld16(b + 104 + ((2 * c) & 3)) >> (2 * (c >> 1));
        const uint32_t s0 = (lo & 15u) | ((hi & 3u) << 4);
        const uint32_t s1 = ((lo >> 8) & 15u) | (((hi >> 8) & 3u) << 4);
        const float D0 = d * cuq_i2f(s0, 32.0f), D1 = d * cuq_i2f(s1, 32.0f);
        uint32_t q[8], hm[8];
        cuq_words<2>(b + 32 + 32 * (c >> 2), q, 8);
        cuq_words<2>(b, hm, 8);
CUQ_UNROLL
        for (int l = 0; l < 32; l++) {
            uint32_t v = ((cuq_byte(q, l) >> sh) & 3u) | (((cuq_byte(hm, l) >> c) & 1u) << 2);
            w[l] = (l < 16 ? D0 : D1) * cuq_i2f(v, 4.0f);
        }
    } else if constexpr (T == CU_Q4_K || T == CU_Q5_K) {
        /* {f16 d, dmin; u8 scales[12]; [u8 qh[32];] u8 qs[128]}: chunk c is
         * the low (c even) or high nibble of qs[32 (c >> 1) + l], plus bit c
         * of qh[l] for Q5_K; its six-bit (s, m) pair: c < 4 in the low six
         * bits of scales[c] / scales[c + 4]; c >= 4 takes the nibbles of
         * scales[c + 4] and the top two bits of scales[c - 4] / scales[c] */
        constexpr int q5 = T == CU_Q5_K;
        const uint8_t *b = row + (size_t)(u >> 3) * cuq_block<T>::bytes;
        const int c = u & 7, sh = 4 * (c & 1);
        const float d = cuq_f16(cuq_ld16(b)), dmin = cuq_f16(cuq_ld16(b + 2));
        uint32_t sw[3];
        cuq_words<4>(b + 4, sw, 3);
        const uint32_t a = cuq_byte(sw, c & 3), bb = cuq_byte(sw, (c & 3) + 4);
        const uint32_t e = cuq_byte(sw, (c & 3) + 8);
        const uint32_t s = c < 4 ? a & 63u : (e & 15u) | ((a >> 6) << 4);
        const uint32_t m = c < 4 ? bb & 63u : (e >> 4) | ((bb >> 6) << 4);
        const float D = d * cuq_i2f(s, 0.0f), O = -(dmin * cuq_i2f(m, 0.0f));
        uint32_t q[8], qh[8];
        cuq_words<16>(b + (q5 ? 48 : 16) + 32 * (c >> 1), q, 8);
        if constexpr (q5)
            cuq_words<16>(b + 16, qh, 8);
CUQ_UNROLL
        for (int l = 0; l < 32; l++) {
            uint32_t v = (cuq_byte(q, l) >> sh) & 15u;
            if constexpr (q5)
                v |= ((cuq_byte(qh, l) >> c) & 1u) << 4;
            w[l] = fmaf(D, cuq_i2f(v, 0.0f), O);
        }
    } else if constexpr (T == CU_Q6_K) {
        /* {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: half h = c >> 2
         * of 128 values, group k = c & 3 within it; value l of the chunk
         * is nibble k >> 1 of ql[64h + 32 (k & 1) + l] with bits 2k of
         * qh[32h + l] on top, minus 32, times d * scales[8h + 2k + l / 16] */
        const uint8_t *b = row + (size_t)(u >> 3) * cuq_block<T>::bytes;
        const int c = u & 7, h = c >> 2, k = c & 3;
        const int shl = 4 * (k >> 1), shh = 2 * k;
        const float d = cuq_f16(cuq_ld16(b + 208));
        const uint32_t sc = cuq_ld16(b + 192 + 8 * h + 2 * k);
        const float D0 = d * cuq_i2f((sc & 0xFFu) ^ 0x80u, 128.0f);
        const float D1 = d * cuq_i2f((sc >> 8) ^ 0x80u, 128.0f);
        uint32_t ql[8], qh[8];
        cuq_words<2>(b + 64 * h + 32 * (k & 1), ql, 8);
        cuq_words<2>(b + 128 + 32 * h, qh, 8);
CUQ_UNROLL
        for (int l = 0; l < 32; l++) {
            uint32_t v = ((cuq_byte(ql, l) >> shl) & 15u) | (((cuq_byte(qh, l) >> shh) & 3u) << 4);
            w[l] = (l < 16 ? D0 : D1) * cuq_i2f(v, 32.0f);
        }
    } else {
        static_assert(T == -1, "not a quantized type with a CUDA kernel");
    }
}

/* ---- dot products ---- */

/* acc + sum_j w[j] x[j] as 32 chained fmaf, j ascending. vec: x is
 * 16-byte aligned (the device then reads it in float4). */
CUQ_HD float cuq_dot32(const float *w, const float *x, int vec, float acc)
{
#ifdef __CUDA_ARCH__
    if (vec) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
CUQ_UNROLL
        for (int i = 0; i < 8; i++) {
            float4 a = __ldg(x4 + i);
            acc = fmaf(w[4 * i], a.x, acc);
            acc = fmaf(w[4 * i + 1], a.y, acc);
            acc = fmaf(w[4 * i + 2], a.z, acc);
            acc = fmaf(w[4 * i + 3], a.w, acc);
        }
        return acc;
    }
#endif
CUQ_UNROLL
    for (int j = 0; j < 32; j++)
        acc = fmaf(w[j], x[j], acc);
    return acc;
}

/* One lane's share of the products of row wr (cols weights, a multiple of
 * 32) with n <= CU_MATVEC_MAX_N token rows of x (cols floats each):
 * acc[t] += units lane, lane + 32, ... of row . x[t]. Each unit is decoded
 * once and reused for every token. */
template <int T>
CUQ_HD void cuq_lane_dot(const uint8_t *wr, int cols, int lane, const float *x, int n, int vec,
                         float *acc)
{
    const int units = cols / 32;
    for (int u = lane; u < units; u += 32) {
        float w[32];
        cuq_unit<T>(wr, u, w);
CUQ_UNROLL
        for (int t = 0; t < CU_MATVEC_MAX_N; t++)
            if (t < n)
                acc[t] = cuq_dot32(w, x + (size_t)t * cols + (size_t)u * 32, vec, acc[t]);
    }
}

#endif /* ST_CUDA_QBLOCK_CUH */
