/*
 * test_plan_workers.c - the workers file parser: a valid file read field by
 * field, and each kind of mistake refused with the line and field named.
 */
#include <string.h>

#include "st_plan.h"
#include "st_test.h"

static st_status_t parse(const char *text, st_plan_workers_t **ws, st_error_t *err)
{
    return st_plan_workers_parse(text, strlen(text), "w.txt", ws, err);
}

ST_TEST(valid_file)
{
    const char *text =
        "# two hosts\n"
        "worker a mem=22GiB speed=1.0 host=node1   # first\n"
        "\n"
        "  worker\tb memory=512M speed=0.5 host=node2\r\n"
        "worker c mem=1073741824\n"
        "link a b 12.5\n"
        "link a c 3\n"
        "link c b 7\n";
    st_plan_workers_t *ws;
    st_error_t err;
    ST_REQUIRE(parse(text, &ws, &err) == ST_OK);
    ST_REQUIRE(st_plan_workers_count(ws) == 3);
    const st_plan_worker_t *w = st_plan_workers_array(ws);
    ST_CHECK(!strcmp(w[0].name, "a") && !strcmp(w[0].host, "node1"));
    ST_CHECK(w[0].mem_bytes == 22ull << 30 && w[0].speed == 1.0);
    ST_CHECK(!strcmp(w[1].name, "b") && w[1].mem_bytes == 512ull << 20 && w[1].speed == 0.5);
    ST_CHECK(!strcmp(w[2].name, "c") && w[2].host[0] == 0 && w[2].speed == 1.0);
    ST_CHECK(w[2].mem_bytes == 1073741824ull);
    const double *lat = st_plan_workers_latency(ws);
    ST_REQUIRE(lat != NULL);
    ST_CHECK(lat[0 * 3 + 1] == 12.5 && lat[1 * 3 + 0] == 12.5);
    ST_CHECK(lat[0 * 3 + 2] == 3 && lat[2 * 3 + 1] == 7 && lat[1 * 3 + 2] == 7 && lat[1 * 3 + 1] == 0);
    st_plan_workers_free(ws);

    ST_REQUIRE(parse("worker x mem=1G\n", &ws, &err) == ST_OK);
    ST_CHECK(st_plan_workers_latency(ws) == NULL);
    st_plan_workers_free(ws);
}

ST_TEST(mistakes_are_named)
{
    static const struct { const char *text, *expect; } cases[] = {
        {"", "no 'worker' lines"},
        {"worker a speed=1\n", "w.txt:1: worker 'a': mem= is required"},
        {"worker a mem=1G\nworker a mem=2G\n", "w.txt:2: worker 'a' defined twice"},
        {"worker a mem=12X\n", "w.txt:1: worker 'a': mem '12X'"},
        {"worker a mem=-5\n", "mem '-5'"},
        {"worker a mem=99999999999T\n", "mem '99999999999T'"},
        {"worker a mem=1G speed=0\n", "speed '0' must be a positive number"},
        {"worker a mem=1G speed=fast\n", "speed 'fast'"},
        {"worker a mem=1G speed=inf\n", "speed 'inf'"},
        {"worker a mem=1G colour=red\n", "unknown key 'colour'"},
        {"worker a mem=1G junk\n", "'junk' is not key=value"},
        {"worker\n", "w.txt:1: 'worker' needs a name"},
        {"worker bad!name mem=1G\n", "worker name 'bad!name'"},
        {"worker a mem=1G host=x y\n", "'y' is not key=value"},
        {"gpu a mem=1G\n", "w.txt:1: unknown line 'gpu'"},
        {"worker a mem=1G\nlink a b 3\nworker b mem=1G\n", "w.txt:2: link names unknown worker 'b'"},
        {"worker a mem=1G\nworker b mem=1G\nlink a b -3\n", "w.txt:3: link a b: latency '-3'"},
        {"worker a mem=1G\nworker b mem=1G\nlink a a 3\n", "link from 'a' to itself"},
        {"worker a mem=1G\nworker b mem=1G\nlink a b\n", "expected 'link A B MICROSECONDS'"},
        {"worker a mem=1G\nworker b mem=1G\nworker c mem=1G\nlink a b 1\nlink b c 1\n",
         "none for a c (every pair needs one)"},
        {"worker a mem=1G\nworker b mem=1G\nlink a b 1\nlink b a 2\n", "w.txt:4: link b a given twice"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        st_plan_workers_t *ws = NULL;
        st_error_t err = {{0}};
        st_status_t s = parse(cases[i].text, &ws, &err);
        ST_CHECK_MSG(s == ST_ERR_FORMAT && ws == NULL, "case %zu: status %d", i, s);
        ST_CHECK_MSG(strstr(err.msg, cases[i].expect) != NULL, "case %zu: '%s' lacks '%s'", i, err.msg, cases[i].expect);
    }
    st_plan_workers_t *ws = NULL;
    st_error_t err;
    ST_CHECK(st_plan_workers_parse("worker a\0 mem=1G", 16, "w.txt", &ws, &err) == ST_ERR_FORMAT);
    ST_CHECK(st_plan_workers_load("/nonexistent/workers.txt", &ws, &err) == ST_ERR_IO);
    ST_CHECK(strstr(err.msg, "/nonexistent/workers.txt") != NULL);
}

ST_TEST(sizes)
{
    uint64_t v;
    ST_CHECK(st_plan_parse_size("0", &v) == 0 && v == 0);
    ST_CHECK(st_plan_parse_size("1K", &v) == 0 && v == 1024);
    ST_CHECK(st_plan_parse_size("3MiB", &v) == 0 && v == 3ull << 20);
    ST_CHECK(st_plan_parse_size("1.5GiB", &v) == 0 && v == 3ull << 29);
    ST_CHECK(st_plan_parse_size("2T", &v) == 0 && v == 2ull << 40);
    ST_CHECK(st_plan_parse_size("18446744073709551615", &v) == 0 && v == UINT64_MAX);
    ST_CHECK(st_plan_parse_size("18446744073709551616", &v) != 0);
    ST_CHECK(st_plan_parse_size("16777216T", &v) != 0);
    ST_CHECK(st_plan_parse_size("1GB", &v) != 0);
    ST_CHECK(st_plan_parse_size("", &v) != 0);
    ST_CHECK(st_plan_parse_size("G", &v) != 0);
    ST_CHECK(st_plan_parse_size(" 1", &v) != 0);
}

int main(void) { return st_test_main(); }
