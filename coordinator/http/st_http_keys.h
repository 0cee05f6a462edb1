/*
 * st_http_keys.h - API keys and roles of the front door.
 *
 *   char key[ST_HTTP_KEY_MAX];
 *   st_http_keys_add("keys.txt", "alice", ST_HTTP_ROLE_USER, key, sizeof(key), &err);
 *   // show `key` once: only its SHA-256 is stored
 *   st_http_keys_t *k; st_http_keys_load("keys.txt", &k, &err);
 *   const st_http_key_t *who = st_http_keys_check(k, presented, strlen(presented));
 *
 * The file has one line per key: `id role sha256hex created_unix [revoked]`,
 * '#' starts a comment. It is rewritten atomically (temporary file, fsync,
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

typedef struct st_http_key {
    char           id[ST_HTTP_KEY_ID_MAX];
    st_http_role_t role;
    uint8_t        hash[32];
    int64_t        created;
    int            revoked;
} st_http_key_t;

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
/* Marks a key revoked (kept in the file for the audit trail). */
st_status_t st_http_keys_revoke(const char *path, const char *id, st_error_t *err);
/* One line per key: id, role, created (UTC), state; never the hash. */
st_status_t st_http_keys_list(const char *path, FILE *out, st_error_t *err);

#endif /* ST_HTTP_KEYS_H */
