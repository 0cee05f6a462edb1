/*
 * strata encrypt-model - write an AES-256-GCM encrypted copy of a GGUF model
 * (format in docs/ENCRYPTION.md), or create a key file.
 *
 *   strata encrypt-model --gen-key model.key
 *   strata encrypt-model m.gguf m.stenc --key-file model.key
 *   strata generate -m m.stenc --key-file model.key -p "Hello"
 *
 * The output is authenticated per chunk and chunks never span two tensors,
 * so a worker decrypts only its own layers. Prints what it wrote and the
 * encryption throughput on stderr.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_util.h"
#include "st_crypt.h"
#include "st_crypt_pkcs11.h"
#include "st_util.h"

const char st_cmd_encrypt_model_help[] = "write an AES-256-GCM encrypted model (or --gen-key)";

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata encrypt-model IN OUT --key-file KEY [--chunk-kib N]\n"
        "       strata encrypt-model --gen-key KEY\n"
        "  IN                   plain GGUF model\n"
        "  OUT                  encrypted model to write (mode 0600)\n"
        "      --key-file PATH  32 raw bytes or 64 hex digits (AES-256 key)\n"
        "      --chunk-kib N    largest chunk in KiB, 4..1048576 (default 1024)\n"
        "      --gen-key PATH   create a new random key file (mode 0600, never overwrites)\n"
        "      --key-pkcs11 URI the key wrapped by a PKCS#11 token (instead of --key-file)\n"
        "   or: strata encrypt-model --wrap-key KEY --key-pkcs11 URI\n"
        "      wraps key file KEY under the token's key into the URI's x-wrapped-key file\n"
        "      (mode 0600, never overwrites); then delete KEY (docs/ENCRYPTION.md)\n");
}

int st_cmd_encrypt_model(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *key_file = NULL, *gen_key = NULL, *wrap_key = NULL,
               *pkcs11 = NULL, *v;
    uint8_t key[ST_CRYPT_KEY_BYTES];
    uint32_t chunk = 0;
    struct stat st;
    st_error_t err;
    long l;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (a[0] != '-' || !a[1]) {
            if (!in) in = a;
            else if (!out) out = a;
            else { fprintf(stderr, "strata encrypt-model: unexpected argument '%s'\n", a); return 2; }
        }
        else if (!(v = cli_value(argc, argv, &i))) return 2;
        else if (!strcmp(a, "--key-file") || !strcmp(a, "-k")) key_file = v;
        else if (!strcmp(a, "--gen-key")) gen_key = v;
        else if (!strcmp(a, "--wrap-key")) wrap_key = v;
        else if (!strcmp(a, "--key-pkcs11")) {
            if (!(pkcs11 = cli_key_value(a, v))) return 2;
        }
        else if (!strcmp(a, "--chunk-kib")) {
            if (cli_parse_long(a, v, 4, 1 << 20, &l)) return 2;
            chunk = (uint32_t)l * 1024u;
        } else {
            fprintf(stderr, "strata encrypt-model: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    st_error_clear(&err);
    if (gen_key) {
        if (in || key_file) {
            fprintf(stderr, "strata encrypt-model: --gen-key takes no model or --key-file\n");
            return 2;
        }
        if (st_crypt_key_generate(gen_key, &err) != ST_OK) {
            fprintf(stderr, "strata: %s\n", err.msg);
            return 1;
        }
        fprintf(stderr, "wrote a new 256-bit key to %s (mode 0600); keep it apart from the "
                "encrypted model\n", gen_key);
        return 0;
    }
    if (wrap_key) {
        if (in || key_file || !pkcs11) {
            fprintf(stderr, "strata encrypt-model: --wrap-key KEY takes --key-pkcs11 URI and "
                    "no model\n");
            return 2;
        }
        if (st_crypt_key_load(wrap_key, key, &err) != ST_OK ||
            st_pkcs11_key_wrap(pkcs11, key, &err) != ST_OK) {
            fprintf(stderr, "strata: %s\n", err.msg);
            goto out;
        }
        fprintf(stderr, "wrapped the key of %s under the token's key; delete %s once the "
                "model loads with --key-pkcs11\n", wrap_key, wrap_key);
        rc = 0;
        goto out;
    }
    if (pkcs11 && key_file) {
        fprintf(stderr, "strata encrypt-model: --key-file or --key-pkcs11, not both\n");
        return 2;
    }
    if (pkcs11)
        key_file = pkcs11;
    if (!in || !out || !key_file) {
        usage(stderr);
        return 2;
    }
    if (st_crypt_key_load(key_file, key, &err) != ST_OK) {
        fprintf(stderr, "strata: %s\n", err.msg);
        return 1;
    }
    uint64_t t0 = st_now_ns();
    if (st_crypt_encrypt_file(in, out, key, chunk, &err) != ST_OK) {
        fprintf(stderr, "strata: %s\n", err.msg);
        goto out;
    }
    double secs = (double)(st_now_ns() - t0) * 1e-9;
    if (stat(out, &st) == 0)
        fprintf(stderr, "wrote %s: %" PRIu64 " bytes in %.2f s (%.0f MB/s, AES-256-GCM, chunks "
                "of at most %u KiB)\n", out, (uint64_t)st.st_size, secs,
                secs > 0 ? (double)st.st_size / secs / 1e6 : 0.0,
                (chunk ? chunk : ST_CRYPT_DEFAULT_CHUNK) / 1024u);
    rc = 0;
out:
    explicit_bzero(key, sizeof(key));
    return rc;
}
