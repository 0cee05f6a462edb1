/*
 * ctrl_shard.c - the checks of shard streaming (st_ctrl.h): a request's
 * ranges against the coordinator's file, and each received chunk against
 * what the worker asked for. The decoder (ctrl.c) has already bounded every
 * count and length; what is checked here needs the file's size and the
 * request, which only the two ends know.
 */
#include "st_ctrl.h"

#include <string.h>

st_status_t st_ctrl_shard_check_request(const st_ctrl_shard_request_t *rq, uint64_t file_size,
                                        uint64_t data_offset, uint64_t *total,
                                        st_error_t *err)
{
    uint64_t sum = 0, prev_end = data_offset;

    if (rq->header) {
        if (rq->n != 0)
            return st_error_set(err, ST_ERR_PROTOCOL, "shard request: a header request "
                                "carries no ranges");
        *total = data_offset;
        return ST_OK;
    }
    if (rq->n == 0 || rq->n > ST_CTRL_SHARD_MAX_RANGES)
        return st_error_set(err, ST_ERR_PROTOCOL, "shard request: %u ranges (1..%u)", rq->n,
                            ST_CTRL_SHARD_MAX_RANGES);
    for (uint32_t i = 0; i < rq->n; i++) {
        const st_ctrl_range_t *r = &rq->r[i];
        /* Tensor data only: the header has its own request, and ranges
         * ascend so that a range cannot be asked for twice. */
        if (r->len == 0 || r->offset < prev_end || r->offset > file_size ||
            r->len > file_size - r->offset)
            return st_error_set(err, ST_ERR_PROTOCOL, "shard request: range %u [%llu, +%llu) "
                                "is empty, overlaps the previous one or lies outside the "
                                "tensor data [%llu, %llu)", i, (unsigned long long)r->offset,
                                (unsigned long long)r->len, (unsigned long long)data_offset,
                                (unsigned long long)file_size);
        prev_end = r->offset + r->len;
        sum += r->len;
    }
    *total = sum;
    return ST_OK;
}

void st_ctrl_shard_rx_init(st_ctrl_shard_rx_t *rx, const st_ctrl_range_t *r, uint32_t n,
                           uint64_t file_size)
{
    memset(rx, 0, sizeof(*rx));
    rx->r = r;
    rx->n = n;
    rx->file_size = file_size;
    rx->pos = n ? r[0].offset : 0;
}

st_status_t st_ctrl_shard_rx_data(st_ctrl_shard_rx_t *rx, const st_ctrl_shard_data_t *d,
                                  st_error_t *err)
{
    const st_ctrl_range_t *r;

    if (d->len == 0 || d->len > ST_CTRL_SHARD_CHUNK)
        return st_error_set(err, ST_ERR_PROTOCOL, "SHARD_DATA: length %u outside 1..%u",
                            d->len, ST_CTRL_SHARD_CHUNK);
    if (d->offset > rx->file_size || d->len > rx->file_size - d->offset)
        return st_error_set(err, ST_ERR_PROTOCOL, "SHARD_DATA: [%llu, +%u) lies outside the "
                            "%llu-byte file", (unsigned long long)d->offset, d->len,
                            (unsigned long long)rx->file_size);
    if (rx->i >= rx->n)
        return st_error_set(err, ST_ERR_PROTOCOL, "SHARD_DATA at %llu after every requested "
                            "byte arrived", (unsigned long long)d->offset);
    r = &rx->r[rx->i];
    if (d->offset != rx->pos || d->len > r->offset + r->len - rx->pos)
        return st_error_set(err, ST_ERR_PROTOCOL, "SHARD_DATA: [%llu, +%u) is not the next "
                            "part of the requested range [%llu, +%llu) (expected offset %llu)",
                            (unsigned long long)d->offset, d->len,
                            (unsigned long long)r->offset, (unsigned long long)r->len,
                            (unsigned long long)rx->pos);
    rx->pos += d->len;
    rx->received += d->len;
    if (rx->pos == r->offset + r->len && ++rx->i < rx->n)
        rx->pos = rx->r[rx->i].offset;
    return ST_OK;
}

st_status_t st_ctrl_shard_rx_end(st_ctrl_shard_rx_t *rx, const st_ctrl_shard_end_t *e,
                                 st_error_t *err)
{
    if (e->status != ST_OK)
        return st_error_set(err, e->status, "the coordinator refused the shard request: %s",
                            e->error[0] ? e->error : st_status_str(e->status));
    if (e->total != rx->received || (!rx->header && rx->i < rx->n) || rx->received == 0)
        return st_error_set(err, ST_ERR_PROTOCOL, "SHARD_END after %llu bytes, the coordinator "
                            "says %llu were sent%s", (unsigned long long)rx->received,
                            (unsigned long long)e->total,
                            rx->i < rx->n && !rx->header ? " and requested ranges are missing"
                                                         : "");
    return ST_OK;
}
