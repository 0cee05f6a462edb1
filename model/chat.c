/*
 * chat.c - chat template detection and rendering (see st_chat.h).
 *
 * We do not run Jinja: the families differ in a handful of literal strings,
 * so each is written out below after its reference template (the Hugging
 * Face tokenizer_config.json of the family's instruct models). Where a
 * family has no system role (Mistral v0.1, Gemma) the system text is put in
 * front of the first user message followed by a blank line, as the later
 * templates of those families do. The BOS text is written where the
 * reference template writes bos_token, so the rendered prompt is encoded
 * with ST_TOK_PARSE_SPECIAL and without ST_TOK_ADD_BOS.
 *
 * Detection looks for each family's marker strings, in the order llama.cpp's
 * llm_chat_detect_template uses (ChatML first: its markers are the most
 * specific).
 */
#include <string.h>

#include "st_chat.h"
#include "st_util.h"

#define KEY_TEMPLATE "tokenizer.chat_template"

static const char *find(const char *h, size_t hlen, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0 || n > hlen) return n == 0 ? h : NULL;
    for (size_t i = 0; i + n <= hlen; i++)
        if (h[i] == needle[0] && memcmp(h + i, needle, n) == 0) return h + i;
    return NULL;
}

const char *st_chat_family_name(st_chat_family_t f)
{
    static const char *const names[ST_CHAT_FAMILY_COUNT_] = {
        [ST_CHAT_CHATML] = "chatml", [ST_CHAT_LLAMA2] = "llama2", [ST_CHAT_LLAMA3] = "llama3",
        [ST_CHAT_MISTRAL] = "mistral", [ST_CHAT_GEMMA] = "gemma", [ST_CHAT_PHI3] = "phi3",
    };
    return (unsigned)f < ST_CHAT_FAMILY_COUNT_ ? names[f] : "unknown";
}

/* A ChatML template that hard-codes a system turn ("<|im_start|>system\n"
 * followed by literal text) carries a default system prompt: SmolLM2 and
 * Qwen2.5 do. The newline may be a real one or the two characters "\n"
 * inside a Jinja string literal. Text with Jinja syntax or quotes in it is
 * not a literal default, and is ignored. */
static void extract_default_system(const char *s, size_t len, char *out, size_t cap)
{
    static const char tag[] = "<|im_start|>system";
    const char *p = find(s, len, tag);
    out[0] = '\0';
    while (p) {
        const char *q = p + sizeof(tag) - 1, *end = s + len;
        if (q < end && *q == '\n') q++;
        else if (q + 1 < end && q[0] == '\\' && q[1] == 'n') q += 2;
        else goto next;
        const char *e = find(q, (size_t)(end - q), "<|im_end|>");
        if (!e || e == q) goto next;
        size_t n = 0;
        int ok = 1;
        for (const char *c = q; c < e && ok; c++) {
            if (*c == '{' || *c == '}' || *c == '\'' || *c == '"') ok = 0;
            else if (c[0] == '\\' && c + 1 < e && c[1] == 'n') {
                if (n + 1 < cap) out[n++] = '\n';
                c++;
            } else if (n + 1 < cap) {
                out[n++] = *c;
            }
        }
        if (ok) {
            out[n] = '\0';
            return;
        }
    next:
        p = find(p + 1, (size_t)(end - (p + 1)), tag);
    }
    out[0] = '\0';
}

st_status_t st_chat_detect(const st_gguf_t *g, st_chat_template_t *out)
{
    st_str_t s;
    st_chat_template_t t;

    if (!out) return ST_ERR_INVALID;
    memset(&t, 0, sizeof(t));
    t.family = ST_CHAT_CHATML;
    if (!g || st_gguf_get_str(g, KEY_TEMPLATE, &s) != ST_OK) {
        t.fallback = 1;
        t.absent = 1;
        *out = t;
        return ST_OK;
    }
    const char *p = s.ptr;
    size_t n = s.len;
    if (find(p, n, "<|im_start|>")) {
        t.family = ST_CHAT_CHATML;
        extract_default_system(p, n, t.default_system, sizeof(t.default_system));
    } else if (find(p, n, "<|start_header_id|>") && find(p, n, "<|end_header_id|>")) {
        t.family = ST_CHAT_LLAMA3;
    } else if (find(p, n, "<start_of_turn>")) {
        t.family = ST_CHAT_GEMMA;
    } else if (find(p, n, "<|assistant|>") && find(p, n, "<|end|>")) {
        t.family = ST_CHAT_PHI3;
    } else if (find(p, n, "[INST]")) {
        t.family = find(p, n, "<<SYS>>") ? ST_CHAT_LLAMA2 : ST_CHAT_MISTRAL;
    } else {
        t.fallback = 1;
    }
    *out = t;
    return ST_OK;
}

/* ---- rendering --------------------------------------------------------- */

typedef struct wr {
    char  *out;
    size_t cap, n;
} wr_t;

static void put(wr_t *w, const char *s, size_t len)
{
    if (w->n < w->cap) {
        size_t room = w->cap - w->n;
        memcpy(w->out + w->n, s, ST_MIN(len, room));
    }
    w->n += len;
}

static void puts_(wr_t *w, const char *s) { put(w, s, strlen(s)); }

/* Python's str.strip() on ASCII whitespace, which is what the Llama 2/3
 * and Gemma templates apply to content (`| trim`, `.strip()`). */
static void put_trim(wr_t *w, const char *s)
{
    size_t len = strlen(s), a = 0;
    while (a < len && (s[a] == ' ' || (s[a] >= '\t' && s[a] <= '\r'))) a++;
    while (len > a && (s[len - 1] == ' ' || (s[len - 1] >= '\t' && s[len - 1] <= '\r'))) len--;
    put(w, s + a, len - a);
}

static int is_role(const st_chat_msg_t *m, const char *r) { return strcmp(m->role, r) == 0; }

static void render_chatml(const st_chat_template_t *t, const st_chat_msg_t *m, size_t n, int gen, wr_t *w)
{
    if (n && t->default_system[0] && !is_role(&m[0], "system")) {
        puts_(w, "<|im_start|>system\n");
        puts_(w, t->default_system);
        puts_(w, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        puts_(w, "<|im_start|>");
        puts_(w, m[i].role);
        puts_(w, "\n");
        puts_(w, m[i].content);
        puts_(w, "<|im_end|>\n");
    }
    if (gen) puts_(w, "<|im_start|>assistant\n");
}

static void render_llama2(const st_chat_msg_t *m, size_t n, wr_t *w)
{
    const char *sys = NULL;
    size_t i = 0;
    if (n && is_role(&m[0], "system")) {
        sys = m[0].content;
        i = 1;
    }
    for (size_t k = 0; i < n; i++, k++) {
        if (is_role(&m[i], "user")) {
            puts_(w, "<s>[INST] ");
            if (k == 0 && sys) {
                puts_(w, "<<SYS>>\n");
                puts_(w, sys);
                puts_(w, "\n<</SYS>>\n\n");
                /* the reference strips the whole joined content: only the
                 * system text's leading space could differ; keep it simple */
                put_trim(w, m[i].content);
            } else {
                put_trim(w, m[i].content);
            }
            puts_(w, " [/INST]");
        } else if (is_role(&m[i], "assistant")) {
            puts_(w, " ");
            put_trim(w, m[i].content);
            puts_(w, " </s>");
        }
    }
}

static void render_mistral(const st_chat_msg_t *m, size_t n, wr_t *w)
{
    const char *sys = NULL;
    size_t i = 0;
    if (n && is_role(&m[0], "system")) {
        sys = m[0].content;
        i = 1;
    }
    puts_(w, "<s>");
    for (int first = 1; i < n; i++) {
        if (is_role(&m[i], "user")) {
            puts_(w, "[INST] ");
            if (first && sys) {
                puts_(w, sys);
                puts_(w, "\n\n");
            }
            puts_(w, m[i].content);
            puts_(w, " [/INST]");
            first = 0;
        } else if (is_role(&m[i], "assistant")) {
            puts_(w, m[i].content);
            puts_(w, "</s>");
        }
    }
}

static void render_llama3(const st_chat_msg_t *m, size_t n, int gen, wr_t *w)
{
    puts_(w, "<|begin_of_text|>");
    for (size_t i = 0; i < n; i++) {
        puts_(w, "<|start_header_id|>");
        puts_(w, m[i].role);
        puts_(w, "<|end_header_id|>\n\n");
        put_trim(w, m[i].content);
        puts_(w, "<|eot_id|>");
    }
    if (gen) puts_(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void render_gemma(const st_chat_msg_t *m, size_t n, int gen, wr_t *w)
{
    const char *sys = NULL;
    size_t i = 0;
    if (n && is_role(&m[0], "system")) {
        sys = m[0].content;
        i = 1;
    }
    puts_(w, "<bos>");
    for (int first = 1; i < n; i++, first = 0) {
        puts_(w, "<start_of_turn>");
        puts_(w, is_role(&m[i], "assistant") ? "model" : m[i].role);
        puts_(w, "\n");
        if (first && sys) {
            put_trim(w, sys);
            puts_(w, "\n\n");
        }
        put_trim(w, m[i].content);
        puts_(w, "<end_of_turn>\n");
    }
    if (gen) puts_(w, "<start_of_turn>model\n");
}

static void render_phi3(const st_chat_msg_t *m, size_t n, int gen, wr_t *w)
{
    for (size_t i = 0; i < n; i++) {
        puts_(w, "<|");
        puts_(w, m[i].role);
        puts_(w, "|>\n");
        puts_(w, m[i].content);
        puts_(w, "<|end|>\n");
    }
    if (gen) puts_(w, "<|assistant|>\n");
}

size_t st_chat_render(const st_chat_template_t *t, const st_chat_msg_t *msgs, size_t n_msgs,
                      int add_generation_prompt, char *out, size_t cap, st_status_t *status)
{
    wr_t w = {out, out && cap ? cap - 1 : 0, 0};   /* one byte kept for the NUL */
    st_status_t st = ST_OK;

    if (!t || (!msgs && n_msgs) || (unsigned)t->family >= ST_CHAT_FAMILY_COUNT_) {
        st = ST_ERR_INVALID;
        goto done;
    }
    for (size_t i = 0; i < n_msgs; i++)
        if (!msgs[i].role || !msgs[i].content) {
            st = ST_ERR_INVALID;
            goto done;
        }
    switch (t->family) {
    case ST_CHAT_LLAMA2:  render_llama2(msgs, n_msgs, &w); break;
    case ST_CHAT_MISTRAL: render_mistral(msgs, n_msgs, &w); break;
    case ST_CHAT_LLAMA3:  render_llama3(msgs, n_msgs, add_generation_prompt, &w); break;
    case ST_CHAT_GEMMA:   render_gemma(msgs, n_msgs, add_generation_prompt, &w); break;
    case ST_CHAT_PHI3:    render_phi3(msgs, n_msgs, add_generation_prompt, &w); break;
    default:              render_chatml(t, msgs, n_msgs, add_generation_prompt, &w); break;
    }
    if (w.n > w.cap) st = ST_ERR_RANGE;
done:
    if (out && cap) out[ST_MIN(w.n, w.cap)] = '\0';
    if (status) *status = st;
    return w.n;
}
