#!/usr/bin/env bash
# Builds, on this (GPU-less) machine, everything scripts/gpu-check.sh needs on a GPU machine that
# cannot install packages: gptj and the GPU/golden test binaries for sm_90, single-process
# (GPTJ_MPI=OFF: no MPI, no NCCL), portable CPU code (GPTJ_NATIVE=OFF, the default: x86-64-v3, the
# AVX-512 kernels chosen at run time), with no RUNPATH, plus the
# shared libraries they need that a CUDA image lacks (OpenBLAS, Boost.JSON, spdlog, fmt, OpenMP...).
# CUDA's own libraries (libcudart, libcublas, libcublasLt) are NOT carried (hundreds of MB): on the
# GPU machine scripts/gpu-libs.sh finds them (toolkit, driver folder or Python wheels) at start-up.
# Output: gpu-bundle.tar.gz (gzip: minimal CUDA images often lack xz) in the repository root, or
# in $BUNDLE_OUT.
#
# On the GPU machine (the device tool copies only the working tree's unignored files plus what
# `carry` names, so the archive MUST be named in carry: carry=["gpu-bundle.tar.gz"]):
#   GPTJ_PREBUILT=gpu-bundle.tar.gz bash scripts/gpu-check.sh
# (gpu-check.sh unpacks it into /tmp, with plain `tar xzf` or Python's tarfile where tar fails.)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUNDLE_BUILD:-build-gpu-bundle}
out=${BUNDLE_OUT:-$PWD}
binaries=(gptj cuda_kernels_test cuda_model_test cuda_draws_test cuda_quant_test cpu_golden_test linear_test
          weights16_test linear_quant_test bf16_golden_test)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPTJ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DGPTJ_MPI=OFF -DGPTJ_NATIVE=OFF -DCMAKE_SKIP_RPATH=ON >/dev/null
nice ninja -C "$build" -j"${JOBS:-2}" "${binaries[@]}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/gpu-bundle/bin" "$stage/gpu-bundle/lib" "$stage/gpu-bundle/lib-fallback"
for bin in "${binaries[@]}"; do
  cp "$build/bin/$bin" "$stage/gpu-bundle/bin/"
  strip "$stage/gpu-bundle/bin/$bin"
done
# Shared libraries other than glibc's, the C++ runtime's and CUDA's. libstdc++/libgcc_s go to
# lib-fallback/: used only where the GPU machine's own are older than these binaries need.
ldd "$stage"/gpu-bundle/bin/* | awk '/=> \// {print $1, $3}' | sort -u | while read -r name path; do
  case $name in
    libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|ld-linux*|linux-vdso*) ;;
    libcublas*|libcudart*|libnccl*|libcuda.so*) ;;
    libstdc++*|libgcc_s*) cp -L "$path" "$stage/gpu-bundle/lib-fallback/$name" ;;
    *) cp -L "$path" "$stage/gpu-bundle/lib/$name" ;;
  esac
done
git rev-parse --short HEAD > "$stage/gpu-bundle/COMMIT" 2>/dev/null || echo unknown > "$stage/gpu-bundle/COMMIT"
mkdir -p "$out"
tar czf "$out/gpu-bundle.tar.gz" -C "$stage" gpu-bundle
ls -la "$out/gpu-bundle.tar.gz"
echo "bundle: $(cat "$stage/gpu-bundle/COMMIT"); libraries: $(ls "$stage/gpu-bundle/lib" | tr '\n' ' ')"
