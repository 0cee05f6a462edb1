/*
 * request.c - OpenAI request bodies into st_gen_request_t (see
 * http_internal.h). Everything here reads outside input: every field is
 * checked for type and range with a message that names it, as OpenAI does.
 */
#include "http_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define FAIL(st_, field_, ...)                                               \
    do {                                                                     \
        snprintf(param, 64, "%s", field_);                                   \
        return st_error_set(err, st_, __VA_ARGS__);                          \
    } while (0)

void st_http_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char h[32];
    unsigned int len = 32;
    EVP_Digest(p, n, h, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

void st_http_gen_free(st_http_gen_t *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_owned; i++)
        free(g->owned[i]);
    free(g->owned);
    free(g->msgs);
    if (g->root)
        json_decref(g->root);
    memset(g, 0, sizeof(*g));
}

/* A JSON integer, or a float with an integral value (some clients send 16.0). */
static int get_int(json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) < 9e15) {
            *out = (long long)d;
            return 1;
        }
    }
    return 0;
}

/* Optional number field; 0 when absent or null, 1 when read, -1 wrong type. */
static int opt_number(json_t *root, const char *k, double *out)
{
    json_t *v = json_object_get(root, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return 1;
}

static int opt_int(json_t *root, const char *k, long long *out)
{
    json_t *v = json_object_get(root, k);
    if (!v || json_is_null(v))
        return 0;
    return get_int(v, out) ? 1 : -1;
}

static st_status_t own(st_http_gen_t *g, char *s)
{
    char **o = realloc(g->owned, (g->n_owned + 1) * sizeof(*o));
    if (!o) {
        free(s);
        return ST_ERR_NOMEM;
    }
    g->owned = o;
    g->owned[g->n_owned++] = s;
    return ST_OK;
}

/* A message's content: a string, or an array of {"type":"text","text":...}
 * parts that are joined. */
static st_status_t message_content(st_http_gen_t *g, json_t *c, size_t i, const char **out,
                                   char *param, st_error_t *err)
{
    char field[64];
    size_t total = 0, k;
    json_t *part;
    char *s;

    snprintf(field, sizeof(field), "messages[%zu].content", i);
    if (json_is_string(c)) {
        *out = json_string_value(c);
        return ST_OK;
    }
    if (!json_is_array(c))
        FAIL(ST_ERR_TYPE, field, "%s must be a string or an array of text parts", field);
    json_array_foreach(c, k, part) {
        json_t *t = json_object_get(part, "text");
        json_t *ty = json_object_get(part, "type");
        if (!json_is_object(part) || !json_is_string(ty) ||
            strcmp(json_string_value(ty), "text") != 0 || !json_is_string(t))
            FAIL(ST_ERR_TYPE, field, "%s[%zu] must be {\"type\": \"text\", \"text\": string}",
                 field, k);
        total += json_string_length(t);
    }
    s = malloc(total + 1);
    if (!s || own(g, s) != ST_OK)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    total = 0;
    json_array_foreach(c, k, part) {
        json_t *t = json_object_get(part, "text");
        memcpy(s + total, json_string_value(t), json_string_length(t));
        total += json_string_length(t);
    }
    s[total] = '\0';
    *out = s;
    return ST_OK;
}

static st_status_t parse_messages(st_http_gen_t *g, json_t *msgs, char *param, st_error_t *err)
{
    size_t n, i;
    json_t *m;
    st_status_t st;

    if (!msgs)
        FAIL(ST_ERR_FORMAT, "messages", "'messages' is required");
    if (!json_is_array(msgs))
        FAIL(ST_ERR_TYPE, "messages", "'messages' must be an array");
    n = json_array_size(msgs);
    if (n == 0)
        FAIL(ST_ERR_RANGE, "messages", "'messages' must not be empty");
    if (n > ST_HTTP_MAX_MSGS)
        FAIL(ST_ERR_RANGE, "messages", "'messages' has %zu entries, at most %d are allowed",
             n, ST_HTTP_MAX_MSGS);
    g->msgs = calloc(n, sizeof(*g->msgs));
    if (!g->msgs)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    json_array_foreach(msgs, i, m) {
        char field[64];
        json_t *role = json_object_get(m, "role");
        json_t *content = json_object_get(m, "content");
        const char *r;

        snprintf(field, sizeof(field), "messages[%zu]", i);
        if (!json_is_object(m))
            FAIL(ST_ERR_TYPE, field, "%s must be an object", field);
        snprintf(field, sizeof(field), "messages[%zu].role", i);
        if (!json_is_string(role))
            FAIL(ST_ERR_TYPE, field, "%s must be a string", field);
        r = json_string_value(role);
        if (!strcmp(r, "developer"))    /* OpenAI's newer name for system */
            r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            FAIL(ST_ERR_RANGE, field, "%s must be 'system', 'user' or 'assistant', not '%.32s'",
                 field, r);
        if (!content || json_is_null(content)) {
            g->msgs[i].content = "";
        } else if ((st = message_content(g, content, i, &g->msgs[i].content, param, err)) != ST_OK) {
            return st;
        }
        g->msgs[i].role = r;
    }
    g->req.messages = g->msgs;
    g->req.n_messages = n;
    return ST_OK;
}

static st_status_t parse_prompt(st_http_gen_t *g, json_t *p, const char *name, char *param,
                                st_error_t *err)
{
    if (!p)
        FAIL(ST_ERR_FORMAT, name, "'%s' is required", name);
    /* OpenAI also takes a list; one string in a list is the same request. */
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (!json_is_string(p))
        FAIL(ST_ERR_TYPE, name, "'%s' must be a string (token arrays and several prompts "
             "are not supported)", name);
    if (json_string_length(p) == 0)
        FAIL(ST_ERR_RANGE, name, "'%s' must not be empty", name);
    g->req.prompt = json_string_value(p);
    return ST_OK;
}

static st_status_t parse_stop(st_http_gen_t *g, json_t *s, char *param, st_error_t *err)
{
    size_t i, n = 0;
    json_t *v;

    if (!s || json_is_null(s))
        return ST_OK;
    if (json_is_string(s)) {
        if (json_string_length(s))
            g->req.stop[n++] = json_string_value(s);
    } else if (json_is_array(s)) {
        if (json_array_size(s) > ST_HTTP_MAX_STOPS)
            FAIL(ST_ERR_RANGE, "stop", "'stop' has %zu strings, at most %d are allowed",
                 json_array_size(s), ST_HTTP_MAX_STOPS);
        json_array_foreach(s, i, v) {
            if (!json_is_string(v))
                FAIL(ST_ERR_TYPE, "stop", "'stop' must be a string or an array of strings");
            if (json_string_length(v))
                g->req.stop[n++] = json_string_value(v);
        }
    } else {
        FAIL(ST_ERR_TYPE, "stop", "'stop' must be a string or an array of strings");
    }
    for (i = 0; i < n; i++)
        if (strlen(g->req.stop[i]) > 256)
            FAIL(ST_ERR_RANGE, "stop", "stop strings are limited to 256 bytes");
    g->req.stop[n] = NULL;
    return ST_OK;
}

st_status_t st_http_gen_parse(st_http_gen_t *g, st_http_api_t api, const char *body, size_t len,
                              const st_http_parse_limits_t *lim, char *param, st_error_t *err)
{
    json_error_t jerr;
    json_t *root, *v;
    double d;
    long long ll;
    int r;
    st_status_t st;

    memset(g, 0, sizeof(*g));
    param[0] = '\0';
    g->api = api;
    g->req = st_gen_request_default();
    g->n = 1;
    /* OpenAI's defaults for the /v1 API; /generate keeps the engine's. */
    if (api != ST_HTTP_API_GENERATE) {
        g->req.sampling.temperature = 1.0f;
        g->req.sampling.top_p = 1.0f;
        g->req.sampling.top_k = 0;
        g->req.sampling.repeat_penalty = 1.0f;
    }
    g->req.max_tokens = api == ST_HTTP_API_COMPLETIONS ? 16 : lim->default_max_tokens;

    if (len == 0)
        FAIL(ST_ERR_FORMAT, "", "the request body is empty; send a JSON object");
    /* jansson rejects invalid UTF-8 and \u0000 (without JSON_ALLOW_NUL). */
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        FAIL(ST_ERR_FORMAT, "", "invalid JSON at line %d column %d: %s", jerr.line,
             jerr.column, jerr.text);
    g->root = root;
    if (!json_is_object(root))
        FAIL(ST_ERR_TYPE, "", "the request body must be a JSON object");

    v = json_object_get(root, "model");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            FAIL(ST_ERR_TYPE, "model", "'model' must be a string");
        g->model = json_string_value(v);
    }

    if (api == ST_HTTP_API_CHAT)
        st = parse_messages(g, json_object_get(root, "messages"), param, err);
    else
        st = parse_prompt(g, json_object_get(root, "prompt"), "prompt", param, err);
    if (st != ST_OK)
        return st;

    if (api == ST_HTTP_API_GENERATE) {
        if ((r = opt_int(root, "max_length", &ll)) < 0)
            FAIL(ST_ERR_TYPE, "max_length", "'max_length' must be an integer");
        if (r && ll < 1)
            FAIL(ST_ERR_RANGE, "max_length", "'max_length' must be at least 1, got %lld", ll);
        if (r && ll > 1000000)
            FAIL(ST_ERR_RANGE, "max_length", "'max_length' is too large: %lld", ll);
        if (r)
            g->req.max_tokens = (uint32_t)ll;
    }
    {
        const char *mt = "max_tokens";
        r = opt_int(root, mt, &ll);
        if (r == 0 && api == ST_HTTP_API_CHAT) {
            mt = "max_completion_tokens";
            r = opt_int(root, mt, &ll);
        }
        if (r < 0)
            FAIL(ST_ERR_TYPE, mt, "'%s' must be an integer", mt);
        if (r && ll < 1)
            FAIL(ST_ERR_RANGE, mt, "'%s' must be at least 1, got %lld", mt, ll);
        if (r && ll > 1000000)
            FAIL(ST_ERR_RANGE, mt, "'%s' is too large: %lld", mt, ll);
        if (r)
            g->req.max_tokens = (uint32_t)ll;
    }
    if ((r = opt_number(root, "temperature", &d)) < 0)
        FAIL(ST_ERR_TYPE, "temperature", "'temperature' must be a number");
    if (r && (d < 0 || d > 100 || isnan(d)))
        FAIL(ST_ERR_RANGE, "temperature", "'temperature' must be >= 0, got %g", d);
    if (r)
        g->req.sampling.temperature = (float)d;
    if ((r = opt_number(root, "top_p", &d)) < 0)
        FAIL(ST_ERR_TYPE, "top_p", "'top_p' must be a number");
    if (r && !(d > 0 && d <= 1))
        FAIL(ST_ERR_RANGE, "top_p", "'top_p' must be in (0, 1], got %g", d);
    if (r)
        g->req.sampling.top_p = (float)d;
    if ((r = opt_int(root, "top_k", &ll)) < 0)
        FAIL(ST_ERR_TYPE, "top_k", "'top_k' must be an integer");
    if (r && (ll < -1 || ll > 1000000))
        FAIL(ST_ERR_RANGE, "top_k", "'top_k' must be -1 or 0 (off) or positive, got %lld", ll);
    if (r)
        g->req.sampling.top_k = ll < 0 ? 0 : (int32_t)ll;
    if ((r = opt_number(root, "min_p", &d)) < 0)
        FAIL(ST_ERR_TYPE, "min_p", "'min_p' must be a number");
    if (r && !(d >= 0 && d <= 1))
        FAIL(ST_ERR_RANGE, "min_p", "'min_p' must be in [0, 1], got %g", d);
    if (r)
        g->req.sampling.min_p = (float)d;
    if ((r = opt_number(root, "repetition_penalty", &d)) < 0)
        FAIL(ST_ERR_TYPE, "repetition_penalty", "'repetition_penalty' must be a number");
    if (r && !(d > 0 && d <= 10))
        FAIL(ST_ERR_RANGE, "repetition_penalty", "'repetition_penalty' must be in (0, 10], "
             "got %g", d);
    if (r)
        g->req.sampling.repeat_penalty = (float)d;
    /* Accepted for compatibility, range-checked, not applied. */
    if ((r = opt_number(root, "frequency_penalty", &d)) < 0 || (r && !(d >= -2 && d <= 2)))
        FAIL(r < 0 ? ST_ERR_TYPE : ST_ERR_RANGE, "frequency_penalty",
             "'frequency_penalty' must be a number in [-2, 2]");
    if ((r = opt_number(root, "presence_penalty", &d)) < 0 || (r && !(d >= -2 && d <= 2)))
        FAIL(r < 0 ? ST_ERR_TYPE : ST_ERR_RANGE, "presence_penalty",
             "'presence_penalty' must be a number in [-2, 2]");
    if ((r = opt_int(root, "seed", &ll)) < 0)
        FAIL(ST_ERR_TYPE, "seed", "'seed' must be an integer");
    if (r && ll < 0)
        FAIL(ST_ERR_RANGE, "seed", "'seed' must be >= 0, got %lld", ll);
    if (r) {
        g->req.sampling.seed = (uint64_t)ll;
        g->has_seed = 1;
    }
    if ((r = opt_int(root, "n", &ll)) < 0)
        FAIL(ST_ERR_TYPE, "n", "'n' must be an integer");
    if (r && (ll < 1 || ll > (long long)lim->max_n))
        FAIL(ST_ERR_RANGE, "n", "'n' must be between 1 and %u, got %lld", lim->max_n, ll);
    if (r)
        g->n = (uint32_t)ll;
    if ((st = parse_stop(g, json_object_get(root, "stop"), param, err)) != ST_OK)
        return st;
    v = json_object_get(root, "stream");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            FAIL(ST_ERR_TYPE, "stream", "'stream' must be a boolean");
        g->stream = json_is_true(v);
        if (g->stream && api == ST_HTTP_API_GENERATE)
            FAIL(ST_ERR_RANGE, "stream", "/generate does not stream; use /v1/completions");
    }
    v = json_object_get(root, "stream_options");
    if (v && !json_is_null(v)) {
        json_t *u = json_object_get(v, "include_usage");
        if (!json_is_object(v) || (u && !json_is_boolean(u)))
            FAIL(ST_ERR_TYPE, "stream_options", "'stream_options' must be an object with a "
                 "boolean 'include_usage'");
        g->include_usage = json_is_true(u);
    }
    v = json_object_get(root, "ignore_eos");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            FAIL(ST_ERR_TYPE, "ignore_eos", "'ignore_eos' must be a boolean");
        g->req.ignore_eos = json_is_true(v);
    }
    return ST_OK;
}
