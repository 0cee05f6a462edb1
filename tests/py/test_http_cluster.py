"""The front door over the cluster: `strata serve --workers 2` (a coordinator
and two local worker processes over UCX) answers the OpenAI endpoints, with
the same greedy text as the single-process server, and /health reports the
stages."""
import pytest

from test_http_common import Server


def chat(url, content, **kw):
    import requests
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 12,
            "temperature": 0, **kw}
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def servers():
    one = Server()
    try:
        two = Server("--workers", "2")
    except Exception:
        one.stop()
        raise
    yield one, two
    two.stop()
    one.stop()


def test_chat_through_cluster_equals_single_process(servers):
    one, two = servers
    a = chat(one.url, "What is the capital of France?")
    b = chat(two.url, "What is the capital of France?")
    assert b["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
    assert "Paris" in b["choices"][0]["message"]["content"]
    assert b["usage"] == a["usage"]


def test_streaming_completion_through_cluster(servers):
    import requests
    _, two = servers
    r = requests.post(two.url + "/v1/completions",
                      json={"prompt": "Once upon a time", "max_tokens": 8, "stream": True,
                            "temperature": 0}, stream=True, timeout=120)
    assert r.status_code == 200
    lines = [l for l in r.iter_lines(decode_unicode=True) if l]
    assert lines[-1] == "data: [DONE]"
    assert len(lines) >= 3


def test_health_and_generate_through_cluster(servers):
    import requests
    _, two = servers
    h = requests.get(two.url + "/health", timeout=10)
    assert h.status_code == 200
    g = requests.post(two.url + "/generate", json={"prompt": "Hello", "max_length": 4},
                      timeout=120)
    assert g.status_code == 200 and isinstance(g.json()["response"], str)
