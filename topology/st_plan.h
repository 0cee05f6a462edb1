/*
 * st_plan.h - the layer planner: which worker runs which layers, in which
 * order along the pipeline.
 *
 * Pure computation on numbers (no hwloc, no model file), so it builds and is
 * tested in every configuration. The coordinator fills the model's sizes
 * (st_plan_model.h does it from a GGUF file) and the workers' memory and
 * speed, and gets one contiguous layer range per pipeline stage:
 *
 *   st_plan_workers_t *ws;                  // from a workers file, or build
 *   st_plan_workers_load("workers.txt", &ws, &err);   // st_plan_worker_t[]
 *   st_plan_params_t p = {
 *       .size = sizeof p, .model = m, .n_ctx = 4096, .n_seq = 4,
 *       .n_workers = st_plan_workers_count(ws),
 *       .workers = st_plan_workers_array(ws),
 *       .latency_us = st_plan_workers_latency(ws) };  // NULL when unknown
 *   st_plan_t *plan;
 *   if (st_plan_compute(&p, &plan, &err) != ST_OK) puts(err.msg);
 *   for (uint32_t s = 0; s < st_plan_n_stages(plan); s++) {
 *       const st_plan_stage_t *st = st_plan_stage(plan, s);
 *       // worker st->worker runs layers [st->first_layer, +st->n_layers)
 *   }
 *   st_plan_free(plan);
 *
 * How the plan is chosen (docs/TOPOLOGY.md has the reasoning):
 * 1. A worker whose memory cannot hold one layer (its weights, its KV cache
 *    for n_ctx x n_seq tokens, and the activation scratch) is left out and
 *    reported as too small.
 * 2. The order of the remaining workers minimises the sum of link latencies
 *    between consecutive stages (exact for up to 12 workers, a deterministic
 *    2-opt search above). Without a latency matrix, workers of the same host
 *    are kept next to each other, otherwise the given order is kept.
 * 3. A dynamic programme over (worker, layer) finds the contiguous split that
 *    minimises the slowest stage's time (a layer's time is its weight bytes
 *    divided by the worker's speed: decoding reads every weight once per
 *    token) while every stage fits its worker's memory; among the splits
 *    with that bottleneck it picks the one closest to proportional to speed.
 *    The first stage also holds the token embedding, the last the output
 *    head and the logits.
 * 4. If nothing fits, the error says how many bytes are missing in total and
 *    on which workers.
 * The result is deterministic: the same input gives the same plan.
 */
#ifndef ST_PLAN_H
#define ST_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "st_error.h"
#include "st_status.h"

#define ST_PLAN_NAME_MAX 64
#define ST_PLAN_MAX_WORKERS 1024
#define ST_PLAN_MAX_LAYERS 4096

/* One worker as the planner sees it. */
typedef struct st_plan_worker {
    char     name[ST_PLAN_NAME_MAX];  /* unique, printable */
    char     host[ST_PLAN_NAME_MAX];  /* "" when not known */
    uint64_t mem_bytes;               /* usable for weights + KV cache + activations */
    double   speed;                   /* relative speed, > 0 (measured or configured) */
} st_plan_worker_t;

/* The model's sizes. Arrays are borrowed for the duration of st_plan_compute. */
typedef struct st_plan_model {
    uint32_t        n_layer;
    const uint64_t *layer_bytes;              /* [n_layer] weight bytes of each layer */
    const uint64_t *layer_work;               /* [n_layer] bytes one token reads in each layer
                                               * (a MoE layer: only its active experts),
                                               * what the stages are balanced on; NULL:
                                               * layer_bytes (every weight is read) */
    uint64_t        embd_bytes;               /* token embedding: first stage */
    uint64_t        output_bytes;             /* output norm + head + logits: last stage */
    uint64_t        kv_bytes_per_token_layer; /* K and V of one token in one layer */
    uint64_t        act_bytes_per_seq;        /* activation scratch of one sequence, per stage */
    uint64_t        shared_bytes;             /* bytes counted in both embd_bytes and
                                               * output_bytes (a head tied to the token
                                               * embedding: one tensor), held once by a
                                               * stage that has both; 0: none */
} st_plan_model_t;

typedef struct st_plan_params {
    uint32_t                size;        /* sizeof(st_plan_params_t) */
    st_plan_model_t         model;
    uint32_t                n_ctx;       /* context length per sequence, > 0 */
    uint32_t                n_seq;       /* sequences served at once, > 0 */
    uint32_t                n_workers;
    const st_plan_worker_t *workers;     /* [n_workers] */
    const double           *latency_us;  /* NULL, or [n_workers * n_workers]:
                                            [i * n + j] = one-way latency i -> j */
    uint64_t                pool_tokens; /* KV rows per layer beyond n_ctx * n_seq that
                                            every stage keeps (the prefix cache's pool) */
} st_plan_params_t;

/* One pipeline stage, in pipeline order. */
typedef struct st_plan_stage {
    uint32_t worker;         /* index into params.workers */
    uint32_t first_layer;
    uint32_t n_layers;       /* >= 1 */
    int      holds_embd;     /* first stage */
    int      holds_output;   /* last stage */
    uint64_t weight_bytes;   /* layers (+ embedding, + output) */
    uint64_t kv_bytes;
    uint64_t act_bytes;
    uint64_t total_bytes;    /* weight + kv + act <= the worker's mem_bytes */
    double   time;           /* layer weight bytes / speed (relative units) */
} st_plan_stage_t;

typedef enum st_plan_unused_reason {
    ST_PLAN_UNUSED_TOO_SMALL  = 1,  /* cannot hold a single layer */
    ST_PLAN_UNUSED_NOT_NEEDED = 2   /* the balanced split gave it no layer */
} st_plan_unused_reason_t;

typedef struct st_plan_unused {
    uint32_t                worker;      /* index into params.workers */
    st_plan_unused_reason_t reason;
    uint64_t                need_bytes;  /* TOO_SMALL: the smallest one-layer stage */
} st_plan_unused_t;

typedef struct st_plan st_plan_t;

/* Computes a plan. Errors: ST_ERR_INVALID (bad params, with the field named),
 * ST_ERR_NOMEM, ST_ERR_OVERFLOW (sizes overflow 64 bits), ST_ERR_RANGE (the
 * model does not fit; err says how much memory is missing and where). */
st_status_t st_plan_compute(const st_plan_params_t *params, st_plan_t **out, st_error_t *err);
void        st_plan_free(st_plan_t *plan);

uint32_t               st_plan_n_stages(const st_plan_t *plan);
const st_plan_stage_t *st_plan_stage(const st_plan_t *plan, uint32_t i);
uint32_t               st_plan_n_unused(const st_plan_t *plan);
const st_plan_unused_t *st_plan_unused(const st_plan_t *plan, uint32_t i);
/* The worker table the plan was computed for (a copy owned by the plan). */
const st_plan_worker_t *st_plan_worker(const st_plan_t *plan, uint32_t index);
/* Total weight bytes of all layers / total speed of the stages used: the
 * stage time of a perfectly proportional split. */
double st_plan_ideal_time(const st_plan_t *plan);
/* The slowest stage's time. */
double st_plan_bottleneck_time(const st_plan_t *plan);
/* Sum of the latencies between consecutive stages; negative when no
 * latency matrix was given. */
double st_plan_link_latency_us(const st_plan_t *plan);

/* Human-readable and JSON renderings (see docs/TOPOLOGY.md for the schema). */
void st_plan_write_text(const st_plan_t *plan, FILE *f);
void st_plan_write_json(const st_plan_t *plan, FILE *f);

/*
 * Workers files: one line per worker, '#' starts a comment.
 *
 *   worker gpu-a  mem=22GiB  speed=1.0  host=node1
 *   worker gpu-b  mem=22GiB  speed=0.5  host=node2
 *   link gpu-a gpu-b 12.5        # one-way latency in microseconds, both ways
 *
 * mem accepts a byte count or a binary suffix (K, KiB, M, MiB, G, GiB, T,
 * TiB); speed is a positive number; host is optional. `link` lines are
 * optional, but once one is given every pair of workers needs one. Errors
 * name the file, the line and the offending field.
 */
typedef struct st_plan_workers st_plan_workers_t;

st_status_t st_plan_workers_parse(const char *text, size_t len, const char *source,
                                  st_plan_workers_t **out, st_error_t *err);
st_status_t st_plan_workers_load(const char *path, st_plan_workers_t **out, st_error_t *err);
void        st_plan_workers_free(st_plan_workers_t *ws);

uint32_t                st_plan_workers_count(const st_plan_workers_t *ws);
const st_plan_worker_t *st_plan_workers_array(const st_plan_workers_t *ws);
/* [n * n] latency matrix in microseconds, or NULL when the file has no links. */
const double           *st_plan_workers_latency(const st_plan_workers_t *ws);

/* Parses "24GiB", "512M", "1048576": binary suffixes only. Returns 0 on success. */
int st_plan_parse_size(const char *s, uint64_t *out);

#endif /* ST_PLAN_H */
