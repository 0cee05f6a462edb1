/*
 * ratelimit.c - a token bucket per key: `rate` tokens a second up to
 * `burst`; a request takes one. Only the loop thread touches buckets.
 */
#include "http_internal.h"

#include <math.h>

int st_http_bucket_take(st_http_bucket_t *b, double rate, double burst, uint64_t now_ns,
                        uint32_t *retry_after_s)
{
    if (b->last_ns == 0) {            /* a new bucket starts full */
        b->tokens = burst;
        b->last_ns = now_ns;
    }
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) * 1e-9 * rate;
        if (b->tokens > burst)
            b->tokens = burst;
        b->last_ns = now_ns;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 1;
    }
    if (retry_after_s) {
        /* Retry-After has whole seconds: round up so that a client that
         * waits exactly that long finds a token. */
        double wait = rate > 0 ? (1.0 - b->tokens) / rate : 3600.0;
        double s = ceil(wait);
        *retry_after_s = s < 1 ? 1 : s > 3600 ? 3600 : (uint32_t)s;
    }
    return 0;
}
