#!/usr/bin/env bash
# One command for a GPU machine (target: under 8 minutes on one H200 with 16 cores):
#   1. install missing build tools / dev packages (apt-get; reports clearly when offline)
#   2. configure + build with CUDA for sm_90 into build-gpu/
#   3. nvidia-smi; ctest -L gpu (kernel-vs-CPU and fixture-model tests)
#   4. golden: `gptj logits` on tiny-gptj-a in float16/bfloat16 vs the Hugging Face logits, and
#      prefill-then-decode (--prefill 4) vs one-shot
#   5. bench: GPT-J-6B shape, random weights on the GPU, fp16, TP 1: decode batches 1,8,64,256 and a
#      2048-token prefill; the fraction of HBM bandwidth reached at batch 1 when the bench says ms/step
# Every stage runs even when an earlier one failed; failures are listed at the end, exit code != 0.
# Everything goes to $OUT/gpu-check.log (OUT defaults to ./gpu-check-out).
# Usage: scripts/gpu-check.sh        (from anywhere; runs in the repository root)
#        GPTJ_PREBUILT=DIR scripts/gpu-check.sh   skips stages 1-2 and runs the binaries in DIR
#        (gptj, cuda_kernels_test, cuda_model_test, cuda_draws_test, cpu_golden_test built elsewhere by
#        scripts/gpu-bundle.sh), for GPU machines that cannot install packages.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-check-out}"
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
JOBS="${JOBS:-16}"
BUILD=build-gpu
failures=()

stage() {  # stage NAME COMMAND...: runs, times and records the result; never exits
  local name="$1" t0=$SECONDS rc=0
  shift
  echo "=== [$name] $*"
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "=== [$name] ok ($((SECONDS - t0)) s)"
  else
    echo "=== [$name] FAILED (exit $rc, $((SECONDS - t0)) s)"
    failures+=("$name")
  fi
  return 0
}

echo "gpu-check: $(date -u +%FT%TZ) on $(hostname), log $LOG"
echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed files"

# ---- 1. dependencies --------------------------------------------------------------------------
install_missing() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v ninja >/dev/null || missing+=(ninja-build)
  command -v g++ >/dev/null || missing+=(build-essential)
  command -v mpicxx >/dev/null || missing+=(libopenmpi-dev openmpi-bin)
  [ -e /usr/include/boost/json.hpp ] || missing+=(libboost1.81-dev libboost-json1.81-dev)
  [ -d /usr/include/spdlog ] || missing+=(libspdlog-dev)
  [ -d /usr/include/fmt ] || missing+=(libfmt-dev)
  [ -e /usr/include/CLI/CLI.hpp ] || missing+=(libcli11-dev)
  [ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] ||
    [ -d /usr/include/x86_64-linux-gnu/openblas-openmp ] || [ -d /usr/include/openblas ] ||
    missing+=(libopenblas-dev)
  [ -d /usr/include/gtest ] || missing+=(libgtest-dev libgmock-dev)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "dependencies: all present"
    return 0
  fi
  echo "dependencies: missing ${missing[*]}"
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 180 $sudo_cmd apt-get update -qq; then
    echo "dependencies: apt-get update FAILED (offline?) — cannot install: ${missing[*]}"
    return 1
  fi
  if ! timeout 400 $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    # Not Debian 12 (e.g. Ubuntu): try the unversioned Boost names.
    local generic=("${missing[@]/libboost1.81-dev/libboost-dev}")
    generic=("${generic[@]/libboost-json1.81-dev/libboost-json-dev}")
    timeout 400 $sudo_cmd apt-get install -y -qq --no-install-recommends "${generic[@]}" || {
      echo "dependencies: apt-get install FAILED for: ${missing[*]}"
      return 1
    }
  fi
}
PREBUILT="${GPTJ_PREBUILT:-}"
if [ -z "$PREBUILT" ]; then
stage deps install_missing
echo "cmake: $(cmake --version 2>/dev/null | head -1)  ninja: $(ninja --version 2>/dev/null)  nvcc: $(nvcc --version 2>/dev/null | tail -1 || /usr/local/cuda/bin/nvcc --version | tail -1)"

# ---- 2. build -----------------------------------------------------------------------------------
GENERATOR=(-G "Unix Makefiles")
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
[ -e "$BUILD/CMakeCache.txt" ] && grep -q "CMAKE_GENERATOR:INTERNAL=Ninja" "$BUILD/CMakeCache.txt" && GENERATOR=(-G Ninja)
stage configure cmake -S . -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DGPTJ_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90
stage build cmake --build "$BUILD" -j"$JOBS"
fi

# ---- 3. GPU facts and tests ---------------------------------------------------------------------
stage nvidia-smi nvidia-smi
if [ -n "$PREBUILT" ]; then
  export GPTJ_TEST_DATA_DIR="$PWD/tests/data"
  stage gpu-kernel-tests timeout 600 "$PREBUILT/cuda_kernels_test"
  stage gpu-model-tests timeout 600 "$PREBUILT/cuda_model_test"
  stage gpu-draws-tests timeout 600 "$PREBUILT/cuda_draws_test"
  stage cpu-golden-tests timeout 600 "$PREBUILT/cpu_golden_test"
else
  run_gpu_tests() { (cd "$BUILD" && ctest -L gpu --output-on-failure --timeout 600); }
  stage ctest-gpu run_gpu_tests
fi

# ---- 4. golden through the CLI --------------------------------------------------------------------
GPTJ="${PREBUILT:-$BUILD/bin}/gptj"
MODEL=tests/data/tiny-gptj-a/model
EXPECTED=tests/data/tiny-gptj-a/expected/logits_p7_all.f32.bin
P7=23851,49049,5281,15473,14484,33667,12089  # tests/data/gptj_prompts.json, tiny-gptj-a, 7 tokens

# compare_npy A.npy B(.npy|.f32.bin) TOL: max |A - B| <= TOL (no numpy needed).
compare_npy() {
  python3 - "$@" <<'PY'
import ast, struct, sys
def load(path):
    data = open(path, 'rb').read()
    if path.endswith('.npy'):
        hlen = struct.unpack('<H', data[8:10])[0] if data[6] == 1 else struct.unpack('<I', data[8:12])[0]
        start = 10 + hlen if data[6] == 1 else 12 + hlen
        header = ast.literal_eval(data[start - hlen:start].decode('latin1'))
        assert header['descr'] == '<f4', header
        data = data[start:]
    return struct.unpack('<%df' % (len(data) // 4), data)
a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
if len(a) != len(b):
    print(f'size mismatch: {len(a)} vs {len(b)} values'); sys.exit(1)
worst = max(abs(x - y) for x, y in zip(a, b))
if any(v != v or v in (float('inf'), float('-inf')) for v in a):
    worst = float('inf')  # NaN/inf in the output: max() alone could skip a NaN
print(f'{sys.argv[1]} vs {sys.argv[2]}: max abs diff {worst:.3e} (tolerance {tol})')
sys.exit(0 if worst <= tol else 1)
PY
}
stage logits-fp16 "$GPTJ" logits --backend cuda --dtype float16 --model "$MODEL" --tokens "$P7" \
  --all-positions --output "$OUT/p7.npy"
stage golden-fp16 compare_npy "$OUT/p7.npy" "$EXPECTED" 2e-2
stage logits-bf16 "$GPTJ" logits --backend cuda --dtype bfloat16 --model "$MODEL" --tokens "$P7" \
  --all-positions --output "$OUT/p7_bf16.npy"
stage golden-bf16 compare_npy "$OUT/p7_bf16.npy" "$EXPECTED" 6e-2
stage logits-fp16-prefill4 "$GPTJ" logits --backend cuda --dtype float16 --model "$MODEL" \
  --tokens "$P7" --all-positions --prefill 4 --output "$OUT/p7_prefill4.npy"
stage decode-equals-oneshot compare_npy "$OUT/p7_prefill4.npy" "$OUT/p7.npy" 2e-2

# Generation end to end on the GPU (draw summaries, fetched rows for wide top-p): every line of
# examples/prompts.jsonl answered (one is a deliberate error line), and greedy output equal to the
# CPU backend's where the fixture's margins are wide (reported, not required: fp16 may flip ties).
generate_on_gpu() {
  "$GPTJ" batch --backend cuda --dtype float16 --model "$MODEL" --input examples/prompts.jsonl \
    --output "$OUT/batch_gpu.jsonl" || return 1
  "$GPTJ" batch --model "$MODEL" --input examples/prompts.jsonl --output "$OUT/batch_cpu.jsonl" || return 1
  python3 - "$OUT/batch_gpu.jsonl" "$OUT/batch_cpu.jsonl" examples/prompts.jsonl <<'PY'
import json, sys
gpu = [json.loads(l) for l in open(sys.argv[1])]
cpu = {r.get('id'): r for r in map(json.loads, open(sys.argv[2]))}
n_in = sum(1 for l in open(sys.argv[3]) if l.strip())
print(f'{len(gpu)} GPU result lines for {n_in} input lines')
same = sum(1 for r in gpu if 'text' in r and cpu.get(r.get('id'), {}).get('text') == r['text'])
print(f'{same} of {sum(1 for r in gpu if "text" in r)} texts equal to the CPU backend\'s')
sys.exit(0 if len(gpu) == n_in else 1)
PY
}
stage generate-gpu generate_on_gpu

# ---- 5. bench: GPT-J-6B shape, random weights made on the GPU ----------------------------------------
run_bench() {
  timeout 420 "$GPTJ" bench --backend cuda --dtype float16 --random-weights \
    --config configs/gptj-6b.json --decode-batches 1,8,64,256 --prefill-tokens 2048 |
    tee "$OUT/bench.jsonl"
  return "${PIPESTATUS[0]}"
}
stage bench run_bench
hbm_fraction() {
  python3 - "$OUT/bench.jsonl" <<'PY'
import json, sys
# Bytes a GPT-J-6B fp16 decode step must read: every layer weight and lm_head once (wte only for
# the batch's rows, so it is left out); biases and layernorms are float32.
E, L, V, I = 4096, 28, 50400, 16384
weights = 2 * (V * E + L * (4 * E * E + 2 * E * I)) + 4 * (V + 2 * E + L * (I + 3 * E))
peak = 4.8e12  # H200 HBM3e spec; ~4.3e12 measured in practice
for line in open(sys.argv[1]):
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    ms = rec.get('ms_per_step', rec.get('ms/step'))
    if rec.get('batch') == 1 and ms and 'decode' in str(rec.get('what', '')):
        bw = weights / (float(ms) * 1e-3)
        print(f'batch-1 decode: {float(ms):.3f} ms/step, {bw / 1e12:.2f} TB/s of weights = '
              f'{bw / peak:.1%} of 4.8 TB/s ({bw / 4.3e12:.1%} of the 4.3 TB/s measured)')
        sys.exit(0)
print('no batch-1 decode record with ms_per_step in the bench output'); sys.exit(1)
PY
}
stage hbm-fraction hbm_fraction

echo
if [ ${#failures[@]} -eq 0 ]; then
  echo "gpu-check: ALL STAGES PASSED ($SECONDS s)"
  exit 0
fi
echo "gpu-check: FAILED stages: ${failures[*]} ($SECONDS s)"
exit 1
