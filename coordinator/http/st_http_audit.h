/*
 * st_http_audit.h - reading the front door's audit log back: checking its
 * hash chain and the watermarks of exports (`strata audit verify`), and the
 * HMAC key file both the server and the checker load. The format itself is
 * in docs/HTTP.md ("Audit log"); the writer is internal (http_internal.h).
 *
 *   st_http_audit_check_t *c;
 *   st_http_audit_check_new(key, key_len, key != NULL, &c);
 *   while (getline(...))                     // every line of every file, in order
 *       if (st_http_audit_check_line(c, line, len, &err) != ST_OK)
 *           -> err.msg says what is wrong with this line; stop there
 *   st_http_audit_check_summary(c, &sum);    // seq range, anchor, readers
 *   st_http_audit_check_free(c);
 *
 * Every line carries "strata.audit.seq" (1, 2, ... along the chain) and
 * "strata.audit.prev_sha256", the SHA-256 of the previous line's bytes
 * (without its newline); the first line of a chain has 64 zeros there. An
 * export from GET /admin/audit appends "strata.export.reader_id" and
 * "strata.export.hmac_sha256" = HMAC-SHA256(key, line "\n" reader_id) to
 * each line; the checker strips them to recover the logged line's bytes.
 */
#ifndef ST_HTTP_AUDIT_H
#define ST_HTTP_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_status.h"

#define ST_HTTP_AUDIT_KEY_MAX 256      /* bytes of an HMAC key */
#define ST_HTTP_AUDIT_KEY_MIN 16
#define ST_HTTP_AUDIT_READER_MAX 64    /* a key id (ST_HTTP_KEY_ID_MAX) or "anonymous" */

/* The prev_sha256 of a chain's first line. */
#define ST_HTTP_AUDIT_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

typedef struct st_http_audit_check st_http_audit_check_t;

typedef struct st_http_audit_summary {
    uint64_t lines;
    uint64_t first_seq, last_seq;
    int      starts_chain;             /* the first line's prev is the genesis value */
    char     first_prev[65];           /* what the first line chains from */
    char     last_sha256[65];          /* hash of the last line: the next one's prev */
    uint64_t watermarked;              /* lines that carry a watermark */
    int      watermarks_checked;       /* a key was given and every HMAC matched */
    char     reader[ST_HTTP_AUDIT_READER_MAX]; /* reader id of the first watermark */
    int      several_readers;          /* not all watermarks name the same reader */
} st_http_audit_summary_t;

/* A checker for one chain (a file, or files given oldest first). With a key
 * every watermark's HMAC is checked; with require_watermark each line must
 * carry one (an export). The key is copied. */
st_status_t st_http_audit_check_new(const uint8_t *key, size_t key_len, int require_watermark,
                                    st_http_audit_check_t **out);
/* One line without its newline. ST_OK when it continues the chain;
 * ST_ERR_FORMAT (not a chained audit line, a seq gap or repeat) or
 * ST_ERR_AUTH (prev_sha256 or watermark HMAC mismatch) with err naming the
 * cause. After an error the checker's state is unspecified: stop. */
st_status_t st_http_audit_check_line(st_http_audit_check_t *c, const char *line, size_t len,
                                     st_error_t *err);
void        st_http_audit_check_summary(const st_http_audit_check_t *c,
                                        st_http_audit_summary_t *out);
void        st_http_audit_check_free(st_http_audit_check_t *c);

/* Loads an HMAC key: the file's bytes, one trailing newline (or CR LF)
 * removed, at least ST_HTTP_AUDIT_KEY_MIN bytes. With create and no such
 * file, writes 32 random bytes as 64 hex digits and a newline (mode 0600,
 * O_EXCL) and sets *created. */
st_status_t st_http_audit_key_load(const char *path, int create, uint8_t key[ST_HTTP_AUDIT_KEY_MAX],
                                   size_t *key_len, int *created, st_error_t *err);

#endif /* ST_HTTP_AUDIT_H */
