"""A worker that joins a running cluster triggers a re-plan at a safe point:
a standalone coordinator planned over one worker serves a greedy request; a
second worker joins; the coordinator logs the new two-stage plan, and the
same request gives the same text, equal to `strata generate`'s."""
import contextlib
import subprocess
import threading
import time

import pytest

from conftest import run
from test_cluster_standalone import PROMPT, StderrWatch, free_port, wait_listening, worker
from test_http_common import need_binary

N = 16


def complete(port):
    import requests
    r = requests.post(f"http://127.0.0.1:{port}/v1/completions",
                      json={"prompt": PROMPT, "max_tokens": N, "temperature": 0,
                            "ignore_eos": True}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


@pytest.fixture
def secret(tmp_path):
    p = tmp_path / "secret"
    p.write_text("test-cluster-secret-0123456789\n")
    return str(p)


@contextlib.contextmanager
def one_worker_cluster(strata, real_model, secret):
    """A standalone coordinator (HTTP front door) serving over worker w0.
    Yields (control port, HTTP port, stderr watch, worker list); workers
    appended to the list are stopped with the coordinator."""
    port, http = free_port(), free_port()
    c = subprocess.Popen([strata, "coordinator", "-m", real_model, "--listen",
                          f"127.0.0.1:{port}", "--data-listen", "127.0.0.1:0", "--workers", "1",
                          "--secret-file", secret, "--join-timeout", "30", "--host", "127.0.0.1",
                          "--port", str(http)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = StderrWatch(c)
    ws = []
    try:
        wait_listening(port)
        ws.append(worker(strata, port, secret, "w0"))
        watch.wait_for("cluster running: epoch 1:", 60)
        wait_listening(http)
        yield port, http, watch, ws
    finally:
        c.terminate()
        try:
            c.wait(timeout=30)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
        for w in ws:
            try:
                w.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.communicate()


def reference(strata, real_model, n):
    ref = run([strata, "generate", "-m", real_model, "-p", PROMPT, "-n", str(n), "--temp", "0",
               "--ignore-eos", "-t", "1"], timeout=120)
    assert ref.returncode == 0, ref.stderr
    return ref.stdout


def test_second_worker_triggers_replan(strata, real_model, secret):
    need_binary()
    pytest.importorskip("requests")
    ref = reference(strata, real_model, N)
    with one_worker_cluster(strata, real_model, secret) as (port, http, watch, ws):
        first = complete(http)
        assert first.strip()
        ws.append(worker(strata, port, secret, "w1"))
        watch.wait_for("cluster running: epoch 2:", 60)
        line = [l for l in watch.text().splitlines() if "cluster running: epoch 2:" in l][0]
        assert "w0[" in line and "w1[" in line, line   # two stages, both workers
        second = complete(http)
        assert second == first
        assert first in ref, (first, ref)


def test_join_while_requests_run_loses_no_request(strata, real_model, secret):
    """Two long greedy requests are running and a third arrives while a
    joining worker's re-plan drains the pipeline. Sequences whose KV cache
    the re-plan drops are replayed on the new plan, so every request
    answers 200 with exactly the unperturbed text (docs/CLUSTER.md, Joins
    and Replay)."""
    need_binary()
    requests = pytest.importorskip("requests")
    n = 200
    ref = reference(strata, real_model, n)
    results = {}

    def one(k):
        r = requests.post(f"http://127.0.0.1:{http}/v1/completions",
                          json={"prompt": PROMPT, "max_tokens": n, "temperature": 0,
                                "ignore_eos": True}, timeout=180)
        results[k] = (r.status_code, r.json()["choices"][0]["text"] if r.status_code == 200
                      else r.text)

    with one_worker_cluster(strata, real_model, secret) as (port, http, watch, ws):
        threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)                              # both are decoding
        ws.append(worker(strata, port, secret, "w1"))
        watch.wait_for("w1 joined", 30)
        late = threading.Thread(target=one, args=(2,))
        late.start()                                 # arrives during the drain
        threads.append(late)
        for t in threads:
            t.join(timeout=180)
        watch.wait_for("cluster running: epoch 2:", 60)
        for k in range(3):
            code, text = results[k]
            assert code == 200, (k, text, watch.text()[-3000:])
            assert text in ref and len(text) > 0.9 * len(ref.strip()), (k, text)
