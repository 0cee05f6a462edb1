/*
 * test_kernels_dtype.c - the block types' traits and the reference
 * dequantization (common/dtype.c) that every kernel test compares against.
 *
 * st_dtype_dequantize_row must give, bit for bit, the values gguf-py (the
 * Python reference shipped with llama.cpp) gives for the same random blocks
 * (data/dequant_golden.bin, written by gen_dequant_golden.py): a wrong bit
 * position in the reference would otherwise go unnoticed, since the
 * kernels are only checked against it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt_util.h"
#include "st_test.h"
#include "st_util.h"

ST_TEST(traits_of_block_types)
{
    static const struct { int type; const char *name; uint32_t elems, bytes; } want[] = {
        {ST_DTYPE_Q4_0, "q4_0", 32, 18},   {ST_DTYPE_Q4_1, "q4_1", 32, 20},
        {ST_DTYPE_Q5_0, "q5_0", 32, 22},   {ST_DTYPE_Q5_1, "q5_1", 32, 24},
        {ST_DTYPE_Q8_0, "q8_0", 32, 34},   {ST_DTYPE_Q2_K, "q2_k", 256, 84},
        {ST_DTYPE_Q3_K, "q3_k", 256, 110}, {ST_DTYPE_Q4_K, "q4_k", 256, 144},
        {ST_DTYPE_Q5_K, "q5_k", 256, 176}, {ST_DTYPE_Q6_K, "q6_k", 256, 210},
    };
    for (size_t i = 0; i < ST_ARRAY_SIZE(want); i++) {
        const st_dtype_traits_t *t = st_dtype_traits((uint32_t)want[i].type);
        ST_REQUIRE(t != NULL);
        ST_CHECK(strcmp(t->name, want[i].name) == 0);
        ST_CHECK(t->block_elems == want[i].elems && t->block_bytes == want[i].bytes);
        /* a row must be whole blocks: GGUF loading rejects other widths */
        ST_CHECK(st_dtype_row_bytes((uint32_t)want[i].type, 3 * want[i].elems) == 3 * want[i].bytes);
        ST_CHECK(st_dtype_row_bytes((uint32_t)want[i].type, want[i].elems + 16) == 0);
        ST_CHECK(st_dtype_row_bytes((uint32_t)want[i].type, 16) == 0);
    }
    /* numbers between the supported ones stay unsupported */
    static const uint32_t gaps[] = {4, 5, 9, 15, 16, 29, 31, 99};
    for (size_t i = 0; i < ST_ARRAY_SIZE(gaps); i++)
        ST_CHECK(!st_dtype_valid(gaps[i]) && strcmp(st_dtype_name(gaps[i]), "unknown") == 0);
}

static int rd_u32(FILE *f, uint32_t *v)
{
    uint8_t b[4];
    if (fread(b, 1, 4, f) != 4)
        return -1;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

ST_TEST(dequantize_matches_gguf_py)
{
    char magic[4];
    uint32_t count = 0;
    FILE *f = fopen(KT_DATA_DIR "/dequant_golden.bin", "rb");
    ST_REQUIRE(f != NULL);
    ST_REQUIRE(fread(magic, 1, 4, f) == 4 && memcmp(magic, "STDQ", 4) == 0);
    ST_REQUIRE(rd_u32(f, &count) == 0 && count >= 6 && count < 64);
    int seen_new = 0;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t type, nv, nbytes;
        ST_REQUIRE(rd_u32(f, &type) == 0 && rd_u32(f, &nv) == 0 && rd_u32(f, &nbytes) == 0);
        ST_REQUIRE(nv <= 1u << 16 && nbytes <= 1u << 18);
        uint8_t *blocks = malloc(nbytes);
        float *want = malloc((size_t)nv * 4), *got = malloc((size_t)nv * 4);
        ST_REQUIRE(blocks && want && got);
        ST_REQUIRE(fread(blocks, 1, nbytes, f) == nbytes);
        ST_REQUIRE(fread(want, 4, nv, f) == nv);   /* little-endian host (x86-64, arm64) */
        ST_REQUIRE(st_dtype_valid(type));
        ST_CHECK(st_dtype_row_bytes(type, nv) == nbytes);
        st_dtype_dequantize_row(type, blocks, got, nv);
        int bad = 0;
        for (uint32_t i = 0; i < nv; i++)
            if (memcmp(&got[i], &want[i], 4) != 0 && bad++ < 3)
                fprintf(stderr, "  %s value %u: got %.9g, gguf-py %.9g\n", st_dtype_name(type), i,
                        got[i], want[i]);
        ST_CHECK_MSG(bad == 0, "%s: %d of %u values differ", st_dtype_name(type), bad, nv);
        for (int k = 0; k < KT_N_KQ_TYPES; k++)
            seen_new += kt_kq_types[k] == (int)type;
        free(blocks);
        free(want);
        free(got);
    }
    ST_CHECK(seen_new == KT_N_KQ_TYPES);
    fclose(f);
}

int main(void)
{
    return st_test_main();
}
