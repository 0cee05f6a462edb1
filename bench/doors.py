#!/usr/bin/env python3
"""The doors side by side: the same greedy requests through the HTTP SSE
stream (/v1/completions, stream=true), the WebSocket door (/ws) and the gRPC
door (GenerateStream, when the server has one and grpcio-tools is
installed), in one run against one server, rounds interleaved.

For each door and concurrency (1, 8, 32): time to first token, inter-token
gap p50/p99, requests/s; and the per-token cost of each door over SSE,
(its mean gap - SSE's mean gap), with the spread of that difference over
the rounds. Client-side, in Python: each door's client library is part of
what is measured, the same way for every door.

  bench/doors.py [--model M] [--tokens 64] [--rounds 3] [--requests 16]
                 [--json out.json]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STRATA_BIN", os.path.join(ROOT, "build", "bin", "strata"))
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


class Result:
    def __init__(self):
        self.ttft, self.gaps, self.lock = [], [], threading.Lock()

    def add(self, t0, stamps):
        with self.lock:
            if stamps:
                self.ttft.append(stamps[0] - t0)
                self.gaps.extend(b - a for a, b in zip(stamps, stamps[1:]))


def sse_client(url, tokens):
    import requests
    sess = requests.Session()

    def one(res):
        t0 = time.perf_counter()
        stamps = []
        with sess.post(url + "/v1/completions", stream=True, timeout=300,
                       json={"prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
                             "ignore_eos": True, "stream": True}) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if line.startswith(b"data: {"):
                    if json.loads(line[6:])["choices"][0].get("text"):
                        stamps.append(time.perf_counter())
        res.add(t0, stamps)
    return one, lambda: sess.close()


def ws_client(url, tokens):
    from websockets.sync.client import connect
    ws = connect(url.replace("http", "ws", 1) + "/ws", max_size=None).__enter__()
    json.loads(ws.recv())            # hello
    n = [0]

    def one(res):
        n[0] += 1
        t0 = time.perf_counter()
        stamps = []
        ws.send(json.dumps({"id": n[0], "prompt": PROMPT, "max_tokens": tokens,
                            "temperature": 0, "ignore_eos": True}))
        while True:
            m = json.loads(ws.recv(timeout=300))
            if m.get("text"):
                stamps.append(time.perf_counter())
            if m.get("done"):
                break
        res.add(t0, stamps)
    return one, ws.close


def grpc_stubs():
    """Python stubs from proto/ into a temp dir, or None."""
    proto = os.path.join(ROOT, "proto")
    if not os.path.isdir(proto):
        return None
    try:
        import grpc  # noqa: F401
        from grpc_tools import protoc
    except ImportError:
        return None
    out = tempfile.mkdtemp(prefix="strata-grpc-")
    files = [os.path.relpath(os.path.join(d, f), proto)
             for d, _, fs in os.walk(proto) for f in fs if f.endswith(".proto")]
    if protoc.main(["protoc", f"-I{proto}", f"--python_out={out}", f"--grpc_python_out={out}",
                    *files]) != 0:
        return None
    sys.path.insert(0, out)
    return out


def grpc_client(target, tokens):
    import grpc
    from strata.v1 import generate_pb2 as pb, generate_pb2_grpc as pbg
    ch = grpc.insecure_channel(target)
    stub = pbg.GeneratorStub(ch)

    def one(res):
        t0 = time.perf_counter()
        stamps = []
        req = pb.GenerateRequest(prompt=PROMPT, max_tokens=tokens, temperature=0,
                                 ignore_eos=True)
        for chunk in stub.GenerateStream(req, timeout=300):
            if chunk.text:
                stamps.append(time.perf_counter())
        res.add(t0, stamps)
    return one, ch.close


def run_door(make, conc, n_req):
    res = Result()
    clients = [make() for _ in range(conc)]
    per = [n_req // conc + (1 if i < n_req % conc else 0) for i in range(conc)]
    errors = []

    def work(i):
        try:
            for _ in range(per[i]):
                clients[i][0](res)
        except Exception as e:  # a failed request is reported, not hidden
            errors.append(repr(e))
    t0 = time.perf_counter()
    th = [threading.Thread(target=work, args=(i,)) for i in range(conc)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c[1]()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[0]}")
    return {"rps": n_req / wall, "ttft_ms": statistics.median(res.ttft) * 1e3,
            "itl_p50_us": pct(res.gaps, 0.50) * 1e6, "itl_p99_us": pct(res.gaps, 0.99) * 1e6,
            "itl_mean_us": statistics.fmean(res.gaps) * 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.environ.get(
        "STRATA_MODEL", os.path.expanduser("~/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=16, help="per door, concurrency, round")
    ap.add_argument("--conc", default="1,8,32")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--json")
    a = ap.parse_args()

    port = free_port()
    have_grpc = grpc_stubs() is not None
    cmd = [BIN, "serve", "-m", a.model, "--port", str(port), "-t", a.threads, "--slots", "32",
           "--ws-ping-interval", "0"]
    gport = None
    if have_grpc:
        gport = free_port()
        cmd += ["--grpc-port", str(gport)]
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = f"http://127.0.0.1:{port}"
    import requests
    for _ in range(300):
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        srv.kill()
        sys.exit("server did not start")
    doors = {"sse": lambda: sse_client(url, a.tokens), "ws": lambda: ws_client(url, a.tokens)}
    if gport:
        doors["grpc"] = lambda: grpc_client(f"127.0.0.1:{gport}", a.tokens)
    concs = [int(c) for c in a.conc.split(",")]
    rows = {(d, c): [] for d in doors for c in concs}
    try:
        run_door(doors["sse"], 1, 2)               # warm up
        for r in range(a.rounds):
            for c in concs:
                for d in doors:
                    rows[(d, c)].append(run_door(doors[d], c, max(a.requests, c)))
    finally:
        srv.terminate()
        srv.wait(60)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    print(f"# {os.path.basename(a.model)}, {a.tokens} tokens/request, {a.rounds} rounds, "
          f"{os.cpu_count()} CPUs: {cpu}")
    print(f"{'door':6} {'conc':>4} {'req/s':>8} {'ttft_ms':>8} {'itl_p50_us':>10} "
          f"{'itl_p99_us':>10} {'vs_sse_us/token':>16}")
    out = []
    for c in concs:
        for d in doors:
            rs = rows[(d, c)]
            med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
            diffs = [x["itl_mean_us"] - s["itl_mean_us"] for x, s in zip(rs, rows[("sse", c)])]
            dmed = statistics.median(diffs)
            spread = (max(diffs) - min(diffs)) / 2 if len(diffs) > 1 else 0.0
            print(f"{d:6} {c:4d} {med['rps']:8.2f} {med['ttft_ms']:8.2f} {med['itl_p50_us']:10.0f} "
                  f"{med['itl_p99_us']:10.0f} {dmed:+10.1f} ±{spread:4.1f}")
            out.append({"door": d, "conc": c, **med, "vs_sse_us_per_token": dmed,
                        "vs_sse_spread_us": spread})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "cpu": cpu, "tokens": a.tokens, "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
