/*
 * ws_off.c - /ws when strata was built without wslay: a clear 501, so a
 * client learns why instead of failing its handshake.
 */
#include "server_priv.h"

void st_http_handle_ws(st_http_server_t *s, struct evhttp_request *req, rinfo_t *ri)
{
    st_http_reply_error(s, req, ri, 501, "this strata was built without wslay: no WebSocket "
                        "door (install libwslay-dev and rebuild)", NULL, "ws_unavailable", 0);
}

int st_http_ws_key(struct evkeyvalq *in, char *out, size_t cap)
{
    return 0;
}

void st_http_ws_tick(st_http_server_t *s)
{
}

void st_http_ws_free_all(st_http_server_t *s)
{
}
