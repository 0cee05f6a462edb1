/*
 * config.c - front-door options shared by `strata serve` and `strata launch`.
 */
#include "st_http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

st_http_config_t st_http_config_default(void)
{
    st_http_config_t c;
    memset(&c, 0, sizeof(c));
    c.size = sizeof(c);
    c.host = "127.0.0.1";
    c.port = 8080;
    c.audit_max_bytes = 64ull << 20;
    c.audit_retain_days = 180;
    c.audit_sync = 1;
    c.metrics_public = 1;
    c.max_body = 1u << 20;
    c.max_header_bytes = 8u << 10;
    c.max_headers = 100;
    c.request_timeout_s = 10;
    c.max_n = 4;
    c.user_rate = 5.0;
    c.user_burst = 10.0;
    c.drain_timeout_s = 30;
    c.default_max_tokens = 256;
    c.agent_port = -1;
    c.ws_ping_s = 30;
    c.ws_queue = 1000;
    c.grpc_port = -1;
    return c;
}

const char *st_http_config_usage(void)
{
    return
        "front door:\n"
        "  --host H                 address to bind (default 127.0.0.1)\n"
        "  --port P                 TCP port (default 8080; 0 picks a free one)\n"
        "  --keys FILE              API key file (`strata keys`); without it no key is\n"
        "                           needed and only loopback may be bound\n"
        "  --allow-public           bind a non-loopback address without --keys\n"
        "  --tls-cert C --tls-key K HTTPS with TLS 1.3 only (PEM, RSA or ECDSA P-256)\n"
        "  --audit-log F            append one JSON line per request to F (ECS fields,\n"
        "                           hash-chained; rotated daily to F.YYYY-MM-DD)\n"
        "  --audit-max-mb N         also rotate the audit log beyond N MiB (default 64)\n"
        "  --audit-retain-days N    remove rotated audit files after N days (default 180;\n"
        "                           0 keeps them all)\n"
        "  --audit-hmac-key FILE    key for the watermarks of GET /admin/audit exports\n"
        "                           (default: F.hmac-key, generated at first start)\n"
        "  --audit-no-sync          do not fdatasync each audit line (faster, less safe)\n"
        "  --metrics-auth           require a key (admin/developer) for /metrics\n"
        "  --max-body BYTES         request body limit (default 1048576)\n"
        "  --request-timeout S      seconds to receive a request, and idle keep-alive (10)\n"
        "  --max-n N                most choices per request (default 4)\n"
        "  --user-rate R            role user: requests/s per key (default 5)\n"
        "  --user-burst B           role user: burst (default 10)\n"
        "  --drain-timeout S        seconds in-flight requests get on SIGTERM (default 30)\n"
        "  --agent-port P           answer HAProxy's agent-check on P (same --host): the\n"
        "                           replica's weight from its load, drain, down\n"
        "  --ws-ping-interval S     WebSocket heartbeat: ping every S s; a client that\n"
        "                           misses two pongs is closed (default 30; 0 off)\n"
        "  --ws-queue N             messages queued to a WebSocket client that does not\n"
        "                           read before it is closed (default 1000)\n"
        "  --ws-allow-origin LIST   Origins allowed on /ws besides the server's own\n"
        "                           (comma-separated; * any)\n"
        "  --grpc-port P            serve the gRPC API (strata.v1.Generator) on P (same\n"
        "                           --host and TLS; 0 picks a free port)\n";
}

static st_status_t num(const char *opt, const char *v, double lo, double hi, double *out,
                       st_error_t *err)
{
    char *end;
    double d;
    errno = 0;
    d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi))
        return st_error_set(err, ST_ERR_RANGE, "%s: '%s' is not a number in [%g, %g]", opt, v,
                            lo, hi);
    *out = d;
    return ST_OK;
}

st_status_t st_http_config_parse_opt(st_http_config_t *c, int argc, char **argv, int *i,
                                     st_error_t *err)
{
    const char *o = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    double d = 0;
    st_status_t st;

    /* Flags without a value. */
    if (!strcmp(o, "--allow-public")) { c->allow_public = 1; return ST_OK; }
    if (!strcmp(o, "--metrics-auth")) { c->metrics_public = 0; return ST_OK; }
    if (!strcmp(o, "--audit-no-sync")) { c->audit_sync = 0; return ST_OK; }

    static const char *const with_value[] = {
        "--host", "--port", "--keys", "--tls-cert", "--tls-key", "--audit-log", "--audit-max-mb",
        "--audit-retain-days", "--audit-hmac-key", "--max-body", "--request-timeout", "--max-n", "--user-rate", "--user-burst",
        "--drain-timeout", "--agent-port", "--ws-ping-interval", "--ws-queue",
        "--ws-allow-origin", "--grpc-port", NULL,
    };
    int known = 0;
    for (int k = 0; with_value[k]; k++)
        known |= !strcmp(o, with_value[k]);
    if (!known)
        return ST_ERR_NOT_FOUND;
    if (!v)
        return st_error_set(err, ST_ERR_INVALID, "%s needs a value", o);
    (*i)++;
    if (!strcmp(o, "--host")) { c->host = v; return ST_OK; }
    if (!strcmp(o, "--keys")) { c->keys_path = v; return ST_OK; }
    if (!strcmp(o, "--tls-cert")) { c->tls_cert = v; return ST_OK; }
    if (!strcmp(o, "--tls-key")) { c->tls_key = v; return ST_OK; }
    if (!strcmp(o, "--audit-log")) { c->audit_path = v; return ST_OK; }
    if (!strcmp(o, "--audit-hmac-key")) { c->audit_hmac_key = v; return ST_OK; }
    if (!strcmp(o, "--audit-retain-days")) {
        if ((st = num(o, v, 0, 36500, &d, err)) == ST_OK) c->audit_retain_days = (uint32_t)d;
        return st;
    }
    if (!strcmp(o, "--port")) {
        if ((st = num(o, v, 0, 65535, &d, err)) == ST_OK) c->port = (uint16_t)d;
        return st;
    }
    if (!strcmp(o, "--ws-allow-origin")) { c->ws_origins = v; return ST_OK; }
    if (!strcmp(o, "--ws-ping-interval")) {
        if ((st = num(o, v, 0, 3600, &d, err)) == ST_OK) c->ws_ping_s = (int)d;
        return st;
    }
    if (!strcmp(o, "--ws-queue")) {
        if ((st = num(o, v, 16, 1000000, &d, err)) == ST_OK) c->ws_queue = (uint32_t)d;
        return st;
    }
    if (!strcmp(o, "--grpc-port")) {
        if ((st = num(o, v, 0, 65535, &d, err)) == ST_OK) c->grpc_port = (int)d;
        return st;
    }
    if (!strcmp(o, "--agent-port")) {
        if ((st = num(o, v, 0, 65535, &d, err)) == ST_OK) c->agent_port = (int)d;
        return st;
    }
    if (!strcmp(o, "--audit-max-mb")) {
        if ((st = num(o, v, 1, 1 << 20, &d, err)) == ST_OK) c->audit_max_bytes = (uint64_t)(d * 1048576.0);
        return st;
    }
    if (!strcmp(o, "--max-body")) {
        if ((st = num(o, v, 1024, 1 << 30, &d, err)) == ST_OK) c->max_body = (size_t)d;
        return st;
    }
    if (!strcmp(o, "--request-timeout")) {
        if ((st = num(o, v, 1, 3600, &d, err)) == ST_OK) c->request_timeout_s = (int)d;
        return st;
    }
    if (!strcmp(o, "--max-n")) {
        if ((st = num(o, v, 1, 16, &d, err)) == ST_OK) c->max_n = (uint32_t)d;
        return st;
    }
    if (!strcmp(o, "--user-rate")) {
        if ((st = num(o, v, 0.001, 1e6, &d, err)) == ST_OK) c->user_rate = d;
        return st;
    }
    if (!strcmp(o, "--user-burst")) {
        if ((st = num(o, v, 1, 1e6, &d, err)) == ST_OK) c->user_burst = d;
        return st;
    }
    /* --drain-timeout */
    if ((st = num(o, v, 0, 86400, &d, err)) == ST_OK)
        c->drain_timeout_s = (int)d;
    return st;
}

static int is_loopback(const char *h)
{
    return !strcmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "::1");
}

st_status_t st_http_config_check(const st_http_config_t *c, st_error_t *err)
{
    if (!c || c->size < sizeof(*c))
        return st_error_set(err, ST_ERR_INVALID, "front door: bad configuration struct");
    if (!c->host || !*c->host)
        return st_error_set(err, ST_ERR_INVALID, "--host must not be empty");
    if (!!c->tls_cert != !!c->tls_key)
        return st_error_set(err, ST_ERR_INVALID, "--tls-cert and --tls-key go together");
    if (!c->keys_path && !c->allow_public && !is_loopback(c->host))
        return st_error_set(err, ST_ERR_INVALID, "refusing to bind %s without --keys: anyone "
                            "could use the server (add --keys FILE, or --allow-public)", c->host);
    if (c->max_n < 1 || c->max_n > 16)
        return st_error_set(err, ST_ERR_RANGE, "--max-n must be in [1, 16]");
    return ST_OK;
}
