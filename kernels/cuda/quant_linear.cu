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

namespace gptj::cuda {
namespace {

using detail::from_float;
using detail::to_float;

constexpr int kWarpsPerBlock = 4;  // output columns per block of the gemv
constexpr int kThreads = 256;      // dequantize / fill

inline int blocks_for(size_t n) {
  size_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 65535u * 16u) blocks = 65535u * 16u;  // grid-stride loops cover the rest
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

__device__ __forceinline__ float half_bits_to_float(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }

// Value c (0..cols) of int4 row `row`, as an integer in [-8, 7].
__device__ __forceinline__ int int4_at(const uint8_t* row, int c) {
  const uint8_t byte = row[c / 16 * 8 + c % 8];
  return ((c % 16 < 8) ? (byte & 0x0F) : (byte >> 4)) - 8;
}

// x[0..16) of one input row as float32; `count` < 16 reads only the first count (the rest 0).
// vec: p is 16-byte aligned (whole uint4 loads).
template <typename T>
__device__ __forceinline__ void load_x16(const T* p, int count, bool vec, float* out) {
  constexpr int kPer = 16 / sizeof(T);  // T values per uint4
  if (vec && count == 16) {
#pragma unroll
    for (int i = 0; i < 16 / kPer; ++i) {
      const uint4 bits = __ldg(reinterpret_cast<const uint4*>(p) + i);
      T v[kPer];
      memcpy(v, &bits, sizeof(bits));
#pragma unroll
      for (int j = 0; j < kPer; ++j) out[i * kPer + j] = to_float(v[j]);
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < 16; ++i) out[i] = i < count ? to_float(p[i]) : 0.0f;
}

// The 16 quantized values of weight row `row` at columns c..c+16 (c a multiple of 16), as floats;
// values past cols read as 0 (int8) or come from the int4 row's padding (code for 0).
// Returns the scale to apply to this run's partial sums (int4: its group's; int8: 1, applied per row).
template <QuantKind kKind>
__device__ __forceinline__ float load_w16(const uint8_t* row, const void* scales, int o, int groups, int c,
                                          int cols, bool vec, float* out) {
  if constexpr (kKind == QuantKind::kInt8) {
    if (vec && c + 16 <= cols) {
      const uint4 bits = __ldg(reinterpret_cast<const uint4*>(row + c));
      int8_t q[16];
      memcpy(q, &bits, sizeof(bits));
#pragma unroll
      for (int i = 0; i < 16; ++i) out[i] = static_cast<float>(q[i]);
    } else {
      const int8_t* q = reinterpret_cast<const int8_t*>(row);
#pragma unroll
      for (int i = 0; i < 16; ++i) out[i] = c + i < cols ? static_cast<float>(q[c + i]) : 0.0f;
    }
    return 1.0f;
  } else {
    const uint2 bits = __ldg(reinterpret_cast<const uint2*>(row + c / 16 * 8));  // rows are 8-byte multiples
    uint8_t b[8];
    memcpy(b, &bits, sizeof(bits));
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      out[j] = static_cast<float>(static_cast<int>(b[j] & 0x0F) - 8);
      out[j + 8] = static_cast<float>(static_cast<int>(b[j] >> 4) - 8);
    }
    const uint16_t* s = static_cast<const uint16_t*>(scales) + static_cast<size_t>(o) * groups;
    return half_bits_to_float(s[c / kQuantGroup]);
  }
}

// One warp per output column o; kRows >= rows input rows (rows known at run time, kRows unrolled).
template <typename T, QuantKind kKind, int kRows>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    quant_gemv_kernel(const T* __restrict__ x, int ldx, int rows, QuantWeights w, void* __restrict__ y, int ldy,
                      bool y_f32, bool w_vec, bool x_vec) {
  const int lane = threadIdx.x & 31;
  const int o = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (o >= w.rows) return;  // no block-wide barrier below
  const uint8_t* row = w.values + static_cast<size_t>(o) * w.row_bytes();
  const int groups = w.groups();
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
#pragma unroll 2
  for (int c = lane * 16; c < w.cols; c += 32 * 16) {
    float wv[16];
    const float scale = load_w16<kKind>(row, w.scales, o, groups, c, w.cols, w_vec, wv);
    const int count = min(16, w.cols - c);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) break;
      float xv[16];
      load_x16(x + static_cast<size_t>(r) * ldx + c, count, x_vec, xv);
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < 16; ++i) sum = fmaf(wv[i], xv[i], sum);
      acc[r] = fmaf(scale, sum, acc[r]);
    }
  }
  const float row_scale = kKind == QuantKind::kInt8 ? static_cast<const float*>(w.scales)[o] : 1.0f;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) break;
    const float v = row_scale * detail::warp_sum(acc[r]);
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
  const bool w_vec = kKind == QuantKind::kInt8 && w.cols % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(w.values) % 16 == 0;
  const bool x_vec = (static_cast<size_t>(ldx) * sizeof(T)) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
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
  const int groups = w.groups();
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int r = row_begin + static_cast<int>(idx / w.cols), c = static_cast<int>(idx % w.cols);
    const uint8_t* row = w.values + static_cast<size_t>(r) * w.row_bytes();
    float v;
    if (w.kind == QuantKind::kInt8) {
      v = static_cast<const float*>(w.scales)[r] * static_cast<float>(reinterpret_cast<const int8_t*>(row)[c]);
    } else {
      const uint16_t* s = static_cast<const uint16_t*>(w.scales) + static_cast<size_t>(r) * groups;
      v = half_bits_to_float(s[c / kQuantGroup]) * static_cast<float>(int4_at(row, c));
    }
    out[idx] = from_float<T>(v);
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
