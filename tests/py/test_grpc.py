"""The gRPC door (strata.v1.Generator, proto/strata/v1/generate.proto) with a
real client: Python stubs generated from the proto with grpcio-tools into a
temporary directory, against `strata serve --grpc-port 0` (single process
for the cheap cases, `--workers 2` for the text comparisons and the load).

Greedy text equals `strata generate`'s; keys, roles and rate limits give
UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED; bad values
INVALID_ARGUMENT; a deadline and a client cancel stop the generation (the
cancelled counter of /metrics); 50 concurrent streams finish; TLS with a
self-signed certificate; SIGTERM lets a running stream finish while a new
call gets UNAVAILABLE; hostile bytes on the port leave the server serving.
"""
import importlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from test_http_common import BIN, MODEL, Server, need_model, reference

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "proto")
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    from grpc_tools import protoc
    out = tmp_path_factory.mktemp("grpc_stubs")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}",
                      f"--grpc_python_out={out}", "strata/v1/generate.proto"])
    assert rc == 0
    sys.path.insert(0, str(out))
    try:
        m = importlib.import_module("strata.v1.generate_pb2")
        g = importlib.import_module("strata.v1.generate_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return m, g


class GrpcServer(Server):
    """`strata serve ... --grpc-port 0`; self.grpc_port from its stdout line."""

    def __init__(self, *args, **kw):
        need_model()
        try:
            super().__init__("--grpc-port", "0", *args, **kw)
        except RuntimeError as e:
            if "built without gRPC" in str(e):
                pytest.skip("strata was built without the gRPC door")
            raise
        self.grpc_port = None
        deadline = time.time() + 10
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"strata: gRPC on .*:(\d+) ", line)
            if m:
                self.grpc_port = int(m.group(1))
                break
        assert self.grpc_port, "no 'strata: gRPC on' line"
        self.target = f"127.0.0.1:{self.grpc_port}"

    def stub(self, pb, creds=None):
        ch = (grpc.secure_channel(self.target, creds) if creds
              else grpc.insecure_channel(self.target))
        return pb[1].GeneratorStub(ch), ch

    def stop(self, timeout=30):
        rc, out, err = super().stop(timeout)
        # an ASan/UBSan build (STRATA_BIN) reports here, leaks at exit too
        assert "Sanitizer" not in err and "runtime error" not in err, err[-4000:]
        return rc, out, err

    def cancelled(self):
        return self.metrics().get("strata_requests_cancelled_total", 0.0)


@pytest.fixture(scope="module")
def single():
    s = GrpcServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cluster():
    s = GrpcServer("--workers", "2")
    yield s
    s.stop()


def code_of(fn):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value.code(), ei.value.details()


def test_unary_and_stream_equal_generate(pb, cluster):
    m = pb[0]
    stub, ch = cluster.stub(pb)
    ref = reference(PROMPT, 8)
    req = m.GenerateRequest(prompt=PROMPT, max_tokens=8, temperature=0)
    r = stub.Generate(req, timeout=60)
    assert r.text == ref
    assert r.finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert r.id.startswith("cmpl-") and r.model
    chunks = list(stub.GenerateStream(req, timeout=60))
    assert "".join(c.text for c in chunks) == ref
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 8
    assert all(not c.HasField("finish_reason") for c in chunks[:-1])
    # messages take the chat template, as /v1/chat/completions
    ref = reference("Say hello.", 8, chat=True)
    r = stub.Generate(m.GenerateRequest(messages=[m.Message(role="user", content="Say hello.")],
                                        max_tokens=8, temperature=0), timeout=60)
    assert r.text == ref
    ch.close()
    v = cluster.metrics()
    assert v.get('strata_http_requests_total{endpoint="grpc",code="200"}', 0) >= 3


def test_invalid_arguments(pb, single):
    m = pb[0]
    stub, ch = single.stub(pb)
    INV = grpc.StatusCode.INVALID_ARGUMENT
    cases = [
        (m.GenerateRequest(prompt="x", max_tokens=0), "max_tokens"),
        (m.GenerateRequest(prompt="x", temperature=-1), "temperature"),
        (m.GenerateRequest(prompt="x", top_p=2), "top_p"),
        (m.GenerateRequest(prompt="x", min_p=1.5), "min_p"),
        (m.GenerateRequest(prompt="x", top_k=-5), "top_k"),
        (m.GenerateRequest(prompt="x", repetition_penalty=0), "repetition_penalty"),
        (m.GenerateRequest(prompt="x", presence_penalty=3), "presence_penalty"),
        (m.GenerateRequest(prompt="x", stop=["a", "b", "c", "d", "e"]), "stop"),
        (m.GenerateRequest(prompt="x", seed=2 ** 63), "seed"),
        (m.GenerateRequest(prompt=""), "prompt"),
        (m.GenerateRequest(), "prompt"),
        (m.GenerateRequest(prompt="x", messages=[m.Message(role="user", content="y")]), "both"),
        (m.GenerateRequest(messages=[m.Message(role="robot", content="y")]), "role"),
        (m.GenerateRequest(messages=[m.Message(content="y")]), "role"),
    ]
    for req, word in cases:
        for call in (stub.Generate, lambda r, **kw: list(stub.GenerateStream(r, **kw))):
            code, details = code_of(lambda: call(req, timeout=10))
            assert code == INV and word in details, (req, code, details)
    code, details = code_of(lambda: stub.Generate(m.GenerateRequest(prompt="x", model="nope"),
                                                  timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    # bytes that are no GenerateRequest, and a method that does not exist
    raw = ch.unary_unary("/strata.v1.Generator/Generate")
    for junk in (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\x80\x80\x80\x80\x10x",
                 b"\x12\x05\x0a\x03\xff\xfe\xfd", bytes(random.Random(3).randrange(256)
                                                        for _ in range(300))):
        assert code_of(lambda: raw(junk, timeout=10))[0] == INV
    # a prompt that is not UTF-8 (proto2 strings are not checked on the wire)
    assert code_of(lambda: raw(b"\x0a\x02\xc3\x28", timeout=10))[0] == INV
    other = ch.unary_unary("/strata.v1.Generator/Nope")
    assert code_of(lambda: other(b"", timeout=10))[0] == grpc.StatusCode.UNIMPLEMENTED
    # the body limit (--max-body, 1 MiB by default) bounds the message
    big = m.GenerateRequest(prompt="a" * (2 << 20))
    assert code_of(lambda: stub.Generate(big, timeout=30))[0] == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    r = stub.Generate(m.GenerateRequest(prompt=PROMPT, max_tokens=2, temperature=0), timeout=60)
    assert r.usage.completion_tokens == 2
    ch.close()


def add_key(path, kid, role, allow=None):
    extra = ["--allow", allow] if allow else []
    out = subprocess.run([BIN, "keys", "add", "--file", str(path), "--role", role, "--id", kid,
                          *extra], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def test_keys_roles_and_rate(pb, tmp_path):
    m = pb[0]
    path = tmp_path / "keys.txt"
    keys = {r: add_key(path, r + "1", r) for r in ("user", "auditor")}
    keys["developer"] = add_key(path, "developer1", "developer", "127.0.0.0/8,::1/128")
    keys["faraway"] = add_key(path, "faraway1", "developer", "10.9.9.9/32")
    s = GrpcServer("--keys", str(path), "--user-rate", "0.01", "--user-burst", "2")
    try:
        stub, ch = s.stub(pb)
        req = m.GenerateRequest(prompt=PROMPT, max_tokens=1, temperature=0)

        def call(md):
            return stub.Generate(req, metadata=md, timeout=30)
        code, details = code_of(lambda: call(()))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "Missing API key" in details
        code, _ = code_of(lambda: call((("authorization", "Bearer sk-strata-nope"),)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = code_of(lambda: call((("authorization", "Bearer " + "x" * 4000),)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, details = code_of(lambda: call((("authorization", "Bearer " + keys["auditor"]),)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "auditor" in details
        code, details = code_of(lambda: call((("authorization", "Bearer " + keys["faraway"]),)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "127.0.0.1" in details
        # a developer key bound to loopback: the peer address is read right
        assert call((("authorization", "Bearer " + keys["developer"]),)).usage.completion_tokens
        assert call((("x-api-key", keys["developer"]),)).usage.completion_tokens == 1
        # a user key: burst 2, then RESOURCE_EXHAUSTED with when to retry
        user = (("authorization", "Bearer " + keys["user"]),)
        call(user)
        list(stub.GenerateStream(req, metadata=user, timeout=30))
        code, details = code_of(lambda: call(user))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry after" in details
        ch.close()
        v = s.metrics()
        assert v.get('strata_http_requests_total{endpoint="grpc",code="429"}') == 1
        assert v.get('strata_http_requests_total{endpoint="grpc",code="401"}') == 3
        assert v.get('strata_http_requests_total{endpoint="grpc",code="403"}') == 2
    finally:
        s.stop()


def wait_cancelled(srv, before, want, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = srv.metrics()
        if (v.get("strata_requests_cancelled_total", 0) >= before + want
                and v.get("strata_http_active_requests", 1) == 0):
            return v
        time.sleep(0.2)
    raise AssertionError(f"cancelled counter did not reach {before + want}: {srv.metrics()}")


def test_deadline_and_cancel_stop_generation(pb, single):
    m = pb[0]
    stub, ch = single.stub(pb)
    long = m.GenerateRequest(prompt=PROMPT, max_tokens=2000, ignore_eos=True, temperature=0)
    before = single.cancelled()
    code, _ = code_of(lambda: stub.Generate(long, timeout=1.0))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_cancelled(single, before, 1)
    before = single.cancelled()
    code, _ = code_of(lambda: list(stub.GenerateStream(long, timeout=1.5)))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_cancelled(single, before, 1)
    # a client that cancels a stream after reading a little
    before = single.cancelled()
    it = stub.GenerateStream(long, timeout=60)
    got = [next(it).text for _ in range(3)]
    assert "".join(got)
    it.cancel()
    assert code_of(lambda: next(it))[0] == grpc.StatusCode.CANCELLED
    wait_cancelled(single, before, 1)
    # ... and the server serves on
    r = stub.Generate(m.GenerateRequest(prompt=PROMPT, max_tokens=2, temperature=0), timeout=60)
    assert r.usage.completion_tokens == 2
    ch.close()


def test_50_concurrent_streams(pb, cluster):
    m = pb[0]
    ref = reference(PROMPT, 8)
    stub, ch = cluster.stub(pb)
    results, errors = [None] * 50, []

    def one(i):
        try:
            req = m.GenerateRequest(prompt=PROMPT, max_tokens=8, temperature=0)
            chunks = list(stub.GenerateStream(req, timeout=240))
            results[i] = ("".join(c.text for c in chunks), chunks[-1].finish_reason)
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(repr(e))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not errors, errors[:3]
    bad = [(i, r) for i, r in enumerate(results) if r != (ref, "length")]
    assert not bad, f"{len(bad)} of 50 differ from {ref!r}: {bad[:3]}"
    ch.close()


def make_cert(d):
    key, crt = d / "grpc.key", d / "grpc.crt"
    out = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out",
                          str(crt), "-days", "1", "-subj", "/CN=localhost", "-addext",
                          "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return crt, key


def test_tls(pb, tmp_path):
    import shutil
    if not shutil.which("openssl"):
        pytest.skip("openssl command not installed")
    m = pb[0]
    crt, key = make_cert(tmp_path)
    s = GrpcServer("--tls-cert", str(crt), "--tls-key", str(key), tls=True)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=crt.read_bytes())
        stub, ch = s.stub(pb, creds)
        r = stub.Generate(m.GenerateRequest(prompt=PROMPT, max_tokens=2, temperature=0),
                          timeout=60)
        assert r.usage.completion_tokens == 2
        ch.close()
        # plaintext HTTP/2 to the TLS port is no call
        stub, ch = s.stub(pb)
        code, _ = code_of(lambda: stub.Generate(m.GenerateRequest(prompt="x"), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
        ch.close()
    finally:
        s.stop()


def test_sigterm_drain(pb):
    m = pb[0]
    # a drain timeout no sanitizer build reaches: the stream must finish, not be cut
    s = GrpcServer("--drain-timeout", "300")
    stub, ch = s.stub(pb)
    req = m.GenerateRequest(prompt=PROMPT, max_tokens=40, ignore_eos=True, temperature=0)
    it = stub.GenerateStream(req, timeout=120)
    text = [next(it).text]
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # a new call, on a new channel: the listener is closed (GOAWAY on the
    # old connection), UNAVAILABLE either way
    stub2, ch2 = s.stub(pb)
    code, _ = code_of(lambda: stub2.Generate(m.GenerateRequest(prompt="x", max_tokens=1),
                                             timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE
    ch2.close()
    rest = list(it)
    assert rest[-1].finish_reason == "length" and rest[-1].usage.completion_tokens == 40
    ch.close()
    rc, out, err = s.stop(timeout=60)
    assert rc == 0, err[-2000:]


def hostile(port, rng):
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    payloads = [
        bytes(rng.randrange(256) for _ in range(4096)),
        preface[:10],
        preface[:-1],
        preface + bytes(rng.randrange(256) for _ in range(1000)),
        # a SETTINGS frame with a length that does not fit, then a HEADERS
        # frame claiming 16 MiB
        preface + b"\x00\x00\x07\x04\x00\x00\x00\x00\x00" + b"\x00" * 7,
        preface + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\xff\xff\xff\x01\x05\x00\x00\x00\x01",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00" * 65536,
    ]
    for p in payloads:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as so:
                so.sendall(p)
                so.settimeout(0.5)
                try:
                    so.recv(4096)
                except OSError:
                    pass
        except OSError:
            pass
    # connections left open half-way, then dropped
    socks = []
    for _ in range(50):
        try:
            so = socket.create_connection(("127.0.0.1", port), timeout=3)
            so.sendall(preface[:rng.randrange(1, len(preface))])
            socks.append(so)
        except OSError:
            pass
    for so in socks:
        so.close()


def test_hostile_bytes_leave_the_server_serving(pb, single):
    m = pb[0]
    hostile(single.grpc_port, random.Random(12))
    time.sleep(0.5)
    assert single.proc.poll() is None
    stub, ch = single.stub(pb)
    r = stub.Generate(m.GenerateRequest(prompt=PROMPT, max_tokens=2, temperature=0), timeout=60)
    assert r.usage.completion_tokens == 2
    ch.close()
