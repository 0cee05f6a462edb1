#!/bin/bash
# strata bench cluster with each worker in its own network namespace, as if
# on separate hosts: the data plane goes over TCP through a bridge in the
# root namespace. Needs root and iproute2. Cleans up what it creates.
#
#   bench/cluster_netns.sh [STRATA_BIN] [MODEL] [N_WORKERS] [extra bench options...]
#
# WORKER_MEM=SIZE (e.g. 300MiB) makes every worker advertise that much memory
# to the planner (`strata worker --mem`), so a model larger than it is split
# (bench/cluster_scale.sh).
set -eu
BIN=${1:-build/bin/strata}
MODEL=${2:-$HOME/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf}
N=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 77; }
TAG=$$
BR=stbb$TAG
NET=10.232.$(( TAG % 200 ))
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for i in $(seq 0 $((N - 1))); do
        ip netns del stbn$TAG$i 2>/dev/null || true
        ip link del stbv$TAG$i 2>/dev/null || true
    done
    ip link del "$BR" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip link add "$BR" type bridge && ip addr add "$NET.1/24" dev "$BR" && ip link set "$BR" up
for i in $(seq 0 $((N - 1))); do
    ns=stbn$TAG$i
    ip netns add "$ns"
    ip link add stbv$TAG$i type veth peer name stbp$TAG$i
    ip link set stbv$TAG$i master "$BR" up
    ip link set stbp$TAG$i netns "$ns"
    ip netns exec "$ns" ip addr add "$NET.$((i + 2))/24" dev stbp$TAG$i
    ip netns exec "$ns" ip link set stbp$TAG$i up
    ip netns exec "$ns" ip link set lo up
done
head -c 32 /dev/urandom | base64 > "$WORK/secret"
PORT=$(( 20000 + TAG % 20000 ))
for i in $(seq 0 $((N - 1))); do
    ip netns exec stbn$TAG$i "$BIN" worker --join "$NET.1:$PORT" --secret-file "$WORK/secret" \
        --name "ns-$i" --transport tcp --data-listen 0.0.0.0:0 --join-timeout 60 \
        ${WORKER_MEM:+--mem "$WORKER_MEM"} 2>"$WORK/worker$i.log" &
    PIDS+=($!)
done
"$BIN" bench cluster -m "$MODEL" --external "$N" --listen "$NET.1:$PORT" \
    --data-listen "$NET.1:0" --secret-file "$WORK/secret" --transport tcp "$@"
