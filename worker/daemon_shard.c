/*
 * daemon_shard.c - a worker without the model file receives its shard from
 * the coordinator over the control connection (docs/CLUSTER.md, "Workers
 * without the file").
 *
 * The bytes land in a memfd as large as the coordinator's file: sparse, so
 * only what is written takes memory. First the GGUF header and metadata
 * (SHARD_REQUEST with header = 1), which is enough to open the model and
 * learn where this stage's tensors lie; then those tensors' byte ranges.
 * Each chunk is written at its file offset, so the model is then read by
 * the ordinary GGUF reader through /proc/self/fd, tensors verified against
 * the manifest as for a local file, and pages nobody asked for stay holes.
 * A memfd rather than an anonymous mapping handed to st_gguf_open_mem:
 * st_model_open takes a path, and a memfd gives the same sparse anonymous
 * memory behind one without a change to model/.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* memfd_create */
#endif
#include "daemon_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "st_log.h"
#include "st_util.h"

/* Gap between two tensors' bytes still fetched as one range: GGUF pads
 * tensors to the alignment (32 bytes by default), so neighbours merge and
 * a stage needs a handful of ranges instead of 9 per layer. */
#define SHARD_MERGE_GAP 4096u

typedef struct progress {
    uint64_t done, total;
    int      next_decile;
} progress_t;

static int cmp_range(const void *a, const void *b)
{
    const st_ctrl_range_t *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static st_status_t send_request(wk_t *w, uint32_t header, const st_ctrl_range_t *r, uint32_t n,
                                st_error_t *err)
{
    st_status_t st;
    memset(w->out, 0, sizeof(*w->out));
    w->out->type = ST_CTRL_SHARD_REQUEST;
    w->out->epoch = w->epoch;
    w->out->u.shard_request.header = header;
    w->out->u.shard_request.n = n;
    if (n)
        memcpy(w->out->u.shard_request.r, r, n * sizeof(*r));
    pthread_mutex_lock(&w->send_lock);
    st = st_ctrl_conn_send(w->cc, w->out, 5000, err);
    pthread_mutex_unlock(&w->send_lock);
    return st;
}

static st_status_t write_at(int fd, const uint8_t *p, size_t len, uint64_t off, st_error_t *err)
{
    while (len) {
        ssize_t k = pwrite(fd, p, len, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return st_error_set(err, ST_ERR_NOMEM, "cannot store the streamed shard in "
                                "memory: %s", k < 0 ? strerror(errno) : "short write");
        p += k;
        len -= (size_t)k;
        off += (uint64_t)k;
    }
    return ST_OK;
}

/* Receives the answer to one request into fd: SHARD_DATA chunks, each
 * checked against the request before it is stored, then SHARD_END. */
static st_status_t receive(wk_t *w, int fd, st_ctrl_shard_rx_t *rx, progress_t *pg,
                           st_error_t *err)
{
    for (;;) {
        st_ctrl_msg_t *m = w->msg;
        st_status_t st = st_ctrl_conn_recv(w->cc, 30000, m, err);
        if (st == ST_ERR_TIMEOUT)
            return st_error_set(err, ST_ERR_TIMEOUT, "no shard data from the coordinator "
                                "for 30 s");
        if (st == ST_ERR_CLOSED)
            return st_error_set(err, ST_ERR_PEER, "the coordinator closed the connection "
                                "while streaming the shard");
        if (st != ST_OK)
            return st;
        if (m->type == ST_CTRL_HEARTBEAT)
            continue;
        if (m->epoch != w->epoch)
            return st_error_set(err, ST_ERR_PROTOCOL, "%s of epoch %u while streaming the "
                                "shard of epoch %u", st_ctrl_type_name(m->type), m->epoch,
                                w->epoch);
        if (m->type == ST_CTRL_SHARD_END)
            return st_ctrl_shard_rx_end(rx, &m->u.shard_end, err);
        if (m->type != ST_CTRL_SHARD_DATA)
            return st_error_set(err, ST_ERR_PROTOCOL, "unexpected %s while streaming the "
                                "shard", st_ctrl_type_name(m->type));
        if ((st = st_ctrl_shard_rx_data(rx, &m->u.shard_data, err)) != ST_OK)
            return st;
        st = write_at(fd, m->u.shard_data.data, m->u.shard_data.len, m->u.shard_data.offset,
                      err);
        if (st != ST_OK)
            return st;
        if (pg) {
            pg->done += m->u.shard_data.len;
            while (pg->next_decile <= 10 &&
                   pg->done * 10 >= (uint64_t)pg->next_decile * pg->total) {
                st_info(MOD, "%s: shard %3d %% (%.1f of %.1f MB)", w->name,
                        pg->next_decile * 10, (double)pg->done / 1e6,
                        (double)pg->total / 1e6);
                pg->next_decile++;
            }
        }
    }
}

/* The tensors this stage reads, as sorted, merged file ranges. */
static st_status_t stage_ranges(wk_t *w, st_ctrl_range_t **out, uint32_t *n_out,
                                uint64_t *bytes, st_error_t *err)
{
    const st_ctrl_plan_t *pl = &w->plan;
    uint32_t cap = (pl->last_layer - pl->first_layer) * ST_LAYER_MAX_TENSORS + 3, n = 0, k = 0;
    st_ctrl_range_t *r = calloc(cap, sizeof(*r));

    if (!r)
        return st_error_set(err, ST_ERR_NOMEM, "out of memory for the shard ranges");
    for (uint32_t l = pl->first_layer; l < pl->last_layer; l++) {
        const st_layer_t *ly = st_model_layer(w->model, l);
        for (uint32_t i = 0; i < ly->n_all; i++)
            r[n++] = (st_ctrl_range_t){ly->all[i]->file_offset, ly->all[i]->nbytes};
    }
    if (pl->first_layer == 0) {
        const st_tensor_t *t = st_model_tok_embd(w->model);
        r[n++] = (st_ctrl_range_t){t->file_offset, t->nbytes};
    }
    if (pl->last_layer == pl->n_layer) {
        const st_tensor_t *a = st_model_output_norm(w->model), *b = st_model_output(w->model);
        r[n++] = (st_ctrl_range_t){a->file_offset, a->nbytes};
        r[n++] = (st_ctrl_range_t){b->file_offset, b->nbytes};
    }
    qsort(r, n, sizeof(*r), cmp_range);
    *bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (r[i].len == 0)
            continue;
        if (k > 0 && r[i].offset <= r[k - 1].offset + r[k - 1].len + SHARD_MERGE_GAP) {
            uint64_t end = ST_MAX(r[k - 1].offset + r[k - 1].len, r[i].offset + r[i].len);
            r[k - 1].len = end - r[k - 1].offset;   /* overlap: a tied head is the embedding */
        } else {
            r[k++] = r[i];
        }
    }
    for (uint32_t i = 0; i < k; i++)
        *bytes += r[i].len;
    *out = r;
    *n_out = k;
    return ST_OK;
}

st_status_t wk_shard_open(wk_t *w, st_error_t *err)
{
    const uint64_t size = w->plan.model_size;
    uint64_t t0 = st_now_ns(), bytes = 0;
    st_ctrl_range_t *ranges = NULL, whole = {0, size};
    st_ctrl_shard_rx_t rx;
    progress_t pg = {0, 0, 1};
    uint32_t n = 0;
    char path[64];
    int fd;
    st_status_t st;

    if (size == 0)
        return st_error_set(err, ST_ERR_PROTOCOL, "the plan gives no model size: cannot "
                            "stream the shard");
    fd = memfd_create("strata-shard", MFD_CLOEXEC);
    if (fd < 0)
        return st_error_set(err, ST_ERR_NOMEM, "memfd_create: %s", strerror(errno));
    if (ftruncate(fd, (off_t)size) != 0) {
        st = st_error_set(err, ST_ERR_NOMEM, "cannot size the shard memory to %llu bytes: %s",
                          (unsigned long long)size, strerror(errno));
        goto out;
    }
    /* 1. header and metadata */
    if ((st = send_request(w, 1, NULL, 0, err)) != ST_OK)
        goto out;
    st_ctrl_shard_rx_init(&rx, &whole, 1, size);
    rx.header = 1;
    if ((st = receive(w, fd, &rx, NULL, err)) != ST_OK)
        goto out;
    w->shard_bytes = rx.received;
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if ((st = st_model_open(path, NULL, &w->model, err)) != ST_OK)
        goto out;
    if (w->plan.last_layer > st_model_hparams(w->model)->n_layer ||
        w->plan.first_layer >= w->plan.last_layer) {
        st = st_error_set(err, ST_ERR_RANGE, "plan layers [%u, %u) outside the streamed "
                          "model's %u", w->plan.first_layer, w->plan.last_layer,
                          st_model_hparams(w->model)->n_layer);
        goto out;
    }
    /* 2. this stage's tensors, in requests of at most MAX_RANGES ranges */
    if ((st = stage_ranges(w, &ranges, &n, &bytes, err)) != ST_OK)
        goto out;
    pg.total = bytes;
    st_info(MOD, "%s: streaming %.1f MB of %.1f MB (%u ranges) from the coordinator", w->name,
            (double)bytes / 1e6, (double)size / 1e6, n);
    for (uint32_t i = 0; i < n && st == ST_OK; i += ST_CTRL_SHARD_MAX_RANGES) {
        uint32_t k = ST_MIN(n - i, (uint32_t)ST_CTRL_SHARD_MAX_RANGES);
        if ((st = send_request(w, 0, ranges + i, k, err)) != ST_OK)
            break;
        st_ctrl_shard_rx_init(&rx, ranges + i, k, size);
        st = receive(w, fd, &rx, &pg, err);
        w->shard_bytes += rx.received;
    }
out:
    w->shard_ns = st_now_ns() - t0;
    if (st != ST_OK) {
        st_model_close(w->model);
        w->model = NULL;
    }
    free(ranges);
    close(fd);   /* the model's mapping keeps the memory */
    return st;
}
