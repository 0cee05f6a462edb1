/*
 * st_kernels.h - the compute backend interface: a table of operations.
 *
 * A backend (CPU, CUDA) is a struct of function pointers, as ggml's
 * ggml-backend-impl.h and UCX's uct_iface_ops_t are. The stage executor
 * (worker/) calls only through this table and never asks which backend it
 * has, so a worker picks CPU or CUDA by configuration alone.
 *
 *   st_backend_t be;
 *   st_backend_params_t p = { .size = sizeof p, .n_threads = 2 };
 *   if (st_backend_open("cpu", &p, &be, &err) != ST_OK) ...
 *   float *x = be.ops->alloc(be.ctx, bytes);        // backend memory
 *   be.ops->matmul(be.ctx, w, x, n, y);
 *   st_backend_close(&be);
 *
 * Conventions for every op:
 * - Activation pointers (x, out, q, caches) are backend memory from ->alloc
 *   (host memory for the CPU backend, device memory for CUDA). Small index
 *   arrays (token ids, positions, slots) are host memory; a device backend
 *   copies them itself.
 * - Weights are st_tensor_t views of the mapped model file. A backend that
 *   needs them elsewhere uploads them in ->weights_load (optional).
 * - Activations are f32, row-major, one row per token, contiguous.
 * - Ops may run asynchronously; ->sync waits for everything queued. to_host
 *   implies a sync.
 * - Ops on the per-token path allocate nothing; scratch is sized at create
 *   time from params (max_batch, max_cols).
 */
#ifndef ST_KERNELS_H
#define ST_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "st_status.h"
#include "st_tensor.h"

/* Bumped whenever the ops table changes layout; backends are built in, so
 * a mismatch means a stale object file. Ops marked optional may be NULL and
 * callers then use the required ops instead. */
#define ST_BACKEND_ABI_VERSION 4u

typedef struct st_backend_params {
    uint32_t size;        /* sizeof(st_backend_params_t): lets the struct grow */
    int      n_threads;   /* CPU worker threads including the caller; <= 0: all cores */
    int      device;      /* GPU ordinal for device backends */
    uint32_t max_batch;   /* most token rows any op will see (sizes scratch) */
    uint32_t max_cols;    /* widest input row of any matmul (sizes scratch) */
} st_backend_params_t;

typedef struct st_attn_args {
    int            n_tokens;
    int            n_head;
    int            n_head_kv;   /* n_head % n_head_kv == 0 (grouped-query) */
    int            head_dim;
    const float   *q;           /* [n_tokens][n_head * head_dim] */
    const void    *k_cache;     /* this layer: [n_slots][n_ctx] rows of kv_dim elements
                                   (kv_dim = kv_stride or n_head_kv * head_dim) of kv_type */
    const void    *v_cache;     /* same layout as k_cache */
    int            n_ctx;       /* tokens per slot */
    const int32_t *slot;        /* host, per token: KV slot of its sequence */
    const int32_t *pos;         /* host, per token: attends to positions 0..pos */
    float          scale;       /* usually 1/sqrt(head_dim) */
    float         *out;         /* [n_tokens][n_head * head_dim_v] */
    /* Extensions (backends with ST_BE_ATTN_EX; all 0 = the plain form above). */
    int            window;      /* > 0: attend only positions pos-window+1..pos */
    float          softcap;     /* > 0: scores s -> softcap * tanh(s / softcap) */
    int            head_dim_v;  /* value width (0: head_dim); V is read from the
                                   first head_dim_v floats of each v_cache row */
    int            kv_stride;   /* elements between cache rows (0: n_head_kv * head_dim) */
    uint32_t       kv_type;     /* element type of the caches: ST_DTYPE_F32 (0), or F16 /
                                   Q8_0 on a backend with ST_BE_KV_F16 / ST_BE_KV_Q8_0. A
                                   Q8_0 row is kv_dim / 32 blocks, so kv_dim, head_dim and
                                   head_dim_v are multiples of 32 (the stage checks). */
} st_attn_args_t;

/* Rotary embedding in its general form (optional op rope_ex). */
typedef struct st_rope_args {
    float         *x;           /* n rows, row_stride floats apart */
    int            n;
    int            row_stride;
    int            n_heads;     /* heads per row, head_stride floats apart */
    int            head_stride;
    int            offset;      /* first rotated float within a head */
    int            rope_dim;    /* floats rotated per head (even) */
    const int32_t *pos;         /* host, per row */
    int            neox;        /* 0: pairs (2j, 2j+1); 1: pairs (j, j + rope_dim/2) */
    float          theta;       /* base */
    float          freq_scale;  /* 1 / context scaling factor */
    /* YaRN (ext_factor 0: plain scaling): frequencies between the
     * beta_fast/beta_slow corrections on n_ctx_orig blend interpolated and
     * extrapolated angles. sin/cos are multiplied by mscale. */
    float          ext_factor, beta_fast, beta_slow;
    int            n_ctx_orig;
    float          mscale;
} st_rope_args_t;

/* Feature bits a backend's ops table declares (st_backend_ops_t.features). */
enum {
    ST_BE_ATTN_EX = 1u << 0,    /* attention honours window/softcap/head_dim_v/kv_stride */
    ST_BE_KV_F16  = 1u << 1,    /* kv_store/attention take kv_type ST_DTYPE_F16 */
    ST_BE_KV_Q8_0 = 1u << 2     /* kv_store/attention take kv_type ST_DTYPE_Q8_0 */
};

typedef struct st_backend_ops {
    uint32_t    abi_version;    /* ST_BACKEND_ABI_VERSION */
    const char *name;           /* "cpu", "cuda" */

    /* Create/destroy one backend instance (thread pool, streams, scratch). */
    st_status_t (*create)(const st_backend_params_t *p, void **ctx, st_error_t *err);
    void        (*destroy)(void *ctx);
    /* One line describing the instance: "cpu avx512vnni, 2 threads". */
    const char *(*describe)(void *ctx);

    /* Backend memory for activations and KV caches (zeroed). */
    void       *(*alloc)(void *ctx, size_t bytes);
    void        (*free)(void *ctx, void *ptr);
    st_status_t (*to_device)(void *ctx, void *dst, const void *host_src, size_t bytes);
    st_status_t (*to_host)(void *ctx, void *host_dst, const void *src, size_t bytes);
    st_status_t (*sync)(void *ctx);

    /* Optional (NULL: weights are used in place from the mapping). */
    st_status_t (*weights_load)(void *ctx, const st_tensor_t *const *tensors, size_t n,
                                st_error_t *err);

    /* out[i] = dequantized row ids[i] of emb (emb: ne = {dim, n_vocab}). */
    void (*get_rows)(void *ctx, const st_tensor_t *emb, const int32_t *ids, int n, float *out);
    /* out[i] = x[i] / rms(x[i]) * w   (w: f32 [dim]) */
    void (*rmsnorm)(void *ctx, const float *x, const st_tensor_t *w, float eps, int n, int dim,
                    float *out);
    /* out[i][r] = sum_c W[r][c] * x[i][c]  (W: ne = {cols, rows}, any supported dtype) */
    void (*matmul)(void *ctx, const st_tensor_t *w, const float *x, int n, float *out);
    /* In place on x[n][n_heads * head_dim]: rotate the first rope_dim dims of
     * every head by position pos[i], adjacent pairs (x[2j], x[2j+1]) with
     * angle pos * freq_scale * theta^(-2j/rope_dim) (GGUF llama "normal" rope). */
    void (*rope)(void *ctx, float *x, int n, int n_heads, int head_dim, int rope_dim,
                 const int32_t *pos, float theta, float freq_scale);
    /* Store k[i], v[i] (each kv_dim floats) at (slot[i], pos[i]) of the caches,
     * converted to kv_type (rows of kv_dim elements; see st_attn_args_t). */
    void (*kv_store)(void *ctx, const float *k, const float *v, int n, int kv_dim,
                     const int32_t *slot, const int32_t *pos, void *k_cache, void *v_cache,
                     int n_ctx, uint32_t kv_type);
    /* Causal attention of each token over its slot's cache, positions 0..pos[i]. */
    void (*attention)(void *ctx, const st_attn_args_t *a);
    /* out[j] = silu(gate[j]) * up[j] */
    void (*swiglu)(void *ctx, const float *gate, const float *up, size_t n, float *out);
    /* x[j] += y[j] */
    void (*add)(void *ctx, float *x, const float *y, size_t n);

    /* Optional (NULL: call matmul once per weight). out[i] = W[i] x for
     * n_w weights that read the same x (Q/K/V, gate/up): a backend can
     * quantize x once and run all of them in one dispatch. Results must be
     * identical to n_w matmul calls. */
    void (*matmul_multi)(void *ctx, int n_w, const st_tensor_t *const *w, const float *x, int n,
                         float *const *out);

    /* ---- for architectures beyond Llama (all optional; a stage whose
     * model needs one the backend lacks refuses to start, naming it) ---- */
    unsigned features;          /* ST_BE_* */
    void (*rope_ex)(void *ctx, const st_rope_args_t *r);
    /* x[i][j] += b[j] for n rows of dim (b: f32 [dim]): biases. */
    void (*add_row)(void *ctx, float *x, const st_tensor_t *b, int n, int dim);
    /* out[j] = gelu_tanh(gate[j]) * up[j] */
    void (*geglu)(void *ctx, const float *gate, const float *up, size_t n, float *out);
    /* x[j] *= a */
    void (*scale)(void *ctx, float *x, float a, size_t n);
    /* x[j] = c * tanh(x[j] / c) */
    void (*softcap)(void *ctx, float *x, float c, size_t n);
    /* dst row r (dst_stride floats apart) = src row r (src_stride apart),
     * `cols` floats each, for r < rows. */
    void (*copy2d)(void *ctx, float *dst, int dst_stride, const float *src, int src_stride,
                   int rows, int cols);
    /* x[j] += a * y[j] */
    void (*axpy)(void *ctx, float *x, float a, const float *y, size_t n);
} st_backend_ops_t;

/* A backend instance: its table and its context. The caller owns the struct. */
typedef struct st_backend {
    const st_backend_ops_t *ops;
    void                   *ctx;
} st_backend_t;

/* Names of the backends compiled in ("cpu", and "cuda" when built with nvcc). */
const char *const *st_backend_names(void);
const st_backend_ops_t *st_backend_find(const char *name);
st_status_t st_backend_open(const char *name, const st_backend_params_t *p, st_backend_t *out,
                            st_error_t *err);
void        st_backend_close(st_backend_t *b);

/* The CPU backend's table (kernels/cpu). */
const st_backend_ops_t *st_backend_cpu_ops(void);

#endif /* ST_KERNELS_H */
