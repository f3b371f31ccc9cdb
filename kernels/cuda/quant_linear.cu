// Weight-only int8 / int4 kernels (declarations and layouts: cuda_kernels.h, QuantWeights):
//   quant_gemv        decode-sized products (1..kQuantGemvMaxRows input rows). One warp per output
//                     column o streams weight row o once: each lane takes 16 consecutive values per
//                     step (int8: one 16-byte load, int4: one 8-byte load), so a warp reads 512 (256)
//                     contiguous bytes per step; the inputs come through L1 (every warp of an SM reads
//                     the same x). float32 accumulation, the int8 row scale / int4 group scale applied
//                     to each 16-value partial sum (int4) or once per row (int8).
//   quant_dequantize  rows of W to T for the tiled tensor-core path of larger batches.
//   fill_random_quantized  random codes and scales for --random-weights with --weights int8|int4.
#include <cstring>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/quant_lane.cuh"

namespace gptj::cuda {
namespace {

using detail::from_float;

constexpr int kWarpsPerBlock = 4;  // output columns per block of the gemv
constexpr int kThreads = 256;      // dequantize / fill

inline int blocks_for(size_t n) {
  size_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 65535u * 16u) blocks = 65535u * 16u;  // grid-stride loops cover the rest
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

// One warp per output column o; kRows >= rows input rows (rows known at run time, kRows unrolled).
template <typename T, QuantKind kKind, int kRows>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    quant_gemv_kernel(const T* __restrict__ x, int ldx, int rows, QuantWeights w, void* __restrict__ y, int ldy,
                      bool y_f32, bool w_vec, bool x_vec) {
  const int lane = threadIdx.x & 31;
  const int o = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (o >= w.rows) return;  // no block-wide barrier below
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
  quant_lane::lane_partial<T, kKind, kRows>(x, ldx, rows, w, o, lane, w_vec, x_vec, acc);
  const float scale = quant_lane::row_scale<kKind>(w, o);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) break;
    const float v = scale * detail::warp_sum(acc[r]);
    if (lane != 0) continue;
    const size_t at = static_cast<size_t>(r) * ldy + o;
    if (y_f32)
      static_cast<float*>(y)[at] = v;
    else
      static_cast<T*>(y)[at] = from_float<T>(v);
  }
}

template <typename T, QuantKind kKind, int kRows>
void launch_gemv(const T* x, int ldx, int rows, const QuantWeights& w, void* y, int ldy, bool y_f32,
                 cudaStream_t stream) {
  const bool w_vec = quant_lane::weight_vector_loads(w);
  const bool x_vec = quant_lane::input_vector_loads(x, ldx);
  const int blocks = (w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  quant_gemv_kernel<T, kKind, kRows>
      <<<blocks, kWarpsPerBlock * 32, 0, stream>>>(x, ldx, rows, w, y, ldy, y_f32, w_vec, x_vec);
}

template <typename T, QuantKind kKind>
void gemv_rows(const T* x, int ldx, int rows, const QuantWeights& w, void* y, int ldy, bool y_f32,
               cudaStream_t stream) {
  if (rows == 1)
    launch_gemv<T, kKind, 1>(x, ldx, rows, w, y, ldy, y_f32, stream);
  else if (rows == 2)
    launch_gemv<T, kKind, 2>(x, ldx, rows, w, y, ldy, y_f32, stream);
  else if (rows <= 4)
    launch_gemv<T, kKind, 4>(x, ldx, rows, w, y, ldy, y_f32, stream);
  else
    launch_gemv<T, kKind, kQuantGemvMaxRows>(x, ldx, rows, w, y, ldy, y_f32, stream);
}

template <typename T>
__global__ void dequantize_kernel(QuantWeights w, int row_begin, int n, T* __restrict__ out) {
  const size_t total = static_cast<size_t>(n) * w.cols;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int r = row_begin + static_cast<int>(idx / w.cols), c = static_cast<int>(idx % w.cols);
    out[idx] = from_float<T>(quant_lane::dequantized(w, r, c));
  }
}

// One thread per byte of values (int8: one value; int4: values j and j + 8 of its 16-value run),
// then one per scale.
__global__ void fill_random_quantized_kernel(QuantKind kind, int rows, int cols, uint64_t key, float stddev,
                                             uint8_t* __restrict__ values, void* __restrict__ scales) {
  const bool int8 = kind == QuantKind::kInt8;
  const float k = int8 ? 32.0f : 2.5f;
  const int limit = int8 ? 127 : 7;
  const size_t row_bytes = int8 ? static_cast<size_t>(cols) : static_cast<size_t>(cols + 15) / 16 * 8;
  const size_t total = rows * row_bytes;
  auto code = [&](int r, int c) {
    const float q = rintf(k * detail::random_normal(key, static_cast<size_t>(r) * cols + c));
    return static_cast<int>(fminf(fmaxf(q, static_cast<float>(-limit)), static_cast<float>(limit)));
  };
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < total; idx += stride) {
    const int r = static_cast<int>(idx / row_bytes), b = static_cast<int>(idx % row_bytes);
    if (int8) {
      values[idx] = static_cast<uint8_t>(static_cast<int8_t>(code(r, b)));
    } else {
      const int c0 = b / 8 * 16 + b % 8, c1 = c0 + 8;
      const int lo = c0 < cols ? code(r, c0) + 8 : 8, hi = c1 < cols ? code(r, c1) + 8 : 8;
      values[idx] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
  const size_t n_scales = int8 ? static_cast<size_t>(rows) : static_cast<size_t>(rows) * ((cols + kQuantGroup - 1) / kQuantGroup);
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < n_scales; idx += stride) {
    if (int8)
      static_cast<float*>(scales)[idx] = stddev / k;
    else
      static_cast<__half*>(scales)[idx] = __float2half_rn(stddev / k);
  }
}

}  // namespace

template <typename T>
void quant_gemv(const T* x, int ldx, int rows, const QuantWeights& w, void* y, int ldy, bool y_f32,
                cudaStream_t stream) {
  if (rows <= 0 || w.rows <= 0) return;
  if (rows > kQuantGemvMaxRows)
    throw_cuda_error(cudaErrorInvalidValue, "quant_gemv: more than kQuantGemvMaxRows (8) rows", __FILE__, __LINE__);
  if (w.kind == QuantKind::kInt8)
    gemv_rows<T, QuantKind::kInt8>(x, ldx, rows, w, y, ldy, y_f32, stream);
  else
    gemv_rows<T, QuantKind::kInt4>(x, ldx, rows, w, y, ldy, y_f32, stream);
  check_launch("quant_gemv");
}

template <typename T>
void quant_dequantize(const QuantWeights& w, int row_begin, int n, T* out, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(n) * w.cols;
  if (total == 0) return;
  dequantize_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(w, row_begin, n, out);
  check_launch("quant_dequantize");
}

void fill_random_quantized(QuantKind kind, int rows, int cols, uint64_t seed, uint64_t tensor_id, float stddev,
                           uint8_t* values, void* scales, cudaStream_t stream) {
  QuantWeights shape;
  shape.kind = kind;
  shape.rows = rows;
  shape.cols = cols;
  const size_t total = rows * shape.row_bytes();
  if (total == 0) return;
  // A key of its own per format, so int8 and int4 random weights are not the same normals rounded.
  const uint64_t key = detail::random_key(seed, tensor_id * 2 + (kind == QuantKind::kInt4 ? 1 : 0));
  fill_random_quantized_kernel<<<blocks_for(total), kThreads, 0, stream>>>(kind, rows, cols, key, stddev, values,
                                                                           scales);
  check_launch("fill_random_quantized");
}

#define GPTJ_INSTANTIATE(T)                                                                           \
  template void quant_gemv<T>(const T*, int, int, const QuantWeights&, void*, int, bool, cudaStream_t); \
  template void quant_dequantize<T>(const QuantWeights&, int, int, T*, cudaStream_t);

GPTJ_INSTANTIATE(float)
GPTJ_INSTANTIATE(__half)
GPTJ_INSTANTIATE(__nv_bfloat16)
#undef GPTJ_INSTANTIATE

}  // namespace gptj::cuda
