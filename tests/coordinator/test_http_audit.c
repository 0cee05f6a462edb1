/*
 * test_http_audit.c - the audit log with a made-up clock: the ECS line, the
 * hash chain (continued across reopen and rotation, and what the checker
 * says about removed, edited, reordered and inserted lines), daily and size
 * rotation, the retention arithmetic and sweep, watermarked exports and
 * the HMAC key file. Runs in a fresh directory under /tmp.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "http_internal.h"
#include "st_test.h"

#define DAY_MS 86400000ll
/* 2024-03-10T00:00:00Z */
#define T0 1710028800000ll

static st_http_audit_rec_t rec(int status, int64_t ts_ms)
{
    st_http_audit_rec_t r;
    memset(&r, 0, sizeof(r));
    r.ts_ms = ts_ms;
    r.client_ip = "127.0.0.1";
    r.client_port = 5555;
    r.key_id = "alice";
    r.role = "user";
    r.method = "POST";
    r.path = "/v1/completions";
    r.status = status;
    r.request_id = "abc-1";
    r.generation = 1;
    r.model = "smol";
    r.prompt_sha256 = "ab12";
    r.prompt_tokens = 3;
    r.completion_tokens = 4;
    r.response_bytes = 99;
    r.duration_ns = 1500000;
    return r;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p;
    long n;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    if (p)
        p[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return p;
}

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Feeds every line of `text` to a checker: 0 when intact, else the 1-based
 * number of the first broken line (its message into msg). */
static int check_text(const char *text, const uint8_t *key, size_t key_len, int require,
                      char *msg, size_t cap, st_http_audit_summary_t *sum)
{
    st_http_audit_check_t *c;
    st_error_t err;
    int no = 0, bad = 0;
    const char *p = text;
    if (st_http_audit_check_new(key, key_len, require, &c) != ST_OK)
        return -1;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        no++;
        st_error_clear(&err);
        if (st_http_audit_check_line(c, p, n, &err) != ST_OK) {
            snprintf(msg, cap, "%s", err.msg);
            bad = no;
            break;
        }
        p += n + (nl != NULL);
    }
    if (sum)
        st_http_audit_check_summary(c, sum);
    st_http_audit_check_free(c);
    return bad;
}

static void mkdtemp_dir(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/strata_audit_XXXXXX");
    if (!mkdtemp(dir))
        dir[0] = '\0';
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    if (!d)
        return;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static st_http_audit_params_t params(const char *path, int64_t now_ms)
{
    st_http_audit_params_t p;
    memset(&p, 0, sizeof(p));
    p.path = path;
    p.retain_days = 180;
    p.sync = 1;
    p.now_ms = now_ms;
    return p;
}

ST_TEST(ecs_line)
{
    st_http_audit_rec_t r = rec(200, T0 + 123);
    size_t len;
    char *line = st_http_audit_format(&r, 7, ST_HTTP_AUDIT_GENESIS, &len);
    json_error_t je;
    json_t *o;
    ST_REQUIRE(line && len > 0 && line[len - 1] == '\n');
    ST_CHECK(memchr(line, '\n', len - 1) == NULL);
    o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    ST_REQUIRE(o);
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "@timestamp")), "2024-03-10T00:00:00.123Z"));
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "ecs.version")), "8.11.0"));
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "event.kind")), "event"));
    ST_CHECK(!strcmp(json_string_value(json_array_get(json_object_get(o, "event.category"), 0)), "web"));
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "event.outcome")), "success"));
    ST_CHECK(json_integer_value(json_object_get(o, "event.duration")) == 1500000);
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "client.ip")), "127.0.0.1"));
    ST_CHECK(json_integer_value(json_object_get(o, "client.port")) == 5555);
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "user.id")), "alice"));
    ST_CHECK(!strcmp(json_string_value(json_array_get(json_object_get(o, "user.roles"), 0)), "user"));
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "http.request.method")), "POST"));
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "url.path")), "/v1/completions"));
    ST_CHECK(json_integer_value(json_object_get(o, "http.response.status_code")) == 200);
    ST_CHECK(json_integer_value(json_object_get(o, "http.response.body.bytes")) == 99);
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "strata.request.id")), "abc-1"));
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "strata.model")), "smol"));
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "strata.prompt_sha256")), "ab12"));
    ST_CHECK(json_integer_value(json_object_get(o, "strata.completion_tokens")) == 4);
    ST_CHECK(json_integer_value(json_object_get(o, "strata.audit.seq")) == 7);
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "strata.audit.prev_sha256")),
                     ST_HTTP_AUDIT_GENESIS));
    json_decref(o);
    free(line);

    /* a refused, keyless request: failure, no user, no generation fields;
     * odd bytes in the path stay valid JSON */
    r = rec(401, T0);
    r.key_id = "";
    r.role = "";
    r.generation = 0;
    r.path = "/x\"\\\n\xff\xc3";
    line = st_http_audit_format(&r, 1, ST_HTTP_AUDIT_GENESIS, &len);
    ST_REQUIRE(line);
    o = json_loadb(line, len, 0, &je);
    ST_REQUIRE(o);
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "event.outcome")), "failure"));
    ST_CHECK(json_object_get(o, "user.id") == NULL && json_object_get(o, "user.roles") == NULL);
    ST_CHECK(json_object_get(o, "strata.model") == NULL);
    ST_CHECK(json_object_get(o, "strata.prompt_tokens") == NULL);
    ST_CHECK(!strcmp(json_string_value(json_object_get(o, "url.path")), "/x\"\\\n\xc3\xbf\xc3\x83"));
    json_decref(o);
    free(line);
}

ST_TEST(days_and_names)
{
    int64_t d;
    uint32_t n;
    char s[11];
    ST_CHECK(st_http_audit_day(T0) == 19792);
    ST_CHECK(st_http_audit_day(T0 - 1) == 19791);
    ST_CHECK(st_http_audit_day(-1) == -1);
    st_http_audit_day_str(19792, s);
    ST_CHECK(!strcmp(s, "2024-03-10"));
    st_http_audit_day_str(0, s);
    ST_CHECK(!strcmp(s, "1970-01-01"));
    ST_CHECK(st_http_audit_day_parse("2024-02-29", &d) && d == 19782);
    ST_CHECK(!st_http_audit_day_parse("2023-02-29", &d));
    ST_CHECK(!st_http_audit_day_parse("2024-13-01", &d));
    ST_CHECK(!st_http_audit_day_parse("2024-1-01", &d));
    for (int64_t k = -800; k < 800; k += 7) {      /* round trip over leap years */
        st_http_audit_day_str(19792 + k * 3, s);
        ST_CHECK(st_http_audit_day_parse(s, &d) && d == 19792 + k * 3);
    }
    ST_CHECK(st_http_audit_rotated_name("a.log", "a.log.2024-03-10", &d, &n) && d == 19792 && n == 0);
    ST_CHECK(st_http_audit_rotated_name("a.log", "a.log.2024-03-10.3", &d, &n) && n == 3);
    ST_CHECK(!st_http_audit_rotated_name("a.log", "a.log", &d, &n));
    ST_CHECK(!st_http_audit_rotated_name("a.log", "a.log.hmac-key", &d, &n));
    ST_CHECK(!st_http_audit_rotated_name("a.log", "a.log.2024-03-10.gz", &d, &n));
    ST_CHECK(!st_http_audit_rotated_name("a.log", "a.log.2024-03-10.03", &d, &n));
    ST_CHECK(!st_http_audit_rotated_name("a.log", "a.log.2024-02-30", &d, &n));
    ST_CHECK(!st_http_audit_rotated_name("a.log", "b.log.2024-03-10", &d, &n));
    ST_CHECK(!st_http_audit_rotated_name("a.log", "a.logx2024-03-10", &d, &n));
}

ST_TEST(retention_arithmetic)
{
    /* kept while day >= today - N: every line is kept at least N days */
    ST_CHECK(!st_http_audit_expired(100, 100, 180));
    ST_CHECK(!st_http_audit_expired(100 - 180, 100, 180));
    ST_CHECK(st_http_audit_expired(100 - 181, 100, 180));
    ST_CHECK(!st_http_audit_expired(100 + 5, 100, 180));     /* a future date: kept */
    ST_CHECK(!st_http_audit_expired(-100000, 100, 0));       /* 0 keeps all */
    ST_CHECK(!st_http_audit_expired(99, 100, 1) && st_http_audit_expired(98, 100, 1));
}

ST_TEST(chain_rotation_retention)
{
    char dir[64], path[128], p[192], msg[256], *text, *all;
    st_http_audit_t *a;
    st_http_audit_params_t ap;
    st_error_t err;
    struct stat sb;
    size_t len;
    st_http_audit_summary_t sum;

    mkdtemp_dir(dir, sizeof(dir));
    ST_REQUIRE(dir[0]);
    snprintf(path, sizeof(path), "%s/audit.ndjson", dir);
    /* old rotated files around the 180-day window of 2024-03-10, and
     * files that only look similar */
    const char *old_names[] = {"2023-09-11", "2023-09-10", "2023-01-01"};  /* day-181, -182, ... */
    const char *kept_names[] = {"2023-09-12", "2024-03-09"};              /* day-180, day-1 */
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s.%s", path, old_names[i]);
        spit(p, "old\n");
    }
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s.%s", path, kept_names[i]);
        spit(p, "");
    }
    snprintf(p, sizeof(p), "%s.2020-01-01.gz", path);
    spit(p, "x");

    ap = params(path, T0 + 1000);
    ST_REQUIRE(st_http_audit_open(&ap, &a, &err) == ST_OK);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s.%s", path, old_names[i]);
        ST_CHECK_MSG(stat(p, &sb) != 0, "%s survived", p);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s.%s", path, kept_names[i]);
        ST_CHECK_MSG(stat(p, &sb) == 0, "%s removed", p);
    }
    snprintf(p, sizeof(p), "%s.2020-01-01.gz", path);
    ST_CHECK(stat(p, &sb) == 0);
    snprintf(p, sizeof(p), "%s.hmac-key", path);
    ST_CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_size == 65);
    ST_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);

    /* three lines on day 0: the first starts the chain (no chained
     * rotated file to continue from) */
    for (int i = 0; i < 3; i++) {
        st_http_audit_rec_t r = rec(200 + i, T0 + 1000 + i);
        ST_CHECK(st_http_audit_write(a, &r) == ST_OK);
    }
    st_http_audit_close(a);
    /* reopen the same day: the chain goes on */
    ST_REQUIRE(st_http_audit_open(&ap, &a, &err) == ST_OK);
    {
        st_http_audit_rec_t r = rec(203, T0 + 5000);
        ST_CHECK(st_http_audit_write(a, &r) == ST_OK);
    }
    text = slurp(path, &len);
    ST_REQUIRE(text);
    ST_CHECK(check_text(text, NULL, 0, 0, msg, sizeof(msg), &sum) == 0);
    ST_CHECK(sum.lines == 4 && sum.first_seq == 1 && sum.last_seq == 4 && sum.starts_chain);
    free(text);

    /* the first write after midnight rotates to .2024-03-10 */
    {
        st_http_audit_rec_t r = rec(204, T0 + DAY_MS + 10);
        ST_CHECK(st_http_audit_write(a, &r) == ST_OK);
    }
    snprintf(p, sizeof(p), "%s.2024-03-10", path);
    text = slurp(p, NULL);
    ST_REQUIRE(text);
    ST_CHECK(strstr(text, "\"http.response.status_code\":203") && !strstr(text, ":204,"));
    all = slurp(path, NULL);
    ST_REQUIRE(all);
    ST_CHECK(strstr(all, "\"strata.audit.seq\":5,"));
    {   /* both files in order: one chain */
        size_t n1 = strlen(text), n2 = strlen(all);
        char *both = malloc(n1 + n2 + 1);
        ST_REQUIRE(both);
        memcpy(both, text, n1);
        memcpy(both + n1, all, n2 + 1);
        ST_CHECK(check_text(both, NULL, 0, 0, msg, sizeof(msg), &sum) == 0 && sum.lines == 5);
        /* the new file alone continues an earlier one */
        ST_CHECK(check_text(all, NULL, 0, 0, msg, sizeof(msg), &sum) == 0 && !sum.starts_chain);
        free(both);
    }
    free(text);
    free(all);
    st_http_audit_close(a);

    /* start on 2024-03-13: the file of 2024-03-11 is rotated at open, and
     * with retain 2 it is kept (day-2) while 2024-03-10 and -09 go */
    ap = params(path, T0 + 3 * DAY_MS);
    ap.retain_days = 2;
    ST_REQUIRE(st_http_audit_open(&ap, &a, &err) == ST_OK);
    snprintf(p, sizeof(p), "%s.2024-03-11", path);
    ST_CHECK(stat(p, &sb) == 0 && sb.st_size > 0);
    ST_CHECK(stat(path, &sb) == 0 && sb.st_size == 0);
    snprintf(p, sizeof(p), "%s.2024-03-09", path);
    ST_CHECK(stat(p, &sb) != 0);
    snprintf(p, sizeof(p), "%s.2024-03-10", path);
    ST_CHECK(stat(p, &sb) != 0);
    {   /* the empty current file continues from the newest rotated one */
        st_http_audit_rec_t r = rec(205, T0 + 3 * DAY_MS + 1);
        ST_CHECK(st_http_audit_write(a, &r) == ST_OK);
    }
    all = slurp(path, NULL);
    ST_REQUIRE(all);
    ST_CHECK(strstr(all, "\"strata.audit.seq\":6,"));
    free(all);
    st_http_audit_close(a);
    rm_rf(dir);
}

ST_TEST(size_rotation_names_and_tail)
{
    char dir[64], path[128], p[192], *tail;
    st_http_audit_t *a;
    st_http_audit_params_t ap;
    st_error_t err;
    struct stat sb;
    size_t len;

    mkdtemp_dir(dir, sizeof(dir));
    ST_REQUIRE(dir[0]);
    snprintf(path, sizeof(path), "%s/a.log", dir);
    ap = params(path, T0);
    ap.max_bytes = 1500;               /* ~580-byte lines: two per file */
    ST_REQUIRE(st_http_audit_open(&ap, &a, &err) == ST_OK);
    for (int i = 0; i < 5; i++) {
        st_http_audit_rec_t r = rec(200 + i, T0 + i);
        ST_CHECK(st_http_audit_write(a, &r) == ST_OK);
    }
    snprintf(p, sizeof(p), "%s.2024-03-10", path);
    ST_CHECK(stat(p, &sb) == 0 && sb.st_size > 0 && sb.st_size <= 1500);
    snprintf(p, sizeof(p), "%s.2024-03-10.1", path);
    ST_CHECK(stat(p, &sb) == 0 && sb.st_size > 0);
    ST_REQUIRE(st_http_audit_tail(a, 1, &tail, &len) == ST_OK);
    ST_CHECK(strstr(tail, "\"http.response.status_code\":204") != NULL);
    ST_CHECK(strchr(tail, '\n') == tail + len - 1);   /* exactly one line */
    free(tail);
    ST_REQUIRE(st_http_audit_tail(a, 100, &tail, &len) == ST_OK);
    ST_CHECK(strstr(tail, ":204,") && !strstr(tail, ":203,"));
    free(tail);
    st_http_audit_close(a);
    rm_rf(dir);
}

ST_TEST(older_format_and_torn_line)
{
    char dir[64], path[128], p[192], msg[256], *text;
    st_http_audit_t *a;
    st_http_audit_params_t ap;
    st_error_t err;
    struct stat sb;

    mkdtemp_dir(dir, sizeof(dir));
    ST_REQUIRE(dir[0]);
    snprintf(path, sizeof(path), "%s/a.log", dir);
    /* an older strata's line, today: rotated away all the same */
    spit(path, "{\"ts\":\"2024-03-10T00:00:01.000Z\",\"status\":200}\n");
    ap = params(path, T0 + 5000);
    ST_REQUIRE(st_http_audit_open(&ap, &a, &err) == ST_OK);
    snprintf(p, sizeof(p), "%s.2024-03-10", path);
    ST_CHECK(stat(p, &sb) == 0 && sb.st_size > 0);
    {
        st_http_audit_rec_t r = rec(200, T0 + 6000);
        ST_CHECK(st_http_audit_write(a, &r) == ST_OK);
        ST_CHECK(st_http_audit_write(a, &r) == ST_OK);
    }
    st_http_audit_close(a);
    text = slurp(path, NULL);
    ST_REQUIRE(text);
    ST_CHECK(strstr(text, "\"strata.audit.seq\":1,\"strata.audit.prev_sha256\":\"" ST_HTTP_AUDIT_GENESIS));
    free(text);

    /* cut the last line short (a failed write): the next open finishes it
     * with a newline and chains from it; the checker names that line */
    text = slurp(path, NULL);
    ST_REQUIRE(text);
    text[strlen(text) - 40] = '\0';
    spit(path, text);
    free(text);
    ST_REQUIRE(st_http_audit_open(&ap, &a, &err) == ST_OK);
    {
        st_http_audit_rec_t r = rec(201, T0 + 7000);
        ST_CHECK(st_http_audit_write(a, &r) == ST_OK);
    }
    st_http_audit_close(a);
    text = slurp(path, NULL);
    ST_REQUIRE(text);
    ST_CHECK(strstr(text, "\"strata.audit.seq\":3,"));
    ST_CHECK(check_text(text, NULL, 0, 0, msg, sizeof(msg), NULL) == 2);
    free(text);
    rm_rf(dir);
}

/* Writes n chained lines into a fresh log; returns its text (caller frees). */
static char *make_log(int n, char *dir, size_t cap, char *path, size_t pcap)
{
    st_http_audit_t *a;
    st_http_audit_params_t ap;
    st_error_t err;
    char *text;
    mkdtemp_dir(dir, cap);
    snprintf(path, pcap, "%s/a.log", dir);
    ap = params(path, T0);
    if (st_http_audit_open(&ap, &a, &err) != ST_OK)
        return NULL;
    for (int i = 0; i < n; i++) {
        st_http_audit_rec_t r = rec(200 + i, T0 + i);
        st_http_audit_write(a, &r);
    }
    st_http_audit_close(a);
    text = slurp(path, NULL);
    return text;
}

/* Line i (1-based) of text as a new string. */
static char *line_of(const char *text, int i, size_t *len)
{
    const char *p = text;
    while (--i > 0 && p)
        p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL;
    if (!p)
        return NULL;
    *len = (size_t)(strchr(p, '\n') - p) + 1;
    return strndup(p, *len);
}

static char *join(char **lines, int n)
{
    size_t total = 1;
    char *out;
    for (int i = 0; i < n; i++)
        total += strlen(lines[i]);
    out = calloc(1, total);
    for (int i = 0; out && i < n; i++)
        strcat(out, lines[i]);
    return out;
}

ST_TEST(checker_finds_tampering)
{
    char dir[64], path[128], msg[256], *l[6], *order[6], *t;
    size_t len;
    st_http_audit_summary_t sum;
    char *text = make_log(6, dir, sizeof(dir), path, sizeof(path));
    ST_REQUIRE(text);
    for (int i = 0; i < 6; i++)
        ST_REQUIRE((l[i] = line_of(text, i + 1, &len)));
    ST_CHECK(check_text(text, NULL, 0, 0, msg, sizeof(msg), &sum) == 0 && sum.lines == 6);

    /* line 3 removed: the line now third says seq 4 follows seq 2 */
    char *del[5] = {l[0], l[1], l[3], l[4], l[5]};
    t = join(del, 5);
    ST_CHECK(check_text(t, NULL, 0, 0, msg, sizeof(msg), NULL) == 3);
    ST_CHECK_MSG(strstr(msg, "removed") != NULL, "%s", msg);
    free(t);
    /* lines 3 and 4 swapped: line 3 (seq 4) is where the gap shows */
    for (int i = 0; i < 6; i++)
        order[i] = l[i];
    order[2] = l[3];
    order[3] = l[2];
    t = join(order, 6);
    ST_CHECK(check_text(t, NULL, 0, 0, msg, sizeof(msg), NULL) == 3);
    ST_CHECK_MSG(strstr(msg, "reordered") != NULL, "%s", msg);
    free(t);
    /* line 3 duplicated (inserted) */
    char *ins[7] = {l[0], l[1], l[2], l[2], l[3], l[4], l[5]};
    t = join(ins, 7);
    ST_CHECK(check_text(t, NULL, 0, 0, msg, sizeof(msg), NULL) == 4);
    free(t);
    /* line 3 edited (status 202 -> 299): line 4 no longer chains to it */
    char *ed = strdup(l[2]);
    ST_REQUIRE(ed && strstr(ed, ":202,"));
    memcpy(strstr(ed, ":202,"), ":299,", 5);
    for (int i = 0; i < 6; i++)
        order[i] = l[i];
    order[2] = ed;
    t = join(order, 6);
    ST_CHECK(check_text(t, NULL, 0, 0, msg, sizeof(msg), NULL) == 4);
    ST_CHECK_MSG(strstr(msg, "edited") != NULL, "%s", msg);
    free(t);
    free(ed);
    /* the first line removed: the rest is consistent, but no longer starts
     * the chain - the summary says so */
    t = join(l + 1, 5);
    ST_CHECK(check_text(t, NULL, 0, 0, msg, sizeof(msg), &sum) == 0 && !sum.starts_chain &&
             sum.first_seq == 2);
    free(t);
    for (int i = 0; i < 6; i++)
        free(l[i]);
    free(text);
    rm_rf(dir);
}

ST_TEST(export_watermarks)
{
    char dir[64], path[128], p[192], msg[256], *text, *ex;
    st_http_audit_t *a;
    st_http_audit_params_t ap;
    st_error_t err;
    uint8_t key[ST_HTTP_AUDIT_KEY_MAX], other[ST_HTTP_AUDIT_KEY_MAX];
    size_t key_len, other_len, len;
    int created = 0;
    st_http_audit_summary_t sum;

    text = make_log(4, dir, sizeof(dir), path, sizeof(path));
    ST_REQUIRE(text);
    snprintf(p, sizeof(p), "%s.hmac-key", path);
    ST_REQUIRE(st_http_audit_key_load(p, 1, key, &key_len, &created, &err) == ST_OK);
    ST_CHECK(!created && key_len == 64);
    ap = params(path, T0 + 100);
    ST_REQUIRE(st_http_audit_open(&ap, &a, &err) == ST_OK);
    ST_REQUIRE(st_http_audit_export(a, 3, "auditor1", &ex, &len) == ST_OK);
    st_http_audit_close(a);
    ST_CHECK(strstr(ex, "\"strata.export.reader_id\":\"auditor1\""));
    ST_CHECK(check_text(ex, key, key_len, 1, msg, sizeof(msg), &sum) == 0);
    ST_CHECK(sum.lines == 3 && sum.watermarked == 3 && sum.watermarks_checked &&
             !strcmp(sum.reader, "auditor1") && sum.first_seq == 2);
    /* the logged lines themselves fail when a watermark is required */
    ST_CHECK(check_text(text, key, key_len, 1, msg, sizeof(msg), NULL) == 1);
    /* without a key: the chain is still checked, the marks are not */
    ST_CHECK(check_text(ex, NULL, 0, 0, msg, sizeof(msg), &sum) == 0 && !sum.watermarks_checked);
    /* another reader named */
    {
        char *t = strdup(ex), *q = strstr(t, "auditor1");
        memcpy(q, "auditor2", 8);
        ST_CHECK(check_text(t, key, key_len, 1, msg, sizeof(msg), NULL) == 1);
        ST_CHECK_MSG(strstr(msg, "watermark") != NULL, "%s", msg);
        free(t);
    }
    /* a line changed (its status) */
    {
        char *t = strdup(ex), *q = strstr(strchr(t, '\n') + 1, "\"http.response.status_code\":20");
        q[strlen("\"http.response.status_code\":20")] = '9';
        ST_CHECK(check_text(t, key, key_len, 1, msg, sizeof(msg), NULL) == 2);
        free(t);
    }
    /* the wrong key */
    snprintf(p, sizeof(p), "%s/other.key", dir);
    ST_REQUIRE(st_http_audit_key_load(p, 1, other, &other_len, &created, &err) == ST_OK);
    ST_CHECK(created && memcmp(other, key, 16) != 0);
    ST_CHECK(check_text(ex, other, other_len, 1, msg, sizeof(msg), NULL) == 1);
    /* short keys are refused */
    snprintf(p, sizeof(p), "%s/short.key", dir);
    spit(p, "tooshort\n");
    ST_CHECK(st_http_audit_key_load(p, 0, other, &other_len, NULL, &err) == ST_ERR_FORMAT);
    free(ex);
    free(text);
    rm_rf(dir);
}

int main(void) { return st_test_main(); }
