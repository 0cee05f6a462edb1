/*
 * fuzz_http.c - libFuzzer harness for the front door's request parsing:
 * the first byte picks the API (completions, chat, generate), the rest is
 * the body. Run (clang): cmake -DSTRATA_FUZZ=ON ... && ./fuzz_http corpus/http
 * Every input must give ST_OK or a 400-class status with a message, and
 * the error object built from it must be valid JSON; ASan/UBSan catch the
 * rest. tests/coordinator/test_http_fuzz_replay.c replays the corpus and
 * random mutations in normal builds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const st_http_parse_limits_t lim = {4, 256};
    st_http_gen_t g;
    char param[64];
    st_error_t err;
    st_status_t st;
    st_http_api_t api;

    if (size < 1)
        return 0;
    api = (st_http_api_t)(data[0] % 3);
    st_error_clear(&err);
    st = st_http_gen_parse(&g, api, (const char *)data + 1, size - 1, &lim, param, &err);
    if (st != ST_OK) {
        char *e;
        json_t *o;
        if (st != ST_ERR_FORMAT && st != ST_ERR_TYPE && st != ST_ERR_RANGE && st != ST_ERR_NOMEM)
            __builtin_trap();
        if (!err.msg[0] || strlen(param) >= 64)
            __builtin_trap();
        e = st_http_json_error(err.msg, "invalid_request_error", param, NULL);
        if (!e)
            __builtin_trap();
        o = json_loads(e, 0, NULL);
        if (!o)
            __builtin_trap();            /* an error answer that is not JSON */
        json_decref(o);
        free(e);
    } else {
        /* A parsed request is complete and in range. */
        if (g.req.max_tokens < 1 || g.n < 1 || g.n > lim.max_n)
            __builtin_trap();
        if (!g.req.prompt && (!g.req.messages || g.req.n_messages == 0))
            __builtin_trap();
        if (g.req.sampling.temperature < 0 || !(g.req.sampling.top_p > 0 && g.req.sampling.top_p <= 1))
            __builtin_trap();
        for (size_t i = 0; i < g.req.n_messages; i++)
            if (!g.req.messages[i].role || !g.req.messages[i].content)
                __builtin_trap();
    }
    st_http_gen_free(&g);
    return 0;
}
