"""Standalone launch as on several hosts: `strata coordinator` and
`strata worker --join` started separately with a secret file; the secret
check, a corrupt model copy, hostile control connections, the config file
and the SIGTERM drain."""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import ROOT, StderrWatch, run


PROMPT = "The capital of France is"
N = 16


def wait_listening(port, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.time() < deadline, f"nothing listens on {port}"
            time.sleep(0.1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def secret(tmp_path):
    p = tmp_path / "secret"
    p.write_text("test-cluster-secret-0123456789\n")
    return str(p)


def reference(strata, model, n=N):
    r = run([strata, "generate", "-m", model, "-p", PROMPT, "-n", str(n), "--temp", "0",
             "-t", "1"], timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def start(args, **kw):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def worker(strata, port, secret, name, *extra):
    return start([strata, "worker", "--join", f"127.0.0.1:{port}", "--secret-file", secret,
                  "--name", name, "-t", "1", "--data-listen", "127.0.0.1:0",
                  "--join-timeout", "20"] + list(extra))


def finish(p, timeout=60):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"process did not finish: {err[-2000:]}")
    return p.returncode, out, err


def test_coordinator_and_two_workers(strata, real_model, secret):
    """The control plane's names: --control-host/--control-port on the
    coordinator (--listen H:P is their older spelling, used below), the same
    port in the workers' --join."""
    want = reference(strata, real_model)
    port = free_port()
    c = start([strata, "coordinator", "-m", real_model, "--control-host", "127.0.0.1",
               "--control-port", str(port),
               "--data-listen", "127.0.0.1:0", "--workers", "2", "--secret-file", secret,
               "--join-timeout", "30", "-p", PROMPT, "-n", str(N)])
    ws = [worker(strata, port, secret, f"w{i}") for i in range(2)]
    rc, out, err = finish(c)
    assert rc == 0, err[-3000:]
    assert out.rstrip("\n") == want.rstrip("\n")
    for w in ws:
        wrc, _, werr = finish(w, 20)
        assert wrc == 0, werr[-2000:]
        assert "drained by the coordinator" in werr


def test_wrong_secret_is_refused(strata, real_model, secret, tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("not-the-cluster-secret-at-all\n")
    port = free_port()
    c = start([strata, "coordinator", "-m", real_model, "--listen", f"127.0.0.1:{port}",
               "--data-listen", "127.0.0.1:0", "--workers", "1", "--secret-file", secret,
               "--join-timeout", "30", "-p", PROMPT, "-n", "4"])
    intruder = worker(strata, port, str(bad), "intruder")
    rc, _, werr = finish(intruder, 30)
    assert rc == 1
    # Mutual authentication: the worker notices the coordinator does not share
    # its secret before it proves anything; either side refusing is correct.
    assert "does not know the cluster secret" in werr or "refused" in werr, werr
    good = worker(strata, port, secret, "good")
    crc, out, cerr = finish(c)
    assert crc == 0, cerr[-3000:]
    assert out.strip()
    assert "intruder" not in cerr or "refused" in cerr
    finish(good, 20)


def test_worker_refused_when_it_lacks_the_secret_the_coordinator_checks(strata, real_model,
                                                                       secret, tmp_path):
    """A raw client that passes HELLO but sends a made-up AUTH is refused and
    logged by the coordinator, which keeps serving."""
    import struct
    port = free_port()
    c = start([strata, "coordinator", "-m", real_model, "--listen", f"127.0.0.1:{port}",
               "--data-listen", "127.0.0.1:0", "--workers", "1", "--secret-file", secret,
               "--join-timeout", "30", "-p", PROMPT, "-n", "4"])
    wait_listening(port)
    s = socket.create_connection(("127.0.0.1", port), timeout=20)

    def frame(t, payload):
        return struct.pack("<IHHII", 0x43525453, 3, t, len(payload), 0) + payload  # protocol v3

    def sstr(x):
        return struct.pack("<H", len(x)) + x

    s.sendall(frame(1, sstr(b"faker") + sstr(b"h") + bytes(32) + struct.pack("<QII", 1, 1, 1)))
    hdr = s.recv(16)
    assert len(hdr) == 16 and struct.unpack("<IHHII", hdr)[2] == 2   # CHALLENGE
    s.recv(64)
    s.sendall(frame(3, bytes(32)))                                      # a wrong MAC
    hdr = s.recv(16)
    assert struct.unpack("<IHHII", hdr)[2] == 5                          # REFUSE
    s.close()
    good = worker(strata, port, secret, "good")
    rc, out, err = finish(c)
    assert rc == 0, err[-3000:]
    assert "'faker'" in err and "does not know the cluster secret" in err
    finish(good, 20)


def test_hostile_control_messages_do_not_hurt(strata, real_model, secret):
    import struct
    port = free_port()
    c = start([strata, "coordinator", "-m", real_model, "--listen", f"127.0.0.1:{port}",
               "--data-listen", "127.0.0.1:0", "--workers", "1", "--secret-file", secret,
               "--join-timeout", "30", "-p", PROMPT, "-n", "4"])
    v = 3   # the protocol version (ST_CTRL_VERSION), so each frame fails where meant
    bad_frames = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                               # not our protocol
        struct.pack("<IHHII", 0x43525453, v, 1, 0x7fffffff, 0),              # huge length
        struct.pack("<IHHII", 0x43525453, v, 99, 0, 0),                      # unknown type
        struct.pack("<IHHII", 0x43525453, 9, 1, 0, 0),                       # bad version
        struct.pack("<IHHII", 0x43525453, v, 1, 4, 0) + b"\xff\xff\x00\x00",  # bad string len
        os.urandom(4096),
    ]
    wait_listening(port)
    for f in bad_frames:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(f)
        s.settimeout(5)
        try:
            s.recv(100)      # the coordinator closes (or refuses) us
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
    good = worker(strata, port, secret, "good")
    rc, out, err = finish(c)
    assert rc == 0, err[-3000:]
    assert out.strip()
    assert "bad magic" in err and "over the limit" in err and "unknown message type" in err
    finish(good, 20)


def corrupt_copy(model, dst):
    """Copies the model and flips bytes in the middle of tensor blk.20.ffn_down."""
    shutil.copyfile(model, dst)
    try:
        import gguf
        r = gguf.GGUFReader(model)
        t = [t for t in r.tensors if t.name == "blk.20.ffn_down.weight"][0]
        off = int(t.data_offset) + int(t.n_bytes) // 2
    except Exception:
        off = os.path.getsize(model) * 6 // 10
    with open(dst, "r+b") as f:
        f.seek(off)
        b = f.read(16)
        f.seek(off)
        f.write(bytes(x ^ 0x5A for x in b))


def test_corrupt_shard_is_refused(strata, real_model, secret, tmp_path):
    bad = tmp_path / "corrupt.gguf"
    corrupt_copy(real_model, bad)
    port = free_port()
    c = start([strata, "coordinator", "-m", real_model, "--listen", f"127.0.0.1:{port}",
               "--data-listen", "127.0.0.1:0", "--workers", "2", "--secret-file", secret,
               "--split", "1,29", "--join-timeout", "30", "-p", PROMPT, "-n", "4"])
    # Names sort the plan: "a-good" gets stage 0 (layer 0), "b-corrupt" the rest.
    good = worker(strata, port, secret, "a-good")
    badw = worker(strata, port, secret, "b-corrupt", "--model", str(bad))
    rc, out, err = finish(c)
    assert rc == 1
    assert "SHA-256" in err and "b-corrupt" in err and "corrupt" in err, err[-3000:]
    assert "blk.20.ffn_down.weight" in err or "tensor '" in err
    for w in (good, badw):
        finish(w, 20)


def test_config_file(strata, real_model, tmp_path):
    want = reference(strata, real_model, n=8)
    cfg = (ROOT / "configs" / "cluster.toml").read_text()
    cfg += (f'\n[test]\nmodel = "{real_model}"\nlocal = 2\nthreads = 1\n'
            'control_host = "127.0.0.1"\ncontrol_port = 0\ndata_listen = "127.0.0.1:0"\n')
    p = tmp_path / "c.toml"
    p.write_text(cfg)
    r = run([strata, "coordinator", "--config", str(p), "-p", PROMPT, "-n", "8"], timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.rstrip("\n") == want.rstrip("\n")


def test_sigterm_drains(strata, real_model):
    # long enough to be running when the signal lands (120 tokens finished
    # within the 0.5 s below on a fast machine, before any drain)
    c = start([strata, "coordinator", "-m", real_model, "--local", "2", "-t", "1", "-p", PROMPT,
               "-n", "600", "--ignore-eos"])
    w = StderrWatch(c)
    w.wait_for("cluster running", 60)   # workers loaded, generation starting
    time.sleep(0.5)
    c.send_signal(signal.SIGTERM)
    out, err = w.finish(60)
    assert c.returncode == 0, err[-3000:]
    assert "draining" in err
    assert "request 0 stream 0: 600 tokens" in err      # the running request finished
