/*
 * ctrl.c - encoding and validating decoding of control-plane messages
 * (see st_ctrl.h). The decoder is the only code that reads control bytes
 * from the network, so it is strict: exact payload lengths, bounded and
 * printable strings, every count and range against the protocol limits.
 */
#include "st_ctrl.h"

#include <stdio.h>
#include <string.h>

#include "st_util.h"

const char *st_ctrl_type_name(uint32_t type)
{
    static const char *const names[ST_CTRL_TYPE_MAX_] = {
        "?", "HELLO", "CHALLENGE", "AUTH", "WELCOME", "REFUSE", "PLAN", "MANIFEST",
        "LOADED", "CONNECT", "READY", "HEARTBEAT", "DRAIN", "LEAVE", "SHARD_REQUEST",
        "SHARD_DATA", "SHARD_END",
    };
    return type >= 1 && type < ST_CTRL_TYPE_MAX_ ? names[type] : "unknown";
}

/* ---- writer ---------------------------------------------------------- */

typedef struct wr {
    uint8_t *p;
    size_t   len, cap;
    int      overflow;
} wr_t;

static void put(wr_t *w, const void *src, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = 1;
        return;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_u16(wr_t *w, uint16_t v) { uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; put(w, b, 2); }
static void put_u32(wr_t *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, 4);
}
static void put_u64(wr_t *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, 8);
}
static void put_str(wr_t *w, const char *s)
{
    size_t n = strnlen(s, 0xffff);
    put_u16(w, (uint16_t)n);
    put(w, s, n);
}

/* ---- reader ---------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t         len, off;
    st_error_t    *err;
    const char    *msg;      /* message name for errors */
    st_status_t    st;
} rd_t;

static int need(rd_t *r, size_t n, const char *field)
{
    if (r->st != ST_OK)
        return 0;
    if (r->len - r->off < n) {
        r->st = st_error_set(r->err, ST_ERR_PROTOCOL, "control %s: truncated at field '%s' "
                             "(offset %zu, %zu bytes left)", r->msg, field, r->off,
                             r->len - r->off);
        return 0;
    }
    return 1;
}

static uint16_t get_u16(rd_t *r, const char *f)
{
    uint16_t v = 0;
    if (need(r, 2, f)) {
        v = (uint16_t)(r->p[r->off] | r->p[r->off + 1] << 8);
        r->off += 2;
    }
    return v;
}

static uint32_t get_u32(rd_t *r, const char *f)
{
    uint32_t v = 0;
    if (need(r, 4, f)) {
        for (int i = 3; i >= 0; i--)
            v = v << 8 | r->p[r->off + (size_t)i];
        r->off += 4;
    }
    return v;
}

static uint64_t get_u64(rd_t *r, const char *f)
{
    uint64_t v = 0;
    if (need(r, 8, f)) {
        for (int i = 7; i >= 0; i--)
            v = v << 8 | r->p[r->off + (size_t)i];
        r->off += 8;
    }
    return v;
}

static void get_bytes(rd_t *r, void *dst, size_t n, const char *f)
{
    if (need(r, n, f)) {
        memcpy(dst, r->p + r->off, n);
        r->off += n;
    }
}

/* A string of at most cap-1 printable ASCII bytes; `nonempty` refuses "". */
static void get_str(rd_t *r, char *dst, size_t cap, int nonempty, const char *f)
{
    uint16_t n = get_u16(r, f);
    dst[0] = '\0';
    if (r->st != ST_OK)
        return;
    if (n >= cap) {
        r->st = st_error_set(r->err, ST_ERR_PROTOCOL, "control %s: field '%s' is %u bytes, "
                             "limit %zu", r->msg, f, n, cap - 1);
        return;
    }
    if (nonempty && n == 0) {
        r->st = st_error_set(r->err, ST_ERR_PROTOCOL, "control %s: field '%s' is empty",
                             r->msg, f);
        return;
    }
    if (!need(r, n, f))
        return;
    for (uint16_t i = 0; i < n; i++) {
        uint8_t c = r->p[r->off + i];
        if (c < 0x20 || c > 0x7e) {
            r->st = st_error_set(r->err, ST_ERR_PROTOCOL, "control %s: field '%s' has a "
                                 "non-printable byte 0x%02x at %u", r->msg, f, c, i);
            return;
        }
    }
    memcpy(dst, r->p + r->off, n);
    dst[n] = '\0';
    r->off += n;
}

static void bad(rd_t *r, const char *field, uint64_t v, const char *why)
{
    if (r->st == ST_OK)
        r->st = st_error_set(r->err, ST_ERR_PROTOCOL, "control %s: field '%s' = %llu %s",
                             r->msg, field, (unsigned long long)v, why);
}

/* ---- encoding --------------------------------------------------------- */

static int str_ok(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n >= cap)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

static st_status_t encode_payload(const st_ctrl_msg_t *m, wr_t *w, st_error_t *err)
{
    const char *bad_field = NULL;

    switch (m->type) {
    case ST_CTRL_HELLO: {
        const st_ctrl_hello_t *h = &m->u.hello;
        if (!str_ok(h->name, sizeof(h->name)) || !h->name[0]) bad_field = "name";
        else if (!str_ok(h->host, sizeof(h->host))) bad_field = "host";
        put_str(w, h->name);
        put_str(w, h->host);
        put(w, h->nonce, ST_CTRL_NONCE);
        put_u64(w, h->mem_bytes);
        put_u32(w, h->n_cpus);
        put_u32(w, h->pid);
        break;
    }
    case ST_CTRL_CHALLENGE:
        put(w, m->u.challenge.nonce, ST_CTRL_NONCE);
        put(w, m->u.challenge.proof, ST_CTRL_MAC);
        break;
    case ST_CTRL_AUTH:
        put(w, m->u.auth.mac, ST_CTRL_MAC);
        break;
    case ST_CTRL_WELCOME:
        put_u32(w, m->u.welcome.worker_id);
        put_u32(w, m->u.welcome.heartbeat_ms);
        break;
    case ST_CTRL_REFUSE:
    case ST_CTRL_LEAVE: {
        const st_ctrl_text_t *t = m->type == ST_CTRL_REFUSE ? &m->u.refuse : &m->u.leave;
        if (!str_ok(t->text, sizeof(t->text))) bad_field = "text";
        put_u32(w, (uint32_t)t->status);
        put_str(w, t->text);
        break;
    }
    case ST_CTRL_PLAN: {
        const st_ctrl_plan_t *p = &m->u.plan;
        if (!str_ok(p->model_path, sizeof(p->model_path)) || !p->model_path[0]) bad_field = "model_path";
        else if (!str_ok(p->transport_tls, sizeof(p->transport_tls))) bad_field = "transport_tls";
        put_u32(w, p->stage);
        put_u32(w, p->n_stages);
        put_u32(w, p->first_layer);
        put_u32(w, p->last_layer);
        put_u32(w, p->n_layer);
        put_u32(w, p->n_ctx);
        put_u32(w, p->n_slots);
        put_u32(w, p->max_batch);
        put_u32(w, (uint32_t)p->n_threads);
        put_u32(w, p->kv_type);
        put_u32(w, p->prefix_blocks);
        put_u32(w, p->prefix_block);
        put_u32(w, p->flags);
        put_u32(w, p->n_manifest);
        put_u32(w, p->host_rank);
        put_u32(w, p->host_workers);
        put_u64(w, p->model_size);
        put_str(w, p->model_path);
        put_str(w, p->transport_tls);
        break;
    }
    case ST_CTRL_MANIFEST: {
        const st_ctrl_manifest_t *mf = &m->u.manifest;
        if (mf->n == 0 || mf->n > ST_CTRL_MANIFEST_BATCH) {
            bad_field = "n";
            break;
        }
        put_u32(w, mf->n);
        for (uint32_t i = 0; i < mf->n; i++) {
            if (!str_ok(mf->e[i].name, sizeof(mf->e[i].name)) || !mf->e[i].name[0])
                bad_field = "tensor name";
            put_str(w, mf->e[i].name);
            put_u64(w, mf->e[i].nbytes);
            put(w, mf->e[i].sha256, 32);
        }
        break;
    }
    case ST_CTRL_LOADED: {
        const st_ctrl_loaded_t *l = &m->u.loaded;
        if (!str_ok(l->data_addr, sizeof(l->data_addr))) bad_field = "data_addr";
        else if (!str_ok(l->error, sizeof(l->error))) bad_field = "error";
        put_u32(w, (uint32_t)l->status);
        put_str(w, l->data_addr);
        put_u64(w, l->rss_bytes);
        put_u64(w, l->weight_bytes);
        put_u64(w, l->kv_bytes);
        put_u64(w, l->load_ns);
        put_str(w, l->error);
        break;
    }
    case ST_CTRL_CONNECT:
        if (!str_ok(m->u.connect.next_addr, sizeof(m->u.connect.next_addr)) ||
            !m->u.connect.next_addr[0])
            bad_field = "next_addr";
        put_str(w, m->u.connect.next_addr);
        break;
    case ST_CTRL_READY:
        if (!str_ok(m->u.ready.error, sizeof(m->u.ready.error))) bad_field = "error";
        put_u32(w, (uint32_t)m->u.ready.status);
        put_str(w, m->u.ready.error);
        break;
    case ST_CTRL_HEARTBEAT: {
        const st_ctrl_heartbeat_t *h = &m->u.heartbeat;
        put_u64(w, h->seq);
        put_u64(w, h->rss_bytes);
        put_u64(w, h->rss_peak_bytes);
        put_u64(w, h->batches);
        put_u64(w, h->busy_ns);
        break;
    }
    case ST_CTRL_DRAIN:
        break;
    case ST_CTRL_SHARD_REQUEST: {
        const st_ctrl_shard_request_t *q = &m->u.shard_request;
        if (q->header > 1 || (q->header ? q->n != 0 : (q->n == 0 ||
                                                        q->n > ST_CTRL_SHARD_MAX_RANGES))) {
            bad_field = "n";
            break;
        }
        put_u32(w, q->header);
        put_u32(w, q->n);
        for (uint32_t i = 0; i < q->n; i++) {
            put_u64(w, q->r[i].offset);
            put_u64(w, q->r[i].len);
        }
        break;
    }
    case ST_CTRL_SHARD_DATA: {
        const st_ctrl_shard_data_t *d = &m->u.shard_data;
        if (d->len == 0 || d->len > ST_CTRL_SHARD_CHUNK || !d->data) {
            bad_field = "len";
            break;
        }
        put_u64(w, d->offset);
        put_u32(w, d->len);
        put(w, d->data, d->len);
        break;
    }
    case ST_CTRL_SHARD_END:
        if (!str_ok(m->u.shard_end.error, sizeof(m->u.shard_end.error))) bad_field = "error";
        put_u32(w, (uint32_t)m->u.shard_end.status);
        put_u64(w, m->u.shard_end.total);
        put_str(w, m->u.shard_end.error);
        break;
    default:
        return st_error_set(err, ST_ERR_INVALID, "control: cannot encode message type %u",
                            (unsigned)m->type);
    }
    if (bad_field)
        return st_error_set(err, ST_ERR_INVALID, "control %s: field '%s' is outside the "
                            "protocol's limits", st_ctrl_type_name(m->type), bad_field);
    return ST_OK;
}

st_status_t st_ctrl_encode(const st_ctrl_msg_t *m, uint8_t *buf, size_t cap, size_t *len,
                           st_error_t *err)
{
    wr_t w = {.p = buf, .cap = cap};
    size_t plen;
    st_status_t st;

    put_u32(&w, ST_CTRL_MAGIC);
    put_u16(&w, ST_CTRL_VERSION);
    put_u16(&w, (uint16_t)m->type);
    put_u32(&w, 0);              /* length, patched below */
    put_u32(&w, m->epoch);
    st = encode_payload(m, &w, err);
    if (st != ST_OK)
        return st;
    if (w.overflow)
        return st_error_set(err, ST_ERR_RANGE, "control %s: does not fit %zu bytes",
                            st_ctrl_type_name(m->type), cap);
    plen = w.len - ST_CTRL_HDR_SIZE;
    if (plen > ST_CTRL_MAX_PAYLOAD)
        return st_error_set(err, ST_ERR_RANGE, "control %s: payload %zu over the limit",
                            st_ctrl_type_name(m->type), plen);
    for (int i = 0; i < 4; i++)
        buf[8 + i] = (uint8_t)(plen >> (8 * i));
    *len = w.len;
    return ST_OK;
}

/* ---- decoding --------------------------------------------------------- */

st_status_t st_ctrl_decode_header(const uint8_t *hdr, size_t len, uint32_t *type,
                                  uint32_t *payload_len, uint32_t *epoch, st_error_t *err)
{
    rd_t r = {.p = hdr, .len = len, .err = err, .msg = "header"};
    uint32_t magic = get_u32(&r, "magic");
    uint16_t version = get_u16(&r, "version");
    uint16_t t = get_u16(&r, "type");
    uint32_t plen = get_u32(&r, "length");
    uint32_t ep = get_u32(&r, "epoch");

    if (r.st != ST_OK)
        return r.st;
    if (magic != ST_CTRL_MAGIC)
        return st_error_set(err, ST_ERR_PROTOCOL, "control header: bad magic 0x%08x "
                            "(not a strata control connection)", magic);
    if (version != ST_CTRL_VERSION)
        return st_error_set(err, ST_ERR_PROTOCOL, "control header: protocol version %u, "
                            "this build speaks %u", version, ST_CTRL_VERSION);
    if (t < 1 || t >= ST_CTRL_TYPE_MAX_)
        return st_error_set(err, ST_ERR_PROTOCOL, "control header: unknown message type %u", t);
    if (plen > ST_CTRL_MAX_PAYLOAD)
        return st_error_set(err, ST_ERR_PROTOCOL, "control header: %s payload length %u "
                            "over the limit %u", st_ctrl_type_name(t), plen,
                            ST_CTRL_MAX_PAYLOAD);
    *type = t;
    *payload_len = plen;
    *epoch = ep;
    return ST_OK;
}

static void check_range_u32(rd_t *r, const char *f, uint32_t v, uint32_t lo, uint32_t hi)
{
    if (v < lo || v > hi) {
        char why[64];
        snprintf(why, sizeof(why), "outside %u..%u", lo, hi);
        bad(r, f, v, why);
    }
}

st_status_t st_ctrl_decode(const uint8_t *frame, size_t len, st_ctrl_msg_t *m, st_error_t *err)
{
    uint32_t type, plen, epoch;
    rd_t r;
    st_status_t st = st_ctrl_decode_header(frame, len, &type, &plen, &epoch, err);

    if (st != ST_OK)
        return st;
    if (len != (size_t)ST_CTRL_HDR_SIZE + plen)
        return st_error_set(err, ST_ERR_PROTOCOL, "control %s: frame is %zu bytes, header "
                            "says %u", st_ctrl_type_name(type), len, ST_CTRL_HDR_SIZE + plen);
    memset(m, 0, sizeof(*m));
    m->type = (st_ctrl_type_t)type;
    m->epoch = epoch;
    r = (rd_t){.p = frame + ST_CTRL_HDR_SIZE, .len = plen, .err = err,
               .msg = st_ctrl_type_name(type)};

    switch (type) {
    case ST_CTRL_HELLO: {
        st_ctrl_hello_t *h = &m->u.hello;
        get_str(&r, h->name, sizeof(h->name), 1, "name");
        get_str(&r, h->host, sizeof(h->host), 0, "host");
        get_bytes(&r, h->nonce, ST_CTRL_NONCE, "nonce");
        h->mem_bytes = get_u64(&r, "mem_bytes");
        h->n_cpus = get_u32(&r, "n_cpus");
        h->pid = get_u32(&r, "pid");
        if (r.st == ST_OK)
            check_range_u32(&r, "n_cpus", h->n_cpus, 1, 1u << 20);
        break;
    }
    case ST_CTRL_CHALLENGE:
        get_bytes(&r, m->u.challenge.nonce, ST_CTRL_NONCE, "nonce");
        get_bytes(&r, m->u.challenge.proof, ST_CTRL_MAC, "proof");
        break;
    case ST_CTRL_AUTH:
        get_bytes(&r, m->u.auth.mac, ST_CTRL_MAC, "mac");
        break;
    case ST_CTRL_WELCOME:
        m->u.welcome.worker_id = get_u32(&r, "worker_id");
        m->u.welcome.heartbeat_ms = get_u32(&r, "heartbeat_ms");
        if (r.st == ST_OK)
            check_range_u32(&r, "heartbeat_ms", m->u.welcome.heartbeat_ms, 10, 600000);
        break;
    case ST_CTRL_REFUSE:
    case ST_CTRL_LEAVE: {
        st_ctrl_text_t *t = type == ST_CTRL_REFUSE ? &m->u.refuse : &m->u.leave;
        t->status = (int32_t)get_u32(&r, "status");
        get_str(&r, t->text, sizeof(t->text), 0, "text");
        if (r.st == ST_OK && (t->status > ST_INPROGRESS || t->status < ST_ERR_INTERNAL))
            bad(&r, "status", (uint32_t)t->status, "is not a status");
        break;
    }
    case ST_CTRL_PLAN: {
        st_ctrl_plan_t *p = &m->u.plan;
        p->stage = get_u32(&r, "stage");
        p->n_stages = get_u32(&r, "n_stages");
        p->first_layer = get_u32(&r, "first_layer");
        p->last_layer = get_u32(&r, "last_layer");
        p->n_layer = get_u32(&r, "n_layer");
        p->n_ctx = get_u32(&r, "n_ctx");
        p->n_slots = get_u32(&r, "n_slots");
        p->max_batch = get_u32(&r, "max_batch");
        p->n_threads = (int32_t)get_u32(&r, "n_threads");
        p->kv_type = get_u32(&r, "kv_type");
        p->prefix_blocks = get_u32(&r, "prefix_blocks");
        p->prefix_block = get_u32(&r, "prefix_block");
        p->flags = get_u32(&r, "flags");
        p->n_manifest = get_u32(&r, "n_manifest");
        p->host_rank = get_u32(&r, "host_rank");
        p->host_workers = get_u32(&r, "host_workers");
        p->model_size = get_u64(&r, "model_size");
        get_str(&r, p->model_path, sizeof(p->model_path), 1, "model_path");
        get_str(&r, p->transport_tls, sizeof(p->transport_tls), 0, "transport_tls");
        if (r.st != ST_OK)
            break;
        check_range_u32(&r, "n_stages", p->n_stages, 1, ST_CTRL_MAX_STAGES);
        check_range_u32(&r, "stage", p->stage, 0, p->n_stages - 1);
        check_range_u32(&r, "n_layer", p->n_layer, 1, ST_CTRL_MAX_LAYERS);
        check_range_u32(&r, "first_layer", p->first_layer, 0, p->n_layer - 1);
        check_range_u32(&r, "last_layer", p->last_layer, p->first_layer + 1, p->n_layer);
        check_range_u32(&r, "n_ctx", p->n_ctx, 1, ST_CTRL_MAX_CTX);
        check_range_u32(&r, "n_slots", p->n_slots, 1, ST_CTRL_MAX_SLOTS);
        check_range_u32(&r, "max_batch", p->max_batch, 1, ST_CTRL_MAX_BATCH);
        check_range_u32(&r, "n_threads", (uint32_t)(p->n_threads < 0 ? 0 : p->n_threads), 0, 4096);
        check_range_u32(&r, "n_manifest", p->n_manifest, 0, 64u * ST_CTRL_MAX_LAYERS);
        check_range_u32(&r, "host_workers", p->host_workers, 1, p->n_stages);
        check_range_u32(&r, "host_rank", p->host_rank, 0, p->host_workers - 1);
        if (p->flags & ~(uint32_t)(ST_CTRL_PLAN_VERIFY | ST_CTRL_PLAN_BIND))
            bad(&r, "flags", p->flags, "has unknown bits");
        if (r.st == ST_OK && (p->stage == 0) != (p->first_layer == 0))
            bad(&r, "first_layer", p->first_layer, "does not match the stage (only stage 0 "
                "starts at layer 0)");
        if (r.st == ST_OK && (p->stage == p->n_stages - 1) != (p->last_layer == p->n_layer))
            bad(&r, "last_layer", p->last_layer, "does not match the stage (only the last "
                "stage ends at n_layer)");
        break;
    }
    case ST_CTRL_MANIFEST: {
        st_ctrl_manifest_t *mf = &m->u.manifest;
        mf->n = get_u32(&r, "n");
        if (r.st == ST_OK)
            check_range_u32(&r, "n", mf->n, 1, ST_CTRL_MANIFEST_BATCH);
        for (uint32_t i = 0; r.st == ST_OK && i < mf->n; i++) {
            get_str(&r, mf->e[i].name, sizeof(mf->e[i].name), 1, "tensor name");
            mf->e[i].nbytes = get_u64(&r, "nbytes");
            get_bytes(&r, mf->e[i].sha256, 32, "sha256");
        }
        break;
    }
    case ST_CTRL_LOADED: {
        st_ctrl_loaded_t *l = &m->u.loaded;
        l->status = (int32_t)get_u32(&r, "status");
        get_str(&r, l->data_addr, sizeof(l->data_addr), 0, "data_addr");
        l->rss_bytes = get_u64(&r, "rss_bytes");
        l->weight_bytes = get_u64(&r, "weight_bytes");
        l->kv_bytes = get_u64(&r, "kv_bytes");
        l->load_ns = get_u64(&r, "load_ns");
        get_str(&r, l->error, sizeof(l->error), 0, "error");
        if (r.st == ST_OK && (l->status > ST_INPROGRESS || l->status < ST_ERR_INTERNAL))
            bad(&r, "status", (uint32_t)l->status, "is not a status");
        if (r.st == ST_OK && l->status == ST_OK && !l->data_addr[0])
            bad(&r, "data_addr", 0, "is empty although loading succeeded");
        break;
    }
    case ST_CTRL_CONNECT:
        get_str(&r, m->u.connect.next_addr, sizeof(m->u.connect.next_addr), 1, "next_addr");
        break;
    case ST_CTRL_READY:
        m->u.ready.status = (int32_t)get_u32(&r, "status");
        get_str(&r, m->u.ready.error, sizeof(m->u.ready.error), 0, "error");
        if (r.st == ST_OK && (m->u.ready.status > ST_INPROGRESS ||
                              m->u.ready.status < ST_ERR_INTERNAL))
            bad(&r, "status", (uint32_t)m->u.ready.status, "is not a status");
        break;
    case ST_CTRL_HEARTBEAT: {
        st_ctrl_heartbeat_t *h = &m->u.heartbeat;
        h->seq = get_u64(&r, "seq");
        h->rss_bytes = get_u64(&r, "rss_bytes");
        h->rss_peak_bytes = get_u64(&r, "rss_peak_bytes");
        h->batches = get_u64(&r, "batches");
        h->busy_ns = get_u64(&r, "busy_ns");
        break;
    }
    case ST_CTRL_DRAIN:
        break;
    case ST_CTRL_SHARD_REQUEST: {
        st_ctrl_shard_request_t *q = &m->u.shard_request;
        q->header = get_u32(&r, "header");
        q->n = get_u32(&r, "n");
        if (r.st == ST_OK) {
            check_range_u32(&r, "header", q->header, 0, 1);
            if (q->header)
                check_range_u32(&r, "n", q->n, 0, 0);
            else
                check_range_u32(&r, "n", q->n, 1, ST_CTRL_SHARD_MAX_RANGES);
        }
        for (uint32_t i = 0; r.st == ST_OK && i < q->n; i++) {
            q->r[i].offset = get_u64(&r, "offset");
            q->r[i].len = get_u64(&r, "len");
        }
        break;
    }
    case ST_CTRL_SHARD_DATA: {
        st_ctrl_shard_data_t *d = &m->u.shard_data;
        d->offset = get_u64(&r, "offset");
        d->len = get_u32(&r, "len");
        if (r.st == ST_OK)
            check_range_u32(&r, "len", d->len, 1, ST_CTRL_SHARD_CHUNK);
        if (r.st == ST_OK && d->offset > UINT64_MAX - d->len)
            bad(&r, "offset", 0, "overflows with len");
        if (need(&r, d->len, "data")) {
            d->data = r.p + r.off;
            r.off += d->len;
        }
        break;
    }
    case ST_CTRL_SHARD_END: {
        st_ctrl_shard_end_t *e = &m->u.shard_end;
        e->status = (int32_t)get_u32(&r, "status");
        e->total = get_u64(&r, "total");
        get_str(&r, e->error, sizeof(e->error), 0, "error");
        if (r.st == ST_OK && (e->status > ST_INPROGRESS || e->status < ST_ERR_INTERNAL))
            bad(&r, "status", (uint32_t)e->status, "is not a status");
        break;
    }
    default:
        return st_error_set(err, ST_ERR_PROTOCOL, "control: unknown message type %u", type);
    }
    if (r.st != ST_OK)
        return r.st;
    if (r.off != r.len)
        return st_error_set(err, ST_ERR_PROTOCOL, "control %s: %zu unexpected bytes after "
                            "the last field", st_ctrl_type_name(type), r.len - r.off);
    return ST_OK;
}
