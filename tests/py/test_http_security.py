"""Keys, roles, rate limits and TLS of the front door: `strata keys`,
401/403/429 with Retry-After, /health and /metrics open, revocation through
POST /admin/reload-keys, the loopback-only default, TLS 1.3 only (checked
with `openssl s_client`) on RSA and ECDSA P-256 certificates, HSTS."""
import base64
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import time
import urllib.parse

import pytest

from test_http_common import BIN, MODEL, Server, free_port, need_model

requests = pytest.importorskip("requests")


TOTP_SECRETS = {}       # admin key -> base32 secret from its otpauth:// URI


def add_key(path, kid, role, allow=None):
    """`strata keys add` as the access matrix wants it: admin keys with a
    TOTP second factor, developer keys bound to addresses (loopback here)."""
    extra = []
    if role == "admin":
        extra = ["--totp"]
    if role == "developer" or allow:
        extra += ["--allow", allow or "127.0.0.0/8,::1/128"]
    out = subprocess.run([BIN, "keys", "add", "--file", str(path), "--role", role, "--id", kid,
                          *extra], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    key = lines[0]
    assert key.startswith("sk-strata-")
    if role == "admin":
        uri = lines[1]
        assert uri.startswith(f"otpauth://totp/strata:{kid}?secret="), uri
        TOTP_SECRETS[key] = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]
    return key


def totp(secret_b32, t=None, step=30, digits=6):
    """RFC 6238 (HMAC-SHA1, 30 s, 6 digits), written from the RFC: an
    implementation independent of the server's liboath."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if t is None else t) // step)
    d = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    o = d[-1] & 15
    return f"{(struct.unpack('>I', d[o:o + 4])[0] & 0x7fffffff) % 10 ** digits:0{digits}d}"


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


def h_admin(key, t=None):
    """An admin key with its current one-time password, for /admin/*."""
    return {**h(key), "X-Strata-OTP": totp(TOTP_SECRETS[key], t)}


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
    assert requests.get(keyed.url + "/v1/models", headers=h(k["user"])).status_code == 200
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
    assert '"user.id":"auditor1","user.roles":["auditor"]' in text
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
        assert requests.get(keyed.url + "/admin/status",
                            headers=h_admin(keyed.keys["admin"])).status_code == 200


def test_revoke_and_reload(keyed):
    extra = add_key(keyed.keyfile, "temp1", "developer")
    admin = h_admin(keyed.keys["admin"])
    assert requests.post(keyed.url + "/admin/reload-keys", headers=admin).status_code == 200
    assert requests.get(keyed.url + "/v1/models", headers=h(extra)).status_code == 200
    out = subprocess.run([BIN, "keys", "revoke", "--file", str(keyed.keyfile), "--id", "temp1"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = requests.post(keyed.url + "/admin/reload-keys", headers=admin)
    assert r.status_code == 200
    assert requests.get(keyed.url + "/v1/models", headers=h(extra)).status_code == 401


def test_admin_second_factor(keyed):
    key = keyed.keys["admin"]
    url = keyed.url + "/admin/status"
    r = requests.get(url, headers=h(key))
    assert r.status_code == 401 and r.json()["error"]["code"] == "otp_required"
    wrong = f"{(int(totp(TOTP_SECRETS[key])) + 1) % 1000000:06d}"
    r = requests.get(url, headers={**h(key), "X-Strata-OTP": wrong})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_otp"
    for bad in ("", "12345", "1234567", "abcdef", "12 456"):
        r = requests.get(url, headers={**h(key), "X-Strata-OTP": bad})
        assert r.status_code == 401, bad
    # a code from five minutes ago has expired; the current one (and the one
    # of the step before: clock skew) is taken
    assert requests.get(url, headers=h_admin(key, time.time() - 300)).status_code == 401
    assert requests.get(url, headers=h_admin(key)).status_code == 200
    assert requests.get(url, headers=h_admin(key, time.time() - 30)).status_code == 200
    # every /admin/* endpoint, the audit log included; not generation
    assert requests.get(keyed.url + "/admin/audit", headers=h(key)).status_code == 401
    assert requests.get(keyed.url + "/admin/audit", headers=h_admin(key)).status_code == 200
    gen = {"prompt": "hi", "max_tokens": 1}
    assert requests.post(keyed.url + "/v1/completions", json=gen, headers=h(key)).status_code == 200
    assert requests.get(keyed.url + "/v1/models", headers=h(key)).status_code == 200
    assert keyed.metrics()["strata_http_otp_failures_total"] >= 1
    # the secret is in the file (the server computes codes from it), never printed again
    out = subprocess.run([BIN, "keys", "list", "--file", str(keyed.keyfile)],
                         capture_output=True, text=True)
    assert TOTP_SECRETS[key] not in out.stdout


def test_admin_key_without_second_factor_refused(keyed, tmp_path):
    # written by hand (or by an older strata): no totp= on the line
    raw = "sk-strata-" + "ab" * 32
    line = f"oldadmin admin {hashlib.sha256(raw.encode()).hexdigest()} 1700000000\n"
    with open(keyed.keyfile, "a") as f:
        f.write(line)
    assert requests.post(keyed.url + "/admin/reload-keys",
                         headers=h_admin(keyed.keys["admin"])).status_code == 200
    r = requests.get(keyed.url + "/admin/status", headers=h(raw))
    assert r.status_code == 403 and r.json()["error"]["code"] == "otp_not_enrolled"
    assert "--totp" in r.json()["error"]["message"]


def test_keys_add_enforces_the_matrix(tmp_path):
    f = str(tmp_path / "k.txt")
    for args, needle in ((["--role", "admin", "--id", "a"], "--totp"),
                         (["--role", "developer", "--id", "d"], "--allow"),
                         (["--role", "user", "--id", "u", "--allow", "10.0.0.1/8"], "host bits"),
                         (["--role", "user", "--id", "u", "--allow", "10.0.0.0/33"], "prefix"),
                         (["--role", "user", "--id", "u", "--allow", "nope"], "not an IPv4")):
        out = subprocess.run([BIN, "keys", "add", "--file", f, *args], capture_output=True,
                             text=True)
        assert out.returncode != 0 and needle in out.stderr, (args, out.stderr)
    assert not os.path.exists(f)


def test_developer_address_allowlist(keyed):
    # bound to loopback: allowed; bound elsewhere (v4 and v6): 403 naming the address
    near = add_key(keyed.keyfile, "dev-lo", "developer", allow="127.0.0.1/32")
    far = add_key(keyed.keyfile, "dev-far", "developer", allow="10.0.0.0/8,2001:db8::/32")
    assert requests.post(keyed.url + "/admin/reload-keys",
                         headers=h_admin(keyed.keys["admin"])).status_code == 200
    assert requests.get(keyed.url + "/v1/models", headers=h(near)).status_code == 200
    assert requests.get(keyed.url + "/admin/status", headers=h(near)).status_code == 200
    r = requests.get(keyed.url + "/v1/models", headers=h(far))
    assert r.status_code == 403 and r.json()["error"]["code"] == "address_not_allowed"
    assert "127.0.0.1" in r.json()["error"]["message"]
    gen = {"prompt": "hi", "max_tokens": 1}
    assert requests.post(keyed.url + "/v1/completions", json=gen, headers=h(far)).status_code == 403
    out = subprocess.run([BIN, "keys", "list", "--file", str(keyed.keyfile)],
                         capture_output=True, text=True)
    row = [l for l in out.stdout.splitlines() if l.startswith("dev-far")][0]
    assert "10.0.0.0/8,2001:db8::/32" in row


def test_access_matrix_cells(keyed):
    """Each cell of docs/HTTP.md's matrix, allowed and refused."""
    k = keyed.keys
    gen = {"prompt": "hi", "max_tokens": 1}
    cells = [  # (role, method, path, expected)
        ("user", "POST", "/v1/completions", 200), ("user", "GET", "/v1/models", 200),
        ("user", "GET", "/admin/status", 403), ("user", "GET", "/admin/audit", 403),
        ("user", "POST", "/admin/drain", 403),
        ("developer", "POST", "/v1/completions", 200), ("developer", "GET", "/v1/models", 200),
        ("developer", "GET", "/admin/status", 200), ("developer", "GET", "/admin/audit", 403),
        ("developer", "POST", "/admin/reload-keys", 403),
        ("auditor", "GET", "/admin/audit", 200), ("auditor", "GET", "/v1/models", 403),
        ("auditor", "POST", "/v1/completions", 403), ("auditor", "GET", "/admin/status", 403),
        ("admin", "POST", "/v1/completions", 200), ("admin", "GET", "/admin/status", 200),
        ("admin", "GET", "/admin/audit", 200), ("admin", "POST", "/admin/reload-keys", 200),
    ]
    for role, method, path, want in cells:
        if role == "user":
            time.sleep(1.1)                   # its bucket (1/s, burst 2) is not the test
        hd = h_admin(k[role]) if role == "admin" and path.startswith("/admin/") else h(k[role])
        r = requests.request(method, keyed.url + path, headers=hd,
                             json=gen if path == "/v1/completions" else None)
        assert r.status_code == want, (role, method, path, r.status_code, r.text)


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
