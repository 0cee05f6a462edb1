/*
 * st_stage.h - the stage executor: runs layers [first, last) of a model for
 * a batch of tokens from several sequences.
 *
 * One stage holding every layer is the single-process engine; the cluster
 * runs one stage per worker and passes the hidden state between them. The
 * executor is the same in both cases.
 *
 *   st_stage_params_t p = st_stage_default_params(model);
 *   p.n_ctx = 2048; p.n_slots = 4; p.n_threads = 2;
 *   st_stage_t *s; st_stage_create(&p, &s, &err);
 *   st_stage_slot_setup(s, 0, &sampler_params);      // last stage samples
 *   st_stage_batch_t b = { .n = n, .tokens = ids, .pos = pos, .slot = slot,
 *                          .want = want };           // want[i]: logits for token i
 *   st_stage_forward(s, &b, &out, &err);              // hidden, logits or ids
 *
 * Each token carries its own position and KV slot, so one batch may mix the
 * prefill chunk of one sequence with decode steps of others (continuous
 * batching). Tokens of one sequence must appear in position order; attention
 * of token i covers positions 0..pos[i] of its slot, including the tokens
 * of this batch (their K/V are stored before attention runs).
 *
 * The first stage (first == 0) takes token ids and embeds them; others take
 * the previous stage's hidden state (n x n_embd floats). A stage that is not
 * last returns its hidden state; the last stage (last == n_layer) applies
 * the output norm and head to the tokens flagged in `want` and returns their
 * logits, or, with ST_STAGE_SAMPLE, samples each with its slot's sampler and
 * returns only token ids (what travels back to the coordinator).
 *
 * Everything in a batch is validated (n, positions, slots, token ids) with
 * real checks, since in the cluster it arrives from the network. Nothing is
 * allocated per call.
 */
#ifndef ST_STAGE_H
#define ST_STAGE_H

#include <stdint.h>

#include "st_error.h"
#include "st_kernels.h"
#include "st_model.h"
#include "st_sampler.h"
#include "st_status.h"

typedef struct st_stage st_stage_t;

typedef struct st_stage_params {
    uint32_t          size;         /* sizeof(st_stage_params_t) */
    const st_model_t *model;
    uint32_t          first_layer;  /* inclusive */
    uint32_t          last_layer;   /* exclusive; n_layer for the last stage */
    uint32_t          n_ctx;        /* KV capacity per slot, in tokens */
    uint32_t          n_slots;      /* concurrent sequences */
    uint32_t          max_batch;    /* most tokens per forward call */
    uint32_t          max_out;      /* most logits rows per call (last stage) */
    const char       *backend;      /* "cpu" (default) or "cuda" */
    int               n_threads;    /* CPU threads; <= 0: all cores */
    int               device;       /* GPU ordinal for device backends */
    uint32_t          kv_type;      /* KV cache elements: ST_DTYPE_F32, F16 (default) or
                                       Q8_0; a backend without it refuses at create */
    uint32_t          prefix_blocks; /* prefix cache: blocks of KV rows this stage keeps
                                       for its layers (0: none; see st_kvop_t) */
    uint32_t          prefix_block;  /* tokens per block (ST_PREFIX_BLOCK by default) */
} st_stage_params_t;

/* Prefix reuse (docs/CLUSTER.md, "Prefix reuse"). A stage keeps a pool of
 * `prefix_blocks` blocks, each the K/V rows of `prefix_block` consecutive
 * positions for every layer it holds, in host memory. Whoever schedules
 * (the engine) owns the index: which token blocks a pool block holds, and
 * a 64-bit tag naming that content; the stage only copies rows between a
 * slot and the pool as told, and refuses a load whose tag is not the one
 * it last saved there (a pool wiped by a restart, an engine out of step),
 * so stale rows are never attended to. Ops run in array order: PRE ops
 * (SAVE_PRE, LOAD) before the batch's forward, SAVE_POST after it, so one
 * micro-batch can save the rows it computed and load rows for another
 * sequence, and a save of a finished sequence's rows runs before a new
 * sequence in that slot overwrites them. */
#define ST_PREFIX_BLOCK 32u
#define ST_KVOP_MAX     1024u   /* ops per batch (and per micro-batch frame) */

typedef enum st_kvop_kind {
    ST_KVOP_SAVE_PRE  = 1,   /* slot rows [pos, pos + block) -> pool block, before forward */
    ST_KVOP_LOAD      = 2,   /* pool block -> slot rows, before forward */
    ST_KVOP_SAVE_POST = 3    /* as SAVE_PRE, after the forward computed the rows */
} st_kvop_kind_t;

typedef struct st_kvop {     /* 24 bytes, also on the wire (st_ctrl.h) */
    uint32_t kind;           /* st_kvop_kind_t */
    uint32_t slot;
    uint32_t pos;            /* first position, a multiple of prefix_block */
    uint32_t block;          /* pool block, < prefix_blocks */
    uint64_t tag;            /* content name, nonzero; a LOAD must match the last SAVE */
} st_kvop_t;

enum {
    ST_STAGE_SAMPLE = 1u << 0   /* last stage: return sampled ids, not logits */
};

typedef struct st_stage_batch {
    uint32_t       n;        /* tokens in this batch, 1..max_batch */
    const int32_t *tokens;   /* first stage: token ids [n] */
    const float   *hidden;   /* other stages: [n][n_embd] (host memory) */
    const int32_t *pos;      /* [n] position of each token in its sequence */
    const int32_t *slot;     /* [n] KV slot of each token's sequence */
    const uint8_t *want;     /* last stage: 1 where logits/sample are wanted;
                                NULL means only the last token of the batch */
    unsigned       flags;    /* ST_STAGE_SAMPLE */
    uint32_t       n_kvops;  /* prefix-cache copies around the forward (<= ST_KVOP_MAX) */
    const st_kvop_t *kvops;
} st_stage_batch_t;

typedef struct st_stage_out {
    float   *hidden;    /* not-last stage: [n][n_embd], caller's host memory */
    float   *logits;    /* last stage: [n_out][n_vocab], caller's host memory */
    int32_t *ids;       /* last stage with ST_STAGE_SAMPLE: [n_out] */
    uint32_t n_out;     /* written: rows of logits / ids */
} st_stage_out_t;

st_stage_params_t st_stage_default_params(const st_model_t *model);
st_status_t st_stage_create(const st_stage_params_t *p, st_stage_t **out, st_error_t *err);
void        st_stage_free(st_stage_t *s);

st_status_t st_stage_forward(st_stage_t *s, const st_stage_batch_t *b, st_stage_out_t *out,
                             st_error_t *err);

/* Sampling parameters of a slot's sequence (last stage). Resets its
 * repetition history and seeds its random stream. */
st_status_t st_stage_slot_setup(st_stage_t *s, uint32_t slot, const st_sampler_params_t *p);
/* Tell the slot's sampler about tokens already in the sequence (prompt), for
 * the repetition penalty. */
void        st_stage_slot_accept(st_stage_t *s, uint32_t slot, const int32_t *ids, uint32_t n);

int          st_stage_is_first(const st_stage_t *s);
int          st_stage_is_last(const st_stage_t *s);
uint32_t     st_stage_n_embd(const st_stage_t *s);
uint32_t     st_stage_n_vocab(const st_stage_t *s);
const char  *st_stage_describe(const st_stage_t *s);   /* backend, threads, layers */
/* Bytes of weights this stage reads per forward pass (layers + embedding
 * rows + output head when last): the decode benchmark's bytes per token. */
uint64_t     st_stage_weight_bytes(const st_stage_t *s);
/* Bytes of KV cache allocated (n_slots * n_ctx * layers * K and V row bytes of kv_type). */
uint64_t     st_stage_kv_bytes(const st_stage_t *s);
/* Blocks of `block` tokens a prefix-cache budget of `bytes` holds for the
 * whole model (every layer's K and V rows of kv_type): what each stage of
 * a pipeline is given, for its own layers. 0 when none fits. */
uint32_t     st_stage_prefix_blocks_for(const st_model_t *m, uint32_t kv_type, uint64_t bytes,
                                        uint32_t block);
/* Bytes of the prefix-cache pool (host memory, touched as blocks fill). */
uint64_t     st_stage_prefix_bytes(const st_stage_t *s);

#endif /* ST_STAGE_H */
