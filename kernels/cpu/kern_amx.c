/*
 * kern_amx.c - the prefill matmul on AMX-INT8 tiles (Sapphire Rapids+).
 *
 * Compiled with the AVX-512 flags plus -mamx-tile -mamx-int8 and entered
 * only after isa.c found AMX and the kernel granted the tile state. The
 * AMX level is the AVX-512 level with this qgemm for n >= AMX_MIN_N tokens
 * (padded to a multiple of 16).
 *
 * Same formulation as the other levels (cpu_impl.h): u8 weights times int8
 * activations per block of 32, scaled per block. One TDPBUSD multiplies
 * 16 weight rows x 32 values (tile A, u8) by 32 values x 16 tokens (tile
 * B, int8 in the "VNNI" layout: 8 rows of 16 tokens x 4 values) into 16x16
 * int32 (tile C). Scales differ per block, so each block is its own TDPBUSD
 * (K = 32) and the int32 tile is stored and folded into float accumulators
 * with AVX-512: acc[m][t] = fma(O_m, s_t, fma(float(C[m][t]), D_m dx_t, acc)).
 * One level: a step handles 32 rows x 32 tokens (4 C tiles, 2 A, 2 B = all
 * 8 tiles).
 *
 * Two-level activations (cpu_impl.h) need two products per block with the
 * same A tile: TC0 = A x B(q1), TC1 = A x B(q2) for 16 rows x 16 tokens,
 * folded as 127 * C(q1) + C(q2) (exact in int32) before the conversion,
 * into 16 accumulators kept in registers (qgemm_amx_two16).
 *
 * Batch invariance: per (row, token) these are exactly the operations of
 * the AVX-512 kernel that serves n < AMX_MIN_N (kern_avx512.c): the exact
 * int32 block sum, then acc = fma(float(isum), D*dx, acc) and
 * acc = fma(O, s, acc), blocks in increasing order. So a token's output
 * is the same whether it is decoded alone or sits anywhere in a prefill
 * (tests/kernels/test_kernels_batch.c).
 *
 * Measured (bench kernels, 1 thread, shared 2-core VM, noisy): the fold
 * and the tile work do not overlap much whatever the order (store b / mul
 * b+1 / fold b-1, fold first, two tile sets 2 blocks ahead: all within
 * noise, the last one ~10% slower); disabling the fold cut gate/up n=128
 * from ~0.83 to ~0.48 ms, disabling the tile work to ~0.53 ms, both to
 * ~0.22 ms (quantize, repack, weight expansion, output transpose).
 *
 * Repacked activations (xq2), n_pad = n rounded up to 16:
 *   tiles  [n_pad/16][nb][8][64] int8   level 1
 *   tiles2 [n_pad/16][nb][8][64] int8   level 2 (two-level only)
 *   dx [nb][n_pad] f32, s [nb][n_pad] f32
 */
#include <immintrin.h>
#include <string.h>

#include "cpu_impl.h"
#include "kern_x86.h"

#define AMX_MIN_N 10   /* measured: padding to 16 tokens still beats qgemv from ~9 tokens */

/* Tile numbers: macros, because the tile intrinsics paste them into asm. */
#define TC0 0
#define TC1 1
#define TC2 2
#define TC3 3
#define TA0 4
#define TA1 5
#define TB0 6
#define TB1 7

typedef struct amx_cfg {
    uint8_t  palette_id;
    uint8_t  start_row;
    uint8_t  reserved[14];
    uint16_t colsb[16];
    uint8_t  rows[16];
} amx_cfg_t;

static void amx_configure(void)
{
    amx_cfg_t c;
    memset(&c, 0, sizeof c);
    c.palette_id = 1;
    for (int i = TC0; i <= TC3; i++) {
        c.rows[i] = 16;
        c.colsb[i] = 64;
    }
    c.rows[TA0] = c.rows[TA1] = 16;
    c.colsb[TA0] = c.colsb[TA1] = 32;
    c.rows[TB0] = c.rows[TB1] = 8;
    c.colsb[TB0] = c.colsb[TB1] = 64;
    _tile_loadconfig(&c);
}

static size_t repack_bytes_amx(int n_pad, const st_q8_layout_t *L)
{
    return (size_t)n_pad * L->nb * (L->two ? 72 : 40) + 64;
}

/* Bytes of one plane of tiles. */
static size_t tiles_bytes(int n_pad, const st_q8_layout_t *L)
{
    return (size_t)n_pad * L->nb * 32;
}

static void repack_amx(const uint8_t *xrow, const st_q8_layout_t *L, int t, int n_pad, int valid,
                       uint8_t *xq2)
{
    const int nb = L->nb, g = t / 16, c = t % 16;
    const size_t plane = tiles_bytes(n_pad, L);
    float *dx = (float *)(xq2 + plane * (L->two ? 2 : 1));
    float *s = dx + (size_t)nb * n_pad;
    const float *xv = (const float *)(xrow ? xrow + L->xv_off : NULL);

    for (int b = 0; b < nb; b++) {
        int p = b >> 1, h = b & 1;
        for (int lv = 0; lv <= L->two; lv++) {
            uint8_t *tile = xq2 + plane * (size_t)lv + ((size_t)g * nb + b) * 512 + (size_t)c * 4;
            const int8_t *q = (const int8_t *)(xrow ? xrow + (lv ? L->q2_off : 0) : NULL);
            /* values 4*k4 .. 4*k4+3 of block b, contiguous in the paired layout */
            for (int k4 = 0; k4 < 8; k4++) {
                if (valid)
                    memcpy(tile + k4 * 64, q + p * 64 + (k4 >> 2) * 32 + h * 16 + (k4 & 3) * 4, 4);
                else
                    memset(tile + k4 * 64, 0, 4);
            }
        }
        if (!valid) {
            dx[(size_t)b * n_pad + t] = s[(size_t)b * n_pad + t] = 0.0f;
            continue;
        }
        dx[(size_t)b * n_pad + t] = xv[p * 4 + 2 * h];
        s[(size_t)b * n_pad + t] = xv[p * 4 + 2 * h + 1];
    }
}

/* Scratch: expanded weights [nb][32 rows][32], D and O [nb][32], two sets
 * of four C tiles (double buffered), the 32x32 accumulator. */
typedef struct amx_buf {
    uint8_t *w;
    float   *d, *o;
    int32_t *c;
    float   *acc;
} amx_buf_t;

static size_t amx_scratch(const st_q8_layout_t *L)
{
    return (size_t)L->nb * 32 * 32 + (size_t)L->nb * 32 * 8 + 8192 + 4096 + 256;
}

static void amx_buf_at(const st_q8_layout_t *L, void *scratch, amx_buf_t *b)
{
    uint8_t *p = (uint8_t *)ST_ALIGN_UP((uintptr_t)scratch, (uintptr_t)64);
    b->c = (int32_t *)p;
    p += 8192;
    b->acc = (float *)p;
    p += 4096;
    b->d = (float *)p;
    p += (size_t)L->nb * 32 * 4;
    b->o = (float *)p;
    p += (size_t)L->nb * 32 * 4;
    b->w = p;
}

/* Rows r..r+nr-1 into slots 0..nr-1; slots up to 32 zeroed. */
static inline __attribute__((always_inline)) void amx_prep(int type, const st_qmm_args_t *a, int r,
                                                            int nr, const amx_buf_t *B)
{
    const int bb = st_qblock_bytes(type), nb = a->L.nb;
    const float of = ofactor(type);
    const __m128i m4 = _mm_set1_epi8(0x0F), bias = _mm_set1_epi8((char)0x80);
    const __m512i bidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(bb));

    for (int m = 0; m < 32; m++) {
        float *dr = B->d + (size_t)m * nb, *orow = B->o + (size_t)m * nb;
        if (m >= nr) {
            for (int b = 0; b < nb; b++) {
                memset(B->w + ((size_t)b * 32 + m) * 32, 0, 32);
                dr[b] = orow[b] = 0.0f;
            }
            continue;
        }
        const uint8_t *wr = a->w + (size_t)(r + m) * a->w_stride;
        for (int b = 0; b < nb; b++) {
            uint8_t *dst = B->w + ((size_t)b * 32 + m) * 32;
            const uint8_t *blk = wr + (size_t)b * bb;
            if (type == ST_DTYPE_Q8_0) {
                _mm_storeu_si128((__m128i *)dst,
                                 _mm_xor_si128(_mm_loadu_si128((const __m128i *)(blk + 2)), bias));
                _mm_storeu_si128((__m128i *)(dst + 16),
                                 _mm_xor_si128(_mm_loadu_si128((const __m128i *)(blk + 18)), bias));
            } else {
                __m128i v = _mm_loadu_si128((const __m128i *)(blk + (type == ST_DTYPE_Q4_1 ? 4 : 2)));
                _mm_storeu_si128((__m128i *)dst, _mm_and_si128(v, m4));
                _mm_storeu_si128((__m128i *)(dst + 16), _mm_and_si128(_mm_srli_epi16(v, 4), m4));
            }
        }
        /* D and O of 16 blocks per gather (the first dword of each block:
         * d, then m for Q4_1): ~10x fewer instructions than converting
         * them one block at a time, which was ~10% of a prefill. */
        for (int b0 = 0; b0 < nb; b0 += 16) {
            const __mmask16 k = nb - b0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nb - b0)) - 1);
            __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, bidx,
                                                    (const void *)(wr + (size_t)b0 * bb), 1);
            __m512 D = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
            __m512 O = type == ST_DTYPE_Q4_1
                           ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16)))
                           : D;
            _mm512_mask_storeu_ps(dr + b0, k, D);
            _mm512_mask_storeu_ps(orow + b0, k, _mm512_mul_ps(O, _mm512_set1_ps(of)));
        }
    }
}

/* acc[m][16 tokens] for rows m0..m0+15 from one C tile (one level; d and
 * o are [row][nb], pointing at block b). */
static inline __attribute__((always_inline)) void amx_fold(float *acc, const int32_t *ct, int m0,
                                                            int col, const float *d, const float *o,
                                                            int nb, __m512 dxv, __m512 sv)
{
    for (int i = 0; i < 16; i++) {
        int m = m0 + i;
        __m512i ci = _mm512_load_si512(ct + i * 16);
        __m512 cv = _mm512_cvtepi32_ps(ci);
        __m512 sc = _mm512_mul_ps(dxv, _mm512_set1_ps(d[m * nb]));
        __m512 v = _mm512_fmadd_ps(cv, sc, _mm512_load_ps(acc + m * 32 + col));
        v = _mm512_fmadd_ps(_mm512_set1_ps(o[m * nb]), sv, v);
        _mm512_store_ps(acc + m * 32 + col, v);
    }
}

/* Tile work of block b: C0..C3 = A(b) x B(b) for the rows/tokens present.
 * bt1 is the second B tile's plane: the next 16 tokens, or the q2 plane. */
static inline __attribute__((always_inline)) void amx_mul(const amx_buf_t *B, const uint8_t *bt0,
                                                           const uint8_t *bt1, int b, int two_r,
                                                           int two_t)
{
    _tile_loadd(TA0, B->w + (size_t)b * 1024, 32);
    _tile_loadd(TB0, bt0 + (size_t)b * 512, 64);
    _tile_zero(TC0);
    _tile_dpbusd(TC0, TA0, TB0);
    if (two_t) {
        _tile_loadd(TB1, bt1 + (size_t)b * 512, 64);
        _tile_zero(TC1);
        _tile_dpbusd(TC1, TA0, TB1);
    }
    if (two_r) {
        _tile_loadd(TA1, B->w + (size_t)b * 1024 + 512, 32);
        _tile_zero(TC2);
        _tile_dpbusd(TC2, TA1, TB0);
        if (two_t) {
            _tile_zero(TC3);
            _tile_dpbusd(TC3, TA1, TB1);
        }
    }
}

static inline __attribute__((always_inline)) void amx_store(int32_t *c, int two_r, int two_t)
{
    _tile_stored(TC0, c, 64);
    if (two_t)
        _tile_stored(TC1, c + 256, 64);
    if (two_r) {
        _tile_stored(TC2, c + 512, 64);
        if (two_t)
            _tile_stored(TC3, c + 768, 64);
    }
}

/* Two-level activations, 16 rows x 16 tokens per step: the q1 and q2
 * products of one A tile (TC0, TC1), folded into 16 accumulators that stay
 * in registers for the whole row of blocks. (The one-level 32 x 32 step
 * keeps its accumulators in memory: a load and a store per row and block.)
 * Per element the operations are those of amx_fold and of the AVX-512
 * kernel (kern_avx512.c), in the same order: results do not depend on n. */
static inline __attribute__((always_inline)) void amx_mul2(const uint8_t *wa, const uint8_t *bq1,
                                                            const uint8_t *bq2)
{
    _tile_loadd(TA0, wa, 32);
    _tile_loadd(TB0, bq1, 64);
    _tile_loadd(TB1, bq2, 64);
    _tile_zero(TC0);
    _tile_dpbusd(TC0, TA0, TB0);
    _tile_zero(TC1);
    _tile_dpbusd(TC1, TA0, TB1);
}

static inline __attribute__((always_inline)) void amx_store2(int32_t *c)
{
    _tile_stored(TC0, c, 64);
    _tile_stored(TC1, c + 256, 64);
}

static void qgemm_amx_two16(const st_qmm_args_t *a, int rg, int nr, const amx_buf_t *B,
                            const uint8_t *pf, size_t pf_bytes)
{
    size_t pf_at = 0;
    const int nb = a->L.nb, n_pad = a->n_pad;
    const size_t plane = tiles_bytes(n_pad, &a->L);
    const float *dx = (const float *)(a->xq2 + plane * 2);
    const float *sx = dx + (size_t)nb * n_pad;
    const __m512i gidx = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176,
                                           192, 208, 224, 240);

    for (int tg = 0; tg < n_pad; tg += 16) {
        const uint8_t *bt0 = a->xq2 + (size_t)(tg / 16) * nb * 512, *bt1 = bt0 + plane;
        for (int h = 0; h * 16 < nr; h++) {
            const uint8_t *wa = B->w + h * 512;
            const float *dh = B->d + (size_t)h * 16 * nb, *oh = B->o + (size_t)h * 16 * nb;
            __m512 acc[16];
            for (int i = 0; i < 16; i++)
                acc[i] = _mm512_setzero_ps();
            /* Three stages in flight: store block b's products, start the
             * tiles on b + 1, fold b - 1 (stored one step earlier, so its
             * loads never wait on the tile store). */
            amx_mul2(wa, bt0, bt1);
            for (int b = 0; b <= nb; b++) {
                if (b > 0) {
                    const int bf = b - 1;
                    const int32_t *cb = B->c + (bf & 1) * 512;
                    const __m512 dxv = _mm512_loadu_ps(dx + (size_t)bf * n_pad + tg);
                    const __m512 sv = _mm512_loadu_ps(sx + (size_t)bf * n_pad + tg);
                    const float *d = dh + bf, *o = oh + bf;
#pragma GCC unroll 16
                    for (int i = 0; i < 16; i++) {
                        __m512i ci = _mm512_load_si512(cb + i * 16);
                        ci = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(ci, 7), ci),
                                              _mm512_load_si512(cb + 256 + i * 16));
                        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ci),
                                                 _mm512_mul_ps(dxv, _mm512_set1_ps(d[i * nb])), acc[i]);
                        acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(o[i * nb]), sv, acc[i]);
                    }
                }
                /* The next 32 weight rows come from memory (each weight is
                 * read once per prefill): fetch them while this group
                 * computes, a line per block, instead of stalling in
                 * amx_prep. */
                if (pf_at < pf_bytes) {
                    _mm_prefetch((const char *)(pf + pf_at), _MM_HINT_T1);
                    pf_at += 64;
                }
                if (b < nb)
                    amx_store2(B->c + (b & 1) * 512);
                if (b + 1 < nb)
                    amx_mul2(wa + (size_t)(b + 1) * 1024, bt0 + (size_t)(b + 1) * 512,
                             bt1 + (size_t)(b + 1) * 512);
            }
            /* acc is [row][token]; out is [token][row] */
            for (int i = 0; i < 16; i++)
                _mm512_store_ps(B->acc + i * 16, acc[i]);
            const int left = nr - h * 16;
            const __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            for (int j = 0; j < 16 && tg + j < a->n; j++)
                _mm512_mask_storeu_ps(a->out + (size_t)(tg + j) * a->ldo + rg + h * 16, k,
                                      _mm512_i32gather_ps(gidx, B->acc + j, 4));
        }
    }
}

static inline __attribute__((always_inline)) void qgemm_amx_type(int type, int two,
                                                                  const st_qmm_args_t *a, int r0,
                                                                  int r1, const amx_buf_t *B)
{
    const int nb = a->L.nb, n_pad = a->n_pad;
    const size_t plane = tiles_bytes(n_pad, &a->L);
    const float *dx = (const float *)(a->xq2 + plane);   /* one level: one tile plane */
    const float *sx = dx + (size_t)nb * n_pad;
    const int tstep = 32;
    const __m512i gidx = _mm512_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352,
                                           384, 416, 448, 480);

    for (int rg = r0; rg < r1; rg += 32) {
        const int nr = ST_MIN(32, r1 - rg), two_r = nr > 16;
        amx_prep(type, a, rg, nr, B);
        if (two) {   /* 16 x 16 steps with register accumulators */
            const int nnext = ST_MIN(32, r1 - rg - nr);
            qgemm_amx_two16(a, rg, nr, B, a->w + (size_t)(rg + nr) * a->w_stride,
                            nnext > 0 ? (size_t)nnext * a->w_stride : 0);
            continue;
        }
        /* one level: 32 rows x 32 tokens, C1/C3 hold the next 16 tokens */
        for (int tg = 0; tg < n_pad; tg += tstep) {
            const int two_t = tg + 16 < n_pad;
            const uint8_t *bt0 = a->xq2 + (size_t)(tg / 16) * nb * 512;
            const uint8_t *bt1 = bt0 + (size_t)nb * 512;
            memset(B->acc, 0, 4096);
            /* Software pipeline: the tiles multiply block b + 1 while the
             * vector units fold block b from the other half of c (A/B on
             * Q4_1 1536x576, n = 128: 0.46-0.50 ms against 0.54-0.58 ms for
             * multiply, store, fold in sequence). */
            amx_mul(B, bt0, bt1, 0, two_r, two_t);
            amx_store(B->c, two_r, two_t);
            for (int b = 0; b < nb; b++) {
                const int32_t *cb = B->c + (b & 1) * 1024;
                if (b + 1 < nb)
                    amx_mul(B, bt0, bt1, b + 1, two_r, two_t);
                const float *d = B->d + b, *o = B->o + b;
                __m512 dx0 = _mm512_loadu_ps(dx + (size_t)b * n_pad + tg);
                __m512 s0 = _mm512_loadu_ps(sx + (size_t)b * n_pad + tg);
                amx_fold(B->acc, cb, 0, 0, d, o, nb, dx0, s0);
                if (two_r)
                    amx_fold(B->acc, cb + 512, 16, 0, d, o, nb, dx0, s0);
                if (two_t) {
                    __m512 dx1 = _mm512_loadu_ps(dx + (size_t)b * n_pad + tg + 16);
                    __m512 s1 = _mm512_loadu_ps(sx + (size_t)b * n_pad + tg + 16);
                    amx_fold(B->acc, cb + 256, 0, 16, d, o, nb, dx1, s1);
                    if (two_r)
                        amx_fold(B->acc, cb + 768, 16, 16, d, o, nb, dx1, s1);
                }
                if (b + 1 < nb)
                    amx_store(B->c + ((b + 1) & 1) * 1024, two_r, two_t);
            }
            /* acc is [row][token]; out is [token][row] */
            for (int j = 0; j < tstep && tg + j < a->n; j++) {
                float *dst = a->out + (size_t)(tg + j) * a->ldo + rg;
                for (int m0 = 0; m0 < nr; m0 += 16) {
                    int left = nr - m0;
                    __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                    __m512 v = _mm512_i32gather_ps(gidx, B->acc + m0 * 32 + j, 4);
                    _mm512_mask_storeu_ps(dst + m0, k, v);
                }
            }
        }
    }
}

static void qgemm_amx(const st_qmm_args_t *a, int r0, int r1, void *scratch)
{
    amx_buf_t B;
    if (a->n < AMX_MIN_N || !a->xq2) {
        st_cpu_kernels_avx512()->qgemv(a, r0, r1, scratch);
        return;
    }
    amx_buf_at(&a->L, scratch, &B);
    /* The tile configuration is per thread; releasing it afterwards keeps
     * idle threads from carrying 8 KiB of tile state through switches. */
    amx_configure();
    switch (a->type * 2 + a->L.two) {
    case ST_DTYPE_Q4_1 * 2:     qgemm_amx_type(ST_DTYPE_Q4_1, 0, a, r0, r1, &B); break;
    case ST_DTYPE_Q4_1 * 2 + 1: qgemm_amx_type(ST_DTYPE_Q4_1, 1, a, r0, r1, &B); break;
    case ST_DTYPE_Q4_0 * 2:     qgemm_amx_type(ST_DTYPE_Q4_0, 0, a, r0, r1, &B); break;
    case ST_DTYPE_Q4_0 * 2 + 1: qgemm_amx_type(ST_DTYPE_Q4_0, 1, a, r0, r1, &B); break;
    case ST_DTYPE_Q8_0 * 2:     qgemm_amx_type(ST_DTYPE_Q8_0, 0, a, r0, r1, &B); break;
    default:                    qgemm_amx_type(ST_DTYPE_Q8_0, 1, a, r0, r1, &B); break;
    }
    _tile_release();
}

static size_t qgemm_scratch_amx(const st_q8_layout_t *L)
{
    size_t v = st_cpu_kernels_avx512()->qgemm_scratch(L);
    return ST_MAX(v, amx_scratch(L));
}

int st_cpu_amx_built(void)
{
    return 1;
}

void st_cpu_kernels_amx_patch(st_cpu_kernels_t *k)
{
    k->isa = ST_CPU_ISA_AMX;
    k->qgemm = qgemm_amx;
    k->qgemm_scratch = qgemm_scratch_amx;
    k->repack = repack_amx;
    k->repack_bytes = repack_bytes_amx;
    k->tile_min_n = AMX_MIN_N;
    k->repack_min_n = AMX_MIN_N;
    k->repack_align = 16;
}
