#!/usr/bin/env bash
# The GPU bring-up tooling, on this machine (no GPU needed):
#  1. scripts/gpu-libs.sh's resolver: a program linked to a library that ldd cannot find runs once
#     the resolver has searched for its soname (GPTJ_LIB_SEARCH_ROOTS), and a library that exists
#     nowhere is named as still missing (non-zero status).
#  2. scripts/gpu-bundle.sh builds; the archive unpacks with plain `tar xzf`; its binaries carry no
#     RUNPATH, need no libnccl (single-process build) and leave CUDA's libraries to the GPU machine.
#  3. the bundle's gptj, with LD_LIBRARY_PATH from the resolver, gives golden logits on --backend cpu.
#  4. GPTJ_PREBUILT=<archive> scripts/gpu-check.sh without a GPU: under a minute, every GPU stage
#     "skipped: no GPU", no failure, the summary line last, exit 77. (On a GPU machine, part 4 is
#     left to the real run of gpu-check.sh.)
# Exit 77 (skipped) when this machine cannot build CUDA code (no nvcc).
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
REPO=$(cd "$TOOLS/../.." && pwd)
source "$REPO/scripts/gpu-libs.sh"

# ---- 1. the resolver ------------------------------------------------------------------------------
mkdir -p "$WORK/hidden/deep/lib" "$WORK/probe"
cat > "$WORK/probe/lib.c" <<'C'
int gptj_probe_answer(void) { return 42; }
C
cat > "$WORK/probe/main.c" <<'C'
#include <stdio.h>
int gptj_probe_answer(void);
int main(void) { printf("answer %d\n", gptj_probe_answer()); return 0; }
C
gcc -shared -fPIC -Wl,-soname,libgptjprobe.so.1 -o "$WORK/hidden/deep/lib/libgptjprobe.so.1" "$WORK/probe/lib.c" ||
  fail "resolver: cannot build the probe library"
ln -s libgptjprobe.so.1 "$WORK/hidden/deep/lib/libgptjprobe.so"
gcc -o "$WORK/probe/main" "$WORK/probe/main.c" -L"$WORK/hidden/deep/lib" -lgptjprobe || fail "resolver: cannot link"
[ "$(missing_shared_libs "$WORK/probe/main")" = libgptjprobe.so.1 ] || fail "resolver: ldd should miss the probe library"
out=$(GPTJ_LIB_SEARCH_ROOTS="$WORK/hidden" LD_LIBRARY_PATH="" bash -c \
  "source '$REPO/scripts/gpu-libs.sh' && resolve_shared_libs '$WORK/probe/main' && '$WORK/probe/main'" 2>&1)
grep -q "libgptjprobe.so.1 -> $WORK/hidden/deep/lib/libgptjprobe.so.1" <<<"$out" || fail "resolver did not log what it found: $out"
grep -q "answer 42" <<<"$out" || fail "resolved program did not run: $out"
rm "$WORK/hidden/deep/lib/libgptjprobe.so"*
out=$(GPTJ_LIB_SEARCH_ROOTS="$WORK/hidden" bash -c "source '$REPO/scripts/gpu-libs.sh' && resolve_shared_libs '$WORK/probe/main'" 2>&1) &&
  fail "resolver: succeeded without the library: $out"
grep -q "STILL MISSING: libgptjprobe.so.1" <<<"$out" || fail "resolver did not name the missing library: $out"
echo "ok resolver"

# ---- 2. the bundle --------------------------------------------------------------------------------
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "SKIP: no nvcc on this machine: the GPU bundle cannot be built (the resolver part passed)"
  exit 77
fi
# The bundle's build folder lives beside this test's build (kept between runs: incremental).
BUNDLE_BUILD="$(dirname "$(dirname "$GPTJ")")/gpu-bundle-build"
BUNDLE_BUILD=$BUNDLE_BUILD BUNDLE_OUT=$WORK bash "$REPO/scripts/gpu-bundle.sh" > "$WORK/bundle.log" 2>&1 ||
  { tail -30 "$WORK/bundle.log"; fail "gpu-bundle.sh failed"; }
[ -f "$WORK/gpu-bundle.tar.gz" ] || fail "no gpu-bundle.tar.gz"
mkdir -p "$WORK/unpacked" && tar xzf "$WORK/gpu-bundle.tar.gz" -C "$WORK/unpacked" || fail "tar xzf failed"
B=$WORK/unpacked/gpu-bundle
for bin in gptj cuda_kernels_test cuda_model_test cuda_draws_test cuda_quant_test cpu_golden_test linear_test weights16_test linear_quant_test bf16_golden_test; do
  [ -x "$B/bin/$bin" ] || fail "bundle lacks bin/$bin"
  readelf -d "$B/bin/$bin" | grep -Eq 'RUNPATH|RPATH' && fail "bin/$bin carries a RUNPATH of this machine"
  readelf -d "$B/bin/$bin" | grep -q 'libnccl' && fail "bin/$bin needs libnccl (single-process build)"
done
ls "$B/lib" | grep -Eq 'libcudart|libcublas|libnccl' && fail "bundle carries CUDA libraries: $(ls "$B/lib")"
readelf -d "$B/bin/gptj" | grep -q 'libcudart' || fail "bundle gptj is not a CUDA build"
echo "ok bundle: $(du -h "$WORK/gpu-bundle.tar.gz" | cut -f1), lib: $(ls "$B/lib" | tr '\n' ' ')"

# ---- 3. its binaries on this CPU, libraries found by the resolver ------------------------------------
out=$(LD_LIBRARY_PATH="$B/lib" bash -c "source '$REPO/scripts/gpu-libs.sh' && resolve_shared_libs '$B'/bin/* &&
  '$B/bin/gptj' logits --backend cpu --model '$DATA/tiny-gptj-a/model' --tokens '$(prompt tiny-gptj-a 1)' \
    --all-positions --output '$WORK/bundle.npy'" 2>&1) || fail "bundle gptj on the CPU: $out"
check logits "$WORK/bundle.npy" "$DATA/tiny-gptj-a/expected/logits_p7_all.f32.bin" 0 7 1e-5 ||
  fail "bundle gptj: CPU logits differ from Hugging Face's"
echo "ok bundle gptj --backend cpu: golden logits"

# ---- 4. gpu-check.sh in prebuilt mode ---------------------------------------------------------------
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "a GPU is visible: gpu-check.sh itself is the GPU run (not repeated here)"
  echo PASS
  exit 0
fi
start=$SECONDS scratch_before=$(ls -d /tmp/gpu-check.* 2>/dev/null | wc -l)
OUT=$WORK/check-out GPTJ_PREBUILT=$WORK/gpu-bundle.tar.gz timeout -k 5 120 bash "$REPO/scripts/gpu-check.sh" \
  > "$WORK/check.stdout" 2>&1
code=$? took=$((SECONDS - start))
log=$WORK/check-out/gpu-check.log
[ -f "$log" ] || fail "gpu-check.sh wrote no log"
[ $code -eq 77 ] || { tail -30 "$log"; fail "gpu-check.sh without a GPU: exit $code, expected 77"; }
[ $took -lt 60 ] || fail "gpu-check.sh without a GPU took ${took} s"
tail -1 "$log" | grep -q '^gpu-check: SUMMARY .* 0 failed' || { tail -5 "$log"; fail "summary is not the last log line"; }
grep -q 'FAILED' "$log" && { grep FAILED "$log"; fail "a stage failed"; }
n_skipped=$(grep -c 'skipped: no GPU' "$log")
[ "$n_skipped" -ge 15 ] || fail "expected every GPU stage skipped, saw $n_skipped"
grep -q '=== \[cpu-golden-tests\] ok' "$log" || fail "the bundle's cpu_golden_test did not pass"
grep -q '=== \[cpu-golden-tests-avx2\] ok' "$log" || fail "the bundle's cpu_golden_test at GPTJ_CPU_ISA=avx2 did not pass"
grep -q '=== \[cpu-kernels-avx2\] ok' "$log" || fail "the bundle's linear_test at avx2 did not pass"
grep -q '^machine: .*glibc' "$log" || fail "no machine facts in the log"
grep -q '^libs: ' "$log" || fail "no library resolution in the log"
[ "$(ls -d /tmp/gpu-check.* 2>/dev/null | wc -l)" -eq "$scratch_before" ] || fail "gpu-check.sh left its /tmp scratch folder"
echo "ok gpu-check.sh prebuilt without a GPU: exit 77 in ${took} s, $n_skipped GPU stages skipped"
echo PASS
