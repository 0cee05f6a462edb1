"""The WebSocket door (GET /ws, coordinator/http/ws.c; docs/HTTP.md,
"WebSocket"): greedy text equal to `strata generate` (single process,
`--workers 2`, wss://), requests interleaved and cancelled on one
connection, a disconnect cancels, frame sizes, hostile frames and
handshakes (close codes 1002/1003/1007/1008/1009, HTTP 400/426), the
heartbeat, a client that does not read, keys, roles and the per-message
rate limit, Origin, the SIGTERM drain (1001) and the audit line.

Normal clients are the `websockets` library's; hostile ones are raw sockets
with the small frame codec below (client frames masked unless a test says
otherwise; server frames read raw, so their sizes and close codes are seen
as sent)."""
import base64
import hashlib
import inspect
import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

from test_http_common import BIN, MODEL, Server, need_model
from test_http_common import reference as common_reference
from test_http_security import add_key, make_cert

requests = pytest.importorskip("requests")
websockets = pytest.importorskip("websockets")
from websockets.exceptions import InvalidMessage, ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

# Options of websockets' sync connect() that older versions lack (proxy,
# the keepalive's ping_interval, legacy): left out where absent.
_CONNECT_OPTS = set(inspect.signature(connect).parameters)
PROMPT = "The capital of France is"
CHAT = "Say hello."
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
WS_FRAG = 16384
LONG = {"max_tokens": 2000, "ignore_eos": True, "temperature": 0}


# ---- references ----

_refs = {}


def reference(prompt, n, chat=False):
    """`strata generate`'s greedy text (cached per test session)."""
    key = (prompt, n, chat)
    if key not in _refs:
        _refs[key] = common_reference(prompt, n, chat)
    return _refs[key]


# ---- the websockets client ----

def ws_open(srv, scheme="ws", **kw):
    kw.setdefault("proxy", None)
    kw.setdefault("compression", None)
    kw.setdefault("open_timeout", 20)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("legacy", True)               # websockets 17: connect() without `with`
    kw = {k: v for k, v in kw.items()
          if k in _CONNECT_OPTS or k not in ("proxy", "legacy", "ping_interval")}
    ws = connect(f"{scheme}://127.0.0.1:{srv.port}/ws", **kw)
    hello = json.loads(ws.recv(timeout=10))
    assert hello["hello"] == "strata" and hello["protocol"] == "strata.v1", hello
    assert hello["max_in_flight"] == 16 and hello["model"], hello
    return ws


def collect(ws, ids, timeout=120, seen=None):
    """Reads until every id in ids is done: {id: {"text", "done"}}, "done"
    being the id's last message.
    seen (a list) gets every message in arrival order."""
    out = {i: {"text": "", "done": None} for i in ids}
    deadline = time.time() + timeout
    while any(v["done"] is None for v in out.values()):
        m = json.loads(ws.recv(timeout=max(0.1, deadline - time.time())))
        if seen is not None:
            seen.append(m)
        assert m["id"] in out, m
        assert out[m["id"]]["done"] is None, ("message after done", m)
        if m.get("done"):
            out[m["id"]]["done"] = m
        else:
            assert m["index"] == 0 and isinstance(m["text"], str), m
            out[m["id"]]["text"] += m["text"]
    return out


def ask(ws, rid, timeout=120, **body):
    ws.send(json.dumps({"id": rid, **body}))
    return collect(ws, [rid], timeout)[rid]


def greedy_checks(ws, n=8):
    """A prompt and a chat over ws equal `strata generate`'s greedy text."""
    r = ask(ws, "p", prompt=PROMPT, max_tokens=n, temperature=0)
    assert r["text"] == reference(PROMPT, n), r
    d = r["done"]
    assert d["finish_reason"] == "length" and d["usage"]["completion_tokens"] == n, d
    assert d["usage"]["prompt_tokens"] > 0
    assert d["usage"]["total_tokens"] == d["usage"]["prompt_tokens"] + n
    assert d["timing"]["total_ms"] >= d["timing"]["ttft_ms"] > 0, d
    c = ask(ws, 7, messages=[{"role": "user", "content": CHAT}], max_tokens=n, temperature=0)
    assert c["text"] == reference(CHAT, n, chat=True), c
    assert c["done"]["finish_reason"] in ("stop", "length"), c


# ---- a raw client ----

def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One client frame (RFC 6455 5.2), masked unless mask is False."""
    if isinstance(payload, str):
        payload = payload.encode()
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


class Raw:
    """A raw WebSocket client: the handshake by hand, frames by hand."""

    def __init__(self, port, headers=None, rcvbuf=None, timeout=10, key=None, version="13",
                 upgrade=True, handshake=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # before connect: the window the server sees is this small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.port = port
        self.buf = b""
        self.key = key or base64.b64encode(os.urandom(16)).decode()
        self.status = None
        self.headers = {}
        self.body = b""
        if handshake:
            self.handshake(headers or {}, version, upgrade)

    def handshake(self, headers, version, upgrade):
        lines = [f"GET /ws HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade"]
        lines += [f"Sec-WebSocket-Key: {self.key}", f"Sec-WebSocket-Version: {version}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, ("closed during the handshake", self.buf)
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        first, *rest = head.decode("latin-1").split("\r\n")
        self.status = int(first.split(" ")[1])
        for line in rest:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
            assert self.headers["sec-websocket-accept"] == want, self.headers
        else:
            n = int(self.headers.get("content-length", "0"))
            while len(self.buf) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
            self.body, self.buf = self.buf[:n], self.buf[n:]

    def send(self, data):
        self.sock.sendall(data)

    def text(self, obj):
        self.send(frame(OP_TEXT, json.dumps(obj)))

    def _exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self):
        """(fin, rsv, opcode, payload) of the next server frame, which must
        be unmasked (RFC 6455 5.1); EOFError when the server has closed."""
        b0, b1 = self._exact(2)
        assert not b1 & 0x80, "the server masked a frame"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._exact(8))[0]
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, self._exact(n)

    def until_close(self, timeout=10, pong=False):
        """Reads to the end: (text messages, close code or None, close
        reason, frames). None: the server went without a close frame."""
        self.sock.settimeout(timeout)
        deadline = time.time() + timeout
        self.ended = False
        texts, frames, code, reason, parts = [], [], None, b"", []
        try:
            while time.time() < deadline:
                fin, rsv, op, p = self.read_frame()
                frames.append((fin, rsv, op, len(p)))
                if op == OP_CLOSE:
                    if len(p) >= 2:
                        code, reason = struct.unpack(">H", p[:2])[0], p[2:]
                    else:
                        code = 1005
                    # answer it, then expect the server to end the TCP connection
                    try:
                        self.send(frame(OP_CLOSE, p[:2]))
                    except OSError:
                        pass
                    try:
                        while self.sock.recv(65536):
                            pass
                        self.ended = True
                    except socket.timeout:
                        pass
                    except OSError:
                        self.ended = True
                    break
                if op == OP_PING and pong:
                    self.send(frame(OP_PONG, p))
                if op in (OP_TEXT, OP_CONT):
                    parts.append(p)
                    if fin:
                        texts.append(json.loads(b"".join(parts)))
                        parts = []
        except (EOFError, ConnectionResetError):
            self.ended = True
        except socket.timeout:
            pass
        return texts, code, reason, frames

    def messages(self, n, timeout=30):
        """The next n text messages (pings answered)."""
        out, parts = [], []
        self.sock.settimeout(timeout)
        while len(out) < n:
            fin, rsv, op, p = self.read_frame()
            assert op != OP_CLOSE, ("closed", p)
            if op == OP_PING:
                self.send(frame(OP_PONG, p))
            elif op in (OP_TEXT, OP_CONT):
                parts.append(p)
                if fin:
                    out.append(json.loads(b"".join(parts)))
                    parts = []
        return out

    def close(self):
        self.sock.close()


def raw_ws(srv, **kw):
    r = Raw(srv.port, **kw)
    assert r.status == 101, (r.status, r.body)
    hello = r.messages(1)[0]
    assert hello["hello"] == "strata", hello
    return r


def closed_with(srv, data, code, reason=None):
    """Sends data after the handshake; the server must close with code."""
    r = raw_ws(srv)
    try:
        r.send(data)
        texts, got, why, _ = r.until_close()
        assert got == code, (got, why, texts)
        assert r.ended, "the server kept the connection after its close frame"
        if reason:
            assert reason in why.decode(), why
        return texts
    finally:
        r.close()


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cancelled(srv):
    return srv.metrics().get("strata_requests_cancelled_total", 0.0)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stopped_ok(srv):
    rc, out, err = srv.stop()
    assert rc == 0, err[-3000:]
    return err


# ---- servers ----

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    need_model()
    audit = tmp_path_factory.mktemp("ws_audit") / "audit.log"
    s = Server("--max-body", "4096", "--audit-log", str(audit), "--audit-no-sync")
    s.audit = audit
    yield s
    stopped_ok(s)


# ---- 1. greedy equality ----

def test_greedy_equals_generate(srv):
    with ws_open(srv) as ws:
        greedy_checks(ws)


def test_greedy_equals_generate_workers(srv):
    two = Server("--workers", "2")
    try:
        with ws_open(two) as ws:
            greedy_checks(ws)
    finally:
        stopped_ok(two)


# ---- 2. interleaving, cancel, disconnect ----

def test_interleaved_requests(srv):
    prompts = {"a": "Once upon a time", "b": PROMPT, 3: "The best way to learn is"}
    with ws_open(srv) as ws:
        for rid, p in prompts.items():
            ws.send(json.dumps({"id": rid, "prompt": p, "max_tokens": 12, "temperature": 0}))
        seen = []
        got = collect(ws, list(prompts), seen=seen)
    for rid, p in prompts.items():
        assert got[rid]["text"] == reference(p, 12), (rid, got[rid])
        assert got[rid]["done"]["usage"]["completion_tokens"] == 12
    # they ran side by side, not one after the other: no id starts only
    # once the two others are done (a wake of the loop may bring an id's
    # text and its end together, so finer orders would be timing)
    for rid in prompts:
        start = next(i for i, m in enumerate(seen) if m["id"] == rid)
        assert sum(1 for m in seen[:start] if m.get("done")) < 2, (rid, seen)


def test_cancel_and_ids(srv):
    with ws_open(srv) as ws:
        ws.send(json.dumps({"id": "long", "prompt": PROMPT, **LONG}))
        first = json.loads(ws.recv(timeout=30))
        assert first["id"] == "long" and "text" in first, first
        # a running id may not be used again; the running one is unaffected
        ws.send(json.dumps({"id": "long", "prompt": "x", "max_tokens": 1}))
        # an id the server does not know: an error for it, the connection stays
        ws.send(json.dumps({"cancel": "nope"}))
        errs = {}
        while len(errs) < 2:
            m = json.loads(ws.recv(timeout=30))
            if "error" in m:
                errs[m["error"]["code"]] = m
        assert errs["duplicate_id"]["id"] == "long" and errs["duplicate_id"]["done"] is True
        assert errs["unknown_id"]["id"] == "nope"
        ws.send(json.dumps({"id": "short", "prompt": PROMPT, "max_tokens": 6,
                            "temperature": 0}))
        ws.send(json.dumps({"cancel": "long"}))
        got = collect(ws, ["long", "short"])
        assert got["long"]["done"] == {"id": "long", "done": True,
                                       "finish_reason": "cancelled"}, got["long"]
        assert got["short"]["text"] == reference(PROMPT, 6)
        # the cancelled id is free again; an id-less request gets a "ws-N" one
        assert ask(ws, "long", prompt=PROMPT, max_tokens=4, temperature=0)["text"] == \
            reference(PROMPT, 4)
        ws.send(json.dumps({"prompt": PROMPT, "max_tokens": 2, "temperature": 0}))
        ws.send(json.dumps({"prompt": PROMPT, "max_tokens": 2, "temperature": 0}))
        got = collect(ws, ["ws-1", "ws-2"])
        assert got["ws-1"]["text"] == got["ws-2"]["text"] == reference(PROMPT, 2), got


def test_too_many_in_flight_and_disconnect_cancels(srv):
    before = cancelled(srv)
    r = raw_ws(srv)
    try:
        for i in range(17):
            r.text({"id": i, "prompt": PROMPT, **LONG})
        refused = None
        while refused is None:
            m = r.messages(1)[0]
            if m.get("done"):
                assert m["id"] == 16 and m["error"]["code"] == "too_many_requests", m
                refused = m
    finally:
        r.close()                       # no close frame: the TCP connection just ends
    wait_for(lambda: cancelled(srv) >= before + 16, 20, "16 cancelled sequences")
    assert requests.get(srv.url + "/health", timeout=5).json()["status"] == "ok"
    # a client that closes properly mid-stream cancels too
    before = cancelled(srv)
    ws = ws_open(srv)
    ws.send(json.dumps({"id": 1, "prompt": PROMPT, **LONG}))
    assert "text" in json.loads(ws.recv(timeout=30))
    ws.close()
    wait_for(lambda: cancelled(srv) >= before + 1, 20, "the cancelled sequence")
    wait_for(lambda: requests.get(srv.url + "/health").json()["running"] == 0, 20,
             "no sequence running")


# ---- 3. frame sizes, fragments in ----

def test_server_frames_are_small(srv):
    r = raw_ws(srv)
    try:
        r.text({"id": "f", "prompt": PROMPT, "max_tokens": 200, "ignore_eos": True,
                "temperature": 0})
        r.sock.settimeout(120)
        sizes, done = [], None
        while done is None:
            fin, rsv, op, p = r.read_frame()
            assert rsv == 0 and op in (OP_TEXT, OP_CONT, OP_PING), (op, rsv)
            sizes.append(len(p))
            if op == OP_PING:
                r.send(frame(OP_PONG, p))
            elif fin and json.loads(p).get("done"):
                done = json.loads(p)
        assert all(n <= WS_FRAG for n in sizes), max(sizes)
        assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 200
        assert len(sizes) > 10
    finally:
        r.close()


def test_fragmented_message_accepted(srv):
    body = json.dumps({"id": "frag", "prompt": PROMPT, "max_tokens": 6, "temperature": 0})
    with ws_open(srv) as ws:
        ws.send([body[:10], body[10:25], body[25:]])     # three frames, one message
        assert collect(ws, ["frag"])["frag"]["text"] == reference(PROMPT, 6)
    # by hand, with a ping between the fragments (control frames may interleave)
    r = raw_ws(srv)
    try:
        b = body.replace('"frag"', '"frag2"').encode()
        r.send(frame(OP_TEXT, b[:7], fin=False) + frame(OP_PING, b"hi") +
               frame(OP_CONT, b[7:30], fin=False) + frame(OP_CONT, b[30:]))
        r.sock.settimeout(30)
        pong = r.read_frame()
        assert pong[2] == OP_PONG and pong[3] == b"hi", pong
        text = ""
        for m in iter(lambda: r.messages(1)[0], None):
            if m.get("done"):
                break
            text += m["text"]
        assert text == reference(PROMPT, 6)
    finally:
        r.close()


# ---- 4. hostile input ----

def test_close_codes(srv):
    closed_with(srv, frame(OP_BIN, b"\x00\x01"), 1003)
    closed_with(srv, frame(OP_TEXT, b'{"prompt": "\xff\xfe"}'), 1007)
    closed_with(srv, frame(OP_TEXT, b'{"prompt": "\xc0\xaf"}'), 1007)          # overlong
    closed_with(srv, frame(OP_TEXT, b'{"prompt": "\xed\xa0\x80"}'), 1007)      # a surrogate
    big = json.dumps({"prompt": "x" * 5000})
    closed_with(srv, frame(OP_TEXT, big), 1009)
    closed_with(srv, frame(OP_TEXT, big[:3000], fin=False) + frame(OP_CONT, big[3000:]), 1009)
    closed_with(srv, frame(OP_TEXT, '{"prompt": "hi", "bogus": 1}'), 1008, "bogus")
    closed_with(srv, frame(OP_TEXT, '"just a string"'), 1008)
    closed_with(srv, frame(OP_TEXT, '[{"prompt": "hi"}]'), 1008)
    closed_with(srv, frame(OP_TEXT, '{"prompt": '), 1008)
    closed_with(srv, frame(OP_TEXT, '{"prompt": "a", "prompt": "b"}'), 1008)
    for bad_id in (1.5, True, None, ["x"], "x" * 65):
        closed_with(srv, frame(OP_TEXT, json.dumps({"id": bad_id, "prompt": "hi"})), 1008,
                    "id")
    closed_with(srv, frame(OP_TEXT, '{"cancel": "x", "prompt": "hi"}'), 1008)
    # frames wslay refuses: unmasked, a reserved bit, a reserved opcode, a
    # fragmented or oversized control frame
    closed_with(srv, frame(OP_TEXT, '{"prompt": "hi"}', mask=False), 1002)
    closed_with(srv, frame(OP_TEXT, '{"prompt": "hi"}', rsv=4), 1002)
    closed_with(srv, frame(3, b"x"), 1002)
    closed_with(srv, frame(OP_PING, b"x", fin=False), 1002)
    closed_with(srv, frame(OP_PING, b"x" * 126), 1002)
    closed_with(srv, frame(OP_CONT, b"x"), 1002)                 # a continuation of nothing


def test_bad_field_values_answer_without_closing(srv):
    with ws_open(srv) as ws:
        for rid, body in ((1, {"prompt": PROMPT, "max_tokens": -1}),
                          (2, {"prompt": PROMPT, "temperature": "hot"}),
                          (3, {"prompt": PROMPT, "model": "no-such-model"})):
            ws.send(json.dumps({"id": rid, **body}))
            m = json.loads(ws.recv(timeout=30))
            assert m["id"] == rid and m["done"] is True, m
            assert m["error"]["code"] == ("model_not_found" if rid == 3
                                          else "invalid_request_error"), m
        assert ask(ws, 4, prompt=PROMPT, max_tokens=3, temperature=0)["text"] == \
            reference(PROMPT, 3)


def test_random_bytes_after_handshake(srv):
    rng = random.Random(6455)
    for _ in range(5):
        r = raw_ws(srv)
        try:
            r.send(bytes(rng.randrange(256) for _ in range(3000)))
            r.until_close(timeout=15)
            assert r.ended, "the server kept the connection"
        finally:
            r.close()


def test_bad_handshakes(srv):
    r = Raw(srv.port, key="abc")
    assert r.status == 400, r.status
    r.close()
    r = Raw(srv.port, key=base64.b64encode(os.urandom(15)).decode() + "A")   # 21 characters
    assert r.status == 400, r.status
    r.close()
    r = Raw(srv.port, version="8")
    assert r.status == 426 and r.headers["sec-websocket-version"] == "13", (r.status, r.headers)
    r.close()
    r = Raw(srv.port, upgrade=False)
    assert r.status == 400, r.status
    r.close()
    r = Raw(srv.port, headers={"Sec-WebSocket-Protocol": "chat, superchat"})
    assert r.status == 400 and b"strata.v1" in r.body, (r.status, r.body)
    r.close()
    assert requests.get(srv.url + "/ws", timeout=5).status_code == 400
    assert requests.post(srv.url + "/ws", timeout=5).status_code == 405


def test_healthy_after_hostile(srv):
    """Runs after the hostile tests (file order): the server still answers."""
    assert requests.get(srv.url + "/health", timeout=5).json()["status"] == "ok"
    with ws_open(srv) as ws:
        greedy_checks(ws, n=6)
    m = srv.metrics()
    assert m['strata_http_requests_total{endpoint="/ws",code="101"}'] >= 20


# ---- 5. heartbeat ----

def test_heartbeat():
    s = Server("--ws-ping-interval", "1")
    try:
        raw = raw_ws(s)                             # never answers a ping
        t0 = time.time()
        good = ws_open(s, ping_interval=None)       # answers the server's pings itself
        assert ask(good, 0, prompt=PROMPT, max_tokens=2, temperature=0)["text"] == \
            reference(PROMPT, 2)
        texts, code, _, frames = raw.until_close(timeout=8)
        took = time.time() - t0
        assert raw.ended
        raw.close()
        pings = [f for f in frames if f[2] == OP_PING]
        assert pings, frames
        assert code is None, "a client that does not answer gets no close handshake"
        assert 1.5 < took < 5.5, took
        time.sleep(max(0.0, 4.5 - (time.time() - t0)))
        assert ask(good, 1, prompt=PROMPT, max_tokens=3, temperature=0)["text"] == \
            reference(PROMPT, 3)
        good.close()
    finally:
        stopped_ok(s)


# ---- 6. a client that does not read ----

def status(s):
    return requests.get(s.url + "/admin/status", timeout=10).json()


def test_slow_reader_is_closed():
    """16 long generations for a client that never reads. Their tokens alone
    (~50 bytes each) would take minutes to fill the kernel's socket buffers
    on loopback (the sender's is 4 MiB here) before the server's own queue
    sees anything, so the client also asks for small answers by the
    thousand (cancels of ids that do not exist): the queue bound, not the
    heartbeat (off here), must end the connection and its generations."""
    s = Server("--ws-queue", "16", "--ws-ping-interval", "0")
    try:
        with ws_open(s) as ws:                      # warm: the model's pages are in
            ask(ws, 0, prompt=PROMPT, max_tokens=4)
        rss0 = rss_kib(s.proc.pid)
        before = cancelled(s)
        r = raw_ws(s, rcvbuf=4096)
        for i in range(16):
            r.text({"id": i, "prompt": PROMPT, **LONG})
        wait_for(lambda: status(s)["active_http_requests"] == 16, 20, "16 requests running")
        cancel = b"".join(frame(OP_TEXT, json.dumps({"cancel": f"{i:064d}"}))
                          for i in range(1000))
        r.sock.settimeout(2)
        try:
            for _ in range(60):                     # 60000 answers of ~150 bytes: > 4 MiB
                r.send(cancel)
        except OSError:
            pass                                    # the server stopped reading: it is closing
        t0 = time.time()
        peak = rss0
        while time.time() - t0 < 30:
            peak = max(peak, rss_kib(s.proc.pid))
            st = status(s)
            if st["active_http_requests"] == 0 and st["running"] == 0:
                break
            time.sleep(0.1)
        # closed for not reading, its generations are cancelled at once (the
        # close used to leave them running for a client that would never read)
        assert time.time() - t0 < 5, "the generations for a client that does not read ran on"
        assert cancelled(s) >= before + 16
        texts, code, why, _ = r.until_close(timeout=20)
        assert r.ended, "the server kept the connection"
        r.close()
        assert code in (None, 1008), (code, why)
        if code == 1008:
            assert b"not reading" in why, why
        assert peak - rss0 < 200 * 1024, (rss0, peak)
        with ws_open(s) as ws:
            assert ask(ws, 1, prompt=PROMPT, max_tokens=4, temperature=0)["text"] == \
                reference(PROMPT, 4)
    finally:
        err = stopped_ok(s)
    assert "client is not reading: 16 messages queued" in err, err[-3000:]


def test_quiet_client_stays():
    """evhttp's --request-timeout (for receiving an HTTP request) must not
    apply to an upgraded connection: libevent kept it armed, and a client
    quiet that long after a message was dropped without a close frame."""
    s = Server("--request-timeout", "1")
    try:
        with ws_open(s, ping_interval=None) as ws:
            assert ask(ws, 1, prompt=PROMPT, max_tokens=2, temperature=0)["text"] == \
                reference(PROMPT, 2)
            time.sleep(2.5)
            assert ask(ws, 2, prompt=PROMPT, max_tokens=2, temperature=0)["text"] == \
                reference(PROMPT, 2)
    finally:
        stopped_ok(s)


# ---- 7. keys ----

@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    need_model()
    path = tmp_path_factory.mktemp("ws_keys") / "keys.txt"
    keys = {r: add_key(path, "ws-" + r, r) for r in ("developer", "user", "auditor")}
    s = Server("--keys", str(path), "--user-rate", "1", "--user-burst", "2")
    s.keys = keys
    yield s
    stopped_ok(s)


def test_keys(keyed):
    k = keyed.keys
    r = Raw(keyed.port)
    assert r.status == 401 and b"invalid_api_key" in r.body, (r.status, r.body)
    r.close()
    r = Raw(keyed.port, headers={"Authorization": "Bearer sk-strata-" + "0" * 64})
    assert r.status == 401, r.status
    r.close()
    r = Raw(keyed.port, headers={"Authorization": "Bearer " + k["auditor"]})
    assert r.status == 403 and b"insufficient_role" in r.body, (r.status, r.body)
    r.close()
    with ws_open(keyed, additional_headers={"Authorization": "Bearer " + k["developer"]}) as ws:
        assert ask(ws, 1, prompt=PROMPT, max_tokens=4, temperature=0)["text"] == \
            reference(PROMPT, 4)
    with ws_open(keyed, additional_headers={"x-api-key": k["developer"]}) as ws:
        assert ask(ws, 1, prompt=PROMPT, max_tokens=2, temperature=0)["done"]["finish_reason"]
    # the browser's way: the key as a subprotocol; the answer names strata.v1 only
    with ws_open(keyed, subprotocols=["strata.v1", "bearer." + k["developer"]]) as ws:
        assert ws.subprotocol == "strata.v1"
        hdr = ws.response.headers
        assert hdr["Sec-WebSocket-Protocol"] == "strata.v1", hdr
        assert all(k["developer"] not in v for v in hdr.values())
        assert ask(ws, 1, prompt=PROMPT, max_tokens=2, temperature=0)["done"]["finish_reason"]
    r = Raw(keyed.port, headers={"Sec-WebSocket-Protocol": "bearer." + k["auditor"] +
                                 ", strata.v1"})
    assert r.status == 403, r.status
    r.close()
    # a key offered without strata.v1 is refused (400) whatever the key
    r = Raw(keyed.port, headers={"Sec-WebSocket-Protocol": "bearer." + k["developer"]})
    assert r.status == 400, r.status
    r.close()


def test_user_rate_limit_per_message(keyed):
    k = keyed.keys["user"]
    # only this test uses the user key: its bucket (1/s, burst 2) starts full
    with ws_open(keyed, additional_headers={"Authorization": "Bearer " + k}) as ws:
        for i in range(3):
            ws.send(json.dumps({"id": i, "prompt": PROMPT, "max_tokens": 1}))
        got = collect(ws, [0, 1, 2])
        errs = [i for i in range(3) if "error" in got[i]["done"]]
        # the first is served and the third refused; the second depends on
        # whether the upgrade took a token of the burst itself (server.c's
        # authorize charges every request of a user key: today it does)
        assert errs in ([1, 2], [2]), got
        assert got[0]["text"] and got[0]["done"]["finish_reason"], got[0]
        e = got[2]["done"]["error"]
        assert e["code"] == "rate_limit_exceeded" and e["retry_after"] >= 1, e
        # the connection stays open; a second later the bucket has a token again
        time.sleep(1.2)
        assert "error" not in ask(ws, 3, prompt=PROMPT, max_tokens=1)["done"]


# ---- 8. Origin ----

def origin_status(srv, origin):
    r = Raw(srv.port, headers={"Origin": origin})
    try:
        return r.status, r.body
    finally:
        r.close()


def test_origin(srv):
    st, body = origin_status(srv, "http://evil.test")
    assert st == 403 and b"origin_not_allowed" in body, (st, body)
    assert origin_status(srv, "http://example.test")[0] == 403
    assert origin_status(srv, "null")[0] == 403
    assert origin_status(srv, f"https://127.0.0.1:{srv.port}")[0] == 403    # not over TLS
    assert origin_status(srv, f"http://127.0.0.1:{srv.port}")[0] == 101
    with ws_open(srv, origin=f"http://127.0.0.1:{srv.port}") as ws:
        assert ask(ws, 1, prompt=PROMPT, max_tokens=2, temperature=0)["text"] == \
            reference(PROMPT, 2)


def test_allowed_origin():
    s = Server("--ws-allow-origin", "http://example.test")
    try:
        assert origin_status(s, "http://example.test")[0] == 101
        assert origin_status(s, f"http://127.0.0.1:{s.port}")[0] == 101
        assert origin_status(s, "http://evil.test")[0] == 403
        assert origin_status(s, "http://example.test.evil")[0] == 403
    finally:
        stopped_ok(s)


# ---- 9. wss:// ----

def test_wss_greedy(tmp_path):
    crt, key = make_cert(tmp_path, "ecdsa")
    s = Server("--tls-cert", str(crt), "--tls-key", str(key), tls=True)
    try:
        ctx = ssl.create_default_context(cafile=str(crt))
        # Once in CI (2026-12-07) the first wss connection after start got
        # the server's EOF instead of the 101, and the server stopped cleanly
        # afterwards; not reproduced in 12 runs alone. Unexplained: one more
        # try, and the second one must work.
        try:
            first = ws_open(s, scheme="wss", ssl=ctx)
        except InvalidMessage:
            first = ws_open(s, scheme="wss", ssl=ctx)
        with first as ws:
            greedy_checks(ws, n=6)
        with pytest.raises(InvalidStatus) as e:
            ws_open(s, scheme="wss", ssl=ctx, origin=f"http://127.0.0.1:{s.port}")
        assert e.value.response.status_code == 403
        with ws_open(s, scheme="wss", ssl=ctx, origin=f"https://127.0.0.1:{s.port}") as ws:
            assert ask(ws, 1, prompt=PROMPT, max_tokens=2, temperature=0)["text"] == \
                reference(PROMPT, 2)
    finally:
        stopped_ok(s)


# ---- 10. drain ----

def test_sigterm_drain():
    # A drain long enough for 150 tokens under the sanitized binary too.
    s = Server("--drain-timeout", "300")
    ws = ws_open(s)
    try:
        ws.send(json.dumps({"id": "a", "prompt": PROMPT, "max_tokens": 150, "ignore_eos": True,
                            "temperature": 0}))
        first = json.loads(ws.recv(timeout=30))
        assert first["id"] == "a" and "text" in first
        s.proc.send_signal(signal.SIGTERM)

        def refused():                  # the drain has begun: the listener is closed
            try:
                socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
        wait_for(refused, 10, "the listener to close")
        ws.send(json.dumps({"id": "b", "prompt": PROMPT, "max_tokens": 2}))
        text, done, refused = first["text"], None, None
        while done is None:
            m = json.loads(ws.recv(timeout=60))
            if m["id"] == "b":
                refused = m
            elif m.get("done"):
                done = m
            else:
                text += m["text"]
        assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 150
        if refused is None:
            refused = json.loads(ws.recv(timeout=30))
        assert refused["error"]["code"] == "server_shutting_down", refused
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1001, e.value
        s.proc.wait(timeout=30)
        assert s.proc.returncode == 0
    finally:
        ws.close()
        stopped_ok(s)


# ---- 11. audit ----

def test_audit_line(srv):
    with ws_open(srv) as ws:
        ask(ws, "audited", prompt="the ws auditors", max_tokens=3, temperature=0)
    sha = hashlib.sha256(b"the ws auditors").hexdigest()

    def line():
        for l in srv.audit.read_text().splitlines():
            rec = json.loads(l)
            if rec.get("strata.prompt_sha256") == sha:
                return rec
    wait_for(lambda: line() is not None, 10, "the audit line")
    rec = line()
    assert rec["url.path"] == "/ws" and rec["http.request.method"] == "WS", rec
    assert rec["strata.completion_tokens"] == 3 and rec["strata.prompt_tokens"] > 0, rec
    assert rec["http.response.status_code"] == 200 and rec["strata.model"], rec
    assert "the ws auditors" not in srv.audit.read_text()
    # the upgraded connection itself: one line with 101 when it ends
    assert any(json.loads(l)["http.response.status_code"] == 101
               for l in srv.audit.read_text().splitlines())
