/*
 * agent.c - HAProxy's agent check (`agent-check` on `--agent-port`).
 *
 * HAProxy connects, reads one line and applies it: a weight relative to the
 * server's configured weight ("75%"), and states ("up"/"down" for the
 * operational state, "ready"/"drain" for the administrative one). A replica
 * that says how loaded it is lets the load balancer send new sessions where
 * there is room, instead of round-robin onto a replica whose slots are full.
 *
 * The weight is a pure function of a load sample (st_http_agent_reply, unit
 * tested); the listener only samples and writes. It never reads what the
 * peer sends (our configs use no `agent-send`): a reply line is < 32 bytes
 * and fits any socket buffer, so one non-blocking write either goes out
 * whole or the check is simply missed, and the loop never waits on a peer.
 */
#include "server_priv.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/listener.h>

#include "st_log.h"
#include "st_util.h"

struct st_http_agent {
    st_http_server_t      *s;
    struct evconnlistener *l;
    int                    port;
    /* the previous sample: utilisation is the compute time stages spent
     * since the last check, over the wall time since it */
    uint64_t               prev_ns;
    uint32_t               prev_n;
    double                 prev_compute[ST_HTTP_MAX_STAGES];
};

static double clamp01(double x)
{
    return x < 0.0 ? 0.0 : x > 1.0 ? 1.0 : x;
}

int st_http_agent_weight(const st_http_load_t *l)
{
    double busy = 0.0, load;
    long w;

    if (l->n_slots)
        busy = clamp01((double)(l->running + l->queued) / (double)l->n_slots);
    else if (l->running + l->queued)
        busy = 1.0;
    load = busy > clamp01(l->stage_util) ? busy : clamp01(l->stage_util);
    if (!(load == load))
        load = 1.0;                           /* NaN from a broken sample: assume full */
    w = lround(100.0 * (1.0 - load));
    /* Never 0 while up: a replica at 0 % takes no new session even when every
     * replica is full, and HAProxy would then refuse clients it could queue. */
    return w < 1 ? 1 : w > 100 ? 100 : (int)w;
}

int st_http_agent_reply(const st_http_load_t *l, char *buf, size_t cap)
{
    if (l->draining)
        return snprintf(buf, cap, "drain 0%%\n");
    if (!l->healthy)
        return snprintf(buf, cap, "down\n");
    return snprintf(buf, cap, "up ready %d%%\n", st_http_agent_weight(l));
}

/* One sample of the server's load; advances the utilisation window. */
static void sample(st_http_agent_t *a, st_http_load_t *l)
{
    st_http_server_t *s = a->s;
    st_engine_stats_t es;
    st_http_stage_stats_t *stages = calloc(ST_HTTP_MAX_STAGES, sizeof(*stages));
    uint64_t now = st_now_ns();
    uint32_t n = 0;

    st_engine_stats(s->engine, &es);
    memset(l, 0, sizeof(*l));
    l->running = es.running;
    l->queued = es.queued;
    l->n_slots = es.n_slots;
    l->healthy = es.healthy;
    l->draining = s->draining;
    if (stages)
        n = st_http_stage_stats(s, &es, stages, ST_HTTP_MAX_STAGES);
    if (a->prev_ns && now > a->prev_ns && n == a->prev_n) {
        double wall = (double)(now - a->prev_ns) * 1e-9;
        for (uint32_t i = 0; i < n; i++) {
            double u = (stages[i].compute_s - a->prev_compute[i]) / wall;
            if (u > l->stage_util)
                l->stage_util = u;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!stages[i].up)
            l->healthy = 0;
        a->prev_compute[i] = stages[i].compute_s;
    }
    a->prev_n = n;
    a->prev_ns = now;
    free(stages);
}

static void on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    st_http_agent_t *a = arg;
    st_http_load_t l;
    char line[64], junk[256];
    int n;

    (void)lis;
    (void)sa;
    (void)salen;
    sample(a, &l);
    n = st_http_agent_reply(&l, line, sizeof(line));
    if (n > 0 && send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
        st_debug("http", "agent check: reply not sent: %s", strerror(errno));
    /* Half-close, then take what the peer may have sent so close() does not
     * answer unread bytes with a reset that could discard our line. */
    shutdown(fd, SHUT_WR);
    while (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
        ;
    close(fd);
}

st_status_t st_http_agent_start(st_http_server_t *s, st_http_agent_t **out, st_error_t *err)
{
    const st_http_config_t *c = s->cfg;
    struct evutil_addrinfo hints, *ai = NULL;
    st_http_agent_t *a;
    char port[8];
    int rc;

    *out = NULL;
    a = calloc(1, sizeof(*a));
    if (!a)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    a->s = s;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", c->agent_port);
    rc = evutil_getaddrinfo(c->host, port, &hints, &ai);
    if (rc != 0 || !ai) {
        free(a);
        return st_error_set(err, ST_ERR_INVALID, "--agent-port: cannot resolve %s: %s", c->host,
                            evutil_gai_strerror(rc));
    }
    a->l = evconnlistener_new_bind(s->base, on_accept, a,
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                       LEV_OPT_CLOSE_ON_EXEC,
                                   16, ai->ai_addr, (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (!a->l) {
        int e = errno;
        free(a);
        return st_error_set(err, ST_ERR_IO, "cannot listen on %s:%d for the agent check: %s",
                            c->host, c->agent_port, strerror(e));
    }
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        a->port = c->agent_port;
        if (getsockname(evconnlistener_get_fd(a->l), (struct sockaddr *)&ss, &sl) == 0)
            a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    }
    *out = a;
    return ST_OK;
}

int st_http_agent_port(const st_http_agent_t *a)
{
    return a ? a->port : 0;
}

void st_http_agent_free(st_http_agent_t *a)
{
    if (!a)
        return;
    if (a->l)
        evconnlistener_free(a->l);
    free(a);
}
