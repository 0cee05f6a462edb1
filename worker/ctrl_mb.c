/*
 * ctrl_mb.c - layout and validation of data-plane micro-batch frames (see
 * st_ctrl.h). A stage computes straight out of the received buffer, so the
 * parser checks every byte count and every index a kernel will use.
 */
#include "st_ctrl.h"

#include <stdio.h>
#include <string.h>

#include "st_util.h"

_Static_assert(sizeof(st_ctrl_mb_hdr_t) == 320, "micro-batch header is part of the wire");
_Static_assert(sizeof(st_ctrl_mb_setup_t) == 40, "setup record is part of the wire");
_Static_assert(sizeof(st_kvop_t) == 24, "prefix-cache op is part of the wire");

/* Adds `bytes` at the given alignment; returns 1 on overflow. */
static int take(uint64_t *off, uint64_t bytes, uint64_t align, size_t *at)
{
    uint64_t o = ST_ALIGN_UP(*off, align);
    if (o < *off || st_add_overflow_u64(o, bytes, off) || o > SIZE_MAX)
        return 1;
    *at = (size_t)o;
    return 0;
}

st_status_t st_ctrl_mb_layout(uint32_t kind, uint32_t n, uint32_t n_embd, uint32_t setup_bytes,
                              uint32_t n_kvops, uint32_t n_ids, uint32_t text_len,
                              st_ctrl_mb_layout_t *out)
{
    uint64_t off = sizeof(st_ctrl_mb_hdr_t), hidden;
    st_ctrl_mb_layout_t l;
    int o = 0;

    memset(&l, 0, sizeof(l));
    if (kind == ST_CTRL_MB_IDS) {
        o |= take(&off, 4ull * n_ids, 8, &l.ids);
        o |= take(&off, text_len, 1, &l.text);
    } else {
        o |= take(&off, 4ull * n, 8, &l.pos);
        o |= take(&off, 4ull * n, 4, &l.slot);
        o |= take(&off, n, 4, &l.want);
        o |= take(&off, setup_bytes, 8, &l.setup);
        o |= take(&off, (uint64_t)sizeof(st_kvop_t) * n_kvops, 8, &l.kvops);
        if (kind == ST_CTRL_MB_TOKENS) {
            o |= take(&off, 4ull * n, 8, &l.tokens);
        } else {
            o |= st_mul_overflow_u64((uint64_t)n * 4u, n_embd, &hidden);
            o |= take(&off, hidden, 64, &l.hidden);
        }
    }
    off = ST_ALIGN_UP(off, 8);
    if (o || off > SIZE_MAX)
        return ST_ERR_OVERFLOW;
    l.total = (size_t)off;
    *out = l;
    return ST_OK;
}

void st_ctrl_mb_setup_put(uint8_t *dst, uint32_t slot, const st_sampler_params_t *p,
                          const int32_t *window, uint32_t n_window)
{
    st_ctrl_mb_setup_t rec;
    memset(&rec, 0, sizeof(rec));
    rec.slot = slot;
    rec.n_window = n_window;
    rec.temperature = p->temperature;
    rec.top_p = p->top_p;
    rec.min_p = p->min_p;
    rec.repeat_penalty = p->repeat_penalty;
    rec.top_k = p->top_k;
    rec.repeat_last_n = p->repeat_last_n;
    rec.seed = p->seed;
    memcpy(dst, &rec, sizeof(rec));
    if (n_window)
        memcpy(dst + sizeof(rec), window, 4u * n_window);
}

void st_ctrl_mb_setup_params(const st_ctrl_mb_setup_t *rec, st_sampler_params_t *p)
{
    *p = st_sampler_default_params();
    p->temperature = rec->temperature;
    p->top_p = rec->top_p;
    p->min_p = rec->min_p;
    p->repeat_penalty = rec->repeat_penalty;
    p->top_k = rec->top_k;
    p->repeat_last_n = rec->repeat_last_n;
    p->seed = rec->seed;
}

void st_ctrl_mb_setup_get(const st_ctrl_mb_view_t *v, size_t *off, st_ctrl_mb_setup_t *rec,
                          const int32_t **window)
{
    memcpy(rec, v->setup + *off, sizeof(*rec));
    *window = (const int32_t *)(const void *)(v->setup + *off + sizeof(*rec));
    *off += st_ctrl_mb_setup_size(rec->n_window);
}

static st_status_t check_setups(const uint8_t *p, uint32_t n_setup, uint32_t bytes,
                                const st_ctrl_mb_limits_t *lim, st_error_t *err)
{
    uint64_t off = 0;
    for (uint32_t i = 0; i < n_setup; i++) {
        st_ctrl_mb_setup_t rec;
        st_sampler_params_t sp;
        const char *badf = NULL;
        if (bytes - off < sizeof(rec))
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: setup %u truncated", i);
        memcpy(&rec, p + off, sizeof(rec));
        if (rec.slot >= lim->n_slots)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: setup %u: slot %u, this "
                                "stage has %u", i, rec.slot, lim->n_slots);
        if (rec.n_window > lim->n_ctx || bytes - off - sizeof(rec) < 4ull * rec.n_window)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: setup %u: window of %u "
                                "ids does not fit", i, rec.n_window);
        st_ctrl_mb_setup_params(&rec, &sp);
        if (st_sampler_check_params(&sp, &badf) != ST_OK)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: setup %u: sampling "
                                "parameter '%s' out of range", i, badf ? badf : "?");
        for (uint32_t k = 0; k < rec.n_window; k++) {
            int32_t id;
            memcpy(&id, p + off + sizeof(rec) + 4u * k, 4);
            if (id < 0 || (lim->n_vocab && (uint32_t)id >= lim->n_vocab))
                return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: setup %u: token id "
                                    "%d out of range", i, id);
        }
        off += st_ctrl_mb_setup_size(rec.n_window);
    }
    if (off != bytes)
        return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: setup records take %llu "
                            "bytes, header says %u", (unsigned long long)off, bytes);
    return ST_OK;
}

st_status_t st_ctrl_mb_parse(const void *frame, size_t len, const st_ctrl_mb_limits_t *lim,
                             st_ctrl_mb_view_t *out, st_error_t *err)
{
    const st_ctrl_mb_hdr_t *h = frame;
    const uint8_t *b = frame;
    st_ctrl_mb_layout_t l;
    st_ctrl_mb_view_t v;
    st_status_t st;

    if ((uintptr_t)frame % 8)
        return st_error_set(err, ST_ERR_INVALID, "micro-batch: frame buffer not 8-byte aligned");
    if (len < sizeof(*h))
        return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: %zu bytes, shorter than the "
                            "header", len);
    if (h->magic != ST_CTRL_MB_MAGIC || h->version != ST_CTRL_VERSION)
        return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: bad magic 0x%08x or version %u",
                            h->magic, h->version);
    if (h->epoch != lim->epoch)
        return st_error_set(err, ST_ERR_CANCELED, "micro-batch %llu: from plan epoch %u, "
                            "current is %u", (unsigned long long)h->mb_id, h->epoch, lim->epoch);
    if (h->kind != lim->kind)
        return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: kind %u, expected %u",
                            h->kind, lim->kind);
    if (h->n_stamps > ST_CTRL_MAX_STAGES || h->n_kvops > ST_KVOP_MAX ||
        (h->kind == ST_CTRL_MB_IDS && h->n_kvops))
        return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: n_stamps %u / prefix-cache "
                            "ops %u invalid", h->n_stamps, h->n_kvops);
    if (h->kind == ST_CTRL_MB_IDS) {
        if (h->n || h->n_setup || h->setup_bytes || h->n_embd)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: ids frame with tokens");
        if (h->status > 0 || h->status < ST_ERR_INTERNAL)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: status %d", h->status);
        if (h->n_ids > lim->max_ids || (h->status != ST_OK && h->n_ids))
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: %u ids, at most %u",
                                h->n_ids, lim->max_ids);
        if (h->text_len > ST_CTRL_TEXT_MAX || (h->status != ST_OK) != (h->text_len > 0))
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: error text of %u bytes "
                                "with status %d", h->text_len, h->status);
    } else {
        if (h->n == 0 || h->n > lim->max_batch)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: %u tokens, this stage "
                                "takes 1..%u", h->n, lim->max_batch);
        if (h->n_ids || h->status || h->text_len)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: token frame with ids");
        if (h->n_setup > lim->n_slots)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: %u slot setups for %u "
                                "slots", h->n_setup, lim->n_slots);
        if (h->kind == ST_CTRL_MB_HIDDEN ? h->n_embd != lim->n_embd : h->n_embd != 0)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: width %u, this model's "
                                "is %u", h->n_embd, lim->n_embd);
    }
    st = st_ctrl_mb_layout(h->kind, h->n, h->n_embd, h->setup_bytes, h->n_kvops, h->n_ids,
                           h->text_len, &l);
    if (st != ST_OK || l.total != len)
        return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: frame is %zu bytes, its "
                            "header describes %zu", len, st == ST_OK ? l.total : (size_t)0);
    memset(&v, 0, sizeof(v));
    v.hdr = h;
    v.layout = l;
    if (h->kind == ST_CTRL_MB_IDS) {
        v.ids = (const int32_t *)(const void *)(b + l.ids);
        for (uint32_t i = 0; i < h->n_ids; i++)
            if (v.ids[i] < 0 || (uint32_t)v.ids[i] >= lim->n_vocab)
                return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: sampled id %d out "
                                    "of range", v.ids[i]);
        if (h->text_len) {
            v.text = (const char *)(b + l.text);
            if (v.text[h->text_len - 1] != '\0')
                return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: error text not "
                                    "terminated");
        }
        *out = v;
        return ST_OK;
    }
    v.pos = (const int32_t *)(const void *)(b + l.pos);
    v.slot = (const int32_t *)(const void *)(b + l.slot);
    v.want = b + l.want;
    v.setup = b + l.setup;
    for (uint32_t i = 0; i < h->n; i++) {
        if (v.slot[i] < 0 || (uint32_t)v.slot[i] >= lim->n_slots)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: token %u: slot %d, this "
                                "stage has %u", i, v.slot[i], lim->n_slots);
        if (v.pos[i] < 0 || (uint32_t)v.pos[i] >= lim->n_ctx)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: token %u: position %d "
                                "outside the context of %u", i, v.pos[i], lim->n_ctx);
        if (v.want[i] > 1)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: token %u: want flag %u",
                                i, v.want[i]);
    }
    st = check_setups(v.setup, h->n_setup, h->setup_bytes, lim, err);
    if (st != ST_OK)
        return st;
    v.kvops = (const st_kvop_t *)(const void *)(b + l.kvops);
    for (uint32_t i = 0; i < h->n_kvops; i++) {
        const st_kvop_t *op = &v.kvops[i];
        if (op->kind < ST_KVOP_SAVE_PRE || op->kind > ST_KVOP_SAVE_POST ||
            op->slot >= lim->n_slots || op->pos >= lim->n_ctx || op->tag == 0)
            return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: prefix-cache op %u: kind "
                                "%u, slot %u, position %u invalid", i, op->kind, op->slot,
                                op->pos);
    }
    if (h->kind == ST_CTRL_MB_TOKENS) {
        v.tokens = (const int32_t *)(const void *)(b + l.tokens);
        for (uint32_t i = 0; i < h->n; i++)
            if (v.tokens[i] < 0 || (uint32_t)v.tokens[i] >= lim->n_vocab)
                return st_error_set(err, ST_ERR_PROTOCOL, "micro-batch: token %u: id %d "
                                    "outside the vocabulary of %u", i, v.tokens[i], lim->n_vocab);
    } else {
        v.hidden = (const float *)(const void *)(b + l.hidden);
    }
    *out = v;
    return ST_OK;
}
