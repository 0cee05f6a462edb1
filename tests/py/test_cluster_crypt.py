"""A cluster whose coordinator holds only the encrypted model: `strata
coordinator -m m.stenc --key-file K` decrypts it into memory, hashes the
decrypted tensors for the manifest and starts its local workers with the
file and the key; the greedy text equals `strata generate` on the plain
GGUF. A missing or wrong key fails at once with one line; a worker without
the file is refused streaming (the control connection would carry the
weights in the clear) and the coordinator fails cleanly; a worker whose
encrypted copy decrypts to different bytes fails the manifest check."""
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest

from conftest import StderrWatch, run
from test_cluster_standalone import corrupt_copy, finish, free_port, start, worker

PROMPT = "Once upon a time, in a small village,"
N = 24
NO_STREAM = ("the model is encrypted: give the worker the encrypted file and its key "
             "(--model, --key-file); weights are not streamed in the clear")


def _cluster_built(strata):
    return run([strata, "worker", "--help"]).returncode == 0


@pytest.fixture(scope="module")
def enc(strata, real_model, tmp_path_factory):
    if not _cluster_built(strata):
        pytest.skip("strata built without cluster support")
    d = tmp_path_factory.mktemp("ccrypt")
    key, out = d / "model.key", d / "model.stenc"
    r = run([strata, "encrypt-model", "--gen-key", str(key)])
    assert r.returncode == 0, r.stderr
    r = run([strata, "encrypt-model", real_model, str(out), "--key-file", str(key)])
    if r.returncode == 1 and "without OpenSSL" in r.stderr:
        pytest.skip("strata built without OpenSSL")
    assert r.returncode == 0, r.stderr
    return {"dir": d, "key": str(key), "model": str(out)}


@pytest.fixture(scope="module")
def want(strata, real_model):
    r = run([strata, "generate", "-m", real_model, "-p", PROMPT, "-n", str(N), "--temp", "0",
             "-t", "1"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    return r.stdout


def coordinator_local(strata, model, *extra, n=N, timeout=60):
    return run([strata, "coordinator", "-m", model, "--local", "2", "-t", "1", "-p", PROMPT,
                "-n", str(n), "--temp", "0", "--stats"] + list(extra), timeout=timeout)


def test_local_cluster_on_encrypted_model_equals_generate(strata, enc, want):
    r = coordinator_local(strata, enc["model"], "--key-file", enc["key"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.rstrip("\n") == want.rstrip("\n"), (r.stdout, want)
    assert "cluster: 2 stages" in r.stderr
    # The coordinator hashed decrypted memory, the workers each decrypted
    # only their own layers from the file and passed the manifest check.
    assert "decrypted in memory" in r.stderr, r.stderr[-3000:]
    assert r.stderr.count(f"of {enc['model']} (layers") == 2, r.stderr[-3000:]
    assert "(streamed)" not in r.stderr


def test_key_file_with_a_plain_model_is_accepted_like_generate(strata, real_model, enc,
                                                               want):
    # `strata generate -m plain.gguf --key-file K` maps the plain file and
    # answers; the cluster does the same.
    g = run([strata, "generate", "-m", real_model, "--key-file", enc["key"], "-p", PROMPT,
             "-n", str(N), "--temp", "0", "-t", "1"], timeout=120)
    assert g.returncode == 0 and g.stdout == want
    r = coordinator_local(strata, real_model, "--key-file", enc["key"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.rstrip("\n") == want.rstrip("\n")
    assert "decrypted in memory" not in r.stderr


def _one_error_line(stderr):
    lines = [l for l in stderr.splitlines() if l.startswith("strata coordinator:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_missing_key_fails_with_one_line(strata, enc):
    t0 = time.time()
    r = coordinator_local(strata, enc["model"], n=4, timeout=30)
    assert r.returncode == 1, r.stderr[-3000:]
    line = _one_error_line(r.stderr)
    assert line == (f"strata coordinator: {enc['model']}: encrypted model: a key is needed "
                    "(--key-file)"), line
    assert r.stdout == ""
    assert time.time() - t0 < 20   # no worker is waited for
    # The same sentence `strata generate` prints.
    g = run([strata, "generate", "-m", enc["model"], "-p", "x", "-n", "1"], timeout=30)
    assert g.returncode == 1 and line.split(": ", 1)[1] in g.stderr, g.stderr


def test_wrong_or_unreadable_key_fails_cleanly(strata, enc, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("11" * 32 + "\n")
    r = coordinator_local(strata, enc["model"], "--key-file", str(bad), n=4, timeout=30)
    assert r.returncode == 1, r.stderr[-3000:]
    line = _one_error_line(r.stderr)
    assert line.endswith(f"{enc['model']}: wrong key (key check failed)"), line
    r = coordinator_local(strata, enc["model"], "--key-file", str(tmp_path / "absent"), n=4,
                          timeout=30)
    assert r.returncode == 1
    assert "cannot open key file" in _one_error_line(r.stderr)
    short = tmp_path / "short.key"
    short.write_text("abcd\n")
    r = coordinator_local(strata, enc["model"], "--key-file", str(short), n=4, timeout=30)
    assert r.returncode == 1
    assert "32 raw bytes or 64 hex digits" in _one_error_line(r.stderr)


def test_worker_without_the_file_is_refused_streaming(strata, enc, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("test-cluster-secret-ccrypt-0123456789\n")
    port = free_port()
    t0 = time.time()
    c = start([strata, "coordinator", "-m", enc["model"], "--key-file", enc["key"],
               "--listen", f"127.0.0.1:{port}", "--data-listen", "127.0.0.1:0",
               "--workers", "1", "--secret-file", str(secret), "--join-timeout", "20",
               "-p", PROMPT, "-n", "4"])
    # No --key-file either: it asks the coordinator for its shard.
    w = worker(strata, port, str(secret), "nofile", "-m", str(tmp_path / "absent.stenc"))
    rc, out, err = finish(c, 40)
    wrc, _, werr = finish(w, 20)
    assert time.time() - t0 < 40
    assert rc == 1, err[-3000:]
    assert out == ""
    # Logged by the coordinator, named the worker, sent to the worker.
    assert f"worker nofile (host " in err and NO_STREAM in err, err[-3000:]
    assert _one_error_line(err).endswith(NO_STREAM), err[-3000:]
    assert "refused the shard request: " + NO_STREAM in werr, werr[-3000:]
    # No byte of the model arrived (the progress lines count received bytes).
    assert not re.search(r"shard +\d+ %", werr), werr[-3000:]
    assert "streamed from the coordinator" not in werr
    assert "drained by the coordinator" in werr, werr[-3000:]
    assert wrc == 0, werr[-3000:]


def test_worker_whose_copy_decrypts_differently_fails_the_manifest(strata, real_model, enc,
                                                                   tmp_path):
    # Same key, a plaintext with flipped bytes in blk.20.ffn_down: the file
    # authenticates, but its decrypted tensor differs from the coordinator's.
    bad_plain = tmp_path / "bad.gguf"
    corrupt_copy(real_model, bad_plain)
    bad = tmp_path / "bad.stenc"
    r = run([strata, "encrypt-model", str(bad_plain), str(bad), "--key-file", enc["key"]])
    assert r.returncode == 0, r.stderr
    os.unlink(bad_plain)
    secret = tmp_path / "secret"
    secret.write_text("test-cluster-secret-ccrypt-0123456789\n")
    port = free_port()
    c = start([strata, "coordinator", "-m", enc["model"], "--key-file", enc["key"],
               "--listen", f"127.0.0.1:{port}", "--data-listen", "127.0.0.1:0",
               "--workers", "2", "--secret-file", str(secret), "--split", "1,29",
               "--join-timeout", "20", "-p", PROMPT, "-n", "4"])
    # Names sort the plan: "a-good" gets layer 0, "b-corrupt" the rest.
    good = worker(strata, port, str(secret), "a-good", "-m", enc["model"],
                  "--key-file", enc["key"])
    badw = worker(strata, port, str(secret), "b-corrupt", "-m", str(bad),
                  "--key-file", enc["key"])
    rc, out, err = finish(c, 40)
    for p in (good, badw):
        finish(p, 20)
    assert rc == 1, err[-3000:]
    assert "b-corrupt" in err and "does not match the coordinator's SHA-256" in err, err[-3000:]
    assert "blk.20.ffn_down.weight" in err, err[-3000:]


def test_serve_workers_with_encrypted_model(strata, enc, want):
    port = free_port()
    p = subprocess.Popen([strata, "serve", "-m", enc["model"], "--key-file", enc["key"],
                          "--workers", "2", "-t", "1", "--slots", "1", "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = StderrWatch(p)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            assert p.poll() is None, watch.text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as h:
                    if h.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, watch.text()[-3000:]
            time.sleep(0.2)
        body = json.dumps({"prompt": PROMPT, "max_tokens": N, "temperature": 0}).encode()
        rq = urllib.request.Request(url + "/v1/completions", data=body,
                                    headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(rq, timeout=60) as resp:
            got = json.loads(resp.read())["choices"][0]["text"]
        assert got.rstrip("\n") == want.rstrip("\n"), (got, want)
        assert watch.text().count(f"of {enc['model']} (layers") == 2, watch.text()[-3000:]
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_mpirun_launch_with_encrypted_model(strata, enc, want, tmp_path):
    import shutil
    if not shutil.which("mpirun"):
        pytest.skip("mpirun (MPICH) is not installed")
    secret = tmp_path / "secret"
    secret.write_text("mpi-secret-ccrypt-0123456789abcdef\n")
    # MPICH's MPI_Init allocations are reported by LeakSanitizer under ASan
    # (see test_cluster_mpi.py); nothing of strata's.
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    r = run(["mpirun", "-n", "3", strata, "launch", "-m", enc["model"], "--key-file",
             enc["key"], "--secret-file", str(secret), "--control-port", str(free_port()),
             "--advertise", "127.0.0.1", "--data-listen", "127.0.0.1:0", "-p", PROMPT,
             "-n", str(N), "-t", "1"], timeout=60, env=env)
    if "built without MPI" in r.stderr or "not started by mpirun" in r.stderr:
        pytest.skip("strata built without MPI: " + r.stderr.strip()[-200:])
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.rstrip("\n") == want.rstrip("\n")
    # Both worker ranks got the key and decrypted their own layers.
    assert r.stderr.count(f"of {enc['model']} (layers") == 2, r.stderr[-4000:]
    assert "decrypted in memory" in r.stderr
