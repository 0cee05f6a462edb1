#!/bin/bash
# MoE decode cost against the number of experts a token uses: one
# DeepSeek-V3-shaped synthetic model (bench/gen_moe.py, the same random
# weights) written with expert_used_count 2, 4 and 8, each run by
# `strata bench decode` at 1 and 2 threads, ROUNDS rounds interleaved,
# medians printed as a markdown table. Work per token proportional to the
# active experts shows as a steady fraction of the read bandwidth while
# tokens/s falls with the bytes per token.
#
#   bench/moe_decode.sh STRATA_BIN [ROUNDS]      (models cached in $STRATA_CACHE/bench)
set -eu
S=$1; ROUNDS=${2:-3}
D=${STRATA_CACHE:-$HOME/.cache/strata}/bench
mkdir -p "$D"
here=$(cd "$(dirname "$0")" && pwd)
for k in 2 4 8; do
  f=$D/v3-shaped-k$k.gguf
  [[ -s $f && $f -nt $here/gen_moe.py ]] || python3 "$here/gen_moe.py" "$f" --experts-used $k >/dev/null
done
O=$(mktemp -d)
trap 'rm -rf "$O"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for t in 1 2; do
    for k in 2 4 8; do
      "$S" bench decode -m "$D/v3-shaped-k$k.gguf" --threads $t --prompt-tokens 128 \
        --gen-tokens 128 --reps 3 --ctx 512 --json > "$O/s_${k}_${t}_$r.json"
    done
  done
done
python3 - "$O" <<'PY'
import glob, json, statistics as st, sys
o = sys.argv[1]
print("| threads | experts used | MB read per token | prefill tokens/s | decode tokens/s | decode x bytes (GB/s) | of read bandwidth |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for t in (1, 2):
    for k in (2, 4, 8):
        d = [json.load(open(f)) for f in glob.glob(f"{o}/s_{k}_{t}_*.json")]
        dec = st.median([x["decode_tokens_per_s"] for x in d])
        b = d[0]["bytes_per_token"]
        print(f"| {t} | {k} of {d[0]['n_expert']} | {b / 1e6:.1f} | "
              f"{st.median([x['prefill_tokens_per_s'] for x in d]):.0f} | {dec:.0f} | "
              f"{dec * b / 1e9:.1f} | {st.median([x['bandwidth_fraction'] for x in d]):.2f} |")
print(f"\nisa: {d[0]['isa']}")
PY
