/*
 * test_plan_model.c - planner inputs read from the real model file
 * (skipped when it is absent) and a plan over it.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "st_plan_model.h"
#include "st_test.h"

static const char *model_path(void)
{
    const char *p = getenv("STRATA_TEST_MODEL");
    return p ? p : "/root/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf";
}

ST_TEST(smollm2_sizes_and_plan)
{
    struct stat sb;
    const char *path = model_path();
    if (stat(path, &sb) != 0) ST_SKIP("model %s not present", path);
    st_plan_model_desc_t d;
    st_error_t err = {{0}};
    if (st_plan_model_from_file(path, 2048, 2, &d, &err) != ST_OK) {
        fprintf(stderr, "  %s\n", err.msg);
        ST_REQUIRE(0);
    }
    ST_CHECK(d.model.n_layer == 30 && d.n_ctx == 2048);
    uint64_t sum = d.model.embd_bytes;
    for (uint32_t i = 0; i < d.model.n_layer; i++) {
        ST_CHECK(d.model.layer_bytes[i] > 0);
        ST_CHECK(d.model.layer_bytes[i] == d.model.layer_bytes[0]);   /* Llama layers are alike */
        sum += d.model.layer_bytes[i];
    }
    ST_CHECK_MSG(sum <= (uint64_t)sb.st_size, "weights %llu > file %lld", (unsigned long long)sum, (long long)sb.st_size);
    ST_CHECK(sum > (uint64_t)sb.st_size / 2);
    /* SmolLM2-135M: 3 KV heads of 64, K and V in the default f16 cache:
     * 2 * 3 * 64 * 2 bytes. */
    ST_CHECK_MSG(d.model.kv_bytes_per_token_layer == 768, "%llu", (unsigned long long)d.model.kv_bytes_per_token_layer);
    ST_CHECK(d.model.act_bytes_per_seq > 0 && d.model.output_bytes >= 2 * d.logits_bytes_per_seq);

    st_plan_worker_t w[2] = { { .name = "a", .mem_bytes = 1ull << 30, .speed = 1 },
                              { .name = "b", .mem_bytes = 1ull << 30, .speed = 1 } };
    st_plan_params_t p = { .size = sizeof(p), .model = d.model, .n_ctx = d.n_ctx, .n_seq = 2,
                           .n_workers = 2, .workers = w };
    st_plan_t *plan = NULL;
    ST_REQUIRE(st_plan_compute(&p, &plan, &err) == ST_OK);
    ST_CHECK(st_plan_n_stages(plan) == 2);
    ST_CHECK(st_plan_stage(plan, 0)->n_layers == 15 && st_plan_stage(plan, 1)->n_layers == 15);
    st_plan_free(plan);
    st_plan_model_desc_free(&d);

    ST_CHECK(st_plan_model_from_file("/nonexistent.gguf", 0, 1, &d, &err) != ST_OK);
}

int main(void) { return st_test_main(); }
