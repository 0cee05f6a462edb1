#!/bin/sh
# http_bench.sh - the front door under load, measured with wrk.
#
#   bench/http_bench.sh [MODEL] [SECONDS]     (STRATA_BIN overrides the binary)
#
# Starts `strata serve` on a free port, then for concurrency 1, 8 and 32:
#   - requests/s and p50/p99 latency of POST /v1/completions with
#     max_tokens 1 (non-streamed: the answer comes right after the first
#     token, so this latency is the client-side time to first token);
#   - the same on GET /v1/models, which never enters the engine: the front
#     door's own cost per request;
# and finally the server's own per-request time outside the engine
# (strata_http_overhead_seconds sum/count from /metrics). Prints a table
# and writes JSON to http_bench.json.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${STRATA_BIN:-$ROOT/build/bin/strata}
MODEL=${1:-${STRATA_MODEL:-$HOME/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf}}
SECS=${2:-3}
command -v wrk >/dev/null || { echo "http_bench: wrk is not installed" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TMP=$(mktemp -d)
"$BIN" serve -m "$MODEL" --port "$PORT" --slots 32 --audit-no-sync >"$TMP/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$TMP"' EXIT
i=0
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
  i=$((i + 1)); [ $i -gt 200 ] && { echo "server did not start" >&2; cat "$TMP/serve.log"; exit 1; }
  sleep 0.1
done
cat >"$TMP/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt":"The capital of France is","max_tokens":1,"temperature":0}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
sed -e 's/^wrk.method.*$//' -e 's/^wrk.headers.*$//' -e 's/^wrk.body.*$//' "$TMP/post.lua" >"$TMP/get.lua"
printf '%-22s %5s %10s %10s %10s %7s\n' endpoint conc req/s p50_ms p99_ms errors
echo "[" >"$TMP/out.json"
sep=""
for c in 1 8 32; do
  t=$c; [ $t -gt 2 ] && t=2
  for ep in completions models; do
    if [ $ep = completions ]; then url=/v1/completions; lua=post.lua; else url=/v1/models; lua=get.lua; fi
    r=$(wrk -t$t -c$c -d${SECS}s -s "$TMP/$lua" "http://127.0.0.1:$PORT$url" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}')
    set -- $r
    printf '%-22s %5d %10s %10s %10s %7s\n' "$url" "$c" "$1" "$2" "$3" "$(($4 + $5))"
    printf '%s{"endpoint":"%s","concurrency":%d,"rps":%s,"p50_ms":%s,"p99_ms":%s,"errors":%d}' \
      "$sep" "$url" "$c" "$1" "$2" "$3" "$(($4 + $5))" >>"$TMP/out.json"
    sep=","
  done
done
echo "]" >>"$TMP/out.json"
curl -s "http://127.0.0.1:$PORT/metrics" | awk '
  /^strata_http_overhead_seconds_sum/ {s=$2} /^strata_http_overhead_seconds_count/ {n=$2}
  /^strata_time_to_first_token_seconds_sum/ {ts=$2} /^strata_time_to_first_token_seconds_count/ {tn=$2}
  END { printf "server: front-door time outside the engine: %.1f us/request over %d requests\n", s/n*1e6, n;
        printf "server: mean engine time to first token: %.2f ms over %d requests\n", ts/tn*1e3, tn }'
cp "$TMP/out.json" http_bench.json
echo "wrote http_bench.json"
