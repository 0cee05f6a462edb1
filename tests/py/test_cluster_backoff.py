"""A local worker that dies again and again (here: SIGKILL as soon as it is
restarted) is restarted with a growing back-off (0.25 s, 0.5 s, 1 s, ...,
30 s at most) instead of at once and without bound; the restarts show in
/metrics (strata_worker_restarts_total, strata_workers_restart_pending),
/health and the log, and once it is left alone the cluster serves again."""
import os
import signal
import time

import pytest

from test_http_common import Server


def children(pid):
    out = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out |= {int(x) for x in f.read().split()}
    except OSError:
        pass
    return out


def wait_new_child(pid, old, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        new = children(pid) - old
        if new:
            return new.pop()
        time.sleep(0.01)
    return None


def test_crash_looping_worker_backs_off(real_model):
    import requests
    srv = Server("--workers", "2", "--slots", "2")
    try:
        kids = children(srv.proc.pid)
        assert len(kids) == 2, kids
        victim, gaps = sorted(kids)[-1], []
        for _ in range(4):
            others = children(srv.proc.pid) - {victim}
            t0 = time.time()
            os.kill(victim, signal.SIGKILL)
            victim = wait_new_child(srv.proc.pid, others | {victim}, 30)   # not its zombie
            assert victim, "the worker was not restarted"
            gaps.append(time.time() - t0)
        # each restart waited out at least its back-off: 0.25, 0.5, 1, 2 s
        for g, want in zip(gaps, (0.25, 0.5, 1.0, 2.0)):
            assert g >= want * 0.95, gaps
        m = srv.metrics()
        assert m["strata_worker_restarts_total"] >= 4, m
        # left alone now: the cluster recovers and answers
        deadline = time.time() + 90
        while time.time() < deadline:
            h = requests.get(srv.url + "/health", timeout=5)
            if h.status_code == 200:
                break
            assert "worker_restarts" in h.json()
            time.sleep(0.2)
        assert h.status_code == 200, h.text
        assert h.json()["worker_restarts"] >= 4
        r = requests.post(srv.url + "/v1/completions", json={
            "model": h.json()["model"], "prompt": "The capital of France is", "max_tokens": 4,
            "temperature": 0}, timeout=120)
        assert r.status_code == 200, r.text
    finally:
        _, _, err = srv.stop()
    assert "died 4 time(s) in a row; restarting it in 2.00 s" in err, err[-3000:]
    assert "died 1 time(s) in a row; restarting it in 0.25 s" in err
