/* Encoding and validation of transport frame headers (see st_transport_wire.h). */
#include "st_transport_wire.h"

#include <string.h>

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16); }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

void st_wire_encode(const st_wire_hdr_t *h, uint8_t out[ST_WIRE_HDR_SIZE])
{
    put32(out + 0, ST_WIRE_MAGIC);
    out[4] = ST_WIRE_VERSION;
    out[5] = h->type;
    put16(out + 6, h->flags);
    put32(out + 8, h->stage);
    put32(out + 12, h->seq);
    put64(out + 16, h->request_id);
    put64(out + 24, h->payload_len);
}

st_status_t st_wire_decode(const void *buf, size_t len, uint64_t max_payload,
                           st_error_t *err, st_wire_hdr_t *out)
{
    const uint8_t *p = buf;
    st_wire_hdr_t h;
    uint32_t magic;

    if (buf == NULL || len != ST_WIRE_HDR_SIZE)
        return st_error_set(err, ST_ERR_PROTOCOL, "header length %zu, expected %u",
                            buf ? len : 0, ST_WIRE_HDR_SIZE);
    magic = get32(p);
    if (magic != ST_WIRE_MAGIC)
        return st_error_set(err, ST_ERR_PROTOCOL, "bad magic 0x%08x", magic);
    h.version = p[4];
    if (h.version != ST_WIRE_VERSION)
        return st_error_set(err, ST_ERR_PROTOCOL, "unsupported version %u (we speak %u)",
                            h.version, ST_WIRE_VERSION);
    h.type = p[5];
    if (h.type < ST_WIRE_HELLO || h.type > ST_WIRE_TYPE_MAX_)
        return st_error_set(err, ST_ERR_PROTOCOL, "unknown message type %u", h.type);
    h.flags = get16(p + 6);
    if (h.flags & ~ST_WIRE_FLAGS_USER)
        return st_error_set(err, ST_ERR_PROTOCOL, "reserved flag bits set (0x%04x)", h.flags);
    h.stage       = get32(p + 8);
    h.seq         = get32(p + 12);
    h.request_id  = get64(p + 16);
    h.payload_len = get64(p + 24);
    if (h.payload_len > max_payload)
        return st_error_set(err, ST_ERR_PROTOCOL, "payload length %llu over the maximum %llu",
                            (unsigned long long)h.payload_len,
                            (unsigned long long)max_payload);
    if (h.type == ST_WIRE_CREDIT && (h.payload_len != 0 || h.seq == 0))
        return st_error_set(err, ST_ERR_PROTOCOL, "credit frame with payload %llu, credits %u",
                            (unsigned long long)h.payload_len, h.seq);
    if (h.type == ST_WIRE_BYE && (h.payload_len != 0 || h.seq > 1))
        return st_error_set(err, ST_ERR_PROTOCOL, "bye frame with payload %llu, seq %u",
                            (unsigned long long)h.payload_len, h.seq);
    if (h.type == ST_WIRE_HELLO && h.payload_len != ST_WIRE_HELLO_SIZE &&
        (h.payload_len < ST_WIRE_HELLO_ADDR_FIXED || h.payload_len > ST_WIRE_HELLO_MAX))
        return st_error_set(err, ST_ERR_PROTOCOL, "hello payload length %llu, expected %u or "
                            "%u..%u", (unsigned long long)h.payload_len, ST_WIRE_HELLO_SIZE,
                            ST_WIRE_HELLO_ADDR_FIXED, ST_WIRE_HELLO_MAX);
    *out = h;
    return ST_OK;
}

size_t st_wire_hello_encode(const st_wire_hello_t *h, uint8_t *out)
{
    uint32_t alen = h->addr_len <= ST_WIRE_ADDR_MAX ? h->addr_len : 0;

    put64(out, h->max_payload);
    put32(out + 8, h->credits);
    if (h->reserved != ST_WIRE_HELLO_F_ADDR) {
        put32(out + 12, 0);
        return ST_WIRE_HELLO_SIZE;
    }
    put32(out + 12, ST_WIRE_HELLO_F_ADDR);
    memcpy(out + 16, h->key, ST_WIRE_KEY_SIZE);
    put64(out + 48, h->conn_id);
    put64(out + 56, h->echo_id);
    put32(out + 64, alen);
    put32(out + 68, 0);
    if (alen)
        memcpy(out + ST_WIRE_HELLO_ADDR_FIXED, h->addr, alen);
    return ST_WIRE_HELLO_ADDR_FIXED + alen;
}

st_status_t st_wire_hello_decode(const void *buf, size_t len, st_error_t *err,
                                 st_wire_hello_t *out)
{
    const uint8_t *p = buf;
    st_wire_hello_t h;

    if (buf == NULL || (len != ST_WIRE_HELLO_SIZE &&
                        (len < ST_WIRE_HELLO_ADDR_FIXED || len > ST_WIRE_HELLO_MAX)))
        return st_error_set(err, ST_ERR_PROTOCOL, "hello length %zu, expected %u",
                            buf ? len : 0, ST_WIRE_HELLO_SIZE);
    memset(&h, 0, sizeof(h));
    h.max_payload = get64(p);
    h.credits     = get32(p + 8);
    h.reserved    = get32(p + 12);
    if (len == ST_WIRE_HELLO_SIZE && h.reserved != 0)
        return st_error_set(err, ST_ERR_PROTOCOL, "hello reserved field 0x%08x", h.reserved);
    if (len > ST_WIRE_HELLO_SIZE) {
        uint32_t pad;
        if (h.reserved != ST_WIRE_HELLO_F_ADDR)
            return st_error_set(err, ST_ERR_PROTOCOL, "hello reserved field 0x%08x with an "
                                "extension", h.reserved);
        memcpy(h.key, p + 16, ST_WIRE_KEY_SIZE);
        h.conn_id  = get64(p + 48);
        h.echo_id  = get64(p + 56);
        h.addr_len = get32(p + 64);
        pad        = get32(p + 68);
        if (pad != 0 || h.conn_id == 0 || (uint64_t)h.addr_len != len - ST_WIRE_HELLO_ADDR_FIXED)
            return st_error_set(err, ST_ERR_PROTOCOL, "hello extension: connection id %llu, "
                                "address %u bytes in a %zu-byte hello",
                                (unsigned long long)h.conn_id, h.addr_len, len);
        if ((h.echo_id == 0) == (h.addr_len == 0))
            return st_error_set(err, ST_ERR_PROTOCOL, "hello extension: an opening hello "
                                "carries an address, an answer does not");
        h.addr = h.addr_len ? p + ST_WIRE_HELLO_ADDR_FIXED : NULL;
    }
    if (h.credits == 0 || h.credits > 65536)
        return st_error_set(err, ST_ERR_PROTOCOL, "hello advertises %u credits (1..65536)",
                            h.credits);
    *out = h;
    return ST_OK;
}

const char *st_wire_type_name(uint32_t type)
{
    switch (type) {
    case ST_WIRE_HELLO:      return "hello";
    case ST_WIRE_ACTIVATION: return "activation";
    case ST_WIRE_CONTROL:    return "control";
    case ST_WIRE_CREDIT:     return "credit";
    case ST_WIRE_BYE:        return "bye";
    }
    return "unknown";
}
