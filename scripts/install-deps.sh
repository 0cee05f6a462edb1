#!/usr/bin/env bash
# Installs what strata needs from Debian's packages and PyPI, only what is
# missing. Run as root (or with sudo available). Idempotent.
#   scripts/install-deps.sh          build + run dependencies
#   scripts/install-deps.sh --test   also what the test suite uses
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake ninja-build pkg-config git ca-certificates
      libucx-dev ucx-utils libhwloc-dev hwloc libmpich-dev mpich
      libssl-dev openssl libopenblas-dev libevent-dev libjansson-dev libzstd-dev liboath-dev libp11-kit-dev libwslay-dev
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
      iproute2 curl)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(clang libclang-rt-14-dev prometheus wrk procps
         slurmctld slurmd slurm-client munge nginx haproxy softhsm2 opensc chromium)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "strata: installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ "${1:-}" == "--test" ]]; then
  PY=${PYTHON:-python3}
  if ! $PY -c "import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)" 2>/dev/null; then
    echo "strata: python3 >= 3.9 is required for the tests" >&2
    exit 1
  fi
  $PY -m pip install -q --disable-pip-version-check -r tests/requirements.txt
fi
