/*
 * arch.c - the one table of architectures strata runs.
 *
 * Adding an architecture is one entry here plus its binding file
 * (model/arch_<family>.c); a new family also needs its layer forward in
 * worker/ (worker/layers.c). Nothing else in the tree names architectures.
 */
#include <string.h>

#include "model_internal.h"

st_status_t st_arch_bind_llama(st_bind_t *b);
st_status_t st_arch_bind_qwen2(st_bind_t *b);
st_status_t st_arch_bind_qwen3(st_bind_t *b);
st_status_t st_arch_bind_qwen3moe(st_bind_t *b);
st_status_t st_arch_bind_gemma3(st_bind_t *b);
st_status_t st_arch_bind_deepseek2(st_bind_t *b);

static const st_arch_t archs[] = {
    {"llama",     ST_FAMILY_LLAMA,     st_arch_bind_llama},
    {"qwen2",     ST_FAMILY_LLAMA,     st_arch_bind_qwen2},
    {"qwen3",     ST_FAMILY_LLAMA,     st_arch_bind_qwen3},
    {"qwen3moe",  ST_FAMILY_LLAMA,     st_arch_bind_qwen3moe},
    {"gemma3",    ST_FAMILY_GEMMA3,    st_arch_bind_gemma3},
    {"deepseek2", ST_FAMILY_DEEPSEEK2, st_arch_bind_deepseek2},
};

const st_arch_t *st_arch_find(const char *name, uint64_t len)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strlen(archs[i].name) == len && !memcmp(archs[i].name, name, len))
            return &archs[i];
    return NULL;
}

const char *st_model_supported_archs(void)
{
    return "llama, qwen2, qwen3, qwen3moe, gemma3, deepseek2";
}
