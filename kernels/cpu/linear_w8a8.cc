// cpu::linear for int8 weights with int8 activations (opt-in: --int8-activations): each input row is
// quantized on the fly (symmetric, one float32 scale per row), the products are exact int32 sums of
// int8 x int8, and one float multiply per output applies both scales. On AVX2 the int8 products are
// vpmaddubsw (|w| as unsigned bytes times x with w's sign) + vpmaddwd: 32 weights in ~4 instructions
// instead of ~16 when the weights are widened to float32, so a core is no longer compute-bound below
// its share of the memory bandwidth. What it changes is the arithmetic (the activations' rounding):
// its accuracy is measured in tests/golden/quant_golden_test.cc.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/linear_quant.h"

namespace gptj::cpu {

int activation_row_stride(int in) { return (in + 31) / 32 * 32; }

void quantize_activation_rows(const float* x, int ldx, int rows, int in, int8_t* xq, float* sx) {
  const int stride = activation_row_stride(in);
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<std::size_t>(r) * ldx;
    float m = 0.0f;
    for (int i = 0; i < in; ++i) m = std::max(m, std::fabs(xr[i]));
    sx[r] = m / 127.0f;
    int8_t* q = xq + static_cast<std::size_t>(r) * stride;
    for (int i = 0; i < stride; ++i)
      q[i] = (i < in && m > 0.0f) ? static_cast<int8_t>(std::clamp(std::nearbyint(xr[i] / sx[r]), -127.0f, 127.0f)) : 0;
  }
}

namespace {

#if defined(__AVX2__)
inline int32_t hsum_epi32(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i s2 = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0xB1)));
}

// Output o for quantized input rows 0..R-1 (row stride `stride`, zero-padded to it): exact int32
// sums over the row's 32-column runs, then the scalar tail of in % 32 columns.
template <int R>
void w8a8_row(const int8_t* xq, int stride, int in, const int8_t* w, float w_scale, const float* sx, float bias,
              float* y, int ldy) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
  const int in32 = in / 32 * 32;
  for (int i = 0; i < in32; i += 32) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    const __m256i w_abs = _mm256_abs_epi8(wv);
    for (int r = 0; r < R; ++r) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + static_cast<std::size_t>(r) * stride + i));
      // |w| * (x with w's sign) = w * x; pairs summed to int16 (at most 2 * 127 * 127: no saturation).
      const __m256i pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(xv, wv));
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(pairs, ones));
    }
  }
  for (int r = 0; r < R; ++r) {
    const int8_t* xr = xq + static_cast<std::size_t>(r) * stride;
    int32_t sum = hsum_epi32(acc[r]);
    for (int i = in32; i < in; ++i) sum += static_cast<int32_t>(w[i]) * xr[i];
    y[static_cast<std::size_t>(r) * ldy] = w_scale * sx[r] * static_cast<float>(sum) + bias;
  }
}
#else
template <int R>
void w8a8_row(const int8_t* xq, int stride, int in, const int8_t* w, float w_scale, const float* sx, float bias,
              float* y, int ldy) {
  for (int r = 0; r < R; ++r) {
    int32_t sum = 0;
    for (int i = 0; i < in; ++i) sum += static_cast<int32_t>(w[i]) * xq[static_cast<std::size_t>(r) * stride + i];
    y[static_cast<std::size_t>(r) * ldy] = w_scale * sx[r] * static_cast<float>(sum) + bias;
  }
}
#endif

}  // namespace

void linear_int8_activations(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
                             float* y, int ldy) {
  const int stride = activation_row_stride(in);
  static thread_local std::vector<int8_t> xq;  // the calling thread's; OpenMP workers get a pointer
  static thread_local std::vector<float> sx;
  xq.resize(static_cast<std::size_t>(rows) * stride);
  sx.resize(static_cast<std::size_t>(rows));
  quantize_activation_rows(x, ldx, rows, in, xq.data(), sx.data());
  const auto* w = static_cast<const int8_t*>(weight.data);
  const auto* w_scales = static_cast<const float*>(weight.scales);
  const int8_t* q = xq.data();
  const float* s = sx.data();
  // Each weight row is read once from memory and reused from L1 for every block of 4 input rows.
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; ++o) {
    const int8_t* wo = w + static_cast<std::size_t>(o) * in;
    const float b = bias ? bias[o] : 0.0f;
    int r = 0;
    for (; r + 4 <= rows; r += 4)
      w8a8_row<4>(q + static_cast<std::size_t>(r) * stride, stride, in, wo, w_scales[o], s + r, b,
                  y + static_cast<std::size_t>(r) * ldy + o, ldy);
    const std::size_t at = static_cast<std::size_t>(r);
    switch (rows - r) {
      case 3: w8a8_row<3>(q + at * stride, stride, in, wo, w_scales[o], s + r, b, y + at * ldy + o, ldy); break;
      case 2: w8a8_row<2>(q + at * stride, stride, in, wo, w_scales[o], s + r, b, y + at * ldy + o, ldy); break;
      case 1: w8a8_row<1>(q + at * stride, stride, in, wo, w_scales[o], s + r, b, y + at * ldy + o, ldy); break;
      default: break;
    }
  }
}

}  // namespace gptj::cpu
