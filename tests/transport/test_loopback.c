/*
 * Two transports in one process (no globals, so they can coexist), one
 * listening and one connecting, over shared memory and over TCP loopback.
 * Everything runs on this thread: pump() progresses both sides in turn.
 */
#include "st_test.h"
#include "st_transport.h"
#include "st_transport_impl.h"
#include "st_util.h"

#include <stdlib.h>
#include <string.h>

/* Shared memory for the data; UCX 1.13 needs a network transport beside it
 * for the client-server wireup (posix alone: "Destination is unreachable"),
 * and still picks posix for the data lanes between processes of one host. */
#define SHM_TLS "posix,tcp,self"

typedef struct pair {
    st_transport_t *srv, *cli;
    st_transport_ep_t *cep;      /* client side */
    st_transport_ep_t *sep;      /* server side (from EP_READY) */
} pair_t;

static uint64_t fnv(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ull; }
    return h;
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

/* Takes the next event of `t`, progressing both sides; 0 on timeout. */
static int next_event(pair_t *p, st_transport_t *t, st_transport_event_t *ev, double secs)
{
    uint64_t end = st_now_ns() + (uint64_t)(secs * 1e9);
    while (st_now_ns() < end) {
        st_transport_progress(t == p->srv ? p->cli : p->srv);
        if (st_transport_wait_event(t, 0, ev) == ST_OK)
            return 1;
    }
    return 0;
}

static st_transport_config_t cfg_for(const char *tls)
{
    st_transport_config_t c;
    st_transport_config_init(&c);
    c.tls = tls;
    c.progress = ST_TRANSPORT_PROGRESS_BUSY;
    c.max_msg_size = 4u << 20;
    c.small_slots = 8;          /* small on purpose: exercises deferral */
    c.large_slots = 2;
    c.ep_credits = 16;
    return c;
}

/* by_addr: connect from the server's worker address (no listener), both
 * sides with the same access key; else through a sockaddr listener. */
static int pair_open_mode(pair_t *p, const char *tls, const st_transport_config_t *scfg,
                          int by_addr)
{
    st_transport_config_t c = cfg_for(tls);
    st_transport_event_t ev;
    st_error_t err;
    char addr[4200];

    memset(p, 0, sizeof(*p));
    if (by_addr) {
        memset(c.access_key, 0xa7, sizeof(c.access_key));
        c.access_key_len = sizeof(c.access_key);
    }
    if (st_transport_create(scfg ? scfg : &c, &err, &p->srv) != ST_OK ||
        st_transport_create(&c, &err, &p->cli) != ST_OK) {
        fprintf(stderr, "  create: %s\n", err.msg);
        return 0;
    }
    if (by_addr ? st_transport_worker_address(p->srv, addr, sizeof(addr)) != ST_OK
                : (st_transport_listen(p->srv, "127.0.0.1:0", &err) != ST_OK ||
                   st_transport_address(p->srv, addr, sizeof(addr)) != ST_OK)) {
        fprintf(stderr, "  listen: %s\n", err.msg);
        return 0;
    }
    if (st_transport_connect(p->cli, addr, (void *)p, &err, &p->cep) != ST_OK) {
        fprintf(stderr, "  connect %s: %s\n", addr, err.msg);
        return 0;
    }
    uint64_t end = st_now_ns() + 10 * ST_TRANSPORT_SEC;
    while (!p->sep || st_transport_ep_status(p->cep) == ST_INPROGRESS) {
        if (st_now_ns() > end)
            return 0;
        st_transport_progress(p->cli);
        if (!p->sep && st_transport_wait_event(p->srv, 0, &ev) == ST_OK &&
            ev.type == ST_TRANSPORT_EV_EP_READY)
            p->sep = ev.ep;
        st_transport_progress(p->srv);
    }
    /* drop the client's own EP_READY event */
    return st_transport_wait_event(p->cli, 0, &ev) == ST_OK &&
           ev.type == ST_TRANSPORT_EV_EP_READY && st_transport_ep_status(p->cep) == ST_OK;
}

static int pair_open(pair_t *p, const char *tls, const st_transport_config_t *scfg)
{
    return pair_open_mode(p, tls, scfg, 0);
}

static void pair_close(pair_t *p)
{
    st_transport_destroy(p->cli);
    st_transport_destroy(p->srv);
}

static void integrity_mode(int *st_failed_, const char *tls, int by_addr)
{
    static const size_t sizes[] = {0, 1, 8, 100, 2304, 4095, 4096, 65536, 65537,
                                   300000, 1u << 20, 4u << 20};
    pair_t p;
    st_transport_mem_t *mem;
    st_transport_event_t ev;

    ST_REQUIRE(pair_open_mode(&p, tls, NULL, by_addr));
    ST_CHECK(st_transport_ep_max_msg(p.cep) == 4u << 20);
    ST_REQUIRE(st_transport_mem_alloc(p.cli, 4u << 20, ST_TRANSPORT_MEM_HOST, &mem) == ST_OK);
    uint8_t *buf = st_transport_mem_ptr(mem);
    for (size_t i = 0; i < ST_ARRAY_SIZE(sizes); i++) {
        st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, 3, 1, (uint32_t)i, 1000 + i};
        st_transport_req_t *req = NULL;
        fill(buf, sizes[i], i);
        uint64_t want = fnv(buf, sizes[i]);
        st_status_t st = st_transport_send(p.cep, &tag, mem, 0, sizes[i], &req);
        ST_REQUIRE(st == ST_OK || st == ST_INPROGRESS);
        ST_REQUIRE(next_event(&p, p.srv, &ev, 10.0));
        ST_REQUIRE(ev.type == ST_TRANSPORT_EV_RECV);
        ST_CHECK(ev.ep == p.sep);
        ST_CHECK(ev.len == sizes[i]);
        ST_CHECK(ev.tag.request_id == 1000 + i && ev.tag.seq == i && ev.tag.stage == 1);
        ST_CHECK(ev.tag.flags == 3 && ev.tag.type == ST_TRANSPORT_ACTIVATION);
        ST_CHECK_MSG(fnv(ev.data, ev.len) == want, "size %zu corrupted", sizes[i]);
        st_transport_msg_release(p.srv, ev.msg);
        if (st == ST_INPROGRESS) {
            while (st_transport_req_test(req) == ST_INPROGRESS) {
                st_transport_progress(p.cli);
                st_transport_progress(p.srv);
            }
            ST_CHECK(st_transport_req_test(req) == ST_OK);
            st_transport_req_release(p.cli, req);
        }
    }
    /* over the negotiated maximum: refused locally */
    st_transport_tag_t tag = {ST_TRANSPORT_CONTROL, 0, 0, 0, 0};
    ST_CHECK(st_transport_send(p.cep, &tag, mem, 1, 4u << 20, NULL) == ST_ERR_RANGE);
    tag.type = 9;
    ST_CHECK(st_transport_send(p.cep, &tag, mem, 0, 8, NULL) == ST_ERR_INVALID);
    st_transport_mem_free(p.cli, mem);
    pair_close(&p);
}

ST_TEST(integrity_shm) { integrity_mode(st_failed_, SHM_TLS, 0); }
ST_TEST(integrity_tcp) { integrity_mode(st_failed_, "tcp", 0); }
ST_TEST(integrity_by_address_shm) { integrity_mode(st_failed_, "posix,self", 1); }
ST_TEST(integrity_by_address_tcp) { integrity_mode(st_failed_, "tcp", 1); }

/* A peer that connects to our worker address without our access key is
 * never accepted: no EP_READY on either side, nothing delivered. */
ST_TEST(wrong_access_key_is_not_accepted)
{
    st_transport_config_t c = cfg_for("posix,self");
    st_transport_t *srv, *cli;
    st_transport_ep_t *ep;
    st_transport_event_t ev;
    st_error_t err;
    char addr[4200];

    memset(c.access_key, 1, sizeof(c.access_key));
    c.access_key_len = sizeof(c.access_key);
    ST_REQUIRE(st_transport_create(&c, &err, &srv) == ST_OK);
    c.access_key[0] = 2;
    ST_REQUIRE(st_transport_create(&c, &err, &cli) == ST_OK);
    ST_REQUIRE(st_transport_worker_address(srv, addr, sizeof(addr)) == ST_OK);
    ST_CHECK(st_transport_worker_address(srv, addr, 8) == ST_ERR_RANGE);
    ST_REQUIRE(st_transport_connect(cli, addr, NULL, &err, &ep) == ST_OK);
    uint64_t end = st_now_ns() + ST_TRANSPORT_SEC / 2;
    while (st_now_ns() < end) {
        st_transport_progress(cli);
        ST_CHECK(st_transport_wait_event(srv, 0, &ev) == ST_ERR_TIMEOUT);
    }
    ST_CHECK(st_transport_ep_status(ep) == ST_INPROGRESS);
    ST_CHECK(st_transport_ep_count(srv) == 0);
    st_transport_ep_close(cli, ep);
    st_transport_destroy(cli);
    st_transport_destroy(srv);
}

/* 200 messages of mixed sizes in flight at once with 8+2 receive buffers:
 * arrivals beyond that wait in UCX and are received as buffers come back,
 * request ids are shuffled, every payload is checked against its id. */
ST_TEST(many_in_flight_out_of_order)
{
    enum { N = 200 };
    pair_t p;
    st_transport_mem_t *mem;
    st_transport_event_t ev;
    st_transport_stats_t stats;
    uint64_t ids[N];
    uint8_t seen[N] = {0};
    size_t slot = 1u << 20;

    ST_REQUIRE(pair_open(&p, SHM_TLS, NULL));
    ST_REQUIRE(st_transport_mem_alloc(p.cli, (size_t)N * slot / 8, ST_TRANSPORT_MEM_HOST, &mem) == ST_OK);
    for (int i = 0; i < N; i++)
        ids[i] = (uint64_t)i;
    uint64_t x = 12345;
    for (int i = N - 1; i > 0; i--) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int j = (int)(x % (uint64_t)(i + 1));
        uint64_t tmp = ids[i]; ids[i] = ids[j]; ids[j] = tmp;
    }
    /* message for id k: size varies with k, at its own offset */
    size_t stride = (size_t)N * slot / 8 / N;
    for (int i = 0; i < N; i++) {
        size_t len = (ids[i] % 5 == 0) ? stride : 8 + ids[i] * 37 % 2000;
        fill((uint8_t *)st_transport_mem_ptr(mem) + ids[i] * stride, len, ids[i]);
    }
    int sent = 0, got = 0;
    uint64_t end = st_now_ns() + 20 * ST_TRANSPORT_SEC;
    while (got < N && st_now_ns() < end) {
        int sent_now = 0;
        if (sent < N) {
            uint64_t id = ids[sent];
            size_t len = (id % 5 == 0) ? stride : 8 + id * 37 % 2000;
            st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, 0, 2, 0, id};
            st_status_t st = st_transport_send(p.cep, &tag, mem, id * stride, len, NULL);
            if (st == ST_OK || st == ST_INPROGRESS)
                sent_now = 1, sent++;
            else
                ST_REQUIRE(st == ST_ERR_BUSY);   /* out of credits: let the server drain */
        }
        st_transport_progress(p.cli);
        /* hold buffers a while so the pool runs dry */
        if (sent_now && sent < N && (sent % 16) != 0)
            continue;
        while (st_transport_wait_event(p.srv, 0, &ev) == ST_OK) {
            ST_REQUIRE(ev.type == ST_TRANSPORT_EV_RECV);
            uint64_t id = ev.tag.request_id;
            ST_REQUIRE(id < N);
            ST_CHECK(!seen[id]);
            seen[id] = 1;
            size_t len = (id % 5 == 0) ? stride : 8 + id * 37 % 2000;
            ST_CHECK(ev.len == len);
            uint8_t *want = malloc(len);
            fill(want, len, id);
            ST_CHECK_MSG(memcmp(want, ev.data, len) == 0, "id %llu corrupted", (unsigned long long)id);
            free(want);
            st_transport_msg_release(p.srv, ev.msg);
            got++;
        }
    }
    ST_CHECK_MSG(got == N, "received %d of %d", got, N);
    st_transport_get_stats(p.srv, &stats);
    ST_CHECK(stats.msgs_recv == N);
    fprintf(stderr, "  deferred arrivals: %llu\n", (unsigned long long)stats.recv_deferred);
    /* let the sends complete before freeing their buffer */
    for (int i = 0; i < 1000; i++) { st_transport_progress(p.cli); st_transport_progress(p.srv); }
    st_transport_mem_free(p.cli, mem);
    pair_close(&p);
}

/* Fake "device" copies for the staging path: host memory stands in for GPU
 * memory, the copies are counted so the test sees the staging happen. */
typedef struct { int to_host, from_host; } fake_gpu_t;
static st_status_t fake_to_host(void *arg, void *dst, const void *src, size_t n)
{
    ((fake_gpu_t *)arg)->to_host++;
    memcpy(dst, src, n);
    return ST_OK;
}
static st_status_t fake_from_host(void *arg, void *dst, const void *src, size_t n)
{
    ((fake_gpu_t *)arg)->from_host++;
    memcpy(dst, src, n);
    return ST_OK;
}

ST_TEST(cuda_without_ucx_support_is_staged)
{
    fake_gpu_t gpu = {0, 0};
    st_transport_copy_ops_t ops = {1, fake_to_host, fake_from_host, &gpu};
    st_transport_config_t c = cfg_for(SHM_TLS);
    st_transport_info_t info;
    st_transport_mem_t *mem;
    st_transport_event_t ev;
    st_transport_t *t;
    st_error_t err;
    pair_t p;

    ST_REQUIRE(st_transport_probe(&c, &err, &info) == ST_OK);
    if (info.mem_cuda)
        ST_SKIP("this UCX handles CUDA memory itself; staging is not used");
    /* without copy ops CUDA memory is refused */
    ST_REQUIRE(st_transport_create(&c, &err, &t) == ST_OK);
    uint8_t dev[5000];
    ST_CHECK(st_transport_mem_register(t, dev, sizeof(dev), ST_TRANSPORT_MEM_CUDA, &mem) == ST_ERR_UNSUPPORTED);
    st_transport_destroy(t);

    ST_REQUIRE(pair_open(&p, SHM_TLS, NULL));
    st_transport_destroy(p.cli);
    c.copy_ops = &ops;
    ST_REQUIRE(st_transport_create(&c, &err, &p.cli) == ST_OK);
    char addr[96];
    ST_REQUIRE(st_transport_address(p.srv, addr, sizeof(addr)) == ST_OK);
    ST_REQUIRE(st_transport_connect(p.cli, addr, NULL, &err, &p.cep) == ST_OK);
    for (int i = 0; i < 100000 && st_transport_ep_status(p.cep) != ST_OK; i++) {
        st_transport_progress(p.srv);
        st_transport_progress(p.cli);
    }
    ST_REQUIRE(st_transport_ep_status(p.cep) == ST_OK);
    fill(dev, sizeof(dev), 77);
    ST_REQUIRE(st_transport_mem_register(p.cli, dev, sizeof(dev), ST_TRANSPORT_MEM_CUDA, &mem) == ST_OK);
    ST_CHECK(st_transport_mem_staged(mem));
    ST_CHECK(st_transport_mem_ptr(mem) == (void *)dev);
    st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, 0, 0, 0, 5};
    ST_REQUIRE(st_transport_send(p.cep, &tag, mem, 1000, 4000, NULL) >= 0);
    ST_CHECK(gpu.to_host == 1);
    do {
        ST_REQUIRE(next_event(&p, p.srv, &ev, 10.0));
    } while (ev.type != ST_TRANSPORT_EV_RECV);
    ST_CHECK(ev.len == 4000 && memcmp(ev.data, dev + 1000, 4000) == 0);
    st_transport_msg_release(p.srv, ev.msg);
    for (int i = 0; i < 1000; i++) { st_transport_progress(p.cli); st_transport_progress(p.srv); }
    st_transport_mem_free(p.cli, mem);
    pair_close(&p);
}

/* Sends a frame with an arbitrary header through the raw UCP endpoint. */
static void raw_send(pair_t *p, const void *hdr, size_t hlen, const void *data, size_t len)
{
    ucp_request_param_t prm;
    memset(&prm, 0, sizeof(prm));
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    prm.flags = UCP_AM_SEND_FLAG_REPLY;
    void *r = ucp_am_send_nbx(st_transport_ep_ucp(p->cep), ST_TRANSPORT_AM_ID, hdr, hlen,
                              data, len, &prm);
    if (UCS_PTR_IS_PTR(r)) {
        while (ucp_request_check_status(r) == UCS_INPROGRESS) {
            st_transport_progress(p->cli);
            st_transport_progress(p->srv);
        }
        ucp_request_free(r);
    }
}

ST_TEST(malformed_frames_close_only_that_endpoint)
{
    static const char *const kinds[] = {"magic", "type", "maximum", "truncated", "short",
                                        "credits"};
    uint8_t payload[256] = {0};
    st_transport_stats_t stats;

    for (size_t k = 0; k < ST_ARRAY_SIZE(kinds); k++) {
        pair_t p;
        st_transport_event_t ev;
        st_wire_hdr_t h = {ST_WIRE_VERSION, ST_WIRE_ACTIVATION, 0, 0, 0, 1, 100};
        uint8_t hb[ST_WIRE_HDR_SIZE];
        size_t hlen = sizeof(hb), plen = 100;

        ST_REQUIRE(pair_open(&p, SHM_TLS, NULL));
        if (k == 1) h.type = 77;
        if (k == 2) h.payload_len = (4u << 20) + 1;
        if (k == 3) plen = 50;
        st_wire_encode(&h, hb);
        if (k == 0) hb[1] ^= 0xff;
        if (k == 4) hlen = 16;
        /* "credits": valid frames, one more than the 16 credits granted */
        for (int i = 0; i < (k == 5 ? 17 : 1); i++)
            raw_send(&p, hb, hlen, payload, plen);
        st_transport_msg_t *held[17];
        int n_held = 0;
        do {     /* hold what arrives, so no credit goes back meanwhile */
            ST_REQUIRE(next_event(&p, p.srv, &ev, 10.0));
            if (ev.type == ST_TRANSPORT_EV_RECV && n_held < 17)
                held[n_held++] = ev.msg;
        } while (k == 5 && ev.type == ST_TRANSPORT_EV_RECV);
        for (int i = 0; i < n_held; i++)
            st_transport_msg_release(p.srv, held[i]);
        ST_CHECK_MSG(ev.type == ST_TRANSPORT_EV_EP_ERROR && ev.status == ST_ERR_PROTOCOL,
                     "%s: event %d status %d", kinds[k], ev.type, ev.status);
        ST_CHECK(ev.ep == p.sep);
        st_transport_get_stats(p.srv, &stats);
        /* 8 buffers: of the 16 allowed frames 8 were delivered, 8 parked */
        ST_CHECK_MSG(stats.frames_rejected == 1 &&
                     stats.msgs_recv + stats.recv_deferred == (k == 5 ? 16u : 0u),
                     "%s: rejected %llu received %llu", kinds[k],
                     (unsigned long long)stats.frames_rejected, (unsigned long long)stats.msgs_recv);
        ST_CHECK(st_transport_ep_status(p.sep) == ST_ERR_PROTOCOL);
        st_transport_ep_close(p.srv, p.sep);
        /* the client learns that its peer closed the connection */
        ST_CHECK_MSG(next_event(&p, p.cli, &ev, 10.0) && ev.type == ST_TRANSPORT_EV_EP_ERROR,
                     "%s: client saw no error", kinds[k]);
        /* the server still accepts and serves a new, well-behaved client */
        st_transport_ep_t *ep2;
        st_error_t err;
        char addr[96];
        ST_REQUIRE(st_transport_address(p.srv, addr, sizeof(addr)) == ST_OK);
        ST_REQUIRE(st_transport_connect(p.cli, addr, NULL, &err, &ep2) == ST_OK);
        ST_REQUIRE(next_event(&p, p.srv, &ev, 10.0) && ev.type == ST_TRANSPORT_EV_EP_READY);
        while (st_transport_ep_status(ep2) == ST_INPROGRESS) {
            st_transport_progress(p.srv);
            st_transport_progress(p.cli);
        }
        st_transport_mem_t *mem;
        ST_REQUIRE(st_transport_mem_alloc(p.cli, 64, ST_TRANSPORT_MEM_HOST, &mem) == ST_OK);
        st_transport_tag_t tag = {ST_TRANSPORT_CONTROL, 0, 0, 0, 42};
        ST_CHECK(st_transport_send(ep2, &tag, mem, 0, 64, NULL) >= 0);
        ST_REQUIRE(next_event(&p, p.srv, &ev, 10.0));
        ST_CHECK(ev.type == ST_TRANSPORT_EV_RECV && ev.tag.request_id == 42);
        if (ev.type == ST_TRANSPORT_EV_RECV)
            st_transport_msg_release(p.srv, ev.msg);
        for (int i = 0; i < 1000; i++) { st_transport_progress(p.cli); st_transport_progress(p.srv); }
        st_transport_mem_free(p.cli, mem);
        pair_close(&p);
    }
}

/* The client goes away (destroy): the server's endpoint reports it, a
 * second client keeps working, and closing frees the slot. */
ST_TEST(peer_loss_is_reported_and_freed)
{
    pair_t p;
    st_transport_event_t ev;
    st_transport_t *other;
    st_transport_ep_t *oep, *osep = NULL;
    st_transport_config_t c = cfg_for("tcp");
    st_error_t err;
    char addr[96];

    ST_REQUIRE(pair_open(&p, "tcp", NULL));
    ST_REQUIRE(st_transport_create(&c, &err, &other) == ST_OK);
    ST_REQUIRE(st_transport_address(p.srv, addr, sizeof(addr)) == ST_OK);
    ST_REQUIRE(st_transport_connect(other, addr, NULL, &err, &oep) == ST_OK);
    uint64_t end = st_now_ns() + 10 * ST_TRANSPORT_SEC;
    while ((!osep || st_transport_ep_status(oep) != ST_OK) && st_now_ns() < end) {
        st_transport_progress(other);
        if (st_transport_wait_event(p.srv, 0, &ev) == ST_OK && ev.type == ST_TRANSPORT_EV_EP_READY)
            osep = ev.ep;
    }
    ST_REQUIRE(osep && st_transport_ep_status(oep) == ST_OK);
    ST_CHECK(st_transport_ep_count(p.srv) == 2);

    st_transport_destroy(p.cli);
    p.cli = NULL;
    uint64_t t0 = st_now_ns();
    int got = 0;
    while (!got && st_now_ns() - t0 < 10 * ST_TRANSPORT_SEC) {
        st_transport_progress(other);
        if (st_transport_wait_event(p.srv, 0, &ev) == ST_OK)
            got = ev.type == ST_TRANSPORT_EV_EP_ERROR && ev.ep == p.sep;
    }
    ST_CHECK_MSG(got, "no error on the server endpoint");
    fprintf(stderr, "  peer loss seen after %.3f s\n", (double)(st_now_ns() - t0) * 1e-9);
    /* destroy says BYE before it closes: an orderly close, not a failure
     * (a killed peer reads ST_ERR_PEER; tests/py/test_transport_loopback.py) */
    ST_CHECK(st_transport_ep_status(p.sep) == ST_ERR_CLOSED);
    st_transport_ep_close(p.srv, p.sep);
    for (int i = 0; i < 1000 && st_transport_ep_count(p.srv) != 1; i++)
        st_transport_progress(p.srv);
    ST_CHECK(st_transport_ep_count(p.srv) == 1);

    /* the other endpoint still works */
    st_transport_mem_t *mem;
    ST_REQUIRE(st_transport_mem_alloc(other, 128, ST_TRANSPORT_MEM_HOST, &mem) == ST_OK);
    st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, 0, 0, 0, 9};
    ST_CHECK(st_transport_send(oep, &tag, mem, 0, 128, NULL) >= 0);
    got = 0;
    end = st_now_ns() + 10 * ST_TRANSPORT_SEC;
    while (!got && st_now_ns() < end) {
        st_transport_progress(other);
        if (st_transport_wait_event(p.srv, 0, &ev) == ST_OK && ev.type == ST_TRANSPORT_EV_RECV) {
            got = ev.ep == osep && ev.tag.request_id == 9;
            st_transport_msg_release(p.srv, ev.msg);
        }
    }
    ST_CHECK(got);
    for (int i = 0; i < 1000; i++) { st_transport_progress(other); st_transport_progress(p.srv); }
    st_transport_mem_free(other, mem);
    st_transport_destroy(other);
    st_transport_destroy(p.srv);
}

ST_TEST(config_and_address_validation)
{
    st_transport_config_t c;
    st_transport_t *t;
    st_transport_ep_t *ep;
    st_error_t err;

    st_transport_config_init(&c);
    c.size = 4;
    ST_CHECK(st_transport_create(&c, &err, &t) == ST_ERR_INVALID);
    st_transport_config_init(&c);
    c.small_slot_size = c.max_msg_size + 1;
    ST_CHECK(st_transport_create(&c, &err, &t) == ST_ERR_INVALID);
    st_transport_config_init(&c);
    c.tls = SHM_TLS;
    c.progress = ST_TRANSPORT_PROGRESS_EVENT;
    ST_REQUIRE(st_transport_create(&c, &err, &t) == ST_OK);
    ST_CHECK(st_transport_event_fd(t) >= 0);
    char buf[96];
    ST_CHECK(st_transport_address(t, buf, sizeof(buf)) == ST_ERR_NOT_FOUND);
    ST_CHECK(st_transport_connect(t, "nohostport", NULL, &err, &ep) == ST_ERR_INVALID);
    ST_CHECK(st_transport_connect(t, "127.0.0.1:99999", NULL, &err, &ep) == ST_ERR_INVALID);
    ST_CHECK(st_transport_connect(t, "127.0.0.1:", NULL, &err, &ep) == ST_ERR_INVALID);
    ST_CHECK(st_transport_connect(t, ":5000", NULL, &err, &ep) == ST_ERR_INVALID);
    ST_CHECK(st_transport_listen(t, "[::1:5", &err) == ST_ERR_INVALID);
    ST_REQUIRE(st_transport_listen(t, ":0", &err) == ST_OK);
    ST_CHECK(st_transport_address(t, buf, sizeof(buf)) == ST_OK);
    ST_CHECK(strchr(buf, ':') != NULL && strncmp(buf, "0.0.0.0", 7) != 0);
    ST_CHECK(st_transport_address(t, buf, 4) == ST_ERR_RANGE);
    /* nothing to do: an event wait sleeps and times out */
    st_transport_event_t ev;
    uint64_t t0 = st_now_ns();
    ST_CHECK(st_transport_wait_event(t, 50000000, &ev) == ST_ERR_TIMEOUT);
    ST_CHECK(st_now_ns() - t0 >= 40000000);
    st_transport_stats_t s;
    st_transport_get_stats(t, &s);
    ST_CHECK(s.sleeps >= 1);
    st_transport_destroy(t);
}

ST_TEST(probe)
{
    st_transport_info_t info;
    st_error_t err;
    ST_REQUIRE(st_transport_probe(NULL, &err, &info) == ST_OK);
    ST_CHECK(info.mem_host);
    ST_CHECK(info.n_res > 0);
    int self = 0;
    for (uint32_t i = 0; i < info.n_res; i++)
        self |= !strcmp(info.res[i].tl, "self") && info.res[i].enabled;
    ST_CHECK(self);
    st_transport_config_t c;
    st_transport_config_init(&c);
    c.tls = "tcp";
    ST_REQUIRE(st_transport_probe(&c, &err, &info) == ST_OK);
    for (uint32_t i = 0; i < info.n_res; i++)
        if (info.res[i].enabled)
            ST_CHECK_MSG(!strcmp(info.res[i].tl, "tcp"), "%s enabled under UCX_TLS=tcp", info.res[i].tl);
}

int main(void) { return st_test_main(); }
