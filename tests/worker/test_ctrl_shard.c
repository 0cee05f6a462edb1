/*
 * test_ctrl_shard.c - shard streaming messages (worker/st_ctrl.h): the
 * codec of SHARD_REQUEST / SHARD_DATA / SHARD_END, and the checks both ends
 * apply: a request's ranges against the file, each received chunk against
 * the file and the ranges asked for, and the end of the stream.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "st_ctrl.h"
#include "st_test.h"

static uint8_t frame[ST_CTRL_HDR_SIZE + ST_CTRL_MAX_PAYLOAD];

#define FILE_SIZE 1000000ull
#define DATA_OFF  4096ull

ST_TEST(shard_messages_roundtrip)
{
    static st_ctrl_msg_t m, d;
    static uint8_t bytes[ST_CTRL_SHARD_CHUNK];
    st_error_t err;
    size_t len;

    for (size_t i = 0; i < sizeof(bytes); i++)
        bytes[i] = (uint8_t)(i * 7);
    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_SHARD_REQUEST;
    m.epoch = 2;
    m.u.shard_request.n = 2;
    m.u.shard_request.r[0] = (st_ctrl_range_t){5000, 100};
    m.u.shard_request.r[1] = (st_ctrl_range_t){9000, 70000};
    ST_REQUIRE(st_ctrl_encode(&m, frame, sizeof(frame), &len, &err) == ST_OK);
    ST_REQUIRE(st_ctrl_decode(frame, len, &d, &err) == ST_OK);
    ST_CHECK(d.type == ST_CTRL_SHARD_REQUEST && d.epoch == 2 && d.u.shard_request.n == 2);
    ST_CHECK(d.u.shard_request.r[1].offset == 9000 && d.u.shard_request.r[1].len == 70000);

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_SHARD_DATA;
    m.u.shard_data.offset = 9000;
    m.u.shard_data.len = ST_CTRL_SHARD_CHUNK;
    m.u.shard_data.data = bytes;
    ST_REQUIRE(st_ctrl_encode(&m, frame, sizeof(frame), &len, &err) == ST_OK);
    ST_REQUIRE(st_ctrl_decode(frame, len, &d, &err) == ST_OK);
    ST_CHECK(d.u.shard_data.offset == 9000 && d.u.shard_data.len == ST_CTRL_SHARD_CHUNK);
    ST_CHECK(memcmp(d.u.shard_data.data, bytes, sizeof(bytes)) == 0);
    /* a truncated chunk is refused by the decoder */
    ST_CHECK(st_ctrl_decode(frame, len - 1, &d, &err) == ST_ERR_PROTOCOL);
    /* a length field larger than the chunk limit: patch it on the wire */
    m.u.shard_data.len = 10;
    ST_REQUIRE(st_ctrl_encode(&m, frame, sizeof(frame), &len, &err) == ST_OK);
    frame[ST_CTRL_HDR_SIZE + 8] = 0xff;
    frame[ST_CTRL_HDR_SIZE + 9] = 0xff;
    frame[ST_CTRL_HDR_SIZE + 10] = 0x01;
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    /* the encoder refuses what the decoder would */
    m.u.shard_data.len = ST_CTRL_SHARD_CHUNK + 1;
    ST_CHECK(st_ctrl_encode(&m, frame, sizeof(frame), &len, &err) == ST_ERR_INVALID);

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_SHARD_END;
    m.u.shard_end.status = ST_ERR_PROTOCOL;
    m.u.shard_end.total = 77;
    snprintf(m.u.shard_end.error, sizeof(m.u.shard_end.error), "no");
    ST_REQUIRE(st_ctrl_encode(&m, frame, sizeof(frame), &len, &err) == ST_OK);
    ST_REQUIRE(st_ctrl_decode(frame, len, &d, &err) == ST_OK);
    ST_CHECK(d.u.shard_end.status == ST_ERR_PROTOCOL && d.u.shard_end.total == 77);
    ST_CHECK(strcmp(d.u.shard_end.error, "no") == 0);
}

ST_TEST(shard_request_counts_refused_by_decoder)
{
    static st_ctrl_msg_t m, d;
    st_error_t err;
    size_t len;

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_SHARD_REQUEST;
    m.u.shard_request.n = 1;
    m.u.shard_request.r[0] = (st_ctrl_range_t){5000, 1};
    ST_REQUIRE(st_ctrl_encode(&m, frame, sizeof(frame), &len, &err) == ST_OK);
    frame[ST_CTRL_HDR_SIZE + 4] = 0;          /* n = 0 ranges */
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    frame[ST_CTRL_HDR_SIZE + 4] = 1;
    frame[ST_CTRL_HDR_SIZE] = 1;              /* header request that carries a range */
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    frame[ST_CTRL_HDR_SIZE] = 0;
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_OK);
    m.u.shard_request.n = ST_CTRL_SHARD_MAX_RANGES + 1;
    ST_CHECK(st_ctrl_encode(&m, frame, sizeof(frame), &len, &err) == ST_ERR_INVALID);
}

static st_status_t check(uint64_t off, uint64_t len)
{
    static st_ctrl_shard_request_t rq;
    uint64_t total = 0;
    st_error_t err;
    memset(&rq, 0, sizeof(rq));
    rq.n = 1;
    rq.r[0] = (st_ctrl_range_t){off, len};
    return st_ctrl_shard_check_request(&rq, FILE_SIZE, DATA_OFF, &total, &err);
}

ST_TEST(shard_request_ranges_checked_against_the_file)
{
    static st_ctrl_shard_request_t rq;
    uint64_t total = 0;
    st_error_t err;

    ST_CHECK(check(DATA_OFF, 10) == ST_OK);
    ST_CHECK(check(FILE_SIZE - 10, 10) == ST_OK);
    ST_CHECK(check(FILE_SIZE - 10, 11) == ST_ERR_PROTOCOL);     /* past the end */
    ST_CHECK(check(FILE_SIZE, 1) == ST_ERR_PROTOCOL);
    ST_CHECK(check(FILE_SIZE + 5, 1) == ST_ERR_PROTOCOL);      /* bad offset */
    ST_CHECK(check(UINT64_MAX - 3, 8) == ST_ERR_PROTOCOL);     /* wraps around */
    ST_CHECK(check(DATA_OFF, UINT64_MAX) == ST_ERR_PROTOCOL);
    ST_CHECK(check(0, 100) == ST_ERR_PROTOCOL);                /* the header: own request */
    ST_CHECK(check(DATA_OFF, 0) == ST_ERR_PROTOCOL);           /* empty */

    memset(&rq, 0, sizeof(rq));
    rq.n = 2;
    rq.r[0] = (st_ctrl_range_t){10000, 500};
    rq.r[1] = (st_ctrl_range_t){10400, 10};                     /* overlaps */
    ST_CHECK(st_ctrl_shard_check_request(&rq, FILE_SIZE, DATA_OFF, &total, &err) ==
             ST_ERR_PROTOCOL);
    rq.r[1] = (st_ctrl_range_t){5000, 10};                      /* descending */
    ST_CHECK(st_ctrl_shard_check_request(&rq, FILE_SIZE, DATA_OFF, &total, &err) ==
             ST_ERR_PROTOCOL);
    rq.r[1] = (st_ctrl_range_t){10500, 10};
    ST_CHECK(st_ctrl_shard_check_request(&rq, FILE_SIZE, DATA_OFF, &total, &err) == ST_OK);
    ST_CHECK(total == 510);
    rq.n = 0;
    rq.header = 1;
    ST_CHECK(st_ctrl_shard_check_request(&rq, FILE_SIZE, DATA_OFF, &total, &err) == ST_OK);
    ST_CHECK(total == DATA_OFF);
}

static st_status_t chunk(st_ctrl_shard_rx_t *rx, uint64_t off, uint32_t len)
{
    static uint8_t b[ST_CTRL_SHARD_CHUNK];
    st_ctrl_shard_data_t d = {off, len, b};
    st_error_t err;
    return st_ctrl_shard_rx_data(rx, &d, &err);
}

ST_TEST(shard_chunks_must_follow_the_request)
{
    const st_ctrl_range_t r[2] = {{10000, 100}, {20000, 50}};
    st_ctrl_shard_rx_t rx;
    st_ctrl_shard_end_t end = {ST_OK, 150, ""};
    st_error_t err;

    st_ctrl_shard_rx_init(&rx, r, 2, FILE_SIZE);
    ST_CHECK(chunk(&rx, 9999, 1) == ST_ERR_PROTOCOL);          /* before the range */
    ST_CHECK(chunk(&rx, 10010, 10) == ST_ERR_PROTOCOL);        /* skips bytes */
    ST_CHECK(chunk(&rx, 10000, 101) == ST_ERR_PROTOCOL);       /* past the range */
    ST_CHECK(chunk(&rx, FILE_SIZE - 1, 2) == ST_ERR_PROTOCOL); /* outside the file */
    ST_CHECK(chunk(&rx, 10000, 0) == ST_ERR_PROTOCOL);
    ST_CHECK(chunk(&rx, 10000, 60) == ST_OK);
    /* an early end is refused: a requested range is missing */
    end.total = 60;
    ST_CHECK(st_ctrl_shard_rx_end(&rx, &end, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(chunk(&rx, 10060, 40) == ST_OK);
    ST_CHECK(chunk(&rx, 15000, 10) == ST_ERR_PROTOCOL);        /* in the gap, not asked */
    ST_CHECK(chunk(&rx, 20000, 50) == ST_OK);
    ST_CHECK(chunk(&rx, 20050, 1) == ST_ERR_PROTOCOL);         /* after everything */
    end.total = 149;                                            /* wrong total */
    ST_CHECK(st_ctrl_shard_rx_end(&rx, &end, &err) == ST_ERR_PROTOCOL);
    end.total = 150;
    ST_CHECK(st_ctrl_shard_rx_end(&rx, &end, &err) == ST_OK);
    end.status = ST_ERR_PROTOCOL;                               /* the coordinator refused */
    ST_CHECK(st_ctrl_shard_rx_end(&rx, &end, &err) == ST_ERR_PROTOCOL);
}

ST_TEST(shard_header_stream_may_end_early)
{
    const st_ctrl_range_t whole = {0, FILE_SIZE};
    st_ctrl_shard_rx_t rx;
    st_ctrl_shard_end_t end = {ST_OK, 4096, ""};
    st_error_t err;

    st_ctrl_shard_rx_init(&rx, &whole, 1, FILE_SIZE);
    rx.header = 1;
    ST_CHECK(chunk(&rx, 0, 4096) == ST_OK);
    ST_CHECK(st_ctrl_shard_rx_end(&rx, &end, &err) == ST_OK);
    end.total = 4097;
    ST_CHECK(st_ctrl_shard_rx_end(&rx, &end, &err) == ST_ERR_PROTOCOL);
}

int main(void) { return st_test_main(); }
