/*
 * topo_discover.c - loads the topology with hwloc and extracts what
 * placement needs: NUMA nodes, GPUs, NICs, their localities and the
 * GPU -> nearest NIC relation.
 */
#include "topo_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"
#include "st_util.h"

#define NVIDIA_VENDOR 0x10de
#define PCI_CLASS_VGA 0x0300
#define PCI_CLASS_3D  0x0302
#define RDMA_PORT_ACTIVE 4     /* IB port state ACTIVE, as in /sys/class/infiniband/.../state */
#define MAX_ANCESTORS 64

/* ---- string pool ---- */

const char *topo_str(topo_strings_t *pool, const char *s)
{
    if (!s) return NULL;
    if (pool->n == pool->cap) {
        unsigned cap = pool->cap ? pool->cap * 2 : 32;
        char **n = realloc(pool->s, cap * sizeof(*n));
        if (!n) return NULL;
        pool->s = n;
        pool->cap = cap;
    }
    char *c = strdup(s);
    if (c) pool->s[pool->n++] = c;
    return c;
}

const char *topo_bitmap_str(topo_strings_t *pool, hwloc_const_bitmap_t set)
{
    char *tmp = NULL;
    if (hwloc_bitmap_list_asprintf(&tmp, set) < 0) return NULL;
    const char *r = topo_str(pool, tmp);
    free(tmp);
    return r;
}

void topo_strings_free(topo_strings_t *pool)
{
    for (unsigned i = 0; i < pool->n; i++) free(pool->s[i]);
    free(pool->s);
    memset(pool, 0, sizeof(*pool));
}

/* ---- locality helpers ---- */

static void pci_str(hwloc_obj_t pci, char out[16])
{
    snprintf(out, 16, "%04x:%02x:%02x.%01x", (unsigned)pci->attr->pcidev.domain & 0xffff,
             pci->attr->pcidev.bus, pci->attr->pcidev.dev, pci->attr->pcidev.func & 0xf);
}

/* The NUMA node (OS index) an object is local to, -1 when it spans several
 * or none (a device attached to the machine root of a multi-node host). */
static int local_numa(hwloc_topology_t h, hwloc_obj_t obj)
{
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(h, obj);
    if (!anc || !anc->nodeset || hwloc_bitmap_weight(anc->nodeset) != 1) return -1;
    return hwloc_bitmap_first(anc->nodeset);
}

static hwloc_bitmap_t local_cpus(hwloc_topology_t h, hwloc_obj_t obj)
{
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(h, obj);
    return hwloc_bitmap_dup(anc && anc->cpuset ? anc->cpuset : hwloc_topology_get_topology_cpuset(h));
}

/* Lowest common ancestor of two objects of the tree, I/O ones included
 * (hwloc_get_common_ancestor_obj compares depths, which I/O objects lack). */
static hwloc_obj_t common_ancestor(hwloc_obj_t a, hwloc_obj_t b, int *depth_out)
{
    hwloc_obj_t chain[MAX_ANCESTORS];
    int n = 0;
    for (hwloc_obj_t x = a; x && n < MAX_ANCESTORS; x = x->parent) chain[n++] = x;
    for (hwloc_obj_t y = b; y; y = y->parent)
        for (int i = 0; i < n; i++)
            if (chain[i] == y) {
                int d = 0;
                for (hwloc_obj_t z = y; z->parent; z = z->parent) d++;
                *depth_out = d;
                return y;
            }
    *depth_out = 0;
    return NULL;
}

static int is_pci_bridge(hwloc_obj_t o)
{
    return o && o->type == HWLOC_OBJ_BRIDGE && o->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_PCI;
}

topo_nic_rank_t topo_nic_rank(const st_topo_t *t, hwloc_obj_t dev, int numa, unsigned nic)
{
    const st_topo_nic_t *n = &t->nics[nic];
    topo_nic_rank_t r = { .kind = n->kind == ST_TOPO_NIC_RDMA ? 0 : 1, .down = n->port_down,
                          .tier = 3, .lca_depth = 0 };
    if (dev) {
        hwloc_obj_t lca = common_ancestor(dev, t->nic_obj[nic], &r.lca_depth);
        if (is_pci_bridge(lca)) r.tier = 0;
        else if (lca && lca->type == HWLOC_OBJ_BRIDGE) r.tier = 1;   /* host bridge */
    }
    if (r.tier == 3 && numa >= 0 && n->numa == numa) r.tier = 2;
    return r;
}

int topo_nic_rank_cmp(topo_nic_rank_t a, topo_nic_rank_t b)
{
    if (a.kind != b.kind) return a.kind < b.kind ? -1 : 1;
    if (a.down != b.down) return a.down < b.down ? -1 : 1;
    if (a.tier != b.tier) return a.tier < b.tier ? -1 : 1;
    if (a.lca_depth != b.lca_depth) return a.lca_depth > b.lca_depth ? -1 : 1;
    return 0;
}

const char *topo_tier_str(int tier)
{
    static const char *s[] = { "on the same PCIe switch", "on the same host bridge",
                               "on the same NUMA node", "on another NUMA node" };
    return tier >= 0 && tier < 4 ? s[tier] : "?";
}

/* ---- NUMA nodes ---- */

static st_status_t find_numa(st_topo_t *t, st_error_t *err)
{
    int n = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_NUMANODE);
    if (n <= 0) return st_error_set(err, ST_ERR_FORMAT, "%s: no NUMA node", t->source);
    t->numa = calloc((size_t)n, sizeof(*t->numa));
    t->numa_cpus = calloc((size_t)n, sizeof(*t->numa_cpus));
    if (!t->numa || !t->numa_cpus) return st_error_set(err, ST_ERR_NOMEM, "topo: out of memory");
    for (int i = 0; i < n; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(t->h, HWLOC_OBJ_NUMANODE, (unsigned)i);
        t->numa_cpus[i] = hwloc_bitmap_dup(o->cpuset);
        t->numa[i].os_index = o->os_index;
        t->numa[i].memory_bytes = o->attr->numanode.local_memory;
        t->numa[i].cpuset = topo_bitmap_str(&t->strings, o->cpuset);
        if (!t->numa_cpus[i] || !t->numa[i].cpuset)
            return st_error_set(err, ST_ERR_NOMEM, "topo: out of memory");
        t->sum.n_numa++;
    }
    return ST_OK;
}

/* ---- GPUs ---- */

/* Ordinals from the CUDA driver, so that GPU i is what cuDeviceGet(i) opens
 * in a process with the same environment (CUDA_VISIBLE_DEVICES,
 * CUDA_DEVICE_ORDER). Loaded at run time: strata builds without CUDA. */
typedef int (*cu_init_fn)(unsigned);
typedef int (*cu_count_fn)(int *);
typedef int (*cu_get_fn)(int *, int);
typedef int (*cu_busid_fn)(char *, int, int);

static int cuda_driver_ordinals(st_topo_t *t)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return 0;
    cu_init_fn init = (cu_init_fn)dlsym(lib, "cuInit");
    cu_count_fn count = (cu_count_fn)dlsym(lib, "cuDeviceGetCount");
    cu_get_fn get = (cu_get_fn)dlsym(lib, "cuDeviceGet");
    cu_busid_fn busid = (cu_busid_fn)dlsym(lib, "cuDeviceGetPCIBusId");
    int n = 0, matched = 0;
    if (init && count && get && busid && init(0) == 0 && count(&n) == 0) {
        for (int i = 0; i < n; i++) {
            int dev;
            char id[64];
            unsigned dom, bus, d, fn;
            if (get(&dev, i) != 0 || busid(id, sizeof(id), dev) != 0) continue;
            if (sscanf(id, "%x:%x:%x.%x", &dom, &bus, &d, &fn) != 4) continue;
            for (unsigned g = 0; g < t->sum.n_gpus; g++) {
                hwloc_obj_t o = t->gpu_obj[g];
                if (o->attr->pcidev.domain == dom && o->attr->pcidev.bus == bus &&
                    o->attr->pcidev.dev == d && o->attr->pcidev.func == fn) {
                    t->gpus[g].cuda_ordinal = i;
                    t->gpus[g].cuda_source = "driver";
                    matched++;
                }
            }
        }
    }
    dlclose(lib);
    return matched;
}

static int gpu_cmp_key(const st_topo_gpu_t *g)
{
    return g->cuda_ordinal >= 0 ? g->cuda_ordinal : 1 << 20;
}

static st_status_t find_gpus(st_topo_t *t, int no_cuda, st_error_t *err)
{
    unsigned n = 0;
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_pcidev(t->h, o));)
        if (o->attr->pcidev.vendor_id == NVIDIA_VENDOR &&
            (o->attr->pcidev.class_id == PCI_CLASS_VGA || o->attr->pcidev.class_id == PCI_CLASS_3D))
            n++;
    if (n == 0) return ST_OK;
    t->gpus = calloc(n, sizeof(*t->gpus));
    t->gpu_obj = calloc(n, sizeof(*t->gpu_obj));
    t->gpu_cpus = calloc(n, sizeof(*t->gpu_cpus));
    if (!t->gpus || !t->gpu_obj || !t->gpu_cpus) return st_error_set(err, ST_ERR_NOMEM, "topo: out of memory");

    int all_hwloc = 1;
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_pcidev(t->h, o));) {
        if (!(o->attr->pcidev.vendor_id == NVIDIA_VENDOR &&
              (o->attr->pcidev.class_id == PCI_CLASS_VGA || o->attr->pcidev.class_id == PCI_CLASS_3D)))
            continue;
        unsigned g = t->sum.n_gpus++;
        st_topo_gpu_t *gpu = &t->gpus[g];
        t->gpu_obj[g] = o;
        pci_str(o, gpu->pci);
        gpu->numa = local_numa(t->h, o);
        gpu->cuda_ordinal = -1;
        gpu->nearest_nic = -1;
        const char *model = hwloc_obj_get_info_by_name(o, "PCIDevice");
        for (hwloc_obj_t c = o->io_first_child; c; c = c->next_sibling) {
            if (c->type != HWLOC_OBJ_OS_DEVICE || !c->name) continue;
            unsigned ord;
            char tail;
            if (sscanf(c->name, "cuda%u%c", &ord, &tail) == 1) {
                gpu->cuda_ordinal = (int)ord;
                gpu->cuda_source = "hwloc";
            }
            const char *m = hwloc_obj_get_info_by_name(c, "GPUModel");
            if (m) model = m;
        }
        if (model) snprintf(gpu->model, sizeof(gpu->model), "%s", model);
        all_hwloc &= gpu->cuda_ordinal >= 0;
        t->gpu_cpus[g] = local_cpus(t->h, o);
        if (!t->gpu_cpus[g] || !(gpu->local_cpus = topo_bitmap_str(&t->strings, t->gpu_cpus[g])))
            return st_error_set(err, ST_ERR_NOMEM, "topo: out of memory");
    }
    if (!all_hwloc) {
        for (unsigned g = 0; g < n; g++) { t->gpus[g].cuda_ordinal = -1; t->gpus[g].cuda_source = NULL; }
        if (!(t->this_system && !no_cuda && cuda_driver_ordinals(t) > 0)) {
            /* hwloc lists PCI devices in bus order: the CUDA order when
             * CUDA_DEVICE_ORDER=PCI_BUS_ID and no CUDA_VISIBLE_DEVICES. */
            for (unsigned g = 0; g < n; g++) {
                t->gpus[g].cuda_ordinal = (int)g;
                t->gpus[g].cuda_source = "pci-order";
            }
        }
    }
    /* Insertion sort by ordinal (a handful of GPUs), moving the parallel arrays. */
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && gpu_cmp_key(&t->gpus[j]) < gpu_cmp_key(&t->gpus[j - 1]); j--) {
            st_topo_gpu_t tg = t->gpus[j]; t->gpus[j] = t->gpus[j - 1]; t->gpus[j - 1] = tg;
            hwloc_obj_t to = t->gpu_obj[j]; t->gpu_obj[j] = t->gpu_obj[j - 1]; t->gpu_obj[j - 1] = to;
            hwloc_bitmap_t tb = t->gpu_cpus[j]; t->gpu_cpus[j] = t->gpu_cpus[j - 1]; t->gpu_cpus[j - 1] = tb;
        }
    for (unsigned g = 0; g < n; g++) t->gpus[g].index = g;
    return ST_OK;
}

/* ---- NICs ---- */

static hwloc_obj_t pci_parent(hwloc_obj_t osdev)
{
    return osdev->parent && osdev->parent->type == HWLOC_OBJ_PCI_DEVICE ? osdev->parent : NULL;
}

static int has_openfabrics(hwloc_obj_t pci)
{
    for (hwloc_obj_t c = pci ? pci->io_first_child : NULL; c; c = c->next_sibling)
        if (c->type == HWLOC_OBJ_OS_DEVICE && c->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS)
            return 1;
    return 0;
}

/* The port to use: the first ACTIVE one (Port<N>State = 4). Without state
 * information port 1 is assumed usable. */
static void rdma_port(hwloc_obj_t of, unsigned *port, int *down)
{
    unsigned first = 0, active = 0;
    for (unsigned i = 0; i < of->infos_count; i++) {
        const char *name = of->infos[i].name;
        char *end;
        if (strncmp(name, "Port", 4) != 0 || name[4] < '0' || name[4] > '9') continue;
        unsigned p = (unsigned)strtoul(name + 4, &end, 10);
        if (strcmp(end, "State") != 0 || p == 0) continue;
        unsigned st = (unsigned)strtoul(of->infos[i].value, NULL, 10);
        if (!first || p < first) first = p;
        if (st == RDMA_PORT_ACTIVE && (!active || p < active)) active = p;
    }
    *port = active ? active : first ? first : 1;
    *down = first && !active;
}

/* The network interface of an RDMA device: the NETWORK OS device beside it
 * whose "Port" info matches (ib0 for port 1, ib1 for port 2), else the first. */
static const char *rdma_netdev(hwloc_obj_t pci, unsigned port)
{
    const char *any = NULL;
    for (hwloc_obj_t c = pci ? pci->io_first_child : NULL; c; c = c->next_sibling) {
        if (c->type != HWLOC_OBJ_OS_DEVICE || c->attr->osdev.type != HWLOC_OBJ_OSDEV_NETWORK) continue;
        const char *p = hwloc_obj_get_info_by_name(c, "Port");
        if (p && strtoul(p, NULL, 10) == port) return c->name;
        if (!any) any = c->name;
    }
    return any;
}

static int pci_key_cmp(const st_topo_nic_t *a, const st_topo_nic_t *b)
{
    if (a->kind != b->kind) return a->kind == ST_TOPO_NIC_RDMA ? -1 : 1;
    if (!a->pci[0] != !b->pci[0]) return a->pci[0] ? -1 : 1;   /* PCI before virtual */
    int c = strcmp(a->pci, b->pci);
    return c ? c : strcmp(a->name, b->name);
}

static st_status_t add_nic(st_topo_t *t, hwloc_obj_t os, st_topo_nic_kind_t kind, st_error_t *err)
{
    unsigned i = t->sum.n_nics++;
    st_topo_nic_t *n = &t->nics[i];
    hwloc_obj_t pci = pci_parent(os);
    char ucx[96];
    t->nic_obj[i] = pci ? pci : os;
    n->kind = kind;
    n->name = topo_str(&t->strings, os->name);
    if (pci) pci_str(pci, n->pci);
    n->numa = local_numa(t->h, os);
    if (kind == ST_TOPO_NIC_RDMA) {
        rdma_port(os, &n->port, &n->port_down);
        const char *nd = rdma_netdev(pci, n->port);
        n->netdev = nd ? topo_str(&t->strings, nd) : NULL;
        snprintf(ucx, sizeof(ucx), "%s:%u", os->name, n->port);
    } else {
        n->netdev = n->name;
        snprintf(ucx, sizeof(ucx), "%s", os->name);
    }
    n->ucx_dev = topo_str(&t->strings, ucx);
    t->nic_cpus[i] = local_cpus(t->h, os);
    if (!n->name || !n->ucx_dev || !t->nic_cpus[i] ||
        !(n->local_cpus = topo_bitmap_str(&t->strings, t->nic_cpus[i])))
        return st_error_set(err, ST_ERR_NOMEM, "topo: out of memory");
    return ST_OK;
}

static st_status_t find_nics(st_topo_t *t, st_error_t *err)
{
    unsigned cap = 0;
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_osdev(t->h, o));)
        cap += o->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS || o->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK;
    if (cap == 0) return ST_OK;
    t->nics = calloc(cap, sizeof(*t->nics));
    t->nic_obj = calloc(cap, sizeof(*t->nic_obj));
    t->nic_cpus = calloc(cap, sizeof(*t->nic_cpus));
    if (!t->nics || !t->nic_obj || !t->nic_cpus) return st_error_set(err, ST_ERR_NOMEM, "topo: out of memory");
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_osdev(t->h, o));) {
        st_status_t s = ST_OK;
        if (!o->name) continue;
        if (o->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS)
            s = add_nic(t, o, ST_TOPO_NIC_RDMA, err);
        else if (o->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK && !has_openfabrics(pci_parent(o)))
            s = add_nic(t, o, ST_TOPO_NIC_ETHERNET, err);   /* else: the netdev of an RDMA NIC */
        if (s != ST_OK) return s;
    }
    /* Stable order for people and tests: RDMA first, then by PCI address. */
    unsigned n = t->sum.n_nics;
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && pci_key_cmp(&t->nics[j], &t->nics[j - 1]) < 0; j--) {
            st_topo_nic_t tn = t->nics[j]; t->nics[j] = t->nics[j - 1]; t->nics[j - 1] = tn;
            hwloc_obj_t to = t->nic_obj[j]; t->nic_obj[j] = t->nic_obj[j - 1]; t->nic_obj[j - 1] = to;
            hwloc_bitmap_t tb = t->nic_cpus[j]; t->nic_cpus[j] = t->nic_cpus[j - 1]; t->nic_cpus[j - 1] = tb;
        }
    for (unsigned i = 0; i < n; i++) t->nics[i].index = i;
    return ST_OK;
}

static void nearest_nics(st_topo_t *t)
{
    int rdma = 0;
    for (unsigned i = 0; i < t->sum.n_nics; i++) rdma |= t->nics[i].kind == ST_TOPO_NIC_RDMA;
    for (unsigned g = 0; g < t->sum.n_gpus; g++) {
        st_topo_gpu_t *gpu = &t->gpus[g];
        topo_nic_rank_t best = {0};
        for (unsigned i = 0; i < t->sum.n_nics; i++) {
            topo_nic_rank_t r = topo_nic_rank(t, t->gpu_obj[g], gpu->numa, i);
            if (gpu->nearest_nic < 0 || topo_nic_rank_cmp(r, best) < 0) {
                best = r;
                gpu->nearest_nic = (int)i;
            }
        }
        if (gpu->nearest_nic >= 0) gpu->nic_relation = topo_tier_str(best.tier);
    }
    if (t->sum.n_gpus && !t->sum.n_nics)
        snprintf(t->warnings, sizeof(t->warnings), "GPU host without any NIC: workers cannot reach other hosts");
    else if (t->sum.n_gpus && !rdma)
        snprintf(t->warnings, sizeof(t->warnings),
                 "GPU host without RDMA NIC: workers fall back to Ethernet (%s), without GPUDirect RDMA",
                 t->nics[0].name);
}

/* ---- open / close ---- */

st_status_t st_topo_open(const st_topo_open_params_t *params, st_topo_t **out, st_error_t *err)
{
    st_status_t s;
    if (!params || params->size < sizeof(*params) || !out)
        return st_error_set(err, ST_ERR_INVALID, "topo: params missing or too small");
    st_topo_t *t = calloc(1, sizeof(*t));
    if (!t) return st_error_set(err, ST_ERR_NOMEM, "topo: out of memory");
    snprintf(t->source, sizeof(t->source), "%s", params->xml_path ? params->xml_path : "this machine");

    if (hwloc_topology_init(&t->h) < 0) {
        s = st_error_set(err, ST_ERR_BACKEND, "hwloc_topology_init: %s", strerror(errno));
        t->h = NULL;
        goto err_topo;
    }
    /* KEEP_ALL: hwloc's default drops PCI devices it finds unimportant and
     * bridges; placement needs every bridge to see the PCIe switches. */
    hwloc_topology_set_io_types_filter(t->h, HWLOC_TYPE_FILTER_KEEP_ALL);
    /* hwloc's Linux backend reads PCI devices from sysfs by itself. The
     * libpciaccess plugin ("pci") only adds vendor/device names and leaks
     * about 0.6 MB per load (1.88 MB over three loads under ASan); "opencl" would initialise the
     * OpenCL ICDs (and through them the CUDA driver) and "gl" talks to an X
     * server. None of them changes what placement needs. */
    static const char *const skip[] = { "pci", "opencl", "gl" };
    for (size_t i = 0; i < ST_ARRAY_SIZE(skip); i++)
        hwloc_topology_set_components(t->h, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, skip[i]);
    if (params->xml_path) {
        FILE *f = fopen(params->xml_path, "rb");
        if (!f) {
            s = st_error_set(err, ST_ERR_IO, "%s: %s", params->xml_path, strerror(errno));
            goto err_topo;
        }
        fclose(f);
        if (hwloc_topology_set_xml(t->h, params->xml_path) < 0) {
            s = st_error_set(err, ST_ERR_FORMAT, "%s: hwloc cannot use it as XML: %s",
                             params->xml_path, strerror(errno));
            goto err_topo;
        }
    }
    if (hwloc_topology_load(t->h) < 0) {
        s = params->xml_path
            ? st_error_set(err, ST_ERR_FORMAT, "%s: not a valid hwloc XML topology (run with "
                           "HWLOC_XML_VERBOSE=1 for details)", params->xml_path)
            : st_error_set(err, ST_ERR_BACKEND, "hwloc_topology_load: %s", strerror(errno));
        goto err_topo;
    }
    t->this_system = hwloc_topology_is_thissystem(t->h);
    t->sum.this_system = t->this_system;
    t->sum.n_packages = (unsigned)ST_MAX(0, hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_PACKAGE));
    t->sum.n_cores = (unsigned)ST_MAX(0, hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_CORE));
    t->sum.n_pus = (unsigned)ST_MAX(0, hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_PU));
    if ((s = find_numa(t, err)) != ST_OK) goto err_topo;
    if ((s = find_gpus(t, params->no_cuda, err)) != ST_OK) goto err_topo;
    if ((s = find_nics(t, err)) != ST_OK) goto err_topo;
    nearest_nics(t);
    if (t->warnings[0]) st_warn("topo", "%s: %s", t->source, t->warnings);
    *out = t;
    return ST_OK;

err_topo:
    st_topo_close(t);
    return s;
}

void st_topo_close(st_topo_t *t)
{
    if (!t) return;
    for (unsigned i = 0; t->numa_cpus && i < t->sum.n_numa; i++) hwloc_bitmap_free(t->numa_cpus[i]);
    for (unsigned i = 0; t->gpu_cpus && i < t->sum.n_gpus; i++) hwloc_bitmap_free(t->gpu_cpus[i]);
    for (unsigned i = 0; t->nic_cpus && i < t->sum.n_nics; i++) hwloc_bitmap_free(t->nic_cpus[i]);
    free(t->numa);
    free(t->numa_cpus);
    free(t->gpus);
    free(t->gpu_obj);
    free(t->gpu_cpus);
    free(t->nics);
    free(t->nic_obj);
    free(t->nic_cpus);
    topo_strings_free(&t->strings);
    if (t->h) hwloc_topology_destroy(t->h);
    free(t);
}

st_topo_summary_t st_topo_get_summary(const st_topo_t *t) { return t->sum; }
const char *st_topo_warnings(const st_topo_t *t) { return t->warnings; }

const st_topo_numa_t *st_topo_numa(const st_topo_t *t, unsigned i)
{
    return i < t->sum.n_numa ? &t->numa[i] : NULL;
}

const st_topo_gpu_t *st_topo_gpu(const st_topo_t *t, unsigned i)
{
    return i < t->sum.n_gpus ? &t->gpus[i] : NULL;
}

const st_topo_nic_t *st_topo_nic(const st_topo_t *t, unsigned i)
{
    return i < t->sum.n_nics ? &t->nics[i] : NULL;
}
