#!/usr/bin/env bash
# Quick start, step 2: every test. Installs test dependencies, builds with
# warnings as errors, runs the unit tests (ctest), the unit tests again under
# ASan+UBSan, the corpus replays of the fuzz harnesses, and the integration
# tests (pytest) that start real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/install-deps.sh --test
export STRATA_MODEL=${STRATA_MODEL:-$(scripts/fetch-model.sh)}

echo "== build (release, -Werror)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_WERROR=ON >/dev/null
cmake --build build -j"$jobs"

echo "== unit tests"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== unit tests under ASan+UBSan"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSTRATA_WERROR=ON \
      -DSTRATA_SANITIZE='address;undefined' >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -L unit

echo "== integration tests"
export STRATA_BIN=$PWD/build/bin/strata
export STRATA_ASAN_BIN=$PWD/build-asan/bin/strata
python3 -m pytest -q tests/py "$@"
