/*
 * grpc.c - the gRPC door's server: gRPC core set up on cfg->host:grpc_port
 * (plain or TLS with the HTTP door's certificate), the completion-queue
 * thread and its hand-off to the loop thread (grpc_priv.h), the drain and
 * the teardown. What a call does is in grpc_call.c.
 */
#include "grpc_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc_security.h>

#include "st_log.h"
#include "st_util.h"

/* The last answers of a drain are already generated and only being written:
 * a few seconds is plenty before the rest is cancelled. */
#define GRPC_FLUSH_NS   (5ull * 1000000000ull)
/* After cancel_all_calls core gives every call back promptly; past this a
 * call still waits on something we cannot finish (the loop has stopped):
 * leak the server rather than hang the process's exit. */
#define GRPC_GIVEUP_NS (10ull * 1000000000ull)
#define PEM_MAX (1u << 20)

/* ---- the completion-queue thread ---- */

static void *pump_main(void *arg)
{
    st_http_grpc_t *g = arg;

    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                                   NULL);
        gtag_t *t;
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        t = ev.tag;
        pthread_mutex_lock(&g->lock);
        t->ok = ev.success;
        t->next = NULL;
        if (g->tail)
            g->tail->next = t;
        else
            g->head = t;
        g->tail = t;
        pthread_cond_signal(&g->cond);
        pthread_mutex_unlock(&g->lock);
        /* g->wake lives until this thread has been joined. */
        event_active(g->wake, EV_READ, 0);
    }
    return NULL;
}

/* ---- loop thread ---- */

static gtag_t *take_all(st_http_grpc_t *g)
{
    gtag_t *t;
    pthread_mutex_lock(&g->lock);
    t = g->head;
    g->head = g->tail = NULL;
    pthread_mutex_unlock(&g->lock);
    return t;
}

static void run_tags(st_http_grpc_t *g, gtag_t *t)
{
    while (t) {
        gtag_t *next = t->next;      /* t may be freed (or posted again) below */
        if (t->kind == GT_SHUTDOWN)
            g->shutdown_done = 1;
        else
            st_grpc_on_tag(g, t);
        t = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    st_http_grpc_t *g = arg;
    run_tags(g, take_all(g));
}

static st_status_t read_pem(const char *path, char **out, st_error_t *err)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    size_t n;

    if (!f)
        return st_error_set(err, ST_ERR_IO, "gRPC TLS: cannot open %s: %s", path,
                            strerror(errno));
    p = malloc(PEM_MAX + 1);
    if (!p) {
        fclose(f);
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    }
    n = fread(p, 1, PEM_MAX + 1, f);
    fclose(f);
    if (n > PEM_MAX) {
        free(p);
        return st_error_set(err, ST_ERR_RANGE, "gRPC TLS: %s is larger than %u bytes", path,
                            PEM_MAX);
    }
    p[n] = '\0';
    *out = p;
    return ST_OK;
}

static st_status_t make_creds(const st_http_config_t *cfg, grpc_server_credentials **out,
                              st_error_t *err)
{
    grpc_ssl_pem_key_cert_pair pair;
    char *cert = NULL, *key = NULL;
    st_status_t st;

    if (!cfg->tls_cert) {
        *out = grpc_insecure_server_credentials_create();
        return *out ? ST_OK : st_error_set(err, ST_ERR_BACKEND, "gRPC: no credentials");
    }
    if ((st = read_pem(cfg->tls_cert, &cert, err)) != ST_OK)
        return st;
    if ((st = read_pem(cfg->tls_key, &key, err)) != ST_OK)
        goto out;
    pair.private_key = key;
    pair.cert_chain = cert;
    /* Core copies the PEM strings. No client certificates: the API key is
     * the credential, as on the HTTP door. */
    *out = grpc_ssl_server_credentials_create_ex(NULL, &pair, 1,
                                                 GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    if (!*out)
        st = st_error_set(err, ST_ERR_INVALID, "gRPC TLS: cannot use %s / %s", cfg->tls_cert,
                          cfg->tls_key);
out:
    free(cert);
    free(key);
    return st;
}

st_status_t st_http_grpc_start(st_http_server_t *s, st_http_grpc_t **out, st_error_t *err)
{
    const st_http_config_t *cfg = s->cfg;
    grpc_server_credentials *creds = NULL;
    st_http_grpc_t *g;
    st_status_t st = ST_OK;
    char addr[300];
    int v6 = strchr(cfg->host, ':') != NULL;
    grpc_arg args[] = {
        /* The HTTP door's body limit; core answers RESOURCE_EXHAUSTED past it
         * before the message reaches us. */
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         {.integer = (int)ST_MIN(cfg->max_body, (size_t)1 << 30)}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_CONCURRENT_STREAMS,
         {.integer = GRPC_MAX_STREAMS_PER_CONN}},
        /* The HTTP door's header limit, at least core's 8 KiB default. */
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_METADATA_SIZE,
         {.integer = (int)ST_MAX(cfg->max_header_bytes, (size_t)8192)}},
        /* A peer that never finishes its TLS handshake or HTTP/2 preface is
         * dropped like a slow HTTP request. */
        {GRPC_ARG_INTEGER, GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
         {.integer = cfg->request_timeout_s * 1000}},
        /* Core sets SO_REUSEPORT by default: a second server on the same
         * fixed port would silently share it instead of failing to bind. */
        {GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}},
    };
    grpc_channel_args ca = {ST_ARRAY_SIZE(args), args};

    g = calloc(1, sizeof(*g));
    if (!g)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory");
    g->s = s;
    g->tls = cfg->tls_cert != NULL;
    g->t_shutdown.kind = GT_SHUTDOWN;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    grpc_init();

    g->wake = event_new(s->base, -1, 0, on_wake, g);
    if (!g->wake) {
        st = st_error_set(err, ST_ERR_NOMEM, "libevent: cannot create an event");
        goto err;
    }
    if ((st = make_creds(cfg, &creds, err)) != ST_OK)
        goto err;
    g->cq = grpc_completion_queue_create_for_next(NULL);
    g->server = grpc_server_create(&ca, NULL);
    if (!g->cq || !g->server) {
        st = st_error_set(err, ST_ERR_BACKEND, "gRPC: cannot create the server");
        goto err;
    }
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    g->rm[GRPC_M_UNARY] = grpc_server_register_method(g->server, "/strata.v1.Generator/Generate",
                                                      NULL,
                                                      GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    g->rm[GRPC_M_STREAM] = grpc_server_register_method(
        g->server, "/strata.v1.Generator/GenerateStream", NULL,
        GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (!g->rm[GRPC_M_UNARY] || !g->rm[GRPC_M_STREAM]) {
        st = st_error_set(err, ST_ERR_BACKEND, "gRPC: cannot register the methods");
        goto err;
    }
    snprintf(addr, sizeof(addr), "%s%s%s:%d", v6 ? "[" : "", cfg->host, v6 ? "]" : "",
             cfg->grpc_port);
    g->port = grpc_server_add_http2_port(g->server, addr, creds);
    if (!g->port) {
        st = st_error_set(err, ST_ERR_IO, "gRPC: cannot listen on %s", addr);
        goto err;
    }
    grpc_server_start(g->server);
    if (pthread_create(&g->pump, NULL, pump_main, g) != 0) {
        st = st_error_set(err, ST_ERR_BACKEND, "gRPC: cannot start its thread");
        goto err;
    }
    g->pump_started = 1;
    for (int m = 0; m < GRPC_M_COUNT_; m++)
        for (int i = 0; i < (m == GRPC_M_OTHER ? 1 : GRPC_SLOTS); i++)
            if (st_grpc_post_slot(g, m) != ST_OK) {
                st = st_error_set(err, ST_ERR_BACKEND, "gRPC: cannot request calls");
                goto err;
            }
    grpc_server_credentials_release(creds);
    *out = g;
    return ST_OK;

err:
    if (creds)
        grpc_server_credentials_release(creds);
    st_http_grpc_free(g);
    return st;
}

int st_http_grpc_port(const st_http_grpc_t *g)
{
    return g ? g->port : -1;
}

void st_http_grpc_shutdown(st_http_grpc_t *g)
{
    if (!g || !g->server || g->shutdown_started)
        return;
    g->shutdown_started = 1;
    /* Listeners close and connections get a GOAWAY: new calls fail with
     * UNAVAILABLE at the client; calls already matched run to the end. */
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->t_shutdown);
}

/* Waits up to `ns` for the shutdown tag, serving calls meanwhile. The loop
 * no longer runs, so tags are taken here, still on its thread. */
static void wait_shutdown(st_http_grpc_t *g, uint64_t ns)
{
    uint64_t end = st_now_ns() + ns;

    while (!g->shutdown_done && st_now_ns() < end) {
        if (g->pump_started) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_mutex_lock(&g->lock);
            if (!g->head)
                pthread_cond_timedwait(&g->cond, &g->lock, &ts);
            pthread_mutex_unlock(&g->lock);
            run_tags(g, take_all(g));
        } else {
            grpc_event ev = grpc_completion_queue_next(
                g->cq, gpr_time_from_millis(100, GPR_TIMESPAN), NULL);
            if (ev.type == GRPC_OP_COMPLETE) {
                gtag_t *t = ev.tag;
                t->ok = ev.success;
                t->next = NULL;
                run_tags(g, t);
            }
        }
    }
}

void st_http_grpc_free(st_http_grpc_t *g)
{
    int leak = 0;

    if (!g)
        return;
    if (g->server) {
        st_http_grpc_shutdown(g);
        wait_shutdown(g, GRPC_FLUSH_NS);
        if (!g->shutdown_done) {
            st_warn("http", "gRPC: %u calls still open after the drain: cancelling them",
                    g->n_calls);
            grpc_server_cancel_all_calls(g->server);
            wait_shutdown(g, GRPC_GIVEUP_NS);
        }
        if (g->shutdown_done) {
            grpc_server_destroy(g->server);
        } else {
            st_error("http", "gRPC: the server did not shut down; leaving it");
            leak = 1;
        }
    }
    if (g->cq && !leak) {
        grpc_completion_queue_shutdown(g->cq);
        if (g->pump_started) {
            pthread_join(g->pump, NULL);
        } else {
            for (;;) {
                grpc_event ev = grpc_completion_queue_next(
                    g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                    break;
            }
        }
        run_tags(g, take_all(g));
        grpc_completion_queue_destroy(g->cq);
    }
    if (leak)
        return;                      /* the pump still points at g */
    while (g->calls) {
        gcall_t *c = g->calls;       /* none should be left; never leak a call's memory */
        g->calls = c->next;
        st_grpc_call_free(c);
    }
    if (g->wake)
        event_free(g->wake);
    grpc_shutdown();
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}
