// Per-tensor FP8 E4M3 quantization for --weights fp8 (declarations: cuda_kernels.h, fp8_quantize):
// one kernel takes max|x| (a block reduction per block, then an atomic max on the float's bits, which
// order like the values for non-negative floats), a second derives the scale s = max / 448 and writes
// round-to-nearest(x / s) saturated to the finite E4M3 range. The products themselves are cuBLASLt's
// (runtime/backend/cuda_gemm.h, linear_fp8). The conversions are cuda_fp8.h's, which compile for
// every architecture (emulated below sm_89); only the FP8 products need sm_89+.
#include <cuda_fp8.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_types.cuh"

namespace gptj::cuda {
namespace {

using detail::to_float;

constexpr int kThreads = 256;

inline int blocks_for(size_t n) {
  size_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 4096) blocks = 4096;  // grid-stride loops cover the rest (few atomics for the max)
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

template <typename T>
__global__ void abs_max_kernel(const T* __restrict__ x, int rows, int cols, int ld, float* amax) {
  __shared__ float scratch[32];
  const size_t total = static_cast<size_t>(rows) * cols;
  float m = 0.0f;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    m = fmaxf(m, fabsf(to_float(x[(i / cols) * ld + i % cols])));
  m = detail::warp_max(m);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : 0.0f;
    m = detail::warp_max(m);
    if (lane == 0) atomicMax(reinterpret_cast<unsigned int*>(amax), __float_as_uint(m));
  }
}

template <typename T>
__global__ void fp8_quantize_kernel(const T* __restrict__ x, int rows, int cols, int ld, float* scale,
                                    __nv_fp8_e4m3* __restrict__ out) {
  const float amax = scale[0];
  const float s = amax > 0.0f ? amax / kFp8Max : 1.0f;
  if (blockIdx.x == 0 && threadIdx.x == 0) scale[1] = s;
  const size_t total = static_cast<size_t>(rows) * cols;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = __nv_fp8_e4m3(to_float(x[(i / cols) * ld + i % cols]) / s);  // saturates to +-448
}

}  // namespace

template <typename T>
void fp8_quantize(const T* x, int rows, int cols, int ld, float* scale, uint8_t* out, cudaStream_t stream) {
  GPTJ_CUDA_CHECK(cudaMemsetAsync(scale, 0, sizeof(float), stream));
  const size_t total = static_cast<size_t>(rows) * cols;
  if (total == 0) return;
  abs_max_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(x, rows, cols, ld, scale);
  check_launch("fp8_quantize (max)");
  fp8_quantize_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(x, rows, cols, ld, scale,
                                                                     reinterpret_cast<__nv_fp8_e4m3*>(out));
  check_launch("fp8_quantize");
}

#define GPTJ_INSTANTIATE(T) template void fp8_quantize<T>(const T*, int, int, int, float*, uint8_t*, cudaStream_t);
GPTJ_INSTANTIATE(float)
GPTJ_INSTANTIATE(__half)
GPTJ_INSTANTIATE(__nv_bfloat16)
#undef GPTJ_INSTANTIATE

}  // namespace gptj::cuda
