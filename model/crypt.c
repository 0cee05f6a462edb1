/*
 * crypt.c - reader of encrypted models and the key file (see st_crypt.h and
 * docs/ENCRYPTION.md) and its writer, in one file so the layout helpers
 * stay private.
 *
 * Order of checks at open, each with its own message: magic and version,
 * sizes against the file size (before anything is allocated), the key check
 * value (so a wrong key says "wrong key", not "chunk 0 failed"), the tag over
 * header + chunk table (a flipped table byte is named as such), the table's
 * own consistency, then chunk 0 (GGUF metadata). Only authenticated bytes
 * ever reach the GGUF parser, and it still validates them.
 */
#include "st_crypt.h"
#include "st_crypt_pkcs11.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_gguf.h"
#include "st_util.h"

/* ---- file layout (docs/ENCRYPTION.md) -------------------------------------
 * Header, little endian, 88 bytes:
 *   0 magic "STENC1\0\0" | 8 u32 version | 12 u32 chunk_size
 *  16 u64 plain_size (the GGUF file) | 24 u64 meta_size (chunk 0)
 *  32 u64 n_chunks | 40 nonce[12] | 52 u32 zero
 *  56 kcv[16] | 72 table_tag[16]
 * then n_chunks entries {u64 plain_offset, u64 length, tag[16]}, then the
 * ciphertext: plaintext byte x is at data_start + x. */
#define ST_CRYPT_VERSION        1u
#define ST_CRYPT_HDR_BYTES      88u
#define ST_CRYPT_HDR_AUTH_BYTES 56u   /* header bytes covered by the table tag */
#define ST_CRYPT_ENTRY_BYTES    32u
#define ST_CRYPT_NONCE_BYTES    12u
#define ST_CRYPT_TAG_BYTES      16u
#define ST_CRYPT_MIN_CHUNK      4096u
#define ST_CRYPT_MAX_CHUNK      (1u << 30)
/* Nonce indexes of the two header tags: above any chunk index (n_chunks is
 * bounded by the file size), so no nonce is used twice under one key. */
#define ST_CRYPT_NONCE_KCV      UINT64_MAX
#define ST_CRYPT_NONCE_TABLE    (UINT64_MAX - 1)

typedef struct st_crypt_hdr {
    uint32_t version, chunk_size;
    uint64_t plain_size, meta_size, n_chunks;
    uint8_t  nonce[ST_CRYPT_NONCE_BYTES];
    uint8_t  kcv[ST_CRYPT_TAG_BYTES];
    uint8_t  table_tag[ST_CRYPT_TAG_BYTES];
} st_crypt_hdr_t;

typedef struct st_crypt_chunk {
    uint64_t off, len;
    uint8_t  tag[ST_CRYPT_TAG_BYTES];
} st_crypt_chunk_t;

/* Plaintext and key bytes are cleared with a store the compiler may not
 * drop as dead. */
static void wipe(void *p, size_t n)
{
    explicit_bzero(p, n);
}

int st_crypt_is_encrypted(const void *head, size_t n)
{
    return head && n >= ST_CRYPT_MAGIC_BYTES && !memcmp(head, ST_CRYPT_MAGIC, ST_CRYPT_MAGIC_BYTES);
}

st_status_t st_crypt_probe(const char *path, int *is_enc, st_error_t *err)
{
    uint8_t head[ST_CRYPT_MAGIC_BYTES];
    ssize_t n;
    int fd;

    if (!path || !is_enc)
        return st_error_set(err, ST_ERR_INVALID, "st_crypt_probe: NULL argument");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    n = pread(fd, head, sizeof(head), 0);
    close(fd);
    *is_enc = n == (ssize_t)sizeof(head) && st_crypt_is_encrypted(head, sizeof(head));
    return ST_OK;
}

/* ---- key file ------------------------------------------------------------ */

static int hex_val(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

st_status_t st_crypt_key_load(const char *path, uint8_t key[ST_CRYPT_KEY_BYTES], st_error_t *err)
{
    uint8_t buf[ST_CRYPT_KEY_BYTES * 2 + 3];   /* 64 hex + "\r\n" + one byte too many */
    st_status_t s = ST_OK;
    size_t n = 0;
    ssize_t r;
    int fd;

    if (!path || !key)
        return st_error_set(err, ST_ERR_INVALID, "st_crypt_key_load: NULL argument");
    /* A PKCS#11 URI instead of a path: the key is unwrapped by the token, so
     * every caller (and every local worker it starts) takes either form. */
    if (st_pkcs11_is_uri(path))
        return st_pkcs11_key_unwrap(path, key, err);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "%s: cannot open key file: %s", path, strerror(errno));
    while (n < sizeof(buf) && (r = read(fd, buf + n, sizeof(buf) - n)) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            s = st_error_set(err, ST_ERR_IO, "%s: cannot read key file: %s", path, strerror(errno));
            goto out;
        }
        n += (size_t)r;
    }
    if (n == ST_CRYPT_KEY_BYTES) {
        memcpy(key, buf, ST_CRYPT_KEY_BYTES);
        goto out;
    }
    if (n > 0 && buf[n - 1] == '\n') n--;
    if (n > 0 && buf[n - 1] == '\r') n--;
    if (n != ST_CRYPT_KEY_BYTES * 2) {
        s = st_error_set(err, ST_ERR_FORMAT, "%s: key file must hold 32 raw bytes or 64 hex "
                         "digits (AES-256), found %zu%s bytes", path, n,
                         n >= sizeof(buf) - 2 ? " or more" : "");
        goto out;
    }
    for (size_t i = 0; i < ST_CRYPT_KEY_BYTES; i++) {
        int hi = hex_val(buf[2 * i]), lo = hex_val(buf[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            s = st_error_set(err, ST_ERR_FORMAT, "%s: key file: byte %zu is not a hex digit "
                             "(expected 64 hex digits or 32 raw bytes)", path,
                             hi < 0 ? 2 * i : 2 * i + 1);
            goto out;
        }
        key[i] = (uint8_t)(hi << 4 | lo);
    }
out:
    wipe(buf, sizeof(buf));
    close(fd);
    return s;
}

static st_status_t crypt_random(void *p, size_t n, st_error_t *err)
{
    uint8_t *q = p;
    while (n > 0) {
        ssize_t r = getrandom(q, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return st_error_set(err, ST_ERR_IO, "getrandom: %s", strerror(errno));
        }
        q += r;
        n -= (size_t)r;
    }
    return ST_OK;
}

st_status_t st_crypt_key_generate(const char *path, st_error_t *err)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t key[ST_CRYPT_KEY_BYTES];
    char txt[ST_CRYPT_KEY_BYTES * 2 + 1];
    st_status_t s;
    int fd;

    if (!path)
        return st_error_set(err, ST_ERR_INVALID, "st_crypt_key_generate: NULL argument");
    if ((s = crypt_random(key, sizeof(key), err)) != ST_OK)
        return s;
    for (size_t i = 0; i < sizeof(key); i++) {
        txt[2 * i] = hex[key[i] >> 4];
        txt[2 * i + 1] = hex[key[i] & 15];
    }
    txt[sizeof(txt) - 1] = '\n';
    /* O_EXCL: never overwrite a key, which would orphan the models it
     * encrypted. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        s = st_error_set(err, ST_ERR_IO, "%s: cannot create key file: %s", path, strerror(errno));
        goto out;
    }
    if (write(fd, txt, sizeof(txt)) != (ssize_t)sizeof(txt) || fsync(fd) != 0) {
        s = st_error_set(err, ST_ERR_IO, "%s: cannot write key file: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        goto out;
    }
    close(fd);
out:
    wipe(key, sizeof(key));
    wipe(txt, sizeof(txt));
    return s;
}

/* ---- layout helpers shared with crypt_write.c ----------------------------- */

#ifdef ST_MODEL_HAVE_CRYPTO
#include <openssl/evp.h>

static void nonce_for(const uint8_t base[ST_CRYPT_NONCE_BYTES], uint64_t index,
                    uint8_t out[ST_CRYPT_NONCE_BYTES])
{
    memcpy(out, base, ST_CRYPT_NONCE_BYTES);
    for (int i = 0; i < 8; i++)
        out[4 + i] ^= (uint8_t)(index >> (8 * i));
}

static void chunk_aad(uint64_t index, uint64_t off, uint64_t len, uint8_t aad[24])
{
    memcpy(aad, &index, 8);
    memcpy(aad + 8, &off, 8);
    memcpy(aad + 16, &len, 8);
}

static void hdr_pack(const st_crypt_hdr_t *h, uint8_t out[ST_CRYPT_HDR_BYTES])
{
    memset(out, 0, ST_CRYPT_HDR_BYTES);
    memcpy(out, ST_CRYPT_MAGIC, ST_CRYPT_MAGIC_BYTES);
    memcpy(out + 8, &h->version, 4);
    memcpy(out + 12, &h->chunk_size, 4);
    memcpy(out + 16, &h->plain_size, 8);
    memcpy(out + 24, &h->meta_size, 8);
    memcpy(out + 32, &h->n_chunks, 8);
    memcpy(out + 40, h->nonce, ST_CRYPT_NONCE_BYTES);
    memcpy(out + 56, h->kcv, ST_CRYPT_TAG_BYTES);
    memcpy(out + 72, h->table_tag, ST_CRYPT_TAG_BYTES);
}

static void hdr_unpack(const uint8_t *in, st_crypt_hdr_t *h)
{
    memcpy(&h->version, in + 8, 4);
    memcpy(&h->chunk_size, in + 12, 4);
    memcpy(&h->plain_size, in + 16, 8);
    memcpy(&h->meta_size, in + 24, 8);
    memcpy(&h->n_chunks, in + 32, 8);
    memcpy(h->nonce, in + 40, ST_CRYPT_NONCE_BYTES);
    memcpy(h->kcv, in + 56, ST_CRYPT_TAG_BYTES);
    memcpy(h->table_tag, in + 72, ST_CRYPT_TAG_BYTES);
}


/* One AES-256-GCM pass. enc: writes tag; dec: checks tag (returns 0 on an
 * authentication failure, with `out` possibly partly written: the caller
 * wipes it). OpenSSL takes int lengths, so long inputs go in 1 GiB pieces. */
static int gcm(void *evp, int enc, const uint8_t key[ST_CRYPT_KEY_BYTES],
                 const uint8_t nonce[ST_CRYPT_NONCE_BYTES], const uint8_t *aad, uint64_t aad_len,
                 const uint8_t *in, uint8_t *out, uint64_t len, uint8_t tag[ST_CRYPT_TAG_BYTES])
{
    EVP_CIPHER_CTX *ctx = evp;
    const uint64_t piece = 1ull << 30;
    int n;

    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, enc) != 1)
        return 0;
    for (uint64_t o = 0; o < aad_len; o += piece)
        if (EVP_CipherUpdate(ctx, NULL, &n, aad + o, (int)ST_MIN(piece, aad_len - o)) != 1)
            return 0;
    for (uint64_t o = 0; o < len; o += piece)
        if (EVP_CipherUpdate(ctx, out + o, &n, in + o, (int)ST_MIN(piece, len - o)) != 1)
            return 0;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, ST_CRYPT_TAG_BYTES, tag) != 1)
        return 0;
    if (EVP_CipherFinal_ex(ctx, out + len, &n) != 1)
        return 0;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, ST_CRYPT_TAG_BYTES, tag) != 1)
        return 0;
    return 1;
}


/* The key check value: a GCM tag over an empty message with its own nonce
 * index and AAD, so it reveals nothing about the key yet tells a wrong key
 * apart from a damaged chunk. */
static int kcv_pass(void *evp, const uint8_t key[ST_CRYPT_KEY_BYTES],
                 const uint8_t base[ST_CRYPT_NONCE_BYTES], uint8_t kcv[ST_CRYPT_TAG_BYTES], int check)
{
    static const uint8_t aad[] = "strata encrypted model: key check v1";
    uint8_t nonce[ST_CRYPT_NONCE_BYTES], dummy[1];
    nonce_for(base, ST_CRYPT_NONCE_KCV, nonce);
    return gcm(evp, !check, key, nonce, aad, sizeof(aad) - 1, dummy, dummy, 0, kcv);
}

/* Continues an AAD-only GCM pass begun by the caller and finishes it. */
static int gcm_more(void *evp, int check, const uint8_t *aad, uint64_t aad_len,
                      uint8_t tag[ST_CRYPT_TAG_BYTES])
{
    EVP_CIPHER_CTX *ctx = evp;
    const uint64_t piece = 1ull << 30;
    uint8_t dummy[1];
    int n;

    for (uint64_t o = 0; o < aad_len; o += piece)
        if (EVP_CipherUpdate(ctx, NULL, &n, aad + o, (int)ST_MIN(piece, aad_len - o)) != 1)
            return 0;
    if (check && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, ST_CRYPT_TAG_BYTES, tag) != 1)
        return 0;
    if (EVP_CipherFinal_ex(ctx, dummy, &n) != 1)
        return 0;
    if (!check && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, ST_CRYPT_TAG_BYTES, tag) != 1)
        return 0;
    return 1;
}

/* The tag over header bytes [0, 56) (everything but the two tags) and the
 * packed chunk table. */
static int table_pass(void *evp, const uint8_t key[ST_CRYPT_KEY_BYTES],
                       const uint8_t hdr[ST_CRYPT_HDR_BYTES], const uint8_t *table,
                       uint64_t table_bytes, uint8_t tag[ST_CRYPT_TAG_BYTES], int check)
{
    EVP_CIPHER_CTX *ctx = evp;
    uint8_t nonce[ST_CRYPT_NONCE_BYTES], base[ST_CRYPT_NONCE_BYTES];
    int n;

    memcpy(base, hdr + 40, ST_CRYPT_NONCE_BYTES);
    nonce_for(base, ST_CRYPT_NONCE_TABLE, nonce);
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, !check) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &n, hdr, ST_CRYPT_HDR_AUTH_BYTES) != 1)
        return 0;
    return gcm_more(ctx, check, table, table_bytes, tag);
}

/* ---- reader -------------------------------------------------------------- */

struct st_crypt {
    char             *path;
    const uint8_t    *file;        /* the encrypted file, mapped read-only */
    uint64_t          file_size;
    st_crypt_hdr_t    h;
    st_crypt_chunk_t *chunks;
    uint8_t          *done;        /* per chunk: decrypted */
    uint64_t          n_done, bytes_done;
    uint64_t          data_start;  /* ciphertext of plaintext byte 0 */
    uint8_t          *plain;       /* anonymous mapping of plain_size bytes */
    int               locked;
    long              page;        /* system page size */
    uint8_t           key[ST_CRYPT_KEY_BYTES];
    void             *evp;
};

static st_status_t map_input(st_crypt_t *c, st_error_t *err)
{
    struct stat st;
    st_status_t s = ST_OK;
    void *m;
    int fd = open(c->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "%s: cannot open: %s", c->path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        s = st_error_set(err, ST_ERR_IO, "%s: not a readable regular file", c->path);
        goto out;
    }
    c->file_size = (uint64_t)st.st_size;
    if (c->file_size < ST_CRYPT_HDR_BYTES) {
        s = st_error_set(err, ST_ERR_FORMAT, "%s: truncated: %" PRIu64 " bytes, the encrypted "
                         "model header alone needs %u", c->path, c->file_size, ST_CRYPT_HDR_BYTES);
        goto out;
    }
    m = mmap(NULL, (size_t)c->file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        s = st_error_set(err, ST_ERR_IO, "%s: cannot mmap: %s", c->path, strerror(errno));
        goto out;
    }
    c->file = m;
out:
    close(fd);
    return s;
}

/* Header fields against each other and the file size, before allocating. */
static st_status_t check_header(st_crypt_t *c, st_error_t *err)
{
    const st_crypt_hdr_t *h = &c->h;
    uint64_t table_bytes, end;

    if (!st_crypt_is_encrypted(c->file, c->file_size))
        return st_error_set(err, ST_ERR_FORMAT, "%s: not an encrypted model (no STENC1 magic)",
                            c->path);
    if (h->version != ST_CRYPT_VERSION)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "%s: encrypted model version %" PRIu32
                            " is not supported (expected %u)", c->path, h->version,
                            ST_CRYPT_VERSION);
    if (h->chunk_size < ST_CRYPT_MIN_CHUNK || h->chunk_size > ST_CRYPT_MAX_CHUNK)
        return st_error_set(err, ST_ERR_FORMAT, "%s: chunk size %" PRIu32 " outside %u..%u",
                            c->path, h->chunk_size, ST_CRYPT_MIN_CHUNK, ST_CRYPT_MAX_CHUNK);
    if (h->n_chunks < 1 || h->n_chunks > (c->file_size - ST_CRYPT_HDR_BYTES) / ST_CRYPT_ENTRY_BYTES)
        return st_error_set(err, ST_ERR_FORMAT, "%s: truncated or corrupt: %" PRIu64 " chunks "
                            "do not fit in %" PRIu64 " bytes", c->path, h->n_chunks, c->file_size);
    table_bytes = h->n_chunks * ST_CRYPT_ENTRY_BYTES;
    c->data_start = ST_CRYPT_HDR_BYTES + table_bytes;
    if (st_add_overflow_u64(c->data_start, h->plain_size, &end) || end != c->file_size)
        return st_error_set(err, ST_ERR_FORMAT, "%s: truncated or corrupt: file is %" PRIu64
                            " bytes, its header says %" PRIu64 " + %" PRIu64, c->path,
                            c->file_size, c->data_start, h->plain_size);
    if (h->meta_size < 24 || h->meta_size > h->plain_size)
        return st_error_set(err, ST_ERR_FORMAT, "%s: metadata size %" PRIu64 " outside 24..%"
                            PRIu64, c->path, h->meta_size, h->plain_size);
    return ST_OK;
}

/* Table entries: contiguous from 0, chunk 0 = the metadata, the others
 * 1..chunk_size bytes, ending at plain_size. Checked after the table tag,
 * so a failure here means a buggy writer rather than tampering. */
static st_status_t read_table(st_crypt_t *c, st_error_t *err)
{
    const uint8_t *p = c->file + ST_CRYPT_HDR_BYTES;
    uint64_t next = 0;

    c->chunks = calloc((size_t)c->h.n_chunks, sizeof(*c->chunks));
    c->done = calloc((size_t)c->h.n_chunks, 1);
    if (!c->chunks || !c->done)
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory for %" PRIu64 " chunks",
                            c->path, c->h.n_chunks);
    for (uint64_t i = 0; i < c->h.n_chunks; i++, p += ST_CRYPT_ENTRY_BYTES) {
        st_crypt_chunk_t *k = &c->chunks[i];
        memcpy(&k->off, p, 8);
        memcpy(&k->len, p + 8, 8);
        memcpy(k->tag, p + 16, ST_CRYPT_TAG_BYTES);
        if (k->off != next || k->len == 0 || k->len > c->h.plain_size - k->off ||
            (i == 0 && k->len != c->h.meta_size) || (i > 0 && k->len > c->h.chunk_size))
            return st_error_set(err, ST_ERR_FORMAT, "%s: chunk table entry %" PRIu64 " (offset %"
                                PRIu64 ", %" PRIu64 " bytes) is inconsistent", c->path, i,
                                k->off, k->len);
        next = k->off + k->len;
    }
    if (next != c->h.plain_size)
        return st_error_set(err, ST_ERR_FORMAT, "%s: chunk table covers %" PRIu64 " of %" PRIu64
                            " bytes", c->path, next, c->h.plain_size);
    return ST_OK;
}

/* The ciphertext of a decrypted chunk is not read again: dropping its
 * pages from this mapping (the whole pages strictly inside the chunk) keeps
 * the process's resident memory at the plaintext alone instead of twice the
 * model. Advisory: on failure the pages just stay. */
static void drop_cipher_pages(const st_crypt_t *c, const st_crypt_chunk_t *k)
{
    uintptr_t page = (uintptr_t)c->page;
    uintptr_t lo = (uintptr_t)(c->file + c->data_start + k->off);
    uintptr_t hi = lo + (uintptr_t)k->len;
    lo = (lo + page - 1) & ~(page - 1);
    hi &= ~(page - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static st_status_t decrypt_chunk(st_crypt_t *c, uint64_t i, const char *what, st_error_t *err)
{
    const st_crypt_chunk_t *k = &c->chunks[i];
    uint8_t nonce[ST_CRYPT_NONCE_BYTES], aad[24], tag[ST_CRYPT_TAG_BYTES];

    if (c->done[i])
        return ST_OK;
    nonce_for(c->h.nonce, i, nonce);
    chunk_aad(i, k->off, k->len, aad);
    memcpy(tag, k->tag, sizeof(tag));
    if (!gcm(c->evp, 0, c->key, nonce, aad, sizeof(aad), c->file + c->data_start + k->off,
                      c->plain + k->off, k->len, tag)) {
        /* Unauthenticated plaintext must not survive for anyone to use. */
        wipe(c->plain + k->off, (size_t)k->len);
        return st_error_set(err, ST_ERR_AUTH, "%s: chunk %" PRIu64 " (%s) failed authentication "
                            "(tampered or corrupt file)", c->path, i, what);
    }
    c->done[i] = 1;
    c->n_done++;
    c->bytes_done += k->len;
    drop_cipher_pages(c, k);
    return ST_OK;
}

st_status_t st_crypt_open(const char *path, const uint8_t key[ST_CRYPT_KEY_BYTES], int lock,
                          st_crypt_t **out, st_error_t *err)
{
    uint8_t hdr[ST_CRYPT_HDR_BYTES];
    st_crypt_t *c;
    st_status_t s;
    void *m;

    if (!path || !key || !out)
        return st_error_set(err, ST_ERR_INVALID, "st_crypt_open: NULL argument");
    c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(c->key, key, ST_CRYPT_KEY_BYTES);
    c->page = sysconf(_SC_PAGESIZE);
    if (c->page <= 0)
        c->page = 4096;
    if ((s = map_input(c, err)) != ST_OK)
        goto err_close;
    memcpy(hdr, c->file, sizeof(hdr));
    hdr_unpack(hdr, &c->h);
    if ((s = check_header(c, err)) != ST_OK)
        goto err_close;
    if (!(c->evp = EVP_CIPHER_CTX_new())) {
        s = st_error_set(err, ST_ERR_NOMEM, "%s: cannot create a cipher context", path);
        goto err_close;
    }
    if (!kcv_pass(c->evp, c->key, c->h.nonce, c->h.kcv, 1)) {
        s = st_error_set(err, ST_ERR_AUTH, "%s: wrong key (key check failed)", path);
        goto err_close;
    }
    if (!table_pass(c->evp, c->key, hdr, c->file + ST_CRYPT_HDR_BYTES,
                            c->h.n_chunks * ST_CRYPT_ENTRY_BYTES, c->h.table_tag, 1)) {
        s = st_error_set(err, ST_ERR_AUTH, "%s: header or chunk table failed authentication "
                         "(tampered or corrupt file)", path);
        goto err_close;
    }
    if ((s = read_table(c, err)) != ST_OK)
        goto err_close;
    m = mmap(NULL, (size_t)c->h.plain_size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        s = st_error_set(err, ST_ERR_NOMEM, "%s: cannot map %" PRIu64 " bytes for the "
                         "plaintext: %s", path, c->h.plain_size, strerror(errno));
        goto err_close;
    }
    c->plain = m;
    /* Advisory: keeps the plaintext out of core dumps where supported, and
     * asks for huge pages: faulting 4 KiB pages one by one cost more than
     * the AES itself when the whole model is decrypted. */
    (void)madvise(c->plain, (size_t)c->h.plain_size, MADV_DONTDUMP);
    (void)madvise(c->plain, (size_t)c->h.plain_size, MADV_HUGEPAGE);
    if (lock) {
        if (mlock(c->plain, (size_t)c->h.plain_size) != 0) {
            s = st_error_set(err, ST_ERR_NOMEM, "%s: cannot mlock %" PRIu64 " bytes: %s (raise "
                             "RLIMIT_MEMLOCK or load without locking)", path, c->h.plain_size,
                             strerror(errno));
            goto err_close;
        }
        c->locked = 1;
    }
    if ((s = decrypt_chunk(c, 0, "GGUF header and metadata", err)) != ST_OK)
        goto err_close;
    *out = c;
    return ST_OK;

err_close:
    st_crypt_close(c);
    return s;
}

void st_crypt_close(st_crypt_t *c)
{
    if (!c)
        return;
    if (c->plain) {
        /* Only decrypted chunks hold plaintext; wiping the rest would fault
         * in pages a partial load never used. */
        for (uint64_t i = 0; i < c->h.n_chunks; i++)
            if (c->done[i])
                wipe(c->plain + c->chunks[i].off, (size_t)c->chunks[i].len);
        if (c->locked)
            munlock(c->plain, (size_t)c->h.plain_size);
        munmap(c->plain, (size_t)c->h.plain_size);
    }
    if (c->evp)
        EVP_CIPHER_CTX_free(c->evp);
    if (c->file)
        munmap((void *)c->file, (size_t)c->file_size);
    wipe(c->key, sizeof(c->key));
    free(c->chunks);
    free(c->done);
    free(c->path);
    free(c);
}

const uint8_t *st_crypt_plain(const st_crypt_t *c)      { return c->plain; }
uint64_t       st_crypt_plain_size(const st_crypt_t *c) { return c->h.plain_size; }

st_status_t st_crypt_decrypt_range(st_crypt_t *c, uint64_t off, uint64_t len, const char *what,
                                   st_error_t *err)
{
    uint64_t lo = 0, hi, end;
    char label[160];
    st_status_t s;

    if (!c || st_add_overflow_u64(off, len, &end) || end > c->h.plain_size)
        return st_error_set(err, ST_ERR_RANGE, "st_crypt_decrypt_range: bad range");
    if (len == 0)
        return ST_OK;
    /* First chunk whose end is past off: chunks are contiguous and sorted. */
    hi = c->h.n_chunks;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (c->chunks[mid].off + c->chunks[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    snprintf(label, sizeof(label), "tensor '%s'", what ? what : "?");
    for (uint64_t i = lo; i < c->h.n_chunks && c->chunks[i].off < end; i++)
        if ((s = decrypt_chunk(c, i, label, err)) != ST_OK)
            return s;
    return ST_OK;
}

st_status_t st_crypt_decrypt_all(st_crypt_t *c, st_error_t *err)
{
    char label[64];
    st_status_t s;

    for (uint64_t i = 0; i < c->h.n_chunks; i++) {
        snprintf(label, sizeof(label), "plaintext offset %" PRIu64, c->chunks[i].off);
        if ((s = decrypt_chunk(c, i, label, err)) != ST_OK)
            return s;
    }
    return ST_OK;
}

void st_crypt_stats(const st_crypt_t *c, uint64_t *n_chunks, uint64_t *n_done,
                    uint64_t *bytes_done)
{
    if (n_chunks) *n_chunks = c->h.n_chunks;
    if (n_done) *n_done = c->n_done;
    if (bytes_done) *bytes_done = c->bytes_done;
}

/* ---- writer -------------------------------------------------------------- */

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Chunk boundaries: chunk 0 is [0, meta); then the spans between sorted,
 * distinct tensor starts (each span: one tensor and its padding) are cut
 * into pieces of at most chunk_size. With table == NULL only counts. */
static uint64_t plan_chunks(const uint64_t *starts, uint64_t n_starts, uint64_t meta,
                            uint64_t size, uint32_t chunk_size, st_crypt_chunk_t *table)
{
    uint64_t n = 0;
    if (table)
        table[0] = (st_crypt_chunk_t){.off = 0, .len = meta};
    n = 1;
    for (uint64_t i = 0; i < n_starts; i++) {
        uint64_t a = starts[i], b = i + 1 < n_starts ? starts[i + 1] : size;
        for (uint64_t o = a; o < b; o += chunk_size, n++)
            if (table)
                table[n] = (st_crypt_chunk_t){.off = o, .len = ST_MIN((uint64_t)chunk_size, b - o)};
    }
    return n;
}

static st_status_t pwrite_all(int fd, const void *p, uint64_t n, uint64_t off, const char *path,
                              st_error_t *err)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t r = pwrite(fd, q, (size_t)ST_MIN(n, (uint64_t)1 << 30), (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return st_error_set(err, ST_ERR_IO, "%s: write failed: %s", path,
                                r < 0 ? strerror(errno) : "no progress");
        q += r;
        n -= (uint64_t)r;
        off += (uint64_t)r;
    }
    return ST_OK;
}

st_status_t st_crypt_encrypt_file(const char *in, const char *out,
                                  const uint8_t key[ST_CRYPT_KEY_BYTES], uint32_t chunk_size,
                                  st_error_t *err)
{
    st_crypt_hdr_t h = {.version = ST_CRYPT_VERSION};
    uint8_t hdr[ST_CRYPT_HDR_BYTES], *table = NULL, *buf = NULL;
    st_crypt_chunk_t *chunks = NULL;
    uint64_t *starts = NULL, n_starts = 0, data_start, buf_len;
    EVP_CIPHER_CTX *evp = NULL;
    struct stat si, so;
    st_gguf_t *g = NULL;
    int is_enc = 0, fd = -1;
    st_status_t s;

    if (!in || !out || !key)
        return st_error_set(err, ST_ERR_INVALID, "st_crypt_encrypt_file: NULL argument");
    if (chunk_size == 0)
        chunk_size = ST_CRYPT_DEFAULT_CHUNK;
    if (chunk_size < ST_CRYPT_MIN_CHUNK || chunk_size > ST_CRYPT_MAX_CHUNK)
        return st_error_set(err, ST_ERR_RANGE, "chunk size %" PRIu32 " outside %u..%u",
                            chunk_size, ST_CRYPT_MIN_CHUNK, ST_CRYPT_MAX_CHUNK);
    if ((s = st_crypt_probe(in, &is_enc, err)) != ST_OK)
        return s;
    if (is_enc)
        return st_error_set(err, ST_ERR_INVALID, "%s: already an encrypted model", in);
    if ((s = st_gguf_open(in, &g, err)) != ST_OK)
        return s;

    h.plain_size = st_gguf_file_size(g);
    h.meta_size = ST_MIN(st_gguf_data_offset(g), h.plain_size);
    h.chunk_size = chunk_size;
    starts = malloc((st_gguf_n_tensors(g) + 1) * sizeof(*starts));
    if (!starts) {
        s = st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", in);
        goto out;
    }
    /* The data section's start too, so bytes before the first tensor (if
     * any) form a span of their own. */
    if (h.meta_size < h.plain_size)
        starts[n_starts++] = h.meta_size;
    for (uint64_t i = 0; i < st_gguf_n_tensors(g); i++)
        starts[n_starts++] = st_gguf_tensor(g, i)->file_offset;
    qsort(starts, (size_t)n_starts, sizeof(*starts), u64_cmp);
    {
        uint64_t k = 0;
        for (uint64_t i = 0; i < n_starts; i++)
            if (k == 0 || starts[i] != starts[k - 1])
                starts[k++] = starts[i];
        n_starts = k;
    }
    h.n_chunks = plan_chunks(starts, n_starts, h.meta_size, h.plain_size, chunk_size, NULL);
    chunks = calloc((size_t)h.n_chunks, sizeof(*chunks));
    table = calloc((size_t)h.n_chunks, ST_CRYPT_ENTRY_BYTES);
    buf_len = ST_MAX(h.meta_size, (uint64_t)chunk_size);
    buf = malloc((size_t)buf_len + 16);
    evp = EVP_CIPHER_CTX_new();
    if (!chunks || !table || !buf || !evp) {
        s = st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", in);
        goto out;
    }
    plan_chunks(starts, n_starts, h.meta_size, h.plain_size, chunk_size, chunks);
    if ((s = crypt_random(h.nonce, sizeof(h.nonce), err)) != ST_OK)
        goto out;

    /* No O_TRUNC: when OUT is another name for IN, truncating would destroy
     * the input; compare the inodes first, then truncate. */
    fd = open(out, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        s = st_error_set(err, ST_ERR_IO, "%s: cannot create: %s", out, strerror(errno));
        goto out;
    }
    if (fstat(fd, &so) != 0 || stat(in, &si) != 0 ||
        (si.st_dev == so.st_dev && si.st_ino == so.st_ino)) {
        s = st_error_set(err, ST_ERR_INVALID, "%s: output is the input file (or cannot be "
                         "checked)", out);
        close(fd);
        fd = -1;
        goto out;
    }
    if (ftruncate(fd, 0) != 0) {
        s = st_error_set(err, ST_ERR_IO, "%s: cannot truncate: %s", out, strerror(errno));
        goto out;
    }
    data_start = ST_CRYPT_HDR_BYTES + h.n_chunks * ST_CRYPT_ENTRY_BYTES;
    for (uint64_t i = 0; i < h.n_chunks; i++) {
        st_crypt_chunk_t *k = &chunks[i];
        uint8_t nonce[ST_CRYPT_NONCE_BYTES], aad[24];
        const uint8_t *src = (const uint8_t *)st_gguf_base(g) + k->off;

        nonce_for(h.nonce, i, nonce);
        chunk_aad(i, k->off, k->len, aad);
        if (!gcm(evp, 1, key, nonce, aad, sizeof(aad), src, buf, k->len, k->tag)) {
            s = st_error_set(err, ST_ERR_BACKEND, "%s: AES-GCM encryption failed", in);
            goto out;
        }
        if ((s = pwrite_all(fd, buf, k->len, data_start + k->off, out, err)) != ST_OK)
            goto out;
        memcpy(table + i * ST_CRYPT_ENTRY_BYTES, &k->off, 8);
        memcpy(table + i * ST_CRYPT_ENTRY_BYTES + 8, &k->len, 8);
        memcpy(table + i * ST_CRYPT_ENTRY_BYTES + 16, k->tag, ST_CRYPT_TAG_BYTES);
    }
    hdr_pack(&h, hdr);
    if (!kcv_pass(evp, key, h.nonce, h.kcv, 0)) {
        s = st_error_set(err, ST_ERR_BACKEND, "AES-GCM key check failed to compute");
        goto out;
    }
    if (!table_pass(evp, key, hdr, table, h.n_chunks * ST_CRYPT_ENTRY_BYTES, h.table_tag, 0)) {
        s = st_error_set(err, ST_ERR_BACKEND, "AES-GCM table tag failed to compute");
        goto out;
    }
    hdr_pack(&h, hdr);
    if ((s = pwrite_all(fd, hdr, sizeof(hdr), 0, out, err)) != ST_OK ||
        (s = pwrite_all(fd, table, h.n_chunks * ST_CRYPT_ENTRY_BYTES, ST_CRYPT_HDR_BYTES, out,
                        err)) != ST_OK)
        goto out;
    if (fsync(fd) != 0) {
        s = st_error_set(err, ST_ERR_IO, "%s: fsync: %s", out, strerror(errno));
        goto out;
    }
out:
    if (fd >= 0) {
        close(fd);
        if (s != ST_OK)
            unlink(out);
    }
    if (buf)
        wipe(buf, (size_t)buf_len);
    EVP_CIPHER_CTX_free(evp);
    free(buf);
    free(table);
    free(chunks);
    free(starts);
    st_gguf_close(g);
    return s;
}

#else /* !ST_MODEL_HAVE_CRYPTO */

#define NO_SSL(path) st_error_set(err, ST_ERR_UNSUPPORTED, "%s: encrypted models need AES-GCM: " \
                                  "strata was built without OpenSSL (libcrypto)", path)

struct st_crypt { int unused; };

st_status_t st_crypt_open(const char *path, const uint8_t key[ST_CRYPT_KEY_BYTES], int lock,
                          st_crypt_t **out, st_error_t *err)
{
    return NO_SSL(path ? path : "model");
}
void st_crypt_close(st_crypt_t *c) { free(c); }
const uint8_t *st_crypt_plain(const st_crypt_t *c)      { return NULL; }
uint64_t       st_crypt_plain_size(const st_crypt_t *c) { return 0; }
st_status_t st_crypt_decrypt_range(st_crypt_t *c, uint64_t off, uint64_t len, const char *what,
                                   st_error_t *err)
{
    return NO_SSL("model");
}
st_status_t st_crypt_decrypt_all(st_crypt_t *c, st_error_t *err) { return NO_SSL("model"); }
st_status_t st_crypt_encrypt_file(const char *in, const char *out,
                                  const uint8_t key[ST_CRYPT_KEY_BYTES], uint32_t chunk_size,
                                  st_error_t *err)
{
    return NO_SSL(in ? in : "model");
}
void st_crypt_stats(const st_crypt_t *c, uint64_t *n_chunks, uint64_t *n_done,
                    uint64_t *bytes_done)
{
    if (n_chunks) *n_chunks = 0;
    if (n_done) *n_done = 0;
    if (bytes_done) *bytes_done = 0;
}

#endif /* ST_MODEL_HAVE_CRYPTO */
