/*
 * strata topo - the discovered machine and the placement of its workers,
 * or the layer plan of a model over a described set of workers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_error.h"
#include "st_plan.h"
#ifdef STRATA_HAVE_HWLOC
#include "st_topo.h"
#endif
#ifdef STRATA_HAVE_PLAN_MODEL
#include "st_plan_model.h"
#endif

const char st_cmd_topo_help[] = "show the machine, the worker placement, or a model's layer plan";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: strata topo [--xml FILE] [--workers N] [--cpus LIST] [--no-cuda] [--json]\n"
            "       strata topo --plan MODEL --workers-file FILE [--ctx N] [--seqs N] [--json]\n"
            "\n"
            "  --xml FILE          read the topology from `lstopo --of xml` output\n"
            "  --workers N         workers on this host (default: one per GPU, else per NUMA node)\n"
            "  --cpus LIST         place workers within these PUs only (e.g. 2-15)\n"
            "  --no-cuda           do not ask the CUDA driver for device ordinals\n"
            "  --plan MODEL        print the layer plan of MODEL (GGUF) instead\n"
            "  --workers-file FILE the workers to plan for (format: docs/TOPOLOGY.md)\n"
            "  --ctx N             context length per sequence (default: the model's)\n"
            "  --seqs N            sequences served at once (default 1)\n"
            "  --json              machine-readable output\n");
}

static int parse_uint(const char *opt, const char *s, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v = s ? strtoul(s, &end, 10) : 0;
    if (!s || !*s || *end || s[0] == '-' || v > max) {
        fprintf(stderr, "strata topo: %s needs a number 0..%u, got '%s'\n", opt, max, s ? s : "");
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static int do_plan(const char *model, const char *workers_file, unsigned n_ctx, unsigned n_seq, int json)
{
#ifdef STRATA_HAVE_PLAN_MODEL
    st_error_t err = {{0}};
    st_plan_workers_t *ws = NULL;
    st_plan_t *plan = NULL;
    st_plan_model_desc_t d;
    int rc = 1;

    if (st_plan_workers_load(workers_file, &ws, &err) != ST_OK) {
        fprintf(stderr, "strata topo: %s\n", err.msg);
        return 1;
    }
    if (st_plan_model_from_file(model, n_ctx, n_seq, &d, &err) != ST_OK) {
        fprintf(stderr, "strata topo: %s\n", err.msg);
        goto out_ws;
    }
    st_plan_params_t p = {
        .size = sizeof(p), .model = d.model, .n_ctx = d.n_ctx, .n_seq = n_seq,
        .n_workers = st_plan_workers_count(ws), .workers = st_plan_workers_array(ws),
        .latency_us = st_plan_workers_latency(ws),
    };
    if (st_plan_compute(&p, &plan, &err) != ST_OK) {
        fprintf(stderr, "strata topo: %s: %s\n", model, err.msg);
        goto out_model;
    }
    if (json) {
        st_plan_write_json(plan, stdout);
    } else {
        printf("model %s (%s)\n", d.name, model);
        st_plan_write_text(plan, stdout);
    }
    rc = 0;
    st_plan_free(plan);
out_model:
    st_plan_model_desc_free(&d);
out_ws:
    st_plan_workers_free(ws);
    return rc;
#else
    (void)model; (void)workers_file; (void)n_ctx; (void)n_seq; (void)json;
    fprintf(stderr, "strata topo: built without the model library, --plan is not available\n");
    return 1;
#endif
}

static int do_topo(const char *xml, unsigned n_workers, const char *cpus, int no_cuda, int json)
{
#ifdef STRATA_HAVE_HWLOC
    st_error_t err = {{0}};
    st_topo_t *t = NULL;
    st_topo_place_t *pl = NULL;
    st_topo_open_params_t op = { .size = sizeof(op), .xml_path = xml, .no_cuda = no_cuda };
    if (st_topo_open(&op, &t, &err) != ST_OK) {
        fprintf(stderr, "strata topo: %s\n", err.msg);
        return 1;
    }
    st_topo_place_params_t pp = { .size = sizeof(pp), .n_workers = n_workers, .cpus = cpus };
    if (st_topo_place(t, &pp, &pl, &err) != ST_OK) {
        fprintf(stderr, "strata topo: %s\n", err.msg);
        st_topo_close(t);
        return 1;
    }
    if (json) st_topo_write_json(t, pl, stdout);
    else st_topo_write_text(t, pl, stdout);
    st_topo_place_free(pl);
    st_topo_close(t);
    return 0;
#else
    (void)xml; (void)n_workers; (void)cpus; (void)no_cuda; (void)json;
    fprintf(stderr, "strata topo: built without hwloc\n");
    return 1;
#endif
}

int st_cmd_topo(int argc, char **argv)
{
    const char *xml = NULL, *cpus = NULL, *model = NULL, *workers_file = NULL;
    unsigned n_workers = 0, n_ctx = 0, n_seq = 1;
    int json = 0, no_cuda = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--no-cuda")) no_cuda = 1;
        else if (!strcmp(a, "--xml") && v) { xml = v; i++; }
        else if (!strcmp(a, "--cpus") && v) { cpus = v; i++; }
        else if (!strcmp(a, "--plan") && v) { model = v; i++; }
        else if (!strcmp(a, "--workers-file") && v) { workers_file = v; i++; }
        else if (!strcmp(a, "--workers")) { if (parse_uint(a, v, 4096, &n_workers) < 0) return 2; i++; }
        else if (!strcmp(a, "--ctx")) { if (parse_uint(a, v, 1u << 24, &n_ctx) < 0) return 2; i++; }
        else if (!strcmp(a, "--seqs")) {
            if (parse_uint(a, v, 1u << 16, &n_seq) < 0) return 2;
            if (n_seq == 0) { fprintf(stderr, "strata topo: --seqs must be > 0\n"); return 2; }
            i++;
        } else {
            fprintf(stderr, "strata topo: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (model || workers_file) {
        if (!model || !workers_file) {
            fprintf(stderr, "strata topo: --plan MODEL and --workers-file FILE go together\n");
            return 2;
        }
        return do_plan(model, workers_file, n_ctx, n_seq, json);
    }
    return do_topo(xml, n_workers, cpus, no_cuda, json);
}
