/*
 * test_topo_xml.c - discovery and placement on the hand-written hwloc XML
 * topologies of tests/topology/xml, asserted field by field.
 */
#include <stdio.h>
#include <string.h>

#include "st_test.h"
#include "st_topo.h"

#ifndef ST_TOPO_XML_DIR
#error "ST_TOPO_XML_DIR must point at tests/topology/xml"
#endif

static st_topo_t *open_xml(const char *name)
{
    char path[512];
    st_error_t err = {{0}};
    st_topo_t *t = NULL;
    snprintf(path, sizeof(path), "%s/%s", ST_TOPO_XML_DIR, name);
    st_topo_open_params_t p = { .size = sizeof(p), .xml_path = path };
    if (st_topo_open(&p, &t, &err) != ST_OK) fprintf(stderr, "  %s\n", err.msg);
    return t;
}

static st_topo_place_t *place(const st_topo_t *t, unsigned n, const char *cpus)
{
    st_error_t err = {{0}};
    st_topo_place_t *pl = NULL;
    st_topo_place_params_t p = { .size = sizeof(p), .n_workers = n, .cpus = cpus };
    if (st_topo_place(t, &p, &pl, &err) != ST_OK) fprintf(stderr, "  %s\n", err.msg);
    return pl;
}

#define STR_EQ(a, b) ((a) && !strcmp((a), (b)))

ST_TEST(two_sockets_four_gpus_two_ib)
{
    st_topo_t *t = open_xml("2s-4gpu-2ib.xml");
    ST_REQUIRE(t);
    st_topo_summary_t s = st_topo_get_summary(t);
    ST_CHECK(s.n_packages == 2 && s.n_numa == 2 && s.n_cores == 8 && s.n_pus == 16);
    ST_CHECK(s.n_gpus == 4 && s.n_nics == 3 && s.this_system == 0);
    ST_CHECK(st_topo_warnings(t)[0] == '\0');

    const st_topo_numa_t *n0 = st_topo_numa(t, 0), *n1 = st_topo_numa(t, 1);
    ST_REQUIRE(n0 && n1 && !st_topo_numa(t, 2));
    ST_CHECK(n0->os_index == 0 && n0->memory_bytes == 64ull << 30 && STR_EQ(n0->cpuset, "0-3,8-11"));
    ST_CHECK(n1->os_index == 1 && STR_EQ(n1->cpuset, "4-7,12-15"));

    static const char *gpu_pci[] = {"0000:03:00.0", "0000:04:00.0", "0000:83:00.0", "0000:85:00.0"};
    static const int gpu_nic[] = {0, 0, 1, 1}, gpu_numa[] = {0, 0, 1, 1};
    for (unsigned i = 0; i < 4; i++) {
        const st_topo_gpu_t *g = st_topo_gpu(t, i);
        ST_REQUIRE(g);
        ST_CHECK_MSG(g->index == i && STR_EQ(g->pci, gpu_pci[i]), "gpu %u pci %s", i, g->pci);
        ST_CHECK(g->numa == gpu_numa[i]);
        ST_CHECK(g->cuda_ordinal == (int)i && STR_EQ(g->cuda_source, "hwloc"));
        ST_CHECK_MSG(g->nearest_nic == gpu_nic[i], "gpu %u nic %d", i, g->nearest_nic);
        ST_CHECK(STR_EQ(g->nic_relation, "on the same PCIe switch"));
        ST_CHECK(STR_EQ(g->local_cpus, gpu_numa[i] ? "4-7,12-15" : "0-3,8-11"));
        ST_CHECK(STR_EQ(g->model, "NVIDIA H100 80GB HBM3"));
    }
    const st_topo_nic_t *m0 = st_topo_nic(t, 0), *m1 = st_topo_nic(t, 1), *e = st_topo_nic(t, 2);
    ST_REQUIRE(m0 && m1 && e && !st_topo_nic(t, 3));
    ST_CHECK(STR_EQ(m0->name, "mlx5_0") && m0->kind == ST_TOPO_NIC_RDMA && STR_EQ(m0->pci, "0000:05:00.0"));
    ST_CHECK(m0->numa == 0 && STR_EQ(m0->netdev, "ib0") && m0->port == 1 && !m0->port_down);
    ST_CHECK(STR_EQ(m0->ucx_dev, "mlx5_0:1") && STR_EQ(m0->local_cpus, "0-3,8-11"));
    ST_CHECK(STR_EQ(m1->name, "mlx5_1") && STR_EQ(m1->pci, "0000:84:00.0") && m1->numa == 1);
    ST_CHECK(STR_EQ(m1->netdev, "ib1") && STR_EQ(m1->ucx_dev, "mlx5_1:1"));
    ST_CHECK(STR_EQ(e->name, "eno1") && e->kind == ST_TOPO_NIC_ETHERNET && STR_EQ(e->pci, "0000:00:1f.6"));
    ST_CHECK(e->numa == 0 && STR_EQ(e->netdev, "eno1") && STR_EQ(e->ucx_dev, "eno1") && e->port == 0);

    st_topo_place_t *pl = place(t, 0, NULL);
    ST_REQUIRE(pl);
    ST_REQUIRE(st_topo_place_count(pl) == 4);
    static const char *cpus[] = {"0-1,8-9", "2-3,10-11", "4-5,12-13", "6-7,14-15"};
    static const char *ucx[] = {"mlx5_0:1", "mlx5_0:1", "mlx5_1:1", "mlx5_1:1"};
    for (unsigned i = 0; i < 4; i++) {
        const st_topo_worker_t *w = st_topo_place_worker(pl, i);
        ST_CHECK_MSG(STR_EQ(w->cpus, cpus[i]), "worker %u cpus %s", i, w->cpus);
        ST_CHECK(w->index == i && w->numa == gpu_numa[i] && w->gpu == (int)i && w->cuda_ordinal == (int)i);
        ST_CHECK(w->nic == gpu_nic[i] && STR_EQ(w->ucx_net_devices, ucx[i]));
    }
    const char *ex = st_topo_place_worker(pl, 2)->explanation;
    ST_CHECK_MSG(STR_EQ(ex, "worker 2: GPU 2 (0000:83:00.0) on NUMA 1, NIC mlx5_1 on the same PCIe switch, "
                            "cpus 4-5,12-13"), "%s", ex);
    ST_CHECK(!st_topo_place_worker(pl, 4));

    /* Binding needs this machine's topology. */
    st_error_t err;
    ST_CHECK(st_topo_bind(t, pl, 0, &err) == ST_ERR_UNSUPPORTED);
    ST_CHECK(st_topo_bind(t, pl, 9, &err) == ST_ERR_INVALID);
    st_topo_place_free(pl);

    /* Two workers: the first two GPUs, which share socket 0's cores. */
    pl = place(t, 2, NULL);
    ST_REQUIRE(pl && st_topo_place_count(pl) == 2);
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 0)->cpus, "0-1,8-9"));
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 1)->cpus, "2-3,10-11"));
    st_topo_place_free(pl);

    st_topo_place_params_t pp = { .size = sizeof(pp), .n_workers = 5 };
    ST_CHECK(st_topo_place(t, &pp, &pl, &err) == ST_ERR_RANGE);
    st_topo_close(t);
}

ST_TEST(gpus_without_rdma_fall_back_to_ethernet)
{
    st_topo_t *t = open_xml("1s-2gpu-eth.xml");
    ST_REQUIRE(t);
    st_topo_summary_t s = st_topo_get_summary(t);
    ST_CHECK(s.n_gpus == 2 && s.n_nics == 1 && s.n_numa == 1);
    ST_CHECK_MSG(strstr(st_topo_warnings(t), "without RDMA NIC") != NULL, "%s", st_topo_warnings(t));
    ST_CHECK(strstr(st_topo_warnings(t), "eno1") != NULL);
    for (unsigned i = 0; i < 2; i++) {
        const st_topo_gpu_t *g = st_topo_gpu(t, i);
        ST_CHECK(g->nearest_nic == 0 && STR_EQ(g->nic_relation, "on the same host bridge"));
        ST_CHECK(g->cuda_ordinal == (int)i && STR_EQ(g->cuda_source, "pci-order"));
        ST_CHECK(g->numa == 0 && STR_EQ(g->local_cpus, "0-7"));
    }
    ST_CHECK(STR_EQ(st_topo_gpu(t, 0)->pci, "0000:01:00.0") && STR_EQ(st_topo_gpu(t, 1)->pci, "0000:02:00.0"));
    const st_topo_nic_t *e = st_topo_nic(t, 0);
    ST_CHECK(STR_EQ(e->name, "eno1") && e->kind == ST_TOPO_NIC_ETHERNET && e->numa == 0);

    st_topo_place_t *pl = place(t, 0, NULL);
    ST_REQUIRE(pl && st_topo_place_count(pl) == 2);
    for (unsigned i = 0; i < 2; i++) {
        const st_topo_worker_t *w = st_topo_place_worker(pl, i);
        ST_CHECK(STR_EQ(w->cpus, i ? "4-7" : "0-3") && w->numa == 0 && w->gpu == (int)i);
        ST_CHECK(w->nic == 0 && STR_EQ(w->ucx_net_devices, "eno1"));
        ST_CHECK_MSG(strstr(w->explanation, "NIC eno1 (Ethernet, no RDMA NIC on this host)") != NULL, "%s", w->explanation);
    }
    st_topo_place_free(pl);
    st_topo_close(t);
}

ST_TEST(single_socket_cpu_host)
{
    st_topo_t *t = open_xml("1s-cpu-2numa.xml");
    ST_REQUIRE(t);
    st_topo_summary_t s = st_topo_get_summary(t);
    ST_CHECK(s.n_packages == 1 && s.n_numa == 2 && s.n_cores == 8 && s.n_pus == 8 && s.n_gpus == 0);
    ST_REQUIRE(s.n_nics == 1);
    ST_CHECK(st_topo_warnings(t)[0] == '\0');
    ST_CHECK(STR_EQ(st_topo_nic(t, 0)->name, "enp1s0") && st_topo_nic(t, 0)->numa == 0);
    ST_CHECK(STR_EQ(st_topo_nic(t, 0)->local_cpus, "0-3"));
    ST_CHECK(st_topo_numa(t, 1)->memory_bytes == 32ull << 30);

    /* Default: one worker per NUMA node. */
    st_topo_place_t *pl = place(t, 0, NULL);
    ST_REQUIRE(pl && st_topo_place_count(pl) == 2);
    const st_topo_worker_t *w0 = st_topo_place_worker(pl, 0), *w1 = st_topo_place_worker(pl, 1);
    ST_CHECK(STR_EQ(w0->cpus, "0-3") && w0->numa == 0 && w0->gpu == -1 && w0->cuda_ordinal == -1);
    ST_CHECK(w0->nic == 0 && STR_EQ(w0->ucx_net_devices, "enp1s0"));
    ST_CHECK_MSG(STR_EQ(w0->explanation, "worker 0: on NUMA 0, NIC enp1s0 (Ethernet) on the same NUMA node, cpus 0-3"),
                 "%s", w0->explanation);
    ST_CHECK(STR_EQ(w1->cpus, "4-7") && w1->numa == 1 && w1->nic == 0);
    ST_CHECK_MSG(strstr(w1->explanation, "on another NUMA node (NUMA 0): traffic crosses the socket interconnect"),
                 "%s", w1->explanation);
    st_topo_place_free(pl);

    /* Three workers: 1.5 per node, the extra one to node 0. */
    pl = place(t, 3, NULL);
    ST_REQUIRE(pl && st_topo_place_count(pl) == 3);
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 0)->cpus, "0-1"));
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 1)->cpus, "2-3"));
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 2)->cpus, "4-7") && st_topo_place_worker(pl, 2)->numa == 1);
    st_topo_place_free(pl);

    /* More workers than PUs: they share, and say so. */
    pl = place(t, 10, NULL);
    ST_REQUIRE(pl && st_topo_place_count(pl) == 10);
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 0)->cpus, "0"));
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 4)->cpus, "0"));   /* node 0 took 5: PU j mod 4 */
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 5)->cpus, "4"));
    ST_CHECK(strstr(st_topo_place_worker(pl, 4)->explanation, "shared") != NULL);
    st_topo_place_free(pl);

    /* Restricted to PUs 2-5: still one worker per node, on the PUs left. */
    pl = place(t, 0, "2-5");
    ST_REQUIRE(pl && st_topo_place_count(pl) == 2);
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 0)->cpus, "2-3"));
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 1)->cpus, "4-5"));
    st_topo_place_free(pl);

    st_error_t err;
    st_topo_place_params_t pp = { .size = sizeof(pp), .cpus = "abc" };
    ST_CHECK(st_topo_place(t, &pp, &pl, &err) == ST_ERR_INVALID);
    pp.cpus = "100";
    ST_CHECK(st_topo_place(t, &pp, &pl, &err) == ST_ERR_INVALID);
    st_topo_close(t);
}

ST_TEST(asymmetric_host_nic_on_one_socket)
{
    st_topo_t *t = open_xml("2s-asym-1ib.xml");
    ST_REQUIRE(t);
    st_topo_summary_t s = st_topo_get_summary(t);
    ST_CHECK(s.n_gpus == 3 && s.n_nics == 1 && s.n_numa == 2);
    /* GPUs in CUDA order (from the cudaN OS devices), not PCI order. */
    static const char *pci[] = {"0000:81:00.0", "0000:03:00.0", "0000:05:00.0"};
    static const char *rel[] = {"on another NUMA node", "on the same PCIe switch", "on the same host bridge"};
    static const int numa[] = {1, 0, 0};
    for (unsigned i = 0; i < 3; i++) {
        const st_topo_gpu_t *g = st_topo_gpu(t, i);
        ST_CHECK_MSG(STR_EQ(g->pci, pci[i]), "gpu %u: %s", i, g->pci);
        ST_CHECK(g->cuda_ordinal == (int)i && g->numa == numa[i] && g->nearest_nic == 0);
        ST_CHECK_MSG(STR_EQ(g->nic_relation, rel[i]), "gpu %u: %s", i, g->nic_relation);
    }
    st_topo_place_t *pl = place(t, 0, NULL);
    ST_REQUIRE(pl && st_topo_place_count(pl) == 3);
    const st_topo_worker_t *w0 = st_topo_place_worker(pl, 0);
    ST_CHECK(STR_EQ(w0->cpus, "4-7") && w0->numa == 1 && w0->nic == 0 && STR_EQ(w0->ucx_net_devices, "mlx5_0:1"));
    ST_CHECK_MSG(strstr(w0->explanation, "NIC mlx5_0 on another NUMA node (NUMA 0): traffic crosses the socket interconnect"),
                 "%s", w0->explanation);
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 1)->cpus, "0-1") && st_topo_place_worker(pl, 1)->numa == 0);
    ST_CHECK(STR_EQ(st_topo_place_worker(pl, 2)->cpus, "2-3"));
    ST_CHECK(strstr(st_topo_place_worker(pl, 1)->explanation, "on the same PCIe switch") != NULL);
    st_topo_place_free(pl);
    st_topo_close(t);
}

ST_TEST(bad_files_are_refused)
{
    st_topo_t *t = NULL;
    st_error_t err = {{0}};
    st_topo_open_params_t p = { .size = sizeof(p), .xml_path = "/nonexistent/topo.xml" };
    ST_CHECK(st_topo_open(&p, &t, &err) == ST_ERR_IO && t == NULL);
    ST_CHECK(strstr(err.msg, "/nonexistent/topo.xml") != NULL);
    p.xml_path = ST_TOPO_XML_DIR "/../test_topo_xml.c";   /* exists, is not XML */
    ST_CHECK(st_topo_open(&p, &t, &err) == ST_ERR_FORMAT && t == NULL);
    p.size = 4;
    ST_CHECK(st_topo_open(&p, &t, &err) == ST_ERR_INVALID);
}

int main(void) { return st_test_main(); }
