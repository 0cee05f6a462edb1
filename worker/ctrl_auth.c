/*
 * ctrl_auth.c - the cluster secret, HMAC-SHA256 proofs and SHA-256 of
 * tensors, on OpenSSL's libcrypto.
 *
 * Why challenge-response and not the secret itself on the wire: the control
 * plane may run without TLS; each side proves knowledge of the secret over
 * fresh nonces from both ends, so a recorded session cannot be replayed and
 * a fake coordinator learns nothing it could reuse.
 */
#include "st_ctrl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

st_status_t st_ctrl_secret_load(const char *path, uint8_t *secret, size_t cap, size_t *len,
                                st_error_t *err)
{
    size_t n = 0;

    if (path) {
        FILE *f = fopen(path, "rb");
        if (!f)
            return st_error_set(err, ST_ERR_IO, "secret file %s: %s", path, strerror(errno));
        n = fread(secret, 1, cap, f);
        if (!feof(f)) {
            fclose(f);
            return st_error_set(err, ST_ERR_RANGE, "secret file %s: longer than %zu bytes",
                                path, cap - 1);
        }
        fclose(f);
    } else {
        const char *env = getenv("STRATA_CLUSTER_SECRET");
        if (!env || !*env)
            return st_error_set(err, ST_ERR_AUTH, "no cluster secret: give --secret-file or "
                                "set STRATA_CLUSTER_SECRET");
        n = strlen(env);
        if (n >= cap)
            return st_error_set(err, ST_ERR_RANGE, "STRATA_CLUSTER_SECRET: longer than %zu "
                                "bytes", cap - 1);
        memcpy(secret, env, n);
    }
    /* Files written by `echo` or editors end with a newline that is not
     * part of the secret. */
    while (n > 0 && (secret[n - 1] == '\n' || secret[n - 1] == '\r'))
        n--;
    if (n < ST_CTRL_SECRET_MIN)
        return st_error_set(err, ST_ERR_AUTH, "cluster secret from %s is %zu bytes; at least "
                            "%d are needed", path ? path : "STRATA_CLUSTER_SECRET", n,
                            ST_CTRL_SECRET_MIN);
    *len = n;
    return ST_OK;
}

st_status_t st_ctrl_random(uint8_t *buf, size_t n)
{
    return RAND_bytes(buf, (int)n) == 1 ? ST_OK : ST_ERR_BACKEND;
}

void st_ctrl_proof(const uint8_t *secret, size_t secret_len, const char *label,
                   const uint8_t a[ST_CTRL_NONCE], const uint8_t b[ST_CTRL_NONCE],
                   const char *extra, uint8_t out[ST_CTRL_MAC])
{
    uint8_t msg[64 + 2 * ST_CTRL_NONCE + 256];
    size_t n = 0, ll = strnlen(label, 64), el = extra ? strnlen(extra, 255) : 0;
    unsigned int olen = ST_CTRL_MAC;

    memcpy(msg + n, label, ll);
    n += ll;
    msg[n++] = 0;
    memcpy(msg + n, a, ST_CTRL_NONCE);
    n += ST_CTRL_NONCE;
    memcpy(msg + n, b, ST_CTRL_NONCE);
    n += ST_CTRL_NONCE;
    if (el) {
        memcpy(msg + n, extra, el);
        n += el;
    }
    if (!HMAC(EVP_sha256(), secret, (int)secret_len, msg, n, out, &olen))
        memset(out, 0, ST_CTRL_MAC);   /* never equals a real proof check below */
}

void st_ctrl_data_key(const uint8_t *secret, size_t secret_len, uint8_t out[ST_CTRL_MAC])
{
    static const uint8_t zero[ST_CTRL_NONCE];
    st_ctrl_proof(secret, secret_len, "strata-data-plane", zero, zero, NULL, out);
}

int st_ctrl_mac_equal(const uint8_t a[ST_CTRL_MAC], const uint8_t b[ST_CTRL_MAC])
{
    static const uint8_t zero[ST_CTRL_MAC];
    if (CRYPTO_memcmp(a, zero, ST_CTRL_MAC) == 0)
        return 0;
    return CRYPTO_memcmp(a, b, ST_CTRL_MAC) == 0;
}

void st_ctrl_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int olen = 32;
    if (EVP_Digest(data, len, out, &olen, EVP_sha256(), NULL) != 1)
        memset(out, 0, 32);
}

st_status_t st_ctrl_sha256_file(int fd, uint64_t offset, uint64_t len, uint8_t out[32])
{
    enum { CHUNK = 1 << 20 };
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *buf = malloc(CHUNK);
    unsigned int olen = 32;
    st_status_t st = ST_OK;

    if (!ctx || !buf) {
        st = ST_ERR_NOMEM;
        goto out;
    }
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = ST_ERR_BACKEND;
        goto out;
    }
    while (len > 0) {
        size_t want = len < CHUNK ? (size_t)len : CHUNK;
        ssize_t n = pread(fd, buf, want, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            st = ST_ERR_IO;
            goto out;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        offset += (uint64_t)n;
        len -= (uint64_t)n;
    }
    if (EVP_DigestFinal_ex(ctx, out, &olen) != 1)
        st = ST_ERR_BACKEND;
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    return st;
}
