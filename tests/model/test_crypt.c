/*
 * test_crypt.c - encrypted models (st_crypt.h) on a tiny Llama built in
 * memory: round trip byte for byte, key files, wrong key, a flipped byte in
 * a tensor chunk, the metadata chunk, the header and the chunk table, a
 * truncated file, and a layer-selective load that decrypts only the chunks
 * of the requested tensors. Small chunks (4 KiB) so big tensors are split.
 */
#define _GNU_SOURCE   /* memmem */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_crypt.h"
#include "st_model.h"
#include "st_test.h"
#include "st_util.h"
#include "test_gguf_builder.h"

#define N_LAYER 3
#define N_EMBD  128
#define N_FF    256
#define CHUNK   4096u
#define HDR_BYTES   88u   /* docs/ENCRYPTION.md */
#define ENTRY_BYTES 32u

static const uint8_t KEY[ST_CRYPT_KEY_BYTES] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static const char *build(gb_t *b)
{
    static const char *const tok[8] = {"<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"};
    char name[64];

    gb_init(b);
    gb_kv_str(b, "general.architecture", "llama");
    gb_kv_str(b, "general.name", "secret-model-name-7f3a");
    gb_kv_u32(b, "llama.block_count", N_LAYER);
    gb_kv_u32(b, "llama.embedding_length", N_EMBD);
    gb_kv_u32(b, "llama.feed_forward_length", N_FF);
    gb_kv_u32(b, "llama.attention.head_count", 4);
    gb_kv_u32(b, "llama.attention.head_count_kv", 2);
    gb_kv_u32(b, "llama.context_length", 256);
    gb_kv_str(b, "tokenizer.ggml.model", "llama");
    gb_kv_arr_str(b, "tokenizer.ggml.tokens", tok, 8);
    gb_tensor(b, "token_embd.weight", 2, (uint64_t[]){N_EMBD, 8}, ST_DTYPE_Q8_0);
    gb_tensor(b, "output_norm.weight", 1, (uint64_t[]){N_EMBD}, ST_DTYPE_F32);
    for (int l = 0; l < N_LAYER; l++) {
        const struct { const char *n; uint64_t ne0, ne1; } spec[] = {
            {"attn_norm", N_EMBD, 0}, {"attn_q", N_EMBD, N_EMBD}, {"attn_k", N_EMBD, 64},
            {"attn_v", N_EMBD, 64}, {"attn_output", N_EMBD, N_EMBD}, {"ffn_norm", N_EMBD, 0},
            {"ffn_gate", N_EMBD, N_FF}, {"ffn_up", N_EMBD, N_FF}, {"ffn_down", N_FF, N_EMBD},
        };
        for (size_t k = 0; k < ST_ARRAY_SIZE(spec); k++) {
            snprintf(name, sizeof(name), "blk.%d.%s.weight", l, spec[k].n);
            gb_tensor(b, name, spec[k].ne1 ? 2 : 1, (uint64_t[]){spec[k].ne0, spec[k].ne1},
                      spec[k].ne1 ? ST_DTYPE_Q8_0 : ST_DTYPE_F32);
        }
    }
    return gb_write(b, "crypt");
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p = NULL;
    long sz;
    if (f && !fseek(f, 0, SEEK_END) && (sz = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET) &&
        (p = malloc((size_t)sz + 1)) && fread(p, 1, (size_t)sz, f) == (size_t)sz) {
        *n = (size_t)sz;
    } else {
        free(p);
        p = NULL;
    }
    if (f) fclose(f);
    return p;
}

static void spit(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

/* A plain model, its encrypted copy and the bytes of both. */
typedef struct fixture {
    gb_t     b;
    char     enc[300], tmp[300];
    uint8_t *plain, *cipher;
    size_t   n_plain, n_cipher;
    uint64_t n_chunks, data_start;
    st_gguf_t *g;              /* the plain file, for tensor offsets */
} fixture_t;

/* 0: ready; 1: encryption unsupported in this build. */
static int fixture_init(fixture_t *f, int *st_failed_)
{
    st_error_t err;
    st_status_t s;

    memset(f, 0, sizeof(*f));
    const char *path = build(&f->b);
    snprintf(f->enc, sizeof(f->enc), "%s.stenc", path);
    snprintf(f->tmp, sizeof(f->tmp), "%s.bad", path);
    s = st_crypt_encrypt_file(path, f->enc, KEY, CHUNK, &err);
    if (s == ST_ERR_UNSUPPORTED)
        return 1;
    ST_CHECK_MSG(s == ST_OK, "%s", err.msg);
    f->plain = slurp(path, &f->n_plain);
    f->cipher = slurp(f->enc, &f->n_cipher);
    ST_CHECK(f->plain && f->cipher && f->n_cipher > f->n_plain);
    ST_CHECK(st_gguf_open(path, &f->g, &err) == ST_OK);
    if (f->cipher) {
        memcpy(&f->n_chunks, f->cipher + 32, 8);
        f->data_start = HDR_BYTES + f->n_chunks * ENTRY_BYTES;
    }
    return 0;
}

static void fixture_free(fixture_t *f)
{
    unlink(f->enc);
    unlink(f->tmp);
    free(f->plain);
    free(f->cipher);
    st_gguf_close(f->g);
    gb_free(&f->b);
}

#define FIXTURE(f)                                                             \
    fixture_t f;                                                               \
    if (fixture_init(&f, st_failed_)) {                                        \
        fixture_free(&f);                                                      \
        ST_SKIP("built without OpenSSL");                                      \
    }

static st_status_t open_with(const char *path, const uint8_t *key, uint32_t first, uint32_t last,
                             int embd, st_model_t **m, st_error_t *err)
{
    st_model_open_params_t p = {.size = sizeof(p), .key = key, .first_layer = first,
                                .last_layer = last, .with_embd = embd};
    st_error_clear(err);
    return st_model_open(path, &p, m, err);
}

/* Writes the ciphertext with byte `off` flipped to f->tmp and opens it. */
static st_status_t open_flipped(fixture_t *f, size_t off, st_error_t *err)
{
    st_model_t *m = NULL;
    f->cipher[off] ^= 0x40;
    spit(f->tmp, f->cipher, f->n_cipher);
    f->cipher[off] ^= 0x40;
    st_status_t s = open_with(f->tmp, KEY, 0, 0, 0, &m, err);
    st_model_close(m);
    return s;
}

ST_TEST(round_trip_is_byte_exact)
{
    FIXTURE(f);
    st_crypt_t *c;
    st_error_t err;
    uint64_t n_chunks, n_done, bytes;

    ST_REQUIRE(st_crypt_open(f.enc, KEY, 0, &c, &err) == ST_OK);
    ST_CHECK(st_crypt_plain_size(c) == f.n_plain);
    ST_CHECK(st_crypt_decrypt_all(c, &err) == ST_OK);
    ST_CHECK(memcmp(st_crypt_plain(c), f.plain, f.n_plain) == 0);
    st_crypt_stats(c, &n_chunks, &n_done, &bytes);
    ST_CHECK(n_chunks == f.n_chunks && n_done == n_chunks && bytes == f.n_plain);
    /* The 34 KiB FFN matrices are split, so there are more chunks than tensors. */
    ST_CHECK(n_chunks > 1 + st_gguf_n_tensors(f.g));
    st_crypt_close(c);
    /* The metadata is encrypted too: the model name is not in the file. */
    ST_CHECK(memmem(f.plain, f.n_plain, "secret-model-name-7f3a", 22) != NULL);
    ST_CHECK(memmem(f.cipher, f.n_cipher, "secret-model-name-7f3a", 22) == NULL);
    fixture_free(&f);
}

ST_TEST(model_open_decrypts_everything)
{
    FIXTURE(f);
    st_model_t *m;
    st_error_t err;

    ST_REQUIRE(open_with(f.enc, KEY, 0, 0, 0, &m, &err) == ST_OK);
    ST_CHECK(strcmp(st_model_name(m), "secret-model-name-7f3a") == 0);
    ST_CHECK(st_model_hparams(m)->n_layer == N_LAYER);
    ST_CHECK(st_model_decrypted_bytes(m) == f.n_plain);
    for (uint64_t i = 0; i < st_gguf_n_tensors(f.g); i++) {
        const st_tensor_t *t = st_gguf_tensor(f.g, i);
        const st_tensor_t *u = st_gguf_find_tensor(st_model_gguf(m), t->name);
        ST_REQUIRE(u && u->nbytes == t->nbytes);
        ST_CHECK_MSG(memcmp(u->data, t->data, t->nbytes) == 0, "tensor %s", t->name);
    }
    st_model_close(m);
    /* A plain file opens as before, key or not. */
    ST_CHECK(open_with(f.b.path, KEY, 0, 0, 0, &m, &err) == ST_OK);
    ST_CHECK(st_model_decrypted_bytes(m) == 0);
    st_model_close(m);
    fixture_free(&f);
}

ST_TEST(wrong_or_missing_key)
{
    FIXTURE(f);
    uint8_t bad[ST_CRYPT_KEY_BYTES];
    st_model_t *m = NULL;
    st_error_t err;

    memcpy(bad, KEY, sizeof(bad));
    bad[31] ^= 1;
    ST_CHECK(open_with(f.enc, bad, 0, 0, 0, &m, &err) == ST_ERR_AUTH);
    ST_CHECK_MSG(strstr(err.msg, "wrong key (key check failed)") != NULL, "%s", err.msg);
    ST_CHECK(open_with(f.enc, NULL, 0, 0, 0, &m, &err) == ST_ERR_AUTH);
    ST_CHECK_MSG(strstr(err.msg, "a key is needed") != NULL, "%s", err.msg);
    ST_CHECK(st_model_open(f.enc, NULL, &m, &err) == ST_ERR_AUTH);
    ST_CHECK(m == NULL);
    fixture_free(&f);
}

ST_TEST(tampered_chunk_names_the_tensor)
{
    FIXTURE(f);
    st_error_t err;
    const st_tensor_t *t = st_gguf_find_tensor(f.g, "blk.1.ffn_up.weight");
    ST_REQUIRE(t != NULL);

    /* A byte in the middle of the tensor: the third 4 KiB chunk of its span. */
    ST_CHECK(open_flipped(&f, (size_t)(f.data_start + t->file_offset + 2 * CHUNK + 5), &err) ==
             ST_ERR_AUTH);
    ST_CHECK_MSG(strstr(err.msg, "(tensor 'blk.1.ffn_up.weight') failed authentication") != NULL,
                 "%s", err.msg);
    ST_CHECK_MSG(strstr(err.msg, ": chunk ") != NULL, "%s", err.msg);
    /* The metadata chunk. */
    ST_CHECK(open_flipped(&f, (size_t)f.data_start + 30, &err) == ST_ERR_AUTH);
    ST_CHECK_MSG(strstr(err.msg, "chunk 0 (GGUF header and metadata) failed") != NULL, "%s",
                 err.msg);
    /* The last byte of the file. */
    ST_CHECK(open_flipped(&f, f.n_cipher - 1, &err) == ST_ERR_AUTH);
    ST_CHECK_MSG(strstr(err.msg, "failed authentication") != NULL, "%s", err.msg);
    fixture_free(&f);
}

ST_TEST(tampered_header_and_table)
{
    FIXTURE(f);
    st_error_t err;

    /* chunk_size, plain size high byte... any authenticated header field */
    ST_CHECK(open_flipped(&f, 13, &err) == ST_ERR_AUTH);
    ST_CHECK_MSG(strstr(err.msg, "header or chunk table failed authentication") != NULL, "%s",
                 err.msg);
    /* a tag inside the chunk table */
    ST_CHECK(open_flipped(&f, HDR_BYTES + 5 * ENTRY_BYTES + 20, &err) == ST_ERR_AUTH);
    ST_CHECK_MSG(strstr(err.msg, "header or chunk table failed authentication") != NULL, "%s",
                 err.msg);
    /* an offset inside the chunk table */
    ST_CHECK(open_flipped(&f, HDR_BYTES + 7 * ENTRY_BYTES + 1, &err) == ST_ERR_AUTH);
    /* the nonce: the key check no longer matches */
    ST_CHECK(open_flipped(&f, 45, &err) == ST_ERR_AUTH);
    ST_CHECK_MSG(strstr(err.msg, "wrong key") != NULL, "%s", err.msg);
    /* the magic: not an encrypted model any more, nor a GGUF */
    ST_CHECK(open_flipped(&f, 2, &err) == ST_ERR_FORMAT);
    /* n_chunks beyond the file */
    ST_CHECK(open_flipped(&f, 39, &err) == ST_ERR_FORMAT);
    fixture_free(&f);
}

ST_TEST(truncated_file)
{
    FIXTURE(f);
    st_model_t *m = NULL;
    st_error_t err;
    const size_t cuts[] = {0, 7, 50, HDR_BYTES + 10, f.n_cipher / 2, f.n_cipher - 1};

    for (size_t i = 0; i < ST_ARRAY_SIZE(cuts); i++) {
        spit(f.tmp, f.cipher, cuts[i]);
        st_status_t s = open_with(f.tmp, KEY, 0, 0, 0, &m, &err);
        ST_CHECK_MSG(s == ST_ERR_FORMAT, "cut %zu: %s", cuts[i], err.msg);
        ST_CHECK(m == NULL);
        if (cuts[i] >= HDR_BYTES)
            ST_CHECK_MSG(strstr(err.msg, "truncated") != NULL, "%s", err.msg);
    }
    fixture_free(&f);
}

ST_TEST(partial_load_touches_only_its_chunks)
{
    FIXTURE(f);
    st_model_t *m;
    st_error_t err;
    st_crypt_t *c;
    uint64_t n0, n1, b0, b1;

    /* Layer 1 only: its tensors match the plain file, everything else stays zero. */
    ST_REQUIRE(open_with(f.enc, KEY, 1, 2, 0, &m, &err) == ST_OK);
    const st_gguf_t *g = st_model_gguf(m);
    uint64_t meta = st_gguf_data_offset(g), lb = st_model_layer_bytes(m, 1);
    uint32_t align = st_gguf_alignment(g);
    uint64_t got = st_model_decrypted_bytes(m);
    /* metadata + layer 1 + at most the alignment padding after each of its 9 tensors */
    ST_CHECK_MSG(got >= meta + lb && got <= meta + lb + 9 * (align - 1),
                 "decrypted %" PRIu64 ", metadata %" PRIu64 " + layer %" PRIu64, got, meta, lb);
    for (uint64_t i = 0; i < st_gguf_n_tensors(f.g); i++) {
        const st_tensor_t *t = st_gguf_tensor(f.g, i);
        const st_tensor_t *u = st_gguf_find_tensor(g, t->name);
        int mine = !strncmp(t->name, "blk.1.", 6), zero = 1;
        for (uint64_t k = 0; k < u->nbytes && zero; k++)
            zero = ((const uint8_t *)u->data)[k] == 0;
        if (mine)
            ST_CHECK_MSG(memcmp(u->data, t->data, t->nbytes) == 0, "%s", t->name);
        else
            ST_CHECK_MSG(zero, "%s was decrypted", t->name);
    }
    st_model_close(m);

    /* Embedding and head: token_embd, output_norm (tied output). */
    ST_REQUIRE(open_with(f.enc, KEY, 2, 3, 3, &m, &err) == ST_OK);
    ST_CHECK(memcmp(st_model_tok_embd(m)->data, st_gguf_find_tensor(f.g, "token_embd.weight")->data,
                    st_model_tok_embd(m)->nbytes) == 0);
    ST_CHECK(memcmp(st_model_output_norm(m)->data,
                    st_gguf_find_tensor(f.g, "output_norm.weight")->data, N_EMBD * 4) == 0);
    ST_CHECK(st_model_decrypted_bytes(m) < f.n_plain);
    st_model_close(m);

    /* Bad ranges are refused. */
    ST_CHECK(open_with(f.enc, KEY, 2, 4, 0, &m, &err) == ST_ERR_RANGE);
    ST_CHECK(open_with(f.enc, KEY, 3, 2, 0, &m, &err) == ST_ERR_RANGE);

    /* One tensor through st_crypt: exactly the chunks of its span. */
    const st_tensor_t *t = st_gguf_find_tensor(f.g, "blk.0.ffn_gate.weight");
    ST_REQUIRE(st_crypt_open(f.enc, KEY, 0, &c, &err) == ST_OK);
    st_crypt_stats(c, NULL, &n0, &b0);
    ST_CHECK(n0 == 1 && b0 == meta);
    ST_CHECK(st_crypt_decrypt_range(c, t->file_offset, t->nbytes, t->name, &err) == ST_OK);
    st_crypt_stats(c, NULL, &n1, &b1);
    ST_CHECK_MSG(n1 - n0 == (t->nbytes + CHUNK - 1) / CHUNK, "%" PRIu64 " chunks for %" PRIu64
                 " bytes", n1 - n0, t->nbytes);
    ST_CHECK(b1 - b0 >= t->nbytes && b1 - b0 < t->nbytes + align);
    ST_CHECK(memcmp(st_crypt_plain(c) + t->file_offset, t->data, t->nbytes) == 0);
    /* Again: nothing more to do. */
    ST_CHECK(st_crypt_decrypt_range(c, t->file_offset, t->nbytes, t->name, &err) == ST_OK);
    st_crypt_stats(c, NULL, &n0, NULL);
    ST_CHECK(n0 == n1);
    ST_CHECK(st_crypt_decrypt_range(c, f.n_plain, 1, "x", &err) == ST_ERR_RANGE);
    st_crypt_close(c);
    fixture_free(&f);
}

ST_TEST(encrypt_refusals)
{
    FIXTURE(f);
    st_error_t err;

    ST_CHECK(st_crypt_encrypt_file(f.enc, f.tmp, KEY, CHUNK, &err) == ST_ERR_INVALID);
    ST_CHECK_MSG(strstr(err.msg, "already an encrypted model") != NULL, "%s", err.msg);
    ST_CHECK(st_crypt_encrypt_file(f.b.path, f.b.path, KEY, CHUNK, &err) == ST_ERR_INVALID);
    ST_CHECK(st_crypt_encrypt_file(f.b.path, f.tmp, KEY, 100, &err) == ST_ERR_RANGE);
    /* The input survived the same-file attempt. */
    size_t n = 0;
    uint8_t *again = slurp(f.b.path, &n);
    ST_CHECK(again && n == f.n_plain && memcmp(again, f.plain, n) == 0);
    free(again);
    fixture_free(&f);
}

ST_TEST(key_files)
{
    char path[256];
    uint8_t key[ST_CRYPT_KEY_BYTES], key2[ST_CRYPT_KEY_BYTES];
    st_error_t err;
    struct stat st;
    const char *dir = getenv("TMPDIR");

    snprintf(path, sizeof(path), "%s/st_crypt_key_%d", dir ? dir : "/tmp", (int)getpid());
    unlink(path);
    ST_REQUIRE(st_crypt_key_generate(path, &err) == ST_OK);
    ST_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 65);
    ST_CHECK(st_crypt_key_load(path, key, &err) == ST_OK);
    ST_CHECK(st_crypt_key_generate(path, &err) == ST_ERR_IO);    /* never overwrites */
    spit(path, KEY, sizeof(KEY));                                   /* raw */
    ST_CHECK(st_crypt_key_load(path, key, &err) == ST_OK && !memcmp(key, KEY, sizeof(KEY)));
    spit(path, (const uint8_t *)"0102030405060708090a0b0c0d0e0f10"
                                "1112131415161718191A1B1C1D1E1F20\r\n", 66); /* hex */
    ST_CHECK(st_crypt_key_load(path, key2, &err) == ST_OK && !memcmp(key2, KEY, sizeof(KEY)));
    spit(path, (const uint8_t *)"0102030405060708090a0b0c0d0e0f10"
                                "1112131415161718191a1b1c1d1e1fzz", 64);
    ST_CHECK(st_crypt_key_load(path, key, &err) == ST_ERR_FORMAT);
    ST_CHECK_MSG(strstr(err.msg, "not a hex digit") != NULL, "%s", err.msg);
    spit(path, (const uint8_t *)"short", 5);
    ST_CHECK(st_crypt_key_load(path, key, &err) == ST_ERR_FORMAT);
    ST_CHECK_MSG(strstr(err.msg, "32 raw bytes or 64 hex digits") != NULL, "%s", err.msg);
    spit(path, (const uint8_t *)"", 0);
    ST_CHECK(st_crypt_key_load(path, key, &err) == ST_ERR_FORMAT);
    unlink(path);
    ST_CHECK(st_crypt_key_load(path, key, &err) == ST_ERR_IO);
}

int main(void)
{
    return st_test_main();
}
