/*
 * st_transport_wire.h - the fixed, versioned header of every transport frame.
 *
 * Every message strata sends over UCX carries this 32-byte header as the
 * active-message header; the payload travels as the AM data. The header is
 * encoded explicitly little endian, so its layout does not depend on the
 * compiler or the host:
 *
 *   off size field        meaning
 *     0   4  magic        ST_WIRE_MAGIC ("STRT" read as a little-endian u32)
 *     4   1  version      ST_WIRE_VERSION; a peer speaking another version is
 *                         rejected rather than guessed at
 *     5   1  type         st_wire_type_t, checked against the known range
 *     6   2  flags        bits 0..7 belong to the application and are passed
 *                         through; bits 8..15 are reserved and must be zero
 *     8   4  stage        pipeline stage (or any small routing id)
 *    12   4  seq          micro-batch / sequence number within a request
 *    16   8  request_id   request or decode-step id
 *    24   8  payload_len  bytes of payload that follow
 *
 * st_wire_decode() is the only function that turns received bytes into a
 * header; it validates every field before a caller may look at the payload.
 * Nothing decoded from the wire is ever used as a pointer, a local buffer
 * size or an operation code beyond the fixed types below; payload_len is
 * only compared against the negotiated maximum and the size UCX delivered.
 *
 * HELLO frames carry st_wire_hello_t (16 bytes) and are exchanged once per
 * endpoint to negotiate the largest payload each side accepts and how many
 * messages the sender may have unacknowledged (credits). CREDIT frames have
 * no payload; their `seq` field returns that many credits to the receiver of
 * the frame (flow control: a receiver never gets more messages than it has
 * promised buffers for).
 *
 * BYE frames have no payload; seq 0 says "I am closing this endpoint", seq 1
 * acknowledges it. A closing side waits (bounded) for the acknowledgement
 * before it closes the UCP endpoint: every frame it sent earlier has then
 * reached the peer's handler. Without it a message UCX still held (an
 * endpoint whose shared-memory lane was being wired up, say) was dropped by
 * the forced close; seen as a lost last message in 1 of 6 runs over posix.
 */
#ifndef ST_TRANSPORT_WIRE_H
#define ST_TRANSPORT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_status.h"

#define ST_WIRE_MAGIC        0x54525453u   /* bytes 'S','T','R','T' */
#define ST_WIRE_VERSION      1u
#define ST_WIRE_HDR_SIZE     32u
#define ST_WIRE_HELLO_SIZE   16u          /* the sockaddr-mode hello */
#define ST_WIRE_KEY_SIZE     32u          /* data-plane access key in an address-mode hello */
#define ST_WIRE_HELLO_ADDR_FIXED (ST_WIRE_HELLO_SIZE + ST_WIRE_KEY_SIZE + 24u)
#define ST_WIRE_ADDR_MAX     2048u        /* largest UCX worker address carried */
#define ST_WIRE_HELLO_MAX    (ST_WIRE_HELLO_ADDR_FIXED + ST_WIRE_ADDR_MAX)
#define ST_WIRE_HELLO_F_ADDR 1u           /* hello.reserved: address-mode extension follows */
#define ST_WIRE_FLAGS_USER   0x00ffu       /* application-owned flag bits */

typedef enum st_wire_type {
    ST_WIRE_HELLO      = 1,  /* endpoint handshake: limits of the sender   */
    ST_WIRE_ACTIVATION = 2,  /* activation tensor between pipeline stages  */
    ST_WIRE_CONTROL    = 3,  /* small control message of the layer above   */
    ST_WIRE_CREDIT     = 4,  /* flow control: seq = credits given back      */
    ST_WIRE_BYE        = 5,  /* orderly close: seq 0 = closing, 1 = ack     */
    ST_WIRE_TYPE_MAX_  = 5
} st_wire_type_t;

typedef struct st_wire_hdr {
    uint8_t  version;
    uint8_t  type;
    uint16_t flags;
    uint32_t stage;
    uint32_t seq;
    uint64_t request_id;
    uint64_t payload_len;
} st_wire_hdr_t;

/* The handshake. Sockaddr endpoints send the first three fields (16 bytes,
 * reserved 0). Endpoints created from a UCX worker address (no listener,
 * st_transport_worker_address) send reserved = ST_WIRE_HELLO_F_ADDR and the
 * extension: the data-plane access key, the sender's connection id, the id
 * of the peer's connection this hello answers (0 in the opening hello) and,
 * in the opening hello, the sender's worker address, so that the receiver
 * can create its own endpoint back (its sends then have an error handler). */
typedef struct st_wire_hello {
    uint64_t max_payload;    /* largest payload the sender will accept      */
    uint32_t credits;        /* messages the peer may send unacknowledged   */
    uint32_t reserved;       /* 0, or ST_WIRE_HELLO_F_ADDR                  */
    uint8_t  key[ST_WIRE_KEY_SIZE]; /* F_ADDR: access key                   */
    uint64_t conn_id;        /* F_ADDR: sender's connection id (non-zero)   */
    uint64_t echo_id;        /* F_ADDR: peer connection answered, or 0      */
    uint32_t addr_len;       /* F_ADDR: bytes of addr (0 in an answer)      */
    const uint8_t *addr;     /* F_ADDR: points into the decoded buffer      */
} st_wire_hello_t;

/* Writes the 32-byte encoding of `h` (magic and version added) to out. */
void st_wire_encode(const st_wire_hdr_t *h, uint8_t out[ST_WIRE_HDR_SIZE]);

/* Validates and decodes a received header of `len` bytes. `max_payload` is
 * the largest payload this side accepts. On failure returns ST_ERR_PROTOCOL
 * and writes the reason (field and value) to err; *out is written only on
 * success. */
st_status_t st_wire_decode(const void *buf, size_t len, uint64_t max_payload,
                           st_error_t *err, st_wire_hdr_t *out);

/* Writes the hello (16 bytes, or the extension with F_ADDR) to out, which
 * holds ST_WIRE_HELLO_MAX bytes; returns the length written. */
size_t st_wire_hello_encode(const st_wire_hello_t *h, uint8_t *out);
st_status_t st_wire_hello_decode(const void *buf, size_t len, st_error_t *err,
                                 st_wire_hello_t *out);

const char *st_wire_type_name(uint32_t type);

#endif /* ST_TRANSPORT_WIRE_H */
