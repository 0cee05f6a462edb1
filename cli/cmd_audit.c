/*
 * strata audit - check the front door's audit log (docs/HTTP.md, "Audit log"):
 *   strata audit verify FILE...                     the hash chain, files oldest first
 *   strata audit verify --hmac-key KEY EXPORT...    an export from GET /admin/audit:
 *                                                   each line's watermark, then the chain
 * Exit status: 0 intact, 1 a broken line (named as FILE:LINE), 2 usage or
 * an unreadable file.
 */
#include <stdio.h>
#include <string.h>

#ifdef STRATA_HAVE_HTTP
#include <errno.h>
#include <stdlib.h>

#include "st_http_audit.h"
#endif

const char st_cmd_audit_help[] = "verify the audit log's hash chain and export watermarks";

#ifndef STRATA_HAVE_HTTP
int st_cmd_audit(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "strata audit: built without HTTP (libevent, jansson, OpenSSL)\n");
    return 1;
}
#else

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata audit verify [--hmac-key FILE] FILE...\n"
        "Checks that each line's strata.audit.prev_sha256 is the SHA-256 of the line\n"
        "before it and that strata.audit.seq counts up by one, across the files in the\n"
        "order given (oldest first: audit.ndjson.2024-05-01 ... audit.ndjson), and\n"
        "reports the first line that breaks the chain (removed, edited, reordered or\n"
        "inserted lines). Watermarked lines (an export from GET /admin/audit) are\n"
        "checked as the lines they were exported from.\n"
        "--hmac-key FILE  the server's audit HMAC key (--audit-hmac-key, or the\n"
        "                 generated <audit log>.hmac-key): every line must then carry\n"
        "                 a watermark whose HMAC matches; the reader is reported\n");
}

/* 0 intact so far, 1 a broken line (reported), 2 the file cannot be read. */
static int verify_file(st_http_audit_check_t *c, const char *path, uint64_t *n_lines)
{
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t no = 0;
    int rc = 0;
    st_error_t err;

    if (!f) {
        fprintf(stderr, "strata audit verify: %s: %s\n", path, strerror(errno));
        return 2;
    }
    while ((n = getline(&line, &cap, f)) > 0) {
        no++;
        if (line[n - 1] != '\n') {
            fprintf(stderr, "strata audit verify: %s:%llu: BROKEN: the last line has no "
                    "newline: cut off by a failed write, or still being written\n", path,
                    (unsigned long long)no);
            rc = 1;
            break;
        }
        st_error_clear(&err);
        if (st_http_audit_check_line(c, line, (size_t)n - 1, &err) != ST_OK) {
            fprintf(stderr, "strata audit verify: %s:%llu: BROKEN: %s\n", path,
                    (unsigned long long)no, err.msg);
            rc = 1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "strata audit verify: %s: read error\n", path);
        rc = 2;
    }
    free(line);
    fclose(f);
    *n_lines += no;
    return rc;
}

static int verify(int argc, char **argv)
{
    const char *key_path = NULL;
    uint8_t key[ST_HTTP_AUDIT_KEY_MAX];
    size_t key_len = 0;
    st_http_audit_check_t *c = NULL;
    st_http_audit_summary_t sum;
    st_error_t err;
    uint64_t total = 0;
    int first = 2, rc = 0;

    for (; first < argc && argv[first][0] == '-'; first++) {
        if (!strcmp(argv[first], "--hmac-key") && first + 1 < argc) {
            key_path = argv[++first];
        } else if (!strcmp(argv[first], "-h") || !strcmp(argv[first], "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "strata audit verify: unknown option '%s'\n", argv[first]);
            usage(stderr);
            return 2;
        }
    }
    if (first >= argc) {
        usage(stderr);
        return 2;
    }
    st_error_clear(&err);
    if (key_path && st_http_audit_key_load(key_path, 0, key, &key_len, NULL, &err) != ST_OK) {
        fprintf(stderr, "strata audit verify: %s\n", err.msg);
        return 2;
    }
    if (st_http_audit_check_new(key_path ? key : NULL, key_len, key_path != NULL, &c) != ST_OK) {
        fprintf(stderr, "strata audit verify: out of memory\n");
        return 2;
    }
    for (int i = first; i < argc && rc == 0; i++)
        rc = verify_file(c, argv[i], &total);
    st_http_audit_check_summary(c, &sum);
    st_http_audit_check_free(c);
    memset(key, 0, sizeof(key));
    if (rc != 0)
        return rc;
    if (sum.lines == 0) {
        printf("no lines: nothing to check\n");
        return 0;
    }
    printf("intact: %llu line(s) in %d file(s), seq %llu..%llu\n", (unsigned long long)sum.lines,
           argc - first, (unsigned long long)sum.first_seq, (unsigned long long)sum.last_seq);
    if (sum.starts_chain)
        printf("the first line starts the chain (prev_sha256 is the genesis value)\n");
    else
        printf("the first line continues an earlier line with SHA-256 %s: give the file that "
               "holds it first to check that link too\n", sum.first_prev);
    printf("last line SHA-256 %s\n", sum.last_sha256);
    if (sum.watermarked)
        printf("watermarks: %llu line(s) exported to reader '%s'%s, %s\n",
               (unsigned long long)sum.watermarked, sum.reader,
               sum.several_readers ? " (and others)" : "",
               sum.watermarks_checked ? "HMAC good" : "not checked (no --hmac-key)");
    return 0;
}

int st_cmd_audit(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "verify"))
        return verify(argc, argv);
    fprintf(stderr, "strata audit: unknown subcommand '%s' (verify)\n", argv[1]);
    return 2;
}
#endif
