/*
 * strata doctor - what this host's UCX offers to strata's transport.
 *
 * Prints the UCX version, every transport/device UCT can open here and which
 * of them the UCP context selects under UCX_TLS / UCX_NET_DEVICES, the memory
 * types UCX handles (host, CUDA), and whether RDMA and GPUDirect RDMA are
 * usable. Inter-node traffic silently falling back to TCP is the most common
 * surprise with RDMA transports, so that case gets a loud warning.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRATA_HAVE_UCX
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
