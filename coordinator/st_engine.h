/*
 * st_engine.h - the serving engine: requests in, token streams out.
 *
 *   st_engine_params_t p = st_engine_default_params();
 *   p.model_path = "m.gguf"; p.n_slots = 8; p.n_threads = 2;
 *   st_engine_t *e; st_engine_create(&p, &e, &err);
 *   st_gen_request_t r = st_gen_request_default();
 *   r.prompt = "Hello"; r.max_tokens = 32;
 *   st_engine_submit(e, &r, on_event, ctx, &id, &err);  // on_event runs on the engine thread
 *   ...
 *   st_engine_free(e);
 *
 * The engine owns a scheduler thread doing continuous batching over a
 * pipeline (st_pipeline.h): new requests join the running batch between
 * steps, finished ones leave, long prompts are prefilled in chunks of at most
 * `prefill_chunk` tokens per step so running decodes are not stalled, and up
 * to the pipeline's depth micro-batches are kept in flight. Without a
 * pipeline in the params, the engine builds the local one (one in-process
 * stage with every layer).
 *
 * Requests are tokenized in st_engine_submit, on the caller's thread, so
 * that bad requests fail there with a precise message: a prompt that with
 * max_tokens does not fit the context (ST_ERR_RANGE, both counts named), a
 * full queue (ST_ERR_BUSY), invalid sampling parameters (ST_ERR_RANGE naming
 * the field). Events report new text as complete UTF-8 only; stop strings
 * are matched across token boundaries and never emitted.
 */
#ifndef ST_ENGINE_H
#define ST_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "st_chat.h"
#include "st_error.h"
#include "st_model.h"
#include "st_pipeline.h"
#include "st_sampler.h"
#include "st_status.h"
#include "st_tokenizer.h"

typedef struct st_engine st_engine_t;

typedef struct st_engine_params {
    uint32_t       size;           /* sizeof(st_engine_params_t) */
    const char    *model_path;
    uint32_t       n_ctx;          /* tokens per sequence (prompt + completion) */
    uint32_t       n_slots;        /* sequences decoded concurrently */
    uint32_t       max_batch;      /* tokens per micro-batch */
    uint32_t       prefill_chunk;  /* most prompt tokens of one sequence per step */
    uint32_t       max_queue;      /* waiting requests before ST_ERR_BUSY */
    int            n_threads;      /* local pipeline: CPU threads */
    const char    *backend;        /* local pipeline: "cpu" or "cuda" */
    st_pipeline_t *pipeline;       /* NULL: build the local pipeline. The engine
                                      takes ownership and destroys it, also
                                      when st_engine_create fails. */
    int            prefetch_progress; /* show model loading progress on stderr */
    const char    *key_file;       /* key of an encrypted model (st_crypt.h); NULL: none */
    uint32_t       kv_type;        /* local pipeline: KV cache elements (ST_DTYPE_F32, F16
                                      (default), Q8_0); a cluster takes its own */
    uint64_t       prefix_cache_bytes; /* local pipeline: prefix-cache pool (0: no reuse);
                                      a cluster sizes its own (st_cluster_params_t) */
} st_engine_params_t;

#define ST_GEN_MAX_STOP 8

typedef struct st_gen_request {
    uint32_t             size;        /* sizeof(st_gen_request_t) */
    const char          *prompt;      /* raw completion prompt, or */
    const st_chat_msg_t *messages;    /* chat messages (template applied) */
    size_t               n_messages;
    uint32_t             max_tokens;  /* >= 1 */
    st_sampler_params_t  sampling;
    const char          *stop[ST_GEN_MAX_STOP]; /* stop strings (NULL-terminated list) */
    int                  ignore_eos;
} st_gen_request_t;

typedef enum st_gen_event_type {
    ST_GEN_TOKEN = 1,   /* new text */
    ST_GEN_DONE  = 2,   /* finished: last event of a request */
} st_gen_event_type_t;

typedef struct st_gen_event {
    st_gen_event_type_t type;
    uint64_t    request_id;
    const char *text;            /* TOKEN: new complete UTF-8 text (may be "") */
    size_t      len;
    int32_t     token_id;        /* TOKEN: the token that produced it */
    const char *finish_reason;   /* DONE: "stop", "length", "cancelled", "error" */
    st_status_t status;          /* DONE: ST_OK or the error */
    const char *error;           /* DONE with an error: one line */
    uint32_t    prompt_tokens;
    uint32_t    completion_tokens;
    uint64_t    queued_ns;       /* DONE: submit -> admitted */
    uint64_t    ttft_ns;         /* DONE: submit -> first token */
    uint64_t    total_ns;        /* DONE: submit -> done */
} st_gen_event_t;

/* Called on the engine's scheduler thread; must not block. */
typedef void (*st_gen_cb_t)(void *user, const st_gen_event_t *ev);

typedef struct st_engine_stats {
    uint32_t queued;             /* waiting for a slot */
    uint32_t running;            /* sequences holding a slot */
    uint32_t n_slots;
    uint64_t requests_done;
    uint64_t prompt_tokens;      /* totals since start */
    uint64_t completion_tokens;
    uint64_t steps;
    uint64_t replays;            /* sequences replayed after the pipeline lost a stage */
    uint64_t step_ns_total;      /* time in pipeline steps */
    int      healthy;
    char     detail[256];
    uint64_t worker_restarts;          /* from the pipeline (cluster: local workers) */
    uint32_t workers_restart_pending;
    /* prefix reuse (all 0 without a prefix cache) */
    uint64_t prefix_lookup_tokens;     /* prompt tokens of sequences looked up */
    uint64_t prefix_hit_tokens;        /* of those, loaded from the cache */
    uint32_t prefix_blocks, prefix_blocks_used, prefix_block;
    uint64_t prefix_evictions, prefix_flushes;
} st_engine_stats_t;

st_engine_params_t st_engine_default_params(void);
st_gen_request_t   st_gen_request_default(void);

st_status_t st_engine_create(const st_engine_params_t *p, st_engine_t **out, st_error_t *err);
/* Stops the scheduler; requests still running end with "cancelled". */
void        st_engine_free(st_engine_t *e);

st_status_t st_engine_submit(st_engine_t *e, const st_gen_request_t *r, st_gen_cb_t cb,
                             void *user, uint64_t *id, st_error_t *err);
/* Cancel a request: its slot is freed at the next step and it ends with
 * finish_reason "cancelled". Unknown or finished ids are ignored. */
void        st_engine_cancel(st_engine_t *e, uint64_t id);
/* Stop admitting new requests (ST_ERR_CLOSED) and wait up to timeout_ms for
 * running and queued ones to finish. ST_ERR_TIMEOUT if some remain. */
st_status_t st_engine_drain(st_engine_t *e, int timeout_ms);

void        st_engine_stats(st_engine_t *e, st_engine_stats_t *out);
const st_tokenizer_t *st_engine_tokenizer(const st_engine_t *e);
const char *st_engine_model_name(const st_engine_t *e);
uint32_t    st_engine_n_ctx(const st_engine_t *e);

/* Render and tokenize a request as submit would, without submitting:
 * returns the prompt token count (for usage and validation). */
st_status_t st_engine_count_prompt(st_engine_t *e, const st_gen_request_t *r, uint32_t *n,
                                   st_error_t *err);

/* The local pipeline (one stage, all layers) over an opened model. */
st_status_t st_pipeline_local_create(const st_model_t *m, uint32_t n_ctx, uint32_t n_slots,
                                     uint32_t max_batch, const char *backend, int n_threads,
                                     uint32_t kv_type, uint64_t prefix_cache_bytes,
                                     st_pipeline_t *out, st_error_t *err);

#endif /* ST_ENGINE_H */
