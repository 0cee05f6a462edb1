"""Transport across "two hosts": two network namespaces joined by a veth pair,
UCX_TLS=tcp, as a stand-in for two nodes. Needs root (CAP_NET_ADMIN) and
iproute2; skips with the reason otherwise. The 10.213.0.0/24 addresses exist
only inside the namespaces this test creates, which are removed even when the
test fails.
"""
import os
import shutil
import signal
import subprocess
import time

import pytest

from test_transport_loopback import Proc, peer_bin

ADDR_A, ADDR_B = "10.213.0.1", "10.213.0.2"


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


@pytest.fixture
def netns_pair():
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (run as root or in CI)")
    if not shutil.which("ip"):
        pytest.skip("iproute2 (ip) not installed")
    peer = peer_bin()
    if not os.path.exists(peer):
        pytest.skip(f"transport test peer not built at {peer}")
    tag = f"{os.getpid() % 100000}"
    na, nb = f"st-tp-{tag}-a", f"st-tp-{tag}-b"
    va, vb = f"sttpa{tag}", f"sttpb{tag}"
    created = []
    try:
        for ns in (na, nb):
            r = sh("ip", "netns", "add", ns)
            if r.returncode != 0:
                pytest.skip(f"cannot create network namespaces: {r.stderr.strip()}")
            created.append(ns)
        steps = [
            ("ip", "link", "add", va, "type", "veth", "peer", "name", vb),
            ("ip", "link", "set", va, "netns", na),
            ("ip", "link", "set", vb, "netns", nb),
            ("ip", "-n", na, "addr", "add", f"{ADDR_A}/24", "dev", va),
            ("ip", "-n", nb, "addr", "add", f"{ADDR_B}/24", "dev", vb),
            ("ip", "-n", na, "link", "set", va, "up"),
            ("ip", "-n", nb, "link", "set", vb, "up"),
            ("ip", "-n", na, "link", "set", "lo", "up"),
            ("ip", "-n", nb, "link", "set", "lo", "up"),
        ]
        for s in steps:
            r = sh(*s)
            if r.returncode != 0:
                pytest.skip(f"veth setup failed ({' '.join(s)}): {r.stderr.strip()}")
        yield peer, na, nb
    finally:
        for ns in created:
            sh("ip", "netns", "del", ns)   # removes the veth ends with it


def test_two_namespaces_over_tcp(netns_pair):
    peer, na, nb = netns_pair
    srv = Proc([peer, "serve", f"{ADDR_A}:0", "--tls", "tcp", "--max", str(8 << 20)],
               prefix=("ip", "netns", "exec", na))
    try:
        addr = srv.expect("LISTEN").split()[1]
        assert addr.startswith(ADDR_A + ":")
        for mode in ("integrity", "inflight", "ooo"):
            r = subprocess.run(["ip", "netns", "exec", nb, peer, "client", addr, mode,
                                "--tls", "tcp", "--max", str(8 << 20)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{mode}: {r.stdout}\n{r.stderr[-3000:]}"
            assert "OK" in r.stdout
            # the server saw the client's namespace address, not loopback
            assert srv.expect("EP_READY").split()[1].startswith(ADDR_B + ":")
        # a client killed in the other namespace is detected across the link
        c = Proc([peer, "client", addr, "stream", "--tls", "tcp"],
                 prefix=("ip", "netns", "exec", nb))
        try:
            c.expect("ROUND 100")
            srv.expect("EP_READY")
            t0 = time.time()
            c.kill(signal.SIGKILL)
            assert "peer failure" in srv.expect("EP_ERROR", timeout=10)
            assert time.time() - t0 < 5.0
        finally:
            c.close()
    finally:
        srv.close()
