// The per-lane arithmetic of the weight-only int8 / int4 kernels (quant_linear.cu), as functions that
// compile for the device (nvcc) and for the host (any C++ compiler, with the CUDA headers): the GPU
// runs them in its kernels, and tests/gpu/cuda_quant_test.cc runs the same code on the CPU, lane by
// lane, to check the indexing and decoding on machines without a GPU. Layouts: cuda_kernels.h
// (QuantWeights). No allocation, no state.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cuda/cuda_kernels.h"

#if defined(__CUDACC__)
#define GPTJ_QUANT_HD __host__ __device__ __forceinline__
#define GPTJ_QUANT_UNROLL(n) _Pragma(n)
#else
#define GPTJ_QUANT_HD inline
#define GPTJ_QUANT_UNROLL(n)
#endif

namespace gptj::cuda::quant_lane {

constexpr int kLanes = 32;  // one warp per output column
constexpr int kRun = 16;    // consecutive values per lane per step

// A read-only load: through the read-only cache on the device, a plain load on the host.
template <typename U>
GPTJ_QUANT_HD U load_ro(const U* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}

GPTJ_QUANT_HD float to_f32(float v) { return v; }
GPTJ_QUANT_HD float to_f32(__half v) { return __half2float(v); }
GPTJ_QUANT_HD float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
GPTJ_QUANT_HD float half_bits_to_f32(uint16_t bits) {
  __half h;
  memcpy(static_cast<void*>(&h), &bits, sizeof(bits));
  return __half2float(h);
}

// Weight (r, c) of w, dequantized: scale * q in float32 (runtime/core/quant.h's dequantize_rows).
GPTJ_QUANT_HD float dequantized(const QuantWeights& w, int r, int c) {
  const uint8_t* row = w.values + static_cast<size_t>(r) * w.row_bytes();
  if (w.kind == QuantKind::kInt8)
    return static_cast<const float*>(w.scales)[r] * static_cast<float>(static_cast<int8_t>(row[c]));
  const uint8_t byte = row[c / 16 * 8 + c % 8];
  const int q = ((c % 16 < 8) ? (byte & 0x0F) : (byte >> 4)) - 8;
  const uint16_t* s = static_cast<const uint16_t*>(w.scales) + static_cast<size_t>(r) * w.groups();
  return half_bits_to_f32(s[c / kQuantGroup]) * static_cast<float>(q);
}

// Whether the gemv may use 16-byte loads: int8 rows at 16-byte boundaries; x rows at 16-byte
// boundaries (the int4 rows' 8-byte loads are always aligned: rows are multiples of 8 bytes).
GPTJ_QUANT_HD bool weight_vector_loads(const QuantWeights& w) {
  return w.kind == QuantKind::kInt8 && w.cols % 16 == 0 && reinterpret_cast<uintptr_t>(w.values) % 16 == 0;
}
template <typename T>
GPTJ_QUANT_HD bool input_vector_loads(const T* x, int ldx) {
  return (static_cast<size_t>(ldx) * sizeof(T)) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

// x[0..16) of one input row as float32; count < 16 reads only the first count (the rest 0).
template <typename T>
GPTJ_QUANT_HD void load_x16(const T* p, int count, bool vec, float* out) {
  constexpr int kPer = 16 / sizeof(T);  // T values per uint4
  if (vec && count == kRun) {
GPTJ_QUANT_UNROLL("unroll")
    for (int i = 0; i < kRun / kPer; ++i) {
      const uint4 bits = load_ro(reinterpret_cast<const uint4*>(p) + i);
      T v[kPer];
      memcpy(static_cast<void*>(v), &bits, sizeof(bits));
GPTJ_QUANT_UNROLL("unroll")
      for (int j = 0; j < kPer; ++j) out[i * kPer + j] = to_f32(v[j]);
    }
    return;
  }
GPTJ_QUANT_UNROLL("unroll")
  for (int i = 0; i < kRun; ++i) out[i] = i < count ? to_f32(p[i]) : 0.0f;
}

// The 16 quantized values of weight row `o` at columns c..c+16 (c a multiple of 16) as floats:
// past cols, 0 (int8) or the int4 row's padding (the code for 0). Returns the scale of this run's
// partial sums (int4: its group's; int8: 1, the row scale is applied once at the end).
template <QuantKind kKind>
GPTJ_QUANT_HD float load_w16(const QuantWeights& w, int o, int c, bool vec, float* out) {
  const uint8_t* row = w.values + static_cast<size_t>(o) * w.row_bytes();
  if constexpr (kKind == QuantKind::kInt8) {
    if (vec && c + kRun <= w.cols) {
      const uint4 bits = load_ro(reinterpret_cast<const uint4*>(row + c));
      int8_t q[kRun];
      memcpy(q, &bits, sizeof(bits));
GPTJ_QUANT_UNROLL("unroll")
      for (int i = 0; i < kRun; ++i) out[i] = static_cast<float>(q[i]);
    } else {
GPTJ_QUANT_UNROLL("unroll")
      for (int i = 0; i < kRun; ++i) out[i] = c + i < w.cols ? static_cast<float>(static_cast<int8_t>(row[c + i])) : 0.0f;
    }
    return 1.0f;
  } else {
    const uint2 bits = load_ro(reinterpret_cast<const uint2*>(row + c / 16 * 8));
    uint8_t b[8];
    memcpy(b, &bits, sizeof(bits));
GPTJ_QUANT_UNROLL("unroll")
    for (int j = 0; j < 8; ++j) {
      out[j] = static_cast<float>(static_cast<int>(b[j] & 0x0F) - 8);
      out[j + 8] = static_cast<float>(static_cast<int>(b[j] >> 4) - 8);
    }
    const uint16_t* s = static_cast<const uint16_t*>(w.scales) + static_cast<size_t>(o) * w.groups();
    return half_bits_to_f32(s[c / kQuantGroup]);
  }
}

// Lane `lane`'s partial sums acc[r] (r < rows <= kRows; the caller zeroes them) for output column o:
// its runs c = lane * 16, lane * 16 + 512, ... The column's value is row_scale(w, o) * (the sum of
// the 32 lanes' acc[r]).
template <typename T, QuantKind kKind, int kRows>
GPTJ_QUANT_HD void lane_partial(const T* x, int ldx, int rows, const QuantWeights& w, int o, int lane, bool w_vec,
                                bool x_vec, float* acc) {
GPTJ_QUANT_UNROLL("unroll 2")
  for (int c = lane * kRun; c < w.cols; c += kLanes * kRun) {
    float wv[kRun];
    const float scale = load_w16<kKind>(w, o, c, w_vec, wv);
    const int count = c + kRun <= w.cols ? kRun : w.cols - c;
GPTJ_QUANT_UNROLL("unroll")
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) break;
      float xv[kRun];
      load_x16(x + static_cast<size_t>(r) * ldx + c, count, x_vec, xv);
      float sum = 0.0f;
GPTJ_QUANT_UNROLL("unroll")
      for (int i = 0; i < kRun; ++i) sum = fmaf(wv[i], xv[i], sum);
      acc[r] = fmaf(scale, sum, acc[r]);
    }
  }
}

template <QuantKind kKind>
GPTJ_QUANT_HD float row_scale(const QuantWeights& w, int o) {
  if constexpr (kKind == QuantKind::kInt8) return static_cast<const float*>(w.scales)[o];
  return 1.0f;
}

}  // namespace gptj::cuda::quant_lane
