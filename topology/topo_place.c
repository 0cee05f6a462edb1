/*
 * topo_place.c - decides, for each worker of this host, its cores, memory
 * node, GPU and NIC (rules in st_topo.h), and says why in one sentence.
 */
#include "topo_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_util.h"

/* Splits `set` (restricted to `allowed`) into m parts and writes part j:
 * whole cores when there are at least m of them, else single PUs, else PU
 * j mod n_pus (workers then share PUs; *shared is set). */
static int split_cpus(hwloc_topology_t h, hwloc_const_bitmap_t set, hwloc_const_bitmap_t allowed,
                      unsigned m, unsigned j, hwloc_bitmap_t out, int *shared)
{
    hwloc_bitmap_t avail = hwloc_bitmap_alloc();
    if (!avail) return -1;
    hwloc_bitmap_and(avail, set, allowed);
    hwloc_bitmap_zero(out);
    *shared = 0;

    unsigned n_cores = 0;
    for (hwloc_obj_t c = NULL; (c = hwloc_get_next_obj_by_type(h, HWLOC_OBJ_CORE, c));)
        n_cores += hwloc_bitmap_intersects(c->cpuset, avail);
    int n_pus = hwloc_bitmap_weight(avail);
    if (n_pus <= 0) { hwloc_bitmap_free(avail); return -1; }

    if (n_cores >= m) {
        unsigned lo = (unsigned)((uint64_t)j * n_cores / m), hi = (unsigned)((uint64_t)(j + 1) * n_cores / m), k = 0;
        for (hwloc_obj_t c = NULL; (c = hwloc_get_next_obj_by_type(h, HWLOC_OBJ_CORE, c));) {
            if (!hwloc_bitmap_intersects(c->cpuset, avail)) continue;
            if (k >= lo && k < hi) {
                hwloc_bitmap_t part = hwloc_bitmap_alloc();
                if (!part) { hwloc_bitmap_free(avail); return -1; }
                hwloc_bitmap_and(part, c->cpuset, avail);
                hwloc_bitmap_or(out, out, part);
                hwloc_bitmap_free(part);
            }
            k++;
        }
    } else {
        unsigned np = (unsigned)n_pus;
        unsigned lo = np >= m ? (unsigned)((uint64_t)j * np / m) : j % np;
        unsigned hi = np >= m ? (unsigned)((uint64_t)(j + 1) * np / m) : lo + 1;
        *shared = np < m;
        unsigned k = 0;
        int pu;
        hwloc_bitmap_foreach_begin(pu, avail)
            if (k >= lo && k < hi) hwloc_bitmap_set(out, (unsigned)pu);
            k++;
        hwloc_bitmap_foreach_end();
    }
    hwloc_bitmap_free(avail);
    return 0;
}

/* Best NIC for a device/NUMA node; among equals the one with fewer workers,
 * so two GPUs equally close to two NICs use both. */
static int pick_nic(const st_topo_t *t, hwloc_obj_t dev, int numa, const unsigned *load,
                    topo_nic_rank_t *rank_out)
{
    int best = -1;
    topo_nic_rank_t br = {0};
    for (unsigned i = 0; i < t->sum.n_nics; i++) {
        topo_nic_rank_t r = topo_nic_rank(t, dev, numa, i);
        int c = best < 0 ? -1 : topo_nic_rank_cmp(r, br);
        if (c < 0 || (c == 0 && load[i] < load[best])) { best = (int)i; br = r; }
    }
    *rank_out = br;
    return best;
}

/* Memory node of a cpuset: the node when its PUs are all on one, else -1. */
static int numa_of_cpus(const st_topo_t *t, hwloc_const_bitmap_t cpus)
{
    int found = -1;
    for (unsigned i = 0; i < t->sum.n_numa; i++) {
        if (!hwloc_bitmap_intersects(t->numa_cpus[i], cpus)) continue;
        if (!hwloc_bitmap_isincluded(cpus, t->numa_cpus[i])) return -1;
        if (found < 0) found = (int)t->numa[i].os_index;
    }
    return found;
}

static void nic_phrase(const st_topo_t *t, int nic, topo_nic_rank_t r, char *buf, size_t size)
{
    if (nic < 0) { snprintf(buf, size, "no NIC"); return; }
    const st_topo_nic_t *n = &t->nics[nic];
    char where[64] = "";
    if (r.tier == 3 && n->numa >= 0) snprintf(where, sizeof(where), " (NUMA %d)", n->numa);
    snprintf(buf, size, "NIC %s%s%s %s%s%s", n->name,
             n->kind == ST_TOPO_NIC_ETHERNET ? " (Ethernet" : "",
             n->kind == ST_TOPO_NIC_ETHERNET ? (r.kind == 1 && t->sum.n_gpus ? ", no RDMA NIC on this host)" : ")") : "",
             topo_tier_str(r.tier), where,
             r.tier == 3 ? ": traffic crosses the socket interconnect" : "");
    if (n->port_down) {
        size_t l = strlen(buf);
        snprintf(buf + l, size - l, " (port %u is down)", n->port);
    }
}

/* Fills worker i from its cpus, NUMA node, GPU and NIC. */
static int finish_worker(const st_topo_t *t, st_topo_place_t *pl, unsigned i, int gpu, int nic,
                         topo_nic_rank_t r, int shared)
{
    st_topo_worker_t *w = &pl->w[i];
    char nicb[256], gpub[96] = "", numab[32] = "", line[512];
    w->index = i;
    w->gpu = gpu;
    w->nic = nic;
    w->cuda_ordinal = gpu >= 0 ? t->gpus[gpu].cuda_ordinal : -1;
    w->numa = gpu >= 0 && t->gpus[gpu].numa >= 0 ? t->gpus[gpu].numa : numa_of_cpus(t, pl->cpus[i]);
    if (w->numa >= 0) hwloc_bitmap_only(pl->nodes[i], (unsigned)w->numa);
    else hwloc_bitmap_zero(pl->nodes[i]);
    w->cpus = topo_bitmap_str(&pl->strings, pl->cpus[i]);
    w->ucx_net_devices = nic >= 0 ? topo_str(&pl->strings, t->nics[nic].ucx_dev) : NULL;
    if (!w->cpus || (nic >= 0 && !w->ucx_net_devices)) return -1;

    nic_phrase(t, nic, r, nicb, sizeof(nicb));
    if (gpu >= 0) snprintf(gpub, sizeof(gpub), "GPU %d (%s) ", gpu, t->gpus[gpu].pci);
    if (w->numa >= 0) snprintf(numab, sizeof(numab), "on NUMA %d", w->numa);
    else snprintf(numab, sizeof(numab), "across NUMA nodes");
    snprintf(line, sizeof(line), "worker %u: %s%s, %s, cpus %s%s", i, gpub, numab, nicb, w->cpus,
             shared ? " (shared with other workers: more workers than PUs)" : "");
    w->explanation = topo_str(&pl->strings, line);
    return w->explanation ? 0 : -1;
}

st_status_t st_topo_place(const st_topo_t *t, const st_topo_place_params_t *params,
                          st_topo_place_t **out, st_error_t *err)
{
    st_status_t s = ST_OK;
    if (!t || !params || params->size < sizeof(*params) || !out)
        return st_error_set(err, ST_ERR_INVALID, "place: params missing or too small");
    hwloc_bitmap_t allowed = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(t->h));
    st_topo_place_t *pl = calloc(1, sizeof(*pl));
    unsigned *nic_load = calloc(t->sum.n_nics + 1, sizeof(*nic_load));
    if (!allowed || !pl || !nic_load) { s = ST_ERR_NOMEM; goto err_place; }
    if (params->cpus) {
        hwloc_bitmap_t want = hwloc_bitmap_alloc();
        if (!want || hwloc_bitmap_list_sscanf(want, params->cpus) < 0) {
            hwloc_bitmap_free(want);
            s = st_error_set(err, ST_ERR_INVALID, "place: cpus '%.64s' is not a PU list such as 0-7,16", params->cpus);
            goto err_place;
        }
        hwloc_bitmap_and(allowed, allowed, want);
        hwloc_bitmap_free(want);
    }
    if (hwloc_bitmap_iszero(allowed)) {
        s = st_error_set(err, ST_ERR_INVALID, "place: no usable PU (cpus '%.64s')",
                         params->cpus ? params->cpus : "");
        goto err_place;
    }

    unsigned n_gpus = t->sum.n_gpus;
    unsigned n = params->n_workers;
    /* NUMA nodes with PUs we may use (memory-only nodes host no worker). */
    unsigned n_cpu_nodes = 0;
    for (unsigned i = 0; i < t->sum.n_numa; i++) n_cpu_nodes += hwloc_bitmap_intersects(t->numa_cpus[i], allowed);
    if (n == 0) n = n_gpus ? n_gpus : ST_MAX(1u, n_cpu_nodes);
    if (n_gpus && n > n_gpus) {
        s = st_error_set(err, ST_ERR_RANGE, "place: %u workers asked on a host with %u GPUs (one per GPU)",
                         n, n_gpus);
        goto err_place;
    }
    if (n > 4096) {
        s = st_error_set(err, ST_ERR_RANGE, "place: %u workers on one host", n);
        goto err_place;
    }
    pl->n = n;
    pl->w = calloc(n, sizeof(*pl->w));
    pl->cpus = calloc(n, sizeof(*pl->cpus));
    pl->nodes = calloc(n, sizeof(*pl->nodes));
    if (!pl->w || !pl->cpus || !pl->nodes) { s = ST_ERR_NOMEM; goto err_place; }
    for (unsigned i = 0; i < n; i++) {
        pl->cpus[i] = hwloc_bitmap_alloc();
        pl->nodes[i] = hwloc_bitmap_alloc();
        if (!pl->cpus[i] || !pl->nodes[i]) { s = ST_ERR_NOMEM; goto err_place; }
    }

    if (n_gpus) {
        /* Worker i drives GPU i; GPUs with the same local cores share them. */
        for (unsigned i = 0; i < n; i++) {
            unsigned m = 0, j = 0;
            for (unsigned k = 0; k < n; k++) {
                if (!hwloc_bitmap_isequal(t->gpu_cpus[k], t->gpu_cpus[i])) continue;
                if (k < i) j++;
                m++;
            }
            hwloc_const_bitmap_t local = hwloc_bitmap_intersects(t->gpu_cpus[i], allowed)
                                         ? t->gpu_cpus[i] : allowed;
            int shared;
            if (split_cpus(t->h, local, allowed, m, j, pl->cpus[i], &shared) < 0) { s = ST_ERR_NOMEM; goto err_place; }
            topo_nic_rank_t r = {0};
            int nic = pick_nic(t, t->gpu_obj[i], t->gpus[i].numa, nic_load, &r);
            if (nic >= 0) nic_load[nic]++;
            if (finish_worker(t, pl, i, (int)i, nic, r, shared) < 0) { s = ST_ERR_NOMEM; goto err_place; }
        }
    } else {
        /* Workers over NUMA nodes in proportion to their usable PUs (largest
         * remainder, ties to the lower node), then contiguous cores in each. */
        unsigned total = (unsigned)hwloc_bitmap_weight(allowed), given = 0;
        unsigned nn = t->sum.n_numa;
        unsigned *quota = calloc(nn, sizeof(*quota)), *pus = calloc(nn, sizeof(*pus));
        if (!quota || !pus) { free(quota); free(pus); s = ST_ERR_NOMEM; goto err_place; }
        for (unsigned k = 0; k < nn; k++) {
            hwloc_bitmap_t a = hwloc_bitmap_alloc();
            if (a) { hwloc_bitmap_and(a, t->numa_cpus[k], allowed); pus[k] = (unsigned)hwloc_bitmap_weight(a); }
            hwloc_bitmap_free(a);
            quota[k] = (unsigned)((uint64_t)n * pus[k] / total);
            given += quota[k];
        }
        while (given < n) {
            unsigned best = 0;
            uint64_t bestrem = 0;
            int found = 0;
            for (unsigned k = 0; k < nn; k++) {
                if (!pus[k]) continue;
                /* remainder of n * pus / total, less what was already added */
                uint64_t rem = (uint64_t)n * pus[k] - (uint64_t)quota[k] * total + (uint64_t)total;
                if (!found || rem > bestrem) { best = k; bestrem = rem; found = 1; }
            }
            if (!found) break;
            quota[best]++;
            given++;
        }
        unsigned w = 0;
        for (unsigned k = 0; k < nn && w < n; k++) {
            for (unsigned j = 0; j < quota[k] && w < n; j++, w++) {
                int shared;
                if (split_cpus(t->h, t->numa_cpus[k], allowed, quota[k], j, pl->cpus[w], &shared) < 0) {
                    free(quota); free(pus); s = ST_ERR_NOMEM; goto err_place;
                }
                topo_nic_rank_t r = {0};
                int nic = pick_nic(t, NULL, (int)t->numa[k].os_index, nic_load, &r);
                if (nic >= 0) nic_load[nic]++;
                if (finish_worker(t, pl, w, -1, nic, r, shared) < 0) {
                    free(quota); free(pus); s = ST_ERR_NOMEM; goto err_place;
                }
            }
        }
        free(quota);
        free(pus);
        if (w != n) { s = st_error_set(err, ST_ERR_INTERNAL, "place: placed %u of %u workers", w, n); goto err_place; }
    }
    free(nic_load);
    hwloc_bitmap_free(allowed);
    *out = pl;
    return ST_OK;

err_place:
    if (s == ST_ERR_NOMEM) st_error_set(err, s, "place: out of memory");
    free(nic_load);
    hwloc_bitmap_free(allowed);
    st_topo_place_free(pl);
    return s;
}

void st_topo_place_free(st_topo_place_t *pl)
{
    if (!pl) return;
    for (unsigned i = 0; i < pl->n; i++) {
        if (pl->cpus) hwloc_bitmap_free(pl->cpus[i]);
        if (pl->nodes) hwloc_bitmap_free(pl->nodes[i]);
    }
    free(pl->cpus);
    free(pl->nodes);
    free(pl->w);
    topo_strings_free(&pl->strings);
    free(pl);
}

unsigned st_topo_place_count(const st_topo_place_t *pl) { return pl->n; }

const st_topo_worker_t *st_topo_place_worker(const st_topo_place_t *pl, unsigned i)
{
    return i < pl->n ? &pl->w[i] : NULL;
}
