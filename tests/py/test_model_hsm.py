"""The model key in an HSM (docs/ENCRYPTION.md, "Keys in an HSM (PKCS#11)"),
with SoftHSM2 as the token: an AES-256 wrapping key made on the token with
pkcs11-tool (sensitive, never extractable), the model encrypted with a fresh
file key, that key wrapped by the token into a small file and the clear key
deleted. Then `strata generate --key-pkcs11 URI` gives the plain model's
greedy text, `strata serve --workers 2 --key-pkcs11 URI` serves it over HTTP
with local workers that unwrap the key themselves (and no PIN on their
command lines), and a wrong PIN, a missing key object, a missing token and a
tampered wrapped file are each refused with one clear line and exit code 1.
softhsm2 and opensc are test dependencies: without them this fails."""
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import StderrWatch, run

PROMPT = "The capital of France is"
N = 8
PIN = "739154"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uri(h, pin_file=None, obj="strata-wrap", token="strata", wrapped=None):
    return (f"pkcs11:token={token};object={obj}?module-path={MODULE}"
            f"&pin-source=file:{pin_file or h['pin']}&x-wrapped-key={wrapped or h['wrapped']}")


@pytest.fixture(scope="module")
def hsm(strata, real_model, tmp_path_factory):
    for tool in ("softhsm2-util", "pkcs11-tool"):
        assert shutil.which(tool), f"{tool} missing: install softhsm2 and opensc"
    assert os.path.exists(MODULE), f"{MODULE} missing: install softhsm2"
    d = tmp_path_factory.mktemp("hsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)   # inherited by strata and its workers
    r = run(["softhsm2-util", "--init-token", "--free", "--label", "strata", "--pin", PIN,
             "--so-pin", "5678"])
    assert r.returncode == 0, r.stderr
    r = run(["pkcs11-tool", "--module", MODULE, "--login", "--pin", PIN, "--token-label",
             "strata", "--keygen", "--key-type", "AES:32", "--label", "strata-wrap",
             "--sensitive"])
    assert r.returncode == 0, r.stderr
    assert "never extractable" in r.stdout, r.stdout
    pin = d / "pin"
    pin.write_text(PIN + "\n")
    pin.chmod(0o600)
    key, model = d / "model.key", d / "model.stenc"
    h = {"dir": d, "pin": str(pin), "wrapped": str(d / "model.key.wrapped"), "model": str(model)}
    assert run([strata, "encrypt-model", "--gen-key", str(key)]).returncode == 0
    r = run([strata, "encrypt-model", real_model, str(model), "--key-file", str(key)])
    assert r.returncode == 0, r.stderr
    r = run([strata, "encrypt-model", "--wrap-key", str(key), "--key-pkcs11", uri(h)])
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(h["wrapped"]) == 68
    assert (os.stat(h["wrapped"]).st_mode & 0o777) == 0o600
    # never overwrites: that would orphan the model
    r = run([strata, "encrypt-model", "--wrap-key", str(key), "--key-pkcs11", uri(h)])
    assert r.returncode == 1 and "never overwritten" in r.stderr
    key.unlink()
    yield h
    os.environ.pop("SOFTHSM2_CONF", None)


@pytest.fixture(scope="module")
def want(strata, real_model):
    r = generate(strata, real_model)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    return r.stdout


def generate(strata, model, *extra):
    return run([strata, "generate", "-m", model, "-p", PROMPT, "-n", str(N), "--temp", "0",
                "-t", "2"] + list(extra), timeout=180)


def one_line_error(r, needle):
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert PIN not in r.stderr


def test_generate_with_key_in_token_equals_plain(strata, hsm, want):
    r = generate(strata, hsm["model"], "--key-pkcs11", uri(hsm))
    assert r.returncode == 0, r.stderr
    assert r.stdout == want


def test_wrong_pin_is_refused(strata, hsm, tmp_path):
    bad = tmp_path / "badpin"
    bad.write_text("000000\n")
    r = generate(strata, hsm["model"], "--key-pkcs11", uri(hsm, pin_file=str(bad)))
    one_line_error(r, "PKCS#11: wrong PIN for token 'strata'")


def test_missing_key_object_and_token_are_named(strata, hsm):
    r = generate(strata, hsm["model"], "--key-pkcs11", uri(hsm, obj="no-such-key"))
    one_line_error(r, "no secret key object 'no-such-key' on token 'strata'")
    r = generate(strata, hsm["model"], "--key-pkcs11", uri(hsm, token="other"))
    one_line_error(r, "PKCS#11: no token 'other'")


def test_tampered_wrapped_file_is_refused(strata, hsm, tmp_path):
    data = bytearray(open(hsm["wrapped"], "rb").read())
    data[40] ^= 1
    bad = tmp_path / "bad.wrapped"
    bad.write_bytes(bytes(data))
    r = generate(strata, hsm["model"], "--key-pkcs11", uri(hsm, wrapped=str(bad)))
    one_line_error(r, "wrapped key failed authentication")
    bad.write_bytes(bytes(data[:60]))
    r = generate(strata, hsm["model"], "--key-pkcs11", uri(hsm, wrapped=str(bad)))
    one_line_error(r, "not a strata wrapped key file")


def test_pin_value_and_unloadable_module_are_refused(strata, hsm):
    r = generate(strata, hsm["model"], "--key-pkcs11", uri(hsm) + f"&pin-value={PIN}")
    one_line_error(r, "pin-value is refused")
    r = generate(strata, hsm["model"], "--key-pkcs11",
                 uri(hsm).replace(MODULE, "/nonexistent/libp11.so"))
    one_line_error(r, "PKCS#11: cannot load module /nonexistent/libp11.so")
    r = generate(strata, hsm["model"], "--key-pkcs11", "/not/a/uri")
    assert r.returncode == 2 and "takes a PKCS#11 URI" in r.stderr


def _children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    out.append(f.read())
        except (OSError, ValueError, IndexError):
            pass
    return out


def test_serve_workers_unwrap_in_token_without_pin_on_argv(strata, hsm, want):
    port = _free_port()
    p = subprocess.Popen([strata, "serve", "-m", hsm["model"], "--key-pkcs11", uri(hsm),
                          "--workers", "2", "-t", "1", "--slots", "1", "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = StderrWatch(p)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            assert p.poll() is None, watch.text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as h:
                    if h.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, watch.text()[-3000:]
            time.sleep(0.2)
        kids = [c for c in _children(p.pid) if b"worker" in c]
        assert len(kids) == 2, kids
        for c in kids:
            assert b"pkcs11:" in c and PIN.encode() not in c, c
        body = json.dumps({"prompt": PROMPT, "max_tokens": N, "temperature": 0}).encode()
        rq = urllib.request.Request(url + "/v1/completions", data=body,
                                    headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(rq, timeout=60) as resp:
            got = json.loads(resp.read())["choices"][0]["text"]
        assert got.rstrip("\n") == want.rstrip("\n"), (got, want)
        assert watch.text().count(f"of {hsm['model']} (layers") == 2, watch.text()[-3000:]
        assert PIN not in watch.text()
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
