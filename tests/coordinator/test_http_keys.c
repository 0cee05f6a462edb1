/*
 * test_http_keys.c - the key file: add prints a key once and stores its
 * hash only, lookups accept live keys and refuse revoked or unknown ones,
 * the file is 0600 and bad lines are reported with their number.
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

int main(void) { return st_test_main(); }
