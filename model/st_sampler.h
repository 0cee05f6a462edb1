/*
 * st_sampler.h - turning logits into the next token.
 *
 *   st_sampler_params_t p = st_sampler_default_params();
 *   p.temperature = 0.7f; p.top_p = 0.9f; p.seed = 42;
 *   st_sampler_t *s; st_sampler_create(&p, n_vocab, &s);
 *   int32_t id = st_sampler_sample(s, logits);   // logits: n_vocab floats
 *   st_sampler_accept(s, id);                    // feeds the repetition window
 *
 * Order of operations (as llama.cpp's default chain): repetition penalty
 * over the last `repeat_last_n` tokens, then temperature 0 -> greedy
 * (argmax, lowest id on ties); else top-k, top-p, min-p, temperature,
 * softmax and a draw from a per-sampler splitmix64 stream seeded by `seed`,
 * so the same seed gives the same output on any machine. Exactly one draw
 * per sampled token when temperature > 0 (none when every logit is -inf),
 * so st_sampler_seed_after(seed, n) seeds the stream a sequence would use
 * after n sampled tokens (the engine's replay after a lost stage).
 * All scratch is allocated at create time: sampling allocates nothing.
 */
#ifndef ST_SAMPLER_H
#define ST_SAMPLER_H

#include <stdint.h>

#include "st_status.h"

typedef struct st_sampler_params {
    float    temperature;    /* 0 = greedy */
    int32_t  top_k;          /* <= 0: off */
    float    top_p;          /* 1: off */
    float    min_p;          /* 0: off */
    float    repeat_penalty; /* 1: off */
    int32_t  repeat_last_n;  /* window for the penalty */
    uint64_t seed;
} st_sampler_params_t;

typedef struct st_sampler st_sampler_t;

st_sampler_params_t st_sampler_default_params(void);
/* Validates params (ST_ERR_RANGE naming nothing: callers name the field). */
st_status_t st_sampler_check_params(const st_sampler_params_t *p, const char **bad_field);
st_status_t st_sampler_create(const st_sampler_params_t *p, uint32_t n_vocab, st_sampler_t **out);
void        st_sampler_free(st_sampler_t *s);
void        st_sampler_reset(st_sampler_t *s, uint64_t seed);
/* The seed whose stream equals `seed`'s after `draws` draws. */
uint64_t    st_sampler_seed_after(uint64_t seed, uint64_t draws);
/* logits are read and may be modified in place. */
int32_t     st_sampler_sample(st_sampler_t *s, float *logits);
void        st_sampler_accept(st_sampler_t *s, int32_t id);

#endif /* ST_SAMPLER_H */
