// The int8 x int8 kernel (--int8-activations) written once over a "byte dot" level B, included by
// kernels/cpu/linear_simd.h into each level's translation unit (the B types live beside the level's
// V: linear_avx2.cc, avx512_level.h). Anonymous namespace for linear_simd.h's reason.
//
// B provides: vi (an integer register of kBytes int8 lanes, or 32-bit sums), kBytes, zero(),
// WeightBytes (kBytes weight codes made ready to multiply), weights(const int8_t*) -> WeightBytes,
// dot(vi acc, WeightBytes w, const int8_t* x) = acc + the exact int32 sums of w[j] * x[j] (x: kBytes
// activation codes, both in [-127, 127]; any grouping of the 32-bit lanes), and hsum(vi) -> int32.
//   avx2        vpsignb + vpmaddubsw + vpmaddwd + vpaddd per 32 bytes
//   avx512      the same per 64 bytes, the sign by a masked subtract (no vpsignb at 512 bits)
//   avx512vnni  masked subtract + vpdpbusd per 64 bytes (avx512bf16 too: those CPUs have VNNI)
#pragma once
#include <concepts>
#include <cstddef>
#include <cstdint>

namespace gptj::cpu {
namespace {  // NOLINT: see linear_simd.h

template <class B>
concept ByteDotLevel = requires(typename B::vi acc, const int8_t* p) {
  { B::kBytes } -> std::convertible_to<int>;
  B::dot(acc, B::weights(p), p);
  { B::hsum(acc) } -> std::convertible_to<int32_t>;
};

// Outputs o of R quantized input rows (row stride `stride`): y[r, o] = w_scale * sx[r] * sum + bias,
// the sum exact over the whole kBytes blocks, then a scalar tail of in % kBytes columns.
template <class B, int R>
void w8a8_rows(const int8_t* xq, int stride, int in, const int8_t* w, float w_scale, const float* sx, float bias,
               float* y, int ldy) {
  typename B::vi acc[R];
  for (int r = 0; r < R; ++r) acc[r] = B::zero();
  const int whole = in - in % B::kBytes;
  for (int i = 0; i < whole; i += B::kBytes) {
    const auto wb = B::weights(w + i);
    for (int r = 0; r < R; ++r) acc[r] = B::dot(acc[r], wb, xq + static_cast<std::size_t>(r) * stride + i);
  }
  for (int r = 0; r < R; ++r) {
    const int8_t* xr = xq + static_cast<std::size_t>(r) * stride;
    int32_t sum = B::hsum(acc[r]);
    for (int i = whole; i < in; ++i) sum += static_cast<int32_t>(w[i]) * xr[i];
    y[static_cast<std::size_t>(r) * ldy] = w_scale * sx[r] * static_cast<float>(sum) + bias;
  }
}

// LinearKernels::w8a8: y [rows, out] from quantized rows xq [rows, stride] with scales sx [rows] and
// int8 weights [out, in] with row scales. Each weight row is read once from memory and reused from L1
// for every block of 4 input rows; outputs are split over the OpenMP threads.
template <ByteDotLevel B>
void linear_w8a8(const int8_t* xq, int stride, int rows, int in, const int8_t* weight, const float* row_scale,
                 int out, const float* sx, const float* bias, float* y, int ldy) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; ++o) {
    const int8_t* wo = weight + static_cast<std::size_t>(o) * in;
    const float b = bias ? bias[o] : 0.0f;
    int r = 0;
    for (; r + 4 <= rows; r += 4)
      w8a8_rows<B, 4>(xq + static_cast<std::size_t>(r) * stride, stride, in, wo, row_scale[o], sx + r, b,
                      y + static_cast<std::size_t>(r) * ldy + o, ldy);
    const int8_t* xr = xq + static_cast<std::size_t>(r) * stride;
    float* yr = y + static_cast<std::size_t>(r) * ldy + o;
    switch (rows - r) {
      case 3: w8a8_rows<B, 3>(xr, stride, in, wo, row_scale[o], sx + r, b, yr, ldy); break;
      case 2: w8a8_rows<B, 2>(xr, stride, in, wo, row_scale[o], sx + r, b, yr, ldy); break;
      case 1: w8a8_rows<B, 1>(xr, stride, in, wo, row_scale[o], sx + r, b, yr, ldy); break;
      default: break;
    }
  }
}

}  // namespace
}  // namespace gptj::cpu
