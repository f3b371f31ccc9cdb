#!/usr/bin/env bash
# The default (portable) build runs on any x86-64-v3 CPU: the only AVX-512 instructions in the gptj
# binary are in the AVX-512 levels' kernels (kernels/cpu/linear_avx512.cc, linear_avx512vnni.cc,
# linear_avx512bf16.cc), which run only where kernels/cpu/cpu_isa.cc detects that level. objdump
# disassembles gptj; every EVEX-encoded instruction (first byte 0x62, AVX-512 only) must lie in a
# function of those files (their names carry an Avx512* level or byte-dot type), and there must be
# some (else the check would see nothing). A -DGPTJ_NATIVE=ON
# build is built for its own CPU and skips (exit 77).
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
fail() { echo "FAIL: $*"; exit 1; }
cache="$(dirname "$GPTJ")/../CMakeCache.txt"
if grep -q '^GPTJ_NATIVE:BOOL=ON' "$cache" 2>/dev/null; then echo "SKIP: a GPTJ_NATIVE=ON build"; exit 77; fi
command -v objdump >/dev/null || fail "objdump (binutils) is missing"

objdump -d -w -C --no-show-raw-insn "$GPTJ" > /dev/null || fail "objdump cannot read $GPTJ"
objdump -d -w -C "$GPTJ" | awk -F'\t' '
  /^[0-9a-f]+ <.*>:$/ { fn = $0; next }
  NF >= 3 && $2 ~ /^62 / { if (fn ~ /Avx512/) inside++; else { outside++; if (!(fn in seen)) { seen[fn] = 1; print "EVEX outside the avx512 kernels: " fn } } }
  END { printf "evex_inside=%d evex_outside=%d\n", inside, outside }' > "$WORK/evex.txt" || fail "objdump | awk"
cat "$WORK/evex.txt"
counts=$(tail -1 "$WORK/evex.txt")
[ "${counts#*evex_outside=}" = 0 ] || fail "AVX-512 instructions outside kernels/cpu/linear_avx512*.cc (listed above)"
inside=${counts#evex_inside=}
[ "${inside%% *}" -gt 0 ] || fail "no AVX-512 instructions found at all: the check saw nothing"
echo "ok portable: AVX-512 only in the avx512 kernels"
echo PASS
