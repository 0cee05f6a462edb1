#!/usr/bin/env bash
# bench/gpu/check.sh - build, check and benchmark the CUDA backend on a GPU
# machine that has only CUDA, CMake and ninja (no UCX, hwloc, MPI, OpenSSL,
# libevent, Python packages or network). Budget: under 8 minutes on one H200.
#
#   bench/gpu/check.sh                  # all shapes
#   SHAPES="small 1b" bench/gpu/check.sh
#   SHAPES= QMODELS="8b:q4_k" bench/gpu/check.sh   # only the quantized 8B
#   STRATA_MODEL=/path/model.gguf bench/gpu/check.sh   # also a real model
#   SHAPES= QMODELS= bench/gpu/check.sh                # unit tests + arch models only
#
# Steps: configure with every optional library off and CUDA on; build the
# strata binary, the strata-gpu tool and the CUDA unit tests; run those
# tests (every op against the CPU backend, quantized weights in both
# device forms; the host-side block math test); measure the device's copy
# bandwidth and a large cuBLAS bf16 GEMM; for each shape (SmolLM2-135M,
# Llama-3.2-1B, Llama-3-8B, random bf16 weights written here) compare CUDA
# with CPU logits and greedy tokens, then benchmark prefill and decode at
# batch 1/8/64; the same for each QMODELS entry (shape:type, random
# quantized blocks, read in place by the quantized mat-vec kernel) and for
# $STRATA_MODEL when it names a file. Then the architectures beyond Llama
# (ARCH_MODELS: tiny random Gemma 3 and DeepSeek V3 / V2-Lite models from
# tests/tools/arch_ref.py): CUDA against CPU logits and greedy tokens, no
# bench. The machine has no network and maybe no torch, so their GGUF files
# are looked for in $ARCH_REF_DIR, $ROOT/.cache/arch-ref (an ignored path a
# session can carry over) and ${STRATA_CACHE:-~/.cache/strata}/arch-ref;
# when some are missing and python3 has torch, transformers and gguf they
# are generated; otherwise each missing one is reported as skipped, not
# failed. The results table is printed last.
# Exit status 1 when any check failed (the table is still printed).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-gpu}
WORK=${WORK:-/tmp/strata-gpu}
SHAPES=${SHAPES-"small 1b 8b"}
# shape:type; K types need rows of 256 (not the small shape's 576)
QMODELS=${QMODELS-"small:q4_0 1b:q4_k 8b:q4_k"}
# arch_ref.py cases (file stems): F32 weights, and one Q8_0 copy
ARCH_MODELS=${ARCH_MODELS-"gemma3 deepseek3 deepseek3.q8_0 deepseek2lite"}
JOBS=${JOBS:-$(nproc)}
T0=$(date +%s)
FAILED=0
SUMMARY=()
ROWS=()

mkdir -p "$WORK"
log() { echo "[check +$(( $(date +%s) - T0 ))s] $*"; }
fail() { FAILED=1; SUMMARY+=("FAIL $*"); log "FAIL $*"; }
pass() { SUMMARY+=("ok   $*"); log "ok $*"; }
skip() { SUMMARY+=("skip $*"); log "skip $*"; }

command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH

# The top level requires pkg-config even when every package it would look
# for is switched off; a machine without it gets a stand-in that knows no
# package.
PC_ARGS=()
if ! command -v pkg-config >/dev/null; then
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\ncase "$1" in --version) echo 0.29.2; exit 0;; esac\nexit 1\n' \
        > "$WORK/bin/pkg-config"
    chmod +x "$WORK/bin/pkg-config"
    PC_ARGS=(-DPKG_CONFIG_EXECUTABLE="$WORK/bin/pkg-config")
fi

log "configure ($BUILD)"
if ! cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DSTRATA_WITH_UCX=OFF -DSTRATA_WITH_HWLOC=OFF -DSTRATA_WITH_MPI=OFF \
        -DSTRATA_WITH_OPENSSL=OFF -DSTRATA_WITH_HTTP=OFF -DSTRATA_WITH_CUDA=ON \
        "${PC_ARGS[@]}" > "$WORK/cmake.log" 2>&1; then
    tail -30 "$WORK/cmake.log"; echo "check: configure failed"; exit 1
fi
log "build (-j$JOBS)"
if ! ninja -C "$BUILD" -j "$JOBS" strata strata-gpu test_cuda_registry test_cuda_ops test_cuda_qblock \
        test_cuda_ext \
        > "$WORK/build.log" 2>&1; then
    grep -E "error|FAILED" "$WORK/build.log" | head -30; echo "check: build failed"; exit 1
fi
BIN=$BUILD/bin

log "unit tests"
for t in kernels/test_cuda_registry kernels/test_cuda_ops cuda/test_cuda_qblock cuda/test_cuda_ext; do
    if timeout 120 "$BUILD/tests/$t" > "$WORK/${t#*/}.log" 2>&1; then
        t=${t#*/}
        grep -q "\[ SKIP \]" "$WORK/$t.log" && grep -B1 "SKIP" "$WORK/$t.log" | head -4
        pass "$t: $(tail -1 "$WORK/$t.log")"
    else
        t=${t#*/}
        grep -E "check failed|required|FAIL" "$WORK/$t.log" | head -20
        fail "$t: $(tail -1 "$WORK/$t.log")"
    fi
done

log "roofline"
if ! RL=$(timeout 60 "$BIN/strata-gpu" roofline); then
    echo "check: roofline probe failed"; exit 1
fi
COPY=$(sed -n 's/.*copy_gbps=\([0-9.]*\).*/\1/p' <<< "$RL")
GEMM=$(sed -n 's/.*gemm_tflops=\([0-9.]*\).*/\1/p' <<< "$RL")
log "copy bandwidth $COPY GB/s (read + write), cuBLAS bf16 GEMM 8192^3 $GEMM TFLOP/s"

# shape: prompt tokens for the comparison, greedy steps, extra flags
declare -A CMP=([small]="64 24 --require-greedy" [1b]="32 8" [8b]="12 3" [real]="64 16")
# check_model NAME FILE SHAPE: compare with the CPU backend, then one bench row
check_model() {
    local name=$1 model=$2 n g extra out row
    read -r n g extra <<< "${CMP[$3]}"
    # Quantized weights: the CPU backend rounds activations to ~15 bits
    # for its integer kernels, the CUDA mat-vec keeps f32, so the greedy
    # continuation need not match exactly (reported, not required).
    [ "$3" = small ] && [ "$name" != small ] && extra=
    log "compare $name (cpu vs cuda, $n tokens, $g greedy steps)"
    if out=$(timeout 180 "$BIN/strata-gpu" compare -m "$model" --tokens "$n" --gen "$g" $extra); then
        pass "$out"
    else
        echo "$out"; fail "$name compare: $(head -1 <<< "$out")"
    fi
    log "bench $name"
    if row=$(timeout 150 "$BIN/strata-gpu" bench -m "$model" --copy-gbps "$COPY" \
                 --gemm-tflops "$GEMM" --prompt 512 --gen 32); then
        ROWS+=("$row")
    else
        fail "$name bench"
    fi
}

for shape in $SHAPES; do
    model=$WORK/$shape.gguf
    if [ ! -s "$model" ]; then
        log "generate $shape"
        timeout 150 "$BIN/strata-gpu" gen "$model" --shape "$shape" ||
            { fail "$shape: model generation"; continue; }
    fi
    check_model "$shape" "$model" "$shape"
done
for qm in $QMODELS; do
    shape=${qm%%:*} type=${qm#*:}
    model=$WORK/$shape-$type.gguf
    if [ ! -s "$model" ]; then
        log "generate $shape $type"
        timeout 150 "$BIN/strata-gpu" gen "$model" --shape "$shape" --type "$type" ||
            { fail "$shape $type: model generation"; continue; }
    fi
    check_model "$shape-$type" "$model" "$shape"
done
if [ -n "${STRATA_MODEL:-}" ] && [ -f "$STRATA_MODEL" ]; then
    check_model "$(basename "$STRATA_MODEL")" "$STRATA_MODEL" real
fi

# ---- architectures beyond Llama (rope_ex, GeGLU, windowed and soft-capped
# attention, MLA, MoE): tiny reference models, compared only ----
arch_file() {
    local d
    for d in ${ARCH_REF_DIR:-} "$ROOT/.cache/arch-ref" "${STRATA_CACHE:-$HOME/.cache/strata}/arch-ref"; do
        [ -s "$d/$1.gguf" ] && { echo "$d/$1.gguf"; return 0; }
    done
    return 1
}
if [ -n "$ARCH_MODELS" ]; then
    missing=()
    for am in $ARCH_MODELS; do arch_file "$am" > /dev/null || missing+=("${am%%.*}"); done
    if [ ${#missing[@]} -gt 0 ]; then
        if python3 -c "import torch, transformers, gguf" 2> /dev/null; then
            log "generate ${missing[*]} (tests/tools/arch_ref.py)"
            timeout 300 python3 "$ROOT/tests/tools/arch_ref.py" $(printf '%s\n' "${missing[@]}" | sort -u) \
                > "$WORK/arch_ref.log" 2>&1 || tail -5 "$WORK/arch_ref.log"
        else
            log "no torch/transformers/gguf here: missing arch models are skipped"
        fi
    fi
    for am in $ARCH_MODELS; do
        if ! model=$(arch_file "$am"); then
            skip "$am: no $am.gguf (python3 tests/tools/arch_ref.py ${am%%.*} elsewhere, then copy it to $ROOT/.cache/arch-ref/)"
            continue
        fi
        # 64 prompt tokens and 24 steps fit the models' 256 positions and
        # pass Gemma's 8-position window and DeepSeek's YaRN context (64).
        # Greedy ids are reported, not required: the CUDA backend keeps f32
        # matrices as bf16, the CPU backend keeps them f32.
        log "compare $am (cpu vs cuda, 64 tokens, 24 greedy steps)"
        if out=$(timeout 120 "$BIN/strata-gpu" compare -m "$model" --tokens 64 --gen 24); then
            pass "$out"
        else
            echo "$out"; fail "$am compare: $(head -1 <<< "$out")"
        fi
    done
fi

echo
echo "== strata CUDA backend check, $(date -u +%Y-%m-%dT%H:%MZ), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(( $(date +%s) - T0 )) s =="
printf '%s\n' "${SUMMARY[@]}"
echo
echo "roofline: copy $COPY GB/s (read + write, D2D 1 GiB), cuBLAS bf16 GEMM 8192^3 $GEMM TFLOP/s"
echo "prefill: 512-token prompt, median of 3; decode: B sequences x 32 steps after 32-token prompts,"
echo "greedy sampling on the host included; (%) = share of the GEMM ceiling / of the copy bandwidth"
echo "| model                  | prefill/s | prefill TFLOP/s | decode b1/s     | decode b8/s     | decode b64/s     |"
echo "|------------------------|-----------|-----------------|-----------------|-----------------|------------------|"
printf '%s\n' "${ROWS[@]}"
exit $FAILED
