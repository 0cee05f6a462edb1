/*
 * test_http_request.c - request bodies into st_gen_request_t: the happy
 * paths of the three APIs and every bad input the issue lists, with the
 * field named in `param` as OpenAI does.
 */
#include <string.h>

#include "http_internal.h"
#include "st_test.h"

static const st_http_parse_limits_t lim = {4, 256};

static st_status_t parse(st_http_gen_t *g, st_http_api_t api, const char *body, char *param,
                         st_error_t *err)
{
    return st_http_gen_parse(g, api, body, strlen(body), &lim, param, err);
}

/* Parses, expects failure with `st` and `field`, frees. */
static int bad(st_http_api_t api, const char *body, st_status_t st, const char *field)
{
    st_http_gen_t g;
    char param[64];
    st_error_t err;
    st_status_t got = parse(&g, api, body, param, &err);
    int ok = got == st && strcmp(param, field) == 0 && err.msg[0] != '\0';
    if (!ok)
        fprintf(stderr, "  body %s: status %d param '%s' msg '%s'\n", body, got, param, err.msg);
    st_http_gen_free(&g);
    return ok;
}

ST_TEST(completion_fields)
{
    st_http_gen_t g;
    char param[64];
    st_error_t err;
    ST_REQUIRE(parse(&g, ST_HTTP_API_COMPLETIONS,
                     "{\"model\":\"m\",\"prompt\":\"Hello\",\"max_tokens\":7,\"temperature\":0,"
                     "\"top_p\":0.5,\"top_k\":3,\"seed\":42,\"stop\":[\"a\",\"bc\"],\"n\":2,"
                     "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                     param, &err) == ST_OK);
    ST_CHECK(strcmp(g.model, "m") == 0);
    ST_CHECK(strcmp(g.req.prompt, "Hello") == 0);
    ST_CHECK(g.req.max_tokens == 7);
    ST_CHECK(g.req.sampling.temperature == 0.0f);
    ST_CHECK(g.req.sampling.top_p == 0.5f);
    ST_CHECK(g.req.sampling.top_k == 3);
    ST_CHECK(g.req.sampling.seed == 42 && g.has_seed);
    ST_CHECK(strcmp(g.req.stop[0], "a") == 0 && strcmp(g.req.stop[1], "bc") == 0);
    ST_CHECK(g.req.stop[2] == NULL);
    ST_CHECK(g.n == 2 && g.stream && g.include_usage);
    st_http_gen_free(&g);
}

ST_TEST(completion_defaults)
{
    st_http_gen_t g;
    char param[64];
    st_error_t err;
    ST_REQUIRE(parse(&g, ST_HTTP_API_COMPLETIONS, "{\"prompt\":[\"x\"]}", param, &err) == ST_OK);
    ST_CHECK(g.model == NULL);
    ST_CHECK(strcmp(g.req.prompt, "x") == 0);
    ST_CHECK(g.req.max_tokens == 16);          /* OpenAI's default for completions */
    ST_CHECK(g.req.sampling.temperature == 1.0f);
    ST_CHECK(g.n == 1 && !g.stream && !g.has_seed);
    st_http_gen_free(&g);
}

ST_TEST(chat_messages)
{
    st_http_gen_t g;
    char param[64];
    st_error_t err;
    ST_REQUIRE(parse(&g, ST_HTTP_API_CHAT,
                     "{\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
                     "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},"
                     "{\"type\":\"text\",\"text\":\"there\"}]},{\"role\":\"assistant\","
                     "\"content\":null}],\"max_completion_tokens\":3}",
                     param, &err) == ST_OK);
    ST_REQUIRE(g.req.n_messages == 3);
    ST_CHECK(strcmp(g.req.messages[0].role, "system") == 0);
    ST_CHECK(strcmp(g.req.messages[1].content, "Hi there") == 0);
    ST_CHECK(strcmp(g.req.messages[2].content, "") == 0);
    ST_CHECK(g.req.max_tokens == 3);
    ST_CHECK(g.req.prompt == NULL);
    st_http_gen_free(&g);
}

ST_TEST(generate_api)
{
    st_http_gen_t g;
    char param[64];
    st_error_t err;
    ST_REQUIRE(parse(&g, ST_HTTP_API_GENERATE, "{\"prompt\":\"p\",\"max_length\":5}", param,
                     &err) == ST_OK);
    ST_CHECK(g.req.max_tokens == 5);
    st_http_gen_free(&g);
    ST_CHECK(bad(ST_HTTP_API_GENERATE, "{\"prompt\":\"p\",\"max_length\":0}", ST_ERR_RANGE,
                 "max_length"));
    ST_CHECK(bad(ST_HTTP_API_GENERATE, "{\"prompt\":\"p\",\"stream\":true}", ST_ERR_RANGE,
                 "stream"));
}

ST_TEST(malformed)
{
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "", ST_ERR_FORMAT, ""));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":", ST_ERR_FORMAT, ""));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "[1,2]", ST_ERR_TYPE, ""));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"prompt\":\"b\"}", ST_ERR_FORMAT, ""));
    /* invalid UTF-8 inside a string, and an escaped NUL */
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"\xff\xfe\"}", ST_ERR_FORMAT, ""));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"\xc3\"}", ST_ERR_FORMAT, ""));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\\u0000b\"}", ST_ERR_FORMAT, ""));
}

ST_TEST(wrong_types)
{
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{}", ST_ERR_FORMAT, "prompt"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":5}", ST_ERR_TYPE, "prompt"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"\"}", ST_ERR_RANGE, "prompt"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"model\":1}", ST_ERR_TYPE, "model"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"max_tokens\":\"5\"}", ST_ERR_TYPE,
                 "max_tokens"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"max_tokens\":1.5}", ST_ERR_TYPE,
                 "max_tokens"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"temperature\":\"hot\"}",
                 ST_ERR_TYPE, "temperature"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"stream\":1}", ST_ERR_TYPE, "stream"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"stop\":[1]}", ST_ERR_TYPE, "stop"));
    ST_CHECK(bad(ST_HTTP_API_CHAT, "{\"messages\":{}}", ST_ERR_TYPE, "messages"));
    ST_CHECK(bad(ST_HTTP_API_CHAT, "{\"messages\":[]}", ST_ERR_RANGE, "messages"));
    ST_CHECK(bad(ST_HTTP_API_CHAT, "{\"messages\":[5]}", ST_ERR_TYPE, "messages[0]"));
    ST_CHECK(bad(ST_HTTP_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}",
                 ST_ERR_TYPE, "messages[0].content"));
    ST_CHECK(bad(ST_HTTP_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
                 "{\"role\":\"wizard\",\"content\":\"b\"}]}", ST_ERR_RANGE, "messages[1].role"));
}

ST_TEST(ranges_name_the_field)
{
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"temperature\":-0.1}", ST_ERR_RANGE,
                 "temperature"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"top_p\":0}", ST_ERR_RANGE, "top_p"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"top_p\":1.01}", ST_ERR_RANGE, "top_p"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"max_tokens\":0}", ST_ERR_RANGE,
                 "max_tokens"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"max_tokens\":-3}", ST_ERR_RANGE,
                 "max_tokens"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"n\":5}", ST_ERR_RANGE, "n"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"n\":0}", ST_ERR_RANGE, "n"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"top_k\":-2}", ST_ERR_RANGE, "top_k"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"seed\":-1}", ST_ERR_RANGE, "seed"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
                 ST_ERR_RANGE, "stop"));
    ST_CHECK(bad(ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"presence_penalty\":3}", ST_ERR_RANGE,
                 "presence_penalty"));
    /* the edges that are allowed */
    {
        st_http_gen_t g;
        char param[64];
        st_error_t err;
        ST_CHECK(parse(&g, ST_HTTP_API_COMPLETIONS, "{\"prompt\":\"a\",\"top_p\":1,\"n\":4,"
                       "\"temperature\":0,\"max_tokens\":1,\"top_k\":-1}", param, &err) == ST_OK);
        ST_CHECK(g.req.sampling.top_k == 0);
        st_http_gen_free(&g);
    }
}

int main(void) { return st_test_main(); }
