#!/usr/bin/env python3
"""Time to first token of a request that shares a ~1k-token prefix with the
one before it, with prefix reuse on (the default) and off (--prefix-cache 0),
on one `strata serve` each, interleaved round by round. Prints medians and
the ratio, and JSON with --json.

    python3 bench/prefix_ttft.py [--bin build/bin/strata] [--model M]
        [--rounds 5] [--prefix-tokens 1024] [--workers 0] [--threads 2]

Each round: a warm-up request with a fresh prefix (a round number in it, so
nothing is shared with earlier rounds), then the measured request: the same
prefix, another question. TTFT is taken at the client, from sending the
request to the first streamed text, so it includes HTTP and tokenization.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(a, extra):
    port = free_port()
    cmd = [a.bin, "serve", "-m", a.model, "--port", str(port), "-t", str(a.threads),
           "--ctx", "4096", *extra]
    if a.workers:
        cmd += ["--workers", str(a.workers)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f"/tmp/prefix_ttft_{port}.log", "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return p, url
        except requests.RequestException:
            pass
        time.sleep(0.1)
    p.kill()
    sys.exit("server did not start")


def ttft(url, prompt):
    t0 = time.perf_counter()
    with requests.post(url + "/v1/completions", json={
            "prompt": prompt, "max_tokens": 8, "temperature": 0, "stream": True},
            stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                if json.loads(line[6:])["choices"][0].get("text"):
                    return time.perf_counter() - t0
    return time.perf_counter() - t0


def prefix_text(a, rnd):
    """About prefix_tokens tokens of the project's own docs (~3 bytes per token)."""
    text = ""
    for f in ("README.md", "docs/ARCHITECTURE.md", "docs/CLUSTER.md", "docs/KERNELS.md"):
        text += open(os.path.join(ROOT, f)).read()
    return f"Round {rnd}.\n" + text[:a.prefix_tokens * 3]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "strata"))
    ap.add_argument("--model", default=os.path.expanduser(
        "~/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prefix-tokens", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    servers = {"reuse": start(a, []), "no reuse": start(a, ["--prefix-cache", "0"])}
    res = {k: [] for k in servers}
    cold = {k: [] for k in servers}
    n_prompt = None
    try:
        for rnd in range(a.rounds):
            pre = prefix_text(a, rnd)
            for name, (_, url) in servers.items():
                cold[name].append(ttft(url, pre + "\n\nQuestion: what is this?\nAnswer:"))
                res[name].append(ttft(url, pre + "\n\nQuestion: who uses it?\nAnswer:"))
        r = requests.post(servers["reuse"][1] + "/v1/completions", json={
            "prompt": prefix_text(a, 0) + "\n\nQuestion: who uses it?\nAnswer:",
            "max_tokens": 1}, timeout=600).json()
        n_prompt = r["usage"]["prompt_tokens"]
        m = requests.get(servers["reuse"][1] + "/metrics", timeout=5).text
        hits = [ln for ln in m.splitlines() if ln.startswith("strata_prefix_cache_hit_ratio")]
    finally:
        for p, _ in servers.values():
            p.terminate()
            p.wait()
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {"prompt_tokens": n_prompt, "rounds": a.rounds, "workers": a.workers,
           "threads": a.threads,
           "ttft_s": {k: {"median": med[k], "all": v} for k, v in res.items()},
           "cold_ttft_s": {k: statistics.median(v) for k, v in cold.items()},
           "speedup": med["no reuse"] / med["reuse"], "hit_ratio_line": hits[0] if hits else ""}
    if a.json:
        print(json.dumps(out))
        return
    print(f"prompt {n_prompt} tokens, {a.rounds} rounds, workers {a.workers}, "
          f"{a.threads} threads")
    print("| | TTFT, second request (median) | first request (median) |")
    print("|---|---:|---:|")
    for k in res:
        print(f"| {k} | {med[k] * 1e3:.0f} ms | {out['cold_ttft_s'][k] * 1e3:.0f} ms |")
    print(f"speedup {out['speedup']:.1f}x; {out['hit_ratio_line']}")


if __name__ == "__main__":
    main()
