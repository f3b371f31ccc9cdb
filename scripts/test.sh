#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh), builds, and runs every test that this machine can
# run. GPU tests skip with a reason where no GPU is visible. Extra arguments go to ctest
# (e.g. -L golden).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
cd build
ctest --output-on-failure --timeout 900 "$@"
