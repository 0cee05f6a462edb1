#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, fetch the model and
# run the main job (a chat answer from the model on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
model=$(scripts/fetch-model.sh)
echo "strata: asking the model: What is the capital of France?"
build/bin/strata generate -m "$model" --chat --temp 0 -n 64 -p "What is the capital of France?"
