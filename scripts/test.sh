#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh), builds, and runs every test that this machine can
# run, then the unit, golden and parallel tests again built with ASan + UBSan (GPTJ_SKIP_SANITIZE=1
# skips that part). GPU tests skip with a reason where no GPU is visible (ctest lists them as
# skipped). Extra arguments go to ctest (e.g. -L golden).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
cd build
ctest --output-on-failure --timeout 900 "$@"
cd ..
# The unit, golden and parallel tests again under ASan + UBSan (scripts/sanitize.sh).
[ -n "${GPTJ_SKIP_SANITIZE:-}" ] || bash scripts/sanitize.sh
