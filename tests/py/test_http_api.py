"""The front door's API through the official `openai` client and requests:
completions and chat, streaming and not, compared with `strata generate`
for the same greedy request; /generate, /v1/models, /health, n, stop,
usage, OpenAI-shaped errors, metrics (promtool), Prometheus configs."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from test_http_common import BIN, MODEL, ROOT, Server, need_binary, reference

requests = pytest.importorskip("requests")
openai = pytest.importorskip("openai")

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    audit = tmp_path_factory.mktemp("audit") / "audit.log"
    s = Server("--audit-log", str(audit))
    s.audit = audit
    yield s
    rc, out, err = s.stop()
    assert rc == 0, err


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused")


@pytest.fixture(scope="module")
def model_id(srv):
    return requests.get(srv.url + "/v1/models").json()["data"][0]["id"]


def test_models_and_health(srv):
    r = requests.get(srv.url + "/v1/models")
    assert r.status_code == 200
    data = r.json()["data"]
    assert data[0]["object"] == "model" and data[0]["id"]
    assert requests.get(srv.url + "/v1/models/" + data[0]["id"]).status_code == 200
    assert requests.get(srv.url + "/v1/models/nope").status_code == 404
    h = requests.get(srv.url + "/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"


def test_completion_matches_generate(client, model_id):
    ref = reference(PROMPT, 8)
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.choices[0].text == ref
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert r.choices[0].finish_reason == "length"
    # streaming gives the same text
    parts = [c.choices[0].text for c in client.completions.create(
        model=model_id, prompt=PROMPT, max_tokens=8, temperature=0, stream=True) if c.choices]
    assert "".join(parts) == ref


def test_chat_matches_generate(client, model_id):
    ref = reference("Say hello.", 8, chat=True)
    r = client.chat.completions.create(model=model_id, max_tokens=8, temperature=0,
                                       messages=[{"role": "user", "content": "Say hello."}])
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref
    chunks = list(client.chat.completions.create(
        model=model_id, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Say hello."}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ref
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals and finals[0] in ("stop", "length")


def test_model_file_name_is_accepted(client):
    base = os.path.basename(MODEL)
    r = client.completions.create(model=base, prompt=PROMPT, max_tokens=1, temperature=0)
    assert r.choices[0].text


def test_n_seed_stop(client, model_id):
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=4, n=3,
                                  temperature=0.9, seed=7)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    again = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=4, n=3,
                                      temperature=0.9, seed=7)
    assert [c.text for c in r.choices] == [c.text for c in again.choices]
    ref = reference(PROMPT, 8)
    cut = ref.find(".")
    if cut > 0:
        s = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=8,
                                      temperature=0, stop=["."])
        assert s.choices[0].text == ref[:cut] and s.choices[0].finish_reason == "stop"


def test_generate_endpoint(srv):
    ref = reference(PROMPT, 6)
    r = requests.post(srv.url + "/generate", json={"prompt": PROMPT, "max_length": 6,
                                                  "temperature": 0})
    assert r.status_code == 200
    # /generate keeps the engine's sampling defaults; with temperature 0 it is greedy
    assert r.json()["response"] == ref


def err_of(r):
    e = r.json()["error"]
    assert set(e) >= {"message", "type", "param", "code"}
    return e


@pytest.mark.parametrize("body,param", [
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_p": 1.5}, "top_p"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "n": 99}, "n"),
    ({"prompt": 12}, "prompt"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
])
def test_bad_fields_are_400_naming_the_field(srv, body, param):
    r = requests.post(srv.url + "/v1/completions", json=body)
    assert r.status_code == 400
    e = err_of(r)
    assert e["param"] == param and param in e["message"]


def test_malformed_json_and_utf8(srv):
    for data in (b"{", b"[]", b'{"prompt": "\xff\xfe"}', b"", b'{"prompt":"a\\u0000"}'):
        r = requests.post(srv.url + "/v1/completions", data=data,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 400, data
        err_of(r)


def test_unknown_model_is_404(srv):
    r = requests.post(srv.url + "/v1/chat/completions",
                      json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and err_of(r)["code"] == "model_not_found"


def test_context_overflow_names_both_counts(srv):
    r = requests.post(srv.url + "/v1/completions",
                      json={"prompt": "hello " * 50, "max_tokens": 2040})
    assert r.status_code == 400
    msg = err_of(r)["message"]
    assert "2040" in msg and "prompt has" in msg


def test_unknown_path_and_method(srv):
    assert requests.get(srv.url + "/v2/nothing").status_code == 404
    assert requests.get(srv.url + "/v1/completions").status_code == 405


def test_metrics_promtool(srv):
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (prometheus package)")
    text = requests.get(srv.url + "/metrics").text
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("strata_http_requests_total", "strata_time_to_first_token_seconds_bucket",
                 "strata_inter_token_latency_seconds_bucket", "strata_request_duration_seconds",
                 "strata_prompt_tokens_total", "strata_generation_tokens_total",
                 "strata_queue_depth", "strata_running_sequences",
                 "strata_stage_compute_seconds_total", "strata_hop_latency_seconds",
                 "strata_link_sent_bytes_total", "strata_workers_up"):
        assert name in text, name
    m = srv.metrics()
    assert m['strata_http_requests_total{endpoint="/v1/completions",code="200"}'] >= 1
    assert m["strata_generation_tokens_total"] > 0
    assert m["strata_time_to_first_token_seconds_count"] > 0


def test_prometheus_configs():
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (prometheus package)")
    d = os.path.join(ROOT, "configs", "prometheus")
    out = subprocess.run(["promtool", "check", "config", os.path.join(d, "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(["promtool", "check", "rules", os.path.join(d, "strata_alerts.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "4 rules found" in out.stdout, out.stdout + out.stderr


def test_audit_log(srv):
    prompt = "audit me please"
    # greedy: at the OpenAI default temperature (1.0) a sampled end of text
    # after one token is a right answer, and the count below would flake
    r = requests.post(srv.url + "/v1/completions",
                      json={"prompt": prompt, "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200
    assert r.json()["choices"][0]["finish_reason"] == "length", r.text
    # written and synced before the answer: it is there now
    # ECS fields with dotted keys (docs/HTTP.md, "Audit log")
    lines = [json.loads(l) for l in srv.audit.read_text().splitlines()]
    sha = hashlib.sha256(prompt.encode()).hexdigest()
    mine = [l for l in lines if l.get("strata.prompt_sha256") == sha]
    assert mine, lines[-3:]
    rec = mine[-1]
    assert rec["http.response.status_code"] == 200 and rec["url.path"] == "/v1/completions"
    assert rec["http.request.method"] == "POST" and rec["event.outcome"] == "success"
    assert rec["client.ip"] == "127.0.0.1" and rec["client.port"] > 0
    assert rec["strata.completion_tokens"] == 2 and rec["strata.prompt_tokens"] > 0
    assert rec["http.response.body.bytes"] > 0 and rec["event.duration"] > 0
    ts = rec["@timestamp"]
    assert ts.endswith("Z") and len(ts) == len("2024-01-01T00:00:00.000Z")
    assert prompt not in srv.audit.read_text()
    # /admin/audit without keys configured: open like every endpoint, and
    # the export is watermarked for "anonymous"
    t = requests.get(srv.url + "/admin/audit?lines=2")
    assert t.status_code == 200 and len(t.text.strip().splitlines()) == 2
    assert all(json.loads(l)["strata.export.reader_id"] == "anonymous"
               for l in t.text.splitlines())
