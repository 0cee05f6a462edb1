/* Frame header encoding and validation (transport/wire.c). */
#include "st_test.h"
#include "st_transport_wire.h"

#include <stdint.h>
#include <string.h>

static st_wire_hdr_t sample(void)
{
    st_wire_hdr_t h;
    memset(&h, 0, sizeof(h));
    h.version = ST_WIRE_VERSION;
    h.type = ST_WIRE_ACTIVATION;
    h.flags = 0x5a;
    h.stage = 7;
    h.seq = 0xdeadbeef;
    h.request_id = 0x0123456789abcdefull;
    h.payload_len = 4096;
    return h;
}

ST_TEST(round_trip)
{
    st_wire_hdr_t h = sample(), d;
    uint8_t buf[ST_WIRE_HDR_SIZE];
    st_error_t err;

    st_wire_encode(&h, buf);
    ST_REQUIRE(st_wire_decode(buf, sizeof(buf), 1 << 20, &err, &d) == ST_OK);
    ST_CHECK(d.type == h.type && d.flags == h.flags && d.stage == h.stage);
    ST_CHECK(d.seq == h.seq && d.request_id == h.request_id && d.payload_len == h.payload_len);
    ST_CHECK(d.version == ST_WIRE_VERSION);
}

ST_TEST(layout_is_little_endian_and_fixed)
{
    st_wire_hdr_t h = sample();
    uint8_t buf[ST_WIRE_HDR_SIZE];

    st_wire_encode(&h, buf);
    ST_CHECK(memcmp(buf, "STRT", 4) == 0);
    ST_CHECK(buf[4] == 1 && buf[5] == 2);
    ST_CHECK(buf[6] == 0x5a && buf[7] == 0);
    ST_CHECK(buf[8] == 7 && buf[9] == 0);
    ST_CHECK(buf[12] == 0xef && buf[15] == 0xde);
    ST_CHECK(buf[16] == 0xef && buf[23] == 0x01);
    ST_CHECK(buf[24] == 0x00 && buf[25] == 0x10 && buf[31] == 0);
}

static st_status_t decode_mut(size_t at, uint8_t val, uint64_t max, st_error_t *err)
{
    st_wire_hdr_t h = sample(), d;
    uint8_t buf[ST_WIRE_HDR_SIZE];
    st_wire_encode(&h, buf);
    buf[at] = val;
    return st_wire_decode(buf, sizeof(buf), max, err, &d);
}

ST_TEST(rejects_each_bad_field)
{
    st_error_t err;

    ST_CHECK(decode_mut(0, 'X', 1 << 20, &err) == ST_ERR_PROTOCOL);
    ST_CHECK_MSG(strstr(err.msg, "magic") != NULL, "%s", err.msg);
    ST_CHECK(decode_mut(4, 2, 1 << 20, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "version") != NULL);
    ST_CHECK(decode_mut(5, 0, 1 << 20, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "type") != NULL);
    ST_CHECK(decode_mut(5, 5, 1 << 20, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(decode_mut(5, 4, 1 << 20, &err) == ST_ERR_PROTOCOL);    /* credit with payload */
    ST_CHECK(decode_mut(5, 255, 1 << 20, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(decode_mut(7, 1, 1 << 20, &err) == ST_ERR_PROTOCOL);    /* reserved flag */
    ST_CHECK(strstr(err.msg, "flag") != NULL);
    ST_CHECK(decode_mut(24, 1, 4096, &err) == ST_ERR_PROTOCOL);      /* 4097 > 4096 */
    ST_CHECK(strstr(err.msg, "maximum") != NULL);
    ST_CHECK(decode_mut(31, 0x80, 1u << 20, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(decode_mut(24, 0, 4096, &err) == ST_OK);                /* exactly 4096 */
}

ST_TEST(rejects_bad_lengths)
{
    st_wire_hdr_t h = sample(), d;
    uint8_t buf[ST_WIRE_HDR_SIZE + 1];
    st_error_t err;

    st_wire_encode(&h, buf);
    ST_CHECK(st_wire_decode(buf, ST_WIRE_HDR_SIZE - 1, 1 << 20, &err, &d) == ST_ERR_PROTOCOL);
    ST_CHECK(st_wire_decode(buf, ST_WIRE_HDR_SIZE + 1, 1 << 20, &err, &d) == ST_ERR_PROTOCOL);
    ST_CHECK(st_wire_decode(NULL, ST_WIRE_HDR_SIZE, 1 << 20, &err, &d) == ST_ERR_PROTOCOL);
    ST_CHECK(st_wire_decode(buf, 0, 1 << 20, NULL, &d) == ST_ERR_PROTOCOL);
}

ST_TEST(output_untouched_on_error)
{
    st_wire_hdr_t h = sample(), d;
    uint8_t buf[ST_WIRE_HDR_SIZE];

    memset(&d, 0xab, sizeof(d));
    st_wire_encode(&h, buf);
    buf[0] ^= 1;
    ST_CHECK(st_wire_decode(buf, sizeof(buf), 1 << 20, NULL, &d) != ST_OK);
    ST_CHECK(d.stage == 0xabababab);
}

ST_TEST(hello)
{
    st_wire_hello_t h = {.max_payload = 1 << 24, .credits = 68}, d;
    st_wire_hdr_t hh = sample(), dh;
    uint8_t buf[ST_WIRE_HELLO_SIZE], hb[ST_WIRE_HDR_SIZE];
    st_error_t err;

    st_wire_hello_encode(&h, buf);
    ST_REQUIRE(st_wire_hello_decode(buf, sizeof(buf), &err, &d) == ST_OK);
    ST_CHECK(d.max_payload == 1 << 24 && d.credits == 68);
    ST_CHECK(st_wire_hello_decode(buf, sizeof(buf) - 1, &err, &d) == ST_ERR_PROTOCOL);
    buf[12] = 1;
    ST_CHECK(st_wire_hello_decode(buf, sizeof(buf), &err, &d) == ST_ERR_PROTOCOL);
    memset(buf, 0, sizeof(buf));
    ST_CHECK(st_wire_hello_decode(buf, sizeof(buf), &err, &d) == ST_ERR_PROTOCOL);
    /* a hello header must announce exactly the hello payload size */
    hh.type = ST_WIRE_HELLO;
    hh.payload_len = 17;
    st_wire_encode(&hh, hb);
    ST_CHECK(st_wire_decode(hb, sizeof(hb), 1 << 20, &err, &dh) == ST_ERR_PROTOCOL);
}

/* The address-mode hello: key, ids and the opener's address round-trip; an
 * answer carries no address, an opening one must; lengths must agree. */
ST_TEST(hello_addr)
{
    static const uint8_t addr[5] = {1, 2, 3, 4, 5};
    st_wire_hello_t h = {.max_payload = 4096, .credits = 8, .reserved = ST_WIRE_HELLO_F_ADDR,
                         .conn_id = 0x100000002ull, .addr_len = 5, .addr = addr}, d;
    uint8_t buf[ST_WIRE_HELLO_MAX];
    st_error_t err;
    size_t n;

    memset(h.key, 0x5a, sizeof(h.key));
    n = st_wire_hello_encode(&h, buf);
    ST_REQUIRE(n == ST_WIRE_HELLO_ADDR_FIXED + 5);
    ST_REQUIRE(st_wire_hello_decode(buf, n, &err, &d) == ST_OK);
    ST_CHECK(d.conn_id == h.conn_id && d.echo_id == 0 && d.addr_len == 5 &&
             !memcmp(d.addr, addr, 5) && d.key[31] == 0x5a);
    ST_CHECK(st_wire_hello_decode(buf, n - 1, &err, &d) == ST_ERR_PROTOCOL);
    buf[64] = 4;                                    /* address length disagrees */
    ST_CHECK(st_wire_hello_decode(buf, n, &err, &d) == ST_ERR_PROTOCOL);
    h.echo_id = 7;                                  /* an answer with an address */
    n = st_wire_hello_encode(&h, buf);
    ST_CHECK(st_wire_hello_decode(buf, n, &err, &d) == ST_ERR_PROTOCOL);
    h.addr_len = 0;
    n = st_wire_hello_encode(&h, buf);
    ST_CHECK(st_wire_hello_decode(buf, n, &err, &d) == ST_OK && d.echo_id == 7);
    h.conn_id = 0;                                  /* no connection id */
    n = st_wire_hello_encode(&h, buf);
    ST_CHECK(st_wire_hello_decode(buf, n, &err, &d) == ST_ERR_PROTOCOL);
}

/* Random bytes never crash the decoder and are accepted only when they
 * happen to be a valid header. */
ST_TEST(credit_frames)
{
    st_wire_hdr_t h, d;
    uint8_t buf[ST_WIRE_HDR_SIZE];

    memset(&h, 0, sizeof(h));
    h.type = ST_WIRE_CREDIT;
    h.seq = 16;
    st_wire_encode(&h, buf);
    ST_CHECK(st_wire_decode(buf, sizeof(buf), 1 << 20, NULL, &d) == ST_OK && d.seq == 16);
    h.seq = 0;
    st_wire_encode(&h, buf);
    ST_CHECK(st_wire_decode(buf, sizeof(buf), 1 << 20, NULL, &d) == ST_ERR_PROTOCOL);
}

/* BYE is 0 (closing) or 1 (ack) and carries nothing. */
ST_TEST(bye_frames)
{
    st_wire_hdr_t h, d;
    uint8_t buf[ST_WIRE_HDR_SIZE];
    st_error_t err;

    memset(&h, 0, sizeof(h));
    h.type = ST_WIRE_BYE;
    for (uint32_t seq = 0; seq <= 1; seq++) {
        h.seq = seq;
        st_wire_encode(&h, buf);
        ST_CHECK(st_wire_decode(buf, sizeof(buf), 1 << 20, NULL, &d) == ST_OK && d.seq == seq);
    }
    h.seq = 2;
    st_wire_encode(&h, buf);
    ST_CHECK(st_wire_decode(buf, sizeof(buf), 1 << 20, &err, &d) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "bye frame") != NULL);
    h.seq = 0;
    h.payload_len = 8;
    st_wire_encode(&h, buf);
    ST_CHECK(st_wire_decode(buf, sizeof(buf), 1 << 20, NULL, &d) == ST_ERR_PROTOCOL);
}

ST_TEST(random_bytes)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uint8_t buf[ST_WIRE_HDR_SIZE];
    st_wire_hdr_t d;
    int ok = 0;

    for (int i = 0; i < 100000; i++) {
        for (size_t j = 0; j < sizeof(buf); j++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            buf[j] = (uint8_t)x;
        }
        if (i & 1)
            memcpy(buf, "STRT\x01", 5);
        if (st_wire_decode(buf, sizeof(buf), 1 << 20, NULL, &d) == ST_OK) {
            ok++;
            ST_CHECK(d.type >= 1 && d.type <= ST_WIRE_TYPE_MAX_ && d.payload_len <= (1 << 20));
        }
    }
    ST_CHECK(ok < 100000);
}

int main(void) { return st_test_main(); }
