#!/bin/bash
# Decode and prefill of strata next to llama.cpp's llama-bench at real model
# sizes: the synthetic GGUFs of bench/synth_gguf.py (same file for both), 1
# and 2 threads, ROUNDS interleaved rounds (per round: every model, every
# thread count, strata then llama.cpp), medians printed as a markdown table.
# strata's read bandwidth is measured by `strata bench decode` itself over a
# buffer the size of the weights with the same threads; "of bandwidth" is
# decode tokens/s x bytes per token / that bandwidth, for both engines.
#
#   bench/size_vs_llamacpp.sh STRATA_BIN LLAMA_BENCH [ROUNDS] [NAME ...]
#
# NAME as in synth_gguf.py (default: the three types of qwen2-0.5b and
# qwen2-1.5b, llama-1b-q4_0, qwen2-3b-q4_0); missing files are written
# first. P, G, R (environment) set the prompt and generated tokens and the
# repetitions inside each run (default 64, 32, 3).
set -eu
S=$1; LB=$2; ROUNDS=${3:-3}; shift 3 2>/dev/null || shift $#
NAMES=${*:-qwen2-0.5b-q4_0 qwen2-0.5b-q4_k qwen2-0.5b-q8_0 qwen2-1.5b-q4_0 qwen2-1.5b-q4_k qwen2-1.5b-q8_0 llama-1b-q4_0 qwen2-3b-q4_0}
P=${P:-64}; G=${G:-32}; R=${R:-3}
DIR=${STRATA_CACHE:-$HOME/.cache/strata}/synth
python3 "$(dirname "$0")/synth_gguf.py" $NAMES >&2
O=$(mktemp -d)
trap 'rm -rf "$O"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for n in $NAMES; do
    for t in 1 2; do
      echo "round $r $n t=$t $(date -u +%H:%M:%S)" >&2
      "$S" bench decode -m "$DIR/$n.gguf" --threads $t --prompt-tokens $P --gen-tokens $G \
        --reps $R --json > "$O/s_${n}_${t}_$r.json" 2>/dev/null
      "$LB" -m "$DIR/$n.gguf" -t $t -p $P -n $G -r $R -o json > "$O/l_${n}_${t}_$r.json" 2>/dev/null
    done
  done
done
python3 - "$O" $NAMES <<'PY'
import glob, json, statistics as st, sys
o, names = sys.argv[1], sys.argv[2:]
med = st.median
print("| model | MB/token | threads | strata prefill | llama.cpp prefill | ratio | strata decode | "
      "llama.cpp decode | ratio | read bandwidth | strata of bandwidth | llama.cpp of bandwidth |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for n in names:
    for t in (1, 2):
        s = [json.load(open(f)) for f in glob.glob(f"{o}/s_{n}_{t}_*.json")]
        l = [json.load(open(f)) for f in glob.glob(f"{o}/l_{n}_{t}_*.json")]
        bpt = s[0]["bytes_per_token"]
        sp, sd = med([x["prefill_tokens_per_s"] for x in s]), med([x["decode_tokens_per_s"] for x in s])
        bw = med([x["read_bandwidth_gbps"] for x in s])
        lp = med([[x["avg_ts"] for x in r if x["n_prompt"] > 0][0] for r in l])
        ld = med([[x["avg_ts"] for x in r if x["n_gen"] > 0][0] for r in l])
        print(f"| {n} | {bpt / 1e6:.0f} | {t} | {sp:.1f} | {lp:.1f} | {sp / lp:.2f} | {sd:.2f} | "
              f"{ld:.2f} | {sd / ld:.2f} | {bw:.2f} GB/s | {med([x['bandwidth_fraction'] for x in s]):.2f} | "
              f"{ld * bpt / (bw * 1e9):.2f} |")
PY
