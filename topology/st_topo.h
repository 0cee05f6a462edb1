/*
 * st_topo.h - where a worker runs: hwloc discovery of NUMA nodes, cores,
 * GPUs and NICs, the placement of this host's workers on them, and the
 * binding a worker applies to itself at start.
 *
 *   st_topo_t *t;
 *   st_topo_open_params_t op = { .size = sizeof op };   // .xml_path for a file
 *   if (st_topo_open(&op, &t, &err) != ST_OK) ...
 *   st_topo_place_t *pl;
 *   st_topo_place_params_t pp = { .size = sizeof pp };  // .n_workers 0 = default
 *   st_topo_place(t, &pp, &pl, &err);
 *   const st_topo_worker_t *w = st_topo_place_worker(pl, local_rank);
 *   // w->ucx_net_devices -> UCX_NET_DEVICES, w->cuda_ordinal -> cudaSetDevice
 *   st_topo_bind(t, pl, local_rank, &err);  // cores + memory of this process
 *   st_topo_place_free(pl);
 *   st_topo_close(t);
 *
 * Discovery keeps every PCI and OS device (hwloc's KEEP_ALL I/O filter), so
 * it sees NVIDIA GPUs (PCI class 0x0300/0x0302, vendor 0x10de; CUDA and
 * NVML OS devices when hwloc has them), RDMA NICs (OpenFabrics OS devices
 * such as mlx5_0, with their port and network interface such as ib0) and
 * Ethernet interfaces. Every `numa` below is the NUMA node's OS index
 * (-1 when a device's locality spans several nodes or is unknown); cpusets
 * are lists of PU OS indexes as in /proc/<pid>/status ("0-11,24-35").
 *
 * Nearest NIC of a GPU: RDMA NICs are preferred over Ethernet (with a
 * warning when a GPU host has none), ports known to be down last; then the
 * NIC under the same PCIe switch, then on the same NUMA node, then any.
 *
 * Placement: on a GPU host one worker per GPU by default, each bound to the
 * cores local to its GPU (shared evenly among the GPUs of that locality),
 * memory on the GPU's NUMA node, and the GPU's nearest NIC. On a CPU host
 * one worker per NUMA node by default, or n_workers spread over the NUMA
 * nodes in proportion to their cores. Every worker gets a sentence saying
 * why ("worker 2: GPU 2 (0000:84:00.0) on NUMA 1, NIC mlx5_1 on the same
 * PCIe switch, cores 24-35").
 *
 * Binding is only possible for a topology of this machine (not an XML file).
 * It sets the CPU binding of the whole process and the memory policy of the
 * calling thread; threads created afterwards inherit both, so the worker
 * calls it first thing, before it starts threads or UCX.
 */
#ifndef ST_TOPO_H
#define ST_TOPO_H

#include <stdint.h>
#include <stdio.h>

#include "st_error.h"
#include "st_status.h"

typedef struct st_topo st_topo_t;
typedef struct st_topo_place st_topo_place_t;

typedef struct st_topo_open_params {
    uint32_t    size;        /* sizeof(st_topo_open_params_t) */
    const char *xml_path;    /* NULL: this machine; else a file from `lstopo --of xml` */
    int         no_cuda;     /* 1: never load libcuda to match CUDA ordinals. On a GPU host
                                the driver starts threads in cuInit: a worker that wants
                                every thread to inherit its memory binding sets this and
                                runs with CUDA_DEVICE_ORDER=PCI_BUS_ID (ordinals then
                                follow the PCI order, cuda_source "pci-order"). */
} st_topo_open_params_t;

typedef struct st_topo_numa {
    unsigned    os_index;
    uint64_t    memory_bytes;   /* local memory of the node */
    const char *cpuset;         /* its PUs */
} st_topo_numa_t;

typedef struct st_topo_gpu {
    unsigned    index;          /* position in st_topo_gpu(); CUDA ordinal order when known */
    char        pci[16];        /* dddd:bb:dd.f */
    char        model[64];      /* PCI device name or GPUModel when hwloc knows it, else "" */
    int         numa;           /* OS index, -1 when unknown */
    const char *local_cpus;     /* PUs local to the GPU */
    int         cuda_ordinal;   /* CUDA device ordinal, -1 when unknown (see cuda_source) */
    const char *cuda_source;    /* "hwloc" (cudaN OS device), "driver" (libcuda), "pci-order" */
    int         nearest_nic;    /* index into st_topo_nic(), -1 when the host has no NIC */
    const char *nic_relation;   /* "same PCIe switch", "same NUMA node", "other NUMA node", ... */
} st_topo_gpu_t;

typedef enum st_topo_nic_kind {
    ST_TOPO_NIC_RDMA     = 1,   /* OpenFabrics device (InfiniBand, RoCE) */
    ST_TOPO_NIC_ETHERNET = 2    /* plain network interface */
} st_topo_nic_kind_t;

typedef struct st_topo_nic {
    unsigned           index;
    const char        *name;       /* mlx5_0 for RDMA, eth0 for Ethernet */
    st_topo_nic_kind_t kind;
    char               pci[16];    /* dddd:bb:dd.f, "" when not a PCI device */
    int                numa;       /* OS index, -1 when unknown */
    const char        *netdev;     /* network interface (ib0, ens1f0, eth0); NULL if none */
    unsigned           port;       /* RDMA port used (first active one), 0 for Ethernet */
    int                port_down;  /* 1 when hwloc says the port is not active */
    const char        *local_cpus;
    const char        *ucx_dev;    /* "mlx5_0:1" or "eth0": a UCX_NET_DEVICES entry */
} st_topo_nic_t;

typedef struct st_topo_summary {
    unsigned n_numa, n_packages, n_cores, n_pus, n_gpus, n_nics;
    int      this_system;   /* 1: the local machine (binding possible) */
} st_topo_summary_t;

/* Loads the topology. Errors: ST_ERR_IO / ST_ERR_FORMAT (XML file cannot be
 * read or parsed), ST_ERR_BACKEND (hwloc failed), ST_ERR_NOMEM. */
st_status_t st_topo_open(const st_topo_open_params_t *params, st_topo_t **out, st_error_t *err);
void        st_topo_close(st_topo_t *t);

st_topo_summary_t     st_topo_get_summary(const st_topo_t *t);
const st_topo_numa_t *st_topo_numa(const st_topo_t *t, unsigned i);  /* NULL past the end */
const st_topo_gpu_t  *st_topo_gpu(const st_topo_t *t, unsigned i);
const st_topo_nic_t  *st_topo_nic(const st_topo_t *t, unsigned i);
/* Warnings found during discovery ("GPU host without RDMA NIC ..."), "" if none. */
const char           *st_topo_warnings(const st_topo_t *t);

typedef struct st_topo_place_params {
    uint32_t    size;       /* sizeof(st_topo_place_params_t) */
    unsigned    n_workers;  /* 0: one per GPU, or one per NUMA node on CPU hosts */
    const char *cpus;       /* NULL, or a PU list ("2-15") to place within */
} st_topo_place_params_t;

typedef struct st_topo_worker {
    unsigned    index;
    const char *cpus;           /* PUs it is bound to */
    int         numa;           /* memory node (OS index), -1 when its cores span nodes */
    int         gpu;            /* index into st_topo_gpu(), -1 on CPU hosts */
    int         cuda_ordinal;   /* the ordinal to select, -1 without GPU */
    int         nic;            /* index into st_topo_nic(), -1 when the host has none */
    const char *ucx_net_devices;/* value for UCX_NET_DEVICES, NULL when no NIC */
    const char *explanation;    /* one sentence, without trailing newline */
} st_topo_worker_t;

st_status_t st_topo_place(const st_topo_t *t, const st_topo_place_params_t *params,
                          st_topo_place_t **out, st_error_t *err);
void        st_topo_place_free(st_topo_place_t *pl);
unsigned    st_topo_place_count(const st_topo_place_t *pl);
const st_topo_worker_t *st_topo_place_worker(const st_topo_place_t *pl, unsigned i);

/* Binds the calling process to worker i's cores and the calling thread (and
 * the threads it creates later) to its NUMA node's memory. ST_ERR_UNSUPPORTED
 * for an XML topology; ST_ERR_BACKEND when the OS refuses. */
st_status_t st_topo_bind(const st_topo_t *t, const st_topo_place_t *pl, unsigned i, st_error_t *err);
/* Pins the calling thread to one core of worker i: thread k of the worker
 * gets its (k mod n_cores)-th core, so compute threads do not migrate. */
st_status_t st_topo_bind_thread(const st_topo_t *t, const st_topo_place_t *pl, unsigned i,
                                unsigned thread_index, st_error_t *err);

/* `strata topo` output: the machine and the placement (JSON schema in
 * docs/TOPOLOGY.md). pl may be NULL. */
void st_topo_write_text(const st_topo_t *t, const st_topo_place_t *pl, FILE *f);
void st_topo_write_json(const st_topo_t *t, const st_topo_place_t *pl, FILE *f);

#endif /* ST_TOPO_H */
