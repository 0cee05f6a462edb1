/*
 * strata bench transport - latency and bandwidth of st_transport between two
 * processes, measured through our own API end to end.
 *
 *   strata bench transport --listen 13500             # responder
 *   strata bench transport --connect HOST:13500       # initiator, prints results
 *   mpirun -n 2 strata bench transport                 # both; MPI exchanges the address
 *
 * Tests (per size): "lat" ping-pong, one-way = half the round trip, with
 * p50/p99/max over --iters; "bw" streaming with --window sends in flight and
 * one acknowledgement at the end; "hop" ping-pong of one activation of
 * --batch x --dim elements of --dtype (a decode step between two pipeline
 * stages). The reference is ucx_perftest tag_lat/tag_bw on the same UCX_TLS
 * (bench/transport_vs_ucx.sh prints them side by side).
 *
 * The responder echoes each ACTIVATION flagged ECHO straight from the receive
 * buffer it arrived in (st_transport_msg_mem: no copy, no extra buffer), and
 * acknowledges a bandwidth batch when its last message arrived.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRATA_HAVE_UCX
#include "st_transport.h"
#include "st_transport_boot.h"
#include "st_log.h"
#include "st_util.h"
#endif

const char st_bench_transport_help[] =
    "transport latency/bandwidth between two processes (vs ucx_perftest)";

#ifndef STRATA_HAVE_UCX
int st_bench_transport(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "strata bench transport: built without UCX (libucx-dev, STRATA_WITH_UCX)\n");
    return 1;
}
#else

enum {
    F_ECHO = 1,      /* responder: send this message back */
    F_BW   = 2,      /* responder: count it, no reply */
    F_ACK  = 4,      /* responder: acknowledge once seq messages of this batch arrived */
    F_QUIT = 8       /* CONTROL: the run is over */
};

#define MAX_SIZES 64
#define SEC ST_TRANSPORT_SEC

typedef struct opts {
    const char *listen, *connect, *tls, *net_devices;
    size_t sizes[MAX_SIZES];
    int n_sizes;
    long iters, warmup;
    long window;
    int do_lat, do_bw, do_hop, json;
    st_transport_progress_mode_t progress;
    long batch, dim;
    int dtype_bytes;
    const char *dtype;
    uint64_t max_bytes;        /* cap of bytes moved per size and test */
    int forever;
    int no_peer_errors;
} opts_t;

typedef struct result {
    size_t size;
    long lat_iters, bw_iters;
    double p50, p99, max, avg;          /* one-way, us */
    double bw_gbs;                      /* 1e9 bytes/s */
    int has_lat, has_bw;
} result_t;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: strata bench transport (--listen PORT | --connect HOST:PORT | under mpirun -n 2)\n"
        "  --sizes LIST      comma-separated bytes (default 8,64,512,2304,4096,16384,65536,\n"
        "                    262144,1048576,4194304,16777216); k/m suffixes allowed\n"
        "  --iters N         measured iterations per size (default 10000)\n"
        "  --warmup N        unmeasured iterations first (default iters/10, at least 10)\n"
        "  --max-bytes B     cap iterations so one test moves at most B bytes (default 1g)\n"
        "  --mode LIST       lat,bw,hop (default lat,bw; hop is added by --dim)\n"
        "  --window W        bandwidth: sends in flight (default 16)\n"
        "  --batch B --dim D --dtype f16|bf16|f32   activation-hop shape (default 1 x 4096 f16)\n"
        "  --tls STR         UCX_TLS for this run (default: environment)\n"
        "  --net-devices STR UCX_NET_DEVICES for this run\n"
        "  --progress busy|hybrid|event   (default busy)\n"
        "  --json            one JSON object on stdout (initiator)\n"
        "  --forever         responder: serve clients until killed\n"
        "  --no-peer-errors  diagnosis: UCX error handling off (as ucx_perftest); a dead\n"
        "                    peer then hangs the run instead of failing it\n"
        "Latencies are one-way (half the round trip) in microseconds; bandwidth_gbps\n"
        "is in GB/s (1e9 bytes per second), one direction.\n");
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return -1;
    if (*end == 'k' || *end == 'K') { v <<= 10; end++; }
    else if (*end == 'm' || *end == 'M') { v <<= 20; end++; }
    else if (*end == 'g' || *end == 'G') { v <<= 30; end++; }
    if (*end != '\0' && *end != ',')
        return -1;
    *out = (size_t)v;
    return (int)(end - s);
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    static const size_t def_sizes[] = {8, 64, 512, 2304, 4096, 16384, 65536, 262144,
                                       1u << 20, 4u << 20, 16u << 20};
    int mode_given = 0;

    memset(o, 0, sizeof(*o));
    o->iters = 10000;
    o->warmup = -1;
    o->window = 16;
    o->do_lat = o->do_bw = 1;
    o->progress = ST_TRANSPORT_PROGRESS_BUSY;
    o->batch = 1;
    o->dim = 4096;
    o->dtype = "f16";
    o->dtype_bytes = 2;
    o->max_bytes = 1ull << 30;
    for (size_t i = 0; i < ST_ARRAY_SIZE(def_sizes); i++)
        o->sizes[o->n_sizes++] = def_sizes[i];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE() do { if (!v) { fprintf(stderr, "%s needs a value\n", a); return -1; } i++; } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--listen")) {
            NEED_VALUE(); o->listen = v;
        } else if (!strcmp(a, "--connect")) {
            NEED_VALUE(); o->connect = v;
        } else if (!strcmp(a, "--tls")) {
            NEED_VALUE(); o->tls = v;
        } else if (!strcmp(a, "--net-devices")) {
            NEED_VALUE(); o->net_devices = v;
        } else if (!strcmp(a, "--sizes")) {
            NEED_VALUE();
            o->n_sizes = 0;
            for (const char *p = v; *p;) {
                size_t s;
                int n = parse_size(p, &s);
                if (n <= 0 || o->n_sizes == MAX_SIZES) {
                    fprintf(stderr, "--sizes: bad list '%s'\n", v);
                    return -1;
                }
                o->sizes[o->n_sizes++] = s;
                p += n;
                if (*p == ',')
                    p++;
            }
        } else if (!strcmp(a, "--iters")) {
            NEED_VALUE(); o->iters = atol(v);
        } else if (!strcmp(a, "--warmup")) {
            NEED_VALUE(); o->warmup = atol(v);
        } else if (!strcmp(a, "--window")) {
            NEED_VALUE(); o->window = atol(v);
        } else if (!strcmp(a, "--max-bytes")) {
            size_t s;
            NEED_VALUE();
            if (parse_size(v, &s) <= 0) { fprintf(stderr, "--max-bytes: bad value\n"); return -1; }
            o->max_bytes = s;
        } else if (!strcmp(a, "--batch")) {
            NEED_VALUE(); o->batch = atol(v); o->do_hop = 1;
        } else if (!strcmp(a, "--dim")) {
            NEED_VALUE(); o->dim = atol(v); o->do_hop = 1;
        } else if (!strcmp(a, "--dtype")) {
            NEED_VALUE();
            o->dtype = v;
            o->dtype_bytes = !strcmp(v, "f32") ? 4 : (!strcmp(v, "f16") || !strcmp(v, "bf16")) ? 2 : 0;
            if (!o->dtype_bytes) { fprintf(stderr, "--dtype: f16, bf16 or f32\n"); return -1; }
        } else if (!strcmp(a, "--mode")) {
            NEED_VALUE();
            mode_given = 1;
            o->do_lat = strstr(v, "lat") != NULL;
            o->do_bw  = strstr(v, "bw") != NULL;
            o->do_hop = strstr(v, "hop") != NULL;
        } else if (!strcmp(a, "--progress")) {
            NEED_VALUE();
            if (!strcmp(v, "busy"))        o->progress = ST_TRANSPORT_PROGRESS_BUSY;
            else if (!strcmp(v, "hybrid")) o->progress = ST_TRANSPORT_PROGRESS_HYBRID;
            else if (!strcmp(v, "event"))  o->progress = ST_TRANSPORT_PROGRESS_EVENT;
            else { fprintf(stderr, "--progress: busy, hybrid or event\n"); return -1; }
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--no-peer-errors")) {
            o->no_peer_errors = 1;
        } else if (!strcmp(a, "--forever")) {
            o->forever = 1;
        } else {
            fprintf(stderr, "strata bench transport: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
#undef NEED_VALUE
    }
    (void)mode_given;
    if (o->iters < 1 || o->window < 1 || o->window > 256 || o->batch < 1 || o->dim < 1) {
        fprintf(stderr, "strata bench transport: iters, window (1..256), batch, dim must be positive\n");
        return -1;
    }
    if (o->warmup < 0)
        o->warmup = o->iters / 10 < 10 ? 10 : o->iters / 10;
    if (o->listen && o->connect) {
        fprintf(stderr, "strata bench transport: --listen and --connect exclude each other\n");
        return -1;
    }
    return 0;
}

static size_t hop_bytes(const opts_t *o)
{
    return (size_t)o->batch * (size_t)o->dim * (size_t)o->dtype_bytes;
}

static size_t max_size(const opts_t *o)
{
    size_t m = 64;
    for (int i = 0; i < o->n_sizes; i++)
        m = ST_MAX(m, o->sizes[i]);
    if (o->do_hop)
        m = ST_MAX(m, hop_bytes(o));
    return m;
}

static long iters_for(const opts_t *o, size_t size, long base)
{
    uint64_t cap = size ? o->max_bytes / size : (uint64_t)base;
    if (cap < 20)
        cap = 20;
    return (uint64_t)base > cap ? (long)cap : base;
}

static st_transport_t *make_transport(const opts_t *o, uint64_t max_msg, st_error_t *err)
{
    st_transport_config_t cfg;
    st_transport_t *t = NULL;

    st_transport_config_init(&cfg);
    cfg.tls = o->tls;
    cfg.net_devices = o->net_devices;
    cfg.progress = o->progress;
    cfg.max_msg_size = max_msg;
    cfg.small_slot_size = ST_MIN(max_msg, (uint64_t)64 << 10);
    cfg.ep_credits = (uint32_t)ST_MAX(32, o->window * 2);
    cfg.small_slots = cfg.ep_credits + 8;
    cfg.large_slots = (uint32_t)o->window + 2;
    cfg.max_sends = (uint32_t)o->window * 2 + 16;
    cfg.name = o->connect ? "bench-client" : "bench-server";
    cfg.no_peer_errors = o->no_peer_errors;
    if (st_transport_create(&cfg, err, &t) != ST_OK)
        return NULL;
    return t;
}

/* ---- responder ---------------------------------------------------------- */

static int serve(st_transport_t *t, const opts_t *o)
{
    st_transport_event_t ev;
    uint64_t bw_count = 0, ack_target = 0, ack_id = 0;
    int clients = 0;

    for (;;) {
        st_status_t st = st_transport_wait_event(t, ST_TRANSPORT_FOREVER, &ev);
        if (st != ST_OK)
            continue;
        if (ev.type == ST_TRANSPORT_EV_EP_READY) {
            clients++;
            bw_count = ack_target = 0;
            continue;
        }
        if (ev.type == ST_TRANSPORT_EV_EP_ERROR) {
            fprintf(stderr, "bench server: client %s: %s\n", st_transport_ep_peer(ev.ep),
                    st_status_str(ev.status));
            st_transport_ep_close(t, ev.ep);
            if (!o->forever)
                return 1;
            continue;
        }
        if (ev.tag.type == ST_TRANSPORT_CONTROL && (ev.tag.flags & F_QUIT)) {
            st_transport_msg_release(t, ev.msg);
            st_transport_ep_close(t, ev.ep);
            if (!o->forever)
                return 0;
            continue;
        }
        if (ev.tag.flags & F_ECHO) {
            size_t off;
            st_transport_mem_t *m = st_transport_msg_mem(ev.msg, &off);
            st_transport_req_t *req = NULL;
            st = st_transport_send(ev.ep, &ev.tag, m, off, ev.len, &req);
            if (st == ST_INPROGRESS) {
                st = st_transport_req_wait(t, req, 30 * SEC);
                st_transport_req_release(t, req);
            }
            if (st != ST_OK)
                fprintf(stderr, "bench server: echo failed: %s\n", st_status_str(st));
        } else if (ev.tag.flags & F_BW) {
            bw_count++;
        }
        /* Rendezvous receives may complete out of order: the flagged last
         * message only says how many to wait for. */
        if ((ev.tag.flags & F_BW) && (ev.tag.flags & F_ACK)) {
            ack_target = ev.tag.seq;
            ack_id = ev.tag.request_id;
        }
        if (ack_target && bw_count >= ack_target) {
            st_transport_tag_t ack = {ST_TRANSPORT_CONTROL, F_ACK, 0, 0, ack_id};
            bw_count = ack_target = 0;
            st = st_transport_send(ev.ep, &ack, NULL, 0, 0, NULL);
            if (st < 0)
                fprintf(stderr, "bench server: ack failed: %s\n", st_status_str(st));
        }
        st_transport_msg_release(t, ev.msg);
    }
}

/* ---- initiator ---------------------------------------------------------- */

typedef struct client {
    st_transport_t *t;
    st_transport_ep_t *ep;
    st_transport_mem_t *mem;
} client_t;

/* Waits for the next RECV event; other events end the run. */
static st_status_t wait_recv(client_t *c, st_transport_event_t *ev)
{
    for (;;) {
        st_status_t st = st_transport_wait_event(c->t, 30 * SEC, ev);
        if (st != ST_OK)
            return st;
        if (ev->type == ST_TRANSPORT_EV_RECV)
            return ST_OK;
        if (ev->type == ST_TRANSPORT_EV_EP_ERROR)
            return ev->status;
    }
}

static st_status_t send_wait(client_t *c, const st_transport_tag_t *tag, size_t size)
{
    st_transport_req_t *req = NULL;
    st_status_t st = st_transport_send(c->ep, tag, c->mem, 0, size, &req);
    if (st == ST_INPROGRESS) {
        st = st_transport_req_wait(c->t, req, 30 * SEC);
        st_transport_req_release(c->t, req);
    }
    return st;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static st_status_t run_lat(client_t *c, const opts_t *o, size_t size, result_t *r)
{
    long n = iters_for(o, size, o->iters), warm = iters_for(o, size, o->warmup);
    double *samples = malloc((size_t)n * sizeof(double));
    st_transport_event_t ev;
    st_status_t st = ST_OK;
    uint64_t t0, t1, first = 0;

    if (!samples)
        return ST_ERR_NOMEM;
    for (long i = -warm; i < n; i++) {
        st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, F_ECHO, 0, (uint32_t)i, size};
        t0 = st_now_ns();
        if (i == 0)
            first = t0;
        if ((st = send_wait(c, &tag, size)) != ST_OK)
            break;
        if ((st = wait_recv(c, &ev)) != ST_OK)
            break;
        if (ev.len != size || ev.tag.seq != (uint32_t)i) {
            st_transport_msg_release(c->t, ev.msg);
            st = ST_ERR_PROTOCOL;
            break;
        }
        st_transport_msg_release(c->t, ev.msg);
        t1 = st_now_ns();
        if (i >= 0)
            samples[i] = (double)(t1 - t0) / 2e3;
    }
    if (st == ST_OK) {
        double total = (double)(st_now_ns() - first) / 2e3;
        qsort(samples, (size_t)n, sizeof(double), cmp_double);
        r->lat_iters = n;
        r->p50 = samples[(size_t)((double)(n - 1) * 0.50)];
        r->p99 = samples[(size_t)((double)(n - 1) * 0.99)];
        r->max = samples[n - 1];
        r->avg = total / (double)n;
        r->has_lat = 1;
    }
    free(samples);
    return st;
}

static st_status_t run_bw(client_t *c, const opts_t *o, size_t size, uint64_t batch_id, result_t *r)
{
    long n = iters_for(o, size, o->iters), warm = iters_for(o, size, o->warmup);
    st_transport_req_t *reqs[256];
    st_transport_event_t ev;
    st_status_t st = ST_OK;
    uint64_t t0 = 0;

    for (int phase = 0; phase < 2 && st == ST_OK; phase++) {
        long count = phase == 0 ? ST_MIN(warm, 1000L) : n;
        long head = 0;   /* reqs[] is a ring of up to window unfinished sends */
        int inflight = 0;
        if (phase == 1)
            t0 = st_now_ns();
        for (long i = 0; i < count && st == ST_OK; i++) {
            st_transport_tag_t tag = {ST_TRANSPORT_ACTIVATION, F_BW, 0, 0, batch_id};
            st_transport_req_t *req = NULL;
            if (i == count - 1) {
                tag.flags |= F_ACK;
                tag.seq = (uint32_t)count;
            }
            while (inflight == o->window) {
                st_transport_req_t *old = reqs[head % o->window];
                st = st_transport_req_wait(c->t, old, 30 * SEC);
                st_transport_req_release(c->t, old);
                head++;
                inflight--;
                if (st != ST_OK)
                    return st;
            }
            st = st_transport_send(c->ep, &tag, c->mem, 0, size, &req);
            if (st == ST_INPROGRESS) {
                reqs[(head + inflight) % o->window] = req;
                inflight++;
                st = ST_OK;
            } else if (st == ST_ERR_BUSY) {
                st_transport_progress(c->t);
                i--;
                st = ST_OK;
            }
        }
        while (inflight && st == ST_OK) {
            st_transport_req_t *old = reqs[head % o->window];
            st = st_transport_req_wait(c->t, old, 30 * SEC);
            st_transport_req_release(c->t, old);
            head++;
            inflight--;
        }
        if (st != ST_OK)
            return st;
        for (;;) {
            if ((st = wait_recv(c, &ev)) != ST_OK)
                return st;
            int is_ack = ev.tag.type == ST_TRANSPORT_CONTROL && (ev.tag.flags & F_ACK);
            st_transport_msg_release(c->t, ev.msg);
            if (is_ack)
                break;
        }
    }
    double secs = (double)(st_now_ns() - t0) * 1e-9;
    r->bw_iters = n;
    r->bw_gbs = (double)size * (double)n / secs / 1e9;
    r->has_bw = 1;
    return ST_OK;
}

static void print_json(const opts_t *o, const char *peer, const result_t *res, int n,
                       const result_t *hop)
{
    const char *env_tls = getenv("UCX_TLS");
    printf("{\"bench\":\"transport\",\"peer\":\"%s\",\"tls\":\"%s\",\"progress\":\"%s\","
           "\"peer_errors\":%s,\"iters\":%ld,\"window\":%ld,\"latency\":\"one-way us (half round trip)\","
           "\"bandwidth_unit\":\"GB/s (1e9 B/s)\",\"results\":[",
           peer, o->tls ? o->tls : env_tls ? env_tls : "",
           o->progress == ST_TRANSPORT_PROGRESS_BUSY ? "busy" :
           o->progress == ST_TRANSPORT_PROGRESS_HYBRID ? "hybrid" : "event",
           o->no_peer_errors ? "false" : "true", o->iters, o->window);
    for (int i = 0; i < n; i++) {
        const result_t *r = &res[i];
        printf("%s{\"size\":%zu", i ? "," : "", r->size);
        if (r->has_lat)
            printf(",\"iters\":%ld,\"p50_us\":%.3f,\"p99_us\":%.3f,\"max_us\":%.3f,\"avg_us\":%.3f",
                   r->lat_iters, r->p50, r->p99, r->max, r->avg);
        if (r->has_bw)
            printf(",\"bw_iters\":%ld,\"bandwidth_gbps\":%.6g", r->bw_iters, r->bw_gbs);
        printf("}");
    }
    printf("]");
    if (hop)
        printf(",\"hop\":{\"batch\":%ld,\"dim\":%ld,\"dtype\":\"%s\",\"size\":%zu,\"iters\":%ld,"
               "\"p50_us\":%.3f,\"p99_us\":%.3f,\"max_us\":%.3f,\"rtt_p50_us\":%.3f}",
               o->batch, o->dim, o->dtype, hop->size, hop->lat_iters, hop->p50, hop->p99,
               hop->max, 2 * hop->p50);
    printf("}\n");
}

static void print_text(const opts_t *o, const char *peer, const result_t *res, int n,
                       const result_t *hop)
{
    printf("strata bench transport: peer %s, UCX_TLS=%s, progress %s\n", peer,
           o->tls ? o->tls : getenv("UCX_TLS") ? getenv("UCX_TLS") : "(default)",
           o->progress == ST_TRANSPORT_PROGRESS_BUSY ? "busy" :
           o->progress == ST_TRANSPORT_PROGRESS_HYBRID ? "hybrid" : "event");
    printf("%10s %8s %10s %10s %10s %10s %12s\n", "size", "iters", "p50 us", "p99 us",
           "max us", "avg us", "bw GB/s");
    for (int i = 0; i < n; i++) {
        const result_t *r = &res[i];
        printf("%10zu %8ld", r->size, r->has_lat ? r->lat_iters : r->bw_iters);
        if (r->has_lat)
            printf(" %10.3f %10.3f %10.3f %10.3f", r->p50, r->p99, r->max, r->avg);
        else
            printf(" %10s %10s %10s %10s", "-", "-", "-", "-");
        if (r->has_bw)
            printf(" %12.3f\n", r->bw_gbs);
        else
            printf(" %12s\n", "-");
    }
    if (hop)
        printf("activation hop %ld x %ld %s (%zu B): one-way p50 %.3f us, p99 %.3f us, "
               "round trip p50 %.3f us\n", o->batch, o->dim, o->dtype, hop->size,
               hop->p50, hop->p99, 2 * hop->p50);
}

static int drive(st_transport_t *t, const opts_t *o, const char *addr)
{
    client_t c = {t, NULL, NULL};
    result_t res[MAX_SIZES], hop;
    st_status_t st;
    st_error_t err;
    int rc = 1;

    memset(res, 0, sizeof(res));
    memset(&hop, 0, sizeof(hop));
    if ((st = st_transport_connect(t, addr, NULL, &err, &c.ep)) != ST_OK) {
        fprintf(stderr, "strata bench transport: %s\n", err.msg);
        return 1;
    }
    if ((st = st_transport_ep_wait_ready(t, c.ep, 10 * SEC)) != ST_OK) {
        fprintf(stderr, "strata bench transport: connecting to %s: %s\n", addr, st_status_str(st));
        goto out;
    }
    if ((st = st_transport_mem_alloc(t, max_size(o), ST_TRANSPORT_MEM_HOST, &c.mem)) != ST_OK) {
        fprintf(stderr, "strata bench transport: registering %zu bytes: %s\n", max_size(o),
                st_status_str(st));
        goto out;
    }
    memset(st_transport_mem_ptr(c.mem), 0x5a, max_size(o));
    for (int i = 0; i < o->n_sizes; i++) {
        res[i].size = o->sizes[i];
        if (o->do_lat && (st = run_lat(&c, o, o->sizes[i], &res[i])) != ST_OK)
            break;
        if (o->do_bw && (st = run_bw(&c, o, o->sizes[i], (uint64_t)i, &res[i])) != ST_OK)
            break;
    }
    if (st == ST_OK && o->do_hop) {
        hop.size = hop_bytes(o);
        st = run_lat(&c, o, hop.size, &hop);
    }
    if (st != ST_OK) {
        fprintf(stderr, "strata bench transport: run failed: %s\n", st_status_str(st));
        goto out;
    }
    st_transport_tag_t quit = {ST_TRANSPORT_CONTROL, F_QUIT, 0, 0, 0};
    send_wait(&c, &quit, 0);
    if (o->json)
        print_json(o, addr, res, o->n_sizes, o->do_hop ? &hop : NULL);
    else
        print_text(o, addr, res, o->n_sizes, o->do_hop ? &hop : NULL);
    rc = 0;
out:
    if (c.mem)
        st_transport_mem_free(t, c.mem);
    st_transport_ep_close(t, c.ep);
    return rc;
}

/* With tcp enabled beside shared memory, UCX 1.13 uses tcp's put-zcopy for
 * the rendezvous of large messages even between processes of one host: 64 KiB
 * took 30 us instead of 8 us (measured here, posix,tcp,self). The switch is a
 * tcp iface option that ucp_config_modify() does not reach, so the process
 * that owns the environment (this command, not the library) sets it unless
 * the user did. RDMA transports are not affected. */
static void tune_ucx_env(const opts_t *o)
{
    const char *tls = o->tls ? o->tls : getenv("UCX_TLS");
    int tcp = !tls || strstr(tls, "tcp") || strstr(tls, "all");
    int shm = !tls || strstr(tls, "posix") || strstr(tls, "sysv") || strstr(tls, "sm") ||
              strstr(tls, "mm") || strstr(tls, "all");
    if (tcp && shm)
        setenv("UCX_TCP_PUT_ENABLE", "n", 0);
}

int st_bench_transport(int argc, char **argv)
{
    opts_t o;
    st_transport_t *t = NULL;
    st_boot_t *boot = NULL;
    st_error_t err;
    char addr[128];
    int rc = 1, pr;

    if ((pr = parse_args(argc, argv, &o)) != 0)
        return pr > 0 ? 0 : 2;
    tune_ucx_env(&o);
    if (!o.listen && !o.connect) {
        if (!st_boot_launched()) {
            fprintf(stderr, "strata bench transport: give --listen PORT or --connect HOST:PORT, "
                            "or start two ranks with mpirun -n 2\n");
            return 2;
        }
        if (st_boot_init(&err, &boot) != ST_OK) {
            fprintf(stderr, "strata bench transport: %s\n", err.msg);
            return 1;
        }
        if (st_boot_size(boot) != 2) {
            fprintf(stderr, "strata bench transport: needs exactly 2 MPI ranks, got %d\n",
                    st_boot_size(boot));
            goto out;
        }
    }
    t = make_transport(&o, max_size(&o), &err);
    if (!t) {
        fprintf(stderr, "strata bench transport: %s\n", err.msg);
        goto out_boot;
    }
    if (boot) {
        int rank = st_boot_rank(boot);
        memset(addr, 0, sizeof(addr));
        if (rank == 0) {
            if (st_transport_listen(t, "0.0.0.0:0", &err) != ST_OK ||
                st_transport_address(t, addr, sizeof(addr)) != ST_OK) {
                fprintf(stderr, "strata bench transport: rank 0: %s\n", err.msg);
                addr[0] = '\0';
            }
        }
        if (st_boot_bcast(boot, addr, sizeof(addr), 0) != ST_OK || !addr[0]) {
            fprintf(stderr, "strata bench transport: address exchange failed\n");
            goto out;
        }
        rc = rank == 0 ? serve(t, &o) : drive(t, &o, addr);
        st_boot_barrier(boot);
    } else if (o.listen) {
        snprintf(addr, sizeof(addr), strchr(o.listen, ':') ? "%s" : "0.0.0.0:%s", o.listen);
        if (st_transport_listen(t, addr, &err) != ST_OK) {
            fprintf(stderr, "strata bench transport: %s\n", err.msg);
            goto out;
        }
        if (st_transport_address(t, addr, sizeof(addr)) == ST_OK)
            fprintf(stderr, "strata bench transport: listening on %s\n", addr);
        rc = serve(t, &o);
    } else {
        rc = drive(t, &o, o.connect);
    }
out:
    st_transport_destroy(t);
out_boot:
    st_boot_finalize(boot);
    return rc;
}

#endif /* STRATA_HAVE_UCX */
