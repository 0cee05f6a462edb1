"""The compact KV cache (--kv-type f32|f16|q8_0) on the real model.

- greedy text with an f16 cache equals the f32 cache's on a few prompts;
- accuracy against f32 on ~2000 tokens of real text (this repository's
  README.md and docs/*.md), teacher-forced by `strata perplexity`: mean
  KL(f32 || type) of the next-token distributions and top-1 agreement;
- `strata serve --workers 2 --kv-type q8_0` (every stage told the type in
  its PLAN) answers with the same greedy text as `strata generate
  --kv-type q8_0`;
- `strata info` reports KV bytes per token for each type; an unknown type
  is refused by name.

Bounds (SmolLM2-135M Q4_1, 2048 tokens of README.md + docs/*.md, measured
at the AVX2 level): f16 mean KL 1.1e-6 nats, top-1 99.9 %; q8_0 mean KL
5.9e-4, top-1 98.6 % (GPL-3: 1.7e-6 / 99.8 % and 9.1e-4 / 98.3 %). The
asserted bounds leave ~10x room on KL and a few points on top-1, so that
another ISA level (other summation order) or edited docs pass, while a cache
read wrongly (a wrong scale or row offset) does not.
"""
import json
import pathlib

import pytest

from conftest import run
from test_http_common import Server

ROOT = pathlib.Path(__file__).resolve().parents[2]

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
]


def generate(strata, model, prompt, kv, n=32):
    r = run([strata, "generate", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0",
             "-t", "2", "--kv-type", kv], timeout=180)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_f16_equals_f32(strata, real_model, prompt):
    assert generate(strata, real_model, prompt, "f16") == \
        generate(strata, real_model, prompt, "f32")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("kv") / "docs.txt"
    parts = [(ROOT / "README.md").read_text()]
    parts += [f.read_text() for f in sorted((ROOT / "docs").glob("*.md"))]
    p.write_text("\n\n".join(parts))
    return p


@pytest.mark.parametrize("kv,kl_max_mean,top1_min", [
    ("f16", 2e-5, 0.985),
    ("q8_0", 5e-3, 0.95),
])
def test_accuracy_against_f32(strata, real_model, text_file, kv, kl_max_mean, top1_min):
    r = run([strata, "perplexity", "-m", real_model, "-f", str(text_file), "--kv-type", kv,
             "--max-tokens", "2048", "-t", "2", "--json"], timeout=900)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["scored"] == 2047 and j["ref_kv_type"] == "f32" and j["kv_type"] == kv
    assert j["kl_mean"] < kl_max_mean, j
    assert j["top1_agree"] >= top1_min, j
    assert abs(j["ppl"] - j["ppl_ref"]) < 0.02 * j["ppl_ref"], j


def test_cluster_q8_0_equals_single_process(strata, real_model):
    import requests
    prompt, n = "Once upon a time, in a small village,", 24
    want = generate(strata, real_model, prompt, "q8_0", n)
    srv = Server("--workers", "2", "--kv-type", "q8_0", model=real_model)
    try:
        r = requests.post(srv.url + "/v1/completions",
                          json={"prompt": prompt, "max_tokens": n, "temperature": 0},
                          timeout=180)
        assert r.status_code == 200, r.text
        got = r.json()["choices"][0]["text"]
    finally:
        code, _, err = srv.stop()
    assert got == want.rstrip("\n") or got == want, (got, want)
    # every worker built its stage with the planned type
    assert err.count("q8_0 KV cache") >= 2, err[-3000:]


def test_info_reports_kv_bytes_per_type(strata, real_model):
    r = run([strata, "info", real_model, "--json"])
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    hp = j["hparams"]
    L, kv_dim = hp["n_layer"], hp["n_head_kv"] * hp["head_dim"]
    by = j["kv_bytes_per_token_by_type"]
    assert by["f32"] == L * 2 * kv_dim * 4
    assert by["f16"] == L * 2 * kv_dim * 2
    assert by["q8_0"] == L * 2 * kv_dim // 32 * 34
    assert j["kv_type"] == "f16" and j["kv_bytes_per_token"] == by["f16"]


def test_unknown_kv_type_refused(strata, real_model):
    r = run([strata, "generate", "-m", real_model, "-p", "x", "-n", "1", "--kv-type", "q4_0"])
    assert r.returncode == 2
    assert "--kv-type" in r.stderr and "q8_0" in r.stderr


def test_worker_refuses_unknown_kv_type(strata, real_model, tmp_path):
    """A coordinator (played here by hand, protocol v3) that plans a KV type
    the worker does not know gets LOADED with an error naming the type,
    before the worker maps the model."""
    import hashlib
    import hmac
    import os
    import socket
    import struct
    import subprocess

    secret = b"kv-type-test-secret-0123456789"
    sf = tmp_path / "secret"
    sf.write_bytes(secret)
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(1)
    lsn.settimeout(30)
    port = lsn.getsockname()[1]
    w = subprocess.Popen([strata, "worker", "--join", f"127.0.0.1:{port}", "--secret-file",
                          str(sf), "--join-timeout", "20"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        c, _ = lsn.accept()
        c.settimeout(30)

        def recv_exact(n):
            b = b""
            while len(b) < n:
                chunk = c.recv(n - len(b))
                assert chunk, "worker closed the connection"
                b += chunk
            return b

        def recv_msg():
            magic, ver, typ, ln, _ = struct.unpack("<IHHII", recv_exact(16))
            assert magic == 0x43525453 and ver == 3
            return typ, recv_exact(ln)

        def send(typ, payload, epoch=0):
            c.sendall(struct.pack("<IHHII", 0x43525453, 3, typ, len(payload), epoch) + payload)

        def sstr(b):
            return struct.pack("<H", len(b)) + b

        typ, p = recv_msg()
        assert typ == 1                                             # HELLO
        off = 2 + struct.unpack_from("<H", p, 0)[0]                 # name
        off += 2 + struct.unpack_from("<H", p, off)[0]              # host
        wnonce, cnonce = p[off:off + 32], os.urandom(32)
        send(2, cnonce + hmac.new(secret, b"strata-coord\0" + wnonce + cnonce,
                                  hashlib.sha256).digest())         # CHALLENGE
        typ, _ = recv_msg()
        assert typ == 3                                             # AUTH
        send(4, struct.pack("<II", 1, 500))                         # WELCOME
        # PLAN: stage 0 of 1, layers [0, 30) of 30, n_ctx 256, 1 slot, batch 16,
        # 1 thread, kv_type 7 (not a KV type), no prefix cache (0 blocks of 32),
        # no flags, no manifest, rank 0 of 1
        plan = struct.pack("<16I", 0, 1, 0, 30, 30, 256, 1, 16, 1, 7, 0, 32, 0, 0, 0, 1)
        plan += struct.pack("<Q", os.path.getsize(real_model)) + sstr(real_model.encode())
        plan += sstr(b"")
        send(6, plan, epoch=1)
        while True:
            typ, p = recv_msg()
            if typ == 8:                                            # LOADED
                break
            assert typ == 11, typ                                   # only heartbeats before
        status = struct.unpack_from("<i", p, 0)[0]
        off = 4 + 2 + struct.unpack_from("<H", p, 4)[0] + 32        # data_addr, 4 x u64
        err = p[off + 2:off + 2 + struct.unpack_from("<H", p, off)[0]].decode()
        assert status != 0
        assert "KV cache type 7 is not known to this worker" in err, err
        assert "f32, f16, q8_0" in err, err
        c.close()
    finally:
        lsn.close()
        try:
            w.wait(timeout=15)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
