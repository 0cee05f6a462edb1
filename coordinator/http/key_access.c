/*
 * key_access.c - what a key may do beyond its role: the client addresses it
 * is bound to (CIDR allowlist, IPv4 and IPv6) and an admin key's second
 * factor (TOTP, RFC 6238, through liboath rather than our own HOTP).
 */
#include "st_http_keys.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#ifdef STRATA_HAVE_OATH
#include <liboath/oath.h>
#endif

#define TOTP_STEP_S 30
#define TOTP_DIGITS 6

/* An address as 16 bytes; IPv4 (and v4-mapped IPv6) as 4. */
static int addr_parse(const char *s, uint8_t out[16], int *v6)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(out, 0, 16);
    if (inet_pton(AF_INET, s, out) == 1) {
        *v6 = 0;
        return 1;
    }
    if (inet_pton(AF_INET6, s, out) != 1)
        return 0;
    if (!memcmp(out, mapped, 12)) {   /* ::ffff:a.b.c.d is the IPv4 client */
        memmove(out, out + 12, 4);
        memset(out + 4, 0, 12);
        *v6 = 0;
        return 1;
    }
    *v6 = 1;
    return 1;
}

static st_status_t cidr_parse(const char *s, st_http_cidr_t *c, st_error_t *err)
{
    char buf[64];
    char *slash, *end;
    int v6;
    long bits;

    if (strlen(s) >= sizeof(buf))
        return st_error_set(err, ST_ERR_FORMAT, "allowlist entry too long: '%.64s'", s);
    strcpy(buf, s);
    slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    if (!addr_parse(buf, c->addr, &v6))
        return st_error_set(err, ST_ERR_FORMAT, "allowlist: '%s' is not an IPv4 or IPv6 "
                            "address", buf);
    c->v6 = (uint8_t)v6;
    bits = v6 ? 128 : 32;
    if (slash) {
        bits = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || bits < 0 || bits > (v6 ? 128 : 32))
            return st_error_set(err, ST_ERR_FORMAT, "allowlist: bad prefix length in '%s'",
                                s);
    }
    c->bits = (uint8_t)bits;
    /* host bits set ("10.1.2.3/8") would read as a typo: refuse it */
    for (int i = 0; i < 16; i++) {
        int keep = (int)bits - 8 * i;
        uint8_t mask = keep >= 8 ? 0xff : keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
        if (c->addr[i] & (uint8_t)~mask)
            return st_error_set(err, ST_ERR_FORMAT, "allowlist: '%s' has host bits set "
                                "(did you mean a network address?)", s);
    }
    return ST_OK;
}

st_status_t st_http_cidr_parse_list(const char *s, st_http_cidr_t *out, uint32_t cap,
                                    uint32_t *n, st_error_t *err)
{
    const char *p = s;
    st_status_t st;

    *n = 0;
    if (!s || !*s)
        return st_error_set(err, ST_ERR_FORMAT, "allowlist is empty");
    while (*p) {
        char one[64];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof(one))
            return st_error_set(err, ST_ERR_FORMAT, "allowlist: empty or overlong entry in "
                                "'%.80s'", s);
        if (*n == cap)
            return st_error_set(err, ST_ERR_RANGE, "allowlist: more than %u entries", cap);
        memcpy(one, p, len);
        one[len] = '\0';
        if ((st = cidr_parse(one, &out[*n], err)) != ST_OK)
            return st;
        (*n)++;
        p += len;
        if (*p == ',')
            p++;
    }
    return ST_OK;
}

int st_http_cidr_format_list(const st_http_cidr_t *v, uint32_t n, char *buf, size_t cap)
{
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        char a[INET6_ADDRSTRLEN];
        int w;
        inet_ntop(v[i].v6 ? AF_INET6 : AF_INET, v[i].addr, a, sizeof(a));
        w = snprintf(buf + off, cap - off, "%s%s/%u", i ? "," : "", a, v[i].bits);
        if (w < 0 || (size_t)w >= cap - off)
            return 0;
        off += (size_t)w;
    }
    return 1;
}

static int cidr_match(const st_http_cidr_t *c, const uint8_t a[16], int v6)
{
    int full = c->bits / 8, rest = c->bits % 8;
    if (c->v6 != v6)
        return 0;
    if (memcmp(c->addr, a, (size_t)full) != 0)
        return 0;
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        if ((c->addr[full] & mask) != (a[full] & mask))
            return 0;
    }
    return 1;
}

int st_http_key_allows(const st_http_key_t *k, const char *ip)
{
    uint8_t a[16];
    int v6;
    if (!k->n_allow)
        return 1;
    if (!ip || !addr_parse(ip, a, &v6))
        return 0;
    for (uint32_t i = 0; i < k->n_allow; i++)
        if (cidr_match(&k->allow[i], a, v6))
            return 1;
    return 0;
}

st_http_otp_t st_http_key_otp(const st_http_key_t *k, const char *otp, int64_t now)
{
    if (!k->totp_len)
        return ST_HTTP_OTP_NOT_ENROLLED;
    if (!otp || !*otp)
        return ST_HTTP_OTP_MISSING;
#ifdef STRATA_HAVE_OATH
    if (strlen(otp) != TOTP_DIGITS || strspn(otp, "0123456789") != TOTP_DIGITS)
        return ST_HTTP_OTP_BAD;
    if (oath_init() != OATH_OK)
        return ST_HTTP_OTP_UNAVAILABLE;
    /* window 1: the previous and next step too (clock skew, a code typed
     * at the end of its step). A code may be used again within its window:
     * every /admin request needs one, and the key is the first factor. */
    return oath_totp_validate((const char *)k->totp, k->totp_len, (time_t)now, TOTP_STEP_S, 0,
                              1, otp) >= 0
               ? ST_HTTP_OTP_OK
               : ST_HTTP_OTP_BAD;
#else
    (void)now;
    return ST_HTTP_OTP_UNAVAILABLE;
#endif
}

st_status_t st_http_totp_enroll(st_http_key_t *k, char *uri, size_t cap, st_error_t *err)
{
#ifdef STRATA_HAVE_OATH
    char *b32 = NULL;
    size_t b32len = 0;
    int w;

    if (oath_init() != OATH_OK)
        return st_error_set(err, ST_ERR_BACKEND, "liboath: cannot initialise");
    if (RAND_bytes(k->totp, ST_HTTP_TOTP_BYTES) != 1)
        return st_error_set(err, ST_ERR_BACKEND, "RAND_bytes failed");
    k->totp_len = ST_HTTP_TOTP_BYTES;
    if (oath_base32_encode((const char *)k->totp, k->totp_len, &b32, &b32len) != OATH_OK)
        return st_error_set(err, ST_ERR_BACKEND, "liboath: base32 encoding failed");
    while (b32len && b32[b32len - 1] == '=')   /* otpauth URIs omit the padding */
        b32[--b32len] = '\0';
    w = snprintf(uri, cap, "otpauth://totp/strata:%s?secret=%s&issuer=strata&algorithm=SHA1"
                 "&digits=%d&period=%d", k->id, b32, TOTP_DIGITS, TOTP_STEP_S);
    OPENSSL_cleanse(b32, b32len);
    free(b32);
    if (w < 0 || (size_t)w >= cap)
        return st_error_set(err, ST_ERR_RANGE, "otpauth URI buffer too small");
    return ST_OK;
#else
    (void)k;
    (void)uri;
    (void)cap;
    return st_error_set(err, ST_ERR_UNSUPPORTED, "strata was built without liboath: no TOTP "
                        "(install liboath-dev and rebuild)");
#endif
}
