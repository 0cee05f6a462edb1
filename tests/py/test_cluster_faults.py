"""Faults: a worker killed with SIGKILL in the middle of a generation (a
greedy request is replayed on the re-planned cluster and gives the same
answer; a sampled one ends with a clear error; the next request succeeds,
nothing hangs), and a cluster whose workers never come."""
import os
import re
import signal
import subprocess
import time

from conftest import StderrWatch, run


PROMPT = "Tell me a story about a dragon."


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]


def kill_after_first_request(strata, real_model, extra):
    """Three requests one after the other; the last-stage worker is killed as
    soon as the first has finished, so the kill lands in request 1 whatever
    the speed of the machine. Returns (stdout, stderr, returncode)."""
    c = subprocess.Popen([strata, "coordinator", "-m", real_model, "--local", "2", "-t", "1",
                          "-p", PROMPT, "-n", str(N), "--ignore-eos", "--repeat", "3", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w = StderrWatch(c)
    w.wait_for("cluster running", 60)
    w.wait_for("request 0 stream 0: ", 120)
    kids = children(c.pid)
    assert len(kids) == 2, kids
    os.kill(kids[-1], signal.SIGKILL)
    out, err = w.finish(120)
    return out, err, c.returncode


N = 120


def texts_of(out):
    return dict(re.findall(r"--- request (\d) stream 0 ---\n(.*?)(?=\n--- request|\Z)", out,
                           re.S))


def test_kill_worker_mid_generation_replays_greedy(strata, real_model):
    out, err, rc = kill_after_first_request(strata, real_model, ())
    assert rc == 0, err[-4000:]
    # Greedy requests are replayed from prompt + produced tokens on the
    # re-planned cluster: every request completes, no error reaches the client.
    for i in range(3):
        assert f"request {i} stream 0: {N} tokens" in err, err[-4000:]
    assert "failed" not in "".join(l for l in err.splitlines() if "stream 0" in l)
    assert "plan epoch 2" in err
    texts = texts_of(out)
    ref = run([strata, "generate", "-m", real_model, "-p", PROMPT, "-n", str(N), "--temp", "0",
               "-t", "1", "--ignore-eos"], timeout=120)
    assert ref.returncode == 0
    # ...and the replayed answer is token for token the unperturbed one.
    for i in ("0", "1", "2"):
        assert texts[i].rstrip("\n") == ref.stdout.rstrip("\n"), i


def test_kill_worker_mid_generation_sampled_fails_clearly(strata, real_model):
    # A sampled request is not replayed (its random draws would not line up):
    # it ends with an error naming the loss, and the next request succeeds.
    out, err, rc = kill_after_first_request(strata, real_model,
                                            ("--temp", "0.8", "--seed", "7"))
    assert rc == 0, err[-4000:]
    m1 = re.search(r"request 1 stream 0 failed: (.*)", err)
    assert m1 or f"request 1 stream 0: {N} tokens" in err, err[-4000:]
    if m1:
        assert "lost" in m1.group(1) or "peer" in m1.group(1), m1.group(1)
    assert f"request 2 stream 0: {N} tokens" in err, err[-4000:]
    assert "plan epoch 2" in err


def test_no_workers_times_out_cleanly(strata, real_model, tmp_path):
    s = tmp_path / "s"
    s.write_text("some-secret-0123456789abcdef\n")
    t0 = time.time()
    r = run([strata, "coordinator", "-m", real_model, "--listen", "127.0.0.1:0",
             "--workers", "1", "--secret-file", str(s), "--join-timeout", "2", "-p", "x",
             "-n", "2"], timeout=60)
    assert r.returncode == 1
    assert "not ready" in r.stderr and "0 of 1 worker" in r.stderr, r.stderr
    assert time.time() - t0 < 30
