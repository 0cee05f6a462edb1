"""The chat page at / in a real browser: Debian's headless Chromium, driven
over the DevTools protocol, loads the page from `strata serve --workers 2`,
asks a question, and the test reads the streamed answer from the page. The
answer must equal `strata generate --chat`'s greedy text. The Stop button
cancels a running answer. A screenshot of each page is kept as an artifact
(build/test-artifacts/, or $STRATA_ARTIFACTS)."""
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from test_http_common import BIN, MODEL, ROOT, Server, need_model, reference

websockets_sync = pytest.importorskip("websockets.sync.client")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = os.environ.get("STRATA_ARTIFACTS", os.path.join(ROOT, "build", "test-artifacts"))
QUESTION = "What is the capital of France?"
N = 24


class Browser:
    """One headless Chromium and a DevTools session on its first page."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="strata-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--window-size=1000,800", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.time() + 60
        for line in self.proc.stderr:
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
                break
            if time.time() > deadline:
                break
        if not port:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port")
        pages = []
        while time.time() < deadline and not pages:
            pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                     if t["type"] == "page"]
            time.sleep(0.1)
        self._cm = websockets_sync.connect(pages[0]["webSocketDebuggerUrl"], max_size=None,
                                           open_timeout=30)
        self.ws = self._cm.__enter__()
        self.ids = itertools.count(1)

    def call(self, method, **params):
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv(timeout=60))
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expr}")

    def screenshot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path = os.path.join(ARTIFACTS, name)
        with open(path, "wb") as f:
            f.write(png)
        return path, png

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    need_model()
    srv = Server("--workers", "2")
    yield srv
    srv.stop()


@pytest.fixture
def browser():
    if not CHROMIUM:
        pytest.skip("chromium is not installed (scripts/install-deps.sh --test)")
    b = Browser()
    yield b
    b.close()


def open_page(b, srv, temperature, max_tokens):
    b.call("Page.enable")
    b.call("Page.navigate", url=srv.url + "/")
    b.wait("document.readyState === 'complete' && "
           "document.getElementById('status').textContent === 'connected'")
    model = b.wait("document.getElementById('model').textContent !== '…' && "
                   "document.getElementById('model').textContent")
    b.js(f"document.getElementById('temperature').value = '{temperature}';"
         f"document.getElementById('max_tokens').value = '{max_tokens}'; true")
    return model


def ask(b, question):
    b.js(f"document.getElementById('input').value = {json.dumps(question)};"
         "document.getElementById('send').click(); true")


def test_chat_page_answers_like_generate(cluster, browser):
    want = reference(QUESTION, N, chat=True)
    model = open_page(browser, cluster, 0, N)
    assert model == requests.get(cluster.url + "/v1/models").json()["data"][0]["id"]
    ask(browser, QUESTION)
    done = browser.wait("(() => { const a = document.querySelectorAll('.msg.assistant');"
                        " return a.length && a[a.length - 1].dataset.done; })()")
    got = browser.js("(() => { const a = document.querySelectorAll('.msg.assistant');"
                     " return a[a.length - 1].textContent; })()")
    user = browser.js("document.querySelector('.msg.user').textContent")
    tps = browser.js("document.getElementById('tps').textContent")
    path, png = browser.screenshot("chat-page.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000, path
    assert user == QUESTION
    assert done in ("stop", "length"), done
    assert got == want, f"page: {got!r}\ngenerate --chat: {want!r}"
    assert float(tps) > 0, tps
    # The page asked over /ws: the server counted a /ws generation.
    m = cluster.metrics()
    assert any(k.startswith("strata_http_requests_total") and 'endpoint="/ws"' in k and v > 0
               for k, v in m.items()), [k for k in m if "requests_total" in k]


def test_stop_button_cancels(cluster, browser):
    before = cluster.metrics().get("strata_requests_cancelled_total", 0)
    open_page(browser, cluster, 0.8, 2000)
    ask(browser, "Write a very long story about a lighthouse keeper and the sea.")
    browser.wait("(() => { const a = document.querySelectorAll('.msg.assistant');"
                 " return a.length && a[a.length - 1].textContent.length > 20; })()")
    assert browser.js("!document.getElementById('stop').disabled")
    browser.js("document.getElementById('stop').click(); true")
    done = browser.wait("(() => { const a = document.querySelectorAll('.msg.assistant');"
                        " return a[a.length - 1].dataset.done; })()", timeout=30)
    browser.screenshot("chat-page-stopped.png")
    assert done == "cancelled"
    assert browser.js("!document.getElementById('send').disabled")
    deadline = time.time() + 10
    while cluster.metrics().get("strata_requests_cancelled_total", 0) <= before:
        assert time.time() < deadline, "the server did not count the cancelled generation"
        time.sleep(0.2)
