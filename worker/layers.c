/*
 * layers.c - the table of layer forwards, one per model family
 * (st_model_family indexes it). A new family is one file beside the others
 * and one entry here.
 */
#include "stage_internal.h"

extern const st_layer_impl_t st_layer_llama, st_layer_gemma3, st_layer_deepseek2;

const st_layer_impl_t *st_layer_impl(st_family_t f)
{
    static const st_layer_impl_t *const table[ST_FAMILY_COUNT_] = {
        [ST_FAMILY_LLAMA] = &st_layer_llama,
        [ST_FAMILY_GEMMA3] = &st_layer_gemma3,
        [ST_FAMILY_DEEPSEEK2] = &st_layer_deepseek2,
    };
    return (unsigned)f < ST_FAMILY_COUNT_ ? table[f] : NULL;
}
