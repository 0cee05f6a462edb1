/*
 * gpu_tool.h - pieces of the `strata-gpu` tool (bench/gpu), which
 * bench/gpu/check.sh drives on the GPU machine:
 *
 *   strata-gpu gen OUT.gguf --shape small|1b|8b [--type T]   random model (bf16 or T)
 *   strata-gpu roofline                             copy GB/s, GEMM TFLOP/s
 *   strata-gpu compare -m M --tokens N --gen G      CUDA vs CPU logits, greedy
 *   strata-gpu bench -m M --copy-gbps X --gemm-tflops Y   one table row
 */
#ifndef GPU_TOOL_H
#define GPU_TOOL_H

#include <stdint.h>

typedef struct gpu_shape {
    const char *name;
    uint32_t n_layer, dim, n_head, n_head_kv, n_ff, n_vocab;
    float    rope_theta;
    int      tied;       /* output head shares the embedding */
    uint32_t wtype;      /* matrices: ST_DTYPE_BF16 (0 means that) or a quantized type */
} gpu_shape_t;

/* Writes a random model of shape s to path; 0 on success (-1 with a
 * message on stderr). */
int gpu_gen_model(const char *path, const gpu_shape_t *s, uint64_t seed);

#endif /* GPU_TOOL_H */
