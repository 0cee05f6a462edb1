/*
 * plan_print.c - text and JSON renderings of a plan, and the small JSON and
 * byte-formatting helpers the topology printers share.
 */
#include "plan_internal.h"

#include <string.h>

void st_json_str(FILE *f, const char *s)
{
    if (!s) { fputs("null", f); return; }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

const char *st_fmt_bytes(uint64_t bytes, char *buf, size_t size)
{
    if (bytes >= (1ull << 30)) snprintf(buf, size, "%.2f GiB", bytes / 1073741824.0);
    else if (bytes >= (1ull << 20)) snprintf(buf, size, "%.1f MiB", bytes / 1048576.0);
    else if (bytes >= (1ull << 10)) snprintf(buf, size, "%.1f KiB", bytes / 1024.0);
    else snprintf(buf, size, "%llu B", (unsigned long long)bytes);
    return buf;
}

static const char *reason_str(st_plan_unused_reason_t r)
{
    return r == ST_PLAN_UNUSED_TOO_SMALL ? "too_small" : "not_needed";
}

void st_plan_write_text(const st_plan_t *plan, FILE *f)
{
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    fprintf(f, "layer plan: %u layers, context %u x %u sequence(s), %u stage(s)",
            plan->n_layer, plan->n_ctx, plan->n_seq, plan->n_stages);
    if (plan->latency_us >= 0) fprintf(f, ", link latency along the pipeline %.1f us", plan->latency_us);
    fprintf(f, "\n  stage time = layer weight MiB / speed: ideal %.4g, slowest stage %.4g (%+.1f%%)\n",
            plan->ideal / 1048576.0, plan->bottleneck / 1048576.0,
            plan->ideal > 0 ? 100.0 * (plan->bottleneck / plan->ideal - 1) : 0.0);
    for (uint32_t s = 0; s < plan->n_stages; s++) {
        const st_plan_stage_t *st = &plan->stages[s];
        const st_plan_worker_t *w = &plan->workers[st->worker];
        fprintf(f, "stage %u: worker %s%s%s%s: layers %u-%u (%u)%s%s\n", s, w->name,
                w->host[0] ? " (host " : "", w->host, w->host[0] ? ")" : "",
                st->first_layer, st->first_layer + st->n_layers - 1, st->n_layers,
                st->holds_embd ? " + embedding" : "", st->holds_output ? " + output head" : "");
        fprintf(f, "    memory %s weights + %s KV + %s activations = %s of %s; speed %g, time %.4g\n",
                st_fmt_bytes(st->weight_bytes, b1, sizeof b1), st_fmt_bytes(st->kv_bytes, b2, sizeof b2),
                st_fmt_bytes(st->act_bytes, b3, sizeof b3), st_fmt_bytes(st->total_bytes, b4, sizeof b4),
                st_fmt_bytes(w->mem_bytes, b5, sizeof b5), w->speed, st->time / 1048576.0);
    }
    for (uint32_t i = 0; i < plan->n_unused; i++) {
        const st_plan_unused_t *u = &plan->unused[i];
        const st_plan_worker_t *w = &plan->workers[u->worker];
        if (u->reason == ST_PLAN_UNUSED_TOO_SMALL)
            fprintf(f, "unused: worker %s is too small for one layer: needs %s, has %s\n", w->name,
                    st_fmt_bytes(u->need_bytes, b1, sizeof b1), st_fmt_bytes(w->mem_bytes, b2, sizeof b2));
        else
            fprintf(f, "unused: worker %s: the balanced split needs no layer from it\n", w->name);
    }
}

void st_plan_write_json(const st_plan_t *plan, FILE *f)
{
    fprintf(f, "{\n  \"n_layer\": %u,\n  \"n_ctx\": %u,\n  \"n_seq\": %u,\n", plan->n_layer,
            plan->n_ctx, plan->n_seq);
    fprintf(f, "  \"ideal_time\": %.17g,\n  \"bottleneck_time\": %.17g,\n  \"link_latency_us\": ",
            plan->ideal, plan->bottleneck);
    if (plan->latency_us >= 0) fprintf(f, "%.17g", plan->latency_us);
    else fputs("null", f);
    fputs(",\n  \"stages\": [", f);
    for (uint32_t s = 0; s < plan->n_stages; s++) {
        const st_plan_stage_t *st = &plan->stages[s];
        const st_plan_worker_t *w = &plan->workers[st->worker];
        fprintf(f, "%s\n    {\"worker\": ", s ? "," : "");
        st_json_str(f, w->name);
        fputs(", \"host\": ", f);
        st_json_str(f, w->host[0] ? w->host : NULL);
        fprintf(f, ", \"first_layer\": %u, \"last_layer\": %u, \"n_layers\": %u, "
                   "\"holds_embd\": %s, \"holds_output\": %s, \"weight_bytes\": %llu, "
                   "\"kv_bytes\": %llu, \"act_bytes\": %llu, \"total_bytes\": %llu, "
                   "\"mem_bytes\": %llu, \"speed\": %.17g, \"time\": %.17g}",
                st->first_layer, st->first_layer + st->n_layers - 1, st->n_layers,
                st->holds_embd ? "true" : "false", st->holds_output ? "true" : "false",
                (unsigned long long)st->weight_bytes, (unsigned long long)st->kv_bytes,
                (unsigned long long)st->act_bytes, (unsigned long long)st->total_bytes,
                (unsigned long long)w->mem_bytes, w->speed, st->time);
    }
    fputs("\n  ],\n  \"unused\": [", f);
    for (uint32_t i = 0; i < plan->n_unused; i++) {
        const st_plan_unused_t *u = &plan->unused[i];
        fprintf(f, "%s\n    {\"worker\": ", i ? "," : "");
        st_json_str(f, plan->workers[u->worker].name);
        fprintf(f, ", \"reason\": \"%s\", \"need_bytes\": %llu, \"mem_bytes\": %llu}",
                reason_str(u->reason), (unsigned long long)u->need_bytes,
                (unsigned long long)plan->workers[u->worker].mem_bytes);
    }
    fputs("\n  ]\n}\n", f);
}
