"""Workers in separate network namespaces, as on separate hosts: the data
plane has to go over TCP between namespaces (a bridge in the root
namespace joins them), the coordinator stays in the root namespace, and
the answer must still equal the single-process engine's. Needs root and
`ip netns`; skips otherwise."""
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from conftest import run

PROMPT = "The capital of France is"
N = 16


def sh(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


@pytest.fixture
def namespaces():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if not shutil.which("ip"):
        pytest.skip("iproute2 (`ip`) is not installed")
    tag = uuid.uuid4().hex[:5]
    br, subnet = f"stbr{tag}", "10.231.7"
    names = [f"stns{tag}{i}" for i in range(2)]
    made_ns, made_links = [], []
    try:
        sh("ip", "link", "add", br, "type", "bridge")
        made_links.append(br)
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", br)
        sh("ip", "link", "set", br, "up")
        for i, ns in enumerate(names):
            sh("ip", "netns", "add", ns)
            made_ns.append(ns)
            host_end, ns_end = f"stv{tag}{i}", f"stp{tag}{i}"
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            made_links.append(host_end)
            sh("ip", "link", "set", host_end, "master", br)
            sh("ip", "link", "set", host_end, "up")
            sh("ip", "link", "set", ns_end, "netns", ns)
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{subnet}.{i + 2}/24", "dev", ns_end)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_end, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    except RuntimeError as e:
        for ns in made_ns:
            sh("ip", "netns", "del", ns, check=False)
        for link in made_links:
            sh("ip", "link", "del", link, check=False)
        pytest.skip(f"cannot create network namespaces here: {e}")
    yield f"{subnet}.1", names
    for ns in made_ns:
        sh("ip", "netns", "del", ns, check=False)
    for link in made_links:
        sh("ip", "link", "del", link, check=False)


def test_workers_in_network_namespaces_over_tcp(strata, real_model, namespaces, tmp_path):
    host_ip, names = namespaces
    secret = tmp_path / "secret"
    secret.write_text("netns-secret-0123456789abcdef\n")
    ref = run([strata, "generate", "-m", real_model, "-p", PROMPT, "-n", str(N), "--temp", "0",
               "-t", "1"], timeout=120)
    assert ref.returncode == 0, ref.stderr
    s = socket.socket()
    s.bind((host_ip, 0))
    port = s.getsockname()[1]
    s.close()
    c = subprocess.Popen([strata, "coordinator", "-m", real_model, "--listen", f"{host_ip}:{port}",
                          "--data-listen", f"{host_ip}:0", "--workers", "2", "--secret-file",
                          str(secret), "--transport", "tcp", "--join-timeout", "30",
                          "-p", PROMPT, "-n", str(N), "--stats"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ws = [subprocess.Popen(["ip", "netns", "exec", ns, strata, "worker", "--join",
                            f"{host_ip}:{port}", "--secret-file", str(secret), "--name",
                            f"ns-worker-{i}", "-t", "1", "--data-listen", "0.0.0.0:0",
                            "--join-timeout", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i, ns in enumerate(names)]
    try:
        out, err = c.communicate(timeout=120)
    finally:
        for w in ws:
            try:
                w.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.communicate()
    assert c.returncode == 0, err[-4000:]
    assert out.rstrip("\n") == ref.stdout.rstrip("\n")
    # The stages really are in the namespaces: their data addresses are theirs.
    assert "10.231.7.2:" in err and "10.231.7.3:" in err, err[-4000:]
    assert "cluster: 2 stages" in err
