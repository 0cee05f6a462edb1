/*
 * strata keys - manage the front door's API key file:
 *   strata keys add --file F --role ROLE --id NAME   (prints the key once)
 *   strata keys list --file F
 *   strata keys revoke --file F --id NAME
 * Only SHA-256 hashes are stored (see st_http_keys.h).
 */
#include <stdio.h>
#include <string.h>

#ifdef STRATA_HAVE_HTTP
#include "st_http_keys.h"
#endif

const char st_cmd_keys_help[] = "create, list and revoke API keys for `strata serve`";

#ifndef STRATA_HAVE_HTTP
int st_cmd_keys(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "strata keys: built without HTTP (libevent, jansson, OpenSSL)\n");
    return 1;
}
#else

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata keys add --file FILE --role ROLE --id NAME [--allow CIDR,...] [--totp]\n"
        "       strata keys list --file FILE\n"
        "       strata keys revoke --file FILE --id NAME\n"
        "roles: admin (everything), developer (models, cluster, metrics, generation),\n"
        "       user (generation only, rate limited), auditor (audit log only)\n"
        "--allow CIDR,...  the client addresses (IPv4/IPv6) the key may be used from;\n"
        "                  required for developer keys (0.0.0.0/0,::/0 for anywhere)\n"
        "--totp            a TOTP second factor, required for admin keys: every /admin/*\n"
        "                  request then carries the current code in X-Strata-OTP; the\n"
        "                  otpauth:// URI for an authenticator app is printed once\n");
}

int st_cmd_keys(int argc, char **argv)
{
    const char *file = NULL, *role = NULL, *id = NULL, *verb;
    st_http_role_t r = ST_HTTP_ROLE_NONE;
    st_http_key_opts_t o = {0};
    st_error_t err;
    char key[ST_HTTP_KEY_MAX], uri[256] = "";

    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    verb = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--totp")) {
            o.totp = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "strata keys: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--file")) file = argv[++i];
        else if (!strcmp(a, "--role")) role = argv[++i];
        else if (!strcmp(a, "--id")) id = argv[++i];
        else if (!strcmp(a, "--allow")) o.allow = argv[++i];
        else {
            fprintf(stderr, "strata keys: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!file) {
        fprintf(stderr, "strata keys: --file is required\n");
        return 2;
    }
    st_error_clear(&err);
    if (!strcmp(verb, "add")) {
        if (!id || !role) {
            fprintf(stderr, "strata keys add: --id and --role are required\n");
            return 2;
        }
        if (st_http_role_parse(role, &r) != ST_OK) {
            fprintf(stderr, "strata keys: unknown role '%s' (admin, developer, user, auditor)\n",
                    role);
            return 2;
        }
        /* The access matrix (docs/HTTP.md): an admin key is nothing without
         * its second factor, a developer key nothing without its networks. */
        if (r == ST_HTTP_ROLE_ADMIN && !o.totp) {
            fprintf(stderr, "strata keys add: an admin key needs --totp (a second factor for "
                            "every /admin/* request)\n");
            return 2;
        }
        if (r == ST_HTTP_ROLE_DEVELOPER && !o.allow) {
            fprintf(stderr, "strata keys add: a developer key needs --allow CIDR,... (the "
                            "addresses it may be used from; 0.0.0.0/0,::/0 for anywhere)\n");
            return 2;
        }
        if (st_http_keys_add_opts(file, id, r, &o, key, sizeof(key), o.totp ? uri : NULL,
                                  sizeof(uri), &err) != ST_OK) {
            fprintf(stderr, "strata keys: %s\n", err.msg);
            return 1;
        }
        printf("%s\n", key);
        if (o.totp)
            printf("%s\n", uri);       /* second line: for the authenticator app */
        fprintf(stderr, "strata keys: key '%s' (%s) added to %s; it is shown only now\n", id,
                role, file);
        memset(key, 0, sizeof(key));
        memset(uri, 0, sizeof(uri));
        return 0;
    }
    if (!strcmp(verb, "list")) {
        if (st_http_keys_list(file, stdout, &err) != ST_OK) {
            fprintf(stderr, "strata keys: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if (!strcmp(verb, "revoke")) {
        if (!id) {
            fprintf(stderr, "strata keys revoke: --id is required\n");
            return 2;
        }
        if (st_http_keys_revoke(file, id, &err) != ST_OK) {
            fprintf(stderr, "strata keys: %s\n", err.msg);
            return 1;
        }
        fprintf(stderr, "strata keys: key '%s' revoked (a running server picks this up on "
                "POST /admin/reload-keys)\n", id);
        return 0;
    }
    fprintf(stderr, "strata keys: unknown action '%s'\n", verb);
    usage(stderr);
    return 2;
}
#endif
