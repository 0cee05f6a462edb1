/*
 * test_chat.c - chat template detection and rendering. Templates are put in
 * small GGUF files written here; the byte-for-byte comparison with the real
 * model's Jinja template is tests/py/test_tokenizer_chat.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_chat.h"
#include "st_test.h"
#include "st_util.h"

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s)
{
    w_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}

/* A GGUF holding only tokenizer.chat_template (NULL: no key at all). */
static st_gguf_t *gguf_with_template(const char *tmpl)
{
    char path[128];
    st_gguf_t *g = NULL;
    st_error_t err;
    snprintf(path, sizeof(path), "/tmp/st_test_chat_%d.gguf", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, 0);
    w_u64(f, 1);
    w_str(f, tmpl ? "tokenizer.chat_template" : "general.name");
    w_u32(f, 8);
    w_str(f, tmpl ? tmpl : "x");
    fclose(f);
    st_gguf_open(path, &g, &err);
    unlink(path);
    return g;
}

static st_chat_template_t detect(const char *tmpl)
{
    st_chat_template_t t;
    memset(&t, 0xAB, sizeof(t));
    st_gguf_t *g = gguf_with_template(tmpl);
    st_chat_detect(g, &t);
    st_gguf_close(g);
    return t;
}

/* The SmolLM2-135M-Instruct template, as in its GGUF. */
static const char smollm_tmpl[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

ST_TEST(detects_families)
{
    st_chat_template_t t = detect(smollm_tmpl);
    ST_CHECK(t.family == ST_CHAT_CHATML && !t.fallback);
    ST_CHECK(!strcmp(t.default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"));
    /* a plain ChatML template with no literal system turn has no default,
     * and an escaped "\n" inside a Jinja literal still yields one */
    t = detect("{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}");
    ST_CHECK(t.family == ST_CHAT_CHATML && t.default_system[0] == '\0');
    t = detect("{{ '<|im_start|>system\\nYou are Qwen.\\nBe brief.<|im_end|>\\n' }}");
    ST_CHECK_MSG(!strcmp(t.default_system, "You are Qwen.\nBe brief."), "'%s'", t.default_system);
    t = detect("{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}");
    ST_CHECK(t.default_system[0] == '\0');

    ST_CHECK(detect("{{ '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' }}").family == ST_CHAT_LLAMA3);
    ST_CHECK(detect("{{ bos_token + '[INST] <<SYS>>\\n' }}").family == ST_CHAT_LLAMA2);
    ST_CHECK(detect("{{ bos_token + '[INST] ' + content + ' [/INST]' }}").family == ST_CHAT_MISTRAL);
    ST_CHECK(detect("{{ '<start_of_turn>' + role + '\\n' }}").family == ST_CHAT_GEMMA);
    ST_CHECK(detect("{{ '<|user|>\\n' + content + '<|end|>\\n<|assistant|>\\n' }}").family == ST_CHAT_PHI3);
    t = detect("{{ messages | tojson }}");
    ST_CHECK(t.family == ST_CHAT_CHATML && t.fallback == 1);
    t = detect(NULL);
    ST_CHECK(t.family == ST_CHAT_CHATML && t.fallback == 1 && t.default_system[0] == '\0');
    ST_CHECK(!strcmp(st_chat_family_name(ST_CHAT_GEMMA), "gemma"));
}

static const char *render(const st_chat_template_t *t, const st_chat_msg_t *m, size_t n, int gen,
                          char *buf, size_t cap)
{
    st_status_t st;
    size_t len = st_chat_render(t, m, n, gen, buf, cap, &st);
    return st == ST_OK && len == strlen(buf) ? buf : "(error)";
}

ST_TEST(renders_chatml_with_default_system)
{
    st_chat_template_t t = detect(smollm_tmpl);
    char buf[1024];
    st_chat_msg_t user[] = {{"user", "Hi there"}};
    ST_CHECK(!strcmp(render(&t, user, 1, 1, buf, sizeof(buf)),
                     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                     "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"));
    st_chat_msg_t sys[] = {{"system", "Be terse."}, {"user", "2+2?"}, {"assistant", "4"}, {"user", "and 3+3?"}};
    ST_CHECK(!strcmp(render(&t, sys, 4, 0, buf, sizeof(buf)),
                     "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                     "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nand 3+3?<|im_end|>\n"));
    /* no messages: the template's loop never runs, so no default system */
    ST_CHECK(!strcmp(render(&t, NULL, 0, 1, buf, sizeof(buf)), "<|im_start|>assistant\n"));
}

ST_TEST(renders_other_families)
{
    char buf[1024];
    st_chat_template_t t = {0};
    st_chat_msg_t m[] = {{"system", "S"}, {"user", " U1 "}, {"assistant", "A1"}, {"user", "U2"}};

    t.family = ST_CHAT_LLAMA3;
    ST_CHECK(!strcmp(render(&t, m, 2, 1, buf, sizeof(buf)),
                     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n"));
    t.family = ST_CHAT_LLAMA2;
    ST_CHECK(!strcmp(render(&t, m, 4, 1, buf, sizeof(buf)),
                     "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]"));
    t.family = ST_CHAT_MISTRAL;
    ST_CHECK(!strcmp(render(&t, m, 4, 1, buf, sizeof(buf)),
                     "<s>[INST] S\n\n U1  [/INST]A1</s>[INST] U2 [/INST]"));
    t.family = ST_CHAT_GEMMA;
    ST_CHECK(!strcmp(render(&t, m, 3, 1, buf, sizeof(buf)),
                     "<bos><start_of_turn>user\nS\n\nU1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
                     "<start_of_turn>model\n"));
    t.family = ST_CHAT_PHI3;
    ST_CHECK(!strcmp(render(&t, m + 1, 1, 1, buf, sizeof(buf)), "<|user|>\n U1 <|end|>\n<|assistant|>\n"));
}

ST_TEST(render_reports_short_buffers_and_bad_input)
{
    st_chat_template_t t = {0};
    st_chat_msg_t m[] = {{"user", "hello"}};
    char small[8];
    st_status_t st;
    size_t need = st_chat_render(&t, m, 1, 1, NULL, 0, &st);
    ST_CHECK(st == ST_ERR_RANGE && need == strlen("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"));
    ST_CHECK(st_chat_render(&t, m, 1, 1, small, sizeof(small), &st) == need && st == ST_ERR_RANGE);
    ST_CHECK(strlen(small) == sizeof(small) - 1 && !memcmp(small, "<|im_st", 7));
    st_chat_msg_t bad[] = {{"user", NULL}};
    st_chat_render(&t, bad, 1, 1, small, sizeof(small), &st);
    ST_CHECK(st == ST_ERR_INVALID);
    t.family = (st_chat_family_t)99;
    st_chat_render(&t, m, 1, 1, small, sizeof(small), &st);
    ST_CHECK(st == ST_ERR_INVALID);
}

int main(void) { return st_test_main(); }
