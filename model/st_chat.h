/*
 * st_chat.h - chat templates for the common model families.
 *
 * The template family is detected from tokenizer.chat_template (a Jinja
 * source we do not execute): ChatML (<|im_start|>role\n...<|im_end|>),
 * Llama 2 ([INST] ... [/INST] with <<SYS>>), Llama 3 (<|start_header_id|>),
 * Gemma (<start_of_turn>), Phi-3 (<|user|>), and Mistral ([INST] without
 * <<SYS>>). An unknown template falls back to ChatML and st_chat_detect
 * reports that so the caller can warn.
 *
 * A default system prompt found in the template (as SmolLM2's ChatML has)
 * is applied when the conversation has none.
 */
#ifndef ST_CHAT_H
#define ST_CHAT_H

#include <stddef.h>

#include "st_gguf.h"
#include "st_status.h"

typedef enum st_chat_family {
    ST_CHAT_CHATML = 0,
    ST_CHAT_LLAMA2,
    ST_CHAT_LLAMA3,
    ST_CHAT_MISTRAL,
    ST_CHAT_GEMMA,
    ST_CHAT_PHI3,
    ST_CHAT_FAMILY_COUNT_
} st_chat_family_t;

typedef struct st_chat_msg {
    const char *role;     /* "system", "user", "assistant" */
    const char *content;  /* UTF-8, NUL-terminated */
} st_chat_msg_t;

typedef struct st_chat_template {
    st_chat_family_t family;
    int   fallback;              /* 1 when the template was not recognised */
    int   absent;                /* 1 when the model has none (a base model) */
    char  default_system[1024];  /* "" when the template has none */
} st_chat_template_t;

/* Detect from the model's metadata (absent template -> ChatML, fallback). */
st_status_t st_chat_detect(const st_gguf_t *g, st_chat_template_t *out);
const char *st_chat_family_name(st_chat_family_t f);

/* Render messages and the assistant prefix (add_generation_prompt) into out.
 * Returns the full length needed; ST_ERR_RANGE via *status if cap is too
 * small (out is then truncated but NUL-terminated). */
size_t st_chat_render(const st_chat_template_t *t, const st_chat_msg_t *msgs, size_t n_msgs,
                      int add_generation_prompt, char *out, size_t cap, st_status_t *status);

#endif /* ST_CHAT_H */
