"""Keys, roles, rate limits and TLS of the front door: `strata keys`,
401/403/429 with Retry-After, /health and /metrics open, revocation through
POST /admin/reload-keys, the loopback-only default, TLS 1.3 only (checked
with `openssl s_client`) on RSA and ECDSA P-256 certificates, HSTS."""
import os
import shutil
import subprocess
import time

import pytest

from test_http_common import BIN, MODEL, Server, free_port, need_model

requests = pytest.importorskip("requests")


def add_key(path, kid, role):
    out = subprocess.run([BIN, "keys", "add", "--file", str(path), "--role", role, "--id", kid],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("sk-strata-")
    return key


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    need_model()
    d = tmp_path_factory.mktemp("keys")
    path = d / "keys.txt"
    keys = {r: add_key(path, r + "1", r) for r in ("admin", "developer", "user", "auditor")}
    audit = d / "audit.log"
    s = Server("--keys", str(path), "--user-rate", "1", "--user-burst", "2",
               "--audit-log", str(audit))
    s.keys, s.keyfile, s.audit = keys, path, audit
    yield s
    rc, out, err = s.stop()
    assert rc == 0, err


def h(key):
    return {"Authorization": "Bearer " + key}


def test_key_file_stores_hashes_only(keyed):
    text = keyed.keyfile.read_text()
    for k in keyed.keys.values():
        assert k not in text and k[len("sk-strata-"):] not in text
    assert oct(os.stat(keyed.keyfile).st_mode & 0o777) == "0o600"
    out = subprocess.run([BIN, "keys", "list", "--file", str(keyed.keyfile)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "auditor1" in out.stdout and "active" in out.stdout


def test_missing_and_wrong_key_401(keyed):
    body = {"prompt": "hi", "max_tokens": 1}
    r = requests.post(keyed.url + "/v1/completions", json=body)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = requests.post(keyed.url + "/v1/completions", json=body, headers=h("sk-strata-" + "0" * 64))
    assert r.status_code == 401
    # the key is checked before the body is parsed: a broken body still gets 401
    r = requests.post(keyed.url + "/v1/completions", data=b"{not json")
    assert r.status_code == 401


def test_roles(keyed):
    k = keyed.keys
    gen = {"prompt": "hi", "max_tokens": 1}
    assert requests.post(keyed.url + "/v1/completions", json=gen, headers=h(k["developer"])).status_code == 200
    assert requests.post(keyed.url + "/v1/completions", json=gen, headers=h(k["auditor"])).status_code == 403
    assert requests.get(keyed.url + "/v1/models", headers=h(k["user"])).status_code == 403
    assert requests.get(keyed.url + "/v1/models", headers=h(k["developer"])).status_code == 200
    assert requests.get(keyed.url + "/admin/status", headers=h(k["developer"])).status_code == 200
    assert requests.get(keyed.url + "/admin/status", headers=h(k["user"])).status_code == 403
    assert requests.get(keyed.url + "/admin/audit", headers=h(k["auditor"])).status_code == 200
    assert requests.get(keyed.url + "/admin/audit", headers=h(k["developer"])).status_code == 403
    assert requests.post(keyed.url + "/admin/drain", headers=h(k["developer"])).status_code == 403
    # open to load balancers and Prometheus
    assert requests.get(keyed.url + "/health").status_code == 200
    assert requests.get(keyed.url + "/metrics").status_code == 200
    # the audit log names the key id and role, never the key
    text = keyed.audit.read_text()
    assert '"key_id":"auditor1"' in text and '"role":"auditor"' in text
    assert all(v not in text for v in k.values())


def test_user_rate_limit_429(keyed):
    k = keyed.keys["user"]
    time.sleep(2.5)                       # refill the bucket (1/s, burst 2)
    codes = []
    for _ in range(4):
        r = requests.post(keyed.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 1},
                          headers=h(k))
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"
    assert codes[:2] == [200, 200] and 429 in codes[2:], codes
    # admin keys are not limited
    for _ in range(4):
        assert requests.get(keyed.url + "/admin/status", headers=h(keyed.keys["admin"])).status_code == 200


def test_revoke_and_reload(keyed):
    extra = add_key(keyed.keyfile, "temp1", "developer")
    admin = h(keyed.keys["admin"])
    assert requests.post(keyed.url + "/admin/reload-keys", headers=admin).status_code == 200
    assert requests.get(keyed.url + "/v1/models", headers=h(extra)).status_code == 200
    out = subprocess.run([BIN, "keys", "revoke", "--file", str(keyed.keyfile), "--id", "temp1"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = requests.post(keyed.url + "/admin/reload-keys", headers=admin)
    assert r.status_code == 200
    assert requests.get(keyed.url + "/v1/models", headers=h(extra)).status_code == 401


def test_public_bind_needs_keys():
    need_model()
    out = subprocess.run([BIN, "serve", "-m", MODEL, "--host", "0.0.0.0", "--port",
                          str(free_port())], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--keys" in out.stderr


def make_cert(d, kind):
    key, crt = d / f"{kind}.key", d / f"{kind}.crt"
    if kind == "rsa":
        args = ["-newkey", "rsa:2048"]
    else:
        args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    out = subprocess.run(["openssl", "req", "-x509", *args, "-nodes", "-keyout", str(key),
                          "-out", str(crt), "-days", "1", "-subj", "/CN=localhost",
                          "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return crt, key


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_tls13_only(tmp_path, kind):
    if not shutil.which("openssl"):
        pytest.skip("openssl command not installed")
    crt, key = make_cert(tmp_path, kind)
    s = Server("--tls-cert", str(crt), "--tls-key", str(key), tls=True)
    try:
        ok = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}",
                             "-tls1_3", "-servername", "localhost"], input="", capture_output=True,
                            text=True, timeout=20)
        assert "TLSv1.3" in ok.stdout, ok.stdout + ok.stderr
        old = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}",
                              "-tls1_2", "-servername", "localhost"], input="", capture_output=True,
                             text=True, timeout=20)
        # the handshake fails: no TLS 1.2 session is ever established
        assert old.returncode != 0, old.stdout + old.stderr
        assert "TLSv1.2" not in old.stdout.split("SSL-Session")[-1] or "Cipher is (NONE)" in old.stdout
        r = requests.get(s.url + "/health", verify=str(crt))
        assert r.status_code == 200
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        r = requests.post(s.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                          verify=str(crt))
        assert r.status_code == 200 and r.json()["choices"][0]["text"] is not None
        # plain HTTP on the TLS port is not served
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{s.port}/health", timeout=3)
    finally:
        rc, _, err = s.stop()
        assert rc == 0, err
