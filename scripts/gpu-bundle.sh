#!/usr/bin/env bash
# Builds, on this (GPU-less) machine, everything scripts/gpu-check.sh needs on a GPU machine that
# cannot install packages: gptj and the GPU/golden test binaries for sm_90, single-process
# (GPTJ_MPI=OFF), portable CPU code (GPTJ_NATIVE=OFF), plus the shared libraries they need that a
# CUDA image lacks (OpenBLAS, Boost.JSON, spdlog, fmt...; CUDA's own libraries are taken from the
# GPU machine). Output: gpu-bundle.tar.xz. On the GPU machine:
#   tar xf gpu-bundle.tar.xz && export LD_LIBRARY_PATH=$PWD/gpu-bundle/lib:$LD_LIBRARY_PATH
#   GPTJ_PREBUILT=gpu-bundle/bin scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-gpu-bundle
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPTJ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DGPTJ_MPI=OFF -DGPTJ_NATIVE=OFF >/dev/null
nice ninja -C $build -j"${JOBS:-2}" gptj cuda_kernels_test cuda_model_test cuda_draws_test cpu_golden_test
rm -rf gpu-bundle && mkdir -p gpu-bundle/bin gpu-bundle/lib
for bin in gptj cuda_kernels_test cuda_model_test cuda_draws_test cpu_golden_test; do
  cp $build/bin/$bin gpu-bundle/bin/
  strip gpu-bundle/bin/$bin
done
# Shared libraries other than glibc/libstdc++ and CUDA's (those are on the GPU machine).
ldd gpu-bundle/bin/* | awk '/=>/ {print $1, $3}' | sort -u | while read -r name path; do
  case $name in
    libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|ld-linux*|libstdc++*|libgcc_s*|linux-vdso*) ;;
    libcublas*|libcudart*|libnccl*|libcuda.so*) ;;
    *) cp -L "$path" gpu-bundle/lib/"$name" ;;
  esac
done
tar cJf gpu-bundle.tar.xz gpu-bundle
ls -la gpu-bundle.tar.xz gpu-bundle/lib
