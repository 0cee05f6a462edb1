/*
 * Endpoints: the listener, client connections, the HELLO handshake and the
 * life cycle HANDSHAKE -> READY -> (FAILED) -> CLOSING -> FREE.
 *
 * Two ways to connect. Address mode (what the cluster uses): the connector
 * creates its UCP endpoint from the acceptor's UCX worker address, handed
 * over by the authenticated control plane, and opens with a hello carrying
 * the data-plane access key, its connection id and its own worker address;
 * the acceptor checks the key, creates its own endpoint back from that
 * address (so its sends have an error handler; UCX may pair the two into one
 * connection or not) and answers with the connector's id. Frames from a UCP
 * endpoint we did not create arrive on UCX's own endpoint (rx_uep), which we
 * only compare, never use: UCX may destroy it when the peer fails. No socket
 * of ours listens. Sockaddr mode: ucp_listener / CLIENT_SERVER endpoints; the
 * listener is UCX's connection manager, which a hostile peer can crash
 * (UCX 1.13.1 asserts in uct_tcp_sockcm_ep_recv on 512 bytes of garbage),
 * so it is for benchmarks and tests only.
 *
 * Every UCP endpoint uses UCP_ERR_HANDLING_MODE_PEER, so a peer that dies
 * (kill -9, link down) fails its endpoint through ep_err_cb instead of
 * leaving sends hanging. Client-server endpoints keep their connection-
 * manager socket (TCP or rdma_cm), which reports a dead peer at once.
 */
#include "st_transport_impl.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "st_log.h"
#include "st_util.h"

/* ---- addresses ---------------------------------------------------------- */

/* Splits "host:port" / "[v6]:port" / ":port". Outside input: checked. */
static st_status_t split_addr(const char *addr, char *host, size_t hlen, uint16_t *port,
                              st_error_t *err)
{
    const char *colon, *h = addr, *hend;
    char *end;
    unsigned long p;

    if (!addr || !*addr)
        return st_error_set(err, ST_ERR_INVALID, "empty address");
    if (addr[0] == '[') {
        hend = strchr(addr, ']');
        if (!hend || hend[1] != ':')
            return st_error_set(err, ST_ERR_INVALID, "address '%s': expected [v6]:port", addr);
        h = addr + 1;
        colon = hend + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return st_error_set(err, ST_ERR_INVALID, "address '%s': expected host:port", addr);
        hend = colon;
    }
    if ((size_t)(hend - h) >= hlen)
        return st_error_set(err, ST_ERR_INVALID, "address '%s': host too long", addr);
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    p = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p > 65535)
        return st_error_set(err, ST_ERR_INVALID, "address '%s': bad port", addr);
    *port = (uint16_t)p;
    return ST_OK;
}

static st_status_t resolve(const char *addr, int passive, st_error_t *err,
                           struct sockaddr_storage *out, socklen_t *outlen)
{
    struct addrinfo hints, *res = NULL;
    char host[256], port_s[8];
    uint16_t port = 0;
    st_status_t st;
    int rc;

    if ((st = split_addr(addr, host, sizeof(host), &port, err)) != ST_OK)
        return st;
    snprintf(port_s, sizeof(port_s), "%u", port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family   = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags    = (passive ? AI_PASSIVE : 0) | AI_NUMERICSERV;
    if (host[0] == '\0' || !strcmp(host, "*")) {
        if (!passive)
            return st_error_set(err, ST_ERR_INVALID, "address '%s': no host to connect to", addr);
        hints.ai_family = AF_INET;
        rc = getaddrinfo(NULL, port_s, &hints, &res);
    } else {
        rc = getaddrinfo(host, port_s, &hints, &res);
    }
    if (rc != 0 || !res)
        return st_error_set(err, ST_ERR_NOT_FOUND, "address '%s': %s", addr, gai_strerror(rc));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return ST_OK;
}

static void format_sockaddr(const struct sockaddr_storage *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";

    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
}

/* First non-loopback IPv4 address of an interface that is up. */
static void primary_ipv4(char *buf, size_t len)
{
    struct ifaddrs *ifa = NULL;

    snprintf(buf, len, "127.0.0.1");
    if (getifaddrs(&ifa) != 0)
        return;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        if ((i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
            continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, (socklen_t)len);
        break;
    }
    freeifaddrs(ifa);
}

st_status_t st_transport_netdev_for(const char *addr, char *ifname, size_t len)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    struct ifaddrs *ifa = NULL;
    st_status_t st = ST_ERR_NOT_FOUND;
    char host[256];
    uint16_t port;

    if (split_addr(addr, host, sizeof(host), &port, NULL) != ST_OK || !host[0] ||
        !strcmp(host, "*") || resolve(addr, 0, NULL, &sa, &salen) != ST_OK ||
        sa.ss_family != AF_INET ||
        ((struct sockaddr_in *)&sa)->sin_addr.s_addr == htonl(INADDR_ANY))
        return ST_ERR_NOT_FOUND;
    if (getifaddrs(&ifa) != 0)
        return ST_ERR_IO;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET ||
            ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr !=
            ((struct sockaddr_in *)&sa)->sin_addr.s_addr)
            continue;
        if (strlen(i->ifa_name) < len) {
            memcpy(ifname, i->ifa_name, strlen(i->ifa_name) + 1);
            st = ST_OK;
        }
        break;
    }
    freeifaddrs(ifa);
    return st;
}

st_status_t st_transport_address(const st_transport_t *t, char *buf, size_t len)
{
    ucp_listener_attr_t la;
    char tmp[96];

    if (!t->listener)
        return ST_ERR_NOT_FOUND;
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    if (ucp_listener_query(t->listener, &la) != UCS_OK)
        return ST_ERR_BACKEND;
    if (la.sockaddr.ss_family == AF_INET &&
        ((struct sockaddr_in *)&la.sockaddr)->sin_addr.s_addr == htonl(INADDR_ANY)) {
        char host[INET_ADDRSTRLEN];
        primary_ipv4(host, sizeof(host));
        snprintf(tmp, sizeof(tmp), "%s:%u", host,
                 ntohs(((struct sockaddr_in *)&la.sockaddr)->sin_port));
    } else {
        format_sockaddr(&la.sockaddr, tmp, sizeof(tmp));
    }
    if (strlen(tmp) >= len)
        return ST_ERR_RANGE;
    memcpy(buf, tmp, strlen(tmp) + 1);
    return ST_OK;
}

/* ---- endpoint slots ----------------------------------------------------- */

static st_transport_ep_t *ep_alloc(st_transport_t *t)
{
    for (uint32_t i = 0; i < t->cfg.max_eps; i++) {
        st_transport_ep_t *ep = &t->eps[i];
        if (ep->state == EP_FREE) {
            uint32_t gen = ep->gen + 1;
            memset(ep, 0, sizeof(*ep));
            ep->t = t;
            ep->gen = gen;
            ep->state = EP_HANDSHAKE;
            ep->error = ST_INPROGRESS;
            snprintf(ep->peer, sizeof(ep->peer), "?");
            t->n_eps_used++;
            return ep;
        }
    }
    return NULL;
}

static void ep_release_slot(st_transport_ep_t *ep)
{
    st_transport_t *t = ep->t;

    free(ep->peer_addr);
    ep->peer_addr = NULL;
    ep->rx_uep = NULL;
    if (t->last_ep == ep)
        t->last_ep = NULL;
    ep->state = EP_FREE;
    ep->uep = NULL;
    t->n_eps_used--;
}

st_transport_ep_t *st_tp_ep_lookup(st_transport_t *t, ucp_ep_h uep)
{
    if (ST_LIKELY(t->last_ep && t->last_ep->uep == uep))
        return t->last_ep;
    if (!uep)
        return NULL;
    for (uint32_t i = 0; i < t->cfg.max_eps; i++)
        if (t->eps[i].state != EP_FREE && t->eps[i].uep == uep) {
            t->last_ep = &t->eps[i];
            return t->last_ep;
        }
    /* Address mode: UCX's own endpoint for frames of a peer whose endpoint
     * UCX did not pair with ours. Only live connections: a failed one's
     * rx_uep may have been destroyed and its address reused by UCX. */
    for (uint32_t i = 0; i < t->cfg.max_eps; i++)
        if (t->eps[i].rx_uep == uep &&
            (t->eps[i].state == EP_HANDSHAKE || t->eps[i].state == EP_READY ||
             (t->eps[i].state == EP_CLOSING && t->eps[i].uep)))
            return &t->eps[i];
    return NULL;
}

static uint64_t ep_conn_id(const st_transport_ep_t *ep)
{
    return ((uint64_t)ep->gen << 32) | (uint64_t)(ep - ep->t->eps + 1);
}

static int key_ok(const st_transport_t *t, const st_wire_hello_t *h)
{
    uint8_t diff = 0;

    for (uint32_t i = 0; i < ST_WIRE_KEY_SIZE; i++)
        diff |= (uint8_t)(h->key[i] ^ (i < t->cfg.access_key_len ? t->cfg.access_key[i] : 0));
    return diff == 0;
}

static st_status_t map_ucs(ucs_status_t s)
{
    switch (s) {
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
        return ST_ERR_PEER;
    case UCS_ERR_CANCELED:
        return ST_ERR_CANCELED;
    case UCS_ERR_TIMED_OUT:
        return ST_ERR_TIMEOUT;
    default:
        return ST_ERR_BACKEND;
    }
}

/* Marks the endpoint failed, reports it once and schedules the UCP close
 * (closing from inside a UCX callback is not allowed). */
void st_tp_ep_fail(st_transport_ep_t *ep, st_status_t status, const char *why)
{
    st_transport_t *t = ep->t;
    st_transport_event_t ev;

    if (ep->state == EP_CLOSING && ep->bye_wait) {
        /* Gone while we waited for its BYE ack: nothing left to wait for. */
        ep->bye_wait = 0;
        ep->error = status;
        ep->want_close = 1;
        t->pending_work = 1;
        return;
    }
    if (ep->state == EP_FAILED || ep->state == EP_CLOSING || ep->state == EP_FREE)
        return;
    if (ep->peer_bye && status == ST_ERR_PEER) {
        /* The disconnect that follows an orderly BYE is no failure. */
        status = ST_ERR_CLOSED;
        st_info(ST_TRANSPORT_MOD, "%s: endpoint %s closed by the peer", t->name, ep->peer);
    } else {
        st_warn(ST_TRANSPORT_MOD, "%s: endpoint %s failed: %s (%s)", t->name, ep->peer, why,
                st_status_str(status));
        t->stats.eps_failed++;
    }
    ep->state = EP_FAILED;
    ep->error = status;
    ep->want_close = 1;
    t->pending_work = 1;
    if (!ep->user_owned) {
        /* Accepted but never reported: nobody holds it, close it ourselves. */
        ep->state = EP_CLOSING;
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.type    = ST_TRANSPORT_EV_EP_ERROR;
    ev.status  = status;
    ev.ep      = ep;
    ev.ep_user = ep->user;
    st_tp_push_event(t, &ev);
}

static void ep_err_cb(void *arg, ucp_ep_h uep, ucs_status_t status)
{
    st_transport_ep_t *ep = arg;

    ST_UNUSED(uep);
    st_tp_ep_fail(ep, map_ucs(status), ucs_status_string(status));
}

void st_tp_ep_on_hello(st_transport_ep_t *ep, const st_wire_hello_t *h)
{
    st_transport_t *t = ep->t;
    st_transport_event_t ev;

    if (ep->state != EP_HANDSHAKE || ep->hello_due) {
        st_tp_ep_fail(ep, ST_ERR_PROTOCOL, "second hello");
        t->stats.frames_rejected++;
        return;
    }
    /* A connector takes the answer to its hello, or the peer's own opening
     * hello: both sides connected to each other at once and UCX paired the
     * two endpoints into one connection (it matches endpoints created by
     * address), which is then one connection for both. */
    if (ep->addr_mode && (h->reserved != ST_WIRE_HELLO_F_ADDR || !key_ok(t, h) ||
                          (h->echo_id != ep_conn_id(ep) && !(h->echo_id == 0 && !ep->accepted)))) {
        st_tp_ep_fail(ep, ST_ERR_AUTH, "the peer's hello does not answer ours with our key");
        t->stats.frames_rejected++;
        return;
    }
    ep->peer_conn = h->conn_id;
    ep->peer_max = ST_MIN(h->max_payload, t->cfg.max_msg_size);
    ep->peer_credits = ep->tx_credits = h->credits;
    ep->state = EP_READY;
    ep->error = ST_OK;
    ep->user_owned = 1;     /* accepted ones are handed out by this event */
    memset(&ev, 0, sizeof(ev));
    ev.type    = ST_TRANSPORT_EV_EP_READY;
    ev.ep      = ep;
    ev.ep_user = ep->user;
    st_tp_push_event(t, &ev);
}

/* Sends a frame of our own: HELLO (with `hello`), CREDIT or BYE (no
 * payload). ST_ERR_BUSY: no free request, retry at the next progress. Never
 * called inside a UCX callback. */
static st_status_t send_internal(st_transport_ep_t *ep, uint8_t type, uint32_t seq,
                                 const st_wire_hello_t *hello)
{
    st_transport_t *t = ep->t;
    ucp_request_param_t p;
    st_transport_req_t *r;
    st_wire_hdr_t hdr;
    void *sr;

    r = st_tp_req_get(t);
    if (!r)
        return ST_ERR_BUSY;
    memset(&hdr, 0, sizeof(hdr));
    hdr.type = type;
    hdr.seq = seq;
    hdr.payload_len = hello ? st_wire_hello_encode(hello, r->inline_payload) : 0;
    st_wire_encode(&hdr, r->hdr);
    r->ep = ep;
    r->detached = 1;
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                     UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send      = st_tp_send_cb;
    p.user_data    = r;
    p.flags        = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
    sr = ucp_am_send_nbx(ep->uep, ST_TRANSPORT_AM_ID, r->hdr, ST_WIRE_HDR_SIZE,
                         hello ? r->inline_payload : NULL, hdr.payload_len, &p);
    if (sr == NULL || UCS_PTR_IS_ERR(sr))
        st_tp_req_put(t, r);   /* else it completes in st_tp_send_cb, which frees r */
    return UCS_PTR_IS_ERR(sr) ? map_ucs(UCS_PTR_STATUS(sr)) : ST_OK;
}

st_status_t st_tp_send_hello(st_transport_ep_t *ep)
{
    st_transport_t *t = ep->t;
    st_wire_hello_t hello;

    memset(&hello, 0, sizeof(hello));
    hello.max_payload = t->cfg.max_msg_size;
    hello.credits     = t->cfg.ep_credits;
    if (ep->addr_mode) {
        hello.reserved = ST_WIRE_HELLO_F_ADDR;
        memcpy(hello.key, t->cfg.access_key, t->cfg.access_key_len);
        hello.conn_id = ep_conn_id(ep);
        hello.echo_id = ep->accepted ? ep->peer_conn : 0;
        if (!ep->accepted) {
            hello.addr_len = (uint32_t)t->self_addr_len;
            hello.addr     = (const uint8_t *)t->self_addr;
        }
    }
    return send_internal(ep, ST_WIRE_HELLO, 0, &hello);
}

uint32_t st_tp_credit_batch(const st_transport_t *t)
{
    /* Return credits in batches of a quarter: few CREDIT frames, and a
     * sender never waits as long as the receiver keeps releasing. */
    return t->cfg.ep_credits >= 4 ? t->cfg.ep_credits / 4 : 1;
}

/* Sends a CREDIT frame for the messages released since the last one. */
void st_tp_return_credits(st_transport_ep_t *ep)
{
    st_status_t st;

    if (ep->state != EP_READY || !ep->uep || ep->rx_done == 0)
        return;
    st = send_internal(ep, ST_WIRE_CREDIT, ep->rx_done, NULL);
    if (st == ST_ERR_BUSY) {
        ep->t->pending_work = 1;    /* retry at the next progress */
    } else if (st == ST_OK) {
        ep->rx_inflight -= ep->rx_done;
        ep->rx_done = 0;
    }
}

/* A BYE frame arrived (the handler checked seq is 0 or 1). */
void st_tp_ep_on_bye(st_transport_ep_t *ep, uint32_t seq)
{
    if (seq == 0) {
        ep->peer_bye = 1;
        ep->bye_ack_due = 1;
    } else if (ep->bye_wait) {
        ep->bye_wait = 0;
        ep->want_close = 1;
    }
    ep->t->pending_work = 1;
}

/* Starts closing a healthy endpoint in order: BYE now, the UCP close once the
 * peer acknowledged it (so every frame sent before has reached its handler)
 * or after linger_ns. Anything else closes at once. */
static void ep_begin_close(st_transport_ep_t *ep, uint64_t linger_ns)
{
    if (!ep->uep)
        return;
    if (ep->state == EP_READY && !ep->peer_bye && send_internal(ep, ST_WIRE_BYE, 0, NULL) == ST_OK) {
        ep->bye_wait = 1;
        ep->bye_deadline = st_now_ns() + linger_ns;
    } else {
        ep->want_close = 1;
    }
}

static void ep_params_common(ucp_ep_params_t *p, st_transport_ep_t *ep)
{
    p->field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p->err_mode        = ep->t->cfg.no_peer_errors ? UCP_ERR_HANDLING_MODE_NONE
                                                   : UCP_ERR_HANDLING_MODE_PEER;
    p->err_handler.cb  = ep_err_cb;
    p->err_handler.arg = ep;
}

static void conn_handler(ucp_conn_request_h creq, void *arg)
{
    st_transport_t *t = arg;
    ucp_conn_request_attr_t ca;
    ucp_ep_params_t p;
    st_transport_ep_t *ep;
    ucs_status_t s;
    char peer[64] = "?";

    ca.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
    if (ucp_conn_request_query(creq, &ca) == UCS_OK)
        format_sockaddr(&ca.client_address, peer, sizeof(peer));
    ep = ep_alloc(t);
    if (!ep) {
        st_warn(ST_TRANSPORT_MOD, "%s: rejecting %s: all %u endpoints in use", t->name, peer,
                t->cfg.max_eps);
        ucp_listener_reject(t->listener, creq);
        return;
    }
    snprintf(ep->peer, sizeof(ep->peer), "%s", peer);
    ep->accepted = 1;
    memset(&p, 0, sizeof(p));
    p.field_mask   = UCP_EP_PARAM_FIELD_CONN_REQUEST;
    p.conn_request = creq;
    ep_params_common(&p, ep);
    s = ucp_ep_create(t->worker, &p, &ep->uep);
    if (s != UCS_OK) {
        st_warn(ST_TRANSPORT_MOD, "%s: accepting %s: ucp_ep_create: %s", t->name, peer,
                ucs_status_string(s));
        ep_release_slot(ep);
        return;
    }
    st_debug(ST_TRANSPORT_MOD, "%s: accepted %s", t->name, peer);
    if (st_tp_send_hello(ep) != ST_OK)
        st_tp_ep_fail(ep, ST_ERR_BUSY, "cannot send hello");
}

static st_status_t self_address(st_transport_t *t)
{
    ucs_status_t s;

    if (t->self_addr)
        return ST_OK;
    s = ucp_worker_get_address(t->worker, &t->self_addr, &t->self_addr_len);
    if (s != UCS_OK) {
        t->self_addr = NULL;
        return ST_ERR_BACKEND;
    }
    if (t->self_addr_len > ST_WIRE_ADDR_MAX) {
        st_error(ST_TRANSPORT_MOD, "%s: UCX worker address of %zu bytes, over the %u a hello "
                 "carries", t->name, t->self_addr_len, ST_WIRE_ADDR_MAX);
        ucp_worker_release_address(t->worker, t->self_addr);
        t->self_addr = NULL;
        return ST_ERR_RANGE;
    }
    return ST_OK;
}

st_status_t st_transport_worker_address(st_transport_t *t, char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *a;
    st_status_t st;

    if ((st = self_address(t)) != ST_OK)
        return st;
    if (len < 4 + 2 * t->self_addr_len + 1)
        return ST_ERR_RANGE;
    a = (const uint8_t *)t->self_addr;
    memcpy(buf, "ucx:", 4);
    for (size_t i = 0; i < t->self_addr_len; i++) {
        buf[4 + 2 * i]     = hex[a[i] >> 4];
        buf[4 + 2 * i + 1] = hex[a[i] & 15];
    }
    buf[4 + 2 * t->self_addr_len] = '\0';
    t->accepting = 1;
    return ST_OK;
}

/* An address-mode hello on a UCP endpoint we do not know (inside the AM
 * handler): a peer opening a connection to our worker address, or the answer
 * to one we opened arriving on UCX's endpoint. Anything else is dropped:
 * the peer may not be one of ours, and that endpoint is not ours to close.
 * Returns 1 when taken. */
int st_tp_on_unknown_hello(st_transport_t *t, ucp_ep_h reply_ep, const st_wire_hello_t *h)
{
    st_transport_ep_t *ep;

    if (h->reserved != ST_WIRE_HELLO_F_ADDR || !key_ok(t, h)) {
        t->stats.frames_rejected++;
        st_debug(ST_TRANSPORT_MOD, "%s: hello without our key from an unknown endpoint dropped",
                 t->name);
        return 0;
    }
    if (h->echo_id) {
        uint32_t idx = (uint32_t)h->echo_id - 1;
        if (idx >= t->cfg.max_eps)
            return 0;
        ep = &t->eps[idx];
        if (ep->state != EP_HANDSHAKE || !ep->addr_mode || ep->accepted || ep->rx_uep ||
            ep_conn_id(ep) != h->echo_id)
            return 0;
        ep->rx_uep = reply_ep;
        st_tp_ep_on_hello(ep, h);
        return 1;
    }
    if (!t->accepting)
        return 0;
    ep = ep_alloc(t);
    if (!ep) {
        st_warn(ST_TRANSPORT_MOD, "%s: refusing a peer: all %u endpoints in use", t->name,
                t->cfg.max_eps);
        return 0;
    }
    ep->peer_addr = malloc(h->addr_len);
    if (!ep->peer_addr) {
        ep_release_slot(ep);
        return 0;
    }
    memcpy(ep->peer_addr, h->addr, h->addr_len);
    ep->peer_addr_len = h->addr_len;
    ep->addr_mode = 1;
    ep->accepted = 1;
    ep->rx_uep = reply_ep;
    ep->peer_conn = h->conn_id;
    ep->peer_max = ST_MIN(h->max_payload, t->cfg.max_msg_size);
    ep->peer_credits = ep->tx_credits = h->credits;
    ep->hello_due = 1;
    snprintf(ep->peer, sizeof(ep->peer), "ucx-peer-%llx", (unsigned long long)h->conn_id);
    t->pending_work = 1;
    return 1;
}

static st_status_t ep_create_by_address(st_transport_ep_t *ep, const void *addr)
{
    ucp_ep_params_t p;
    ucs_status_t s;

    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    p.address    = addr;
    ep_params_common(&p, ep);
    s = ucp_ep_create(ep->t->worker, &p, &ep->uep);
    if (s != UCS_OK) {
        ep->uep = NULL;
        st_warn(ST_TRANSPORT_MOD, "%s: endpoint to %s: ucp_ep_create: %s", ep->t->name,
                ep->peer, ucs_status_string(s));
        return ST_ERR_PEER;
    }
    return ST_OK;
}

/* Accepted by address (outside UCX callbacks): our endpoint back, the answer,
 * and then the endpoint is the user's. ST_ERR_BUSY: retry later. */
static st_status_t ep_finish_accept(st_transport_ep_t *ep)
{
    st_transport_t *t = ep->t;
    st_transport_event_t ev;
    st_status_t st;

    if (!ep->uep) {
        st = ep_create_by_address(ep, ep->peer_addr);
        free(ep->peer_addr);
        ep->peer_addr = NULL;
        if (st != ST_OK) {
            ep->hello_due = 0;
            ep->state = EP_CLOSING;   /* nobody holds it */
            return st;
        }
    }
    st = st_tp_send_hello(ep);
    if (st == ST_ERR_BUSY)
        return st;
    ep->hello_due = 0;
    if (st != ST_OK) {
        ep->error = st;
        ep->want_close = 1;
        ep->state = EP_CLOSING;
        return st;
    }
    ep->state = EP_READY;
    ep->error = ST_OK;
    ep->user_owned = 1;
    st_debug(ST_TRANSPORT_MOD, "%s: accepted %s by worker address", t->name, ep->peer);
    memset(&ev, 0, sizeof(ev));
    ev.type    = ST_TRANSPORT_EV_EP_READY;
    ev.ep      = ep;
    ev.ep_user = ep->user;
    st_tp_push_event(t, &ev);
    return ST_OK;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static st_status_t connect_by_address(st_transport_t *t, const char *addr, void *user,
                                      st_error_t *err, st_transport_ep_t **out)
{
    const char *hex = addr + 4;
    size_t n = strlen(hex);
    uint8_t *bin;
    st_transport_ep_t *ep;
    st_status_t st;

    if (n == 0 || n % 2 || n / 2 > ST_WIRE_ADDR_MAX)
        return st_error_set(err, ST_ERR_INVALID, "%s: worker address of %zu hex digits", t->name, n);
    bin = malloc(n / 2);
    if (!bin)
        return st_error_set(err, ST_ERR_NOMEM, "%s: out of memory", t->name);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(bin);
            return st_error_set(err, ST_ERR_INVALID, "%s: worker address: not hex", t->name);
        }
        bin[i] = (uint8_t)(hi << 4 | lo);
    }
    if ((st = self_address(t)) != ST_OK) {
        free(bin);
        return st_error_set(err, st, "%s: cannot get our own worker address", t->name);
    }
    ep = ep_alloc(t);
    if (!ep) {
        free(bin);
        return st_error_set(err, ST_ERR_BUSY, "%s: all %u endpoints in use", t->name,
                            t->cfg.max_eps);
    }
    ep->user = user;
    ep->user_owned = 1;
    ep->addr_mode = 1;
    snprintf(ep->peer, sizeof(ep->peer), "ucx-worker-%zuB", n / 2);
    st = ep_create_by_address(ep, bin);
    free(bin);
    if (st != ST_OK) {
        ep_release_slot(ep);
        return st_error_set(err, st, "%s: connect to a worker address failed", t->name);
    }
    if ((st = st_tp_send_hello(ep)) != ST_OK) {
        st_error_set(err, st, "%s: sending hello failed", t->name);
        st_transport_ep_close(t, ep);
        return st;
    }
    *out = ep;
    return ST_OK;
}

st_status_t st_transport_listen(st_transport_t *t, const char *addr, st_error_t *err)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    ucp_listener_params_t lp;
    ucs_status_t s;
    st_status_t st;

    if (t->listener)
        return st_error_set(err, ST_ERR_INVALID, "%s: already listening", t->name);
    if ((st = resolve(addr, 1, err, &sa, &salen)) != ST_OK)
        return st;
    memset(&lp, 0, sizeof(lp));
    lp.field_mask         = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr      = (const struct sockaddr *)&sa;
    lp.sockaddr.addrlen   = salen;
    lp.conn_handler.cb    = conn_handler;
    lp.conn_handler.arg   = t;
    s = ucp_listener_create(t->worker, &lp, &t->listener);
    if (s != UCS_OK) {
        t->listener = NULL;
        return st_error_set(err, s == UCS_ERR_BUSY ? ST_ERR_BUSY : ST_ERR_BACKEND,
                            "%s: listen on %s: %s", t->name, addr, ucs_status_string(s));
    }
    return ST_OK;
}

st_status_t st_transport_connect(st_transport_t *t, const char *addr, void *user,
                                 st_error_t *err, st_transport_ep_t **out)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    ucp_ep_params_t p;
    st_transport_ep_t *ep;
    ucs_status_t s;
    st_status_t st;

    if (addr && !strncmp(addr, "ucx:", 4))
        return connect_by_address(t, addr, user, err, out);
    if ((st = resolve(addr, 0, err, &sa, &salen)) != ST_OK)
        return st;
    ep = ep_alloc(t);
    if (!ep)
        return st_error_set(err, ST_ERR_BUSY, "%s: all %u endpoints in use", t->name,
                            t->cfg.max_eps);
    ep->user = user;
    ep->user_owned = 1;
    format_sockaddr(&sa, ep->peer, sizeof(ep->peer));
    memset(&p, 0, sizeof(p));
    p.field_mask       = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
    p.flags            = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    p.sockaddr.addr    = (const struct sockaddr *)&sa;
    p.sockaddr.addrlen = salen;
    ep_params_common(&p, ep);
    s = ucp_ep_create(t->worker, &p, &ep->uep);
    if (s != UCS_OK) {
        ep_release_slot(ep);
        return st_error_set(err, ST_ERR_PEER, "%s: connect %s: %s", t->name, addr,
                            ucs_status_string(s));
    }
    if ((st = st_tp_send_hello(ep)) != ST_OK) {
        st_error_set(err, st, "%s: connect %s: sending hello failed", t->name, addr);
        st_transport_ep_close(t, ep);
        return st;
    }
    *out = ep;
    return ST_OK;
}

static int ep_settled(void *arg)
{
    const st_transport_ep_t *ep = arg;
    return ep->state != EP_HANDSHAKE;
}

st_status_t st_transport_ep_wait_ready(st_transport_t *t, st_transport_ep_t *ep,
                                       uint64_t timeout_ns)
{
    st_status_t st = st_tp_wait(t, ep_settled, ep, timeout_ns);

    if (st != ST_OK)
        return st;
    return ep->state == EP_READY ? ST_OK : ep->error;
}

/* Starts the UCP close: flush when healthy, force when failed. */
static void ep_start_close(st_transport_ep_t *ep)
{
    st_transport_t *t = ep->t;
    ucp_request_param_t p;
    void *r;

    ep->want_close = 0;
    if (!ep->uep)
        return;
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = ep->error < 0 ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    r = ucp_ep_close_nbx(ep->uep, &p);
    if (t->last_ep == ep)
        t->last_ep = NULL;
    ep->uep = NULL;
    if (UCS_PTR_IS_PTR(r))
        ep->close_req = r;
    else if (UCS_PTR_IS_ERR(r))
        st_debug(ST_TRANSPORT_MOD, "%s: close %s: %s", t->name, ep->peer,
                 ucs_status_string(UCS_PTR_STATUS(r)));
    t->pending_work = 1;
}

void st_tp_do_pending(st_transport_t *t)
{
    int more = 0;

    t->pending_work = 0;
    for (uint32_t i = 0; i < t->cfg.max_eps; i++) {
        st_transport_ep_t *ep = &t->eps[i];
        if (ep->state == EP_FREE)
            continue;
        if (ep->hello_due && ep->state == EP_HANDSHAKE && ep_finish_accept(ep) == ST_ERR_BUSY)
            more = 1;
        if (ep->bye_ack_due && ep->uep) {
            if (send_internal(ep, ST_WIRE_BYE, 1, NULL) == ST_ERR_BUSY)
                more = 1;
            else
                ep->bye_ack_due = 0;
        }
        if (ep->bye_wait) {
            if (st_now_ns() < ep->bye_deadline) {
                more = 1;
                continue;
            }
            st_debug(ST_TRANSPORT_MOD, "%s: %s did not acknowledge BYE in time", t->name,
                     ep->peer);
            ep->bye_wait = 0;
            ep->want_close = 1;
        }
        if (ep->want_close)
            ep_start_close(ep);
        if (ep->rx_done >= st_tp_credit_batch(t))
            st_tp_return_credits(ep);
        if (ep->close_req) {
            if (ucp_request_check_status(ep->close_req) == UCS_INPROGRESS) {
                more = 1;
                continue;
            }
            ucp_request_free(ep->close_req);
            ep->close_req = NULL;
        }
        if (ep->state == EP_CLOSING && !ep->uep && !ep->close_req)
            ep_release_slot(ep);
    }
    if (t->def_count)
        st_tp_drain_deferred(t);
    t->pending_work |= more;
}

void st_transport_ep_close(st_transport_t *t, st_transport_ep_t *ep)
{
    if (!ep || ep->state == EP_FREE || ep->state == EP_CLOSING)
        return;
    st_tp_drop_events(t, ep);
    ep_begin_close(ep, ST_TRANSPORT_SEC);
    ep->state = EP_CLOSING;
    ep->user_owned = 0;
    st_tp_do_pending(t);
}

void st_tp_eps_close_all(st_transport_t *t)
{
    for (uint32_t i = 0; i < t->cfg.max_eps; i++) {
        st_transport_ep_t *ep = &t->eps[i];
        if (ep->state == EP_FREE || ep->state == EP_CLOSING)
            continue;
        if (ep->uep) {
            /* BYE first (bounded by half of destroy's budget), then force:
             * a flush could wait on a peer that no longer progresses. */
            ep_begin_close(ep, ST_TRANSPORT_SEC / 2);
            ep->error = ST_ERR_CLOSED;
        }
        ep->state = EP_CLOSING;
    }
    st_tp_do_pending(t);
}

/* Last step of destroy: close requests UCX did not finish in time are handed
 * back so that ucp_worker_destroy can reclaim them. */
void st_tp_eps_abandon(st_transport_t *t)
{
    for (uint32_t i = 0; i < t->cfg.max_eps; i++) {
        st_transport_ep_t *ep = &t->eps[i];
        if (ep->close_req) {
            ucp_request_free(ep->close_req);
            ep->close_req = NULL;
        }
        if (ep->state != EP_FREE)
            ep_release_slot(ep);
    }
}

void *st_transport_ep_user(const st_transport_ep_t *ep) { return ep->user; }
void  st_transport_ep_set_user(st_transport_ep_t *ep, void *user) { ep->user = user; }
const char *st_transport_ep_peer(const st_transport_ep_t *ep) { return ep->peer; }
uint64_t st_transport_ep_max_msg(const st_transport_ep_t *ep) { return ep->peer_max; }
uint32_t st_transport_ep_count(const st_transport_t *t) { return t->n_eps_used; }
ucp_ep_h st_transport_ep_ucp(const st_transport_ep_t *ep) { return ep->uep; }

st_status_t st_transport_ep_status(const st_transport_ep_t *ep)
{
    switch (ep->state) {
    case EP_READY:     return ST_OK;
    case EP_HANDSHAKE: return ST_INPROGRESS;
    case EP_FAILED:    return ep->error;
    default:           return ST_ERR_CLOSED;
    }
}
