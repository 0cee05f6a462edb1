#!/bin/bash
# The Slurm launch mode, for real, on this one machine:
#   installs munge, slurmctld and slurmd from the distribution when missing,
#   writes a one-node slurm.conf (MpiDefault=pmi2) in a scratch directory,
#   starts munged, slurmctld and slurmd, submits configs/slurm/strata.sbatch
#   with 3 tasks (coordinator + 2 workers) and no secret file (task 0 draws
#   the per-job secret), checks its answer against the single-process engine
#   (`strata generate`), then runs the README's line
#   `srun --mpi=pmi2 -n 3 strata launch -m MODEL --port P`, checks a greedy
#   completion from its HTTP API against the same reference, and stops
#   what it started.
# Needs root (daemons, apt-get); otherwise it prints why and exits 77 (skip).
#
#   tests/slurm/run_slurm_test.sh [STRATA_BIN] [MODEL]
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-${STRATA_BIN:-$ROOT/build/bin/strata}}
MODEL=${2:-${STRATA_MODEL:-$HOME/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf}}
PROMPT="The capital of France is"
NTOK=16

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root to install and run slurmctld, slurmd and munge"
[ -x "$BIN" ] || skip "strata binary not found at $BIN"
[ -f "$MODEL" ] || skip "model not found at $MODEL"
"$BIN" launch --help >/dev/null 2>&1 || skip "strata built without cluster support"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurmctld slurmd munge from the distribution"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge \
        >/dev/null 2>&1 || skip "cannot install slurmctld/slurmd/munge (no network or apt?)"
fi

WORK=$(mktemp -d /tmp/strata-slurm.XXXXXX)
chmod 755 "$WORK"
STARTED_MUNGE=0
MUNGE_PID=/run/munge/strata-test-munged.pid   # writable by the munge user
CTLD_PID=""
SLURMD_PID=""

cleanup() {
    [ -n "$SLURMD_PID" ] && kill "$SLURMD_PID" 2>/dev/null
    [ -n "$CTLD_PID" ] && kill "$CTLD_PID" 2>/dev/null
    for p in $SLURMD_PID $CTLD_PID; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    if [ "$STARTED_MUNGE" = 1 ] && [ -f "$MUNGE_PID" ]; then
        kill "$(cat "$MUNGE_PID")" 2>/dev/null
        rm -f "$MUNGE_PID"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# munge: reuse a running one, else start our own with a fresh key.
if ! munge -n </dev/null >/dev/null 2>&1; then
    KEY=/etc/munge/munge.key
    if [ ! -s "$KEY" ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$KEY" 2>/dev/null; chmod 400 "$KEY"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged --pid-file="$MUNGE_PID" || fail "munged did not start"
    else
        munged --force --pid-file="$MUNGE_PID" || fail "munged did not start"
    fi
    STARTED_MUNGE=1
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
fi

HOST=$(hostname -s)
CONF="$WORK/slurm.conf"
cat > "$CONF" <<EOF
ClusterName=strata-test
SlurmctldHost=$HOST
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
MpiDefault=pmi2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ReturnToService=2
SlurmdParameters=config_overrides
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$HOST CPUs=4 State=UNKNOWN
PartitionName=test Nodes=$HOST Default=YES MaxTime=10 State=UP OverSubscribe=YES
EOF
mkdir -p "$WORK/state" "$WORK/spool"
export SLURM_CONF=$CONF

slurmctld -D -f "$CONF" >"$WORK/slurmctld.out" 2>&1 &
CTLD_PID=$!
slurmd -D -f "$CONF" >"$WORK/slurmd.out" 2>&1 &
SLURMD_PID=$!
ok=0
for _ in $(seq 100); do
    if sinfo -h -o "%t" 2>/dev/null | grep -qE "idle|mix|alloc"; then ok=1; break; fi
    sleep 0.2
done
[ "$ok" = 1 ] || { tail -20 "$WORK/slurmctld.log" "$WORK/slurmd.log" 2>/dev/null; fail "the node did not come up"; }

echo "slurm up: $(sinfo -h -o '%P %D %t')"
REF=$("$BIN" generate -m "$MODEL" -p "$PROMPT" -n $NTOK --temp 0 -t 1 2>/dev/null)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SRUN_PID=""
trap 'if [ -n "$SRUN_PID" ]; then kill -9 "$SRUN_PID" 2>/dev/null; scancel --name=strata-http 2>/dev/null; fi; cleanup' EXIT
unset STRATA_CLUSTER_SECRET

# 1. sbatch, one-shot, no secret file: task 0 draws the per-job secret.
cd "$WORK"
STRATA_BIN="$BIN" STRATA_MODEL="$MODEL" \
STRATA_PROMPT="$PROMPT" STRATA_MAX_TOKENS=$NTOK STRATA_THREADS=1 \
STRATA_CONTROL_PORT=$(free_port) \
STRATA_ADVERTISE=127.0.0.1 STRATA_EXTRA_ARGS="--data-listen 127.0.0.1:0" \
    timeout 180 sbatch --wait -N 1 --ntasks=3 --ntasks-per-node=3 --time=5 \
    -o "$WORK/job.out" -e "$WORK/job.err" "$ROOT/configs/slurm/strata.sbatch" \
    || { cat "$WORK/job.err" 2>/dev/null | tail -30; fail "the job failed"; }

GOT=$(cat "$WORK/job.out")
if [ "$(printf '%s' "$GOT" | sed -e '$a\')" != "$(printf '%s' "$REF" | sed -e '$a\')" ]; then
    echo "--- expected"; printf '%s\n' "$REF"; echo "--- got"; printf '%s\n' "$GOT"
    tail -30 "$WORK/job.err"
    fail "the Slurm job's answer differs from the single-process engine"
fi
grep -q "per-job secret drawn by rank 0" "$WORK/job.err" \
    || { tail -30 "$WORK/job.err"; fail "the job did not use a per-job secret"; }
echo "ok: sbatch strata.sbatch (3 tasks, no secret file) answered identically to strata generate"

# 2. The README's line: the HTTP API on --port, no secret, no --advertise.
HTTP=$(free_port)
CTL=()
# Someone else may hold the default control port on this machine; only then
# is the line not exactly the README's.
if (exec 3<>/dev/tcp/127.0.0.1/7700) 2>/dev/null; then CTL=(--control-port "$(free_port)"); fi
srun --mpi=pmi2 -n 3 --job-name=strata-http --time=5 \
    "$BIN" launch -m "$MODEL" --port "$HTTP" "${CTL[@]}" >"$WORK/http.out" 2>"$WORK/http.err" &
SRUN_PID=$!
up=0
for _ in $(seq 300); do
    if curl -sf "http://127.0.0.1:$HTTP/health" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$SRUN_PID" 2>/dev/null || break
    sleep 0.2
done
[ "$up" = 1 ] || { tail -30 "$WORK/http.err"; fail "srun strata launch --port $HTTP: no HTTP API"; }
BODY=$(printf '{"prompt":"%s","max_tokens":%d,"temperature":0}' "$PROMPT" "$NTOK")
GOT=$(curl -sf "http://127.0.0.1:$HTTP/v1/completions" -d "$BODY" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"], end="")') \
    || { tail -30 "$WORK/http.err"; fail "the completion request failed"; }
STAGES=$(curl -sf "http://127.0.0.1:$HTTP/admin/status" \
         | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["stages"]))')
kill -TERM "$SRUN_PID" 2>/dev/null   # srun passes SIGTERM to the tasks: they drain
for _ in $(seq 150); do kill -0 "$SRUN_PID" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$SRUN_PID" 2>/dev/null; then
    scancel --name=strata-http 2>/dev/null; kill -9 "$SRUN_PID" 2>/dev/null
    fail "srun strata launch did not stop on SIGTERM"
fi
SRUN_PID=""
if [ "$(printf '%s' "$GOT" | sed -e '$a\')" != "$(printf '%s' "$REF" | sed -e '$a\')" ]; then
    echo "--- expected"; printf '%s\n' "$REF"; echo "--- got"; printf '%s\n' "$GOT"
    tail -30 "$WORK/http.err"
    fail "the HTTP answer of srun strata launch differs from the single-process engine"
fi
[ "$STAGES" = 2 ] || fail "/admin/status shows $STAGES stages, not 2"
grep -q "per-job secret drawn by rank 0" "$WORK/http.err" \
    || { tail -30 "$WORK/http.err"; fail "srun strata launch did not use a per-job secret"; }
echo "PASS: sbatch and srun --mpi=pmi2 strata launch (3 tasks, per-job secret) answered identically to strata generate, one-shot and over HTTP on --port"
exit 0
