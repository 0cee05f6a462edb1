#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, fetch the model and
# run the main job: the model served by a local cluster (a coordinator and
# two worker processes, activations over UCX) behind the OpenAI-compatible
# API, asked one chat question over HTTP, then shut down with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
model=$(scripts/fetch-model.sh)

log=$(mktemp)
echo "strata: starting 'strata serve --workers 2' (coordinator + 2 local workers); log: $log"
build/bin/strata serve -m "$model" --workers 2 --port 0 >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
url=
for _ in $(seq 1 600); do
  url=$(sed -n 's|.*serving .* on \(http://[^ ]*\)/ .*|\1|p' "$log" | head -n 1)
  [ -n "$url" ] && break
  if ! kill -0 $pid 2>/dev/null; then cat "$log" >&2; exit 1; fi
  sleep 0.1
done
[ -n "$url" ] || { echo "strata: the server did not come up; see $log" >&2; exit 1; }
id=$(curl -sS --fail "$url/v1/models" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')
echo "strata: asking $url/v1/chat/completions ($id): What is the capital of France?"
curl -sS --fail-with-body "$url/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "'"$id"'", "temperature": 0, "max_tokens": 64,
       "messages": [{"role": "user", "content": "What is the capital of France?"}]}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])'
kill -TERM $pid
wait $pid
trap - EXIT
echo "strata: server drained and stopped"
