/*
 * test_pkcs11_uri.c - the PKCS#11 URI parser (st_crypt_pkcs11.h), a pure
 * function: percent-decoding, unknown attributes ignored, each missing
 * required attribute named, pin-value refused; and PIN files.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "st_crypt_pkcs11.h"
#include "st_test.h"

#define MOD "?module-path=/usr/lib/softhsm/libsofthsm2.so&x-wrapped-key=/m/k.wrapped"

ST_TEST(parses_full_uri)
{
    st_pkcs11_uri_t u;
    st_error_t err;
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:manufacturer=SoftHSM%20project;token=my%20tok;"
                                 "object=strata-wrap;id=%01%a0;type=secret-key"
                                 "?module-path=/opt/x%2Dy/lib.so&pin-source=file:/etc/pin"
                                 "&x-wrapped-key=/m/k.wrapped&module-name=ignored", &u, &err) == ST_OK);
    ST_CHECK(!strcmp(u.token, "my tok"));
    ST_CHECK(!strcmp(u.object, "strata-wrap"));
    ST_CHECK(u.id_len == 2 && u.id[0] == 0x01 && u.id[1] == 0xa0);
    ST_CHECK(!strcmp(u.module_path, "/opt/x-y/lib.so"));
    ST_CHECK(!strcmp(u.pin_source, "/etc/pin"));
    ST_CHECK(!strcmp(u.wrapped_key, "/m/k.wrapped"));
    ST_CHECK(st_pkcs11_is_uri("pkcs11:token=a") && !st_pkcs11_is_uri("/etc/key"));
}

ST_TEST(pin_source_forms)
{
    st_pkcs11_uri_t u;
    st_error_t err;
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t;object=o" MOD "&pin-source=file:///p/pin",
                                 &u, &err) == ST_OK);
    ST_CHECK(!strcmp(u.pin_source, "/p/pin"));
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t;object=o" MOD "&pin-source=/p/q", &u, &err) == ST_OK);
    ST_CHECK(!strcmp(u.pin_source, "/p/q"));
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t;object=o" MOD "&pin-source=relative", &u, &err) != ST_OK);
    ST_CHECK(strstr(err.msg, "pin-source"));
}

ST_TEST(missing_attributes_are_named)
{
    st_pkcs11_uri_t u;
    st_error_t err;
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:object=o" MOD, &u, &err) == ST_ERR_INVALID);
    ST_CHECK(strstr(err.msg, "token="));
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t" MOD, &u, &err) == ST_ERR_INVALID);
    ST_CHECK(strstr(err.msg, "object="));
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t;id=%02" MOD, &u, &err) == ST_OK);
    ST_CHECK(u.object[0] == 0 && u.id_len == 1);
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t;object=o?x-wrapped-key=/k", &u, &err) == ST_ERR_INVALID);
    ST_CHECK(strstr(err.msg, "module-path="));
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t;object=o?module-path=/m.so", &u, &err) == ST_ERR_INVALID);
    ST_CHECK(strstr(err.msg, "x-wrapped-key="));
    ST_CHECK(st_pkcs11_uri_parse("/etc/key", &u, &err) == ST_ERR_FORMAT);
}

ST_TEST(refuses_pin_value_and_bad_escapes)
{
    st_pkcs11_uri_t u;
    st_error_t err;
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t;object=o" MOD "&pin-value=1234", &u, &err) == ST_ERR_INVALID);
    ST_CHECK(strstr(err.msg, "pin-value") && !strstr(err.msg, "1234"));
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t%2;object=o" MOD, &u, &err) == ST_ERR_FORMAT);
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t%zz;object=o" MOD, &u, &err) == ST_ERR_FORMAT);
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=t%00x;object=o" MOD, &u, &err) == ST_ERR_FORMAT);
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token=0123456789012345678901234567890123;object=o" MOD,
                                 &u, &err) == ST_ERR_FORMAT);   /* a label is at most 32 bytes */
    ST_CHECK(st_pkcs11_uri_parse("pkcs11:token" MOD, &u, &err) == ST_ERR_FORMAT);
}

ST_TEST(pin_files)
{
    char path[] = "/tmp/st_pin_XXXXXX", pin[64];
    st_error_t err;
    int fd = mkstemp(path);
    ST_CHECK(fd >= 0);
    ST_CHECK(write(fd, "1234\n", 5) == 5);
    close(fd);
    ST_CHECK(st_pkcs11_pin_read(path, pin, sizeof(pin), &err) == ST_OK && !strcmp(pin, "1234"));
    FILE *f = fopen(path, "w");
    fputs("12 34\r\n", f);
    fclose(f);
    ST_CHECK(st_pkcs11_pin_read(path, pin, sizeof(pin), &err) == ST_OK && !strcmp(pin, "12 34"));
    f = fopen(path, "w");
    fputs("\n", f);
    fclose(f);
    ST_CHECK(st_pkcs11_pin_read(path, pin, sizeof(pin), &err) == ST_ERR_FORMAT);
    f = fopen(path, "w");
    fputs("1\n2\n", f);
    fclose(f);
    ST_CHECK(st_pkcs11_pin_read(path, pin, sizeof(pin), &err) == ST_ERR_FORMAT);
    unlink(path);
    ST_CHECK(st_pkcs11_pin_read(path, pin, sizeof(pin), &err) == ST_ERR_IO);
}

/* The URI comes from an operator's command line, not the network, so a
 * mutation loop here stands in for a libFuzzer harness: any bytes must give
 * ST_OK with NUL-terminated fields or an error with a message. */
ST_TEST(mutated_uris_never_overrun)
{
    static const char base[] = "pkcs11:token=t%41;object=o;id=%01?module-path=/m.so"
                               "&pin-source=file:/p&x-wrapped-key=/k";
    static const char alpha[] = "%;?&=:/aZ09\x01";
    char buf[sizeof(base) + 64];
    uint32_t r = 12345;
    st_pkcs11_uri_t u;
    st_error_t err;
    for (int it = 0; it < 20000; it++) {
        size_t n = sizeof(base) - 1;
        memcpy(buf, base, n + 1);
        for (int k = 0; k < 1 + it % 4; k++) {
            r = r * 1103515245u + 12345u;
            size_t at = 7 + (r >> 8) % (n - 7);
            r = r * 1103515245u + 12345u;
            char c = alpha[(r >> 8) % (sizeof(alpha) - 1)];
            if ((r >> 20) & 1) buf[at] = c;
            else if (n + 1 < sizeof(buf) - 1) {
                memmove(buf + at + 1, buf + at, n - at + 1);
                buf[at] = c;
                n++;
            }
        }
        st_error_clear(&err);
        if (st_pkcs11_uri_parse(buf, &u, &err) == ST_OK) {
            ST_CHECK(memchr(u.token, 0, sizeof(u.token)) && u.token[0]);
            ST_CHECK(memchr(u.module_path, 0, sizeof(u.module_path)));
            ST_CHECK(u.id_len <= sizeof(u.id));
        } else {
            ST_CHECK(err.msg[0]);
        }
    }
}

int main(void) { return st_test_main(); }
