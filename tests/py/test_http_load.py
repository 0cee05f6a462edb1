"""A bounded load test from second processes (Python client threads, and
wrk when installed): no errors, and afterwards no leaked connections,
requests or sequence slots (from the server's own metrics)."""
import re
import shutil
import subprocess
import threading
import time

import pytest

from test_http_common import Server

requests = pytest.importorskip("requests")


@pytest.fixture(scope="module")
def srv():
    s = Server("--slots", "8")
    yield s
    rc, out, err = s.stop()
    assert rc == 0, err


def settle(srv):
    deadline = time.time() + 5
    while time.time() < deadline:
        m = srv.metrics()
        # the scrape itself holds one connection
        if (m["strata_http_open_connections"] <= 1 and m["strata_http_active_requests"] == 0
                and m["strata_running_sequences"] == 0):
            return m
        time.sleep(0.1)
    return m


def test_generation_load(srv):
    stop = time.time() + 4.0
    codes, errors = [], []

    def worker(i):
        with requests.Session() as sess:
            while time.time() < stop:
                try:
                    stream = i % 2 == 0
                    r = sess.post(srv.url + "/v1/completions", timeout=30, stream=stream,
                                  json={"prompt": f"Request {i}: hello", "max_tokens": 3,
                                        "stream": stream})
                    body = r.content
                    codes.append(r.status_code)
                    if stream and b"data: [DONE]" not in body:
                        errors.append("stream without [DONE]")
                except requests.RequestException as e:
                    errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert codes and set(codes) == {200}, set(codes)
    m = settle(srv)
    assert m["strata_http_open_connections"] <= 1
    assert m["strata_http_active_requests"] == 0 and m["strata_http_active_streams"] == 0
    assert m["strata_running_sequences"] == 0 and m["strata_kv_slots_free"] == 8
    assert m['strata_http_requests_total{endpoint="/v1/completions",code="200"}'] >= len(codes)


def test_wrk_on_cheap_endpoint(srv):
    if not shutil.which("wrk"):
        pytest.skip("wrk not installed")
    out = subprocess.run(["wrk", "-t2", "-c32", "-d2s", srv.url + "/v1/models"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Non-2xx" not in out.stdout and "Socket errors" not in out.stdout, out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))
    assert rps > 1000, out.stdout
    m = settle(srv)
    assert m["strata_http_open_connections"] <= 1, m["strata_http_open_connections"]
