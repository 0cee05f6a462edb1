/*
 * test_http_keys.c - the key file: add prints a key once and stores its
 * hash only, lookups accept live keys and refuse revoked or unknown ones,
 * the file is 0600 and bad lines are reported with their number; address
 * allowlists (IPv4, IPv6, v4-mapped) and the TOTP second factor against
 * RFC 6238's own test vectors.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_http_keys.h"
#include "st_test.h"

static void tmp_path(char *out, size_t cap, const char *tag)
{
    snprintf(out, cap, "/tmp/strata_keys_%s_%ld", tag, (long)getpid());
    unlink(out);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 1 << 16);
    if (f && buf)
        fread(buf, 1, (1 << 16) - 1, f);
    if (f)
        fclose(f);
    return buf;
}

ST_TEST(add_check_revoke)
{
    char path[128], k1[ST_HTTP_KEY_MAX], k2[ST_HTTP_KEY_MAX];
    st_http_keys_t *k;
    const st_http_key_t *who;
    st_error_t err;
    struct stat sb;
    char *text;

    tmp_path(path, sizeof(path), "a");
    ST_REQUIRE(st_http_keys_add(path, "alice", ST_HTTP_ROLE_USER, k1, sizeof(k1), &err) == ST_OK);
    ST_REQUIRE(st_http_keys_add(path, "bob", ST_HTTP_ROLE_ADMIN, k2, sizeof(k2), &err) == ST_OK);
    ST_CHECK(strncmp(k1, "sk-strata-", 10) == 0 && strlen(k1) == 10 + 64);
    ST_CHECK(strcmp(k1, k2) != 0);
    ST_CHECK(st_http_keys_add(path, "alice", ST_HTTP_ROLE_USER, k2, sizeof(k2), &err) ==
             ST_ERR_INVALID);
    ST_CHECK(st_http_keys_add(path, "bad id", ST_HTTP_ROLE_USER, k2, sizeof(k2), &err) ==
             ST_ERR_INVALID);

    ST_REQUIRE(stat(path, &sb) == 0);
    ST_CHECK((sb.st_mode & 0777) == 0600);
    text = slurp(path);
    ST_CHECK(text && strstr(text, "alice user ") && !strstr(text, k1 + 10));
    free(text);

    ST_REQUIRE(st_http_keys_load(path, &k, &err) == ST_OK);
    ST_CHECK(st_http_keys_count(k) == 2);
    who = st_http_keys_check(k, k1, strlen(k1));
    ST_CHECK(who && strcmp(who->id, "alice") == 0 && who->role == ST_HTTP_ROLE_USER);
    who = st_http_keys_check(k, k2, strlen(k2));
    ST_CHECK(who && who->role == ST_HTTP_ROLE_ADMIN);
    ST_CHECK(st_http_keys_check(k, "sk-strata-nope", 14) == NULL);
    ST_CHECK(st_http_keys_check(k, k1, strlen(k1) - 1) == NULL);
    st_http_keys_free(k);

    ST_REQUIRE(st_http_keys_revoke(path, "alice", &err) == ST_OK);
    ST_CHECK(st_http_keys_revoke(path, "carol", &err) == ST_ERR_NOT_FOUND);
    ST_REQUIRE(st_http_keys_load(path, &k, &err) == ST_OK);
    ST_CHECK(st_http_keys_check(k, k1, strlen(k1)) == NULL);
    ST_CHECK(st_http_keys_check(k, k2, strlen(k2)) != NULL);
    st_http_keys_free(k);
    unlink(path);
}

ST_TEST(bad_file)
{
    char path[128];
    st_http_keys_t *k = NULL;
    st_error_t err;
    FILE *f;

    tmp_path(path, sizeof(path), "b");
    f = fopen(path, "w");
    ST_REQUIRE(f);
    fprintf(f, "# comment\n\nalice user %064d 1700000000\nbob root %064d 1\n", 0, 0);
    fclose(f);
    ST_CHECK(st_http_keys_load(path, &k, &err) == ST_ERR_FORMAT);
    ST_CHECK(strstr(err.msg, ":4:") != NULL);
    f = fopen(path, "w");
    fprintf(f, "alice user %064d 1\nalice admin %064d 2\n", 0, 0);
    fclose(f);
    ST_CHECK(st_http_keys_load(path, &k, &err) == ST_ERR_FORMAT);
    ST_CHECK(strstr(err.msg, "duplicate") != NULL);
    f = fopen(path, "w");
    fprintf(f, "alice user 12ab 1\n");
    fclose(f);
    ST_CHECK(st_http_keys_load(path, &k, &err) == ST_ERR_FORMAT);
    unlink(path);
    /* A missing file is an empty key set: `keys add` creates it. */
    ST_REQUIRE(st_http_keys_load(path, &k, &err) == ST_OK);
    ST_CHECK(st_http_keys_count(k) == 0);
    st_http_keys_free(k);
}

ST_TEST(roles)
{
    st_http_role_t r;
    ST_CHECK(st_http_role_parse("auditor", &r) == ST_OK && r == ST_HTTP_ROLE_AUDITOR);
    ST_CHECK(st_http_role_parse("developer", &r) == ST_OK && r == ST_HTTP_ROLE_DEVELOPER);
    ST_CHECK(st_http_role_parse("root", &r) == ST_ERR_INVALID);
    ST_CHECK(strcmp(st_http_role_name(ST_HTTP_ROLE_ADMIN), "admin") == 0);
}

static st_http_key_t with_allow(const char *list)
{
    st_http_key_t k;
    st_error_t err;
    memset(&k, 0, sizeof(k));
    if (list && st_http_cidr_parse_list(list, k.allow, ST_HTTP_KEY_ALLOW_MAX, &k.n_allow, &err) !=
                    ST_OK)
        k.n_allow = 999;                      /* makes the checks below fail loudly */
    return k;
}

ST_TEST(address_allowlist)
{
    st_http_key_t k = with_allow(NULL);
    ST_CHECK(st_http_key_allows(&k, "203.0.113.9"));            /* no list: anywhere */
    k = with_allow("10.0.0.0/8,192.168.1.0/24,2001:db8::/32,::1");
    ST_REQUIRE(k.n_allow == 4);
    ST_CHECK(st_http_key_allows(&k, "10.200.3.4"));
    ST_CHECK(!st_http_key_allows(&k, "11.0.0.1"));
    ST_CHECK(st_http_key_allows(&k, "192.168.1.255"));
    ST_CHECK(!st_http_key_allows(&k, "192.168.2.1"));
    ST_CHECK(st_http_key_allows(&k, "2001:db8:ffff::1"));
    ST_CHECK(!st_http_key_allows(&k, "2001:db9::1"));
    ST_CHECK(st_http_key_allows(&k, "::1"));
    ST_CHECK(!st_http_key_allows(&k, "::2"));
    ST_CHECK(st_http_key_allows(&k, "::ffff:10.1.2.3"));        /* v4-mapped is the v4 client */
    ST_CHECK(!st_http_key_allows(&k, "::ffff:11.1.2.3"));
    ST_CHECK(!st_http_key_allows(&k, ""));
    ST_CHECK(!st_http_key_allows(&k, "garbage"));
    k = with_allow("0.0.0.0/0");
    ST_CHECK(st_http_key_allows(&k, "8.8.8.8") && !st_http_key_allows(&k, "2001:db8::1"));
    k = with_allow("10.1.0.0/15");                               /* non-byte prefix */
    ST_CHECK(k.n_allow == 999);                                  /* host bit set: refused */
    k = with_allow("10.0.0.0/15");
    ST_CHECK(st_http_key_allows(&k, "10.1.255.1") && !st_http_key_allows(&k, "10.2.0.1"));
    {
        st_http_cidr_t v[ST_HTTP_KEY_ALLOW_MAX];
        uint32_t n;
        st_error_t err;
        char buf[256];
        static const char *const bad[] = {"", ",", "10.0.0.0/", "10.0.0.0/x", "::/129",
                                          "1.2.3.4/33", "1.2.3", "10.0.0.0/8,,::1", NULL};
        for (int i = 0; bad[i]; i++)
            ST_CHECK_MSG(st_http_cidr_parse_list(bad[i], v, ST_HTTP_KEY_ALLOW_MAX, &n, &err) !=
                             ST_OK, "accepted '%s'", bad[i]);
        ST_CHECK(st_http_cidr_parse_list("1.0.0.0/8,2.0.0.0/8", v, 1, &n, &err) == ST_ERR_RANGE);
        ST_REQUIRE(st_http_cidr_parse_list("10.0.0.0/8,2001:db8::/32", v, 4, &n, &err) == ST_OK);
        ST_CHECK(st_http_cidr_format_list(v, n, buf, sizeof(buf)) &&
                 !strcmp(buf, "10.0.0.0/8,2001:db8::/32"));
    }
}

ST_TEST(totp_rfc6238_vectors)
{
    /* RFC 6238 appendix B, SHA-1: secret "12345678901234567890"; the
     * 8-digit values' last 6 digits are the 6-digit codes. */
    st_http_key_t k;
    memset(&k, 0, sizeof(k));
    ST_CHECK(st_http_key_otp(&k, "123456", 59) == ST_HTTP_OTP_NOT_ENROLLED);
    memcpy(k.totp, "12345678901234567890", 20);
    k.totp_len = 20;
    if (st_http_key_otp(&k, "287082", 59) == ST_HTTP_OTP_UNAVAILABLE)
        ST_SKIP("built without liboath");
    ST_CHECK(st_http_key_otp(&k, "287082", 59) == ST_HTTP_OTP_OK);          /* 94287082 */
    ST_CHECK(st_http_key_otp(&k, "081804", 1111111109) == ST_HTTP_OTP_OK);  /* 07081804 */
    ST_CHECK(st_http_key_otp(&k, "050471", 1111111111) == ST_HTTP_OTP_OK);  /* 14050471 */
    ST_CHECK(st_http_key_otp(&k, "005924", 1234567890) == ST_HTTP_OTP_OK);  /* 89005924 */
    ST_CHECK(st_http_key_otp(&k, "279037", 2000000000) == ST_HTTP_OTP_OK);  /* 69279037 */
    /* one step either side is accepted, two are not */
    ST_CHECK(st_http_key_otp(&k, "005924", 1234567890 + 30) == ST_HTTP_OTP_OK);
    ST_CHECK(st_http_key_otp(&k, "005924", 1234567890 - 30) == ST_HTTP_OTP_OK);
    ST_CHECK(st_http_key_otp(&k, "005924", 1234567890 + 90) == ST_HTTP_OTP_BAD);
    ST_CHECK(st_http_key_otp(&k, "005925", 1234567890) == ST_HTTP_OTP_BAD);
    ST_CHECK(st_http_key_otp(&k, NULL, 59) == ST_HTTP_OTP_MISSING);
    ST_CHECK(st_http_key_otp(&k, "", 59) == ST_HTTP_OTP_MISSING);
    ST_CHECK(st_http_key_otp(&k, "28708", 59) == ST_HTTP_OTP_BAD);
    ST_CHECK(st_http_key_otp(&k, "2870820", 59) == ST_HTTP_OTP_BAD);
    ST_CHECK(st_http_key_otp(&k, "28708a", 59) == ST_HTTP_OTP_BAD);
}

ST_TEST(file_attributes_round_trip)
{
    char path[128], key[ST_HTTP_KEY_MAX], uri[256];
    st_http_key_opts_t o = {.allow = "127.0.0.0/8,::1/128", .totp = 1};
    st_http_keys_t *k;
    st_error_t err;
    const st_http_key_t *who;
    FILE *f;

    tmp_path(path, sizeof(path), "c");
    if (st_http_keys_add_opts(path, "boss", ST_HTTP_ROLE_ADMIN, &o, key, sizeof(key), uri,
                              sizeof(uri), &err) == ST_ERR_UNSUPPORTED)
        ST_SKIP("built without liboath");
    ST_CHECK(!strncmp(uri, "otpauth://totp/strata:boss?secret=", strlen("otpauth://totp/strata:boss?secret=")));
    ST_CHECK(strstr(uri, "&digits=6&period=30") != NULL);
    ST_REQUIRE(st_http_keys_load(path, &k, &err) == ST_OK);
    who = st_http_keys_check(k, key, strlen(key));
    ST_REQUIRE(who);
    ST_CHECK(who->n_allow == 2 && who->totp_len == ST_HTTP_TOTP_BYTES);
    ST_CHECK(st_http_key_allows(who, "127.9.9.9") && !st_http_key_allows(who, "10.0.0.1"));
    st_http_keys_free(k);
    /* a revoke rewrites the file: the attributes survive it */
    o.totp = 0;
    o.allow = "10.0.0.0/8";
    ST_REQUIRE(st_http_keys_add_opts(path, "dev", ST_HTTP_ROLE_DEVELOPER, &o, key, sizeof(key),
                                     NULL, 0, &err) == ST_OK);
    ST_REQUIRE(st_http_keys_revoke(path, "dev", &err) == ST_OK);
    ST_REQUIRE(st_http_keys_load(path, &k, &err) == ST_OK);
    ST_CHECK(st_http_keys_count(k) == 2);
    ST_CHECK(st_http_keys_at(k, 0)->totp_len == ST_HTTP_TOTP_BYTES &&
             st_http_keys_at(k, 0)->n_allow == 2);
    ST_CHECK(st_http_keys_at(k, 1)->revoked && st_http_keys_at(k, 1)->n_allow == 1);
    st_http_keys_free(k);
    /* bad attributes are refused with the line number */
    f = fopen(path, "w");
    ST_REQUIRE(f);
    fprintf(f, "a user %064d 1 allow=10.0.0.0/8\nb user %064d 1 allow=10.0.0.1/8\n", 0, 0);
    fclose(f);
    ST_CHECK(st_http_keys_load(path, &k, &err) == ST_ERR_FORMAT && strstr(err.msg, ":2:"));
    f = fopen(path, "w");
    fprintf(f, "a admin %064d 1 totp=abcd\n", 0);
    fclose(f);
    ST_CHECK(st_http_keys_load(path, &k, &err) == ST_ERR_FORMAT);
    f = fopen(path, "w");
    fprintf(f, "a user %064d 1 revoked revoked\n", 0);
    fclose(f);
    ST_CHECK(st_http_keys_load(path, &k, &err) == ST_ERR_FORMAT);
    f = fopen(path, "w");
    fprintf(f, "a user %064d 1 color=blue\n", 0);
    fclose(f);
    ST_CHECK(st_http_keys_load(path, &k, &err) == ST_ERR_FORMAT);
    unlink(path);
}

int main(void) { return st_test_main(); }
