"""Replicas behind a real HAProxy (Debian's), configured by the shipped
configs/haproxy/strata.cfg with only its bind, stats socket and server lines
changed: TLS passes through to two `strata serve --workers 1` replicas, a
source address sticks to one replica, the agent check carries each replica's
load-following weight, a draining replica gets weight 0 and finishes its
stream, and a replica killed with -9 loses no request: the next ones go to the
other replica while a stream already on it runs to its end."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from test_http_common import ROOT, Server, free_port, need_model
from test_http_security import make_cert

CFG = os.path.join(ROOT, "configs", "haproxy", "strata.cfg")
PROMPT = "Write a long story about a lighthouse keeper."


def tls_ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE     # self-signed test certificate
    return c


def post(port, body, src="127.0.0.1", timeout=120):
    """POST /v1/completions through the balancer from a chosen source address
    (any 127/8 address is local on Linux, so each is a distinct client IP)."""
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls_ctx(),
                                    source_address=(src, 0))
    try:
        c.request("POST", "/v1/completions", body=json.dumps(body),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def stream(port, body, src, on_first=None, timeout=300):
    """A streamed completion; returns (text, finish_reason, usage)."""
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls_ctx(),
                                    source_address=(src, 0))
    text, finish, usage, first = [], None, None, True
    try:
        c.request("POST", "/v1/completions",
                  body=json.dumps({**body, "stream": True,
                                   "stream_options": {"include_usage": True}}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.read()
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            ev = json.loads(line[6:])
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                text.append(ch.get("text", ""))
                finish = ch.get("finish_reason") or finish
            if first and on_first:
                first = False
                on_first()
    finally:
        c.close()
    return "".join(text), finish, usage


def served(rep):
    """Completions this replica answered (its own /metrics, not the balancer's)."""
    m = rep.metrics()
    return sum(v for k, v in m.items()
               if k.startswith("strata_http_requests_total{") and 'endpoint="/v1/completions"' in k)


class Balancer:
    def __init__(self, tmp, reps):
        self.sock = str(tmp / "haproxy.sock")
        self.port = free_port()
        text = open(CFG).read()
        # the only changes: where it listens, its socket, the replicas
        text = text.replace("bind :8443", f"bind 127.0.0.1:{self.port}")
        text = text.replace("/run/haproxy/strata.sock", self.sock)
        servers = "".join(f"    server replica{i + 1} 127.0.0.1:{r.port} check agent-port "
                          f"{r.agent_port}\n" for i, r in enumerate(reps))
        text, n = re.subn(r"(    server replica\d .*\n)+", servers, text)
        assert n == 1
        self.cfg = tmp / "haproxy.cfg"
        self.cfg.write_text(text)
        self.log = open(tmp / "haproxy.log", "w")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def cmd(self, line):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.sock)
            s.sendall(line.encode() + b"\n")
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    return out.decode()
                out += b

    def servers(self):
        """name -> (status, effective weight) from `show stat`."""
        lines = self.cmd("show stat").splitlines()
        head = lines[0].lstrip("# ").split(",")
        out = {}
        for l in lines[1:]:
            f = dict(zip(head, l.split(",")))
            if f.get("pxname") == "strata_replicas" and f.get("svname", "").startswith("replica"):
                out[f["svname"]] = (f["status"], int(f["weight"] or 0))
        return out

    def wait(self, pred, timeout, what):
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            try:
                last = self.servers()
                if not seen or seen[-1] != last:
                    seen.append(last)
                if pred(last):
                    return last
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"haproxy: {what} not seen in {timeout} s; states seen {seen[-6:]}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def cluster(tmp_path):
    if not shutil.which("haproxy"):
        pytest.fail("haproxy is not installed (scripts/install-deps.sh --test installs it)")
    need_model()
    crt, key = make_cert(tmp_path, "ecdsa")
    reps = []
    try:
        for _ in range(2):
            ap = free_port()
            r = Server("--workers", "1", "--tls-cert", str(crt), "--tls-key", str(key),
                       "--agent-port", str(ap), "--ctx", "2048", tls=True)
            r.agent_port = ap
            reps.append(r)
        lb = Balancer(tmp_path, reps)
        try:
            # both up and weighted by their own agents (idle: 100 %)
            lb.wait(lambda s: len(s) == 2 and all(v == ("UP", 100) for v in s.values()), 40,
                    "both replicas UP at weight 100")
            yield lb, reps
        finally:
            lb.stop()
    finally:
        for r in reps:
            if r.proc.poll() is None:
                r.stop()


def test_config_is_valid():
    if not shutil.which("haproxy"):
        pytest.fail("haproxy is not installed (scripts/install-deps.sh --test installs it)")
    out = subprocess.run(["haproxy", "-c", "-f", CFG], capture_output=True, text=True)
    # the stats socket's directory may not exist here; everything else must parse
    assert out.returncode == 0 or "strata.sock" in out.stdout + out.stderr, out.stdout + out.stderr
    text = open(CFG).read()
    for needle in ("mode tcp", "stick-table type ip size 1m expire 30m", "stick on src",
                   "option httpchk GET /health", "inter 10s", "timeout check 3s",
                   "agent-check"):
        assert needle in text, needle


def test_affinity_weights_drain(cluster):
    lb, reps = cluster
    body = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    # affinity: every request from one source lands on one replica
    before = [served(r) for r in reps]
    texts = set()
    for _ in range(6):
        st, out = post(lb.port, body, src="127.0.0.2")
        assert st == 200, out
        texts.add(json.loads(out)["choices"][0]["text"])
    after = [served(r) for r in reps]
    delta = [a - b for a, b in zip(after, before)]
    assert sorted(delta) == [0, 6], delta
    assert len(texts) == 1
    sticky = delta.index(6)
    rep, other = reps[sticky], reps[1 - sticky]
    name = f"replica{sticky + 1}"

    # load-following: a replica running a stream reports less than 100 %,
    # and HAProxy applies it; a long stream keeps it loaded long enough
    long = {"prompt": PROMPT, "max_tokens": 1200, "temperature": 0, "ignore_eos": True}
    result = {}
    drained = threading.Event()

    def start_drain():
        # weight dropped while it streams, then SIGTERM: the agent says drain
        lb.wait(lambda s: s[name][0] == "UP" and s[name][1] < 100, 30,
                f"{name} weight below 100 while it streams")
        rep.proc.send_signal(signal.SIGTERM)
        drained.set()

    def run():
        result["r"] = stream(lb.port, long, "127.0.0.2",
                             on_first=lambda: threading.Thread(target=start_drain).start())

    t = threading.Thread(target=run)
    t.start()
    # draining: weight 0 (DRAIN), while its stream goes on
    assert drained.wait(60)
    # ("DRAIN (agent)", 0); the health check then finds the listener closed
    # and marks it DOWN, which does not cut the sessions already on it
    lb.wait(lambda s: s[name][0].startswith("DRAIN") and s[name][1] == 0, 20,
            f"{name} in DRAIN at weight 0")
    assert t.is_alive(), "the stream ended before the drain was seen; make it longer"
    # a new client goes to the other replica meanwhile
    b0 = served(other)
    st, out = post(lb.port, body, src="127.0.0.3")
    assert st == 200, out
    assert served(other) == b0 + 1
    t.join(300)
    text, finish, usage = result["r"]
    # the stream finished whole: every token asked for, ended by length
    assert finish == "length" and usage and usage["completion_tokens"] == 1200, (finish, usage)
    assert rep.proc.wait(timeout=60) == 0


def test_kill_one_replica(cluster):
    lb, reps = cluster
    body = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    # find each source's replica
    src_of = {}
    for i in range(2, 40):
        src = f"127.0.0.{i}"
        b = [served(r) for r in reps]
        st, out = post(lb.port, body, src=src)
        assert st == 200, out
        idx = [served(r) - x for r, x in zip(reps, b)].index(1)
        src_of.setdefault(idx, src)
        if len(src_of) == 2:
            break
    assert len(src_of) == 2, "leastconn never used the second replica"
    victim, survivor = reps[0], reps[1]
    long = {"prompt": PROMPT, "max_tokens": 400, "temperature": 0, "ignore_eos": True}
    ref = json.loads(post(lb.port, long, src=src_of[1])[1])["choices"][0]["text"]
    result = {}
    started = threading.Event()

    def run():
        result["r"] = stream(lb.port, long, src_of[1], on_first=started.set)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    victim.proc.kill()                       # the coordinator, -9: no drain
    victim.proc.wait()
    t0 = time.time()
    # the victim's clients are served by the survivor from the next request on
    # (a refused connection is redispatched and marks the victim down)
    for _ in range(3):
        st, out = post(lb.port, body, src=src_of[0])
        assert st == 200, out
    lb.wait(lambda s: s["replica1"][0].startswith("DOWN"), 13, "replica1 DOWN")
    assert time.time() - t0 < 13
    t.join(120)
    text, finish, usage = result["r"]
    # the stream on the other replica was not disturbed: whole and equal
    assert finish == "length" and usage["completion_tokens"] == 400
    assert text == ref
