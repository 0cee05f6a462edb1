"""Helpers for the front door's integration tests (tests/py/test_http_*.py):
start a real `strata serve` on a free port, wait for /health, stop it with
SIGTERM. No tests here."""
import os
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("STRATA_BIN", os.path.join(ROOT, "build", "bin", "strata"))
MODEL = os.environ.get("STRATA_MODEL",
                       os.path.expanduser("~/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf"))


def need_binary():
    if not os.path.exists(BIN):
        pytest.skip(f"strata binary not found at {BIN} (set STRATA_BIN)")
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True)
    if "built without HTTP" in out.stderr:
        pytest.skip("strata was built without the HTTP front door")


def need_model():
    need_binary()
    if not os.path.exists(MODEL):
        pytest.skip(f"model not found at {MODEL} (set STRATA_MODEL)")


def reference(prompt, n, chat=False):
    """`strata generate`'s greedy text for prompt, n tokens: what every door
    must answer (the trailing newline the command prints is not text)."""
    cmd = [BIN, "generate", "-m", MODEL, "-p", prompt, "-n", str(n), "--temp", "0", "-t", "2"]
    if chat:
        cmd.append("--chat")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout[:-1] if out.stdout.endswith("\n") else out.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, tls=False, env=None, model=None):
        if model is None:
            need_model()
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        cmd = [BIN, "serve", "-m", model or MODEL, "--port", str(self.port), "-t", "2", *args]
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=e)
        self._wait_ready()

    def _wait_ready(self):
        import requests
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError(f"server exited {self.proc.returncode}: {out} {err}")
            try:
                r = requests.get(self.url + "/health", timeout=1, verify=False)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become healthy")

    def metrics(self, headers=None):
        import requests
        text = requests.get(self.url + "/metrics", headers=headers, verify=False, timeout=5).text
        vals = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                vals[k] = float(v)
        return vals

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out, err = self.proc.communicate()
        return self.proc.returncode, out, err


def raw(port, data, timeout=5.0, read=True):
    """Sends raw bytes; returns (status, whole answer, closed by server)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    buf = b""
    closed = False
    if read:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                buf += chunk
                if b"\r\n\r\n" in buf:
                    head, _, body = buf.partition(b"\r\n\r\n")
                    cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                    if cl and len(body) >= int(cl[0].split(b":")[1]):
                        # complete; see whether the server closes
                        s.settimeout(1.0)
        except socket.timeout:
            pass
    s.close()
    status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/") else None
    return status, buf, closed
