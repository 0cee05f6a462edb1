#include "st_dtype.h"

#include <string.h>

/* Indexed by GGUF type number; gaps are types we do not support. */
static const st_dtype_traits_t dtype_table[ST_DTYPE_COUNT_] = {
    [ST_DTYPE_F32]  = {"f32",  1,   4},
    [ST_DTYPE_F16]  = {"f16",  1,   2},
    [ST_DTYPE_Q4_0] = {"q4_0", 32,  18},
    [ST_DTYPE_Q4_1] = {"q4_1", 32,  20},
    [ST_DTYPE_Q8_0] = {"q8_0", 32,  34},
    [ST_DTYPE_Q6_K] = {"q6_k", 256, 210},
    [ST_DTYPE_BF16] = {"bf16", 1,   2},
};

const st_dtype_traits_t *st_dtype_traits(uint32_t type)
{
    if (type >= ST_DTYPE_COUNT_ || dtype_table[type].name == NULL)
        return NULL;
    return &dtype_table[type];
}

const char *st_dtype_name(uint32_t type)
{
    const st_dtype_traits_t *t = st_dtype_traits(type);
    return t ? t->name : "unknown";
}

uint64_t st_dtype_row_bytes(uint32_t type, uint64_t n)
{
    const st_dtype_traits_t *t = st_dtype_traits(type);
    if (!t || n % t->block_elems != 0)
        return 0;
    return n / t->block_elems * t->block_bytes;
}

float st_fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    union { uint32_t u; float f; } v;

    if (exp == 0) {
        /* zero or subnormal: value = mant * 2^-24 */
        float f = (float)mant * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    if (exp == 31)
        v.u = sign | 0x7f800000u | (mant << 13);
    else
        v.u = sign | ((exp + 112u) << 23) | (mant << 13);
    return v.f;
}

uint16_t st_f32_to_fp16(float f)
{
    union { float f; uint32_t u; } v = { f };
    uint32_t sign = (v.u >> 16) & 0x8000u;
    uint32_t absu = v.u & 0x7fffffffu;

    if (absu >= 0x7f800000u)                      /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absu > 0x7f800000u ? 0x200u : 0));
    if (absu >= 0x477ff000u)                      /* overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) {                     /* subnormal or zero */
        union { uint32_t u; float f; } a = { absu };
        uint32_t m = (uint32_t)(a.f * 16777216.0f + 0.5f);
        return (uint16_t)(sign | m);
    }
    /* normal: round to nearest even */
    uint32_t mant = absu & 0x7fffffu;
    uint32_t exp  = (absu >> 23) - 112u;
    uint32_t r    = (exp << 10) | (mant >> 13);
    uint32_t rem  = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++;
    return (uint16_t)(sign | r);
}

uint16_t st_f32_to_bf16(float f)
{
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40u);   /* quiet nan */
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

static inline uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static void deq_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t  *sc = (const int8_t *)(b + 192);
    float d = st_fp16_to_f32(rd16(b + 208));

    for (int n = 0; n < 256; n += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = (int)((ql[l]      & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = (int)((ql[l]      >> 4)  | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = (int)((ql[l + 32] >> 4)  | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l]      = d * (float)sc[is + 0] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
        y += 128; ql += 64; qh += 32; sc += 8;
    }
}

void st_dtype_dequantize_row(uint32_t type, const void *src, float *dst, uint64_t n)
{
    const uint8_t *s = src;
    uint64_t i;

    switch (type) {
    case ST_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case ST_DTYPE_F16:
        for (i = 0; i < n; i++) dst[i] = st_fp16_to_f32(rd16(s + 2 * i));
        break;
    case ST_DTYPE_BF16:
        for (i = 0; i < n; i++) dst[i] = st_bf16_to_f32(rd16(s + 2 * i));
        break;
    case ST_DTYPE_Q4_0:
        for (i = 0; i < n; i += 32, s += 18) {
            float d = st_fp16_to_f32(rd16(s));
            for (int j = 0; j < 16; j++) {
                dst[i + j]      = d * (float)((s[2 + j] & 0xF) - 8);
                dst[i + j + 16] = d * (float)((s[2 + j] >> 4) - 8);
            }
        }
        break;
    case ST_DTYPE_Q4_1:
        for (i = 0; i < n; i += 32, s += 20) {
            float d = st_fp16_to_f32(rd16(s)), m = st_fp16_to_f32(rd16(s + 2));
            for (int j = 0; j < 16; j++) {
                dst[i + j]      = d * (float)(s[4 + j] & 0xF) + m;
                dst[i + j + 16] = d * (float)(s[4 + j] >> 4) + m;
            }
        }
        break;
    case ST_DTYPE_Q8_0:
        for (i = 0; i < n; i += 32, s += 34) {
            float d = st_fp16_to_f32(rd16(s));
            for (int j = 0; j < 32; j++)
                dst[i + j] = d * (float)(int8_t)s[2 + j];
        }
        break;
    case ST_DTYPE_Q6_K:
        for (i = 0; i < n; i += 256, s += 210)
            deq_q6_k(s, dst + i);
        break;
    default:
        /* Callers validate types first; writing zeros keeps a bug visible
         * in results rather than reading past a buffer. */
        memset(dst, 0, n * sizeof(float));
        break;
    }
}
