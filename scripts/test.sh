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
export STRATA_GEMMA3=${STRATA_GEMMA3:-$(scripts/fetch-model.sh gemma3)}

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

echo "== libFuzzer harnesses (clang, ${STRATA_FUZZ_SECONDS:=20} s each)"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSTRATA_FUZZ=ON -DSTRATA_WITH_CUDA=OFF -DSTRATA_BUILD_TESTS=OFF >/dev/null
fuzzers=$(cd fuzz && ls fuzz_*.c | sed 's/\.c$//')
for f in $fuzzers; do
  cmake --build build-fuzz -j"$jobs" --target "$f" >/dev/null
  corpus=fuzz/corpus/${f#fuzz_}
  work=$(mktemp -d)
  [[ -d "$corpus" ]] && cp -r "$corpus"/. "$work"/
  ASAN_OPTIONS=detect_leaks=1 "build-fuzz/fuzz/$f" -max_total_time="$STRATA_FUZZ_SECONDS" \
      -rss_limit_mb=2048 -print_final_stats=0 "$work" 2>&1 | tail -n 2
  rm -rf "$work"
done

echo "== integration tests"
export STRATA_BIN=$PWD/build/bin/strata
export STRATA_ASAN_BIN=$PWD/build-asan/bin/strata
python3 -m pytest -q tests/py "$@"

# The multi-process paths again with the ASan+UBSan binary: a coordinator
# whose worker is killed mid-generation (replay), encrypted models in a
# cluster. A sanitizer report ends that process with a non-zero status: the
# coordinator's fails its test; a worker's reads as a lost worker, which
# fails the encrypted-cluster tests (in the fault test it would be replayed).
echo "== integration tests under ASan+UBSan (cluster faults, encrypted cluster)"
STRATA_BIN=$STRATA_ASAN_BIN python3 -m pytest -q tests/py/test_cluster_faults.py \
  tests/py/test_cluster_crypt.py

# Every architecture's forward (MLA, experts, sliding windows) and its
# cluster split, sanitized.
echo "== architecture references under ASan+UBSan"
STRATA_BIN=$STRATA_ASAN_BIN python3 -m pytest -q tests/py/test_arch_ref.py \
  -k "logits or teacher or quantized or cluster"

# A hostile peer on every port of `serve --workers 2` (front door, control
# plane, UCX's TCP transport), sanitized: every process must survive, answer
# the same greedy text and go back to idle (docs/TRANSPORT.md, threat model).
echo "== hostile network under ASan+UBSan"
STRATA_BIN=$STRATA_ASAN_BIN python3 -m pytest -q tests/py/test_hostile_network.py

# The WebSocket door's hostile frames, close codes, slow readers and drain,
# sanitized (wslay and the takeover of evhttp's connection).
echo "== WebSocket door under ASan+UBSan"
STRATA_BIN=$STRATA_ASAN_BIN python3 -m pytest -q tests/py/test_ws.py -k "close_codes or \
  random_bytes or bad_handshakes or hostile or fragmented or bad_field or slow_reader or \
  heartbeat or disconnect or drain"
