/*
 * st_transport.h - the data plane between strata workers, on UCX (UCP).
 *
 * One st_transport_t per process (or per test instance) owns one UCP context
 * and one UCP worker. Peers connect either from a UCX worker address handed
 * over out of band (st_transport_worker_address: no listening socket of
 * ours; what the cluster uses, over its authenticated control plane) or by
 * socket address (st_transport_listen: a ucp_listener, for benchmarks and
 * tests; UCX picks rdma_cm on RDMA fabrics and TCP elsewhere) and exchange framed
 * messages: a fixed 32-byte header (st_transport_wire.h) naming a stage,
 * request id and sequence number, and a payload taken from a buffer that was
 * registered once with st_transport_mem_alloc()/_register(). Small payloads
 * go eagerly, large ones by zero-copy rendezvous; UCX chooses by size.
 *
 * Received messages land in receive buffers the transport registered at
 * creation (two fixed pools: small slots and max-size slots) and are handed
 * out as events; nothing is allocated on the per-message path. A header is
 * validated before its payload is touched; a bad frame closes only that
 * endpoint (ST_TRANSPORT_EV_EP_ERROR with ST_ERR_PROTOCOL) and is logged.
 * A dead peer surfaces the same way with ST_ERR_PEER (UCP error mode PEER),
 * never as a hang.
 *
 * Typical use (error handling elided):
 *
 *   st_transport_config_t cfg;
 *   st_transport_config_init(&cfg);
 *   cfg.progress = ST_TRANSPORT_PROGRESS_HYBRID;
 *   st_transport_create(&cfg, &err, &t);
 *   st_transport_listen(t, "0.0.0.0:13500", &err);        // stage k+1
 *   st_transport_connect(t, "10.0.0.2:13500", NULL, &ep); // stage k
 *   st_transport_ep_wait_ready(t, ep, 5 * ST_TRANSPORT_SEC);
 *   st_transport_mem_alloc(t, bytes, ST_TRANSPORT_MEM_HOST, &mem);
 *   st_transport_tag_t tag = {.type = ST_TRANSPORT_ACTIVATION, .stage = 1,
 *                             .request_id = req, .seq = step};
 *   st_transport_send(ep, &tag, mem, 0, bytes, &sreq);    // ST_OK or ST_INPROGRESS
 *   ...
 *   st_transport_event_t ev;
 *   while (st_transport_wait_event(t, timeout_ns, &ev) == ST_OK)
 *       if (ev.type == ST_TRANSPORT_EV_RECV) {
 *           use(ev.tag, ev.data, ev.len);
 *           st_transport_msg_release(t, ev.msg);
 *       }
 *
 * Threading: a transport is single-threaded (UCS_THREAD_MODE_SINGLE); every
 * call on one transport and its handles must come from one thread at a time.
 * Progress happens only inside st_transport_progress() and the wait calls.
 */
#ifndef ST_TRANSPORT_H
#define ST_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_status.h"

#define ST_TRANSPORT_CONFIG_VERSION 1u
#define ST_TRANSPORT_SEC            1000000000ull   /* timeouts are in ns */
#define ST_TRANSPORT_FOREVER        UINT64_MAX

typedef struct st_transport     st_transport_t;      /* context + UCP worker */
typedef struct st_transport_ep  st_transport_ep_t;   /* one connection       */
typedef struct st_transport_mem st_transport_mem_t;  /* a registered buffer  */
typedef struct st_transport_req st_transport_req_t;  /* an unfinished send   */
typedef struct st_transport_msg st_transport_msg_t;  /* a received buffer    */

/* How the wait calls progress the worker. */
typedef enum st_transport_progress_mode {
    ST_TRANSPORT_PROGRESS_BUSY   = 0, /* poll without pause: lowest latency, one core busy */
    ST_TRANSPORT_PROGRESS_EVENT  = 1, /* arm the worker and sleep in epoll between events  */
    ST_TRANSPORT_PROGRESS_HYBRID = 2  /* poll for spin_ns after the last activity, then sleep */
} st_transport_progress_mode_t;

typedef enum st_transport_mem_type {
    ST_TRANSPORT_MEM_HOST = 0,
    ST_TRANSPORT_MEM_CUDA = 1
} st_transport_mem_type_t;

/* Copies between device memory and host staging buffers, supplied by a GPU
 * backend. Used only for CUDA buffers when UCX itself cannot access CUDA
 * memory (no GPUDirect); every member is required when the table is given. */
typedef struct st_transport_copy_ops {
    uint32_t version;                   /* 1 */
    /* device -> host, synchronous */
    st_status_t (*to_host)(void *arg, void *host_dst, const void *dev_src, size_t n);
    /* host -> device, synchronous */
    st_status_t (*from_host)(void *arg, void *dev_dst, const void *host_src, size_t n);
    void *arg;                          /* passed to both */
} st_transport_copy_ops_t;

typedef struct st_transport_config {
    uint32_t size;                /* sizeof(st_transport_config_t): lets the struct grow */
    uint32_t version;             /* ST_TRANSPORT_CONFIG_VERSION */
    st_transport_progress_mode_t progress;
    uint64_t spin_ns;             /* HYBRID: busy-poll this long after activity */
    const char *tls;              /* UCX_TLS override ("rc,sm,self"); NULL: environment */
    const char *net_devices;      /* UCX_NET_DEVICES override ("mlx5_0:1"); NULL: environment */
    uint64_t max_msg_size;        /* largest payload this side receives (and sends) */
    uint64_t small_slot_size;     /* payloads up to this size use the small pool */
    uint32_t small_slots;         /* receive buffers of small_slot_size */
    uint32_t large_slots;         /* receive buffers of max_msg_size */
    uint32_t max_eps;             /* endpoints alive at once */
    uint32_t max_sends;           /* sends in flight at once (request pool) */
    uint64_t rndv_thresh;         /* 0: UCX default; else UCX_RNDV_THRESH */
    const st_transport_copy_ops_t *copy_ops; /* optional, see above; must outlive t */
    const char *name;             /* for logs; NULL: "transport" */
    uint32_t ep_credits;          /* messages a peer may send us unacknowledged per
                                     endpoint (flow control); the receive pools should
                                     hold ep_credits x endpoints streaming at once */
    uint8_t  access_key[32];      /* address mode: endpoints whose hello does not carry
                                     exactly these access_key_len bytes are refused */
    uint32_t access_key_len;      /* 0..32; 0: no key (any peer that reaches the UCP
                                     worker may connect) */
    int no_peer_errors;           /* 1: UCP_ERR_HANDLING_MODE_NONE. Diagnosis only
                                     (bench --no-peer-errors): saves ~0.14 us per
                                     shared-memory hop, but a dead peer is no longer
                                     reported and sends to it can hang. */
} st_transport_config_t;

/* Fills defaults: HYBRID with 200 us spin, max 16 MiB, 64 small slots of
 * 64 KiB, 4 large slots, 64 endpoints, 256 sends, 32 credits per endpoint,
 * UCX defaults otherwise. */
void st_transport_config_init(st_transport_config_t *cfg);

/* Creates the UCP context and worker, registers the receive pools.
 * Errors: ST_ERR_INVALID (config), ST_ERR_BACKEND (UCX), ST_ERR_NOMEM. */
st_status_t st_transport_create(const st_transport_config_t *cfg, st_error_t *err,
                                st_transport_t **out);

/* Closes every endpoint (force), the listener, unmaps the pools. Buffers from
 * st_transport_mem_* must have been freed before. NULL is ignored. */
void st_transport_destroy(st_transport_t *t);

/* ---- connections ------------------------------------------------------ */

/* Listens on "host:port" ("0.0.0.0:0" or ":0" picks any address and a free
 * port). Accepted endpoints are reported as ST_TRANSPORT_EV_EP_READY events
 * once their handshake is done. One listener per transport. */
st_status_t st_transport_listen(st_transport_t *t, const char *addr, st_error_t *err);

/* "host:port" of the listener that a peer can connect to. When listening on
 * the wildcard address, host is this machine's first non-loopback IPv4
 * address (127.0.0.1 when it has none). ST_ERR_NOT_FOUND without listener. */
st_status_t st_transport_address(const st_transport_t *t, char *buf, size_t len);

/* Writes this transport's UCX worker address as "ucx:" + hex to buf and
 * from then on accepts endpoints that peers create from it: a peer's opening
 * hello must carry our access key (cfg.access_key), anything else from an
 * unknown UCP endpoint is dropped. Nothing listens on a socket of ours; the
 * only sockets are UCX's own transport interfaces (its TCP transport, when
 * enabled, listens on each of its devices). ST_ERR_RANGE: buf too small. */
st_status_t st_transport_worker_address(st_transport_t *t, char *buf, size_t len);

/* The network interface holding the IPv4 address of "host:port" ("lo" for
 * 127.0.0.1), for cfg.net_devices: so that UCX's own TCP transport listens
 * on that interface only. ST_ERR_NOT_FOUND for a wildcard or unknown host. */
st_status_t st_transport_netdev_for(const char *addr, char *ifname, size_t len);

/* Starts a connection to "host:port" (host may be a name) or to a worker
 * address from st_transport_worker_address ("ucx:..."). Returns at once;
 * the endpoint becomes ready after the handshake (st_transport_ep_wait_ready
 * or an EP_READY event). Sends before that return ST_ERR_BUSY. */
st_status_t st_transport_connect(st_transport_t *t, const char *addr, void *user,
                                 st_error_t *err, st_transport_ep_t **out);

/* Progresses until the endpoint is ready (ST_OK), failed (its error) or the
 * timeout passed (ST_ERR_TIMEOUT). */
st_status_t st_transport_ep_wait_ready(st_transport_t *t, st_transport_ep_t *ep,
                                       uint64_t timeout_ns);

/* Closes the endpoint and releases its slot (asynchronously underneath). The
 * handle is invalid afterwards and events still queued for it are dropped.
 * Call it for every endpoint you got from connect or an EP_READY event,
 * including failed ones. */
void st_transport_ep_close(st_transport_t *t, st_transport_ep_t *ep);

void *st_transport_ep_user(const st_transport_ep_t *ep);
void  st_transport_ep_set_user(st_transport_ep_t *ep, void *user);
/* ST_OK while usable, ST_INPROGRESS during the handshake, else its error. */
st_status_t st_transport_ep_status(const st_transport_ep_t *ep);
/* Peer's "host:port" as UCX reports it ("?" when unknown). */
const char *st_transport_ep_peer(const st_transport_ep_t *ep);
/* Largest payload both sides accept (negotiated in the handshake). */
uint64_t st_transport_ep_max_msg(const st_transport_ep_t *ep);
/* Endpoints in use, closing ones included (for leak checks). */
uint32_t st_transport_ep_count(const st_transport_t *t);

/* ---- memory ----------------------------------------------------------- */

/* Allocates and registers `size` bytes (host memory, page aligned). CUDA
 * buffers come from the GPU backend and use st_transport_mem_register. */
st_status_t st_transport_mem_alloc(st_transport_t *t, size_t size,
                                   st_transport_mem_type_t type, st_transport_mem_t **out);
/* Registers caller memory once for reuse by every send from it. For CUDA
 * memory without UCX CUDA support a host staging buffer of the same size is
 * registered instead and copy_ops must be configured (else ST_ERR_UNSUPPORTED). */
st_status_t st_transport_mem_register(st_transport_t *t, void *ptr, size_t size,
                                      st_transport_mem_type_t type, st_transport_mem_t **out);
void  *st_transport_mem_ptr(const st_transport_mem_t *mem);
size_t st_transport_mem_size(const st_transport_mem_t *mem);
/* 1 when sends from this buffer go through a host staging copy. */
int    st_transport_mem_staged(const st_transport_mem_t *mem);
/* Deregisters (and frees what mem_alloc allocated). No send may be pending. */
void   st_transport_mem_free(st_transport_t *t, st_transport_mem_t *mem);

/* ---- messages --------------------------------------------------------- */

typedef enum st_transport_msg_type {
    ST_TRANSPORT_ACTIVATION = 2,  /* the numbers are the wire's (st_wire_type_t) */
    ST_TRANSPORT_CONTROL    = 3
} st_transport_msg_type_t;

typedef struct st_transport_tag {
    uint8_t  type;          /* st_transport_msg_type_t */
    uint8_t  flags;         /* application flag bits, passed through */
    uint32_t stage;         /* pipeline stage or other routing id */
    uint32_t seq;           /* micro-batch / sequence number */
    uint64_t request_id;    /* request or decode step */
} st_transport_tag_t;

/* Sends `len` bytes at `offset` of `mem` with the header built from `tag`.
 * Returns ST_OK when the send completed at once (the buffer may be reused),
 * ST_INPROGRESS with *req set when it continues in the background: wait for
 * it with st_transport_req_wait/_test and then st_transport_req_release.
 * With req == NULL the send is fire-and-forget (the buffer must stay
 * untouched until a later wait shows the peer consumed it; failures are
 * reported on the endpoint). Errors: ST_ERR_BUSY (handshake not done, no
 * credit left because the peer has not released enough messages yet, or no
 * free request: progress and retry), ST_ERR_RANGE (len over the negotiated maximum or outside
 * mem), ST_ERR_PEER/ST_ERR_CLOSED (endpoint failed), ST_ERR_BACKEND. */
st_status_t st_transport_send(st_transport_ep_t *ep, const st_transport_tag_t *tag,
                              st_transport_mem_t *mem, size_t offset, size_t len,
                              st_transport_req_t **req);

/* ST_INPROGRESS while running, else the send's final status. */
st_status_t st_transport_req_test(const st_transport_req_t *req);
/* Progresses until the send finished (its status) or ST_ERR_TIMEOUT. */
st_status_t st_transport_req_wait(st_transport_t *t, st_transport_req_t *req,
                                  uint64_t timeout_ns);
/* Returns the request to the pool; an unfinished one is detached and freed
 * when it completes. */
void st_transport_req_release(st_transport_t *t, st_transport_req_t *req);

typedef enum st_transport_event_type {
    ST_TRANSPORT_EV_RECV     = 1, /* a message arrived: tag, data, len, msg */
    ST_TRANSPORT_EV_EP_READY = 2, /* handshake done (connected or accepted) */
    ST_TRANSPORT_EV_EP_ERROR = 3  /* endpoint failed: status says why       */
} st_transport_event_type_t;

typedef struct st_transport_event {
    st_transport_event_type_t type;
    st_status_t         status;   /* EP_ERROR: ST_ERR_PEER, ST_ERR_PROTOCOL, ... */
    st_transport_ep_t  *ep;
    void               *ep_user;  /* st_transport_ep_user(ep) when queued */
    st_transport_tag_t  tag;      /* RECV */
    void               *data;     /* RECV: payload in a registered receive buffer */
    uint64_t            len;      /* RECV: payload bytes */
    st_transport_msg_t *msg;      /* RECV: give back with st_transport_msg_release */
} st_transport_event_t;

/* Progresses the worker once without blocking; returns how many UCX events
 * were handled (0: nothing happened). */
unsigned st_transport_progress(st_transport_t *t);

/* Takes the next event, progressing (by the configured policy) for up to
 * timeout_ns (0: poll once). ST_OK with *ev written, or ST_ERR_TIMEOUT. */
st_status_t st_transport_wait_event(st_transport_t *t, uint64_t timeout_ns,
                                    st_transport_event_t *ev);

/* Returns a receive buffer to its pool. Every RECV event's msg must be
 * released exactly once; until then ev.data stays valid and owned by you. */
void st_transport_msg_release(st_transport_t *t, st_transport_msg_t *msg);

/* The memory handle of a receive buffer, so a stage can forward a received
 * activation without copying (send from it with offset 0). */
st_transport_mem_t *st_transport_msg_mem(st_transport_msg_t *msg, size_t *offset);

/* ---- integration with an outer event loop ----------------------------- */

/* The worker's event file descriptor (readable when something happened). */
int st_transport_event_fd(const st_transport_t *t);
/* Arms the fd; ST_ERR_BUSY means events are pending: progress first. */
st_status_t st_transport_arm(st_transport_t *t);

typedef struct st_transport_stats {
    uint64_t msgs_sent, bytes_sent;
    uint64_t msgs_recv, bytes_recv;
    uint64_t frames_rejected;     /* bad headers that closed an endpoint */
    uint64_t eps_failed;          /* endpoints that reported an error */
    uint64_t recv_deferred;       /* arrivals that waited for a free buffer */
    uint64_t sleeps;              /* times a wait slept on the event fd */
} st_transport_stats_t;

void st_transport_get_stats(const st_transport_t *t, st_transport_stats_t *out);

/* ---- host capabilities (strata doctor) -------------------------------- */

#define ST_TRANSPORT_INFO_MAX_RES 64

typedef struct st_transport_resource {
    char tl[32];             /* "rc_mlx5", "tcp", "posix" */
    char dev[48];            /* "mlx5_0:1", "eth0", "memory" */
    char kind[8];            /* "net", "shm", "acc", "self" */
    int  rdma;               /* verbs transport (rc, dc, ud) */
    int  enabled;            /* selected by the UCP context (UCX_TLS/NET_DEVICES) */
} st_transport_resource_t;

typedef struct st_transport_info {
    char ucx_version[32];     /* library version in use */
    char ucx_built[32];       /* version strata was compiled against */
    uint32_t n_res;
    st_transport_resource_t res[ST_TRANSPORT_INFO_MAX_RES];
    int mem_host, mem_cuda, mem_cuda_managed, mem_rocm; /* UCP context memory types */
    int rdma;                 /* an enabled RDMA transport exists */
    int cuda_reg;             /* an RDMA memory domain registers CUDA memory */
    int gpudirect;            /* rdma && mem_cuda && cuda_reg */
    int net_tcp_only;         /* enabled inter-node transports are TCP only */
    int net_none;             /* no enabled inter-node transport at all */
} st_transport_info_t;

/* Queries UCX as configured by cfg (NULL: defaults/environment). */
st_status_t st_transport_probe(const st_transport_config_t *cfg, st_error_t *err,
                               st_transport_info_t *out);

#endif /* ST_TRANSPORT_H */
