/*
 * access.c - the one access decision of every door (HTTP, WebSocket, gRPC):
 * key, role, address allowlist, the admin second factor on admin paths, and
 * a user key's rate limit. Doors differ only in where they find the key
 * (a header, gRPC metadata) and how they say no (an HTTP status, a close
 * code, a gRPC status); the rules live here once.
 */
#include "server_priv.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "st_util.h"

static int deny(st_http_access_t *a, int code, const char *code_str)
{
    a->code = code;
    a->code_str = code_str;
    return code;
}

static int second_factor(st_http_server_t *s, const st_http_key_t *k, const char *otp,
                         st_http_access_t *a)
{
    switch (st_http_key_otp(k, otp, (int64_t)time(NULL))) {
    case ST_HTTP_OTP_OK:
        return 0;
    case ST_HTTP_OTP_MISSING:
        snprintf(a->msg, sizeof(a->msg), "/admin/* needs the admin key's one-time password "
                 "in the X-Strata-OTP header");
        return deny(a, 401, "otp_required");
    case ST_HTTP_OTP_BAD:
        s->metrics.otp_failures++;
        snprintf(a->msg, sizeof(a->msg), "Incorrect or expired one-time password");
        return deny(a, 401, "invalid_otp");
    case ST_HTTP_OTP_NOT_ENROLLED:
        snprintf(a->msg, sizeof(a->msg), "admin key '%s' has no second factor; create admin "
                 "keys with `strata keys add --role admin --totp`", k->id);
        return deny(a, 403, "otp_not_enrolled");
    default:
        snprintf(a->msg, sizeof(a->msg), "this strata was built without liboath: admin "
                 "second factors cannot be checked");
        return deny(a, 403, "otp_unavailable");
    }
}

static int take_rate(st_http_server_t *s, const st_http_key_t *k, st_http_access_t *a)
{
    uint32_t retry = 1;
    size_t idx = (size_t)(k - st_http_keys_at(s->keys, 0));

    if (k->role != ST_HTTP_ROLE_USER ||
        st_http_bucket_take(&s->buckets[idx], s->cfg->user_rate, s->cfg->user_burst,
                            st_now_ns(), &retry))
        return 0;
    s->metrics.rate_limited++;
    a->retry_after = retry;
    snprintf(a->msg, sizeof(a->msg), "Rate limit reached for key '%s': %g requests/s, burst %g; "
             "retry after %u s", k->id, s->cfg->user_rate, s->cfg->user_burst, retry);
    return deny(a, 429, "rate_limit_exceeded");
}

int st_http_access_check(st_http_server_t *s, const char *key, const char *otp, const char *path,
                         unsigned roles, int rate, rinfo_t *ri, st_http_access_t *a)
{
    const st_http_key_t *k;

    memset(a, 0, sizeof(*a));
    if (!s->keys)
        return 0;
    k = key ? st_http_keys_check(s->keys, key, strlen(key)) : NULL;
    if (!k) {
        a->www_authenticate = 1;
        snprintf(a->msg, sizeof(a->msg), "%s", key ? "Incorrect API key provided"
                 : "Missing API key: send 'Authorization: Bearer <key>'");
        return deny(a, 401, "invalid_api_key");
    }
    snprintf(ri->key_id, sizeof(ri->key_id), "%s", k->id);
    ri->role = st_http_role_name(k->role);
    if (!(roles & k->role)) {
        snprintf(a->msg, sizeof(a->msg), "role '%s' may not use %s", ri->role, path);
        return deny(a, 403, "insufficient_role");
    }
    if (!st_http_key_allows(k, ri->client_ip)) {
        snprintf(a->msg, sizeof(a->msg), "key '%s' may not be used from %s", k->id,
                 ri->client_ip);
        return deny(a, 403, "address_not_allowed");
    }
    if (k->role == ST_HTTP_ROLE_ADMIN && !strncmp(path, "/admin/", 7) &&
        second_factor(s, k, otp, a))
        return a->code;
    return rate ? take_rate(s, k, a) : 0;
}

int st_http_access_rate(st_http_server_t *s, const rinfo_t *ri, st_http_access_t *a)
{
    memset(a, 0, sizeof(*a));
    if (!s->keys || !ri->key_id[0])
        return 0;
    /* By id: a key reload may have moved (or revoked) the key since the
     * connection was let in; a key gone since is refused from here on. */
    for (size_t i = 0; i < st_http_keys_count(s->keys); i++) {
        const st_http_key_t *k = st_http_keys_at(s->keys, i);
        if (!strcmp(k->id, ri->key_id) && !k->revoked)
            return take_rate(s, k, a);
    }
    snprintf(a->msg, sizeof(a->msg), "key '%s' is no longer valid", ri->key_id);
    return deny(a, 401, "invalid_api_key");
}
