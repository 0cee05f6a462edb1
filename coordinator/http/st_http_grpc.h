/*
 * st_http_grpc.h - the gRPC door (strata.v1.Generator, proto/strata/v1/
 * generate.proto) beside the HTTP one, on cfg->grpc_port. Served by gRPC's
 * C core; every call goes through the same access decision (access.c) and
 * engine path (st_http_gen_submit) as HTTP, on the server's loop thread.
 * Built only when libgrpc and protobuf-c are found; otherwise start refuses
 * with a message naming what is missing (grpc_none.c).
 *
 * Lifecycle, all on the loop thread: start once the HTTP socket is bound;
 * shutdown when the drain begins (no new calls, running ones finish); free
 * from server_free, before the event base (it waits, bounded, for the last
 * answers to go out, then cancels what is left).
 */
#ifndef ST_HTTP_GRPC_H
#define ST_HTTP_GRPC_H

#include "st_error.h"
#include "st_status.h"

struct st_http_server;
typedef struct st_http_grpc st_http_grpc_t;

st_status_t st_http_grpc_start(struct st_http_server *s, st_http_grpc_t **out, st_error_t *err);
/* The bound port (cfg->grpc_port 0 picks one). */
int  st_http_grpc_port(const st_http_grpc_t *g);
/* The drain began: stop accepting; calls already running finish. Idempotent. */
void st_http_grpc_shutdown(st_http_grpc_t *g);
/* NULL is fine. */
void st_http_grpc_free(st_http_grpc_t *g);

#endif /* ST_HTTP_GRPC_H */
