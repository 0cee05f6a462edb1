#include "st_dtype.h"

#include <math.h>
#include <string.h>

/* Indexed by GGUF type number; gaps are types we do not support. */
static const st_dtype_traits_t dtype_table[ST_DTYPE_COUNT_] = {
    [ST_DTYPE_F32]  = {"f32",  1,   4},
    [ST_DTYPE_F16]  = {"f16",  1,   2},
    [ST_DTYPE_Q4_0] = {"q4_0", 32,  18},
    [ST_DTYPE_Q4_1] = {"q4_1", 32,  20},
    [ST_DTYPE_Q5_0] = {"q5_0", 32,  22},
    [ST_DTYPE_Q5_1] = {"q5_1", 32,  24},
    [ST_DTYPE_Q8_0] = {"q8_0", 32,  34},
    [ST_DTYPE_Q2_K] = {"q2_k", 256, 84},
    [ST_DTYPE_Q3_K] = {"q3_k", 256, 110},
    [ST_DTYPE_Q4_K] = {"q4_k", 256, 144},
    [ST_DTYPE_Q5_K] = {"q5_k", 256, 176},
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

static inline uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Q5_0 (offset -16) and Q5_1 (offset m): the fifth bit of element j is
 * bit j of qh, for j = 0..31 (low nibbles are 0..15, high 16..31). */
static void deq_q5(const uint8_t *b, float *y, int has_m)
{
    float d = st_fp16_to_f32(rd16(b));
    float m = has_m ? st_fp16_to_f32(rd16(b + 2)) : 0.0f;
    uint32_t qh = rd32(b + (has_m ? 4 : 2));
    const uint8_t *qs = b + (has_m ? 8 : 6);

    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0xF) | (int)(((qh >> j) & 1u) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        if (has_m) {
            y[j]      = d * (float)lo + m;
            y[j + 16] = d * (float)hi + m;
        } else {
            y[j]      = d * (float)(lo - 16);
            y[j + 16] = d * (float)(hi - 16);
        }
    }
}

void st_dtype_kq_scales(uint32_t type, const void *block, float D[16], float O[16])
{
    const uint8_t *b = block;

    switch (type) {
    case ST_DTYPE_Q2_K: {
        /* scales[i]: low nibble the scale, high nibble the min of 16 values */
        float d = st_fp16_to_f32(rd16(b + 80)), dmin = st_fp16_to_f32(rd16(b + 82));
        for (int i = 0; i < 16; i++) {
            D[i] = d * (float)(b[i] & 0xF);
            O[i] = -(dmin * (float)(b[i] >> 4));
        }
        break;
    }
    case ST_DTYPE_Q3_K: {
        /* 16 six-bit scales: low 4 bits in the nibbles of bytes 0..7
         * (scales 0..7 low halves, 8..15 high halves), top 2 bits in
         * bytes 8..11, byte 8 + i%4 at bit 2*(i/4); stored biased by 32. */
        const uint8_t *sc = b + 96;
        float d = st_fp16_to_f32(rd16(b + 108));
        for (int i = 0; i < 16; i++) {
            int lo = i < 8 ? sc[i] & 0xF : sc[i - 8] >> 4;
            int hi = (sc[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
            D[i] = d * (float)((lo | (hi << 4)) - 32);
            O[i] = -4.0f * D[i];
        }
        break;
    }
    case ST_DTYPE_Q4_K:
    case ST_DTYPE_Q5_K: {
        /* 8 (scale, min) pairs of 6 bits: pairs 0..3 in the low 6 bits of
         * bytes 0..3 / 4..7; pairs 4..7 take their low 4 bits from the
         * nibbles of bytes 8..11 and their top 2 bits from the top of
         * bytes 0..3 (scale) and 4..7 (min). Sub-block j covers 32 values,
         * both halves of 16 get the same pair. */
        const uint8_t *sc = b + 4;
        float d = st_fp16_to_f32(rd16(b)), dmin = st_fp16_to_f32(rd16(b + 2));
        for (int j = 0; j < 8; j++) {
            int s, m;
            if (j < 4) {
                s = sc[j] & 63;
                m = sc[j + 4] & 63;
            } else {
                s = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
                m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
            }
            D[2 * j] = D[2 * j + 1] = d * (float)s;
            O[2 * j] = O[2 * j + 1] = -(dmin * (float)m);
        }
        break;
    }
    default:
        for (int i = 0; i < 16; i++)
            D[i] = O[i] = 0.0f;
        break;
    }
}

void st_dtype_kq_unit(uint32_t type, const void *block, int c, uint8_t u[32])
{
    const uint8_t *b = block;

    switch (type) {
    case ST_DTYPE_Q2_K: {
        /* values 128h..128h+127 come from qs[32h..32h+31], two bits each,
         * chunk c = 4h + j at bit 2j */
        const uint8_t *q = b + 16 + 32 * (c >> 2);
        int sh = 2 * (c & 3);
        for (int l = 0; l < 32; l++)
            u[l] = (uint8_t)((q[l] >> sh) & 3);
        break;
    }
    case ST_DTYPE_Q3_K: {
        /* as Q2_K for the low two bits (qs at 32); the third is bit c of
         * hmask[l] */
        const uint8_t *q = b + 32 + 32 * (c >> 2);
        int sh = 2 * (c & 3);
        for (int l = 0; l < 32; l++)
            u[l] = (uint8_t)(((q[l] >> sh) & 3) | (((b[l] >> c) & 1) << 2));
        break;
    }
    case ST_DTYPE_Q4_K: {
        /* chunks 2i and 2i+1 are the low and high nibbles of qs[32i..] */
        const uint8_t *q = b + 16 + 32 * (c >> 1);
        int sh = 4 * (c & 1);
        for (int l = 0; l < 32; l++)
            u[l] = (uint8_t)((q[l] >> sh) & 0xF);
        break;
    }
    case ST_DTYPE_Q5_K: {
        /* as Q4_K (qs at 48), fifth bit = bit c of qh[l] */
        const uint8_t *q = b + 48 + 32 * (c >> 1);
        int sh = 4 * (c & 1);
        for (int l = 0; l < 32; l++)
            u[l] = (uint8_t)(((q[l] >> sh) & 0xF) | (((b[16 + l] >> c) & 1) << 4));
        break;
    }
    default:
        memset(u, 0, 32);
        break;
    }
}

/* K types other than Q6_K: chunk c of 32 values is D*u + O per half of 16. */
static void deq_kq(uint32_t type, const uint8_t *b, float *y)
{
    float D[16], O[16];
    uint8_t u[32];

    st_dtype_kq_scales(type, b, D, O);
    for (int c = 0; c < 8; c++) {
        st_dtype_kq_unit(type, b, c, u);
        for (int l = 0; l < 32; l++) {
            int h = 2 * c + (l >> 4);
            /* llama.cpp's roundings: Q3_K scales the offset value, the
             * others subtract the rounded min from the rounded product */
            y[32 * c + l] = type == ST_DTYPE_Q3_K ? D[h] * (float)((int)u[l] - 4)
                                                  : D[h] * (float)u[l] + O[h];
        }
    }
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
    case ST_DTYPE_Q5_0:
        for (i = 0; i < n; i += 32, s += 22)
            deq_q5(s, dst + i, 0);
        break;
    case ST_DTYPE_Q5_1:
        for (i = 0; i < n; i += 32, s += 24)
            deq_q5(s, dst + i, 1);
        break;
    case ST_DTYPE_Q2_K:
    case ST_DTYPE_Q3_K:
    case ST_DTYPE_Q4_K:
    case ST_DTYPE_Q5_K: {
        const uint32_t bb = dtype_table[type].block_bytes;
        for (i = 0; i < n; i += 256, s += bb)
            deq_kq(type, s, dst + i);
        break;
    }
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

int st_kv_type_parse(const char *s, uint32_t *out)
{
    static const struct { const char *name; uint32_t type; } kv[] = {
        {"f32", ST_DTYPE_F32}, {"f16", ST_DTYPE_F16}, {"q8_0", ST_DTYPE_Q8_0},
    };
    for (size_t i = 0; s && i < sizeof kv / sizeof kv[0]; i++)
        if (!strcmp(s, kv[i].name)) {
            *out = kv[i].type;
            return 0;
        }
    return -1;
}

int st_dtype_quantize_row(uint32_t type, const float *src, void *dst, uint64_t n)
{
    switch (type) {
    case ST_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return 0;
    case ST_DTYPE_F16: {
        uint16_t *h = dst;
        for (uint64_t i = 0; i < n; i++)
            h[i] = st_f32_to_fp16(src[i]);
        return 0;
    }
    case ST_DTYPE_Q8_0: {
        uint8_t *b = dst;
        if (n % 32)
            return -1;
        for (uint64_t i = 0; i < n; i += 32, b += 34) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(src[i + j]));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            uint16_t dh = st_f32_to_fp16(d);
            memcpy(b, &dh, 2);
            for (int j = 0; j < 32; j++)
                b[2 + j] = (uint8_t)(int8_t)roundf(src[i + j] * id);
        }
        return 0;
    }
    default:
        return -1;
    }
}
