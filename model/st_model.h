/*
 * st_model.h - a Llama-family model bound to the tensors of a GGUF file.
 *
 *   st_model_t *m;
 *   st_error_t err;
 *   if (st_model_open(path, NULL, &m, &err) != ST_OK) ...
 *   const st_llama_hparams_t *hp = st_model_hparams(m);
 *   const st_llama_layer_t *l0 = st_model_layer(m, 0);
 *   st_model_prefetch(m, 0, hp->n_layer, 1, progress_cb, ctx);   // page in layers
 *
 * st_model_open reads the hyper-parameters from metadata (block_count,
 * embedding_length, feed_forward_length, head counts, rope base and
 * dimension, rms epsilon, context length), refuses another architecture with
 * an error naming it, and checks that every required tensor is present with
 * the shape the architecture needs. The output matrix is `output.weight`
 * when present, else the token embedding (tied).
 *
 * Weights are used in place from the mapping: nothing is copied or
 * dequantized. An encrypted model (st_crypt.h) needs params->key; it is
 * decrypted into anonymous memory, only the layers asked for when a layer
 * range is given (the other tensors read as zeros), and then read exactly
 * like a plain file. A plain GGUF is mapped as before, key or not. st_model_prefetch touches only the requested layer range, so
 * a pipeline stage's resident memory is its own share of the file.
 */
#ifndef ST_MODEL_H
#define ST_MODEL_H

#include <stdint.h>

#include "st_error.h"
#include "st_gguf.h"
#include "st_status.h"
#include "st_tensor.h"

typedef struct st_model st_model_t;

typedef struct st_llama_hparams {
    uint32_t n_layer;
    uint32_t n_embd;        /* model width (dim) */
    uint32_t n_ff;          /* FFN hidden width */
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;      /* n_embd / n_head unless key_length says otherwise */
    uint32_t n_vocab;
    uint32_t n_ctx_train;   /* context length the model was trained with */
    uint32_t rope_dim;      /* dimensions rotated per head (<= head_dim) */
    float    rope_theta;    /* rope.freq_base, default 10000 */
    float    rope_freq_scale; /* 1 / rope.scale_linear, default 1 */
    float    rms_eps;
} st_llama_hparams_t;

typedef struct st_llama_layer {
    const st_tensor_t *attn_norm;  /* [n_embd] f32 */
    const st_tensor_t *wq;         /* ne = {n_embd, n_head*head_dim} */
    const st_tensor_t *wk;         /* ne = {n_embd, n_head_kv*head_dim} */
    const st_tensor_t *wv;         /* ne = {n_embd, n_head_kv*head_dim} */
    const st_tensor_t *wo;         /* ne = {n_head*head_dim, n_embd} */
    const st_tensor_t *ffn_norm;   /* [n_embd] f32 */
    const st_tensor_t *w_gate;     /* ne = {n_embd, n_ff} */
    const st_tensor_t *w_up;       /* ne = {n_embd, n_ff} */
    const st_tensor_t *w_down;     /* ne = {n_ff, n_embd} */
} st_llama_layer_t;

typedef struct st_model_open_params {
    uint32_t size;          /* sizeof(st_model_open_params_t): lets the struct grow */
    int      verbose;       /* reserved */
    /* Encrypted models (st_crypt.h, docs/ENCRYPTION.md), recognised by their
     * magic. The plaintext lives in anonymous memory only. */
    const uint8_t *key;     /* 32-byte AES-256 key; NULL: plain models only */
    uint32_t first_layer;   /* decrypt layers [first_layer, last_layer) ... */
    uint32_t last_layer;    /* ... 0: decrypt the whole file */
    int      with_embd;     /* with a layer range: 1 token embedding, 2 output
                               norm + head (the embedding when tied), 3 both */
    int      lock_memory;   /* mlock the plaintext (fails if RLIMIT_MEMLOCK is low) */
} st_model_open_params_t;

/* Progress callback for st_model_prefetch: bytes done out of total. */
typedef void (*st_model_progress_fn)(void *ctx, uint64_t done, uint64_t total);

st_status_t st_model_open(const char *path, const st_model_open_params_t *params,
                          st_model_t **out, st_error_t *err);
void        st_model_close(st_model_t *m);

const st_llama_hparams_t *st_model_hparams(const st_model_t *m);
const st_llama_layer_t   *st_model_layer(const st_model_t *m, uint32_t i);
const st_tensor_t        *st_model_tok_embd(const st_model_t *m);
const st_tensor_t        *st_model_output_norm(const st_model_t *m);
const st_tensor_t        *st_model_output(const st_model_t *m);   /* tied -> tok_embd */
const st_gguf_t          *st_model_gguf(const st_model_t *m);
const char               *st_model_arch(const st_model_t *m);
const char               *st_model_name(const st_model_t *m);  /* general.name or file name */

/* Bytes of weights of layer i (all its tensors). */
uint64_t st_model_layer_bytes(const st_model_t *m, uint32_t i);
/* Bytes of the embedding + output (+ output norm): what the first and last
 * stages hold beside their layers. */
uint64_t st_model_embd_bytes(const st_model_t *m);
uint64_t st_model_output_bytes(const st_model_t *m);
/* KV-cache bytes per token per layer (K and V, f32). */
uint64_t st_model_kv_bytes_per_token_layer(const st_model_t *m);

/* Touch (read) the pages of layers [first, last), plus the embedding when
 * with_embd & 1 and the output head when with_embd & 2, reporting progress.
 * Uses madvise(WILLNEED) and reads one byte per page. */
/* Encrypted models: plaintext bytes decrypted at open (metadata included);
 * 0 for a plain model. */
uint64_t st_model_decrypted_bytes(const st_model_t *m);

st_status_t st_model_prefetch(const st_model_t *m, uint32_t first, uint32_t last,
                              int with_embd, st_model_progress_fn fn, void *ctx);

#endif /* ST_MODEL_H */
