/*
 * st_transport_impl.h - private structures shared by the transport's files.
 *
 * context.c   create/destroy, progress policy, the event ring
 * endpoint.c  listener, connect/accept, handshake, errors, close
 * msg.c       registered memory, send requests, the AM receive handler
 * probe.c     what UCX offers on this host (strata doctor)
 *
 * Not installed and not for the layers above; tests/transport includes it
 * only to craft malformed frames.
 */
#ifndef ST_TRANSPORT_IMPL_H
#define ST_TRANSPORT_IMPL_H

#include <ucp/api/ucp.h>

#include "st_transport.h"
#include "st_transport_wire.h"

#define ST_TRANSPORT_AM_ID 7u   /* our AM handler id on the worker */
#define ST_TRANSPORT_MOD   "transport"

typedef enum ep_state {
    EP_FREE = 0,
    EP_HANDSHAKE,     /* UCP endpoint created, peer's HELLO not seen yet  */
    EP_READY,
    EP_FAILED,        /* error seen; UCP endpoint closed or being closed */
    EP_CLOSING        /* user closed it; waits for the UCP close request */
} ep_state_t;

struct st_transport_ep {
    st_transport_t *t;
    ucp_ep_h        uep;          /* ours, for sends; NULL once the UCP close was started */
    ucp_ep_h        rx_uep;       /* address mode: the UCP endpoint the peer's frames
                                     arrive on when it is not uep (UCX's own, created
                                     by its wireup); compared, never used or closed */
    uint64_t        peer_conn;    /* address mode: the peer's connection id */
    uint8_t        *peer_addr;    /* address mode, accepted: the peer's worker address
                                     until our endpoint back to it exists */
    uint32_t        peer_addr_len;
    int             addr_mode;    /* created from a worker address (no listener) */
    int             hello_due;    /* accepted by address: create uep, answer the hello */
    uint32_t        gen;          /* bumped on every reuse of the slot */
    void           *close_req;    /* pending ucp_ep_close_nbx request */
    ep_state_t      state;
    st_status_t     error;
    int             accepted;     /* created by our listener */
    int             user_owned;   /* the user holds the handle (connect or EP_READY seen) */
    int             want_close;   /* close the UCP endpoint at the next safe point */
    int             bye_wait;     /* our BYE is out; close when acked or at bye_deadline */
    int             bye_ack_due;  /* the peer said BYE: acknowledge at the next safe point */
    int             peer_bye;     /* the peer closed in order: its disconnect is no failure */
    uint64_t        bye_deadline;
    void           *user;
    uint64_t        peer_max;     /* negotiated send limit */
    uint32_t        tx_credits;   /* messages we may still send to the peer */
    uint32_t        peer_credits; /* what the peer promised in its HELLO */
    uint32_t        rx_done;      /* peer's messages released, credits not yet returned */
    uint32_t        rx_inflight;  /* peer's messages received, credits not yet returned */
    char            peer[64];
};

struct st_transport_mem {
    void                   *ptr;        /* what the user sees */
    size_t                  size;
    st_transport_mem_type_t type;
    ucp_mem_h               memh;       /* registration used on the wire */
    void                   *wire_ptr;   /* == ptr, or the host staging buffer */
    int                     allocated;  /* ucp_mem_map allocated it */
    int                     staged;
    ucs_memory_type_t       ucs_type;
};

struct st_transport_req {
    st_transport_t   *t;
    st_transport_ep_t *ep;
    uint32_t          next_free;   /* free-list link (index) */
    int               in_use;
    int               done;
    int               detached;   /* user released it early or never asked for it */
    st_status_t       status;
    uint8_t           hdr[ST_WIRE_HDR_SIZE];     /* must outlive the UCX send */
    uint8_t           inline_payload[ST_WIRE_HELLO_MAX];
};

struct st_transport_msg {
    st_transport_t     *t;
    st_transport_mem_t *pool;     /* the pool's registration */
    uint8_t            *data;
    size_t              offset;   /* in pool */
    uint32_t            next_free;
    int                 in_use;
    int                 large;
    /* set while the message is being received (rendezvous) */
    st_transport_ep_t  *ep;
    uint32_t            ep_gen;
    st_wire_hdr_t       hdr;
    uint64_t            len;
};

/* An arrival that found its pool empty; UCX keeps the data (UCS_INPROGRESS). */
typedef struct deferred_rx {
    st_transport_ep_t *ep;
    uint32_t           ep_gen;
    st_wire_hdr_t      hdr;
    void              *data;      /* UCX data or rendezvous descriptor */
    uint64_t           len;
    int                rndv;
} deferred_rx_t;

typedef struct msg_pool {
    st_transport_mem_t  mem;
    st_transport_msg_t *msgs;
    uint32_t            count;
    uint32_t            free_head;  /* UINT32_MAX: empty */
    size_t              slot_size;
} msg_pool_t;

struct st_transport {
    st_transport_config_t cfg;
    char                  name[32];
    ucp_context_h         ctx;
    ucp_worker_h          worker;
    ucp_listener_h        listener;
    ucp_address_t        *self_addr;    /* st_transport_worker_address: published */
    size_t                self_addr_len;
    int                   accepting;    /* address-mode endpoints may be accepted */
    int                   efd;          /* worker event fd, -1 without wakeup */
    int                   epfd;         /* epoll set holding efd */
    uint64_t              mem_types;    /* UCP context memory types (bit per ucs type) */
    uint64_t              last_activity_ns;
    int                   active;       /* progress did work since the clock was read */

    st_transport_ep_t    *eps;
    uint32_t              n_eps_used;
    st_transport_ep_t    *last_ep;      /* lookup cache for the AM handler */

    st_transport_req_t   *reqs;
    uint32_t              req_free;

    msg_pool_t            small, large;
    deferred_rx_t        *deferred;     /* ring */
    uint32_t              def_cap, def_head, def_count;

    st_transport_event_t *events;       /* ring */
    uint32_t              ev_cap, ev_head, ev_count;

    int                   pending_work; /* closes or deferred receives to do */
    st_transport_stats_t  stats;
};

/* context.c */
int  st_tp_push_event(st_transport_t *t, const st_transport_event_t *ev);
void st_tp_drop_events(st_transport_t *t, st_transport_ep_t *ep);
st_status_t st_tp_wait(st_transport_t *t, int (*done)(void *), void *arg, uint64_t timeout_ns);

/* endpoint.c */
st_transport_ep_t *st_tp_ep_lookup(st_transport_t *t, ucp_ep_h uep);
int st_tp_on_unknown_hello(st_transport_t *t, ucp_ep_h reply_ep, const st_wire_hello_t *h);
void st_tp_ep_fail(st_transport_ep_t *ep, st_status_t status, const char *why);
void st_tp_ep_on_hello(st_transport_ep_t *ep, const st_wire_hello_t *h);
void st_tp_do_pending(st_transport_t *t);
void st_tp_eps_close_all(st_transport_t *t);
void st_tp_eps_abandon(st_transport_t *t);
st_status_t st_tp_send_hello(st_transport_ep_t *ep);
void st_tp_return_credits(st_transport_ep_t *ep);
void st_tp_ep_on_bye(st_transport_ep_t *ep, uint32_t seq);
uint32_t st_tp_credit_batch(const st_transport_t *t);

/* msg.c */
st_status_t st_tp_pools_create(st_transport_t *t, st_error_t *err);
void st_tp_pools_destroy(st_transport_t *t);
ucs_status_t st_tp_am_handler(void *arg, const void *header, size_t header_length,
                              void *data, size_t length, const ucp_am_recv_param_t *param);
void st_tp_drain_deferred(st_transport_t *t);
st_transport_req_t *st_tp_req_get(st_transport_t *t);
void st_tp_req_put(st_transport_t *t, st_transport_req_t *req);
void st_tp_send_cb(void *request, ucs_status_t status, void *user_data);

/* For tests only: the UCP endpoint under a handle, to send crafted frames. */
ucp_ep_h st_transport_ep_ucp(const st_transport_ep_t *ep);
ucp_worker_h st_transport_ucp_worker(const st_transport_t *t);

#endif /* ST_TRANSPORT_IMPL_H */
