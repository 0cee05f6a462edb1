/*
 * ctrl_net.c - TCP sockets and framed connections for the control plane.
 *
 * A connection buffers what it has read, so a peer that sends a frame in
 * pieces (or a slow or hostile one) never blocks the reader: recv returns
 * ST_ERR_TIMEOUT until a whole frame is there. The header is checked as
 * soon as its 16 bytes arrive, so an absurd length is refused before any
 * payload is buffered.
 */
#include "st_ctrl.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "st_util.h"

struct st_ctrl_conn {
    int      fd;
    size_t   have;                      /* bytes buffered in rx */
    uint8_t  rx[ST_CTRL_HDR_SIZE + ST_CTRL_MAX_PAYLOAD];
    uint8_t  tx[ST_CTRL_HDR_SIZE + ST_CTRL_MAX_PAYLOAD];
};

st_status_t st_ctrl_conn_open(int fd, st_ctrl_conn_t **out)
{
    st_ctrl_conn_t *c = malloc(sizeof(*c));
    int one = 1;
    int fl;

    if (!c)
        return ST_ERR_NOMEM;
    c->fd = fd;
    c->have = 0;
    fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    /* Heartbeats and plans are small and latency-sensitive. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *out = c;
    return ST_OK;
}

void st_ctrl_conn_close(st_ctrl_conn_t *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

int st_ctrl_conn_fd(const st_ctrl_conn_t *c) { return c->fd; }

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = st_now_ns();
    if (now >= deadline)
        return 0;
    return (int)((deadline - now + 999999) / 1000000);
}

st_status_t st_ctrl_conn_send(st_ctrl_conn_t *c, const st_ctrl_msg_t *m, int timeout_ms,
                              st_error_t *err)
{
    size_t len, off = 0;
    uint64_t deadline = st_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
    st_status_t st = st_ctrl_encode(m, c->tx, sizeof(c->tx), &len, err);

    if (st != ST_OK)
        return st;
    while (off < len) {
        ssize_t n = send(c->fd, c->tx + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            int left = remaining_ms(deadline);
            if (left == 0)
                return st_error_set(err, ST_ERR_TIMEOUT, "control: sending %s timed out",
                                    st_ctrl_type_name(m->type));
            (void)poll(&pfd, 1, left);
            continue;
        }
        return st_error_set(err, ST_ERR_PEER, "control: sending %s failed: %s",
                            st_ctrl_type_name(m->type), strerror(errno));
    }
    return ST_OK;
}

/* Reads what the socket has. ST_OK when something was read or nothing was
 * there, ST_ERR_CLOSED / ST_ERR_PEER when the connection ended. */
static st_status_t fill(st_ctrl_conn_t *c, size_t want, st_error_t *err)
{
    while (c->have < want) {
        ssize_t n = recv(c->fd, c->rx + c->have, want - c->have, 0);
        if (n > 0) {
            c->have += (size_t)n;
            continue;
        }
        if (n == 0)
            return st_error_set(err, ST_ERR_CLOSED, "control: peer closed the connection");
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return ST_OK;
        return st_error_set(err, ST_ERR_PEER, "control: connection failed: %s", strerror(errno));
    }
    return ST_OK;
}

st_status_t st_ctrl_conn_recv(st_ctrl_conn_t *c, int timeout_ms, st_ctrl_msg_t *m,
                              st_error_t *err)
{
    uint64_t deadline = st_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;

    for (;;) {
        uint32_t type, plen, epoch;
        size_t want = ST_CTRL_HDR_SIZE;
        st_status_t st = fill(c, want, err);
        if (st != ST_OK)
            return st;
        if (c->have >= ST_CTRL_HDR_SIZE) {
            st = st_ctrl_decode_header(c->rx, ST_CTRL_HDR_SIZE, &type, &plen, &epoch, err);
            if (st != ST_OK)
                return st;
            want = ST_CTRL_HDR_SIZE + plen;
            st = fill(c, want, err);
            if (st != ST_OK)
                return st;
            if (c->have >= want) {
                /* fill() never reads past the frame, so nothing follows it
                 * and the frame stays where it is until the next receive:
                 * a SHARD_DATA's `data` points into rx (st_ctrl.h). */
                st = st_ctrl_decode(c->rx, want, m, err);
                memmove(c->rx, c->rx + want, c->have - want);
                c->have -= want;
                return st;
            }
        }
        {
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            int left = remaining_ms(deadline);
            int r;
            if (left == 0)
                return ST_ERR_TIMEOUT;
            r = poll(&pfd, 1, left);
            if (r == 0)
                return ST_ERR_TIMEOUT;
        }
    }
}

/* ---- TCP helpers ------------------------------------------------------ */

st_status_t st_ctrl_parse_addr(const char *addr, char *host, size_t host_len, uint16_t *port,
                               st_error_t *err)
{
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    char *end;
    unsigned long p;
    size_t hl;

    if (!colon)
        return st_error_set(err, ST_ERR_INVALID, "address '%s' is not host:port",
                            addr ? addr : "(null)");
    hl = (size_t)(colon - addr);
    if (hl >= host_len)
        return st_error_set(err, ST_ERR_INVALID, "address '%s': host too long", addr);
    errno = 0;
    p = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p > 65535 || errno)
        return st_error_set(err, ST_ERR_INVALID, "address '%s': bad port", addr);
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {   /* [v6]:port */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    *port = (uint16_t)p;
    return ST_OK;
}

st_status_t st_ctrl_listen(const char *addr, int *fd_out, st_error_t *err)
{
    char host[256], portstr[8];
    uint16_t port;
    struct addrinfo hints, *res = NULL, *ai;
    int fd = -1, one = 1, rc;
    st_status_t st = st_ctrl_parse_addr(addr, host, sizeof(host), &port, err);

    if (st != ST_OK)
        return st;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%u", port);
    rc = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (rc != 0)
        return st_error_set(err, ST_ERR_INVALID, "listen %s: %s", addr, gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "listen %s: %s", addr, strerror(errno));
    *fd_out = fd;
    return ST_OK;
}

st_status_t st_ctrl_connect(const char *addr, int timeout_ms, int *fd_out, st_error_t *err)
{
    char host[256], portstr[8];
    uint16_t port;
    struct addrinfo hints, *res = NULL;
    uint64_t deadline = st_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    st_status_t st = st_ctrl_parse_addr(addr, host, sizeof(host), &port, err);
    int last_errno = 0;

    if (st != ST_OK)
        return st;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(portstr, sizeof(portstr), "%u", port);
    /* Workers may start before the coordinator listens: retry until the
     * deadline rather than failing on the first refusal. */
    for (;;) {
        int rc = getaddrinfo(host, portstr, &hints, &res);
        if (rc == 0) {
            for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
                if (fd < 0)
                    continue;
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                    freeaddrinfo(res);
                    *fd_out = fd;
                    return ST_OK;
                }
                last_errno = errno;
                close(fd);
            }
            freeaddrinfo(res);
            res = NULL;
        }
        if (st_now_ns() >= deadline)
            return st_error_set(err, ST_ERR_PEER, "cannot connect to %s: %s", addr,
                                rc != 0 ? gai_strerror(rc) : strerror(last_errno));
        usleep(100000);
    }
}

st_status_t st_ctrl_local_addr(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN];
    unsigned port;

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return ST_ERR_IO;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%u", host, port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, len, "[%s]:%u", host, port);
    } else {
        return ST_ERR_UNSUPPORTED;
    }
    return ST_OK;
}
