"""HSTS from strata itself: with --tls-cert every answer strata writes (small
endpoints, errors, the start of a stream) carries
`Strict-Transport-Security: max-age=63072000; includeSubDomains` once; over
plain HTTP none does (RFC 6797 7.2). Answers evhttp writes on its own (413
over --max-body, 501 for an unknown method, 400 for an unparsable request)
carry none: libevent 2.1 has no hook for them."""
import http.client
import json
import shutil
import ssl

import pytest

from test_http_common import Server, need_model
from test_http_security import make_cert

HSTS = "max-age=63072000; includeSubDomains"
CASES = [("GET", "/health", None, 200), ("GET", "/nope", None, 404),
         ("POST", "/v1/completions", b'{"prompt": ', 400),
         ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2}, 200),
         ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2, "stream": True}, 200)]


def answers(srv, crt=None):
    """(status, every Strict-Transport-Security value) for each case."""
    out = []
    for method, path, body, _ in CASES:
        if crt:
            c = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=60,
                                            context=ssl.create_default_context(cafile=str(crt)))
        else:
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        try:
            c.request(method, path, body=json.dumps(body) if isinstance(body, dict) else body,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            out.append((r.status, r.msg.get_all("Strict-Transport-Security")))
        finally:
            c.close()
    return out


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_hsts_only_over_tls(tmp_path, tls):
    need_model()
    if tls and not shutil.which("openssl"):
        pytest.skip("openssl command not installed")
    crt = None
    if tls:
        crt, key = make_cert(tmp_path, "ecdsa")
        srv = Server("--tls-cert", str(crt), "--tls-key", str(key), tls=True)
    else:
        srv = Server()
    try:
        want = [HSTS] if tls else None
        assert answers(srv, crt) == [(code, want) for *_, code in CASES]
    finally:
        rc, _, err = srv.stop()
        assert rc == 0, err
