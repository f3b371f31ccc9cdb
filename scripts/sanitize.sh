#!/usr/bin/env bash
# The unit, golden and parallel tests again, built with AddressSanitizer + UndefinedBehaviorSanitizer
# (GPTJ_SANITIZE=ON, CPU only, into build-asan/): an invalid memory access or undefined behaviour
# aborts the test that hit it. Run by scripts/test.sh after the main tests (GPTJ_SKIP_SANITIZE=1
# skips it). Extra arguments go to ctest. Left out, to keep CI short: the parallel tests that only
# stop processes (mpirun_sigterm_batch, rank0_stop_*: ~200 s under ASan; dp_faults likewise),
# batch_resume (52 s; its resume paths are also batch_hardening's), dp_batch (its wire decoders run
# under ASan in unit.dispatch_test; the replica code in the rest of dp_batch is ~60 s of mpirun jobs),
# parallel.pytorch_bin (its parser runs under ASan in the two unit.pytorch_bin tests) and
# tp_threshold_search (its search runs under ASan in unit.draw_search_test) and quant_tp (its
# quantization and kernels run under ASan in unit.quant_test, unit.linear_quant_test and
# golden.quant_golden_test), and golden.cpu_golden_test.avx2 (the same test forced to the avx2
# level: the per-level kernel tests run under ASan at every level this CPU has).
# OpenMPI's own allocations are not ours to fix, so leak detection is off; everything else is on.
set -euo pipefail
cd "$(dirname "$0")/.."
# -O1 -g1 (line tables only; asserts on): compiles faster than -O2 -g, and ASan reports keep file:line.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release '-DCMAKE_CXX_FLAGS_RELEASE=-O1 -g1' -DGPTJ_CUDA=OFF \
  -DGPTJ_SANITIZE=ON >/dev/null
cmake --build build-asan
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
cd build-asan
ctest --output-on-failure --timeout 900 -L 'unit|golden|parallel' -E 'mpirun_sigterm|rank0_stop|batch_resume|dp_faults|dp_batch|parallel.pytorch_bin|tp_threshold_search|quant_tp|cpu_golden_test\.avx2' "$@"
