/*
 * strata doctor - what this host's UCX offers to strata's transport.
 *
 * Prints the UCX version, every transport/device UCT can open here and which
 * of them the UCP context selects under UCX_TLS / UCX_NET_DEVICES, the memory
 * types UCX handles (host, CUDA), and whether RDMA and GPUDirect RDMA are
 * usable. Inter-node traffic silently falling back to TCP is the most common
 * surprise with RDMA transports, so that case gets a loud warning.
 *
 * "GPU activations" says which way a CUDA worker's activations would travel
 * (st_transport_mem_register with ST_TRANSPORT_MEM_CUDA): handed to UCX as
 * device memory when the UCP context reports CUDA support, and then GPU to
 * GPU where UCX has the transports for it (cuda_ipc on one host, an RDMA
 * transport whose memory domain registers CUDA memory between hosts:
 * GPUDirect RDMA, with gdr_copy for small messages); otherwise staged
 * through pinned host memory, with the reason. The memory domains are read
 * from UCT (uct_md_query: access/reg memory types) and the transports of
 * each domain, not from `ucx_info` output.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRATA_HAVE_UCX
#include <uct/api/uct.h>

#include "st_transport.h"
#endif

const char st_cmd_doctor_help[] = "check the host: UCX transports, RDMA, GPUDirect, memory types";

#ifndef STRATA_HAVE_UCX
int st_cmd_doctor(int argc, char **argv)
{
    (void)argc; (void)argv;
    printf("strata doctor: built without UCX (libucx-dev, STRATA_WITH_UCX): no transport to check\n");
    return 1;
}
#else

/* What UCT offers for CUDA device memory on this host. */
typedef struct gpu_caps {
    int  cuda_md;                       /* a memory domain accesses/registers CUDA memory */
    int  cuda_copy, cuda_ipc, gdr_copy; /* UCT's CUDA transports found */
    int  rdma_cuda;                     /* an RDMA transport's domain registers CUDA memory */
    char rdma_cuda_tl[96];              /* its "tl/dev" */
} gpu_caps_t;

static int is_rdma_tl(const char *tl)
{
    return !strncmp(tl, "rc_", 3) || !strncmp(tl, "dc_", 3) || !strncmp(tl, "ud_", 3);
}

static void query_md(uct_component_h comp, const char *md_name, gpu_caps_t *g)
{
    uct_md_config_t *mdc;
    uct_md_h md;
    uct_md_attr_t ma;
    uct_tl_resource_desc_t *tls;
    unsigned n_tls;
    uint64_t cuda = UCS_BIT(UCS_MEMORY_TYPE_CUDA);
    int md_access = 0, md_reg = 0;

    if (uct_md_config_read(comp, NULL, NULL, &mdc) != UCS_OK)
        return;
    if (uct_md_open(comp, md_name, mdc, &md) != UCS_OK)
        goto out_config;
    if (uct_md_query(md, &ma) == UCS_OK) {
        md_access = !!((ma.cap.access_mem_types | ma.cap.detect_mem_types) & cuda);
        md_reg = !!(ma.cap.reg_mem_types & cuda);
    }
    if (md_access || md_reg)
        g->cuda_md = 1;
    if (uct_md_query_tl_resources(md, &tls, &n_tls) == UCS_OK) {
        for (unsigned i = 0; i < n_tls; i++) {
            const char *tl = tls[i].tl_name;
            g->cuda_copy |= !strcmp(tl, "cuda_copy");
            g->cuda_ipc |= !strcmp(tl, "cuda_ipc");
            g->gdr_copy |= !strcmp(tl, "gdr_copy");
            if (is_rdma_tl(tl) && md_reg && !g->rdma_cuda) {
                g->rdma_cuda = 1;
                snprintf(g->rdma_cuda_tl, sizeof g->rdma_cuda_tl, "%s/%s", tl, tls[i].dev_name);
            }
        }
        uct_release_tl_resource_list(tls);
    }
    uct_md_close(md);
out_config:
    uct_config_release(mdc);
}

static void query_gpu_caps(gpu_caps_t *g)
{
    uct_component_h *comps;
    unsigned n_comps;

    memset(g, 0, sizeof *g);
    if (uct_query_components(&comps, &n_comps) != UCS_OK)
        return;
    for (unsigned c = 0; c < n_comps; c++) {
        uct_component_attr_t ca;

        memset(&ca, 0, sizeof ca);
        ca.field_mask = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCE_COUNT;
        if (uct_component_query(comps[c], &ca) != UCS_OK || ca.md_resource_count == 0)
            continue;
        ca.md_resources = calloc(ca.md_resource_count, sizeof *ca.md_resources);
        if (!ca.md_resources)
            continue;
        ca.field_mask = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCES;
        if (uct_component_query(comps[c], &ca) == UCS_OK)
            for (unsigned m = 0; m < ca.md_resource_count; m++)
                query_md(comps[c], ca.md_resources[m].md_name, g);
        free(ca.md_resources);
    }
    uct_release_component_list(comps);
}

/* The "GPU activations" lines: GPU to GPU over UCX's CUDA support, or
 * staged through pinned host memory, and why. */
static void print_gpu_path(const st_transport_info_t *info)
{
    gpu_caps_t g;

    query_gpu_caps(&g);
    if (!info->mem_cuda) {
        printf("  GPU activations      staged through pinned host memory: %s%s\n",
               !g.cuda_md ? "this UCX has no CUDA memory domain (no cuda_copy, cuda_ipc or "
                            "gdr_copy: UCX built without CUDA, its CUDA module not installed, "
                            "or no NVIDIA driver/GPU)"
                          : "UCX has CUDA memory domains but the UCP context does not take "
                            "CUDA memory (UCX_TLS / --tls exclude cuda_copy?)",
               info->rdma ? "" : "; no RDMA transport (rc/dc/ud verbs) either");
        return;
    }
    if (info->gpudirect)
        printf("  GPU activations      GPU to GPU: UCX takes device memory, between hosts by "
               "GPUDirect RDMA (%s)%s\n", g.rdma_cuda_tl[0] ? g.rdma_cuda_tl : "rdma",
               g.gdr_copy ? ", gdr_copy for small messages" : ", no gdr_copy (small messages "
               "are copied by cuda_copy)");
    else
        printf("  GPU activations      staged through pinned host memory between hosts (by "
               "UCX): %s\n", !info->rdma ? "no RDMA transport (rc/dc/ud verbs)"
                              : "the RDMA NIC cannot register CUDA memory (nvidia-peermem "
                                "not loaded?)");
    printf("    on one host        %s\n",
           g.cuda_ipc ? "GPU to GPU over cuda_ipc"
                      : "through host memory (cuda_copy, no cuda_ipc)");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: strata doctor [--tls STR] [--net-devices STR] [--strict]\n"
               "  --tls STR          check as if UCX_TLS=STR\n"
               "  --net-devices STR  check as if UCX_NET_DEVICES=STR\n"
               "  --strict           exit 1 when inter-node traffic would use TCP only\n");
}

int st_cmd_doctor(int argc, char **argv)
{
    st_transport_config_t cfg;
    st_transport_info_t info;
    st_error_t err;
    int strict = 0;

    st_transport_config_init(&cfg);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tls") && i + 1 < argc) {
            cfg.tls = argv[++i];
        } else if (!strcmp(argv[i], "--net-devices") && i + 1 < argc) {
            cfg.net_devices = argv[++i];
        } else if (!strcmp(argv[i], "--strict")) {
            strict = 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "strata doctor: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (st_transport_probe(&cfg, &err, &info) != ST_OK) {
        printf("strata doctor: UCX could not be initialised: %s\n", err.msg);
        return 1;
    }
    const char *env_tls = getenv("UCX_TLS"), *env_dev = getenv("UCX_NET_DEVICES");
    printf("strata doctor: transport (UCX)\n");
    printf("  UCX library          %s (strata built against UCP API %s)\n", info.ucx_version,
           info.ucx_built);
    printf("  UCX_TLS              %s\n", cfg.tls ? cfg.tls : env_tls ? env_tls : "(unset: all)");
    printf("  UCX_NET_DEVICES      %s\n",
           cfg.net_devices ? cfg.net_devices : env_dev ? env_dev : "(unset: all)");
    printf("  transports and devices (* = selected by the UCP context):\n");
    for (uint32_t i = 0; i < info.n_res; i++) {
        const st_transport_resource_t *r = &info.res[i];
        printf("    %c %-12s %-16s %-5s%s\n", r->enabled ? '*' : ' ', r->tl, r->dev, r->kind,
               r->rdma ? " rdma" : "");
    }
    printf("  memory types         host%s%s%s\n", info.mem_cuda ? ", cuda" : "",
           info.mem_cuda_managed ? ", cuda-managed" : "", info.mem_rocm ? ", rocm" : "");
    printf("  CUDA memory in UCX   %s\n", info.mem_cuda ? "yes (device pointers passed to UCX)"
                                                    : "no (CUDA buffers staged through host memory)");
    printf("  RDMA (rc/dc/ud)      %s\n", info.rdma ? "yes" : "no");
    printf("  GPUDirect RDMA       %s\n", info.gpudirect ? "yes" :
           !info.rdma ? "no (no RDMA transport)" :
           !info.mem_cuda ? "no (UCX without CUDA support)" : "no (NIC cannot register CUDA memory)");
    print_gpu_path(&info);
    printf("                       (what the transport does with CUDA buffers; workers still "
           "send host copies of activations: docs/CUDA.md)\n");
    if (info.net_none) {
        printf("\n  !!! WARNING: no inter-node transport is selected: workers on other hosts\n"
               "  !!! cannot be reached. Check UCX_TLS / UCX_NET_DEVICES.\n");
    } else if (info.net_tcp_only) {
        printf("\n  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
               "  !!! WARNING: only TCP is available between nodes. No RDMA transport\n"
               "  !!! (rc/dc/ud verbs) was found or selected, so inter-node hops will take\n"
               "  !!! tens of microseconds instead of a few. Check that the RDMA NIC and\n"
               "  !!! its driver (rdma-core, ibv_devices) are present and that UCX_TLS /\n"
               "  !!! UCX_NET_DEVICES do not exclude them.\n"
               "  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
        if (strict)
            return 1;
    } else {
        printf("\n  inter-node transport: RDMA\n");
    }
    return 0;
}
#endif /* STRATA_HAVE_UCX */
