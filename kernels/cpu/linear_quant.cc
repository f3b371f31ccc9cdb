// cpu::linear with int8 / int4 weights. Which code runs depends on the number of input rows:
//   rows 1..3  memory-bound decode: the quantized rows are streamed once, widened to float32 in
//              registers and FMA'd with the inputs; the scale multiplies once per output (int8) or per
//              128-column group (int4). Each weight row is streamed front to back (several
//              accumulators per input row), the rows split over the threads in contiguous ranges.
//              int8: the active ISA level's kernel (linear_simd.h, kWidth codes per load); int4: the
//              AVX2 code below (16 values per 8-byte load) at every level.
//   int8, 4..64 rows: the active ISA level's 3 x 4 register tile (linear_simd.h) on the codes,
//              widened to float32 in registers; the row's scale multiplies each finished sum.
//   more rows  compute-bound: panels of weight rows are dequantized into a float32 scratch (L2-sized)
//   (int4: 4+) and the float32 cpu::linear runs on each panel (its register tile, or sgemm).
// Baseline ISA: AVX2 + FMA (x86-64-v3, what every gptj build targets); without AVX2 every size takes
// the panel path.
#include "kernels/cpu/linear_quant.h"

#include <immintrin.h>

#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/widened_blocks.h"
#include "runtime/core/dtype.h"
#include "runtime/core/quant.h"

namespace gptj::cpu {
namespace {

constexpr int kPanelRows = 256;  // weight rows dequantized per panel (in = 4096: 4 MiB of float32)
constexpr int kTiledRowsInt8 = 64;  // int8, 4..this many rows: the level's register tile on the codes

// One row, scalar (any width): runtime/core/quant's reference, scale * q with one rounding.
void dequantize_row_scalar(WeightRef weight, int in, int r, float* out) {
  const auto* values = static_cast<const uint8_t*>(weight.data);
  if (weight.dtype == WeightRef::kInt8) {
    dequantize_int8_row(reinterpret_cast<const int8_t*>(values) + static_cast<std::size_t>(r) * in,
                        static_cast<const float*>(weight.scales)[r], in, out);
    return;
  }
  dequantize_int4_row(values + static_cast<std::size_t>(r) * int4_row_bytes(in),
                      static_cast<const uint16_t*>(weight.scales) + static_cast<std::size_t>(r) * int4_groups(in), in,
                      out);
}

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_shuffle_ps(sum2, sum2, 1)));
}

inline __m256 widen_int8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// int4: 16 values from 8 bytes (layout in runtime/core/quant.h) as two runs of 8 floats.
inline void widen_int4(const uint8_t* p, __m256& lo, __m256& hi) {
  const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m256i mask = _mm256_set1_epi32(0x0F), eight = _mm256_set1_epi32(8);
  lo = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(bytes, mask), eight));
  hi = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bytes, 4), eight));
}

// One row with AVX2: the same products as dequantize_row_scalar (scale * q), 8 or 16 at a time.
void dequantize_row(WeightRef weight, int in, int r, float* out) {
  if (weight.dtype == WeightRef::kInt8) {
    const __m256 scale = _mm256_set1_ps(static_cast<const float*>(weight.scales)[r]);
    const auto* q = static_cast<const int8_t*>(weight.data) + static_cast<std::size_t>(r) * in;
    const int in8 = in / 8 * 8;
    for (int c = 0; c < in8; c += 8) _mm256_storeu_ps(out + c, _mm256_mul_ps(scale, widen_int8(q + c)));
    const float s = static_cast<const float*>(weight.scales)[r];
    for (int c = in8; c < in; ++c) out[c] = s * static_cast<float>(q[c]);
    return;
  }
  if (in % 16 != 0) {
    dequantize_row_scalar(weight, in, r, out);
    return;
  }
  const uint16_t* scales = static_cast<const uint16_t*>(weight.scales) + static_cast<std::size_t>(r) * int4_groups(in);
  const uint8_t* row = static_cast<const uint8_t*>(weight.data) + static_cast<std::size_t>(r) * int4_row_bytes(in);
  for (int c = 0; c < in; c += 16) {
    const __m256 scale = _mm256_set1_ps(_cvtsh_ss(scales[c / kInt4Group]));
    __m256 lo, hi;
    widen_int4(row + c / 2, lo, hi);
    _mm256_storeu_ps(out + c, _mm256_mul_ps(scale, lo));
    _mm256_storeu_ps(out + c + 8, _mm256_mul_ps(scale, hi));
  }
}

// int4, output o for input rows 0..R-1 (in % 16 == 0): one weight row streamed front to back,
// 16 values per 8-byte load. A full 128-column group is 4 fixed steps of 32 values into A
// accumulators per input row (4, or 2 for 3 rows, to stay in registers); a short last group goes 16
// values at a time. Each group's sum is scaled into the row's total.
template <int R>
void int4_row(const float* x, int ldx, int in, const uint8_t* w, const uint16_t* scales, float bias, float* y,
              int ldy) {
  constexpr int A = R == 3 ? 2 : 4;
  __m256 total[R];
  for (int r = 0; r < R; ++r) total[r] = _mm256_setzero_ps();
  for (int g = 0; g * kInt4Group < in; ++g) {
    const int begin = g * kInt4Group;
    __m256 acc[R][A];
    for (int r = 0; r < R; ++r)
      for (int a = 0; a < A; ++a) acc[r][a] = _mm256_setzero_ps();
    auto unit = [&](int i, int a) {  // 16 values at column i into accumulators a, a + 1
      __m256 lo, hi;
      widen_int4(w + i / 2, lo, hi);
      for (int r = 0; r < R; ++r) {
        const float* xr = x + static_cast<std::size_t>(r) * ldx + i;
        acc[r][a] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xr), acc[r][a]);
        acc[r][a + 1] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xr + 8), acc[r][a + 1]);
      }
    };
    if (in - begin >= kInt4Group) {
      for (int i = begin; i < begin + kInt4Group; i += 32) {
        unit(i, 0);
        unit(i + 16, A - 2);
      }
    } else {
      for (int i = begin; i < in; i += 16) unit(i, 0);
    }
    const __m256 scale = _mm256_set1_ps(_cvtsh_ss(scales[g]));  // F16C: exact, as f16_to_f32
    for (int r = 0; r < R; ++r) {
      __m256 sum = acc[r][0];
      for (int a = 1; a < A; ++a) sum = _mm256_add_ps(sum, acc[r][a]);
      total[r] = _mm256_fmadd_ps(sum, scale, total[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[static_cast<std::size_t>(r) * ldy] = hsum(total[r]) + bias;
}

// int4, R input rows: the outputs in parallel, each thread streaming a contiguous range of weight rows.
template <int R>
void few_rows_int4(const float* x, int ldx, int in, WeightRef weight, int out, const float* bias, float* y, int ldy) {
  const auto* values = static_cast<const uint8_t*>(weight.data);
  const int row_bytes = static_cast<int>(int4_row_bytes(in)), groups = static_cast<int>(int4_groups(in));
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; ++o)
    int4_row<R>(x, ldx, in, values + static_cast<std::size_t>(o) * row_bytes,
                static_cast<const uint16_t*>(weight.scales) + static_cast<std::size_t>(o) * groups, bias ? bias[o] : 0.0f,
                y + o, ldy);
}
#else
void dequantize_row(WeightRef weight, int in, int r, float* out) { dequantize_row_scalar(weight, in, r, out); }
#endif

// Panels of dequantized rows through the float32 linear(): the arithmetic of the float32 product
// with the dequantized weights, exactly.
void linear_panels(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias, float* y,
                   int ldy) {
  linear_widened_blocks(x, ldx, rows, in, out, bias, y, ldy, kPanelRows,
                        [&](int row, float* dst) { dequantize_row(weight, in, row, dst); });
}

}  // namespace

void dequantize_weight_rows(WeightRef weight, int in, int row_begin, int n, float* out) {
  for (int r = row_begin; r < row_begin + n; ++r, out += in) dequantize_row(weight, in, r, out);
}

void linear_quantized(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
                      float* y, int ldy) {
  if (weight.dtype == WeightRef::kInt8 && weight.int8_activations) {
    linear_int8_activations(x, ldx, rows, in, weight, out, bias, y, ldy);
    return;
  }
  if (weight.dtype == WeightRef::kInt8 && rows <= 3) {
    active_linear_kernels().few_rows_int8(x, ldx, rows, in, static_cast<const int8_t*>(weight.data),
                                          static_cast<const float*>(weight.scales), out, bias, y, ldy);
    return;
  }
#if defined(__AVX2__) && defined(__FMA__)
  if (weight.dtype == WeightRef::kInt4 && rows <= 3 && in % 16 == 0) {
    if (rows == 1) few_rows_int4<1>(x, ldx, in, weight, out, bias, y, ldy);
    if (rows == 2) few_rows_int4<2>(x, ldx, in, weight, out, bias, y, ldy);
    if (rows == 3) few_rows_int4<3>(x, ldx, in, weight, out, bias, y, ldy);
    return;
  }
#endif
  if (weight.dtype == WeightRef::kInt8 && rows <= kTiledRowsInt8 && in % 8 == 0) {
    active_linear_kernels().tiled_int8(x, ldx, rows, in, static_cast<const int8_t*>(weight.data),
                                       static_cast<const float*>(weight.scales), out, bias, y, ldy);
    return;
  }
  linear_panels(x, ldx, rows, in, weight, out, bias, y, ldy);
}

}  // namespace gptj::cpu
