// Device-side helpers shared by the kernel files: float conversion of the storage types and warp /
// block reductions. Internal to kernels/cuda (included by .cu files only).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

namespace gptj::cuda::detail {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__host__ __device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Random weights: the key of tensor `tensor_id` under `seed`, and its approximately normal value i
// (Irwin-Hall: the sum of 4 uniforms of 16 bits each has mean 2, variance 1/3). Counter-based, so
// any element can be generated alone, deterministically.
__host__ __device__ __forceinline__ uint64_t random_key(uint64_t seed, uint64_t tensor_id) {
  return splitmix64(seed ^ splitmix64(tensor_id + 0x1234567ull));
}
__device__ __forceinline__ float random_normal(uint64_t key, size_t i) {
  const uint64_t bits = splitmix64(key ^ (i * 0xd6e8feb86659fd93ull));
  float sum = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) sum += static_cast<float>((bits >> (16 * k)) & 0xffffu) * (1.0f / 65536.0f);
  return (sum - 2.0f) * 1.7320508f;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; the call begins and ends with a barrier.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < warps ? scratch[lane] : 0.0f;
  total = warp_sum(total);
  return total;
}

// GPT-J rotary angle of pair i at position pos, as transformers (and the CPU kernel) compute it:
// inv_freq in float32 from a double pow, angle in float32.
__device__ __forceinline__ void rotary_sin_cos(int pos, int i, int rotary_dim, float* s, float* c) {
  const float inv_freq = 1.0f / static_cast<float>(pow(10000.0, (2.0 * i) / rotary_dim));
  sincosf(static_cast<float>(pos) * inv_freq, s, c);
}

// Offset of (position pos, head 0, dim 0) in a paged cache [num_blocks, block_size, n_heads, head_dim].
__device__ __forceinline__ size_t cache_offset(const int32_t* block_table, int block_size, int pos,
                                               int n_heads, int head_dim) {
  const size_t block = static_cast<size_t>(block_table[pos / block_size]);
  return (block * block_size + pos % block_size) * static_cast<size_t>(n_heads) * head_dim;
}

}  // namespace gptj::cuda::detail
