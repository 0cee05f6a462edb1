"""Shared fixtures for the integration tests: the strata binary, the real
model, and small generated models. Tests that need something absent skip
with the reason."""
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))


def strata_bin() -> str:
    return os.environ.get("STRATA_BIN", str(ROOT / "build" / "bin" / "strata"))


@pytest.fixture(scope="session")
def strata():
    b = strata_bin()
    if not os.path.exists(b):
        pytest.skip(f"strata binary not built at {b}")
    return b


@pytest.fixture(scope="session")
def real_model():
    p = os.environ.get("STRATA_MODEL",
                       os.path.expanduser("~/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not os.path.exists(p):
        pytest.skip(f"real model not found at {p} (scripts/fetch-model.sh fetches it)")
    return p


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory):
    """Builds small random Llama GGUFs with tests/tools/gen_model.py, cached
    per option set for the session."""
    import gen_model
    cache = {}
    d = tmp_path_factory.mktemp("models")

    def make(**opts):
        key = tuple(sorted(opts.items()))
        if key not in cache:
            path = d / f"m{len(cache)}.gguf"
            gen_model.write_model(str(path), **opts)
            cache[key] = str(path)
        return cache[key]
    return make


def run(args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    return subprocess.run(args, **kw)


class StderrWatch:
    """Collects a process's stderr on a thread so a test can wait for a line."""

    def __init__(self, proc):
        import threading
        self.proc, self.buf, self.lock = proc, [], threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        for line in self.proc.stderr:
            with self.lock:
                self.buf.append(line)

    def text(self):
        with self.lock:
            return "".join(self.buf)

    def wait_for(self, needle, timeout):
        deadline = time.time() + timeout
        while needle not in self.text():
            assert time.time() < deadline and self.proc.poll() is None, self.text()[-3000:]
            time.sleep(0.05)

    def finish(self, timeout):
        out = self.proc.stdout.read()
        self.proc.wait(timeout=timeout)
        self.t.join(timeout=10)
        return out, self.text()
