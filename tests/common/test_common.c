#include "st_test.h"
#include "st_dtype.h"
#include "st_error.h"
#include "st_status.h"
#include "st_util.h"

ST_TEST(fp16_round_trip)
{
    /* every finite half converts to float and back unchanged */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u) continue;
        float f = st_fp16_to_f32((uint16_t)h);
        ST_REQUIRE(st_f32_to_fp16(f) == (uint16_t)h || (h == 0x8000u && f == 0.0f));
    }
    ST_CHECK(st_fp16_to_f32(0x3c00) == 1.0f);
    ST_CHECK(st_fp16_to_f32(0xc000) == -2.0f);
    ST_CHECK(st_f32_to_fp16(65536.0f) == 0x7c00);
}

ST_TEST(bf16)
{
    ST_CHECK(st_bf16_to_f32(st_f32_to_bf16(1.5f)) == 1.5f);
    ST_CHECK(st_bf16_to_f32(st_f32_to_bf16(-3.0f)) == -3.0f);
}

ST_TEST(dtype_traits)
{
    ST_CHECK(st_dtype_valid(ST_DTYPE_Q4_1));
    ST_CHECK(!st_dtype_valid(4));
    ST_CHECK(!st_dtype_valid(1000));
    ST_CHECK(st_dtype_row_bytes(ST_DTYPE_Q4_1, 64) == 40);
    ST_CHECK(st_dtype_row_bytes(ST_DTYPE_Q4_1, 33) == 0);
    ST_CHECK(st_dtype_row_bytes(ST_DTYPE_Q6_K, 512) == 420);
}

ST_TEST(dequant_q4_1)
{
    uint8_t blk[20] = {0};
    uint16_t d = st_f32_to_fp16(0.5f), m = st_f32_to_fp16(-1.0f);
    float out[32];
    memcpy(blk, &d, 2);
    memcpy(blk + 2, &m, 2);
    for (int j = 0; j < 16; j++) blk[4 + j] = (uint8_t)(j | ((15 - j) << 4));
    st_dtype_dequantize_row(ST_DTYPE_Q4_1, blk, out, 32);
    for (int j = 0; j < 16; j++) {
        ST_CHECK_NEAR(out[j], 0.5 * j - 1.0, 0);
        ST_CHECK_NEAR(out[j + 16], 0.5 * (15 - j) - 1.0, 0);
    }
}

ST_TEST(status_and_error)
{
    st_error_t e;
    ST_CHECK(strcmp(st_status_str(ST_OK), "success") == 0);
    ST_CHECK(st_error_set(&e, ST_ERR_FORMAT, "f: bad %d", 7) == ST_ERR_FORMAT);
    st_error_prefix(&e, "ctx");
    ST_CHECK(strcmp(e.msg, "ctx: f: bad 7") == 0);
    uint64_t r;
    ST_CHECK(st_mul_overflow_u64(1ull << 40, 1ull << 40, &r));
    ST_CHECK(!st_mul_overflow_u64(1ull << 20, 1ull << 20, &r) && r == 1ull << 40);
}

int main(void) { return st_test_main(); }
