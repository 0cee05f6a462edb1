/*
 * st_crypt.h - encrypted models: AES-256-GCM in authenticated chunks, so a
 * worker decrypts only the tensors of its own layers, into anonymous memory.
 *
 *   uint8_t key[ST_CRYPT_KEY_BYTES];
 *   st_crypt_key_load("model.key", key, &err);
 *   st_crypt_encrypt_file("m.gguf", "m.stenc", key, 0, &err);     // writer
 *
 *   st_crypt_t *c;                                                // reader
 *   st_crypt_open("m.stenc", key, &c, &err);    // checks key, table, metadata
 *   st_gguf_open_mem("m.stenc", st_crypt_plain(c), st_crypt_plain_size(c), &g, &err);
 *   st_crypt_decrypt_range(c, t->file_offset, t->nbytes, t->name, &err);
 *   ...
 *   st_gguf_close(g); st_crypt_close(c);
 *
 * Usually this is reached through st_model_open with a key in its params,
 * which does the above for the layers asked for. The file format is in
 * docs/ENCRYPTION.md: a plaintext header (magic "STENC1", chunk size, sizes,
 * a random 96-bit base nonce, a key check value and a tag over header and
 * chunk table), the chunk table, then the ciphertext of the GGUF file laid
 * out byte for byte: chunk 0 is the GGUF header + metadata, every later
 * chunk lies inside one tensor's span (tensor data + its alignment padding),
 * at most `chunk_size` bytes. Chunk i uses nonce = base XOR i and AAD = (i,
 * plaintext offset, length), so chunks cannot be swapped or moved.
 *
 * The plaintext goes only to anonymous memory (mmap MAP_ANONYMOUS, marked
 * MADV_DONTDUMP so core dumps leave it out, optionally mlocked): nothing
 * decrypted is written to disk. Chunks not asked for stay zero.
 *
 * Without OpenSSL (STRATA_WITH_OPENSSL=OFF or no libcrypto) every function
 * that needs AES returns ST_ERR_UNSUPPORTED with "built without OpenSSL".
 */
#ifndef ST_CRYPT_H
#define ST_CRYPT_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_status.h"

#define ST_CRYPT_KEY_BYTES     32u
#define ST_CRYPT_MAGIC         "STENC1\0\0"   /* 8 bytes at offset 0 */
#define ST_CRYPT_MAGIC_BYTES   8u
#define ST_CRYPT_DEFAULT_CHUNK (1u << 20)     /* 1 MiB */

typedef struct st_crypt st_crypt_t;

/* 1 when the first bytes (n >= 8) carry the encrypted-model magic. */
int st_crypt_is_encrypted(const void *head, size_t n);
/* Reads the first 8 bytes of path: *is_enc = 1 for an encrypted model. A
 * file shorter than 8 bytes is "not encrypted" (the GGUF reader reports it). */
st_status_t st_crypt_probe(const char *path, int *is_enc, st_error_t *err);

/* Key file: exactly 32 raw bytes, or 64 hex digits (an optional trailing
 * newline allowed). Anything else is refused with a message saying why.
 * A path starting with "pkcs11:" is a PKCS#11 URI instead: the key is
 * unwrapped by the token (st_crypt_pkcs11.h). */
st_status_t st_crypt_key_load(const char *path, uint8_t key[ST_CRYPT_KEY_BYTES], st_error_t *err);
/* Creates path (O_EXCL, mode 0600) holding a random key as 64 hex digits. */
st_status_t st_crypt_key_generate(const char *path, st_error_t *err);

/* Encrypts the GGUF file `in` (validated with st_gguf_open first) to `out`
 * (created or truncated, mode 0600 while written). chunk_size 0 means
 * ST_CRYPT_DEFAULT_CHUNK; 4096 .. 1 GiB otherwise. */
st_status_t st_crypt_encrypt_file(const char *in, const char *out,
                                  const uint8_t key[ST_CRYPT_KEY_BYTES], uint32_t chunk_size,
                                  st_error_t *err);

/* Opens an encrypted model: validates the header, checks the key ("wrong
 * key (key check failed)"), authenticates header + chunk table, allocates
 * anonymous memory for the whole plaintext and decrypts chunk 0 (the GGUF
 * header and metadata). lock: mlock the plaintext (failure is an error). */
st_status_t st_crypt_open(const char *path, const uint8_t key[ST_CRYPT_KEY_BYTES], int lock,
                          st_crypt_t **out, st_error_t *err);
void        st_crypt_close(st_crypt_t *c);   /* zeroes and unmaps the plaintext */

const uint8_t *st_crypt_plain(const st_crypt_t *c);
uint64_t       st_crypt_plain_size(const st_crypt_t *c);

/* Decrypts every chunk overlapping plaintext bytes [off, off + len) that is
 * not decrypted yet. `what` names the range in errors ("chunk 7 (tensor
 * 'blk.3.attn_q.weight') failed authentication"); a chunk that fails is
 * left zero. */
st_status_t st_crypt_decrypt_range(st_crypt_t *c, uint64_t off, uint64_t len, const char *what,
                                   st_error_t *err);
/* Decrypts every chunk. */
st_status_t st_crypt_decrypt_all(st_crypt_t *c, st_error_t *err);

/* Chunks in the file, chunks decrypted so far and their plaintext bytes
 * (chunk 0 included): lets tests and logs see what a partial load touched. */
void st_crypt_stats(const st_crypt_t *c, uint64_t *n_chunks, uint64_t *n_done,
                    uint64_t *bytes_done);

#endif /* ST_CRYPT_H */
