/*
 * topo_internal.h - the structures behind st_topo_t and st_topo_place_t,
 * shared by discovery, placement, binding and printing. Not installed.
 */
#ifndef ST_TOPO_INTERNAL_H
#define ST_TOPO_INTERNAL_H

#include <hwloc.h>

#include "st_topo.h"

/* Strings handed out through the public structs are owned here. */
typedef struct topo_strings {
    char   **s;
    unsigned n, cap;
} topo_strings_t;

const char *topo_str(topo_strings_t *pool, const char *s);      /* copy; NULL on ENOMEM */
const char *topo_bitmap_str(topo_strings_t *pool, hwloc_const_bitmap_t set);
void        topo_strings_free(topo_strings_t *pool);

struct st_topo {
    hwloc_topology_t   h;
    int                this_system;
    char               source[256];   /* "this machine" or the XML path */
    st_topo_summary_t  sum;
    st_topo_numa_t    *numa;
    hwloc_bitmap_t    *numa_cpus;     /* [n_numa] */
    st_topo_gpu_t     *gpus;
    hwloc_obj_t       *gpu_obj;       /* [n_gpus] the PCI device */
    hwloc_bitmap_t    *gpu_cpus;
    st_topo_nic_t     *nics;
    hwloc_obj_t       *nic_obj;       /* [n_nics] the PCI device, or the OS device when not PCI */
    hwloc_bitmap_t    *nic_cpus;
    char               warnings[512];
    topo_strings_t     strings;
};

struct st_topo_place {
    unsigned          n;
    st_topo_worker_t *w;
    hwloc_bitmap_t   *cpus;    /* [n] */
    hwloc_bitmap_t   *nodes;   /* [n] memory binding, may be empty */
    topo_strings_t    strings;
};

/* NIC preference for a device (a GPU's PCI object, or NULL for a CPU worker
 * with locality `numa`): lower is better. Ties are broken by the caller. */
typedef struct topo_nic_rank {
    int kind;       /* 0 RDMA, 1 Ethernet */
    int down;       /* 1 when the port is known down */
    int tier;       /* 0 same PCIe switch, 1 same host bridge, 2 same NUMA, 3 other */
    int lca_depth;  /* for equal tiers: a deeper common ancestor is closer */
} topo_nic_rank_t;

topo_nic_rank_t topo_nic_rank(const st_topo_t *t, hwloc_obj_t dev, int numa, unsigned nic);
int             topo_nic_rank_cmp(topo_nic_rank_t a, topo_nic_rank_t b);
const char     *topo_tier_str(int tier);

#endif /* ST_TOPO_INTERNAL_H */
