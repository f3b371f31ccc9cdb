// cpu::linear: y [rows, out] = x [rows, in] · W^T (+ bias), W [out, in] in float32, float16 or
// bfloat16. Which code runs depends on the number of input rows (a step's token count):
//   rows 1..3     memory-bound: every weight row is streamed once and dotted with the few inputs
//   rows 4..48    (float32; 4..64 for 16-bit weights) a 3-weight-row x 4-input-row register tile:
//                 each 8-float load feeds 3 or 4 FMAs; 16-bit weights are widened in registers.
//                 Measured on the project's 2-core VM at 32 rows it beats OpenBLAS sgemm by 10-35 %
//                 (which also packs the whole weight matrix first, even for one row).
//   more rows     OpenBLAS sgemm (16-bit weights widened block by block into a float32 scratch).
// The arithmetic is float32 throughout, so 16-bit weights give what their float32 widening gives.
#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/linear_quant.h"
#include "runtime/core/dtype.h"

namespace gptj::cpu {
namespace {

constexpr int kTiledRowsF32 = 48;  // float32 weights: the register tile up to here, then sgemm
constexpr int kTiledRows16 = 64;   // 16-bit weights: widening for sgemm costs more until here

using v8f = float __attribute__((vector_size(32), aligned(4)));  // 8 floats (AVX2 register)

inline float hsum(v8f v) {
  float sum = 0;
  for (int i = 0; i < 8; ++i) sum += v[i];
  return sum;
}

inline float dot(const float* w, const float* x, int in) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < in; ++i) sum += w[i] * x[i];
  return sum;
}

// Weight loaders: 8 consecutive weights as 8 floats.
struct LoadF32 {
  using Weight = float;
  static v8f load(const float* p) { return *reinterpret_cast<const v8f*>(p); }
};
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
template <bool kHalf>  // float16 when kHalf, else bfloat16
struct Load16 {
  using Weight = uint16_t;
  static v8f load(const uint16_t* p) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (kHalf) return reinterpret_cast<v8f>(_mm256_cvtph_ps(raw));
    return reinterpret_cast<v8f>(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16)));
  }
};
#endif

// The register tile: outputs o..o+2 for input rows r..r+3, 12 accumulators. A short last group
// (out % 3) or block (rows % 4) repeats its last weight row / input row; those results are not
// stored. `in` must be a multiple of 8.
template <class Load>
void linear_tiled(const float* x, int ldx, int rows, int in, const typename Load::Weight* weight, int out,
                  const float* bias, float* y, int ldy) {
  using W = typename Load::Weight;
  // Output groups are taken `chunk_groups` at a time: for each block of 4 input rows (16 KB at
  // in = 1024, kept in L1) the chunk's weight rows (96 KB, in L2) are visited, instead of re-reading
  // every input row block from L2 for each group. Longer rows do not fit L1: one group at a time.
  const int kChunk = in <= 2048 ? 8 : 1;
  const int groups = (out + 2) / 3;
#pragma omp parallel for schedule(static)
  for (int chunk = 0; chunk < (groups + kChunk - 1) / kChunk; ++chunk) {
    const int g_end = std::min(groups, (chunk + 1) * kChunk);
    for (int r0 = 0; r0 < rows; r0 += 4) {
      const int nr = std::min(4, rows - r0);
      const float* xr[4];
      for (int r = 0; r < 4; ++r) xr[r] = x + static_cast<std::size_t>(r0 + std::min(r, nr - 1)) * ldx;
      for (int group = chunk * kChunk; group < g_end; ++group) {
        const int o = 3 * group;
        const int n_out = std::min(3, out - o);
        const W* w[3];
        for (int k = 0; k < 3; ++k) w[k] = weight + static_cast<std::size_t>(o + std::min(k, n_out - 1)) * in;
        v8f acc[3][4] = {};
        for (int i = 0; i < in; i += 8) {
          const v8f w0 = Load::load(w[0] + i), w1 = Load::load(w[1] + i), w2 = Load::load(w[2] + i);
          for (int r = 0; r < 4; ++r) {
            const v8f xv = *reinterpret_cast<const v8f*>(xr[r] + i);
            acc[0][r] += w0 * xv;
            acc[1][r] += w1 * xv;
            acc[2][r] += w2 * xv;
          }
        }
        for (int k = 0; k < n_out; ++k)
          for (int r = 0; r < nr; ++r)
            y[static_cast<std::size_t>(r0 + r) * ldy + o + k] = hsum(acc[k][r]) + (bias ? bias[o + k] : 0.0f);
      }
    }
  }
}

// Float32, 1..3 rows (or `in` not a multiple of 8): a dot product per (output, row).
void linear_dots(const float* x, int ldx, int rows, int in, const float* weight, int out, const float* bias,
                 float* y, int ldy) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; ++o)
    for (int r = 0; r < rows; ++r)
      y[static_cast<std::size_t>(r) * ldy + o] =
          dot(weight + static_cast<std::size_t>(o) * in, x + static_cast<std::size_t>(r) * ldx, in) +
          (bias ? bias[o] : 0.0f);
}

#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
inline float hsum256(__m256 v) {
  const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_shuffle_ps(sum2, sum2, 1)));
}

// 16-bit weights, 1..3 rows: four weight rows at a time against one input row, two accumulators per
// weight row over alternating 8-float halves, so the loop streams the weights at memory speed
// instead of waiting on FMA latency. out % 4 and in % 16 must be 0.
template <bool kHalf>
void linear_few_rows_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                        const float* bias, float* y, int ldy) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; o += 4) {
    const uint16_t* w = weight + static_cast<std::size_t>(o) * in;
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + static_cast<std::size_t>(r) * ldx;
      __m256 a[4], c[4];
      for (int k = 0; k < 4; ++k) a[k] = c[k] = _mm256_setzero_ps();
      for (int i = 0; i < in; i += 16) {
        const __m256 lo = _mm256_loadu_ps(xr + i), hi = _mm256_loadu_ps(xr + i + 8);
        for (int k = 0; k < 4; ++k) {
          const uint16_t* wk = w + static_cast<std::size_t>(k) * in + i;
          a[k] = _mm256_fmadd_ps(reinterpret_cast<__m256>(Load16<kHalf>::load(wk)), lo, a[k]);
          c[k] = _mm256_fmadd_ps(reinterpret_cast<__m256>(Load16<kHalf>::load(wk + 8)), hi, c[k]);
        }
      }
      for (int k = 0; k < 4; ++k)
        y[static_cast<std::size_t>(r) * ldy + o + k] =
            hsum256(_mm256_add_ps(a[k], c[k])) + (bias ? bias[o + k] : 0.0f);
    }
  }
}

template <bool kHalf>
void linear_small_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                     const float* bias, float* y, int ldy) {
  if (rows < 4 && out % 4 == 0 && in % 16 == 0)
    linear_few_rows_16<kHalf>(x, ldx, rows, in, weight, out, bias, y, ldy);
  else
    linear_tiled<Load16<kHalf>>(x, ldx, rows, in, weight, out, bias, y, ldy);
}
#else
// Without AVX2/FMA/F16C: widen each weight row to float32 and use dot products.
template <bool kHalf>
void linear_small_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                     const float* bias, float* y, int ldy) {
  std::vector<float> row(static_cast<std::size_t>(in));
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) {
      const uint16_t bits = weight[static_cast<std::size_t>(o) * in + i];
      row[i] = kHalf ? f16_to_f32(bits) : bf16_to_f32(bits);
    }
    for (int r = 0; r < rows; ++r)
      y[static_cast<std::size_t>(r) * ldy + o] =
          dot(row.data(), x + static_cast<std::size_t>(r) * ldx, in) + (bias ? bias[o] : 0.0f);
  }
}
#endif

}  // namespace

void linear(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
            float* y, int ldy) {
  if (weight.dtype == WeightRef::kInt8 || weight.dtype == WeightRef::kInt4) {
    linear_quantized(x, ldx, rows, in, weight, out, bias, y, ldy);
    return;
  }
  if (weight.dtype == 0) {
    linear(x, ldx, rows, in, static_cast<const float*>(weight.data), out, bias, y, ldy);
    return;
  }
  const auto* w = static_cast<const uint16_t*>(weight.data);
  const bool half = weight.dtype == 1;
  if (rows <= kTiledRows16 && in % 8 == 0) {
    if (half)
      linear_small_16<true>(x, ldx, rows, in, w, out, bias, y, ldy);
    else
      linear_small_16<false>(x, ldx, rows, in, w, out, bias, y, ldy);
    return;
  }
  // Larger products: widen blocks of weight rows into a float32 scratch and let sgemm run on each.
  constexpr int kBlockRows = 512;
  static thread_local std::vector<float> scratch;  // the calling thread's; OpenMP workers get a pointer
  scratch.resize(static_cast<std::size_t>(kBlockRows) * in);
  float* const block = scratch.data();
  for (int o = 0; o < out; o += kBlockRows) {
    const int n = std::min(kBlockRows, out - o);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; ++r) {
      const uint16_t* src = w + static_cast<std::size_t>(o + r) * in;
      float* dst = block + static_cast<std::size_t>(r) * in;
      for (int i = 0; i < in; ++i) dst[i] = half ? f16_to_f32(src[i]) : bf16_to_f32(src[i]);
    }
    linear(x, ldx, rows, in, block, n, bias ? bias + o : nullptr, y + o, ldy);
  }
}

void linear(const float* x, int ldx, int rows, int in, const float* weight, int out,
            const float* bias, float* y, int ldy) {
  if (rows <= kTiledRowsF32) {
    if (rows >= 4 && in % 8 == 0)
      linear_tiled<LoadF32>(x, ldx, rows, in, weight, out, bias, y, ldy);
    else
      linear_dots(x, ldx, rows, in, weight, out, bias, y, ldy);
    return;
  }
  if (bias) {
    for (int r = 0; r < rows; ++r) std::memcpy(y + static_cast<std::size_t>(r) * ldy, bias, sizeof(float) * out);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, ldx, weight, in,
              bias ? 1.0f : 0.0f, y, ldy);
}

}  // namespace gptj::cpu
