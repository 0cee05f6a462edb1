/*
 * grpc_none.c - the gRPC door in a build without libgrpc or protobuf-c:
 * `--grpc-port` is refused at start with what to install, rather than
 * ignored (a client would otherwise wait on a port nobody serves).
 */
#include "st_http_grpc.h"

#include <stddef.h>

st_status_t st_http_grpc_start(struct st_http_server *s, st_http_grpc_t **out, st_error_t *err)
{
    (void)s;
    (void)out;
    return st_error_set(err, ST_ERR_UNSUPPORTED, "--grpc-port: this strata was built without "
                        "gRPC (" ST_GRPC_WHY ")");
}

int st_http_grpc_port(const st_http_grpc_t *g)
{
    (void)g;
    return -1;
}

void st_http_grpc_shutdown(st_http_grpc_t *g)
{
    (void)g;
}

void st_http_grpc_free(st_http_grpc_t *g)
{
    (void)g;
}
