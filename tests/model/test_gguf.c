/*
 * test_gguf.c - the GGUF reader on files built byte by byte: every value
 * type and getter on a good file, then each malformed case refused with
 * the expected status and a one-line message naming the field.
 */
#include <stdint.h>
#include <string.h>

#include "st_gguf.h"
#include "st_test.h"
#include "test_gguf_builder.h"

/* Opens b's file and expects failure with `want` and a message holding
 * every string of `needles` (NULL-terminated), on one line. */
static void expect_fail_(int *st_failed_, gb_t *b, st_status_t want, const char *const *needles,
                         int line)
{
    st_gguf_t *g = NULL;
    st_error_t err;
    st_error_clear(&err);
    const char *path = gb_write(b, "bad");
    st_status_t s = st_gguf_open(path, &g, &err);
    ST_CHECK_MSG(s == want, "line %d: status %s, want %s (%s)", line, st_status_str(s),
                 st_status_str(want), err.msg);
    ST_CHECK_MSG(g == NULL || s == ST_OK, "line %d: handle written on failure", line);
    if (s == ST_OK)
        st_gguf_close(g);
    ST_CHECK_MSG(strchr(err.msg, '\n') == NULL, "line %d: message has a newline", line);
    ST_CHECK_MSG(strncmp(err.msg, path, strlen(path)) == 0, "line %d: message '%s' does not "
                 "name the file", line, err.msg);
    for (int i = 0; needles[i]; i++)
        ST_CHECK_MSG(strstr(err.msg, needles[i]) != NULL, "line %d: '%s' not in '%s'", line,
                     needles[i], err.msg);
    gb_free(b);
}
#define EXPECT_FAIL(b, want, ...) \
    expect_fail_(st_failed_, (b), (want), (const char *const[]){__VA_ARGS__, NULL}, __LINE__)

ST_TEST(every_value_type)
{
    gb_t b;
    gb_buf_t *v;
    st_gguf_t *g;
    st_error_t err;
    st_str_t s;
    uint32_t u32;
    uint64_t u64, n;
    int64_t i64;
    float f;
    double d;
    int bo;
    st_gguf_type_t et;
    const void *data;

    gb_init(&b);
    gb_u8(gb_kv(&b, "t.u8", ST_GGUF_UINT8), 200);
    gb_u8(gb_kv(&b, "t.i8", ST_GGUF_INT8), (uint8_t)-5);
    v = gb_kv(&b, "t.u16", ST_GGUF_UINT16); gb_u8(v, 0x34); gb_u8(v, 0x12);
    v = gb_kv(&b, "t.i16", ST_GGUF_INT16); gb_u8(v, 0xfe); gb_u8(v, 0xff);
    gb_kv_u32(&b, "t.u32", 4000000000u);
    gb_kv_i32(&b, "t.i32", -7);
    gb_kv_f32(&b, "t.f32", 1.5f);
    gb_kv_bool(&b, "t.bool", 1);
    gb_kv_str(&b, "t.str", "hello");
    gb_kv_u64(&b, "t.u64", 0xffffffffffffffffull);
    gb_u64(gb_kv(&b, "t.i64", ST_GGUF_INT64), (uint64_t)-9);
    { double x = 2.25; uint64_t u; memcpy(&u, &x, 8); gb_u64(gb_kv(&b, "t.f64", ST_GGUF_FLOAT64), u); }
    gb_kv_arr_str(&b, "t.astr", (const char *const[]){"a", "", "xyz"}, 3);
    gb_kv_arr_i32(&b, "t.ai32", (const int32_t[]){-1, 2, 3}, 3);
    gb_kv_arr_f32(&b, "t.af32", (const float[]){0.5f, -1.0f}, 2);
    /* nested: array of 2 arrays of u8 {1,2} and {} */
    v = gb_kv(&b, "t.nested", ST_GGUF_ARRAY);
    gb_u32(v, ST_GGUF_ARRAY); gb_u64(v, 2);
    gb_u32(v, ST_GGUF_UINT8); gb_u64(v, 2); gb_u8(v, 1); gb_u8(v, 2);
    gb_u32(v, ST_GGUF_STRING); gb_u64(v, 1); gb_str(v, "deep");
    v = gb_kv(&b, "t.abool", ST_GGUF_ARRAY); gb_u32(v, ST_GGUF_BOOL); gb_u64(v, 2); gb_u8(v, 0); gb_u8(v, 1);
    gb_kv_str(&b, "t.after", "still readable");

    st_error_clear(&err);
    ST_REQUIRE(st_gguf_open(gb_write(&b, "types"), &g, &err) == ST_OK);
    ST_CHECK(st_gguf_version(g) == 3);
    ST_CHECK(st_gguf_n_kv(g) == 18);
    ST_CHECK(st_gguf_n_tensors(g) == 0);
    ST_CHECK(st_gguf_alignment(g) == 32);

    ST_CHECK(st_gguf_get_u32(g, "t.u8", &u32) == ST_OK && u32 == 200);
    ST_CHECK(st_gguf_get_i64(g, "t.i8", &i64) == ST_OK && i64 == -5);
    ST_CHECK(st_gguf_get_u32(g, "t.i8", &u32) == ST_ERR_RANGE);
    ST_CHECK(st_gguf_get_u32(g, "t.u16", &u32) == ST_OK && u32 == 0x1234);
    ST_CHECK(st_gguf_get_i64(g, "t.i16", &i64) == ST_OK && i64 == -2);
    ST_CHECK(st_gguf_get_u32(g, "t.u32", &u32) == ST_OK && u32 == 4000000000u);
    ST_CHECK(st_gguf_get_i64(g, "t.i32", &i64) == ST_OK && i64 == -7);
    ST_CHECK(st_gguf_get_u64(g, "t.i32", &u64) == ST_ERR_RANGE);
    ST_CHECK(st_gguf_get_u64(g, "t.u64", &u64) == ST_OK && u64 == 0xffffffffffffffffull);
    ST_CHECK(st_gguf_get_i64(g, "t.u64", &i64) == ST_ERR_RANGE);
    ST_CHECK(st_gguf_get_u32(g, "t.u64", &u32) == ST_ERR_RANGE);
    ST_CHECK(st_gguf_get_i64(g, "t.i64", &i64) == ST_OK && i64 == -9);
    ST_CHECK(st_gguf_get_f32(g, "t.f32", &f) == ST_OK && f == 1.5f);
    ST_CHECK(st_gguf_get_f32(g, "t.f64", &f) == ST_OK && f == 2.25f);
    ST_CHECK(st_gguf_get_f32(g, "t.u32", &f) == ST_ERR_TYPE);
    ST_CHECK(st_gguf_get_u32(g, "t.f32", &u32) == ST_ERR_TYPE);
    ST_CHECK(st_gguf_get_bool(g, "t.bool", &bo) == ST_OK && bo == 1);
    ST_CHECK(st_gguf_get_u32(g, "t.bool", &u32) == ST_ERR_TYPE);
    ST_CHECK(st_gguf_get_str(g, "t.str", &s) == ST_OK && s.len == 5 && !memcmp(s.ptr, "hello", 5));
    ST_CHECK(st_gguf_get_str(g, "t.u8", &s) == ST_ERR_TYPE);
    ST_CHECK(st_gguf_get_str(g, "t.absent", &s) == ST_ERR_NOT_FOUND);
    ST_CHECK(st_gguf_find_key(g, "t.absent") == -1);
    ST_CHECK(st_gguf_find_key(g, "t.u") == -1);   /* prefix is not a match */

    int64_t k = st_gguf_find_key(g, "t.str");
    ST_REQUIRE(k >= 0);
    ST_CHECK(st_gguf_kv_type(g, k) == ST_GGUF_STRING);
    s = st_gguf_key_name(g, k);
    ST_CHECK(s.len == 5 && !memcmp(s.ptr, "t.str", 5));

    ST_CHECK(st_gguf_get_arr(g, "t.astr", &et, &n, &data) == ST_OK && et == ST_GGUF_STRING && n == 3);
    ST_CHECK(st_gguf_arr_str(g, "t.astr", 0, &s) == ST_OK && s.len == 1 && s.ptr[0] == 'a');
    ST_CHECK(st_gguf_arr_str(g, "t.astr", 1, &s) == ST_OK && s.len == 0);
    ST_CHECK(st_gguf_arr_str(g, "t.astr", 2, &s) == ST_OK && s.len == 3 && !memcmp(s.ptr, "xyz", 3));
    ST_CHECK(st_gguf_arr_str(g, "t.astr", 3, &s) == ST_ERR_RANGE);
    ST_CHECK(st_gguf_arr_str(g, "t.ai32", 0, &s) == ST_ERR_TYPE);
    ST_CHECK(st_gguf_arr_i64(g, "t.ai32", 0, &i64) == ST_OK && i64 == -1);
    ST_CHECK(st_gguf_arr_f64(g, "t.ai32", 2, &d) == ST_OK && d == 3.0);
    ST_CHECK(st_gguf_arr_i64(g, "t.ai32", 3, &i64) == ST_ERR_RANGE);
    ST_CHECK(st_gguf_get_arr(g, "t.ai32", &et, &n, &data) == ST_OK && et == ST_GGUF_INT32 && n == 3);
    { int32_t x; memcpy(&x, (const char *)data + 4, 4); ST_CHECK(x == 2); }
    ST_CHECK(st_gguf_arr_f64(g, "t.af32", 1, &d) == ST_OK && d == -1.0);
    ST_CHECK(st_gguf_arr_i64(g, "t.af32", 1, &i64) == ST_ERR_TYPE);
    ST_CHECK(st_gguf_arr_i64(g, "t.abool", 1, &i64) == ST_OK && i64 == 1);
    ST_CHECK(st_gguf_get_arr(g, "t.nested", &et, &n, &data) == ST_OK && et == ST_GGUF_ARRAY && n == 2);
    ST_CHECK(st_gguf_arr_i64(g, "t.nested", 0, &i64) == ST_ERR_TYPE);
    ST_CHECK(st_gguf_get_arr(g, "t.str", &et, &n, &data) == ST_ERR_TYPE);
    ST_CHECK(st_gguf_get_str(g, "t.after", &s) == ST_OK && s.len == 14);
    st_gguf_close(g);
    gb_free(&b);
}

ST_TEST(tensors_of_every_type)
{
    static const uint32_t types[] = {ST_DTYPE_F32, ST_DTYPE_F16, ST_DTYPE_BF16, ST_DTYPE_Q8_0,
                                     ST_DTYPE_Q4_0, ST_DTYPE_Q4_1, ST_DTYPE_Q6_K};
    char name[32];
    gb_t b;
    st_gguf_t *g;
    st_error_t err;

    gb_init(&b);
    gb_kv_u32(&b, "general.alignment", 64);
    b.alignment = 64;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        snprintf(name, sizeof(name), "t%zu", i);
        gb_tensor(&b, name, 3, (const uint64_t[]){256, 3, 2}, types[i]);
    }
    ST_REQUIRE(st_gguf_open(gb_write(&b, "tensors"), &g, &err) == ST_OK);
    ST_CHECK(st_gguf_alignment(g) == 64);
    ST_CHECK(st_gguf_data_offset(g) % 64 == 0);
    ST_REQUIRE(st_gguf_n_tensors(g) == 7);
    for (size_t i = 0; i < 7; i++) {
        const st_tensor_t *t = st_gguf_tensor(g, i);
        snprintf(name, sizeof(name), "t%zu", i);
        ST_CHECK(strcmp(t->name, name) == 0);
        ST_CHECK(st_gguf_find_tensor(g, name) == t);
        ST_CHECK((uint32_t)t->type == types[i]);
        ST_CHECK(t->n_dims == 3 && t->ne[0] == 256 && t->ne[1] == 3 && t->ne[2] == 2 && t->ne[3] == 1);
        ST_CHECK(t->row_bytes == st_dtype_row_bytes(types[i], 256));
        ST_CHECK(t->nbytes == t->row_bytes * 6);
        ST_CHECK(t->file_offset % 64 == 0);
        ST_CHECK((const char *)t->data == (const char *)st_gguf_base(g) + t->file_offset);
        ST_CHECK(t->file_offset + t->nbytes <= st_gguf_file_size(g));
    }
    ST_CHECK(st_gguf_find_tensor(g, "t7") == NULL);
    ST_CHECK(st_gguf_tensor(g, 7) == NULL);
    st_gguf_close(g);
    gb_free(&b);
}

ST_TEST(version_2_accepted)
{
    gb_t b;
    st_gguf_t *g;
    st_error_t err;
    gb_init(&b);
    b.version = 2;
    gb_kv_str(&b, "a", "b");
    gb_tensor(&b, "x", 1, (const uint64_t[]){32}, ST_DTYPE_Q8_0);
    ST_REQUIRE(st_gguf_open(gb_write(&b, "v2"), &g, &err) == ST_OK);
    ST_CHECK(st_gguf_version(g) == 2 && st_gguf_n_tensors(g) == 1);
    st_gguf_close(g);
    gb_free(&b);
}

ST_TEST(bad_header)
{
    gb_t b;
    gb_init(&b); b.magic = 0x46554746u;           EXPECT_FAIL(&b, ST_ERR_FORMAT, "magic");
    gb_init(&b); b.version = 1;                   EXPECT_FAIL(&b, ST_ERR_UNSUPPORTED, "version 1");
    gb_init(&b); b.version = 0x03000000;          EXPECT_FAIL(&b, ST_ERR_UNSUPPORTED, "version 50331648");
    gb_init(&b); b.trunc = 20;                    EXPECT_FAIL(&b, ST_ERR_FORMAT, "header", "20 bytes");
    gb_init(&b); b.have_counts = 1; b.n_kv_override = 1ull << 40;
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "kv count 1099511627776");
    gb_init(&b); b.have_counts = 1; b.n_tensors_override = 0xffffffffffffffffull;
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor count 18446744073709551615");
    /* counts that fit the size test but whose entries are not there */
    gb_init(&b); gb_kv_str(&b, "a", "b"); b.have_counts = 1; b.n_kv_override = 2;
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key #1");   /* reads the zero padding */
}

ST_TEST(bad_metadata)
{
    gb_t b;
    gb_buf_t *v;

    /* a huge key length */
    gb_init(&b); gb_u64(&b.kv, 0xfffffffffffffff0ull); b.n_kv = 1; gb_u64(&b.kv, 0); gb_u64(&b.kv, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key #0 name", "string length 18446744073709551600");
    /* a huge string value */
    gb_init(&b); v = gb_kv(&b, "general.name", ST_GGUF_STRING); gb_u64(v, 1ull << 62); gb_u64(v, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'general.name'", "string length 4611686018427387904");
    /* a huge array count, numeric and string */
    gb_init(&b); v = gb_kv(&b, "x.arr", ST_GGUF_ARRAY); gb_u32(v, ST_GGUF_UINT32); gb_u64(v, 1ull << 61);
    gb_u64(v, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'x.arr'", "array count 2305843009213693952");
    gb_init(&b); v = gb_kv(&b, "tokenizer.ggml.tokens", ST_GGUF_ARRAY); gb_u32(v, ST_GGUF_STRING);
    gb_u64(v, 0xffffffffffffffffull); gb_u64(v, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tokenizer.ggml.tokens", "array count 18446744073709551615");
    /* a string element past the end */
    gb_init(&b); v = gb_kv(&b, "s.arr", ST_GGUF_ARRAY); gb_u32(v, ST_GGUF_STRING); gb_u64(v, 2);
    gb_str(v, "ok"); gb_u64(v, 1000);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "element 1", "s.arr", "string length 1000");
    /* unknown value types */
    gb_init(&b); gb_u32(gb_kv(&b, "x.t", (st_gguf_type_t)13), 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'x.t'", "unknown value type 13");
    gb_init(&b); v = gb_kv(&b, "x.a", ST_GGUF_ARRAY); gb_u32(v, 77); gb_u64(v, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'x.a'", "element type 77");
    /* nested array inside nested array with a bad inner count */
    gb_init(&b); v = gb_kv(&b, "x.n", ST_GGUF_ARRAY); gb_u32(v, ST_GGUF_ARRAY); gb_u64(v, 1);
    gb_u32(v, ST_GGUF_INT64); gb_u64(v, 1000000);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'x.n'", "array count 1000000");
    /* nesting deeper than the limit */
    gb_init(&b); v = gb_kv(&b, "x.deep", ST_GGUF_ARRAY);
    for (int i = 0; i < 20; i++) { gb_u32(v, ST_GGUF_ARRAY); gb_u64(v, 1); }
    gb_u32(v, ST_GGUF_UINT8); gb_u64(v, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'x.deep'", "nested deeper");
    /* a bool that is neither 0 nor 1 */
    gb_init(&b); gb_u8(gb_kv(&b, "x.b", ST_GGUF_BOOL), 2);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'x.b'", "bool value 2");
    /* a scalar cut by the end of the file */
    gb_init(&b); gb_kv(&b, "x.cut", ST_GGUF_UINT64); gb_u32(&b.kv, 0); b.trunc = 24 + (int64_t)b.kv.len;
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'x.cut'", "needs 8 bytes");
    /* duplicate and empty keys; a key with a newline is printed safely */
    gb_init(&b); gb_kv_u32(&b, "dup.key", 1); gb_kv_u32(&b, "other", 1); gb_kv_str(&b, "dup.key", "x");
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'dup.key'", "duplicate");
    gb_init(&b); gb_kv_u32(&b, "", 1);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key #0", "name length 0");
    gb_init(&b); gb_u8(gb_kv(&b, "evil\nkey", ST_GGUF_BOOL), 9);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "key 'evil?key'", "bool value 9");
    /* alignment: zero, not a power of two, wrong type */
    gb_init(&b); gb_kv_u32(&b, "general.alignment", 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "general.alignment", "0 is not a power of two");
    gb_init(&b); gb_kv_u32(&b, "general.alignment", 48);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "general.alignment", "48 is not a power of two");
    gb_init(&b); gb_kv_str(&b, "general.alignment", "32");
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "general.alignment", "wrong type");
}

ST_TEST(bad_tensors)
{
    gb_t b;
    uint64_t ne2[2] = {32, 4};

    gb_init(&b); gb_tensor_at(&b, "w", 0, ne2, ST_DTYPE_F32, 0, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'w'", "n_dims 0");
    gb_init(&b); gb_tensor_at(&b, "w", 5, (const uint64_t[]){1, 1, 1, 1, 1}, ST_DTYPE_F32, 0, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'w'", "n_dims 5");
    gb_init(&b); gb_tensor_at(&b, "w", 2, (const uint64_t[]){32, 0}, ST_DTYPE_F32, 0, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'w'", "ne[1] = 0");
    /* dims whose product wraps to a small number (2^32 * 2^32 = 2^64 = 0) */
    gb_init(&b);
    gb_tensor_at(&b, "blk.3.attn_q.weight", 2, (const uint64_t[]){1ull << 32, 1ull << 32},
                 ST_DTYPE_F32, 0, 64);
    EXPECT_FAIL(&b, ST_ERR_OVERFLOW, "tensor 'blk.3.attn_q.weight'", "overflow");
    gb_init(&b);
    gb_tensor_at(&b, "w4", 4, (const uint64_t[]){32, 1ull << 20, 1ull << 20, 1ull << 20},
                 ST_DTYPE_Q8_0, 0, 64);
    EXPECT_FAIL(&b, ST_ERR_OVERFLOW, "tensor 'w4'", "overflow");
    /* element count fits but byte size does not */
    gb_init(&b);
    gb_tensor_at(&b, "wb", 2, (const uint64_t[]){1ull << 40, 1ull << 22}, ST_DTYPE_F32, 0, 64);
    EXPECT_FAIL(&b, ST_ERR_OVERFLOW, "tensor 'wb'", "overflow");
    gb_init(&b); gb_tensor_at(&b, "q", 2, (const uint64_t[]){48, 2}, ST_DTYPE_Q4_0, 0, 64);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'q'", "ne[0] = 48", "block size 32");
    gb_init(&b); gb_tensor_at(&b, "k", 2, (const uint64_t[]){512, 2}, ST_DTYPE_Q6_K, 0, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'k'", "past the end");
    gb_init(&b); gb_tensor_at(&b, "blk.0.ffn_up.weight", 2, ne2, 99, 0, 512);
    EXPECT_FAIL(&b, ST_ERR_UNSUPPORTED, "tensor 'blk.0.ffn_up.weight'", "type 99");
    gb_init(&b); gb_tensor_at(&b, "w", 2, ne2, 0xffffffffu, 0, 512);
    EXPECT_FAIL(&b, ST_ERR_UNSUPPORTED, "tensor 'w'", "type 4294967295");
    gb_init(&b); gb_tensor_at(&b, "u", 2, ne2, ST_DTYPE_F32, 16, 512);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'u'", "offset 16", "alignment 32");
    /* data past the end of the file, and offsets whose sum wraps */
    gb_init(&b); gb_tensor_at(&b, "e", 2, ne2, ST_DTYPE_F32, 0, 100);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'e'", "past the end");
    gb_init(&b); gb_tensor_at(&b, "e", 2, ne2, ST_DTYPE_F32, 0xffffffffffffffe0ull, 0);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'e'", "past the end");
    gb_init(&b); gb_tensor(&b, "a", 2, ne2, ST_DTYPE_F32); gb_tensor_at(&b, "b", 1, ne2, ST_DTYPE_F32, 256, 128);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'b'", "overlaps tensor 'a'");
    gb_init(&b); gb_tensor(&b, "same", 2, ne2, ST_DTYPE_F32); gb_tensor(&b, "same", 2, ne2, ST_DTYPE_F32);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'same'", "duplicate");
    gb_init(&b); gb_tensor(&b, "", 2, ne2, ST_DTYPE_F32);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor #0", "name length 0");
    gb_init(&b);
    gb_tensor(&b, "a_name_that_is_much_longer_than_the_sixty_four_bytes_the_spec_allows", 2, ne2,
              ST_DTYPE_F32);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor #0", "name length 68");
    gb_init(&b); gb_tensor(&b, "bad\nname", 2, ne2, ST_DTYPE_F32);
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor #0 'bad?name'", "control byte 0x0a");
    /* the tensor info itself cut short */
    gb_init(&b); gb_tensor(&b, "w", 2, ne2, ST_DTYPE_F32); b.ti.len -= 4; b.data_bytes = 0;
    EXPECT_FAIL(&b, ST_ERR_FORMAT, "tensor 'w'");
}

ST_TEST(missing_file)
{
    st_gguf_t *g = (st_gguf_t *)0x1;
    st_error_t err;
    ST_CHECK(st_gguf_open("/nonexistent/dir/m.gguf", &g, &err) == ST_ERR_IO);
    ST_CHECK(g == (st_gguf_t *)0x1);
    ST_CHECK(strstr(err.msg, "/nonexistent/dir/m.gguf: cannot open") != NULL);
    ST_CHECK(st_gguf_open("/", &g, &err) == ST_ERR_IO);
    ST_CHECK(strstr(err.msg, "not a regular file") != NULL);
}

int main(void) { return st_test_main(); }
