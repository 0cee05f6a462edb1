/*
 * strata tokenize - encode text with a model's tokenizer, decode ids, render
 * chat prompts. The integration tests compare it with Hugging Face
 * `tokenizers` (tests/py/test_tokenizer_*.py).
 *
 *   strata tokenize -m M --text "Hello"            ids, space separated
 *   strata tokenize -m M --file F --json           [ids] of the whole file
 *   strata tokenize -m M --file F --nul --json     [[ids], ...]: one array per
 *                                                  NUL-separated record
 *                                                  (--lines: per line)
 *   strata tokenize -m M --decode 1,2,3            the text, then a newline
 *   strata tokenize -m M --chat --msg user=Hi      the rendered prompt's ids
 *                                 [--render]       ... or the prompt itself
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_chat.h"
#include "st_gguf.h"
#include "st_tokenizer.h"
#include "st_util.h"

const char st_cmd_tokenize_help[] = "encode text / decode ids / render chat prompts with a model's tokenizer";

#define MAX_MSGS 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: strata tokenize -m MODEL [--text T | --file F [--lines | --nul]] [--special] [--bos] [--json]\n"
            "       strata tokenize -m MODEL --decode ID,ID,... [--special] [--json]\n"
            "       strata tokenize -m MODEL --chat --msg ROLE=CONTENT ... [--no-gen] [--render] [--json]\n"
            "       strata tokenize -m MODEL --info\n"
            "  --special   match control tokens written in the text (<|im_start|>); with\n"
            "              --decode, print control tokens' text\n"
            "  --bos       add BOS when the model asks for it (add_bos_token)\n"
            "  --lines/--nul  encode each line / NUL-separated record of --file on its own\n"
            "  --json      ids as a JSON array (an array of arrays with --lines/--nul);\n"
            "              decoded text as a JSON string\n"
            "  --bench N   encode N times and report the time per pass on stderr\n");
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) {
        fprintf(stderr, "strata tokenize: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (n + 4096 + 1 > cap) {
            size_t nc = cap ? cap * 2 : 65536;
            char *b = realloc(buf, nc);
            if (!b) {
                free(buf);
                fclose(f);
                fprintf(stderr, "strata tokenize: out of memory\n");
                return NULL;
            }
            buf = b;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "strata tokenize: %s: read error\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

typedef struct ids_buf {
    int32_t *ids;
    size_t   cap, n;
} ids_buf_t;

static st_status_t encode(const st_tokenizer_t *t, const char *s, size_t len, unsigned flags, ids_buf_t *b)
{
    for (;;) {
        st_status_t st = st_tokenizer_encode(t, s, len, flags, b->ids, b->cap, &b->n);
        if (st != ST_ERR_RANGE) return st;
        int32_t *ids = realloc(b->ids, (b->n + 16) * sizeof(*ids));
        if (!ids) return ST_ERR_NOMEM;
        b->ids = ids;
        b->cap = b->n + 16;
    }
}

static void print_ids(const ids_buf_t *b, int json)
{
    if (json) putchar('[');
    for (size_t i = 0; i < b->n; i++) printf("%s%d", i ? (json ? "," : " ") : "", b->ids[i]);
    if (json) putchar(']');
}

static int do_decode(const st_tokenizer_t *t, const char *list, int special, int json)
{
    size_t cap = st_tokenizer_max_piece(t) + 16, n_out = 0, out_cap = 4096;
    char *piece = malloc(cap), *out = malloc(out_cap);
    st_detok_t d;
    int rc = 0;

    if (!piece || !out) {
        fprintf(stderr, "strata tokenize: out of memory\n");
        rc = 1;
        goto done;
    }
    st_detok_init(&d, t);
    for (const char *p = list; *p;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= (long)st_tokenizer_n_vocab(t) || (*end && *end != ',')) {
            fprintf(stderr, "strata tokenize: --decode: bad id at '%s' (ids are 0..%u, comma separated)\n", p,
                    st_tokenizer_n_vocab(t) - 1);
            rc = 2;
            goto done;
        }
        size_t m;
        if (special) {
            /* control tokens shown as their text: decode piece by piece */
            m = st_tokenizer_piece(t, (int32_t)v, 1, piece, cap);
            m = ST_MIN(m, cap);
        } else {
            m = st_detok_push(&d, (int32_t)v, piece, cap);
        }
        if (n_out + m + 16 > out_cap) {
            char *o = realloc(out, 2 * (n_out + m + 16));
            if (!o) { rc = 1; goto done; }
            out = o;
            out_cap = 2 * (n_out + m + 16);
        }
        memcpy(out + n_out, piece, m);
        n_out += m;
        p = *end ? end + 1 : end;
    }
    if (!special) n_out += st_detok_flush(&d, out + n_out, out_cap - n_out);
    if (json) json_string(stdout, out, n_out);
    else fwrite(out, 1, n_out, stdout);
    putchar('\n');
done:
    free(piece);
    free(out);
    return rc;
}

int st_cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *file = NULL, *decode = NULL;
    int special = 0, bos = 0, json = 0, split = 0, chat = 0, render = 0, gen = 1, info = 0;
    long bench = 0;
    st_chat_msg_t msgs[MAX_MSGS];
    size_t n_msgs = 0;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has_val) model = argv[++i];
        else if (!strcmp(a, "--text") && has_val) text = argv[++i];
        else if (!strcmp(a, "--file") && has_val) file = argv[++i];
        else if (!strcmp(a, "--decode") && has_val) decode = argv[++i];
        else if (!strcmp(a, "--special")) special = 1;
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--lines")) split = '\n';
        else if (!strcmp(a, "--nul")) split = -1;
        else if (!strcmp(a, "--chat")) chat = 1;
        else if (!strcmp(a, "--render")) render = 1;
        else if (!strcmp(a, "--no-gen")) gen = 0;
        else if (!strcmp(a, "--info")) info = 1;
        else if (!strcmp(a, "--bench") && has_val) bench = strtol(argv[++i], NULL, 10);
        else if (!strcmp(a, "--msg") && has_val) {
            char *m = argv[++i], *eq = strchr(m, '=');
            if (!eq || n_msgs == MAX_MSGS) {
                fprintf(stderr, "strata tokenize: --msg wants ROLE=CONTENT (at most %d)\n", MAX_MSGS);
                return 2;
            }
            *eq = '\0';
            msgs[n_msgs++] = (st_chat_msg_t){m, eq + 1};
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "strata tokenize: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model || (!!text + !!file + !!decode + chat + info) != 1) {
        usage(stderr);
        return 2;
    }

    st_error_t err = {{0}};
    st_gguf_t *g = NULL;
    st_tokenizer_t *t = NULL;
    char *buf = NULL, *prompt = NULL;
    ids_buf_t ids = {0};
    uint64_t t0 = 0, t_create = 0;
    if (st_gguf_open(model, &g, &err) != ST_OK ||
        (t0 = st_now_ns(), st_tokenizer_create(g, &t, &err)) != ST_OK) {
        fprintf(stderr, "strata tokenize: %s\n", err.msg);
        goto done;
    }
    t_create = st_now_ns() - t0;
    unsigned flags = (special ? ST_TOK_PARSE_SPECIAL : 0) | (bos ? ST_TOK_ADD_BOS : 0);

    if (info) {
        st_chat_template_t ct;
        st_chat_detect(g, &ct);
        printf("kind %s\npre %s\nn_vocab %u\nbos %d\neos %d\nchat %s%s\ndefault_system %s\ncreate_ms %.3f\n",
               st_tokenizer_kind_name(t), st_tokenizer_pre_name(t), st_tokenizer_n_vocab(t),
               st_tokenizer_bos(t), st_tokenizer_eos(t), st_chat_family_name(ct.family),
               ct.fallback ? " (fallback)" : "", ct.default_system, (double)t_create * 1e-6);
        rc = 0;
        goto done;
    }
    if (decode) {
        rc = do_decode(t, decode, special, json);
        goto done;
    }

    size_t len = 0;
    if (chat) {
        st_chat_template_t ct;
        st_status_t st;
        st_chat_detect(g, &ct);
        if (ct.fallback) fprintf(stderr, "strata tokenize: chat template not recognised, using ChatML\n");
        len = st_chat_render(&ct, msgs, n_msgs, gen, NULL, 0, &st);
        prompt = malloc(len + 1);
        if (!prompt) goto done;
        st_chat_render(&ct, msgs, n_msgs, gen, prompt, len + 1, &st);
        if (st != ST_OK) {
            fprintf(stderr, "strata tokenize: chat render: %s\n", st_status_str(st));
            goto done;
        }
        if (render) {
            if (json) { json_string(stdout, prompt, len); putchar('\n'); }
            else fwrite(prompt, 1, len, stdout);
            rc = 0;
            goto done;
        }
        text = prompt;
        flags |= ST_TOK_PARSE_SPECIAL;   /* the template's markers are control tokens */
    } else if (file) {
        if (!(buf = read_file(file, &len))) goto done;
        text = buf;
    } else {
        len = strlen(text);
    }

    /* records: the whole text, or its lines / NUL-separated parts */
    if (split && json) putchar('[');
    size_t n_rec = 0, n_tok = 0;
    uint64_t t_enc = 0;
    for (size_t start = 0; start < len || (!split && n_rec == 0);) {
        size_t end = len;
        if (split) {
            const char *e = memchr(text + start, split == -1 ? '\0' : '\n', len - start);
            end = e ? (size_t)(e - text) : len;
        }
        uint64_t a = st_now_ns();
        st_status_t st = encode(t, text + start, end - start, flags, &ids);
        for (long r = 1; r < bench && st == ST_OK; r++) st = encode(t, text + start, end - start, flags, &ids);
        t_enc += st_now_ns() - a;
        if (st != ST_OK) {
            fprintf(stderr, "strata tokenize: encode: %s\n", st_status_str(st));
            goto done;
        }
        if (split && json && n_rec) putchar(',');
        print_ids(&ids, json);
        if (!(split && json)) putchar('\n');
        n_rec++;
        n_tok += ids.n;
        start = end + 1;
        if (!split) break;
    }
    if (split && json) puts("]");
    if (bench > 0)
        fprintf(stderr, "tokenize: create %.3f ms; %zu records, %zu bytes, %zu tokens per pass; "
                "encode %.3f ms per pass (%.2f us per record, %.1f MB/s) over %ld passes\n",
                (double)t_create * 1e-6, n_rec, len, n_tok, (double)t_enc * 1e-6 / (double)bench,
                (double)t_enc * 1e-3 / (double)bench / (double)(n_rec ? n_rec : 1),
                (double)len * (double)bench / ((double)t_enc * 1e-9) / 1e6, bench);
    rc = 0;
done:
    free(ids.ids);
    free(buf);
    free(prompt);
    st_tokenizer_free(t);
    st_gguf_close(g);
    return rc;
}
