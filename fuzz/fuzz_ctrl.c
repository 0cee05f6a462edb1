/*
 * fuzz_ctrl.c - libFuzzer harness for everything the cluster reads from the
 * network: control-plane frames (st_ctrl_decode, and the header check a
 * connection applies first) and data-plane micro-batch frames
 * (st_ctrl_mb_parse, for each kind a receiver expects).
 *
 *   CC=clang cmake -DSTRATA_FUZZ=ON ... && ./fuzz_ctrl fuzz/corpus/ctrl
 *
 * tests/worker/test_ctrl_fuzz.c links this file and replays the corpus plus
 * random and mutated frames in every normal build.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "st_ctrl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t kinds[3] = {ST_CTRL_MB_TOKENS, ST_CTRL_MB_HIDDEN, ST_CTRL_MB_IDS};
    st_ctrl_msg_t *m = malloc(sizeof(*m));
    uint64_t *aligned;
    st_error_t err;

    if (!m)
        return 0;
    if (size >= ST_CTRL_HDR_SIZE) {
        uint32_t type, plen, epoch;
        (void)st_ctrl_decode_header(data, ST_CTRL_HDR_SIZE, &type, &plen, &epoch, &err);
    }
    (void)st_ctrl_decode(data, size, m, &err);
    free(m);

    /* Micro-batch frames are parsed in place from 8-byte aligned buffers. */
    aligned = malloc(size + 8);
    if (!aligned)
        return 0;
    memcpy(aligned, data, size);
    for (int k = 0; k < 3; k++) {
        st_ctrl_mb_limits_t lim = {.kind = kinds[k], .epoch = 1, .max_batch = 64, .n_slots = 4,
                                   .n_ctx = 256, .n_embd = 16, .n_vocab = 1000, .max_ids = 4};
        st_ctrl_mb_view_t v;
        if (size >= sizeof(st_ctrl_mb_hdr_t))
            lim.epoch = ((const st_ctrl_mb_hdr_t *)(const void *)aligned)->epoch;
        if (st_ctrl_mb_parse(aligned, size, &lim, &v, &err) == ST_OK) {
            /* Touch everything a stage would read. */
            volatile uint32_t acc = 0;
            size_t off = 0;
            for (uint32_t i = 0; v.pos && i < v.hdr->n; i++)
                acc += (uint32_t)v.pos[i] + (uint32_t)v.slot[i] + v.want[i];
            for (uint32_t i = 0; v.tokens && i < v.hdr->n; i++)
                acc += (uint32_t)v.tokens[i];
            for (uint32_t i = 0; v.hidden && i < v.hdr->n * v.hdr->n_embd; i++)
                acc += (uint32_t)(v.hidden[i] != 0.0f);
            for (uint32_t i = 0; i < v.hdr->n_setup; i++) {
                st_ctrl_mb_setup_t rec;
                const int32_t *win;
                st_ctrl_mb_setup_get(&v, &off, &rec, &win);
                for (uint32_t j = 0; j < rec.n_window; j++)
                    acc += (uint32_t)win[j];
            }
            (void)acc;
        }
    }
    free(aligned);
    return 0;
}
