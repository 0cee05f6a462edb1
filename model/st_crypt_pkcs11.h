/*
 * st_crypt_pkcs11.h - the model key kept wrapped by a PKCS#11 token (HSM).
 *
 * Envelope encryption: the token holds an AES-256 wrapping key that never
 * leaves it; the model's 32-byte data key is stored AES-256-GCM-encrypted
 * under it in a small file (x-wrapped-key=), and the token decrypts it into
 * strata's memory at load. A key "path" starting with "pkcs11:" is such a
 * URI (RFC 7512), so st_crypt_key_load takes either, and every command that
 * passes --key-file down (local workers included) passes the URI unchanged:
 *
 *   pkcs11:token=strata;object=strata-wrap?module-path=/usr/lib/softhsm/libsofthsm2.so
 *          &pin-source=file:/etc/strata/pin&x-wrapped-key=/models/m.key.wrapped
 *
 * pin-value is refused: the URI is forwarded on the argv of local worker
 * processes, and a PIN there is readable by every user of the host.
 * Details and threat model: docs/ENCRYPTION.md, "Keys in an HSM (PKCS#11)".
 */
#ifndef ST_CRYPT_PKCS11_H
#define ST_CRYPT_PKCS11_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_status.h"

#define ST_PKCS11_PATH_MAX 1024u
#define ST_PKCS11_WRAPPED_BYTES 68u   /* magic 8 + IV 12 + ciphertext 32 + tag 16 */

typedef struct {
    char    token[33];                    /* token label (CK_TOKEN_INFO.label, unpadded) */
    char    object[256];                  /* key label (CKA_LABEL); "" with id only */
    uint8_t id[64];                       /* CKA_ID, percent-decoded */
    size_t  id_len;                       /* 0: no id= */
    char    module_path[ST_PKCS11_PATH_MAX];
    char    pin_source[ST_PKCS11_PATH_MAX];   /* file path ("file:" dropped); "" none */
    char    wrapped_key[ST_PKCS11_PATH_MAX];  /* x-wrapped-key= */
} st_pkcs11_uri_t;

/* 1 when s is a PKCS#11 URI ("pkcs11:" prefix). */
int st_pkcs11_is_uri(const char *s);

/* Parses a PKCS#11 URI: path attributes token, object, id; query attributes
 * module-path, pin-source, x-wrapped-key. Values are percent-decoded,
 * unknown attributes ignored. A missing token, object (or id), module-path
 * or x-wrapped-key is an error naming it; pin-value is refused. Pure: reads
 * no file. */
st_status_t st_pkcs11_uri_parse(const char *uri, st_pkcs11_uri_t *out, st_error_t *err);

/* Reads a PIN file: its content with one trailing newline (LF or CRLF)
 * stripped. An empty PIN or one longer than size - 1 is an error. */
st_status_t st_pkcs11_pin_read(const char *path, char *pin, size_t size, st_error_t *err);

/* Unwraps the data key named by the URI inside the token. */
st_status_t st_pkcs11_key_unwrap(const char *uri, uint8_t key[32], st_error_t *err);

/* Wraps key under the token's key and writes the URI's x-wrapped-key file
 * (O_EXCL, mode 0600; an existing file is never overwritten). */
st_status_t st_pkcs11_key_wrap(const char *uri, const uint8_t key[32], st_error_t *err);

#endif /* ST_CRYPT_PKCS11_H */
