#!/bin/bash
# The cluster with a model that does not fit one worker: every worker
# advertises a memory budget below what the model needs (`strata worker
# --mem`, `strata bench cluster --worker-mem`), so the planner must split it.
# For each model and each worker count N it
#   1. checks the plan: the same budget on N-1 workers is refused by the
#      planner ("model does not fit", the missing MiB named), and N workers
#      get a plan (the layer ranges are in the table);
#   2. measures single-stream decode and aggregate decode (several streams)
#      through the N workers over shared memory (all local) and over TCP
#      between network namespaces (bench/cluster_netns.sh, needs root),
#      against one process holding the whole model, measured in the same
#      `strata bench cluster` call;
#   3. prints markdown tables: medians over ROUNDS interleaved rounds (every
#      configuration once per round), and the per-hop transport time against
#      the per-token compute of the stages.
#
#   bench/cluster_scale.sh [STRATA_BIN] [MODEL...]
#
# Environment (defaults in brackets):
#   ROUNDS [3]        interleaved rounds; every figure is the median
#   WORKERS ["2 3"]   worker counts
#   TOKENS [48]       decoded tokens per stream
#   STREAMS [1,4]     streams for the aggregate figure (the last is reported)
#   CTX [512]         context per sequence (the KV cache the planner reserves:
#                     CTX x max(STREAMS) tokens)
#   SLACK [1.15]      budget per worker = SLACK x (what the whole model needs
#                     over N stages) / N
#   NETNS [1]         0: skip the TCP runs in network namespaces
#   OUT [mktemp -d]   where the raw JSON and logs go (kept)
# Models default to SmolLM2-135M and the synthetic Qwen2 0.5B and 1.5B Q4_0
# in ~/.cache/strata/synth when present.
set -eu
BIN=${1:-build/bin/strata}
shift $(( $# < 1 ? $# : 1 ))
C=${STRATA_CACHE:-$HOME/.cache/strata}
if [ $# -gt 0 ]; then
    MODELS=("$@")
else
    MODELS=()
    for m in "$C/SmolLM2-135M-Instruct.Q4_1.gguf" "$C/synth/qwen2-0.5b-q4_0.gguf" \
             "$C/synth/qwen2-1.5b-q4_0.gguf"; do
        [ -f "$m" ] && MODELS+=("$m")
    done
fi
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-"2 3"}
TOKENS=${TOKENS:-48}
STREAMS=${STREAMS:-1,4}
CTX=${CTX:-512}
SLACK=${SLACK:-1.15}
NETNS=${NETNS:-1}
OUT=${OUT:-$(mktemp -d /tmp/cluster_scale.XXXXXX)}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
[ "$NETNS" = 1 ] && [ "$(id -u)" != 0 ] && { echo "# not root: skipping the netns (TCP) runs"; NETNS=0; }
SLOTS=$(tr ',' '\n' <<<"$STREAMS" | sort -n | tail -1)

# Per-worker budget for N stages, from `strata info --json`, counted as the
# planner does (coordinator/cluster_plan.c, topology/plan.c): layer weights,
# the embedding on the first stage and the head on the last (a tied head is
# one tensor: held once by a single stage, once by each end otherwise), the
# KV cache for CTX x SLOTS tokens, activations per stage.
budget() {  # MODEL N -> "bytes per worker for N workers" "bytes one stage needs"
    "$BIN" info "$1" --json | python3 -c '
import json, sys
d = json.load(sys.stdin); h = d["hparams"]
n, ctx, slots, slack = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
kv = d["kv_bytes_per_token"] * ctx * slots
act = 4 * (6 * h["n_embd"] + 2 * h["n_ff"] + h["n_vocab"]) * slots
embd = d["tensor_bytes"] - d["layer_bytes"] - 4 * h["n_embd"] if d["tied_output"] else 0
one = d["tensor_bytes"] + kv + act                   # one stage
alln = d["tensor_bytes"] + (embd if n > 1 else 0) + kv + n * act
print(int(alln / n * slack), one)' "$2" "$CTX" "$SLOTS" "$SLACK"
}

echo "# cluster_scale: $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# models: ${MODELS[*]}"
echo "# rounds $ROUNDS, workers $WORKERS, tokens $TOKENS, streams $STREAMS, ctx $CTX, slack $SLACK, netns $NETNS; raw results in $OUT"

# 1. Plans: refused on N-1 workers, accepted on N.
for m in "${MODELS[@]}"; do
    b=$(basename "$m" .gguf)
    for n in $WORKERS; do
        read -r mem one < <(budget "$m" "$n")
        echo "$mem" > "$OUT/$b.n$n.mem"
        echo "$one" > "$OUT/$b.one"
        for k in $((n - 1)) "$n"; do
            [ "$k" -ge 1 ] || continue
            set +e
            timeout 300 "$BIN" coordinator -m "$m" --local "$k" --worker-mem "$mem" --prefix-cache 0 --ctx "$CTX" \
                --slots "$SLOTS" -t 1 -p Hello -n 2 --ignore-eos >/dev/null 2>"$OUT/$b.n$n.k$k.plan.log"
            echo $? > "$OUT/$b.n$n.k$k.plan.rc"
            set -e
        done
    done
done

# 2. Speed, interleaved: every (model, N, transport) once per round.
for r in $(seq 1 "$ROUNDS"); do
    for m in "${MODELS[@]}"; do
        b=$(basename "$m" .gguf)
        for n in $WORKERS; do
            mem=$(cat "$OUT/$b.n$n.mem")
            f="$OUT/$b.n$n.shm.r$r"
            echo "# round $r: $b, $n workers, shared memory, --worker-mem $mem ($(cut -d' ' -f1 /proc/loadavg))"
            "$BIN" bench cluster -m "$m" --stages "$n" --agg-stages "$n" --streams "$STREAMS" \
                --worker-mem "$mem" -t 1 --tokens "$TOKENS" --ctx "$CTX" --reps 1 --json \
                >"$f.json" 2>"$f.log" || echo "#   failed (see $f.log)"
            if [ "$NETNS" = 1 ]; then
                f="$OUT/$b.n$n.tcp.r$r"
                echo "# round $r: $b, $n workers, netns TCP, --mem $mem ($(cut -d' ' -f1 /proc/loadavg))"
                WORKER_MEM=$mem "$HERE/cluster_netns.sh" "$BIN" "$m" "$n" --streams "$STREAMS" \
                    -t 1 --tokens "$TOKENS" --ctx "$CTX" --reps 1 --json \
                    >"$f.json" 2>"$f.log" || echo "#   failed (see $f.log)"
            fi
        done
    done
done

# 3. Tables.
python3 - "$OUT" "$ROUNDS" "$STREAMS" "$WORKERS" "${MODELS[@]}" <<'EOF'
import json, os, re, statistics, sys
out, rounds, streams, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split()
models = sys.argv[5:]
S = int(streams.split(",")[-1])
med = lambda v: statistics.median(v) if v else float("nan")

def load(path):
    try:
        txt = "".join(l for l in open(path) if not l.startswith("#"))
        return json.loads(txt)
    except (OSError, ValueError):
        return None

def plan_line(b, n, k):
    rc = open(f"{out}/{b}.n{n}.k{k}.plan.rc").read().strip()
    log = open(f"{out}/{b}.n{n}.k{k}.plan.log").read()
    if rc == "0":
        m = re.findall(r"plan epoch 1: (.*)", log)
        return "plan " + (re.sub(r"local-(\d+)", r"w\1", m[0]).strip() if m else "?")
    m = re.search(r"needs ([0-9.]+) MiB .* on \d+ workers with ([0-9.]+) MiB", log)
    return f"refused: needs {m.group(1)} MiB, has {m.group(2)} MiB" if m else f"failed (rc {rc})"

print("\n**Plans** (the budget is what each worker advertises to the planner; "
      "\"1 worker\" needs is what one stage would hold)\n")
print("| model | file MB | one stage needs | workers | budget per worker | N-1 workers | N workers |")
print("|---|---:|---:|---:|---:|---|---|")
for m in models:
    b = os.path.basename(m)[:-5]
    one = int(open(f"{out}/{b}.one").read())
    for n in workers:
        mem = int(open(f"{out}/{b}.n{n}.mem").read())
        print(f"| {b} | {os.path.getsize(m) / 1e6:.0f} | {one / 2**20:.0f} MiB | {n} | "
              f"{mem / 2**20:.0f} MiB | {plan_line(b, n, int(n) - 1)} | {plan_line(b, n, n)} |")

print(f"\n**Decode** (tokens/s; medians of {rounds} interleaved rounds; \"one process\" is the whole "
      f"model in one process, measured in the same call; aggregate: {S} streams)\n")
print("| model | workers | transport | split | one process | cluster single stream | vs one | "
      f"p50 ms/token: one / cluster | one process, {S} streams | cluster, {S} streams | vs one |")
print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
hop_rows = []
for m in models:
    b = os.path.basename(m)[:-5]
    for n in workers:
        for tr in ("shm", "tcp"):
            runs = [load(f"{out}/{b}.n{n}.{tr}.r{r}.json") for r in range(1, rounds + 1)]
            runs = [j for j in runs if j and j.get("single_stream") and j.get("aggregate")]
            if not runs:
                continue
            one = med([j["one_process"]["decode_tok_s"] for j in runs])
            ss = [j["single_stream"][-1] for j in runs]
            cl = med([s["decode_tok_s"] for s in ss])
            p1 = med([j["one_process"]["p50_ms"] for j in runs])
            pc = med([s["p50_ms"] for s in ss])
            ag = [a for j in runs for a in j["aggregate"] if a["streams"] == S]
            ag1, agc = med([a["one_process_tok_s"] for a in ag]), med([a["aggregate_tok_s"] for a in ag])
            split = "/".join(str(st["last_layer"] - st["first_layer"]) for st in ss[-1]["stage"])
            name = "shared memory" if tr == "shm" else "TCP, netns"
            print(f"| {b} | {n} | {name} | {split} | {one:.1f} | {cl:.1f} | {cl / one:.2f} | "
                  f"{p1:.2f} / {pc:.2f} | {ag1:.1f} | {agc:.1f} | {agc / ag1:.2f} |")
            comp = med([sum(st["compute_us"] for st in s["stage"]) for s in ss])
            hops = med([sum(st["hop_in_us"] for st in s["stage"]) + s["hop_out_us"] for s in ss])
            rtt = med([s["round_trip_us"] for s in ss])
            per_tok = p1 * 1e3
            hop_rows.append((b, n, name, per_tok, comp, hops, rtt))

print("\n**Hop cost against compute** (single stream, per token; medians; hops: coordinator -> "
      "stage 0 -> ... -> coordinator, from the in-frame timestamps)\n")
print("| model | workers | transport | one process p50 ms/token | stages' compute ms | "
      "hops total us | per hop us | hops / compute |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for b, n, name, per_tok, comp, hops, rtt in hop_rows:
    print(f"| {b} | {n} | {name} | {per_tok / 1e3:.2f} | {comp / 1e3:.2f} | {hops:.0f} | "
          f"{hops / (int(n) + 1):.0f} | {100 * hops / comp:.1f} % |")
EOF
