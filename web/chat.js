// The chat page: a conversation streamed over /ws (docs/HTTP.md, "WebSocket").
// Plain script, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];          // {role, content} of the conversation so far
let ws = null;
let running = null;          // {id, node, text, t0, tokens}
let nextId = 1;

function status(s) { $("status").textContent = s; }

function add(role, text) {
  const d = document.createElement("div");
  d.className = "msg " + role;
  d.textContent = text;
  $("log").appendChild(d);
  d.scrollIntoView({block: "end"});
  return d;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
}

function connect() {
  if (ws) ws.close();
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  // A browser cannot set an Authorization header on a WebSocket: the key
  // goes as a second subprotocol, which the server never echoes.
  const key = $("key").value.trim();
  const protocols = ["strata.v1"];
  if (key) protocols.push("bearer." + key);
  ws = new WebSocket(url, protocols);
  status("connecting…");
  ws.onopen = () => status("connected");
  ws.onclose = (e) => {
    status("closed" + (e.code ? " (" + e.code + (e.reason ? ": " + e.reason : "") + ")" : ""));
    if (running) finish(null);
  };
  ws.onerror = () => status("connection error");
  ws.onmessage = (e) => onMessage(JSON.parse(e.data));
}

function onMessage(m) {
  if (m.hello) { $("model").textContent = m.model; return; }
  if (!running || m.id !== running.id) return;
  if (m.text !== undefined) {
    running.text += m.text;
    running.tokens++;
    running.node.textContent = running.text;
    const s = (performance.now() - running.t0) / 1000;
    if (s > 0) $("tps").textContent = (running.tokens / s).toFixed(1);
  }
  if (m.done) finish(m);
}

function finish(m) {
  const r = running;
  running = null;
  busy(false);
  if (m && m.error) {
    add("error", m.error.message);
  } else if (m && m.usage && m.timing && m.timing.total_ms > m.timing.ttft_ms) {
    const gen = m.usage.completion_tokens - 1;
    if (gen > 0)
      $("tps").textContent = (gen / ((m.timing.total_ms - m.timing.ttft_ms) / 1000)).toFixed(1);
  }
  if (r) {
    history.push({role: "assistant", content: r.text});
    r.node.dataset.done = m ? (m.finish_reason || (m.error ? "error" : "")) : "closed";
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("input").value.trim();
  if (!q || running || !ws || ws.readyState !== WebSocket.OPEN) return;
  $("input").value = "";
  add("user", q);
  history.push({role: "user", content: q});
  const id = "c" + nextId++;
  running = {id, node: add("assistant", ""), text: "", t0: performance.now(), tokens: 0};
  busy(true);
  ws.send(JSON.stringify({
    id,
    messages: history,
    temperature: Number($("temperature").value),
    max_tokens: Number($("max_tokens").value),
  }));
});

$("stop").addEventListener("click", () => {
  if (running && ws) ws.send(JSON.stringify({cancel: running.id}));
});

$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});

$("reconnect").addEventListener("click", connect);
connect();
