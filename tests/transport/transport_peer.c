/*
 * transport_peer - a test peer for tests/py/test_transport_*.py.
 *
 *   transport_peer serve   ADDR [opts]          echo server; prints "LISTEN host:port"
 *   transport_peer client  ADDR MODE [opts]     MODE: integrity | inflight | ooo |
 *                                               stream | idle | last | quit (stops the server)
 *   transport_peer malformed ADDR KIND [opts]   KIND: magic | type | length |
 *                                               truncated | short
 *   opts: --tls STR  --progress busy|hybrid|event  --max BYTES
 *
 * Lines on stdout (flushed) are the protocol with the test: LISTEN, READY,
 * EP_READY, EP_ERROR <peer> <status>, EP_COUNT <n>, ROUND <n>, OK <what>,
 * FAIL <why>, CLOSED <status>, STATS ... Exit status 0 on success.
 *
 * The server echoes every ACTIVATION from the buffer it arrived in, except
 * those flagged HOLD: it keeps up to 64 of them; a message flagged FLUSH
 * says (in its stage field) how many HOLD messages precede it, and once all
 * of them arrived (rendezvous receives may finish after the FLUSH) the server
 * echoes the FLUSH and then the held ones in reverse order.
 * `malformed` sends hand-made frames through the raw UCP endpoint to check
 * that the server rejects them, logs why and keeps serving.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_transport.h"
#include "st_transport_impl.h"
#include "st_util.h"

enum { F_HOLD = 1, F_FLUSH = 2, F_QUIT = 4 };
#define SEC ST_TRANSPORT_SEC

typedef struct {
    const char *tls;
    st_transport_progress_mode_t progress;
    uint64_t max;
} popts_t;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

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

static st_transport_t *create(const popts_t *o, const char *name)
{
    st_transport_config_t c;
    st_transport_t *t;
    st_error_t err;

    st_transport_config_init(&c);
    c.tls = o->tls;
    c.progress = o->progress;
    c.max_msg_size = o->max;
    c.small_slot_size = ST_MIN(o->max, (uint64_t)64 << 10);
    c.large_slots = 8;
    c.ep_credits = 64;          /* the ooo mode has 48 messages held at once */
    c.small_slots = 2 * c.ep_credits;
    c.name = name;
    if (st_transport_create(&c, &err, &t) != ST_OK) {
        say("FAIL create: %s", err.msg);
        return NULL;
    }
    return t;
}

/* ---- server ------------------------------------------------------------- */

static int serve(const char *addr, const popts_t *o)
{
    st_transport_t *t = create(o, "peer-server");
    st_transport_event_t held[64], ev, flush;
    int n_held = 0, flush_pending = 0;
    char buf[128];
    st_error_t err;

    if (!t)
        return 1;
    if (st_transport_listen(t, addr, &err) != ST_OK ||
        st_transport_address(t, buf, sizeof(buf)) != ST_OK) {
        say("FAIL listen: %s", err.msg);
        st_transport_destroy(t);
        return 1;
    }
    say("LISTEN %s", buf);
    for (;;) {
        if (st_transport_wait_event(t, SEC, &ev) != ST_OK)
            continue;
        if (ev.type == ST_TRANSPORT_EV_EP_READY) {
            say("EP_READY %s", st_transport_ep_peer(ev.ep));
            say("EP_COUNT %u", st_transport_ep_count(t));
            continue;
        }
        if (ev.type == ST_TRANSPORT_EV_EP_ERROR) {
            say("EP_ERROR %s %s", st_transport_ep_peer(ev.ep), st_status_str(ev.status));
            for (int i = 0; i < n_held; i++)
                if (held[i].ep == ev.ep) {
                    st_transport_msg_release(t, held[i].msg);
                    held[i--] = held[--n_held];
                }
            st_transport_ep_close(t, ev.ep);
            for (int i = 0; i < 100; i++)     /* let the close finish */
                st_transport_progress(t);
            say("EP_COUNT %u", st_transport_ep_count(t));
            continue;
        }
        if (ev.tag.type == ST_TRANSPORT_CONTROL && (ev.tag.flags & F_QUIT)) {
            st_transport_stats_t s;
            st_transport_msg_release(t, ev.msg);
            st_transport_get_stats(t, &s);
            say("STATS recv %llu rejected %llu failed %llu", (unsigned long long)s.msgs_recv,
                (unsigned long long)s.frames_rejected, (unsigned long long)s.eps_failed);
            break;
        }
        if ((ev.tag.flags & F_HOLD) && n_held < 64) {
            held[n_held++] = ev;
            if (!flush_pending || n_held < (int)flush.tag.stage)
                continue;
            ev = flush;
        } else if (ev.tag.flags & F_FLUSH) {
            flush = ev;
            flush_pending = 1;
            if (n_held < (int)ev.tag.stage)
                continue;
        }
        int n_out = 0;
        st_transport_event_t out[65];
        out[n_out++] = ev;
        if (ev.tag.flags & F_FLUSH) {
            flush_pending = 0;
            while (n_held)
                out[n_out++] = held[--n_held];
        }
        for (int i = 0; i < n_out; i++) {
            size_t off;
            st_transport_mem_t *m = st_transport_msg_mem(out[i].msg, &off);
            st_transport_req_t *req = NULL;
            st_status_t st = st_transport_send(out[i].ep, &out[i].tag, m, off, out[i].len, &req);
            if (st == ST_INPROGRESS) {
                st = st_transport_req_wait(t, req, 10 * SEC);
                st_transport_req_release(t, req);
            }
            st_transport_msg_release(t, out[i].msg);
        }
    }
    st_transport_destroy(t);
    return 0;
}

/* ---- client ------------------------------------------------------------- */

typedef struct {
    st_transport_t *t;
    st_transport_ep_t *ep;
    st_transport_mem_t *mem;
} cli_t;

static int cli_open(cli_t *c, const char *addr, const popts_t *o)
{
    st_error_t err;
    st_status_t st;

    memset(c, 0, sizeof(*c));
    if (!(c->t = create(o, "peer-client")))
        return 0;
    if (st_transport_connect(c->t, addr, NULL, &err, &c->ep) != ST_OK) {
        say("FAIL connect: %s", err.msg);
        return 0;
    }
    if ((st = st_transport_ep_wait_ready(c->t, c->ep, 10 * SEC)) != ST_OK) {
        say("FAIL connect %s: %s", addr, st_status_str(st));
        return 0;
    }
    if (st_transport_mem_alloc(c->t, o->max, ST_TRANSPORT_MEM_HOST, &c->mem) != ST_OK) {
        say("FAIL mem_alloc");
        return 0;
    }
    say("READY");
    return 1;
}

static st_status_t cli_send(cli_t *c, const st_transport_tag_t *tag, size_t off, size_t len)
{
    st_transport_req_t *req = NULL;
    st_status_t st;

    for (;;) {
        st = st_transport_send(c->ep, tag, c->mem, off, len, &req);
        if (st != ST_ERR_BUSY)
            break;
        st_transport_progress(c->t);
    }
    if (st == ST_INPROGRESS) {
        st = st_transport_req_wait(c->t, req, 30 * SEC);
        st_transport_req_release(c->t, req);
    }
    return st;
}

static st_status_t cli_recv(cli_t *c, st_transport_event_t *ev, uint64_t timeout)
{
    for (;;) {
        st_status_t st = st_transport_wait_event(c->t, timeout, ev);
        if (st != ST_OK)
            return st;
        if (ev->type == ST_TRANSPORT_EV_RECV)
            return ST_OK;
        if (ev->type == ST_TRANSPORT_EV_EP_ERROR) {
            say("EP_ERROR %s %s", st_transport_ep_peer(ev->ep), st_status_str(ev->status));
            return ev->status;
        }
    }
}

/* Sends messages of each size with a seeded payload; the echo must match. */
static int mode_integrity(cli_t *c, const popts_t *o)
{
    size_t sizes[64];
    int n = 0;
    st_transport_event_t ev;

    for (size_t s = 1; s <= o->max && n < 60; s = s * 3 + 1)
        sizes[n++] = s;
    sizes[n++] = 0;
    sizes[n++] = o->max;
    for (int i = 0; i < n; i++) {
        st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, 0, 1, (uint32_t)i, (uint64_t)i};
        fill(st_transport_mem_ptr(c->mem), sizes[i], (uint64_t)i);
        uint64_t want = fnv(st_transport_mem_ptr(c->mem), sizes[i]);
        if (cli_send(c, &tag, 0, sizes[i]) != ST_OK || cli_recv(c, &ev, 30 * SEC) != ST_OK) {
            say("FAIL size %zu: no echo", sizes[i]);
            return 1;
        }
        if (ev.len != sizes[i] || fnv(ev.data, ev.len) != want || ev.tag.request_id != (uint64_t)i) {
            say("FAIL size %zu: echo differs (len %llu)", sizes[i], (unsigned long long)ev.len);
            return 1;
        }
        st_transport_msg_release(c->t, ev.msg);
    }
    say("OK integrity %d sizes up to %llu", n, (unsigned long long)o->max);
    return 0;
}

/* `count` messages sent back to back (fire-and-forget), then all echoes
 * collected and checked by id; with hold=1 the server answers in reverse. */
static int mode_many(cli_t *c, const popts_t *o, int hold)
{
    enum { COUNT = 48 };
    size_t stride = o->max / COUNT;
    uint64_t sums[COUNT];
    uint8_t seen[COUNT] = {0};
    st_transport_event_t ev;
    uint8_t *base = st_transport_mem_ptr(c->mem);

    for (int i = 0; i < COUNT; i++) {
        size_t len = (i % 7 == 0) ? stride : (size_t)(1 + i * 97) % ST_MIN(stride, (size_t)9000);
        fill(base + (size_t)i * stride, len, 1000 + (uint64_t)i);
        sums[i] = fnv(base + (size_t)i * stride, len) ^ len;
    }
    for (int k = 0; k < COUNT; k++) {
        int i = hold ? (k * 17) % COUNT : k;          /* 17 is coprime to 48 */
        size_t len = (i % 7 == 0) ? stride : (size_t)(1 + i * 97) % ST_MIN(stride, (size_t)9000);
        st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, 0, 2, (uint32_t)k, (uint64_t)i};
        if (hold) {
            tag.flags = k == COUNT - 1 ? F_FLUSH : F_HOLD;
            tag.stage = k == COUNT - 1 ? COUNT - 1 : 0;
        }
        st_status_t st;
        while ((st = st_transport_send(c->ep, &tag, c->mem, (size_t)i * stride, len, NULL)) == ST_ERR_BUSY)
            st_transport_progress(c->t);
        if (st < 0) {
            say("FAIL send %d: %s", i, st_status_str(st));
            return 1;
        }
    }
    int got = 0, in_order = 1;
    uint64_t last = 0;
    for (; got < COUNT; got++) {
        if (cli_recv(c, &ev, 30 * SEC) != ST_OK) {
            say("FAIL only %d of %d echoes", got, COUNT);
            return 1;
        }
        uint64_t id = ev.tag.request_id;
        if (id >= COUNT || seen[id] || (fnv(ev.data, ev.len) ^ ev.len) != sums[id]) {
            say("FAIL bad echo id %llu", (unsigned long long)id);
            return 1;
        }
        if (got && ev.tag.seq < last)
            in_order = 0;
        last = ev.tag.seq;
        seen[id] = 1;
        st_transport_msg_release(c->t, ev.msg);
    }
    say("OK %s %d messages%s", hold ? "ooo" : "inflight", COUNT,
        hold ? (in_order ? " (arrived in send order!)" : " arrived out of order") : "");
    return hold && in_order;
}

/* Ping-pong forever, one ROUND line per 100 round trips. */
static int mode_stream(cli_t *c)
{
    st_transport_event_t ev;
    for (uint64_t i = 0;; i++) {
        st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, 0, 3, (uint32_t)i, i};
        st_status_t st = cli_send(c, &tag, 0, 4096);
        if (st == ST_OK)
            st = cli_recv(c, &ev, 30 * SEC);
        if (st != ST_OK) {
            say("CLOSED %s", st_status_str(st));
            return 3;
        }
        st_transport_msg_release(c->t, ev.msg);
        if (i % 100 == 0)
            say("ROUND %llu", (unsigned long long)i);
    }
}

/* Connected and idle: sleeps in wait_event until the server goes away. */
static int mode_idle(cli_t *c)
{
    st_transport_event_t ev;
    for (;;) {
        st_status_t st = st_transport_wait_event(c->t, 10 * SEC, &ev);
        if (st == ST_OK && ev.type == ST_TRANSPORT_EV_EP_ERROR) {
            say("CLOSED %s", st_status_str(ev.status));
            return 0;
        }
        if (st == ST_OK && ev.type == ST_TRANSPORT_EV_RECV)
            st_transport_msg_release(c->t, ev.msg);
    }
}

/* Sends one message and closes at once, without waiting for the echo: the
 * message must still arrive (the close waits for the peer's BYE ack). */
static int mode_last(cli_t *c)
{
    st_transport_tag_t tag = {ST_TRANSPORT_CONTROL, 0, 0, 0, 42};
    st_status_t st = cli_send(c, &tag, 0, 64);

    if (st != ST_OK) {
        say("FAIL last: %s", st_status_str(st));
        return 1;
    }
    say("OK last");
    return 0;
}

static void cli_close(cli_t *c, int quit)
{
    if (quit && c->ep && st_transport_ep_status(c->ep) == ST_OK) {
        st_transport_tag_t q = {ST_TRANSPORT_CONTROL, F_QUIT, 0, 0, 0};
        cli_send(c, &q, 0, 0);
    }
    if (c->mem)
        st_transport_mem_free(c->t, c->mem);
    st_transport_destroy(c->t);
}

/* ---- malformed frames --------------------------------------------------- */

static int malformed(const char *addr, const char *kind, const popts_t *o)
{
    uint8_t hb[ST_WIRE_HDR_SIZE], payload[256];
    st_wire_hdr_t h = {ST_WIRE_VERSION, ST_WIRE_ACTIVATION, 0, 0, 0, 1, 100};
    size_t hlen = sizeof(hb), plen = 100;
    ucp_request_param_t prm;
    st_transport_event_t ev;
    cli_t c;

    if (!cli_open(&c, addr, o))
        return 1;
    memset(payload, 0xee, sizeof(payload));
    if (!strcmp(kind, "type"))           h.type = 200;
    else if (!strcmp(kind, "length"))    h.payload_len = (uint64_t)1 << 40;
    else if (!strcmp(kind, "truncated")) plen = 60;
    else if (strcmp(kind, "magic") && strcmp(kind, "short")) {
        say("FAIL unknown kind %s", kind);
        return 2;
    }
    st_wire_encode(&h, hb);
    if (!strcmp(kind, "magic"))
        memcpy(hb, "EVIL", 4);
    if (!strcmp(kind, "short"))
        hlen = 20;
    memset(&prm, 0, sizeof(prm));
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    prm.flags = UCP_AM_SEND_FLAG_REPLY;
    void *r = ucp_am_send_nbx(st_transport_ep_ucp(c.ep), ST_TRANSPORT_AM_ID, hb, hlen,
                              payload, plen, &prm);
    if (UCS_PTR_IS_PTR(r)) {
        while (ucp_request_check_status(r) == UCS_INPROGRESS)
            st_transport_progress(c.t);
        ucp_request_free(r);
    }
    say("SENT %s", kind);
    /* the server must close this connection */
    st_status_t st;
    do {
        st = st_transport_wait_event(c.t, 10 * SEC, &ev);
    } while (st == ST_OK && ev.type != ST_TRANSPORT_EV_EP_ERROR);
    say("CLOSED %s", st == ST_OK ? st_status_str(ev.status) : "no (timeout)");
    cli_close(&c, 0);
    return st == ST_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    popts_t o = {NULL, ST_TRANSPORT_PROGRESS_HYBRID, 4u << 20};
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0;

    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tls") && i + 1 < argc) {
            o.tls = argv[++i];
        } else if (!strcmp(argv[i], "--max") && i + 1 < argc) {
            o.max = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--progress") && i + 1 < argc) {
            const char *p = argv[++i];
            o.progress = !strcmp(p, "busy") ? ST_TRANSPORT_PROGRESS_BUSY :
                         !strcmp(p, "event") ? ST_TRANSPORT_PROGRESS_EVENT
                                             : ST_TRANSPORT_PROGRESS_HYBRID;
        } else if (npos < 3) {
            pos[npos++] = argv[i];
        }
    }
    if (npos >= 2 && !strcmp(pos[0], "serve"))
        return serve(pos[1], &o);
    if (npos == 3 && !strcmp(pos[0], "malformed"))
        return malformed(pos[1], pos[2], &o);
    if (npos == 3 && !strcmp(pos[0], "client")) {
        cli_t c;
        int rc;
        if (!cli_open(&c, pos[1], &o))
            return 1;
        if (!strcmp(pos[2], "integrity"))     rc = mode_integrity(&c, &o);
        else if (!strcmp(pos[2], "inflight")) rc = mode_many(&c, &o, 0);
        else if (!strcmp(pos[2], "ooo"))      rc = mode_many(&c, &o, 1);
        else if (!strcmp(pos[2], "stream"))   rc = mode_stream(&c);
        else if (!strcmp(pos[2], "idle"))     rc = mode_idle(&c);
        else if (!strcmp(pos[2], "last"))     rc = mode_last(&c);
        else if (!strcmp(pos[2], "quit"))     rc = 0;
        else { say("FAIL unknown mode %s", pos[2]); rc = 2; }
        cli_close(&c, !strcmp(pos[2], "quit"));
        return rc;
    }
    fprintf(stderr, "usage: transport_peer serve ADDR | client ADDR MODE | malformed ADDR KIND "
                    "[--tls S] [--progress P] [--max B]\n");
    return 2;
}
