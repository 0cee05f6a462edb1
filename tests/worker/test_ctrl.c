/*
 * test_ctrl.c - the control-plane codec, the micro-batch frames, the
 * authentication helpers and framed connections (worker/st_ctrl.h).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "st_ctrl.h"
#include "st_test.h"

static uint8_t frame[ST_CTRL_HDR_SIZE + ST_CTRL_MAX_PAYLOAD];

static size_t enc(const st_ctrl_msg_t *m)
{
    size_t len = 0;
    st_error_t err;
    if (st_ctrl_encode(m, frame, sizeof(frame), &len, &err) != ST_OK) {
        fprintf(stderr, "encode: %s\n", err.msg);
        return 0;
    }
    return len;
}

static st_ctrl_msg_t valid_plan(void)
{
    st_ctrl_msg_t m;
    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_PLAN;
    m.epoch = 3;
    m.u.plan.stage = 1;
    m.u.plan.n_stages = 2;
    m.u.plan.first_layer = 7;
    m.u.plan.last_layer = 30;
    m.u.plan.n_layer = 30;
    m.u.plan.n_ctx = 2048;
    m.u.plan.n_slots = 4;
    m.u.plan.max_batch = 256;
    m.u.plan.n_threads = 1;
    m.u.plan.kv_type = 8;   /* q8_0; the worker, not the decoder, judges the number */
    m.u.plan.flags = ST_CTRL_PLAN_VERIFY;
    m.u.plan.n_manifest = 210;
    m.u.plan.host_rank = 1;
    m.u.plan.host_workers = 2;
    m.u.plan.model_size = 123456789;
    snprintf(m.u.plan.model_path, sizeof(m.u.plan.model_path), "/models/m.gguf");
    snprintf(m.u.plan.transport_tls, sizeof(m.u.plan.transport_tls), "tcp");
    return m;
}

ST_TEST(roundtrip_every_type)
{
    st_ctrl_msg_t m, d;
    st_error_t err;

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_HELLO;
    snprintf(m.u.hello.name, sizeof(m.u.hello.name), "w0");
    snprintf(m.u.hello.host, sizeof(m.u.hello.host), "node1");
    for (int i = 0; i < ST_CTRL_NONCE; i++)
        m.u.hello.nonce[i] = (uint8_t)i;
    m.u.hello.mem_bytes = 1ull << 40;
    m.u.hello.n_cpus = 96;
    m.u.hello.pid = 4242;
    ST_REQUIRE(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_OK);
    ST_CHECK(d.type == ST_CTRL_HELLO && !strcmp(d.u.hello.name, "w0"));
    ST_CHECK(!strcmp(d.u.hello.host, "node1") && d.u.hello.mem_bytes == 1ull << 40);
    ST_CHECK(d.u.hello.n_cpus == 96 && d.u.hello.pid == 4242);
    ST_CHECK(!memcmp(d.u.hello.nonce, m.u.hello.nonce, ST_CTRL_NONCE));

    m = valid_plan();
    ST_REQUIRE(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_OK);
    ST_CHECK(d.epoch == 3 && d.u.plan.first_layer == 7 && d.u.plan.last_layer == 30);
    ST_CHECK(d.u.plan.n_manifest == 210 && d.u.plan.model_size == 123456789);
    ST_CHECK(!strcmp(d.u.plan.model_path, "/models/m.gguf"));
    ST_CHECK(!strcmp(d.u.plan.transport_tls, "tcp"));
    ST_CHECK(d.u.plan.kv_type == 8);
    ST_CHECK(d.u.plan.host_rank == 1 && d.u.plan.host_workers == 2);

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_MANIFEST;
    m.u.manifest.n = ST_CTRL_MANIFEST_BATCH;
    for (uint32_t i = 0; i < m.u.manifest.n; i++) {
        snprintf(m.u.manifest.e[i].name, sizeof(m.u.manifest.e[i].name), "blk.%u.ffn_up.weight", i);
        m.u.manifest.e[i].nbytes = i * 1000u + 1;
        memset(m.u.manifest.e[i].sha256, (int)i, 32);
    }
    ST_REQUIRE(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_OK);
    ST_CHECK(d.u.manifest.n == ST_CTRL_MANIFEST_BATCH);
    ST_CHECK(!strcmp(d.u.manifest.e[63].name, "blk.63.ffn_up.weight"));
    ST_CHECK(d.u.manifest.e[63].nbytes == 63001 && d.u.manifest.e[63].sha256[5] == 63);

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_LOADED;
    snprintf(m.u.loaded.data_addr, sizeof(m.u.loaded.data_addr), "10.0.0.2:13500");
    m.u.loaded.rss_bytes = 77;
    m.u.loaded.load_ns = 99;
    ST_REQUIRE(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_OK);
    ST_CHECK(!strcmp(d.u.loaded.data_addr, "10.0.0.2:13500") && d.u.loaded.rss_bytes == 77);

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_REFUSE;
    m.u.refuse.status = ST_ERR_AUTH;
    snprintf(m.u.refuse.text, sizeof(m.u.refuse.text), "wrong secret");
    ST_REQUIRE(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_OK);
    ST_CHECK(d.u.refuse.status == ST_ERR_AUTH && !strcmp(d.u.refuse.text, "wrong secret"));

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_HEARTBEAT;
    m.u.heartbeat.seq = 5;
    m.u.heartbeat.rss_peak_bytes = 1u << 30;
    ST_REQUIRE(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_OK);
    ST_CHECK(d.u.heartbeat.seq == 5 && d.u.heartbeat.rss_peak_bytes == 1u << 30);

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_DRAIN;
    ST_REQUIRE(enc(&m) == ST_CTRL_HDR_SIZE);
    ST_CHECK(st_ctrl_decode(frame, ST_CTRL_HDR_SIZE, &d, &err) == ST_OK && d.type == ST_CTRL_DRAIN);

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_WELCOME;
    m.u.welcome.worker_id = 9;
    m.u.welcome.heartbeat_ms = 500;
    ST_REQUIRE(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_OK);
    ST_CHECK(d.u.welcome.worker_id == 9 && d.u.welcome.heartbeat_ms == 500);
}

ST_TEST(header_is_checked)
{
    st_ctrl_msg_t m, d;
    st_error_t err;
    size_t len;

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_HEARTBEAT;
    len = enc(&m);
    frame[0] ^= 1;                                       /* magic */
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "magic") != NULL);
    frame[0] ^= 1;
    frame[4] = ST_CTRL_VERSION + 1;                      /* version */
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "version") != NULL);
    frame[4] = ST_CTRL_VERSION;
    frame[6] = 0;                                        /* type 0 */
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    frame[6] = 200;                                      /* unknown type */
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "unknown message type 200") != NULL);
    frame[6] = ST_CTRL_HEARTBEAT;
    frame[8] = 0xff; frame[9] = 0xff; frame[10] = 0xff; frame[11] = 0x7f;  /* length */
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "over the limit") != NULL);
}

ST_TEST(lengths_must_be_exact)
{
    st_ctrl_msg_t m = valid_plan(), d;
    st_error_t err;
    size_t len = enc(&m);
    uint8_t *copy = malloc(len + 8);

    ST_REQUIRE(len > ST_CTRL_HDR_SIZE && copy);
    /* Every truncation is refused, none reads past the end (ASan). */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *b = malloc(cut ? cut : 1);
        memcpy(b, frame, cut);
        ST_CHECK(st_ctrl_decode(b, cut, &d, &err) != ST_OK);
        free(b);
    }
    /* Declared length shorter than the fields: truncated payload. */
    memcpy(copy, frame, len);
    copy[8] = (uint8_t)(copy[8] - 1);
    ST_CHECK(st_ctrl_decode(copy, len - 1, &d, &err) == ST_ERR_PROTOCOL);
    /* Extra bytes after the last field. */
    memcpy(copy, frame, len);
    copy[len] = 0;
    copy[8] = (uint8_t)(copy[8] + 1);
    ST_CHECK(st_ctrl_decode(copy, len + 1, &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "unexpected bytes") != NULL);
    free(copy);
}

ST_TEST(plan_fields_are_validated)
{
    st_ctrl_msg_t m, d;
    st_error_t err;

    m = valid_plan();
    m.u.plan.first_layer = 30;            /* empty range */
    /* The encoder does not check ranges (the decoder is the gate), so
     * build the frame and check that the receiver refuses it. */
    ST_REQUIRE(enc(&m) > 0);
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "first_layer") != NULL);

    m = valid_plan();
    m.u.plan.last_layer = 31;             /* beyond n_layer */
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "last_layer") != NULL);

    m = valid_plan();
    m.u.plan.stage = 0;                   /* stage 0 must start at layer 0 */
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);

    m = valid_plan();
    m.u.plan.last_layer = 29;             /* the last stage must end at n_layer */
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);

    m = valid_plan();
    m.u.plan.n_slots = 0;
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "n_slots") != NULL);

    m = valid_plan();
    m.u.plan.flags = 0x80;
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);

    m = valid_plan();
    m.u.plan.host_rank = 2;               /* of 2 workers: 0..1 */
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);

    /* Strings: non-printable bytes and empty required ones are refused by
     * the encoder too (we never send what we would not accept). */
    m = valid_plan();
    m.u.plan.model_path[3] = '\n';
    ST_CHECK(st_ctrl_encode(&m, frame, sizeof(frame), &(size_t){0}, &err) == ST_ERR_INVALID);
    m = valid_plan();
    m.u.plan.model_path[0] = '\0';
    ST_CHECK(st_ctrl_encode(&m, frame, sizeof(frame), &(size_t){0}, &err) == ST_ERR_INVALID);
}

ST_TEST(strings_from_the_wire_are_checked)
{
    st_ctrl_msg_t m, d;
    st_error_t err;
    size_t len;

    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_CONNECT;
    snprintf(m.u.connect.next_addr, sizeof(m.u.connect.next_addr), "10.0.0.3:1");
    len = enc(&m);
    frame[ST_CTRL_HDR_SIZE + 2 + 4] = 0x07;       /* a control byte inside */
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "non-printable") != NULL);
    /* A string length larger than the field. */
    len = enc(&m);
    frame[ST_CTRL_HDR_SIZE] = 0xff;
    frame[ST_CTRL_HDR_SIZE + 1] = 0xff;
    ST_CHECK(st_ctrl_decode(frame, len, &d, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "limit") != NULL);

    /* Status fields must be statuses. */
    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_READY;
    m.u.ready.status = -1000;
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);
    /* LOADED ok without an address is refused. */
    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_LOADED;
    ST_CHECK(st_ctrl_decode(frame, enc(&m), &d, &err) == ST_ERR_PROTOCOL);
    /* MANIFEST with zero entries. */
    memset(&m, 0, sizeof(m));
    m.type = ST_CTRL_MANIFEST;
    ST_CHECK(st_ctrl_encode(&m, frame, sizeof(frame), &len, &err) == ST_ERR_INVALID);
}

/* ---- micro-batch frames ------------------------------------------------ */

static uint64_t mbuf[65536];

static size_t build_tokens(uint32_t n, int with_setup)
{
    st_ctrl_mb_layout_t l;
    st_ctrl_mb_hdr_t *h = (st_ctrl_mb_hdr_t *)mbuf;
    uint8_t *b = (uint8_t *)mbuf;
    uint32_t sb = with_setup ? st_ctrl_mb_setup_size(3) : 0;
    st_sampler_params_t sp = st_sampler_default_params();
    int32_t win[3] = {1, 2, 3};

    if (st_ctrl_mb_layout(ST_CTRL_MB_TOKENS, n, 0, sb, 0, 0, 0, &l) != ST_OK)
        return 0;
    memset(mbuf, 0, l.total);
    h->magic = ST_CTRL_MB_MAGIC;
    h->version = ST_CTRL_VERSION;
    h->kind = ST_CTRL_MB_TOKENS;
    h->epoch = 2;
    h->n = n;
    h->n_setup = with_setup ? 1 : 0;
    h->setup_bytes = sb;
    h->mb_id = 77;
    for (uint32_t i = 0; i < n; i++) {
        ((int32_t *)(void *)(b + l.pos))[i] = (int32_t)i;
        ((int32_t *)(void *)(b + l.slot))[i] = (int32_t)(i % 2);
        ((int32_t *)(void *)(b + l.tokens))[i] = (int32_t)(100 + i);
        b[l.want + i] = i + 1 == n;
    }
    if (with_setup) {
        sp.temperature = 0.7f;
        sp.seed = 42;
        st_ctrl_mb_setup_put(b + l.setup, 1, &sp, win, 3);
    }
    return l.total;
}

static const st_ctrl_mb_limits_t tok_lim = {
    .kind = ST_CTRL_MB_TOKENS, .epoch = 2, .max_batch = 64, .n_slots = 2, .n_ctx = 128,
    .n_embd = 8, .n_vocab = 1000, .max_ids = 2};

ST_TEST(mb_frame_roundtrip)
{
    st_ctrl_mb_view_t v;
    st_error_t err;
    size_t len = build_tokens(5, 1), off = 0;
    st_ctrl_mb_setup_t rec;
    st_sampler_params_t sp;
    const int32_t *win;

    ST_REQUIRE(len > 0);
    ST_REQUIRE(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_OK);
    ST_CHECK(v.hdr->n == 5 && v.tokens[4] == 104 && v.pos[3] == 3 && v.slot[1] == 1);
    ST_CHECK(v.want[4] == 1 && v.want[0] == 0);
    st_ctrl_mb_setup_get(&v, &off, &rec, &win);
    st_ctrl_mb_setup_params(&rec, &sp);
    ST_CHECK(rec.slot == 1 && rec.n_window == 3 && win[2] == 3);
    ST_CHECK(sp.seed == 42 && sp.temperature == 0.7f);
    ST_CHECK(off == v.hdr->setup_bytes);
}

ST_TEST(mb_frame_is_validated)
{
    st_ctrl_mb_layout_t l;
    st_ctrl_mb_view_t v;
    st_error_t err;
    st_ctrl_mb_limits_t lim = tok_lim;
    size_t len;

    ST_REQUIRE(st_ctrl_mb_layout(ST_CTRL_MB_TOKENS, 5, 0, st_ctrl_mb_setup_size(3), 0, 0, 0, &l) == ST_OK);
#define FRESH() (len = build_tokens(5, 1))
    FRESH();
    ST_CHECK(st_ctrl_mb_parse(mbuf, len - 8, &lim, &v, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(st_ctrl_mb_parse(mbuf, len + 8, &lim, &v, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(st_ctrl_mb_parse((uint8_t *)mbuf + 4, len, &lim, &v, &err) == ST_ERR_INVALID);
    ((int32_t *)(void *)((uint8_t *)mbuf + l.slot))[2] = 2;   /* slot beyond n_slots */
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "slot 2") != NULL);
    FRESH();
    ((int32_t *)(void *)((uint8_t *)mbuf + l.pos))[0] = 128;  /* position beyond n_ctx */
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
    FRESH();
    ((int32_t *)(void *)((uint8_t *)mbuf + l.pos))[0] = -1;
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
    FRESH();
    ((int32_t *)(void *)((uint8_t *)mbuf + l.tokens))[1] = 1000;  /* outside the vocabulary */
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
    FRESH();
    ((uint8_t *)mbuf)[l.want] = 2;
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
    FRESH();
    {   /* a setup record with an out-of-range temperature */
        st_ctrl_mb_setup_t rec;
        memcpy(&rec, (uint8_t *)mbuf + l.setup, sizeof(rec));
        rec.temperature = -1.0f;
        memcpy((uint8_t *)mbuf + l.setup, &rec, sizeof(rec));
        ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
        ST_CHECK(strstr(err.msg, "sampling") != NULL);
        rec.temperature = 0.5f;
        rec.slot = 5;
        memcpy((uint8_t *)mbuf + l.setup, &rec, sizeof(rec));
        ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
        rec.slot = 0;
        rec.n_window = 100000;
        memcpy((uint8_t *)mbuf + l.setup, &rec, sizeof(rec));
        ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
    }
    FRESH();
    lim.epoch = 3;                                       /* stale frame */
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_CANCELED);
    lim = tok_lim;
    lim.kind = ST_CTRL_MB_HIDDEN;                        /* wrong kind for this stage */
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
    lim = tok_lim;
    lim.max_batch = 4;                                   /* batch larger than the stage's */
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &lim, &v, &err) == ST_ERR_PROTOCOL);
    /* Sizes that would overflow are refused before anything is read. */
    FRESH();
    ((st_ctrl_mb_hdr_t *)mbuf)->setup_bytes = 0xffffffffu;
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_ERR_PROTOCOL);
#undef FRESH
}

ST_TEST(mb_ids_frame)
{
    st_ctrl_mb_layout_t l;
    st_ctrl_mb_hdr_t *h = (st_ctrl_mb_hdr_t *)mbuf;
    st_ctrl_mb_limits_t lim = tok_lim;
    st_ctrl_mb_view_t v;
    st_error_t err;
    static const char text[] = "stage 1 (w1): out of memory";

    lim.kind = ST_CTRL_MB_IDS;
    ST_REQUIRE(st_ctrl_mb_layout(ST_CTRL_MB_IDS, 0, 0, 0, 0, 2, 0, &l) == ST_OK);
    memset(mbuf, 0, l.total);
    h->magic = ST_CTRL_MB_MAGIC;
    h->version = ST_CTRL_VERSION;
    h->kind = ST_CTRL_MB_IDS;
    h->epoch = 2;
    h->n_ids = 2;
    ((int32_t *)(void *)((uint8_t *)mbuf + l.ids))[0] = 5;
    ((int32_t *)(void *)((uint8_t *)mbuf + l.ids))[1] = 999;
    ST_CHECK(st_ctrl_mb_parse(mbuf, l.total, &lim, &v, &err) == ST_OK && v.ids[1] == 999);
    ((int32_t *)(void *)((uint8_t *)mbuf + l.ids))[1] = 1000;
    ST_CHECK(st_ctrl_mb_parse(mbuf, l.total, &lim, &v, &err) == ST_ERR_PROTOCOL);
    h->n_ids = 3;                                        /* more than max_ids */
    ST_CHECK(st_ctrl_mb_parse(mbuf, l.total, &lim, &v, &err) == ST_ERR_PROTOCOL);

    ST_REQUIRE(st_ctrl_mb_layout(ST_CTRL_MB_IDS, 0, 0, 0, 0, 0, sizeof(text), &l) == ST_OK);
    memset(mbuf, 0, l.total);
    h->magic = ST_CTRL_MB_MAGIC;
    h->version = ST_CTRL_VERSION;
    h->kind = ST_CTRL_MB_IDS;
    h->epoch = 2;
    h->status = ST_ERR_NOMEM;
    h->text_len = sizeof(text);
    memcpy((uint8_t *)mbuf + l.text, text, sizeof(text));
    ST_CHECK(st_ctrl_mb_parse(mbuf, l.total, &lim, &v, &err) == ST_OK);
    ST_CHECK(v.text && !strcmp(v.text, text));
    ((uint8_t *)mbuf)[l.text + sizeof(text) - 1] = 'x';  /* not terminated */
    ST_CHECK(st_ctrl_mb_parse(mbuf, l.total, &lim, &v, &err) == ST_ERR_PROTOCOL);
}

/* ---- prefix-cache ops in micro-batch frames ------------------------------ */

/* A TOKENS frame of n tokens (as build_tokens, no setups) carrying the
 * n_ops ops; *lo gets its layout. */
static size_t build_tokens_ops(uint32_t n, const st_kvop_t *ops, uint32_t n_ops,
                               st_ctrl_mb_layout_t *lo)
{
    st_ctrl_mb_layout_t l;
    st_ctrl_mb_hdr_t *h = (st_ctrl_mb_hdr_t *)mbuf;
    uint8_t *b = (uint8_t *)mbuf;

    if (st_ctrl_mb_layout(ST_CTRL_MB_TOKENS, n, 0, 0, n_ops, 0, 0, &l) != ST_OK ||
        l.total > sizeof(mbuf))
        return 0;
    memset(mbuf, 0, l.total);
    h->magic = ST_CTRL_MB_MAGIC;
    h->version = ST_CTRL_VERSION;
    h->kind = ST_CTRL_MB_TOKENS;
    h->epoch = 2;
    h->n = n;
    h->n_kvops = n_ops;
    h->mb_id = 78;
    for (uint32_t i = 0; i < n; i++) {
        ((int32_t *)(void *)(b + l.pos))[i] = (int32_t)i;
        ((int32_t *)(void *)(b + l.slot))[i] = (int32_t)(i % 2);
        ((int32_t *)(void *)(b + l.tokens))[i] = (int32_t)(100 + i);
        b[l.want + i] = i + 1 == n;
    }
    if (n_ops)
        memcpy(b + l.kvops, ops, sizeof(st_kvop_t) * n_ops);
    *lo = l;
    return l.total;
}

static const st_kvop_t three_ops[3] = {
    {.kind = ST_KVOP_LOAD, .slot = 0, .pos = 0, .block = 3, .tag = 0x1122334455667788ull},
    {.kind = ST_KVOP_SAVE_PRE, .slot = 1, .pos = 16, .block = 0, .tag = 7},
    {.kind = ST_KVOP_SAVE_POST, .slot = 1, .pos = 127, .block = 9, .tag = UINT64_MAX}};

ST_TEST(mb_frame_carries_kvops)
{
    st_ctrl_mb_layout_t l, l0;
    st_ctrl_mb_view_t v;
    st_error_t err;
    size_t len = build_tokens_ops(5, three_ops, 3, &l);

    ST_REQUIRE(len > 0);
    /* The ops take 3 x 24 bytes, 8-aligned, between the setups and the tokens. */
    ST_REQUIRE(st_ctrl_mb_layout(ST_CTRL_MB_TOKENS, 5, 0, 0, 0, 0, 0, &l0) == ST_OK);
    ST_CHECK(l.kvops % 8 == 0 && l.kvops >= l.setup);
    ST_CHECK(l.tokens >= l.kvops + 3 * sizeof(st_kvop_t));
    ST_CHECK(l.total == l0.total + 3 * sizeof(st_kvop_t));
    ST_REQUIRE(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_OK);
    ST_CHECK(v.hdr->n_kvops == 3);
    ST_CHECK(v.kvops == (const st_kvop_t *)(const void *)((uint8_t *)mbuf + l.kvops));
    ST_CHECK(memcmp(v.kvops, three_ops, sizeof(three_ops)) == 0);
    ST_CHECK(v.kvops[0].kind == ST_KVOP_LOAD && v.kvops[0].block == 3 &&
             v.kvops[0].tag == 0x1122334455667788ull);
    ST_CHECK(v.kvops[2].kind == ST_KVOP_SAVE_POST && v.kvops[2].pos == 127 &&
             v.kvops[2].tag == UINT64_MAX);
    /* The rest of the frame is where it should be. */
    ST_CHECK(v.tokens[0] == 100 && v.tokens[4] == 104 && v.pos[4] == 4 && v.want[4] == 1);

    /* ST_KVOP_MAX ops is the most a frame carries. */
    {
        static st_kvop_t many[ST_KVOP_MAX + 1];
        for (uint32_t i = 0; i <= ST_KVOP_MAX; i++)
            many[i] = (st_kvop_t){.kind = ST_KVOP_SAVE_PRE, .slot = i % 2, .pos = 0,
                                  .block = i, .tag = i + 1};
        len = build_tokens_ops(5, many, ST_KVOP_MAX, &l);
        ST_REQUIRE(len > 0);
        ST_CHECK(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_OK);
        ST_CHECK(v.hdr->n_kvops == ST_KVOP_MAX && v.kvops[ST_KVOP_MAX - 1].tag == ST_KVOP_MAX);
        len = build_tokens_ops(5, many, ST_KVOP_MAX + 1, &l);
        ST_REQUIRE(len > 0);
        ST_CHECK(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_ERR_PROTOCOL);
        ST_CHECK(strstr(err.msg, "prefix-cache") != NULL);
    }

    /* A HIDDEN frame carries them too, its rows still 64-byte aligned. */
    {
        st_ctrl_mb_hdr_t *h = (st_ctrl_mb_hdr_t *)mbuf;
        st_ctrl_mb_limits_t lim = tok_lim;
        lim.kind = ST_CTRL_MB_HIDDEN;
        ST_REQUIRE(st_ctrl_mb_layout(ST_CTRL_MB_HIDDEN, 2, 8, 0, 1, 0, 0, &l) == ST_OK);
        ST_CHECK(l.hidden % 64 == 0 && l.hidden >= l.kvops + sizeof(st_kvop_t));
        memset(mbuf, 0, l.total);
        h->magic = ST_CTRL_MB_MAGIC;
        h->version = ST_CTRL_VERSION;
        h->kind = ST_CTRL_MB_HIDDEN;
        h->epoch = 2;
        h->n = 2;
        h->n_embd = 8;
        h->n_kvops = 1;
        ((int32_t *)(void *)((uint8_t *)mbuf + l.pos))[1] = 1;
        memcpy((uint8_t *)mbuf + l.kvops, &three_ops[1], sizeof(st_kvop_t));
        ST_CHECK(st_ctrl_mb_parse(mbuf, l.total, &lim, &v, &err) == ST_OK);
        ST_CHECK(v.hdr->n_kvops == 1 && memcmp(v.kvops, &three_ops[1], sizeof(st_kvop_t)) == 0);
        ST_CHECK((const uint8_t *)v.hidden == (uint8_t *)mbuf + l.hidden);
    }
}

ST_TEST(mb_kvops_are_validated)
{
    st_ctrl_mb_layout_t l;
    st_ctrl_mb_view_t v;
    st_error_t err;
    st_kvop_t ops[3];
    size_t len;

    /* One bad field in op 1 at a time; each refused, naming the op. */
    for (int c = 0; c < 6; c++) {
        memcpy(ops, three_ops, sizeof(ops));
        switch (c) {
        case 0: ops[1].kind = 0; break;
        case 1: ops[1].kind = ST_KVOP_SAVE_POST + 1; break;      /* 4 */
        case 2: ops[1].slot = tok_lim.n_slots; break;
        case 3: ops[1].pos = tok_lim.n_ctx; break;
        case 4: ops[1].tag = 0; break;
        case 5: ops[1].kind = 0xffffffffu; break;
        }
        len = build_tokens_ops(5, ops, 3, &l);
        ST_REQUIRE(len > 0);
        ST_CHECK_MSG(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_ERR_PROTOCOL,
                     "case %d", c);
        ST_CHECK_MSG(strstr(err.msg, "prefix-cache op 1") != NULL, "case %d: %s", c, err.msg);
    }
    /* The largest slot and position are fine. */
    memcpy(ops, three_ops, sizeof(ops));
    ops[1].slot = tok_lim.n_slots - 1;
    ops[1].pos = tok_lim.n_ctx - 1;
    len = build_tokens_ops(5, ops, 3, &l);
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_OK);

    /* The frame's length must be that of n_kvops ops: one op short, or one
     * too many, is refused. */
    len = build_tokens_ops(5, three_ops, 2, &l);
    ST_REQUIRE(len > 0);
    ((st_ctrl_mb_hdr_t *)mbuf)->n_kvops = 3;
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_ERR_PROTOCOL);
    ST_CHECK(strstr(err.msg, "header describes") != NULL);
    len = build_tokens_ops(5, three_ops, 3, &l);
    ST_REQUIRE(len > 0);
    ((st_ctrl_mb_hdr_t *)mbuf)->n_kvops = 2;
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_ERR_PROTOCOL);
    ((st_ctrl_mb_hdr_t *)mbuf)->n_kvops = 3;
    ST_CHECK(st_ctrl_mb_parse(mbuf, len - sizeof(st_kvop_t), &tok_lim, &v, &err) ==
             ST_ERR_PROTOCOL);
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_OK);
    /* A huge count is refused before any length arithmetic. */
    ((st_ctrl_mb_hdr_t *)mbuf)->n_kvops = 0xffffffffu;
    ST_CHECK(st_ctrl_mb_parse(mbuf, len, &tok_lim, &v, &err) == ST_ERR_PROTOCOL);

    /* An IDS frame carries no ops. */
    {
        st_ctrl_mb_hdr_t *h = (st_ctrl_mb_hdr_t *)mbuf;
        st_ctrl_mb_limits_t lim = tok_lim;
        lim.kind = ST_CTRL_MB_IDS;
        ST_REQUIRE(st_ctrl_mb_layout(ST_CTRL_MB_IDS, 0, 0, 0, 0, 1, 0, &l) == ST_OK);
        memset(mbuf, 0, l.total);
        h->magic = ST_CTRL_MB_MAGIC;
        h->version = ST_CTRL_VERSION;
        h->kind = ST_CTRL_MB_IDS;
        h->epoch = 2;
        h->n_ids = 1;
        ((int32_t *)(void *)((uint8_t *)mbuf + l.ids))[0] = 5;
        ST_CHECK(st_ctrl_mb_parse(mbuf, l.total, &lim, &v, &err) == ST_OK);
        h->n_kvops = 1;
        ST_CHECK(st_ctrl_mb_parse(mbuf, l.total, &lim, &v, &err) == ST_ERR_PROTOCOL);
        ST_CHECK(strstr(err.msg, "prefix-cache") != NULL);
    }
}

/* ---- authentication ---------------------------------------------------- */

ST_TEST(proofs_bind_secret_nonces_and_name)
{
    const uint8_t s1[] = "0123456789abcdef-secret", s2[] = "0123456789abcdef-secreT";
    uint8_t a[ST_CTRL_NONCE], b[ST_CTRL_NONCE], m1[ST_CTRL_MAC], m2[ST_CTRL_MAC];

    ST_REQUIRE(st_ctrl_random(a, sizeof(a)) == ST_OK);
    ST_REQUIRE(st_ctrl_random(b, sizeof(b)) == ST_OK);
    ST_CHECK(memcmp(a, b, sizeof(a)) != 0);
    st_ctrl_proof(s1, sizeof(s1) - 1, "strata-worker", a, b, "w0", m1);
    st_ctrl_proof(s1, sizeof(s1) - 1, "strata-worker", a, b, "w0", m2);
    ST_CHECK(st_ctrl_mac_equal(m1, m2));
    st_ctrl_proof(s2, sizeof(s2) - 1, "strata-worker", a, b, "w0", m2);
    ST_CHECK(!st_ctrl_mac_equal(m1, m2));
    st_ctrl_proof(s1, sizeof(s1) - 1, "strata-worker", b, a, "w0", m2);
    ST_CHECK(!st_ctrl_mac_equal(m1, m2));
    st_ctrl_proof(s1, sizeof(s1) - 1, "strata-worker", a, b, "w1", m2);
    ST_CHECK(!st_ctrl_mac_equal(m1, m2));
    st_ctrl_proof(s1, sizeof(s1) - 1, "strata-coord", a, b, "w0", m2);
    ST_CHECK(!st_ctrl_mac_equal(m1, m2));
    /* A zero MAC (what a failed HMAC leaves) never matches. */
    memset(m1, 0, sizeof(m1));
    memset(m2, 0, sizeof(m2));
    ST_CHECK(!st_ctrl_mac_equal(m1, m2));
}

ST_TEST(sha256_known_answer)
{
    uint8_t out[32];
    /* SHA-256("abc"), FIPS 180-2 appendix B.1. */
    static const uint8_t want[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
        0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
        0xf2, 0x00, 0x15, 0xad};
    char path[] = "/tmp/st_ctrl_sha_XXXXXX";
    int fd = mkstemp(path);

    st_ctrl_sha256("abc", 3, out);
    ST_CHECK(!memcmp(out, want, 32));
    ST_REQUIRE(fd >= 0);
    ST_REQUIRE(write(fd, "xxabcyy", 7) == 7);
    memset(out, 0, sizeof(out));
    ST_CHECK(st_ctrl_sha256_file(fd, 2, 3, out) == ST_OK && !memcmp(out, want, 32));
    ST_CHECK(st_ctrl_sha256_file(fd, 5, 10, out) == ST_ERR_IO);   /* past the end */
    close(fd);
    unlink(path);
}

ST_TEST(secret_loading)
{
    char path[] = "/tmp/st_ctrl_secret_XXXXXX";
    uint8_t s[ST_CTRL_SECRET_MAX];
    size_t n = 0;
    st_error_t err;
    int fd = mkstemp(path);

    ST_REQUIRE(fd >= 0);
    ST_REQUIRE(write(fd, "correct horse battery staple\n", 29) == 29);
    close(fd);
    ST_CHECK(st_ctrl_secret_load(path, s, sizeof(s), &n, &err) == ST_OK);
    ST_CHECK(n == 28 && !memcmp(s, "correct horse battery staple", 28));
    fd = open(path, O_WRONLY | O_TRUNC);
    ST_REQUIRE(fd >= 0);
    ST_REQUIRE(write(fd, "short\n", 6) == 6);
    close(fd);
    ST_CHECK(st_ctrl_secret_load(path, s, sizeof(s), &n, &err) == ST_ERR_AUTH);
    ST_CHECK(strstr(err.msg, "at least") != NULL);
    unlink(path);
    ST_CHECK(st_ctrl_secret_load(path, s, sizeof(s), &n, &err) == ST_ERR_IO);
    setenv("STRATA_CLUSTER_SECRET", "environment-secret-0123", 1);
    ST_CHECK(st_ctrl_secret_load(NULL, s, sizeof(s), &n, &err) == ST_OK && n == 23);
    unsetenv("STRATA_CLUSTER_SECRET");
    ST_CHECK(st_ctrl_secret_load(NULL, s, sizeof(s), &n, &err) == ST_ERR_AUTH);
}

/* ---- connections --------------------------------------------------------- */

ST_TEST(conn_roundtrip_and_partial_frames)
{
    int sv[2];
    st_ctrl_conn_t *a, *b;
    st_ctrl_msg_t m, d;
    st_error_t err;
    size_t len;

    ST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    ST_REQUIRE(st_ctrl_conn_open(sv[0], &a) == ST_OK);
    ST_REQUIRE(st_ctrl_conn_open(sv[1], &b) == ST_OK);
    m = valid_plan();
    ST_CHECK(st_ctrl_conn_send(a, &m, 1000, &err) == ST_OK);
    ST_CHECK(st_ctrl_conn_recv(b, 1000, &d, &err) == ST_OK);
    ST_CHECK(d.type == ST_CTRL_PLAN && d.u.plan.last_layer == 30);
    ST_CHECK(st_ctrl_conn_recv(b, 0, &d, &err) == ST_ERR_TIMEOUT);

    /* A frame that arrives in pieces is only returned once complete. */
    len = enc(&m);
    ST_REQUIRE(write(sv[0], frame, 10) == 10);
    ST_CHECK(st_ctrl_conn_recv(b, 20, &d, &err) == ST_ERR_TIMEOUT);
    ST_REQUIRE(write(sv[0], frame + 10, len - 10) == (ssize_t)(len - 10));
    ST_CHECK(st_ctrl_conn_recv(b, 1000, &d, &err) == ST_OK && d.type == ST_CTRL_PLAN);

    /* A hostile header is refused as soon as it is complete. */
    memset(frame, 0x41, 32);
    ST_REQUIRE(write(sv[0], frame, 32) == 32);
    ST_CHECK(st_ctrl_conn_recv(b, 1000, &d, &err) == ST_ERR_PROTOCOL);

    /* ...and stays refused: the caller must close such a connection. */
    ST_CHECK(st_ctrl_conn_recv(b, 0, &d, &err) == ST_ERR_PROTOCOL);
    st_ctrl_conn_close(a);
    st_ctrl_conn_close(b);

    /* An orderly close of the peer is reported as such. */
    ST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    ST_REQUIRE(st_ctrl_conn_open(sv[1], &b) == ST_OK);
    close(sv[0]);
    ST_CHECK(st_ctrl_conn_recv(b, 1000, &d, &err) == ST_ERR_CLOSED);
    st_ctrl_conn_close(b);
}

ST_TEST(addresses)
{
    char host[64], buf[64];
    uint16_t port;
    st_error_t err;
    int fd, cfd;

    ST_CHECK(st_ctrl_parse_addr("10.1.2.3:7700", host, sizeof(host), &port, &err) == ST_OK);
    ST_CHECK(!strcmp(host, "10.1.2.3") && port == 7700);
    ST_CHECK(st_ctrl_parse_addr("[::1]:80", host, sizeof(host), &port, &err) == ST_OK);
    ST_CHECK(!strcmp(host, "::1") && port == 80);
    ST_CHECK(st_ctrl_parse_addr("nohost", host, sizeof(host), &port, &err) == ST_ERR_INVALID);
    ST_CHECK(st_ctrl_parse_addr("h:99999", host, sizeof(host), &port, &err) == ST_ERR_INVALID);
    ST_CHECK(st_ctrl_parse_addr("h:", host, sizeof(host), &port, &err) == ST_ERR_INVALID);
    ST_REQUIRE(st_ctrl_listen("127.0.0.1:0", &fd, &err) == ST_OK);
    ST_REQUIRE(st_ctrl_local_addr(fd, buf, sizeof(buf)) == ST_OK);
    ST_CHECK(!strncmp(buf, "127.0.0.1:", 10) && strcmp(buf, "127.0.0.1:0") != 0);
    ST_CHECK(st_ctrl_connect(buf, 1000, &cfd, &err) == ST_OK);
    close(cfd);
    close(fd);
    /* Nothing listens there any more: refused until the deadline. */
    ST_CHECK(st_ctrl_connect(buf, 150, &cfd, &err) == ST_ERR_PEER);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    return st_test_main();
}
