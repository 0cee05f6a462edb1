#!/bin/bash
# Decode speed and time to first token at context depth, strata next to
# llama.cpp's llama-bench on the same GGUF and threads (1 and 2), ROUNDS
# interleaved rounds, medians as a markdown table.
#
#   bench/depth_vs_llamacpp.sh STRATA_BIN LLAMA_BENCH MODEL [ROUNDS]
#
# Both engines are measured the same way at each depth D:
#   time to first token = D / (prefill tokens/s of a D-token prompt from an
#     empty cache): the prompt's forward pass yields the first token's logits.
#     strata: `bench decode --prompt-tokens D` (one batch of D; the figure is
#     prefill_tokens_per_s), llama.cpp: `llama-bench -p D -n 0` (its default
#     batches of 2048 / micro-batches of 512).
#   decode tokens/s = G tokens generated at positions D..D+G-1: strata's
#     decode after that prompt, llama.cpp's `llama-bench -p 0 -n G -d D`.
# DEPTHS (environment; default "128 1024 4096 8000": 8000 + G stays inside
# SmolLM2's 8192-token context), G (default 32), CTX (default 8192), and
# KV (strata's --kv-type; default f16, which is also llama.cpp's default).
set -eu
S=$1; LB=$2; M=$3; ROUNDS=${4:-3}
DEPTHS=${DEPTHS:-128 1024 4096 8000}; G=${G:-32}; CTX=${CTX:-8192}; KV=${KV:-f16}
O=$(mktemp -d)
trap 'rm -rf "$O"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for t in 1 2; do
    for d in $DEPTHS; do
      echo "round $r t=$t depth $d $(date -u +%H:%M:%S)" >&2
      "$S" bench decode -m "$M" --threads $t --ctx $CTX --prompt-tokens $d --gen-tokens $G \
        --reps 1 --kv-type $KV --json > "$O/s_${t}_${d}_$r.json" 2>/dev/null
      "$LB" -m "$M" -t $t -p $d -n 0 -r 1 -o json > "$O/lp_${t}_${d}_$r.json" 2>/dev/null
      "$LB" -m "$M" -t $t -p 0 -n $G -d $d -r 1 -o json > "$O/lg_${t}_${d}_$r.json" 2>/dev/null
    done
  done
done
python3 - "$O" $DEPTHS <<'PY'
import glob, json, statistics as st, sys
o, depths = sys.argv[1], [int(x) for x in sys.argv[2:]]
med = st.median
print("| threads | depth | strata decode tokens/s | llama.cpp decode tokens/s | ratio | "
      "strata TTFT | llama.cpp TTFT | ratio (llama.cpp / strata) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in (1, 2):
    for d in depths:
        s = [json.load(open(f)) for f in glob.glob(f"{o}/s_{t}_{d}_*.json")]
        lp = [json.load(open(f))[0]["avg_ts"] for f in glob.glob(f"{o}/lp_{t}_{d}_*.json")]
        lg = [json.load(open(f))[0]["avg_ts"] for f in glob.glob(f"{o}/lg_{t}_{d}_*.json")]
        sd, ld = med([x["decode_tokens_per_s"] for x in s]), med(lg)
        st_ = med([d / x["prefill_tokens_per_s"] for x in s])
        lt = med([d / x for x in lp])
        print(f"| {t} | {d} | {sd:.1f} | {ld:.1f} | {sd / ld:.2f} | {st_ * 1e3:.0f} ms | "
              f"{lt * 1e3:.0f} ms | {lt / st_:.2f} |")
PY
