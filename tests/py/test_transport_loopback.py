"""Transport integration tests on one host: real processes talking over UCX.

A test peer (tests/transport/transport_peer.c, built next to the strata
binary) plays server and clients; `strata bench transport` is run as a user
would. Shared memory is UCX_TLS=posix,tcp,self (UCX 1.13 needs a network
transport for the client-server wireup, and still moves the data over posix),
TCP is UCX_TLS=tcp over loopback.

The peer binary is found next to $STRATA_BIN (build/tests/transport/
transport_peer) or through $STRATA_TRANSPORT_PEER; point both at an ASan
build to run the malformed-frame tests under ASan.
"""
import json
import os
import pathlib
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TLS = {"shm": "posix,tcp,self", "tcp": "tcp"}


def strata_bin():
    return os.environ.get("STRATA_BIN", str(ROOT / "build" / "bin" / "strata"))


def peer_bin():
    p = os.environ.get("STRATA_TRANSPORT_PEER")
    if p:
        return p
    return str(pathlib.Path(strata_bin()).resolve().parent.parent / "tests" / "transport" /
               "transport_peer")


@pytest.fixture(scope="module")
def peer_path():
    p = peer_bin()
    if not os.path.exists(p):
        pytest.skip(f"transport test peer not built at {p} (needs UCX: libucx-dev)")
    return p


class Proc:
    """A child process whose stdout lines are read by a thread, so tests can
    wait for a line with a timeout. stderr goes to a file for diagnostics."""

    def __init__(self, args, env=None, prefix=()):
        self.errf = tempfile.TemporaryFile(mode="w+")
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen(list(prefix) + list(args), stdout=subprocess.PIPE,
                                  stderr=self.errf, text=True, env=e)
        self.lines = []
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def expect(self, prefix, timeout=15.0):
        """Returns the first new line starting with prefix; fails on timeout/exit."""
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {prefix!r}; saw {self.lines[-10:]}; "
                                     f"stderr: {self.stderr()[-2000:]}")
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"process exited ({self.p.wait()}) before {prefix!r}; "
                                     f"saw {self.lines[-10:]}; stderr: {self.stderr()[-2000:]}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def stderr(self):
        self.errf.flush()
        self.errf.seek(0)
        return self.errf.read()

    def wait(self, timeout=30):
        return self.p.wait(timeout=timeout)

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()

    def close(self):
        self.kill()
        self.errf.close()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def server(peer_path):
    procs = []

    def start(kind, *extra, prefix=()):
        s = Proc([peer_path, "serve", "127.0.0.1:0", "--tls", TLS[kind], *extra], prefix=prefix)
        procs.append(s)
        s.addr = s.expect("LISTEN").split()[1]
        return s
    yield start
    for p in procs:
        p.close()


def run_client(peer_path, addr, mode, kind, timeout=60, extra=()):
    r = subprocess.run([peer_path, "client", addr, mode, "--tls", TLS[kind], *extra],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{mode}: rc {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.parametrize("kind", ["shm", "tcp"])
def test_integrity_inflight_and_out_of_order(server, peer_path, kind):
    s = server(kind, "--max", str(16 << 20))
    out = run_client(peer_path, s.addr, "integrity", kind, extra=("--max", str(16 << 20)))
    assert "OK integrity" in out and "up to 16777216" in out
    assert "OK inflight 48" in run_client(peer_path, s.addr, "inflight", kind)
    assert "arrived out of order" in run_client(peer_path, s.addr, "ooo", kind)
    run_client(peer_path, s.addr, "quit", kind)
    assert s.expect("STATS").split()[2] != "0"
    assert s.wait() == 0


@pytest.mark.parametrize("kind", ["shm", "tcp"])
def test_message_sent_right_before_close_arrives(server, peer_path, kind):
    """Clients that send one message and close at once: every message reaches
    the server (before the BYE handshake about 1 in 6 was lost over posix),
    and an orderly close is logged as such, not as a failure."""
    s = server(kind)
    n = 10
    for _ in range(n):
        assert "OK last" in run_client(peer_path, s.addr, "last", kind)
    run_client(peer_path, s.addr, "quit", kind)
    stats = s.expect("STATS").split()
    assert stats[2] == str(n + 1), stats      # n messages and the QUIT
    assert s.wait() == 0
    err = s.stderr()
    assert "failed:" not in err, err[-2000:]
    assert err.count("closed by the peer") >= n


MALFORMED = {
    "magic": "bad magic",
    "type": "unknown message type 200",
    "length": "over the maximum",
    "truncated": "truncated frame",
    "short": "header length 20",
}


def test_malformed_frames_rejected_logged_no_crash(server, peer_path):
    s = server("shm")
    for kind, reason in MALFORMED.items():
        r = subprocess.run([peer_path, "malformed", s.addr, kind, "--tls", TLS["shm"]],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{kind}: {r.stdout} {r.stderr[-2000:]}"
        assert "CLOSED" in r.stdout and "timeout" not in r.stdout
        line = s.expect("EP_ERROR")
        assert line.endswith("protocol violation"), line
        assert reason in s.stderr(), f"{kind}: reason {reason!r} not logged:\n{s.stderr()}"
    # still serving well-behaved clients, and every bad frame was counted
    assert "OK integrity" in run_client(peer_path, s.addr, "integrity", "shm")
    run_client(peer_path, s.addr, "quit", "shm")
    stats = s.expect("STATS").split()
    assert stats[stats.index("rejected") + 1] == str(len(MALFORMED))
    assert s.wait() == 0, s.stderr()
    assert "AddressSanitizer" not in s.stderr() and "runtime error" not in s.stderr()


@pytest.mark.parametrize("kind", ["shm", "tcp"])
def test_killed_client_is_detected_and_freed(server, peer_path, kind):
    s = server(kind)
    a = Proc([peer_path, "client", s.addr, "stream", "--tls", TLS[kind]])
    b = Proc([peer_path, "client", s.addr, "stream", "--tls", TLS[kind]])
    try:
        a.expect("ROUND 200")
        b.expect("ROUND 200")
        assert s.expect("EP_COUNT 2", timeout=5)
        t0 = time.time()
        a.kill(signal.SIGKILL)
        line = s.expect("EP_ERROR", timeout=10)
        took = time.time() - t0
        assert "peer failure" in line
        assert took < 5.0, f"peer loss seen after {took:.1f} s"
        s.expect("EP_COUNT 1", timeout=5)        # the failed endpoint was freed
        n = int(b.expect("ROUND").split()[1])    # the other client keeps going
        b.expect(f"ROUND {n + 500}", timeout=15)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("kind", ["shm", "tcp"])
def test_killed_server_fails_client_not_hangs(server, peer_path, kind):
    s = server(kind)
    c = Proc([peer_path, "client", s.addr, "stream", "--tls", TLS[kind]])
    try:
        c.expect("ROUND 100")
        t0 = time.time()
        s.kill(signal.SIGKILL)
        c.expect("CLOSED", timeout=10)
        assert time.time() - t0 < 5.0
        assert c.wait(timeout=10) == 3
    finally:
        c.close()


def test_idle_connected_worker_uses_no_cpu(server, peer_path):
    s = server("shm", "--progress", "hybrid")
    c = Proc([peer_path, "client", s.addr, "idle", "--tls", TLS["shm"], "--progress", "hybrid"])
    try:
        c.expect("READY")
        time.sleep(0.5)                          # let the hybrid spin window pass
        before = {p: cpu_seconds(p.p.pid) for p in (s, c)}
        time.sleep(5.0)
        for p, t in before.items():
            used = cpu_seconds(p.p.pid) - t
            assert used / 5.0 < 0.02, f"idle process used {100 * used / 5.0:.1f}% of a core"
    finally:
        c.close()


def _bench_pair(strata, kind, args):
    env = {"UCX_TLS": TLS[kind]}
    srv = Proc([strata, "bench", "transport", "--listen", "127.0.0.1:0"], env=env)
    try:
        deadline = time.time() + 15
        addr = None
        while time.time() < deadline and addr is None:
            for line in srv.stderr().splitlines():
                if "listening on" in line:
                    addr = line.split()[-1]
            time.sleep(0.05)
        assert addr, srv.stderr()
        r = subprocess.run([strata, "bench", "transport", "--connect", addr, *args],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, **env))
        assert r.returncode == 0, r.stderr[-3000:]
        assert srv.wait(timeout=10) == 0
        return r.stdout
    finally:
        srv.close()


@pytest.mark.parametrize("kind", ["shm", "tcp"])
def test_bench_json(strata, kind):
    out = _bench_pair(strata, kind, ["--sizes", "8,4096,1m", "--iters", "300", "--json",
                                     "--batch", "2", "--dim", "1024"])
    # UCX prints its own warnings on stdout; the JSON is one line of its own
    doc = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    sizes = [r["size"] for r in doc["results"]]
    assert sizes == [8, 4096, 1 << 20]
    for r in doc["results"]:
        assert 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]
        assert r["bandwidth_gbps"] > 0
    assert doc["hop"]["size"] == 2 * 1024 * 2
    # shared memory must not silently be TCP: 8 B one-way far below TCP's ~3 us
    if kind == "shm":
        assert doc["results"][0]["p50_us"] < 2.0, doc["results"][0]


def test_bench_under_mpirun(strata):
    mpirun = shutil.which("mpirun")
    if not mpirun:
        pytest.skip("mpirun not installed (package mpich)")
    r = subprocess.run([mpirun, "-n", "2", strata, "bench", "transport", "--sizes", "8,65536",
                        "--iters", "200", "--json", "--mode", "lat"],
                       capture_output=True, text=True, timeout=120,
                       # Under ASan, MPICH's dlopen'd modules leak at exit (frames
                       # in "<unknown module>"); the same bench without MPI is
                       # leak-checked by test_bench_json.
                       env=dict(os.environ, UCX_TLS=TLS["shm"],
                                ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") +
                                ":detect_leaks=0"))
    if "built without MPI" in r.stderr:
        pytest.skip("strata built without MPI (libmpich-dev)")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])
    assert [x["size"] for x in doc["results"]] == [8, 65536]
    assert all(x["p50_us"] > 0 for x in doc["results"])
