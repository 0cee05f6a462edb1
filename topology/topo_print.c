/*
 * topo_print.c - `strata topo` renderings of a topology and a placement.
 * The JSON keys are a contract with scripts and tests (docs/TOPOLOGY.md).
 */
#include "topo_internal.h"
#include "plan_internal.h"

static const char *kind_str(st_topo_nic_kind_t k)
{
    return k == ST_TOPO_NIC_RDMA ? "rdma" : "ethernet";
}

static void json_int_or_null(FILE *f, int v)
{
    if (v >= 0) fprintf(f, "%d", v);
    else fputs("null", f);
}

void st_topo_write_text(const st_topo_t *t, const st_topo_place_t *pl, FILE *f)
{
    char b[32];
    const st_topo_summary_t *s = &t->sum;
    fprintf(f, "topology of %s: %u package(s), %u NUMA node(s), %u core(s), %u PU(s), %u GPU(s), %u NIC(s)\n",
            t->source, s->n_packages, s->n_numa, s->n_cores, s->n_pus, s->n_gpus, s->n_nics);
    for (unsigned i = 0; i < s->n_numa; i++)
        fprintf(f, "  NUMA %u: %s, cpus %s\n", t->numa[i].os_index,
                st_fmt_bytes(t->numa[i].memory_bytes, b, sizeof b), t->numa[i].cpuset);
    for (unsigned i = 0; i < s->n_gpus; i++) {
        const st_topo_gpu_t *g = &t->gpus[i];
        fprintf(f, "  GPU %u: %s%s%s, CUDA ordinal %d (%s), NUMA %d, cpus %s", i, g->pci,
                g->model[0] ? " " : "", g->model, g->cuda_ordinal, g->cuda_source ? g->cuda_source : "?",
                g->numa, g->local_cpus);
        if (g->nearest_nic >= 0)
            fprintf(f, ", nearest NIC %s %s\n", t->nics[g->nearest_nic].name, g->nic_relation);
        else
            fputs(", no NIC\n", f);
    }
    for (unsigned i = 0; i < s->n_nics; i++) {
        const st_topo_nic_t *n = &t->nics[i];
        fprintf(f, "  NIC %u: %s (%s%s%s) %s, NUMA %d, cpus %s, UCX device %s%s\n", i, n->name,
                kind_str(n->kind), n->netdev && n->kind == ST_TOPO_NIC_RDMA ? ", netdev " : "",
                n->netdev && n->kind == ST_TOPO_NIC_RDMA ? n->netdev : "", n->pci[0] ? n->pci : "no PCI",
                n->numa, n->local_cpus, n->ucx_dev, n->port_down ? " (port down)" : "");
    }
    if (t->warnings[0]) fprintf(f, "warning: %s\n", t->warnings);
    if (!pl) return;
    fprintf(f, "placement of %u worker(s):\n", pl->n);
    for (unsigned i = 0; i < pl->n; i++)
        fprintf(f, "  %s\n", pl->w[i].explanation);
}

void st_topo_write_json(const st_topo_t *t, const st_topo_place_t *pl, FILE *f)
{
    const st_topo_summary_t *s = &t->sum;
    fputs("{\n  \"source\": ", f);
    st_json_str(f, t->source);
    fprintf(f, ",\n  \"this_system\": %s,\n  \"packages\": %u,\n  \"cores\": %u,\n  \"pus\": %u,\n",
            s->this_system ? "true" : "false", s->n_packages, s->n_cores, s->n_pus);
    fputs("  \"numa_nodes\": [", f);
    for (unsigned i = 0; i < s->n_numa; i++) {
        fprintf(f, "%s\n    {\"os_index\": %u, \"memory_bytes\": %llu, \"cpuset\": ", i ? "," : "",
                t->numa[i].os_index, (unsigned long long)t->numa[i].memory_bytes);
        st_json_str(f, t->numa[i].cpuset);
        fputc('}', f);
    }
    fputs("\n  ],\n  \"gpus\": [", f);
    for (unsigned i = 0; i < s->n_gpus; i++) {
        const st_topo_gpu_t *g = &t->gpus[i];
        fprintf(f, "%s\n    {\"index\": %u, \"pci\": ", i ? "," : "", g->index);
        st_json_str(f, g->pci);
        fputs(", \"model\": ", f);
        st_json_str(f, g->model[0] ? g->model : NULL);
        fputs(", \"numa\": ", f);
        json_int_or_null(f, g->numa);
        fputs(", \"cuda_ordinal\": ", f);
        json_int_or_null(f, g->cuda_ordinal);
        fputs(", \"cuda_ordinal_source\": ", f);
        st_json_str(f, g->cuda_source);
        fputs(", \"nearest_nic\": ", f);
        st_json_str(f, g->nearest_nic >= 0 ? t->nics[g->nearest_nic].name : NULL);
        fputs(", \"nic_relation\": ", f);
        st_json_str(f, g->nic_relation);
        fputs(", \"local_cpus\": ", f);
        st_json_str(f, g->local_cpus);
        fputc('}', f);
    }
    fputs("\n  ],\n  \"nics\": [", f);
    for (unsigned i = 0; i < s->n_nics; i++) {
        const st_topo_nic_t *n = &t->nics[i];
        fprintf(f, "%s\n    {\"index\": %u, \"name\": ", i ? "," : "", n->index);
        st_json_str(f, n->name);
        fprintf(f, ", \"kind\": \"%s\", \"pci\": ", kind_str(n->kind));
        st_json_str(f, n->pci[0] ? n->pci : NULL);
        fputs(", \"numa\": ", f);
        json_int_or_null(f, n->numa);
        fputs(", \"netdev\": ", f);
        st_json_str(f, n->netdev);
        fprintf(f, ", \"port\": %u, \"port_down\": %s, \"ucx_dev\": ", n->port, n->port_down ? "true" : "false");
        st_json_str(f, n->ucx_dev);
        fputs(", \"local_cpus\": ", f);
        st_json_str(f, n->local_cpus);
        fputc('}', f);
    }
    fputs("\n  ],\n  \"warnings\": [", f);
    if (t->warnings[0]) st_json_str(f, t->warnings);
    fputs("],\n  \"workers\": [", f);
    for (unsigned i = 0; pl && i < pl->n; i++) {
        const st_topo_worker_t *w = &pl->w[i];
        fprintf(f, "%s\n    {\"index\": %u, \"cpus\": ", i ? "," : "", w->index);
        st_json_str(f, w->cpus);
        fputs(", \"numa\": ", f);
        json_int_or_null(f, w->numa);
        fputs(", \"gpu\": ", f);
        json_int_or_null(f, w->gpu);
        fputs(", \"gpu_pci\": ", f);
        st_json_str(f, w->gpu >= 0 ? t->gpus[w->gpu].pci : NULL);
        fputs(", \"cuda_ordinal\": ", f);
        json_int_or_null(f, w->cuda_ordinal);
        fputs(", \"nic\": ", f);
        st_json_str(f, w->nic >= 0 ? t->nics[w->nic].name : NULL);
        fputs(", \"ucx_net_devices\": ", f);
        st_json_str(f, w->ucx_net_devices);
        fputs(", \"explanation\": ", f);
        st_json_str(f, w->explanation);
        fputc('}', f);
    }
    fputs("\n  ]\n}\n", f);
}
