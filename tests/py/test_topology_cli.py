"""`strata topo` as a user runs it: the local machine and the committed hwloc
XML topologies in both output forms, the layer plan of the real model over a
workers file, and the errors a user sees for bad input.

The JSON keys checked here are the contract of docs/TOPOLOGY.md. Facts about
the local machine are compared with what Linux reports in /sys, not with
numbers written into the test.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRATA = os.environ.get("STRATA_BIN", str(ROOT / "build" / "bin" / "strata"))
XML = ROOT / "tests" / "topology" / "xml"
WORKERS = ROOT / "tests" / "topology" / "workers"
MODEL = os.environ.get("STRATA_TEST_MODEL",
                       "/root/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    if not os.access(STRATA, os.X_OK):
        pytest.skip(f"strata binary not built at {STRATA}")
    return subprocess.run([STRATA, "topo", *args], capture_output=True, text=True,
                          timeout=timeout)


def topo_json(*args: str) -> dict:
    r = run(*args, "--json")
    if r.returncode == 1 and "built without hwloc" in r.stderr:
        pytest.skip("strata built without hwloc")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def pu_list(s: str) -> set[int]:
    out: set[int] = set()
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        elif part:
            out.add(int(part))
    return out


def test_local_machine_json_matches_sysfs():
    d = topo_json()
    assert d["this_system"] is True
    nodes = sorted(p.name for p in Path("/sys/devices/system/node").glob("node[0-9]*"))
    if nodes:
        assert len(d["numa_nodes"]) == len(nodes)
    all_pus: set[int] = set()
    for n in d["numa_nodes"]:
        assert set(n) >= {"os_index", "memory_bytes", "cpuset"}
        assert n["memory_bytes"] > 0
        all_pus |= pu_list(n["cpuset"])
    assert set(os.sched_getaffinity(0)) <= all_pus
    # Every NIC is a real interface; every device-backed interface is listed.
    backed = {p.name for p in Path("/sys/class/net").iterdir() if (p / "device").exists()}
    listed = set()
    for nic in d["nics"]:
        assert set(nic) >= {"name", "kind", "pci", "numa", "netdev"}
        assert nic["kind"] in ("rdma", "ethernet")
        if nic["netdev"]:
            assert (Path("/sys/class/net") / nic["netdev"]).exists()
            listed.add(nic["netdev"])
        if nic["pci"]:
            assert (Path("/sys/bus/pci/devices") / nic["pci"]).exists(), nic["pci"]
    assert listed == backed
    for g in d["gpus"]:
        assert (Path("/sys/bus/pci/devices") / g["pci"]).exists()
    expect = len(d["gpus"]) or len(d["numa_nodes"])
    assert 1 <= len(d["workers"]) <= expect
    for w in d["workers"]:
        assert set(w) >= {"cpus", "numa", "gpu", "nic", "ucx_net_devices"}
        assert pu_list(w["cpus"]) <= all_pus
        assert w["numa"] in [n["os_index"] for n in d["numa_nodes"]]
        if d["nics"]:
            assert w["nic"] in [n["name"] for n in d["nics"]]
            assert w["ucx_net_devices"]


def test_local_machine_text_and_worker_count():
    r = run()
    if r.returncode == 1 and "built without hwloc" in r.stderr:
        pytest.skip("strata built without hwloc")
    assert r.returncode == 0, r.stderr
    assert "topology of this machine" in r.stdout
    assert "placement of" in r.stdout and "worker 0:" in r.stdout
    n_pus = len(os.sched_getaffinity(0))
    d = topo_json("--workers", str(n_pus))
    assert len(d["workers"]) == n_pus
    seen: set[int] = set()
    for w in d["workers"]:
        pus = pu_list(w["cpus"])
        assert len(pus) == 1 and not (pus & seen)   # one PU each, disjoint
        seen |= pus


def test_four_gpu_xml_pairs_gpus_with_their_switch_nic():
    d = topo_json("--xml", str(XML / "2s-4gpu-2ib.xml"))
    assert d["this_system"] is False
    assert [n["os_index"] for n in d["numa_nodes"]] == [0, 1]
    assert [g["pci"] for g in d["gpus"]] == ["0000:03:00.0", "0000:04:00.0",
                                              "0000:83:00.0", "0000:85:00.0"]
    assert [g["nearest_nic"] for g in d["gpus"]] == ["mlx5_0", "mlx5_0", "mlx5_1", "mlx5_1"]
    assert [g["numa"] for g in d["gpus"]] == [0, 0, 1, 1]
    assert {g["nic_relation"] for g in d["gpus"]} == {"on the same PCIe switch"}
    nics = {n["name"]: n for n in d["nics"]}
    assert (nics["mlx5_1"]["kind"], nics["mlx5_1"]["pci"], nics["mlx5_1"]["numa"],
            nics["mlx5_1"]["netdev"]) == ("rdma", "0000:84:00.0", 1, "ib1")
    assert (nics["eno1"]["kind"], nics["eno1"]["netdev"]) == ("ethernet", "eno1")
    assert [(w["gpu"], w["nic"], w["ucx_net_devices"], w["numa"], w["cpus"]) for w in d["workers"]] == [
        (0, "mlx5_0", "mlx5_0:1", 0, "0-1,8-9"),
        (1, "mlx5_0", "mlx5_0:1", 0, "2-3,10-11"),
        (2, "mlx5_1", "mlx5_1:1", 1, "4-5,12-13"),
        (3, "mlx5_1", "mlx5_1:1", 1, "6-7,14-15"),
    ]
    r = run("--xml", str(XML / "2s-4gpu-2ib.xml"))
    assert ("worker 2: GPU 2 (0000:83:00.0) on NUMA 1, NIC mlx5_1 on the same PCIe switch, "
            "cpus 4-5,12-13") in r.stdout


def test_gpu_host_without_rdma_warns():
    r = run("--xml", str(XML / "1s-2gpu-eth.xml"), "--json")
    if r.returncode == 1 and "built without hwloc" in r.stderr:
        pytest.skip("strata built without hwloc")
    assert r.returncode == 0
    assert "without RDMA NIC" in r.stderr          # the warning reaches the user
    d = json.loads(r.stdout)
    assert any("without RDMA NIC" in w for w in d["warnings"])
    assert [w["ucx_net_devices"] for w in d["workers"]] == ["eno1", "eno1"]


def test_cpu_and_asymmetric_hosts():
    d = topo_json("--xml", str(XML / "1s-cpu-2numa.xml"), "--workers", "3")
    assert [(w["cpus"], w["numa"], w["gpu"]) for w in d["workers"]] == [
        ("0-1", 0, None), ("2-3", 0, None), ("4-7", 1, None)]
    d = topo_json("--xml", str(XML / "2s-asym-1ib.xml"))
    assert [g["pci"] for g in d["gpus"]] == ["0000:81:00.0", "0000:03:00.0", "0000:05:00.0"]
    assert d["workers"][0]["numa"] == 1 and d["workers"][0]["nic"] == "mlx5_0"
    assert "crosses the socket interconnect" in d["workers"][0]["explanation"]


def test_topology_errors():
    r = run("--xml", "/nonexistent.xml")
    if r.returncode == 1 and "built without hwloc" in r.stderr:
        pytest.skip("strata built without hwloc")
    assert r.returncode == 1 and "/nonexistent.xml" in r.stderr
    r = run("--xml", str(XML / "2s-4gpu-2ib.xml"), "--workers", "5")
    assert r.returncode == 1 and "4 GPUs" in r.stderr
    assert run("--workers", "lots").returncode == 2
    assert run("--bogus").returncode == 2
    assert run("--plan", MODEL).returncode == 2        # needs --workers-file


def plan(*args: str) -> subprocess.CompletedProcess:
    if not Path(MODEL).exists():
        pytest.skip(f"model {MODEL} not present")
    r = run("--plan", MODEL, *args)
    if r.returncode == 1 and "built without the model library" in r.stderr:
        pytest.skip("strata built without the model library")
    return r


def test_plan_of_the_real_model():
    r = plan("--workers-file", str(WORKERS / "two-hosts.txt"), "--ctx", "4096", "--seqs", "4",
             "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["n_layer"], d["n_ctx"], d["n_seq"]) == (30, 4096, 4)
    nxt = 0
    for s in d["stages"]:
        assert s["first_layer"] == nxt and s["n_layers"] == s["last_layer"] - s["first_layer"] + 1
        assert s["total_bytes"] <= s["mem_bytes"]
        nxt = s["last_layer"] + 1
    assert nxt == 30
    assert d["stages"][0]["holds_embd"] and d["stages"][-1]["holds_output"]
    # The two node1 workers are adjacent (2 us link), the slow worker gets half as many layers.
    names = [s["worker"] for s in d["stages"]]
    assert abs(names.index("gpu-a") - names.index("gpu-c")) == 1
    layers = {s["worker"]: s["n_layers"] for s in d["stages"]}
    assert layers["cpu-b"] * 2 == layers["gpu-a"] == layers["gpu-c"]
    assert d["unused"] == [{"worker": "tiny", "reason": "too_small",
                            "need_bytes": d["unused"][0]["need_bytes"], "mem_bytes": 8 << 20}]
    text = plan("--workers-file", str(WORKERS / "two-hosts.txt"))
    assert text.returncode == 0 and "layer plan: 30 layers" in text.stdout


def test_plan_errors(tmp_path: Path):
    r = plan("--workers-file", str(WORKERS / "too-small.txt"))
    assert r.returncode == 1
    assert "does not fit" in r.stderr and "missing in total" in r.stderr
    assert "'a' needs" in r.stderr and "'b' needs" in r.stderr
    bad = tmp_path / "w.txt"
    bad.write_text("worker a mem=1G\nworker b mem=lots\n")
    r = plan("--workers-file", str(bad))
    assert r.returncode == 1 and f"{bad}:2: worker 'b': mem 'lots'" in r.stderr
    r = plan("--workers-file", str(tmp_path / "missing.txt"))
    assert r.returncode == 1 and "missing.txt" in r.stderr
