// Row-wise and element-wise GPT-J kernels: embedding, layernorm, rotary, bias + gelu_new, residual
// adds, random fill. Semantics match kernels/cpu/cpu_kernels.cc; math in float32.
#include <cmath>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_types.cuh"

namespace gptj::cuda {
namespace {

using detail::from_float;
using detail::to_float;

constexpr int kThreads = 256;

inline int blocks_for(size_t n, int threads = kThreads) {
  size_t blocks = (n + threads - 1) / threads;
  if (blocks > 65535u * 16u) blocks = 65535u * 16u;  // grid-stride loops cover the rest
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

template <typename T>
__global__ void embedding_kernel(const T* wte, const int32_t* ids, int dim, float* out) {
  const int t = blockIdx.x;
  const T* src = wte + static_cast<size_t>(ids[t]) * dim;
  float* dst = out + static_cast<size_t>(t) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = to_float(src[i]);
}

template <typename T>
__global__ void layernorm_kernel(const float* x, const int32_t* row_index, const float* gamma,
                                 const float* beta, T* y, int dim, float eps) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const int src = row_index ? row_index[r] : r;
  const float* xr = x + static_cast<size_t>(src) * dim;
  T* yr = y + static_cast<size_t>(r) * dim;
  float sum = 0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += xr[i];
  const float mean = detail::block_sum(sum, scratch) / dim;
  float sq = 0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = xr[i] - mean;
    sq += d * d;
  }
  const float var = detail::block_sum(sq, scratch) / dim;
  const float inv = 1.0f / sqrtf(var + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x)
    yr[i] = from_float<T>((xr[i] - mean) * inv * gamma[i] + beta[i]);
}

template <typename T>
__global__ void rotary_kernel(T* x, int row_stride, int n_heads, int head_dim, int rotary_dim,
                              const int32_t* positions) {
  const int t = blockIdx.x;
  const int half = rotary_dim / 2;
  T* row = x + static_cast<size_t>(t) * row_stride;
  for (int idx = threadIdx.x; idx < n_heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    float s, c;
    detail::rotary_sin_cos(positions[t], i, rotary_dim, &s, &c);
    T* pair = row + h * head_dim + 2 * i;
    const float a = to_float(pair[0]), b = to_float(pair[1]);
    pair[0] = from_float<T>(a * c - b * s);
    pair[1] = from_float<T>(b * c + a * s);
  }
}

template <typename T>
__global__ void bias_gelu_kernel(T* x, const float* bias, int rows, int cols, int ld) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  const size_t n = static_cast<size_t>(rows) * cols;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(idx / cols), c = static_cast<int>(idx % cols);
    T* p = x + static_cast<size_t>(r) * ld + c;
    const float v = to_float(*p) + bias[c];
    *p = from_float<T>(0.5f * v * (1.0f + tanhf(kSqrt2OverPi * (v + 0.044715f * v * v * v))));
  }
}

template <typename T>
__global__ void residual_add_kernel(float* x, const T* partial, const float* bias, int rows,
                                    int cols) {
  const size_t n = static_cast<size_t>(rows) * cols;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float b = bias ? bias[idx % cols] : 0.0f;
    x[idx] += to_float(partial[idx]) + b;
  }
}

__global__ void add_bias_f32_kernel(float* x, const float* bias, int rows, int cols) {
  const size_t n = static_cast<size_t>(rows) * cols;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x)
    x[idx] += bias[idx % cols];
}

template <typename T>
__global__ void fill_random_kernel(T* p, size_t n, uint64_t seed, uint64_t tensor_id, float mean,
                                   float stddev) {
  const uint64_t key = detail::random_key(seed, tensor_id);
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[idx] = from_float<T>(mean + stddev * detail::random_normal(key, idx));
}

}  // namespace

template <typename T>
void embedding(const T* wte, const int32_t* ids, int n, int dim, float* out, cudaStream_t stream) {
  if (n <= 0) return;
  embedding_kernel<T><<<n, kThreads, 0, stream>>>(wte, ids, dim, out);
  check_launch("embedding");
}

template <typename T>
void layernorm(const float* x, const int32_t* row_index, const float* gamma, const float* beta, T* y,
               int rows, int dim, float eps, cudaStream_t stream) {
  if (rows <= 0) return;
  layernorm_kernel<T><<<rows, kThreads, 0, stream>>>(x, row_index, gamma, beta, y, dim, eps);
  check_launch("layernorm");
}

template <typename T>
void rotary_gptj(T* x, int tokens, int row_stride, int n_heads, int head_dim, int rotary_dim,
                 const int32_t* positions, cudaStream_t stream) {
  if (tokens <= 0 || rotary_dim <= 0) return;
  rotary_kernel<T><<<tokens, 128, 0, stream>>>(x, row_stride, n_heads, head_dim, rotary_dim, positions);
  check_launch("rotary_gptj");
}

template <typename T>
void bias_gelu_new(T* x, const float* bias, int rows, int cols, int ld, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(rows) * cols;
  if (n == 0) return;
  bias_gelu_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(x, bias, rows, cols, ld);
  check_launch("bias_gelu_new");
}

template <typename T>
void residual_add(float* x, const T* partial, const float* bias, int rows, int cols,
                  cudaStream_t stream) {
  const size_t n = static_cast<size_t>(rows) * cols;
  if (n == 0) return;
  residual_add_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(x, partial, bias, rows, cols);
  check_launch("residual_add");
}

void add_bias_f32(float* x, const float* bias, int rows, int cols, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(rows) * cols;
  if (n == 0) return;
  add_bias_f32_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, bias, rows, cols);
  check_launch("add_bias_f32");
}

template <typename T>
void fill_random(T* p, std::size_t n, uint64_t seed, uint64_t tensor_id, float mean, float stddev,
                 cudaStream_t stream) {
  if (n == 0) return;
  fill_random_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(p, n, seed, tensor_id, mean, stddev);
  check_launch("fill_random");
}

#define GPTJ_INSTANTIATE(T)                                                                        \
  template void embedding<T>(const T*, const int32_t*, int, int, float*, cudaStream_t);            \
  template void layernorm<T>(const float*, const int32_t*, const float*, const float*, T*, int, int, \
                             float, cudaStream_t);                                                 \
  template void rotary_gptj<T>(T*, int, int, int, int, int, const int32_t*, cudaStream_t);         \
  template void bias_gelu_new<T>(T*, const float*, int, int, int, cudaStream_t);                   \
  template void residual_add<T>(float*, const T*, const float*, int, int, cudaStream_t);           \
  template void fill_random<T>(T*, std::size_t, uint64_t, uint64_t, float, float, cudaStream_t);

GPTJ_INSTANTIATE(float)
GPTJ_INSTANTIATE(__half)
GPTJ_INSTANTIATE(__nv_bfloat16)
#undef GPTJ_INSTANTIATE

}  // namespace gptj::cuda
