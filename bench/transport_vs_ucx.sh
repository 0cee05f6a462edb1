#!/bin/sh
# transport_vs_ucx.sh - st_transport against UCX's own ucx_perftest, same host,
# same transport, same run, printed as a markdown table.
#
#   bench/transport_vs_ucx.sh                  # both transports
#   TRANSPORTS=shm ITERS=50000 bench/transport_vs_ucx.sh
#
# Environment: STRATA_BIN (default build/bin/strata), ITERS (20000), SIZES
# (bytes, comma separated), MAX_BYTES (cap per size and test, 512m), WINDOW
# (sends in flight for bandwidth, 16; ucx_perftest gets the same -O),
# TRANSPORTS ("shm tcp"), OUT (directory for raw outputs, a temp dir).
#
# Transports: "shm" is UCX_TLS=posix,self for ucx_perftest and posix,tcp,self
# for strata (UCX 1.13's client-server connection needs a network transport
# for the wireup; the data lanes are posix, which the 8 B latency shows),
# "tcp" is UCX_TLS=tcp over loopback for both. Latency: ucx_perftest tag_lat
# "typical" (median) vs our p50, both one-way. Bandwidth: ucx_perftest tag_bw
# vs our streaming test, in GB/s (1e9 B/s). Both processes of each pair busy-
# poll, so on a 2-core machine anything else running shows up in the numbers.
set -eu

STRATA=${STRATA_BIN:-build/bin/strata}
ITERS=${ITERS:-20000}
SIZES=${SIZES:-8,64,512,2304,4096,16384,65536,262144,1048576,4194304,16777216}
MAX_BYTES=${MAX_BYTES:-536870912}
WINDOW=${WINDOW:-16}
TRANSPORTS=${TRANSPORTS:-shm tcp}
OUT=${OUT:-$(mktemp -d /tmp/transport_vs_ucx.XXXXXX)}
mkdir -p "$OUT"
# Below the kernel's ephemeral range, so UCX's own sockets cannot take them.
PORT=${PORT:-$((10000 + $$ % 4000))}
OUR_PORT=$((PORT + 5000))

command -v ucx_perftest >/dev/null || { echo "ucx_perftest not found (package ucx-utils)" >&2; exit 1; }
[ -x "$STRATA" ] || { echo "strata binary not found at $STRATA (set STRATA_BIN)" >&2; exit 1; }

# Same iteration rule as strata bench transport --max-bytes.
iters_for() {
    n=$((MAX_BYTES / $1)); [ "$n" -lt 20 ] && n=20; [ "$n" -gt "$ITERS" ] && n=$ITERS; echo "$n"
}

perftest() {   # tls test size iters -> final line of the client
    tls=$1; test=$2; size=$3; n=$4; warm=$((n / 10 + 10))
    PORT=$((PORT + 1))
    UCX_TLS=$tls ucx_perftest -p "$PORT" -t "$test" -s "$size" -n "$n" -w "$warm" -O "$WINDOW" -f \
        >"$OUT/perf_srv_${test}_${size}.txt" 2>&1 &
    srv=$!
    sleep 0.3
    for try in 1 2 3 4 5 6 7 8 9 10; do
        if UCX_TLS=$tls ucx_perftest 127.0.0.1 -p "$PORT" -t "$test" -s "$size" -n "$n" -w "$warm" \
               -O "$WINDOW" -f >"$OUT/perf_cli.txt" 2>&1; then
            break
        fi
        sleep 0.3
    done
    wait "$srv" || true
    grep -E '^ +[0-9]+ +[0-9.]+' "$OUT/perf_cli.txt" | tail -1
}

ours() {   # tls [extra bench options] -> JSON line
    tls=$1; shift
    for attempt in 1 2 3 4 5; do
        OUR_PORT=$((OUR_PORT + 1))
        UCX_TLS=$tls "$STRATA" bench transport --listen "127.0.0.1:$OUR_PORT" --window "$WINDOW" \
            --sizes "$SIZES" "$@" >/dev/null 2>"$OUT/ours_srv.txt" &
        srv=$!
        for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            grep -q "listening on" "$OUT/ours_srv.txt" && break
            kill -0 "$srv" 2>/dev/null || break
            sleep 0.25
        done
        if grep -q "listening on" "$OUT/ours_srv.txt"; then
            UCX_TLS=$tls "$STRATA" bench transport --connect "127.0.0.1:$OUR_PORT" --sizes "$SIZES" \
                --iters "$ITERS" --max-bytes "$MAX_BYTES" --window "$WINDOW" --json "$@" \
                >"$OUT/ours.json" 2>"$OUT/ours_cli.txt" || true
            wait "$srv" || true
            break
        fi
        wait "$srv" || true    # port taken: try the next one
    done
    grep '^{' "$OUT/ours.json" | tail -1
}

echo "# st_transport vs ucx_perftest ($(ucx_info -v | head -1 | sed 's/# //'), $(nproc) cores," \
     "iters $ITERS, window $WINDOW, $(date -u +%Y-%m-%dT%H:%MZ))"
for tr in $TRANSPORTS; do
    case $tr in
        shm) perf_tls=posix,self; our_tls=posix,tcp,self ;;
        tcp) perf_tls=tcp; our_tls=tcp ;;
        *) echo "unknown transport $tr" >&2; exit 2 ;;
    esac
    : >"$OUT/perf_$tr.txt"
    for s in $(echo "$SIZES" | tr ',' ' '); do
        n=$(iters_for "$s")
        lat=$(perftest "$perf_tls" tag_lat "$s" "$n" | awk '{print $2}')
        bw=$(perftest "$perf_tls" tag_bw "$s" "$n" | awk '{print $6}')
        echo "$s $n ${lat:-nan} ${bw:-nan}" >>"$OUT/perf_$tr.txt"
    done
    ours "$our_tls" >"$OUT/ours_$tr.json"
    # Diagnosis: the same without UCX peer-error handling, as ucx_perftest runs.
    ours "$our_tls" --no-peer-errors --mode lat >"$OUT/ours_noerr_$tr.json"
    python3 - "$tr" "$perf_tls" "$our_tls" "$OUT/perf_$tr.txt" "$OUT/ours_$tr.json" \
        "$OUT/ours_noerr_$tr.json" <<'EOF'
import json, sys
tr, perf_tls, our_tls, perf_path, ours_path, noerr_path = sys.argv[1:]
perf = {}
for line in open(perf_path):
    s, n, lat, bw = line.split()
    perf[int(s)] = (int(n), float(lat), float(bw) * 1048576 / 1e9)   # MB/s (2^20) -> GB/s
try:
    ours = {r["size"]: r for r in json.loads(open(ours_path).read())["results"]}
except Exception as e:
    print(f"\nstrata bench transport failed for {tr}: {e}")
    sys.exit(0)
try:
    noerr = {r["size"]: r for r in json.loads(open(noerr_path).read())["results"]}
except Exception:
    noerr = {}
print(f"\n## {tr}: ucx_perftest UCX_TLS={perf_tls}, strata UCX_TLS={our_tls}\n")
print("| size (B) | iters | ucx_perftest p50 (us) | strata p50 (us) | ratio | strata p99 (us) "
      "| strata p50 no peer-errors (us) | ratio | ucx_perftest bw (GB/s) | strata bw (GB/s) "
      "| bw ratio |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in sorted(perf):
    n, lat, bw = perf[s]
    o = ours.get(s)
    if not o:
        continue
    r = o["p50_us"] / lat if lat == lat and lat > 0 else float("nan")
    b = o["bandwidth_gbps"] / bw if bw == bw and bw > 0 else float("nan")
    ne = noerr.get(s, {}).get("p50_us", float("nan"))
    nr = ne / lat if lat == lat and lat > 0 else float("nan")
    print(f"| {s} | {n} | {lat:.3f} | {o['p50_us']:.3f} | {r:.2f} | {o['p99_us']:.3f} "
          f"| {ne:.3f} | {nr:.2f} | {bw:.3f} | {o['bandwidth_gbps']:.3f} | {b:.2f} |")
EOF
done
echo
echo "raw outputs: $OUT"
