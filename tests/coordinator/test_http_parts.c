/*
 * test_http_parts.c - the front door's small parts: the token bucket, metrics
 * rendering, error objects and the JSON escaper, and option parsing.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "http_internal.h"
#include "st_test.h"

ST_TEST(bucket_burst_then_rate)
{
    st_http_bucket_t b = {0};
    uint64_t t = 1000000000ull;
    uint32_t retry = 0;
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += st_http_bucket_take(&b, 5.0, 10.0, t, &retry);
    ST_CHECK(ok == 10);                       /* the burst, then refused */
    ST_CHECK(retry == 1);
    ST_CHECK(!st_http_bucket_take(&b, 5.0, 10.0, t + 100000000ull, &retry));
    ST_CHECK(st_http_bucket_take(&b, 5.0, 10.0, t + 200000000ull, &retry));  /* 0.2 s = 1 token */
    ST_CHECK(!st_http_bucket_take(&b, 5.0, 10.0, t + 200000000ull, &retry));
    /* a slow rate gives a longer Retry-After */
    st_http_bucket_t s = {0};
    ST_CHECK(st_http_bucket_take(&s, 0.25, 1.0, t, &retry));
    ST_CHECK(!st_http_bucket_take(&s, 0.25, 1.0, t, &retry) && retry == 4);
}

/* The audit log has its own test: test_http_audit.c. */

ST_TEST(metrics_render)
{
    st_http_metrics_t m;
    st_engine_stats_t es;
    st_http_stage_stats_t st[2];
    st_http_metrics_view_t v;
    size_t len;
    char *t;

    st_http_metrics_init(&m);
    st_http_metrics_request(&m, ST_HTTP_EP_COMPLETIONS, 200);
    st_http_metrics_request(&m, ST_HTTP_EP_COMPLETIONS, 200);
    st_http_metrics_request(&m, ST_HTTP_EP_CHAT, 429);
    st_http_hist_observe(&m.ttft, 0.03);
    st_http_hist_observe(&m.ttft, 100.0);
    memset(&es, 0, sizeof(es));
    es.queued = 7;
    es.running = 2;
    es.n_slots = 8;
    es.healthy = 1;
    memset(st, 0, sizeof(st));
    st[0].up = 1;
    st[1].stage = 1;
    st[0].bytes_sent = 1234;
    memset(&v, 0, sizeof(v));
    v.engine = &es;
    v.stages = st;
    v.n_stages = 2;
    t = st_http_metrics_render(&m, &v, &len);
    ST_REQUIRE(t && strlen(t) == len);
    ST_CHECK(strstr(t, "strata_http_requests_total{endpoint=\"/v1/completions\",code=\"200\"} 2\n"));
    ST_CHECK(strstr(t, "strata_http_requests_total{endpoint=\"/v1/chat/completions\",code=\"429\"} 1\n"));
    ST_CHECK(strstr(t, "strata_time_to_first_token_seconds_bucket{le=\"0.025\"} 0\n"));
    ST_CHECK(strstr(t, "strata_time_to_first_token_seconds_bucket{le=\"0.05\"} 1\n"));
    ST_CHECK(strstr(t, "strata_time_to_first_token_seconds_bucket{le=\"60\"} 1\n"));
    ST_CHECK(strstr(t, "strata_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"));
    ST_CHECK(strstr(t, "strata_time_to_first_token_seconds_count 2\n"));
    ST_CHECK(strstr(t, "strata_queue_depth 7\n"));
    ST_CHECK(strstr(t, "strata_kv_slots_free 6\n"));
    ST_CHECK(strstr(t, "strata_worker_up{stage=\"1\"} 0\n"));
    ST_CHECK(strstr(t, "strata_workers_up 1\n"));
    ST_CHECK(strstr(t, "strata_link_sent_bytes_total{from=\"0\",to=\"1\"} 1234\n"));
    /* every sample line's family has HELP and TYPE */
    ST_CHECK(strstr(t, "# TYPE strata_hop_latency_seconds gauge\n"));
    free(t);
}

ST_TEST(error_objects_are_json)
{
    char *e = st_http_json_error("bad \"x\"\n\xff", "invalid_request_error", "top_p", NULL);
    json_error_t je;
    json_t *o;
    ST_REQUIRE(e);
    o = json_loads(e, 0, &je);
    ST_REQUIRE(o);
    json_t *err = json_object_get(o, "error");
    ST_CHECK(strcmp(json_string_value(json_object_get(err, "param")), "top_p") == 0);
    ST_CHECK(json_is_null(json_object_get(err, "code")));
    ST_CHECK(strncmp(json_string_value(json_object_get(err, "message")), "bad \"x\"\n?", 9) == 0);
    json_decref(o);
    free(e);
    ST_CHECK(strcmp(st_http_error_type(429), "rate_limit_error") == 0);
    ST_CHECK(strcmp(st_http_error_type(413), "invalid_request_error") == 0);
}

ST_TEST(json_escaper)
{
    st_http_buf_t b = {0};
    const char s[] = "a\"b\\c\x01\t\xc3\xa9";
    json_t *o;
    st_http_buf_json_str(&b, s, sizeof(s) - 1);
    o = json_loadb(b.p, b.len, JSON_DECODE_ANY, NULL);
    ST_REQUIRE(o && json_is_string(o));
    ST_CHECK(json_string_length(o) == sizeof(s) - 1 && memcmp(json_string_value(o), s, sizeof(s) - 1) == 0);
    json_decref(o);
    st_http_buf_free(&b);
}

ST_TEST(options)
{
    st_http_config_t c = st_http_config_default();
    char *argv[] = {"serve", "--port", "9000", "--host", "0.0.0.0", "--bogus", "--port", "x",
                    "--user-rate", "2.5", "--allow-public", "--tls-cert", NULL};
    int argc = 12, i = 1;
    st_error_t err;
    ST_CHECK(c.port == 8080 && strcmp(c.host, "127.0.0.1") == 0 && c.max_body == 1048576);
    ST_CHECK(st_http_config_parse_opt(&c, argc, argv, &i, &err) == ST_OK && i == 2 && c.port == 9000);
    i = 3;
    ST_CHECK(st_http_config_parse_opt(&c, argc, argv, &i, &err) == ST_OK);
    ST_CHECK(st_http_config_check(&c, &err) == ST_ERR_INVALID);   /* public without keys */
    i = 5;
    ST_CHECK(st_http_config_parse_opt(&c, argc, argv, &i, &err) == ST_ERR_NOT_FOUND && i == 5);
    i = 6;
    ST_CHECK(st_http_config_parse_opt(&c, argc, argv, &i, &err) == ST_ERR_RANGE);
    i = 8;
    ST_CHECK(st_http_config_parse_opt(&c, argc, argv, &i, &err) == ST_OK && c.user_rate == 2.5);
    i = 10;
    ST_CHECK(st_http_config_parse_opt(&c, argc, argv, &i, &err) == ST_OK && c.allow_public);
    ST_CHECK(st_http_config_check(&c, &err) == ST_OK);
    i = 11;
    ST_CHECK(st_http_config_parse_opt(&c, argc, argv, &i, &err) == ST_ERR_INVALID);
    c.tls_cert = "c.pem";
    ST_CHECK(st_http_config_check(&c, &err) == ST_ERR_INVALID);   /* cert without key */
}

int main(void) { return st_test_main(); }
