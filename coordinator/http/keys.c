/*
 * keys.c - the key file of the front door (see st_http_keys.h).
 */
#include "st_http_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define KEYS_MAX 100000   /* a sanity bound on the file, not a product limit */

struct st_http_keys {
    st_http_key_t *v;
    size_t         n, cap;
};

static const struct { st_http_role_t r; const char *name; } roles[] = {
    {ST_HTTP_ROLE_ADMIN, "admin"},
    {ST_HTTP_ROLE_DEVELOPER, "developer"},
    {ST_HTTP_ROLE_USER, "user"},
    {ST_HTTP_ROLE_AUDITOR, "auditor"},
};

const char *st_http_role_name(st_http_role_t r)
{
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (roles[i].r == r)
            return roles[i].name;
    return "none";
}

st_status_t st_http_role_parse(const char *s, st_http_role_t *out)
{
    for (size_t i = 0; s && i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(roles[i].name, s) == 0) {
            *out = roles[i].r;
            return ST_OK;
        }
    return ST_ERR_INVALID;
}

static int id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= ST_HTTP_KEY_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '@'))
            return 0;
    }
    return 1;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

static st_status_t keys_push(st_http_keys_t *k, const st_http_key_t *key)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        st_http_key_t *v = realloc(k->v, cap * sizeof(*v));
        if (!v)
            return ST_ERR_NOMEM;
        k->v = v;
        k->cap = cap;
    }
    k->v[k->n++] = *key;
    return ST_OK;
}

/* Parses one line; ST_ERR_NOT_FOUND for blank/comment lines. */
static st_status_t parse_line(char *line, st_http_key_t *key)
{
    char *save = NULL, *tok[8];
    int nt = 0;
    char *p = strchr(line, '#');
    if (p)
        *p = '\0';
    for (char *t = strtok_r(line, " \t\r\n", &save); t && nt < 8; t = strtok_r(NULL, " \t\r\n", &save))
        tok[nt++] = t;
    if (nt == 0)
        return ST_ERR_NOT_FOUND;
    if (nt < 4 || nt > 7)
        return ST_ERR_FORMAT;
    memset(key, 0, sizeof(*key));
    if (!id_ok(tok[0]))
        return ST_ERR_FORMAT;
    strcpy(key->id, tok[0]);
    if (st_http_role_parse(tok[1], &key->role) != ST_OK)
        return ST_ERR_FORMAT;
    if (strlen(tok[2]) != 64)
        return ST_ERR_FORMAT;
    for (int i = 0; i < 32; i++) {
        int hi = hex_val(tok[2][2 * i]), lo = hex_val(tok[2][2 * i + 1]);
        if (hi < 0 || lo < 0)
            return ST_ERR_FORMAT;
        key->hash[i] = (uint8_t)(hi << 4 | lo);
    }
    {
        char *end;
        errno = 0;
        long long c = strtoll(tok[3], &end, 10);
        if (errno || *end || c < 0)
            return ST_ERR_FORMAT;
        key->created = c;
    }
    /* then, in any order, each at most once: revoked, allow=, totp= */
    for (int i = 4; i < nt; i++) {
        if (!strcmp(tok[i], "revoked") && !key->revoked) {
            key->revoked = 1;
        } else if (!strncmp(tok[i], "allow=", 6) && !key->n_allow) {
            if (st_http_cidr_parse_list(tok[i] + 6, key->allow, ST_HTTP_KEY_ALLOW_MAX,
                                        &key->n_allow, NULL) != ST_OK || !key->n_allow)
                return ST_ERR_FORMAT;
        } else if (!strncmp(tok[i], "totp=", 5) && !key->totp_len) {
            const char *h = tok[i] + 5;
            if (strlen(h) != 2 * ST_HTTP_TOTP_BYTES)
                return ST_ERR_FORMAT;
            for (int j = 0; j < ST_HTTP_TOTP_BYTES; j++) {
                int hi = hex_val(h[2 * j]), lo = hex_val(h[2 * j + 1]);
                if (hi < 0 || lo < 0)
                    return ST_ERR_FORMAT;
                key->totp[j] = (uint8_t)(hi << 4 | lo);
            }
            key->totp_len = ST_HTTP_TOTP_BYTES;
        } else {
            return ST_ERR_FORMAT;
        }
    }
    return ST_OK;
}

st_status_t st_http_keys_load(const char *path, st_http_keys_t **out, st_error_t *err)
{
    st_http_keys_t *k;
    FILE *f;
    char line[2048];                /* 16 IPv6 CIDRs and a secret fit */
    unsigned lineno = 0;
    st_status_t st = ST_OK;

    k = calloc(1, sizeof(*k));
    if (!k)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) {      /* a new file: no keys yet */
            *out = k;
            return ST_OK;
        }
        st = st_error_set(err, ST_ERR_IO, "%s: %s", path, strerror(errno));
        goto err_k;
    }
    while (fgets(line, sizeof(line), f)) {
        st_http_key_t key;
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            st = st_error_set(err, ST_ERR_FORMAT, "%s:%u: line too long", path, lineno);
            goto err_f;
        }
        st = parse_line(line, &key);
        if (st == ST_ERR_NOT_FOUND) {
            st = ST_OK;
            continue;
        }
        if (st != ST_OK) {
            st_error_set(err, st, "%s:%u: expected `id role sha256hex created [revoked] "
                         "[allow=CIDR,...] [totp=HEX]`", path, lineno);
            goto err_f;
        }
        for (size_t i = 0; i < k->n; i++)
            if (strcmp(k->v[i].id, key.id) == 0) {
                st = st_error_set(err, ST_ERR_FORMAT, "%s:%u: duplicate id '%s'", path,
                                  lineno, key.id);
                goto err_f;
            }
        if (k->n >= KEYS_MAX) {
            st = st_error_set(err, ST_ERR_RANGE, "%s: more than %d keys", path, KEYS_MAX);
            goto err_f;
        }
        if ((st = keys_push(k, &key)) != ST_OK) {
            st_error_set(err, st, "out of memory");
            goto err_f;
        }
    }
    if (ferror(f)) {
        st = st_error_set(err, ST_ERR_IO, "%s: read error", path);
        goto err_f;
    }
    fclose(f);
    *out = k;
    return ST_OK;

err_f:
    fclose(f);
err_k:
    st_http_keys_free(k);
    return st;
}

void st_http_keys_free(st_http_keys_t *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k->v, k->n * sizeof(*k->v));
    free(k->v);
    free(k);
}

size_t st_http_keys_count(const st_http_keys_t *k) { return k ? k->n : 0; }

const st_http_key_t *st_http_keys_at(const st_http_keys_t *k, size_t i)
{
    return k && i < k->n ? &k->v[i] : NULL;
}

const st_http_key_t *st_http_keys_check(const st_http_keys_t *k, const char *key, size_t len)
{
    uint8_t h[32];
    const st_http_key_t *found = NULL;

    if (!k || !key || len == 0 || len > 256)
        return NULL;
    sha256(key, len, h);
    /* Every entry is compared, matching or not: no early exit. */
    for (size_t i = 0; i < k->n; i++) {
        int eq = CRYPTO_memcmp(h, k->v[i].hash, 32) == 0;
        if (eq && !k->v[i].revoked)
            found = &k->v[i];
    }
    return found;
}

static st_status_t keys_save(const char *path, const st_http_keys_t *k, st_error_t *err)
{
    char tmp[4096];
    FILE *f;
    int fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return st_error_set(err, ST_ERR_RANGE, "%s: path too long", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "%s: %s", tmp, strerror(errno));
    f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return st_error_set(err, ST_ERR_IO, "%s: %s", tmp, strerror(errno));
    }
    fprintf(f, "# strata API keys: id role sha256(key) created_unix [revoked] "
               "[allow=CIDR,...] [totp=secret]\n");
    for (size_t i = 0; i < k->n; i++) {
        char allow[ST_HTTP_KEY_ALLOW_MAX * 48];
        fprintf(f, "%s %s ", k->v[i].id, st_http_role_name(k->v[i].role));
        for (int j = 0; j < 32; j++)
            fprintf(f, "%02x", k->v[i].hash[j]);
        fprintf(f, " %lld%s", (long long)k->v[i].created, k->v[i].revoked ? " revoked" : "");
        if (k->v[i].n_allow &&
            st_http_cidr_format_list(k->v[i].allow, k->v[i].n_allow, allow, sizeof(allow)))
            fprintf(f, " allow=%s", allow);
        if (k->v[i].totp_len) {
            fprintf(f, " totp=");
            for (uint32_t j = 0; j < k->v[i].totp_len; j++)
                fprintf(f, "%02x", k->v[i].totp[j]);
        }
        fprintf(f, "\n");
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        unlink(tmp);
        return st_error_set(err, ST_ERR_IO, "%s: write failed", tmp);
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return st_error_set(err, ST_ERR_IO, "%s: %s", path, strerror(errno));
    }
    return ST_OK;
}

st_status_t st_http_keys_add(const char *path, const char *id, st_http_role_t role,
                             char *key_out, size_t cap, st_error_t *err)
{
    return st_http_keys_add_opts(path, id, role, NULL, key_out, cap, NULL, 0, err);
}

st_status_t st_http_keys_add_opts(const char *path, const char *id, st_http_role_t role,
                                  const st_http_key_opts_t *o, char *key_out, size_t cap,
                                  char *uri_out, size_t uri_cap, st_error_t *err)
{
    st_http_keys_t *k;
    st_http_key_t key;
    uint8_t raw[32];
    char text[ST_HTTP_KEY_MAX];
    size_t plen = strlen(ST_HTTP_KEY_PREFIX);
    st_status_t st;

    if (!id || !id_ok(id))
        return st_error_set(err, ST_ERR_INVALID, "key id must be 1-63 characters of "
                            "[A-Za-z0-9._@-]");
    if (!strcmp(st_http_role_name(role), "none"))
        return st_error_set(err, ST_ERR_INVALID, "unknown role");
    if (cap < plen + 65)
        return st_error_set(err, ST_ERR_RANGE, "key buffer too small");
    memset(&key, 0, sizeof(key));
    if (o && o->allow &&
        (st = st_http_cidr_parse_list(o->allow, key.allow, ST_HTTP_KEY_ALLOW_MAX, &key.n_allow,
                                      err)) != ST_OK)
        return st;
    if (o && o->totp && !uri_out)
        return st_error_set(err, ST_ERR_INVALID, "--totp needs somewhere to show its URI");
    if ((st = st_http_keys_load(path, &k, err)) != ST_OK)
        return st;
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->v[i].id, id) == 0) {
            st = st_error_set(err, ST_ERR_INVALID, "%s: id '%s' exists (revoke it or pick "
                              "another)", path, id);
            goto out;
        }
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        st = st_error_set(err, ST_ERR_BACKEND, "RAND_bytes failed");
        goto out;
    }
    memcpy(text, ST_HTTP_KEY_PREFIX, plen);
    for (int i = 0; i < 32; i++)
        snprintf(text + plen + 2 * i, 3, "%02x", raw[i]);
    snprintf(key.id, sizeof(key.id), "%s", id);
    if (o && o->totp && (st = st_http_totp_enroll(&key, uri_out, uri_cap, err)) != ST_OK)
        goto out;
    key.role = role;
    sha256(text, plen + 64, key.hash);
    key.created = (int64_t)time(NULL);
    if ((st = keys_push(k, &key)) != ST_OK) {
        st_error_set(err, st, "out of memory");
        goto out;
    }
    if ((st = keys_save(path, k, err)) != ST_OK)
        goto out;
    memcpy(key_out, text, plen + 65);
out:
    OPENSSL_cleanse(raw, sizeof(raw));
    OPENSSL_cleanse(text, sizeof(text));
    OPENSSL_cleanse(&key, sizeof(key));
    st_http_keys_free(k);
    return st;
}

st_status_t st_http_keys_revoke(const char *path, const char *id, st_error_t *err)
{
    st_http_keys_t *k;
    st_status_t st;
    size_t i;

    if ((st = st_http_keys_load(path, &k, err)) != ST_OK)
        return st;
    for (i = 0; i < k->n; i++)
        if (strcmp(k->v[i].id, id) == 0)
            break;
    if (i == k->n) {
        st = st_error_set(err, ST_ERR_NOT_FOUND, "%s: no key with id '%s'", path, id);
        goto out;
    }
    k->v[i].revoked = 1;
    st = keys_save(path, k, err);
out:
    st_http_keys_free(k);
    return st;
}

st_status_t st_http_keys_list(const char *path, FILE *out, st_error_t *err)
{
    st_http_keys_t *k;
    st_status_t st;

    if ((st = st_http_keys_load(path, &k, err)) != ST_OK)
        return st;
    fprintf(out, "%-24s %-10s %-20s %-8s %-5s %s\n", "ID", "ROLE", "CREATED (UTC)", "STATE",
            "TOTP", "ALLOWED FROM");
    for (size_t i = 0; i < k->n; i++) {
        char when[32], allow[ST_HTTP_KEY_ALLOW_MAX * 48] = "any";
        time_t t = (time_t)k->v[i].created;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (k->v[i].n_allow)
            st_http_cidr_format_list(k->v[i].allow, k->v[i].n_allow, allow, sizeof(allow));
        fprintf(out, "%-24s %-10s %-20s %-8s %-5s %s\n", k->v[i].id,
                st_http_role_name(k->v[i].role), when, k->v[i].revoked ? "revoked" : "active",
                k->v[i].totp_len ? "yes" : "no", allow);
    }
    st_http_keys_free(k);
    return ST_OK;
}
