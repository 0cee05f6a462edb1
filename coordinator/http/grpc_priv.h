/*
 * grpc_priv.h - the gRPC door's state, shared by grpc.c (the server, its
 * completion-queue thread and the hand-off to the loop) and grpc_call.c
 * (one call: access, request, generation, answer). Internal.
 *
 * Threads: gRPC core needs a thread blocked in grpc_completion_queue_next.
 * That thread (the pump) does nothing but move each completed tag onto
 * `head` under `lock` and wake the loop (event_active(wake)), as the
 * engine's mailbox does (server_priv.h). Everything else - the access
 * check, the engine, every grpc_call_start_batch (thread-safe in core), all
 * frees - runs on the loop thread. A tag is in flight at most once at a
 * time (one request, one send batch, one close per call), so the tag itself
 * is the list node and the hand-off allocates nothing.
 */
#ifndef ST_HTTP_GRPC_PRIV_H
#define ST_HTTP_GRPC_PRIV_H

#include <grpc/grpc.h>

#include "server_priv.h"
#include "st_http_grpc.h"

enum {
    GRPC_M_UNARY = 0,              /* /strata.v1.Generator/Generate */
    GRPC_M_STREAM,                 /* /strata.v1.Generator/GenerateStream */
    GRPC_M_OTHER,                  /* any other method: UNIMPLEMENTED */
    GRPC_M_COUNT_
};

/* Calls requested from core ahead of arrival, per method: core matches an
 * incoming call to one, and each match posts the next, so calls never wait
 * inside core. */
#define GRPC_SLOTS 8
/* Calls being answered at once; past it, RESOURCE_EXHAUSTED. Generations
 * are bounded again by the engine's queue (UNAVAILABLE when full). */
#define GRPC_MAX_CALLS 1024
/* Streams per HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
#define GRPC_MAX_STREAMS_PER_CONN 128

typedef enum { GT_NEW, GT_SEND, GT_CLOSE, GT_SHUTDOWN } gtag_kind_t;

typedef struct gcall gcall_t;

typedef struct gtag {
    gtag_kind_t  kind;
    gcall_t     *c;                /* NULL for GT_SHUTDOWN */
    int          ok;               /* the event's success (pump writes, under lock) */
    struct gtag *next;             /* in the hand-off list */
} gtag_t;

struct gcall {
    st_http_grpc_t     *g;
    int                 method;
    grpc_call          *call;      /* NULL until core matched the request */
    gpr_timespec        deadline;
    grpc_metadata_array md;
    grpc_byte_buffer   *payload;   /* the request message (registered methods) */
    grpc_call_details   details;   /* GRPC_M_OTHER only */
    gtag_t              t_new, t_send, t_close;
    int                 pending;   /* tags in flight */
    int                 cancelled; /* RECV_CLOSE_ON_SERVER: client cancel, deadline, reset */
    int                 closed;    /* RECV_CLOSE_ON_SERVER completed */
    int                 sending;   /* a send batch is in flight (one at a time) */
    int                 md_sent, final_sent, status_sent;
    grpc_byte_buffer   *out;       /* the message of the batch in flight */
    grpc_slice          details_slice;
    int                 has_details;
    hreq_t             *h;         /* the running generation */
    rinfo_t             ri;
    st_http_buf_t       text;      /* unary: all the text; stream: text not sent yet */
    int                 ended;     /* the answer is decided: code, msg and the tail below */
    grpc_status_code    code;
    char                msg[256];
    char                finish[16];
    uint32_t            prompt_tokens, completion_tokens;
    char                id[48];
    gcall_t            *prev, *next;   /* g->calls: matched calls */
};

struct st_http_grpc {
    st_http_server_t      *s;
    grpc_server           *server;
    grpc_completion_queue *cq;
    void                  *rm[2];  /* registered methods: unary, stream */
    pthread_t              pump;
    int                    pump_started;
    pthread_mutex_t        lock;
    pthread_cond_t         cond;   /* signalled with each tag (the final wait in free) */
    gtag_t                *head, *tail;
    struct event          *wake;
    gtag_t                 t_shutdown;
    int                    shutdown_started, shutdown_done;
    int                    port;
    int                    tls;
    uint32_t               n_calls;    /* matched calls not freed yet */
    uint32_t               n_slots;    /* requests posted to core, not matched yet */
    gcall_t               *calls;
};

/* grpc_call.c */
/* Posts one request slot for `method`. ST_OK, or an error once core refuses
 * (shutting down). */
st_status_t st_grpc_post_slot(st_http_grpc_t *g, int method);
/* A completed tag, on the loop thread. */
void st_grpc_on_tag(st_http_grpc_t *g, gtag_t *t);
/* Frees a slot that core gave back unmatched (at shutdown). */
void st_grpc_call_free(gcall_t *c);

#endif /* ST_HTTP_GRPC_PRIV_H */
