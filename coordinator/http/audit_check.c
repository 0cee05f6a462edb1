/*
 * audit_check.c - checks an audit log's hash chain and an export's
 * watermarks, one line at a time (st_http_audit.h). Everything here reads
 * files that may have been tampered with: every field is checked for type
 * and form before it is used, and the first inconsistency is reported with
 * what it most likely means.
 */
#include "http_internal.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

struct st_http_audit_check {
    uint8_t  key[ST_HTTP_AUDIT_KEY_MAX];
    size_t   key_len;
    int      have_key;
    int      require_watermark;
    uint64_t seq;                  /* of the last line, 0 before the first */
    char     prev[65];             /* SHA-256 of the last (logged) line */
    st_http_audit_summary_t sum;
    st_http_buf_t scratch;
};

st_status_t st_http_audit_check_new(const uint8_t *key, size_t key_len, int require_watermark,
                                    st_http_audit_check_t **out)
{
    st_http_audit_check_t *c = calloc(1, sizeof(*c));
    if (!c)
        return ST_ERR_NOMEM;
    if (key) {
        if (key_len > sizeof(c->key)) {
            free(c);
            return ST_ERR_INVALID;
        }
        memcpy(c->key, key, key_len);
        c->key_len = key_len;
        c->have_key = 1;
    }
    c->require_watermark = require_watermark;
    c->sum.watermarks_checked = c->have_key;
    *out = c;
    return ST_OK;
}

void st_http_audit_check_free(st_http_audit_check_t *c)
{
    if (!c)
        return;
    OPENSSL_cleanse(c->key, sizeof(c->key));
    st_http_buf_free(&c->scratch);
    free(c);
}

void st_http_audit_check_summary(const st_http_audit_check_t *c, st_http_audit_summary_t *out)
{
    *out = c->sum;
    if (!c->sum.watermarked)
        out->watermarks_checked = 0;
}

static int is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* An export line is a logged line with `,"strata.export.reader_id":..,
 * "strata.export.hmac_sha256":".."}` in place of its closing brace: the
 * suffix is rebuilt from the parsed values, byte for byte as the server
 * writes it, and must be exactly the line's end. *orig_len is then the
 * length of the logged line without its '}' (the caller adds it back). */
static st_status_t strip_watermark(st_http_audit_check_t *c, const char *line, size_t len,
                                   const char *reader, const char *mac, size_t *orig_len,
                                   st_error_t *err)
{
    st_http_buf_t *b = &c->scratch;
    b->len = 0;
    b->oom = 0;
    st_http_buf_puts(b, ",\"strata.export.reader_id\":");
    st_http_buf_json_str(b, reader, strlen(reader));
    st_http_buf_printf(b, ",\"strata.export.hmac_sha256\":\"%s\"}", mac);
    if (b->oom)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    if (len < b->len + 1 || memcmp(line + len - b->len, b->p, b->len) != 0)
        return st_error_set(err, ST_ERR_FORMAT, "the watermark fields are not the line's last "
                            "two keys as strata writes them: the line was edited");
    *orig_len = len - b->len;
    return ST_OK;
}

st_status_t st_http_audit_check_line(st_http_audit_check_t *c, const char *line, size_t len,
                                     st_error_t *err)
{
    json_error_t je;
    json_t *o = NULL, *seq_j, *prev_j, *reader_j, *mac_j;
    const char *prev;
    char sha[65], *orig = NULL;
    size_t orig_len = len;
    uint64_t seq;
    st_status_t st = ST_OK;

    if (len == 0)
        return st_error_set(err, ST_ERR_FORMAT, "empty line (lines are never empty: one was "
                            "inserted or a line was cut)");
    o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        st = st_error_set(err, ST_ERR_FORMAT, "not a JSON object (%s at column %d): edited, or "
                          "cut off by a failed write", o ? "not an object" : je.text,
                          o ? 0 : je.column);
        goto out;
    }
    seq_j = json_object_get(o, "strata.audit.seq");
    prev_j = json_object_get(o, "strata.audit.prev_sha256");
    if (!json_is_integer(seq_j) || json_integer_value(seq_j) < 1 || !json_is_string(prev_j) ||
        !is_hex64(json_string_value(prev_j))) {
        st = st_error_set(err, ST_ERR_FORMAT, "no valid strata.audit.seq and "
                          "strata.audit.prev_sha256: not a chained strata audit line");
        goto out;
    }
    seq = (uint64_t)json_integer_value(seq_j);
    prev = json_string_value(prev_j);

    reader_j = json_object_get(o, "strata.export.reader_id");
    mac_j = json_object_get(o, "strata.export.hmac_sha256");
    if (reader_j || mac_j) {
        const char *reader = json_string_value(reader_j), *mac = json_string_value(mac_j);
        if (!reader || !mac || !is_hex64(mac) || strlen(reader) >= ST_HTTP_AUDIT_READER_MAX) {
            st = st_error_set(err, ST_ERR_FORMAT, "a malformed export watermark");
            goto out;
        }
        if ((st = strip_watermark(c, line, len, reader, mac, &orig_len, err)) != ST_OK)
            goto out;
        if (!(orig = malloc(orig_len + 1))) {
            st = st_error_set(err, ST_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(orig, line, orig_len);
        orig[orig_len++] = '}';
        if (c->have_key) {
            char want[65];
            st_http_audit_mac(c->key, c->key_len, orig, orig_len, reader, want);
            if (CRYPTO_memcmp(want, mac, 64) != 0) {
                st = st_error_set(err, ST_ERR_AUTH, "the watermark for reader '%s' does not "
                                  "match: the line or the reader id was changed, or the key is "
                                  "not the server's", reader);
                goto out;
            }
        }
        if (!c->sum.watermarked)
            snprintf(c->sum.reader, sizeof(c->sum.reader), "%s", reader);
        else if (strcmp(c->sum.reader, reader) != 0)
            c->sum.several_readers = 1;
        c->sum.watermarked++;
    } else if (c->require_watermark) {
        st = st_error_set(err, ST_ERR_AUTH, "no export watermark (strata.export.reader_id, "
                          "strata.export.hmac_sha256), and --hmac-key checks an export");
        goto out;
    }

    if (c->sum.lines == 0) {
        /* The first line anchors the check: a file can only say where its
         * chain starts, not that nothing came before (see docs/HTTP.md). */
        c->sum.first_seq = seq;
        c->sum.starts_chain = strcmp(prev, ST_HTTP_AUDIT_GENESIS) == 0;
        snprintf(c->sum.first_prev, sizeof(c->sum.first_prev), "%s", prev);
        if (c->sum.starts_chain && seq != 1) {
            st = st_error_set(err, ST_ERR_FORMAT, "seq %llu starts a chain (prev_sha256 is the "
                              "genesis value), which only seq 1 may", (unsigned long long)seq);
            goto out;
        }
    } else if (seq > c->seq + 1) {
        st = st_error_set(err, ST_ERR_FORMAT, "seq %llu follows seq %llu: %llu line(s) missing "
                          "before this one (removed, or moved: reordered)", (unsigned long long)seq,
                          (unsigned long long)c->seq, (unsigned long long)(seq - c->seq - 1));
        goto out;
    } else if (seq != c->seq + 1) {
        st = st_error_set(err, ST_ERR_FORMAT, "seq %llu follows seq %llu: lines reordered, "
                          "repeated or inserted here", (unsigned long long)seq,
                          (unsigned long long)c->seq);
        goto out;
    } else if (strcmp(prev, c->prev) != 0) {
        st = st_error_set(err, ST_ERR_AUTH, "prev_sha256 does not match the line before: that "
                          "line was edited, or this one was replaced or inserted");
        goto out;
    }
    st_http_sha256_hex(orig ? orig : line, orig_len, sha);
    memcpy(c->prev, sha, sizeof(sha));
    memcpy(c->sum.last_sha256, sha, sizeof(sha));
    c->seq = seq;
    c->sum.last_seq = seq;
    c->sum.lines++;
out:
    free(orig);
    json_decref(o);
    return st;
}
