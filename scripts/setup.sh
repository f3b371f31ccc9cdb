#!/usr/bin/env bash
# Installs the Debian 12 packages gptj needs (docs/DESIGN.md §6) when they are missing, then configures and
# builds into build/. Idempotent: a second run installs nothing and only rebuilds what changed.
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config ccache
  libopenmpi-dev openmpi-bin
  libboost1.81-dev libboost-json1.81-dev
  libspdlog-dev libfmt-dev libcli11-dev
  libopenblas-dev libopenblas0-openmp
  libgtest-dev libgmock-dev
  openssh-client curl python3 procps time
  slurm-wlm slurmctld slurmd slurm-client munge libpmix-dev iproute2)

# The server tests drive the official `openai` npm client: Node.js + npm unless already there.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's pthread OpenBLAS oversubscribes cores under OpenMP; prefer the OpenMP build.
if [ -e /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 ]; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd update-alternatives --set libblas.so.3-x86_64-linux-gnu \
    /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 >/dev/null 2>&1 || true
  $sudo_cmd update-alternatives --set libopenblas.so.0-x86_64-linux-gnu \
    /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 >/dev/null 2>&1 || true
fi

[ "${1:-}" = "--no-build" ] && exit 0
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
