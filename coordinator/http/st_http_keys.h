/*
 * st_http_keys.h - API keys and roles of the front door.
 *
 *   char key[ST_HTTP_KEY_MAX];
 *   st_http_keys_add("keys.txt", "alice", ST_HTTP_ROLE_USER, key, sizeof(key), &err);
 *   // show `key` once: only its SHA-256 is stored
 *   st_http_keys_t *k; st_http_keys_load("keys.txt", &k, &err);
 *   const st_http_key_t *who = st_http_keys_check(k, presented, strlen(presented));
 *
 * The file has one line per key:
 *   `id role sha256hex created_unix [revoked] [allow=CIDR,...] [totp=HEX]`,
 * '#' starts a comment. allow= binds the key to client addresses (IPv4 and
 * IPv6 CIDRs); totp= is the RFC 6238 secret of an admin key's second factor
 * (kept recoverable: the server must compute codes from it, which is why the
 * file is 0600 and the key itself is stored only as a hash). It is rewritten atomically (temporary file, fsync,
 * rename) with mode 0600. Keys are `sk-strata-` and 64 hex digits (32 bytes
 * from RAND_bytes); lookups hash the presented key and compare against every
 * entry with CRYPTO_memcmp, so timing says nothing about which key matched.
 */
#ifndef ST_HTTP_KEYS_H
#define ST_HTTP_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "st_error.h"
#include "st_status.h"

#define ST_HTTP_KEY_PREFIX "sk-strata-"
#define ST_HTTP_KEY_MAX    80   /* prefix + 64 hex + NUL fits */
#define ST_HTTP_KEY_ID_MAX 64

/* The access matrix. Bit values so that routes can list the roles they take. */
typedef enum st_http_role {
    ST_HTTP_ROLE_NONE      = 0,
    ST_HTTP_ROLE_ADMIN     = 1,   /* everything */
    ST_HTTP_ROLE_DEVELOPER = 2,   /* models, cluster status, metrics, generation */
    ST_HTTP_ROLE_USER      = 4,   /* generation only, rate limited */
    ST_HTTP_ROLE_AUDITOR   = 8    /* the audit log only */
} st_http_role_t;

#define ST_HTTP_KEY_ALLOW_MAX 16
#define ST_HTTP_TOTP_BYTES    20   /* RFC 4226's recommended 160-bit secret */

typedef struct st_http_cidr {
    uint8_t v6;                    /* 0: IPv4 (addr[0..3]) */
    uint8_t bits;
    uint8_t addr[16];
} st_http_cidr_t;

typedef struct st_http_key {
    char           id[ST_HTTP_KEY_ID_MAX];
    st_http_role_t role;
    uint8_t        hash[32];
    int64_t        created;
    int            revoked;
    uint32_t       n_allow;        /* 0: any address */
    st_http_cidr_t allow[ST_HTTP_KEY_ALLOW_MAX];
    uint32_t       totp_len;       /* 0: no second factor enrolled */
    uint8_t        totp[ST_HTTP_TOTP_BYTES];
} st_http_key_t;

/* What `keys add` may bind to a new key. */
typedef struct st_http_key_opts {
    const char *allow;             /* "10.0.0.0/8,fd00::/8"; NULL: any address */
    int         totp;              /* enroll a TOTP second factor */
} st_http_key_opts_t;

typedef enum st_http_otp {
    ST_HTTP_OTP_OK = 0,
    ST_HTTP_OTP_MISSING,           /* no code presented */
    ST_HTTP_OTP_BAD,               /* wrong or expired code */
    ST_HTTP_OTP_NOT_ENROLLED,      /* the key has no second factor */
    ST_HTTP_OTP_UNAVAILABLE        /* built without liboath */
} st_http_otp_t;

typedef struct st_http_keys st_http_keys_t;

const char *st_http_role_name(st_http_role_t r);
st_status_t st_http_role_parse(const char *s, st_http_role_t *out);

st_status_t st_http_keys_load(const char *path, st_http_keys_t **out, st_error_t *err);
void        st_http_keys_free(st_http_keys_t *k);
size_t      st_http_keys_count(const st_http_keys_t *k);
const st_http_key_t *st_http_keys_at(const st_http_keys_t *k, size_t i);
/* The live (not revoked) key matching `key`, or NULL. */
const st_http_key_t *st_http_keys_check(const st_http_keys_t *k, const char *key, size_t len);

/* Creates a key for a new id (ST_ERR_INVALID if the id exists or has
 * characters outside [A-Za-z0-9._@-]); writes the key, once, to key_out. */
st_status_t st_http_keys_add(const char *path, const char *id, st_http_role_t role,
                             char *key_out, size_t cap, st_error_t *err);
/* The same with an address allowlist and/or a TOTP secret. With o->totp,
 * uri_out gets the otpauth:// URI (for an authenticator app), shown once. */
st_status_t st_http_keys_add_opts(const char *path, const char *id, st_http_role_t role,
                                  const st_http_key_opts_t *o, char *key_out, size_t cap,
                                  char *uri_out, size_t uri_cap, st_error_t *err);
/* Parses "CIDR[,CIDR...]" (a bare address is /32 or /128). */
st_status_t st_http_cidr_parse_list(const char *s, st_http_cidr_t *out, uint32_t cap,
                                    uint32_t *n, st_error_t *err);
/* Formats the list back, comma-separated; returns 0 when it did not fit. */
int         st_http_cidr_format_list(const st_http_cidr_t *v, uint32_t n, char *buf, size_t cap);
/* 1 when the key has no allowlist or ip (text, IPv4, IPv6 or v4-mapped) is in it. */
int         st_http_key_allows(const st_http_key_t *k, const char *ip);
/* The key's second factor against a 6-digit RFC 6238 code (30 s steps, the
 * step before and after accepted for clock skew). */
st_http_otp_t st_http_key_otp(const st_http_key_t *k, const char *otp, int64_t now);
/* Marks a key revoked (kept in the file for the audit trail). */
st_status_t st_http_keys_revoke(const char *path, const char *id, st_error_t *err);
/* One line per key: id, role, created (UTC), state; never the hash. */
st_status_t st_http_keys_list(const char *path, FILE *out, st_error_t *err);

/* Internal (key_access.c, for keys_add_opts): draws k's TOTP secret and
 * writes its otpauth:// URI. ST_ERR_UNSUPPORTED without liboath. */
st_status_t st_http_totp_enroll(st_http_key_t *k, char *uri, size_t cap, st_error_t *err);

#endif /* ST_HTTP_KEYS_H */
