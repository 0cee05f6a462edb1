"""A streamed answer whose first token takes longer than --request-timeout
(a long prompt on a slow machine) must still arrive: the request timeout
is for receiving requests, and evhttp's read timeout on a streaming
connection used to cut such streams after exactly that long."""
import json
import os
import time

import requests

from test_http_common import ROOT, Server


def test_stream_survives_a_prefill_longer_than_the_request_timeout():
    srv = Server("--request-timeout", "1", "--prefix-cache", "0")
    try:
        prompt = open(os.path.join(ROOT, "docs", "CLUSTER.md")).read()[:5000]
        t0 = time.time()
        with requests.post(srv.url + "/v1/completions", json={
                "prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": True},
                stream=True, timeout=300) as r:
            assert r.status_code == 200
            lines = [ln for ln in r.iter_lines() if ln]
        took = time.time() - t0
        assert lines[-1] == b"data: [DONE]", lines[-3:]
        assert any(json.loads(ln[6:])["choices"][0].get("text") for ln in lines[:-1]
                   if ln.startswith(b"data: {"))
        # The case is only shown when the first token took longer than 1 s.
        assert took > 1.0, f"prefill took {took:.2f} s: make the prompt longer"
    finally:
        srv.stop()
