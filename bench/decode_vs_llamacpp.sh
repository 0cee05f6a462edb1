#!/bin/bash
# Decode and prefill of strata next to llama.cpp's llama-bench on the same
# GGUF and thread counts, interleaved, ROUNDS rounds, medians printed as a
# markdown table. llama.cpp is not built by this project: pass the path of a
# llama-bench you built (README says which one the published figures used).
#
#   bench/decode_vs_llamacpp.sh STRATA_BIN LLAMA_BENCH MODEL [ROUNDS]
set -eu
S=$1; LB=$2; M=$3; ROUNDS=${4:-3}
O=$(mktemp -d)
trap 'rm -rf "$O"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for t in 1 2; do
    for b in 16 8; do
      STRATA_ACT_BITS=$b "$S" bench decode -m "$M" --threads $t --prompt-tokens 128 \
        --gen-tokens 128 --reps 5 --json > "$O/s_${b}_${t}_$r.json" 2>/dev/null
    done
    "$LB" -m "$M" -t $t -p 128 -n 128 -r 5 -o json > "$O/l_${t}_$r.json" 2>/dev/null
  done
done
python3 - "$O" <<'PY'
import glob, json, statistics as st, sys
o = sys.argv[1]
med = lambda v: st.median(v)
print("| threads | engine | prefill tokens/s | decode tokens/s | read bandwidth | decode vs bandwidth |")
print("|---:|---|---:|---:|---:|---:|")
for t in (1, 2):
    for b in (16, 8):
        d = [json.load(open(f)) for f in glob.glob(f"{o}/s_{b}_{t}_*.json")]
        print(f"| {t} | strata, {b}-bit activations | {med([x['prefill_tokens_per_s'] for x in d]):.0f} | "
              f"{med([x['decode_tokens_per_s'] for x in d]):.1f} | "
              f"{med([x['read_bandwidth_gbps'] for x in d]):.2f} GB/s | "
              f"{med([x['bandwidth_fraction'] for x in d]):.2f} |")
    l = [json.load(open(f)) for f in glob.glob(f"{o}/l_{t}_*.json")]
    pp = med([[x["avg_ts"] for x in r if x["n_prompt"] > 0][0] for r in l])
    tg = med([[x["avg_ts"] for x in r if x["n_gen"] > 0][0] for r in l])
    print(f"| {t} | llama.cpp | {pp:.0f} | {tg:.1f} | | |")
PY
