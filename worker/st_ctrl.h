/*
 * st_ctrl.h - the cluster's wire formats: the control plane (TCP, between
 * the coordinator and each worker) and the micro-batch frames of the data
 * plane (carried by transport/ between pipeline stages).
 *
 * It lives in worker/ because both the worker daemon and the coordinator
 * speak it and worker is the lower of the two layers.
 *
 * Control plane. Every message is one frame: a 16-byte header
 *   u32 magic "STRC" | u16 version | u16 type | u32 payload length | u32 epoch
 * then the payload, little endian, fixed fields followed by length-prefixed
 * strings (u16 length, no NUL, printable ASCII only). Nothing from the wire
 * is ever a pointer, a size taken on trust or an operation to run: the
 * decoder checks the magic, the version, the type, the exact payload length
 * of every message, every string's length and bytes, and every count and
 * range against fixed protocol limits; callers then check plans against
 * the model (layers, context) before using them.
 *
 *   st_ctrl_conn_t *c;  st_ctrl_conn_open(fd, &c);
 *   st_ctrl_msg_t m = {.type = ST_CTRL_HEARTBEAT};  m.u.heartbeat.seq = 1;
 *   st_ctrl_conn_send(c, &m, 1000, &err);
 *   while ((st = st_ctrl_conn_recv(c, 100, &m, &err)) == ST_OK) handle(&m);
 *   // ST_ERR_TIMEOUT: nothing complete yet; ST_ERR_CLOSED: peer went away
 *
 * Session (see docs/CLUSTER.md):
 *   worker -> HELLO (name, host, memory, cpus, worker nonce)
 *   coord  -> CHALLENGE (coord nonce, proof that the coordinator knows the
 *             secret: HMAC-SHA256(secret, "strata-coord" | wnonce | cnonce))
 *   worker -> AUTH (HMAC-SHA256(secret, "strata-worker" | cnonce | wnonce | name))
 *   coord  -> WELCOME (worker id) or REFUSE (reason) and close
 *   coord  -> PLAN (stage, layer range, sizes, model path) + MANIFEST batches
 *   worker -> SHARD_REQUEST (only a worker without the file: the header, then
 *             its tensors' byte ranges), coord -> SHARD_DATA... SHARD_END
 *   worker -> LOADED (its data-plane address, memory, load time) or an error
 *   coord  -> CONNECT (address of the next stage, or of the coordinator)
 *   worker -> READY
 *   both   -> HEARTBEAT every heartbeat_ms; DRAIN (coord) -> LEAVE (worker)
 * A later PLAN with a higher epoch replaces the previous one (re-plan).
 *
 * Data plane. A micro-batch travels coordinator -> stage 0 -> ... -> last
 * stage -> coordinator as one transport message per hop, laid out as
 * st_ctrl_mb_hdr_t followed by arrays (see st_ctrl_mb_layout). The slot
 * setups (sampling parameters and the repetition window of a new sequence)
 * ride in the first micro-batch that contains that slot, so they reach the
 * last stage before it samples for the slot, in order, without a separate
 * message or acknowledgement. st_ctrl_mb_parse validates a received frame
 * completely against the receiver's limits.
 */
#ifndef ST_CTRL_H
#define ST_CTRL_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_sampler.h"
#include "st_stage.h"
#include "st_status.h"

#define ST_CTRL_MAGIC        0x43525453u   /* "STRC" */
/* 2: PLAN carries kv_type (the stage's KV cache element type).
 * 3: PLAN carries the prefix-cache pool's shape; micro-batch frames carry
 *    prefix-cache ops (st_kvop_t) in the header's former reserved word. */
#define ST_CTRL_VERSION      3u
#define ST_CTRL_HDR_SIZE     16u
#define ST_CTRL_MAX_PAYLOAD  (64u * 1024u)
#define ST_CTRL_NAME_MAX     64    /* worker and host names, with NUL */
#define ST_CTRL_ADDR_MAX     4160  /* "host:port", or a data-plane "ucx:" + hex worker
                                      address (st_transport_worker_address), with NUL */
#define ST_CTRL_PATH_MAX     1024
#define ST_CTRL_TEXT_MAX     400   /* error and reason lines */
#define ST_CTRL_TENSOR_NAME_MAX 96
#define ST_CTRL_NONCE        32
#define ST_CTRL_MAC          32
#define ST_CTRL_MANIFEST_BATCH 64  /* tensor hashes per MANIFEST message */
#define ST_CTRL_MAX_LAYERS   4096
#define ST_CTRL_MAX_STAGES   16
#define ST_CTRL_MAX_SLOTS    4096
#define ST_CTRL_MAX_CTX      (1u << 20)
#define ST_CTRL_MAX_BATCH    65536
#define ST_CTRL_SECRET_MIN   16    /* bytes */
#define ST_CTRL_SECRET_MAX   1024

typedef enum st_ctrl_type {
    ST_CTRL_HELLO     = 1,
    ST_CTRL_CHALLENGE = 2,
    ST_CTRL_AUTH      = 3,
    ST_CTRL_WELCOME   = 4,
    ST_CTRL_REFUSE    = 5,
    ST_CTRL_PLAN      = 6,
    ST_CTRL_MANIFEST  = 7,
    ST_CTRL_LOADED    = 8,
    ST_CTRL_CONNECT   = 9,
    ST_CTRL_READY     = 10,
    ST_CTRL_HEARTBEAT = 11,
    ST_CTRL_DRAIN     = 12,
    ST_CTRL_LEAVE     = 13,
    ST_CTRL_SHARD_REQUEST = 14,
    ST_CTRL_SHARD_DATA    = 15,
    ST_CTRL_SHARD_END     = 16,
    ST_CTRL_TYPE_MAX_ = 17
} st_ctrl_type_t;

typedef struct st_ctrl_hello {
    char     name[ST_CTRL_NAME_MAX];
    char     host[ST_CTRL_NAME_MAX];
    uint8_t  nonce[ST_CTRL_NONCE];
    uint64_t mem_bytes;        /* memory this worker may use */
    uint32_t n_cpus;           /* CPUs it may run on */
    uint32_t pid;
} st_ctrl_hello_t;

typedef struct st_ctrl_challenge {
    uint8_t nonce[ST_CTRL_NONCE];
    uint8_t proof[ST_CTRL_MAC];   /* coordinator's proof of the secret */
} st_ctrl_challenge_t;

typedef struct st_ctrl_auth {
    uint8_t mac[ST_CTRL_MAC];
} st_ctrl_auth_t;

typedef struct st_ctrl_welcome {
    uint32_t worker_id;
    uint32_t heartbeat_ms;     /* send a heartbeat at least this often */
} st_ctrl_welcome_t;

typedef struct st_ctrl_text {  /* REFUSE, LEAVE */
    int32_t status;            /* st_status_t */
    char    text[ST_CTRL_TEXT_MAX];
} st_ctrl_text_t;

enum {
    ST_CTRL_PLAN_VERIFY = 1u << 0,  /* check tensors against the manifest */
    ST_CTRL_PLAN_BIND   = 1u << 1   /* apply the topology placement */
};

typedef struct st_ctrl_plan {
    uint32_t stage, n_stages;
    uint32_t first_layer, last_layer;   /* [first, last) */
    uint32_t n_layer;                   /* layers of the whole model */
    uint32_t n_ctx, n_slots, max_batch;
    int32_t  n_threads;                 /* <= 0: the worker's choice */
    uint32_t kv_type;                   /* KV cache elements (st_dtype_t: F32, F16, Q8_0).
                                           Decoded as any number: the worker refuses one
                                           it does not know, in LOADED, naming it */
    uint32_t prefix_blocks, prefix_block; /* the stage's prefix-cache pool (0: none) */
    uint32_t flags;                     /* ST_CTRL_PLAN_* */
    uint32_t n_manifest;                /* tensor hashes that follow */
    uint32_t host_rank, host_workers;   /* this worker among the plan's workers on its
                                           host (placement: which cores, NIC, GPU) */
    uint64_t model_size;                /* bytes of the coordinator's file */
    char     model_path[ST_CTRL_PATH_MAX];
    char     transport_tls[ST_CTRL_NAME_MAX]; /* UCX_TLS for the data plane, "" = default */
} st_ctrl_plan_t;

typedef struct st_ctrl_tensor_hash {
    char     name[ST_CTRL_TENSOR_NAME_MAX];
    uint64_t nbytes;
    uint8_t  sha256[32];
} st_ctrl_tensor_hash_t;

typedef struct st_ctrl_manifest {
    uint32_t              n;
    st_ctrl_tensor_hash_t e[ST_CTRL_MANIFEST_BATCH];
} st_ctrl_manifest_t;

typedef struct st_ctrl_loaded {
    int32_t  status;                   /* ST_OK or why loading failed */
    char     data_addr[ST_CTRL_ADDR_MAX];
    uint64_t rss_bytes;                /* resident memory after loading */
    uint64_t weight_bytes, kv_bytes;
    uint64_t load_ns;
    char     error[ST_CTRL_TEXT_MAX];
} st_ctrl_loaded_t;

typedef struct st_ctrl_connect {
    char next_addr[ST_CTRL_ADDR_MAX];  /* next stage, or the coordinator */
} st_ctrl_connect_t;

typedef struct st_ctrl_ready {
    int32_t status;
    char    error[ST_CTRL_TEXT_MAX];
} st_ctrl_ready_t;

typedef struct st_ctrl_heartbeat {
    uint64_t seq;
    uint64_t rss_bytes, rss_peak_bytes;
    uint64_t batches, busy_ns;         /* micro-batches computed, time in them */
} st_ctrl_heartbeat_t;

/* Shard streaming (docs/CLUSTER.md, "Workers without the file"): a worker
 * whose plan names a file it does not have asks for the GGUF header and
 * metadata (header = 1: bytes [0, data offset) of the coordinator's file)
 * or for byte ranges (header = 0) of the coordinator's file; the
 * coordinator answers with SHARD_DATA chunks, in order, from its mapping,
 * then one SHARD_END. A chunk fits one control frame, so the frame limit
 * (64 KiB, checked before any payload is read) also bounds the stream's
 * buffers on both sides. */
#define ST_CTRL_SHARD_CHUNK      (60u * 1024u)   /* data bytes per SHARD_DATA */
#define ST_CTRL_SHARD_MAX_RANGES 1024            /* ranges per SHARD_REQUEST */

typedef struct st_ctrl_range {
    uint64_t offset, len;
} st_ctrl_range_t;

typedef struct st_ctrl_shard_request {
    uint32_t        header;            /* 1: the header + metadata; n must be 0 */
    uint32_t        n;                 /* ranges (1..ST_CTRL_SHARD_MAX_RANGES) */
    st_ctrl_range_t r[ST_CTRL_SHARD_MAX_RANGES];   /* ascending, not overlapping */
} st_ctrl_shard_request_t;

typedef struct st_ctrl_shard_data {
    uint64_t       offset;             /* file offset of data[0] */
    uint32_t       len;                /* 1..ST_CTRL_SHARD_CHUNK */
    const uint8_t *data;               /* encode: the sender's bytes; decode: points
                                          into the received frame, valid until the
                                          next receive on that connection */
} st_ctrl_shard_data_t;

typedef struct st_ctrl_shard_end {
    int32_t  status;                   /* ST_OK or why the coordinator refused */
    uint64_t total;                    /* data bytes sent for this request */
    char     error[ST_CTRL_TEXT_MAX];
} st_ctrl_shard_end_t;

typedef struct st_ctrl_msg {
    st_ctrl_type_t type;
    uint32_t       epoch;              /* plan generation this message belongs to */
    union {
        st_ctrl_hello_t     hello;
        st_ctrl_challenge_t challenge;
        st_ctrl_auth_t      auth;
        st_ctrl_welcome_t   welcome;
        st_ctrl_text_t      refuse, leave;
        st_ctrl_plan_t      plan;
        st_ctrl_manifest_t  manifest;
        st_ctrl_loaded_t    loaded;
        st_ctrl_connect_t   connect;
        st_ctrl_ready_t     ready;
        st_ctrl_heartbeat_t heartbeat;
        st_ctrl_shard_request_t shard_request;
        st_ctrl_shard_data_t    shard_data;
        st_ctrl_shard_end_t     shard_end;
    } u;                               /* DRAIN has no payload */
} st_ctrl_msg_t;

const char *st_ctrl_type_name(uint32_t type);   /* "HELLO", "unknown" */

/* Encodes one frame (header + payload) into buf. ST_ERR_RANGE when it does
 * not fit; ST_ERR_INVALID when a field is outside the protocol's limits
 * (we never send what we would refuse to receive). */
st_status_t st_ctrl_encode(const st_ctrl_msg_t *m, uint8_t *buf, size_t cap, size_t *len,
                           st_error_t *err);

/* Checks a frame header: magic, version, known type, payload length within
 * the limit. Writes the type and payload length. */
st_status_t st_ctrl_decode_header(const uint8_t *hdr, size_t len, uint32_t *type,
                                  uint32_t *payload_len, uint32_t *epoch, st_error_t *err);

/* Decodes a whole frame, validating every field. ST_ERR_PROTOCOL (or
 * ST_ERR_FORMAT for a bad string) with one line naming the field. */
st_status_t st_ctrl_decode(const uint8_t *frame, size_t len, st_ctrl_msg_t *m, st_error_t *err);

/* Checks a decoded SHARD_REQUEST against the file it asks about: every
 * range non-empty, inside [data_offset, file_size) (tensor data only; the
 * header is asked for with header = 1), ascending and not overlapping.
 * ST_ERR_PROTOCOL with the range named. Writes the bytes asked for. */
st_status_t st_ctrl_shard_check_request(const st_ctrl_shard_request_t *rq, uint64_t file_size,
                                        uint64_t data_offset, uint64_t *total,
                                        st_error_t *err);

/* The receiving side of one shard request: the ranges asked for and a
 * cursor. Chunks must arrive in order, exactly covering the ranges. */
typedef struct st_ctrl_shard_rx {
    const st_ctrl_range_t *r;          /* the request's ranges (caller's memory) */
    uint32_t n;
    uint32_t i;                        /* current range */
    uint64_t pos;                      /* next expected offset within range i */
    uint64_t file_size;
    uint64_t received;
    int      header;                   /* the header request: SHARD_END may come before
                                          the range [0, file_size) is complete */
} st_ctrl_shard_rx_t;

void st_ctrl_shard_rx_init(st_ctrl_shard_rx_t *rx, const st_ctrl_range_t *r, uint32_t n,
                           uint64_t file_size);
/* Accepts one SHARD_DATA: its offset must be the next expected byte, its
 * bytes inside the file and inside the current range. ST_ERR_PROTOCOL
 * otherwise (nothing is written by this function: the caller stores the
 * chunk only after ST_OK). */
st_status_t st_ctrl_shard_rx_data(st_ctrl_shard_rx_t *rx, const st_ctrl_shard_data_t *d,
                                  st_error_t *err);
/* Accepts the SHARD_END: its status, and a total equal to what was asked
 * and received. */
st_status_t st_ctrl_shard_rx_end(st_ctrl_shard_rx_t *rx, const st_ctrl_shard_end_t *e,
                                 st_error_t *err);

/* ---- a framed connection over a stream socket ----------------------- */

typedef struct st_ctrl_conn st_ctrl_conn_t;

/* Takes ownership of a connected stream socket (made non-blocking). */
st_status_t st_ctrl_conn_open(int fd, st_ctrl_conn_t **out);
void        st_ctrl_conn_close(st_ctrl_conn_t *c);   /* closes the socket */
int         st_ctrl_conn_fd(const st_ctrl_conn_t *c);
/* Sends one message, waiting up to timeout_ms for socket space. */
st_status_t st_ctrl_conn_send(st_ctrl_conn_t *c, const st_ctrl_msg_t *m, int timeout_ms,
                              st_error_t *err);
/* Receives one message: ST_OK, ST_ERR_TIMEOUT (nothing complete within
 * timeout_ms; 0 = just what is buffered or readable now), ST_ERR_CLOSED
 * (orderly end), ST_ERR_PEER (reset), ST_ERR_PROTOCOL (bad frame: the
 * connection must be closed). */
st_status_t st_ctrl_conn_recv(st_ctrl_conn_t *c, int timeout_ms, st_ctrl_msg_t *m,
                              st_error_t *err);

/* TCP helpers: "host:port" parsing, listening (port 0 = any), connecting
 * with a deadline, and the address a listening socket can be reached at. */
st_status_t st_ctrl_parse_addr(const char *addr, char *host, size_t host_len, uint16_t *port,
                               st_error_t *err);
st_status_t st_ctrl_listen(const char *addr, int *fd_out, st_error_t *err);
st_status_t st_ctrl_connect(const char *addr, int timeout_ms, int *fd_out, st_error_t *err);
st_status_t st_ctrl_local_addr(int fd, char *buf, size_t len);

/* ---- authentication and integrity (OpenSSL) -------------------------- */

/* Reads the cluster secret from a file (trailing newline stripped) or, when
 * path is NULL, from the environment variable STRATA_CLUSTER_SECRET. At
 * least ST_CTRL_SECRET_MIN bytes. */
st_status_t st_ctrl_secret_load(const char *path, uint8_t *secret, size_t cap, size_t *len,
                                st_error_t *err);
st_status_t st_ctrl_random(uint8_t *buf, size_t n);
/* HMAC-SHA256(secret, label | a | b | extra). */
void st_ctrl_proof(const uint8_t *secret, size_t secret_len, const char *label,
                   const uint8_t a[ST_CTRL_NONCE], const uint8_t b[ST_CTRL_NONCE],
                   const char *extra, uint8_t out[ST_CTRL_MAC]);
/* Constant-time comparison of two MACs: 1 when equal. */
/* The data-plane access key (st_transport_config_t.access_key) of a cluster:
 * HMAC-SHA256(secret, "strata-data-plane"), so the secret itself never
 * crosses the data plane. */
void st_ctrl_data_key(const uint8_t *secret, size_t secret_len, uint8_t out[ST_CTRL_MAC]);
int  st_ctrl_mac_equal(const uint8_t a[ST_CTRL_MAC], const uint8_t b[ST_CTRL_MAC]);
void st_ctrl_sha256(const void *data, size_t len, uint8_t out[32]);
/* SHA-256 of `len` bytes at `offset` of an open file, read with pread (the
 * coordinator's manifest: the pages do not count in its resident memory). */
st_status_t st_ctrl_sha256_file(int fd, uint64_t offset, uint64_t len, uint8_t out[32]);

/* ---- data-plane micro-batch frames ------------------------------------ */

#define ST_CTRL_MB_MAGIC 0x424d5453u   /* "STMB" */

typedef enum st_ctrl_mb_kind {
    ST_CTRL_MB_TOKENS = 1,   /* coordinator -> first stage: token ids */
    ST_CTRL_MB_HIDDEN = 2,   /* stage -> next stage: hidden state */
    ST_CTRL_MB_IDS    = 3    /* last stage -> coordinator: sampled ids or an error */
} st_ctrl_mb_kind_t;

/* Fixed part of every micro-batch frame; 8-byte aligned, 320 bytes. */
typedef struct st_ctrl_mb_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t kind;
    uint32_t epoch;
    uint32_t n;              /* tokens (TOKENS, HIDDEN) */
    uint32_t n_setup;        /* slot setups carried */
    uint32_t setup_bytes;
    uint32_t n_embd;         /* HIDDEN */
    uint32_t n_ids;          /* IDS */
    int32_t  status;         /* IDS: ST_OK or the error of some stage */
    uint32_t text_len;       /* IDS: error text bytes including its NUL */
    uint32_t n_stamps;       /* stages that stamped so far */
    uint32_t n_kvops;        /* TOKENS, HIDDEN: prefix-cache ops carried (<= ST_KVOP_MAX) */
    uint64_t mb_id;
    uint64_t t_submit;       /* coordinator clock */
    /* per stage: receive and send time (CLOCK_MONOTONIC of that host) */
    uint64_t stamp[ST_CTRL_MAX_STAGES][2];
} st_ctrl_mb_hdr_t;

/* One slot setup on the wire (followed by n_window int32 ids). */
typedef struct st_ctrl_mb_setup {
    uint32_t slot;
    uint32_t n_window;       /* tail of the prompt for the repetition penalty */
    float    temperature, top_p, min_p, repeat_penalty;
    int32_t  top_k, repeat_last_n;
    uint64_t seed;
} st_ctrl_mb_setup_t;

/* Where each part of a frame lies (byte offsets from the frame start). */
typedef struct st_ctrl_mb_layout {
    size_t pos, slot, want, setup, kvops, tokens, hidden, ids, text, total;
} st_ctrl_mb_layout_t;

/* Offsets for a frame of this shape; ST_ERR_OVERFLOW on absurd sizes. The
 * hidden rows start 64-byte aligned from the frame start. IDS frames carry
 * ids and an error text of `text_len` bytes. */
st_status_t st_ctrl_mb_layout(uint32_t kind, uint32_t n, uint32_t n_embd, uint32_t setup_bytes,
                              uint32_t n_kvops, uint32_t n_ids, uint32_t text_len,
                              st_ctrl_mb_layout_t *out);
/* Bytes of a setup record with this window. */
static inline uint32_t st_ctrl_mb_setup_size(uint32_t n_window)
{
    return (uint32_t)sizeof(st_ctrl_mb_setup_t) + 4u * n_window;
}

/* Limits a receiver checks a frame against. */
typedef struct st_ctrl_mb_limits {
    uint32_t kind;           /* expected kind (TOKENS or HIDDEN or IDS) */
    uint32_t epoch;          /* current plan generation */
    uint32_t max_batch, n_slots, n_ctx, n_embd, n_vocab;
    uint32_t max_ids;        /* IDS frames */
} st_ctrl_mb_limits_t;

/* A validated frame. Arrays point into the frame. An IDS frame with an error
 * status has n_ids == 0 and `text` set. */
typedef struct st_ctrl_mb_view {
    const st_ctrl_mb_hdr_t *hdr;
    const int32_t *pos, *slot, *tokens, *ids;
    const uint8_t *want;
    const float   *hidden;
    const uint8_t *setup;            /* n_setup records, see st_ctrl_mb_setup_next */
    const st_kvop_t *kvops;          /* n_kvops ops (fields checked against the limits;
                                        the stage checks blocks and runs them) */
    const char    *text;             /* IDS error text, NUL-terminated by the sender */
    st_ctrl_mb_layout_t layout;
} st_ctrl_mb_view_t;

/* Validates a received frame completely: sizes match `len` exactly, counts
 * within limits, slots, positions, token ids, want flags, setup records
 * (sampler parameters checked), epoch. The frame must be 8-byte aligned. */
st_status_t st_ctrl_mb_parse(const void *frame, size_t len, const st_ctrl_mb_limits_t *lim,
                             st_ctrl_mb_view_t *out, st_error_t *err);

/* Walks the setup records of a parsed frame: *off starts at 0. */
void st_ctrl_mb_setup_get(const st_ctrl_mb_view_t *v, size_t *off, st_ctrl_mb_setup_t *rec,
                          const int32_t **window);
/* Writes a setup record at dst (st_ctrl_mb_setup_size(n_window) bytes). */
void st_ctrl_mb_setup_put(uint8_t *dst, uint32_t slot, const st_sampler_params_t *p,
                          const int32_t *window, uint32_t n_window);
void st_ctrl_mb_setup_params(const st_ctrl_mb_setup_t *rec, st_sampler_params_t *p);

#endif /* ST_CTRL_H */
