// The linear kernels written once over a vector "level" V, included by each level's translation unit
// (linear_avx2.cc, linear_avx512.cc), which supplies V and is built with that level's flags.
//
// V provides: vf (the register type), kWidth (floats per register), zero(), add(a, b),
// fmadd(a, b, c) = a * b + c, hsum(v), and loads of kWidth consecutive weights widened to float —
// load(const float*), load(F16{}, const uint16_t*), load(BF16{}, const uint16_t*),
// load(Int8{}, const int8_t*) (the codes as floats) — plus load8(...) of the same four forms: 8 values in the low lanes, zeros above (kWidth == 8: the same as load) —
// and store(float*, vf) of kWidth floats.
//
// Everything here is in an anonymous namespace on purpose: an inline function or template
// instantiation with external linkage, compiled in two translation units with different flags, is
// merged by the linker into one copy — possibly the AVX-512 one, which the avx2 level would then run
// (SIGILL). For the same reason this file uses no std:: algorithm templates.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/linear_kernels.h"

namespace gptj::cpu {
namespace {  // NOLINT: see above

struct F16 {};   // float16 weight bits
struct BF16 {};  // bfloat16 weight bits
struct Int8 {};  // int8 weight codes (runtime/core/quant.h: one float32 scale per weight row)

inline int imin(int a, int b) { return a < b ? a : b; }
inline std::size_t at(int row, int stride) { return static_cast<std::size_t>(row) * stride; }

// The stored element of each weight format.
template <class Format>
struct StoredAs {
  using type = uint16_t;  // F16, BF16
};
template <>
struct StoredAs<Int8> {
  using type = int8_t;
};

// Weights of one format (float, F16, BF16 or Int8) widened to floats: get(p) one register,
// get<true>(p) 8 values in the low lanes (load8).
template <class V, class Format>
struct Weights {
  using Weight = typename StoredAs<Format>::type;
  template <bool kLow8 = false>
  static typename V::vf get(const Weight* p) {
    if constexpr (kLow8) return V::load8(Format{}, p);
    return V::load(Format{}, p);
  }
};
template <class V>
struct Weights<V, float> {
  using Weight = float;
  template <bool kLow8 = false>
  static typename V::vf get(const float* p) {
    if constexpr (kLow8) return V::load8(p);
    return V::load(p);
  }
};

// One register step of the tile below at column i: acc[k][r] += w[k][i..] * xr[r][i..] (kLow8: the
// last 8 columns, in the low lanes).
template <class V, class Format, bool kLow8>
inline void tile_step(typename V::vf (&acc)[3][4], const typename Weights<V, Format>::Weight* const (&w)[3],
                      const float* const (&xr)[4], int i) {
  using W = Weights<V, Format>;
  const typename V::vf w0 = W::template get<kLow8>(w[0] + i), w1 = W::template get<kLow8>(w[1] + i),
                       w2 = W::template get<kLow8>(w[2] + i);
  for (int r = 0; r < 4; ++r) {
    const typename V::vf xv = Weights<V, float>::template get<kLow8>(xr[r] + i);
    acc[0][r] = V::fmadd(w0, xv, acc[0][r]);
    acc[1][r] = V::fmadd(w1, xv, acc[1][r]);
    acc[2][r] = V::fmadd(w2, xv, acc[2][r]);
  }
}

// The register tile: outputs o..o+2 for input rows r..r+3, 12 accumulators. A short last group
// (out % 3) or block (rows % 4) repeats its last weight row / input row; those results are not
// stored. in % 8 == 0: a last part of 8 (kWidth 16) is loaded into the low lanes. With row_scale
// (int8 codes), y = row_scale[o] * (the sum over the codes) + bias.
template <class V, class Format>
void linear_tiled_scaled(const float* x, int ldx, int rows, int in, const typename Weights<V, Format>::Weight* weight,
                         const float* row_scale, int out, const float* bias, float* y, int ldy) {
  using W = Weights<V, Format>;
  using vf = typename V::vf;
  constexpr int kW = V::kWidth;
  // Output groups are taken `chunk` at a time: for each block of 4 input rows (16 KB at in = 1024,
  // kept in L1) the chunk's weight rows (96 KB, in L2) are visited, instead of re-reading every
  // input row block from L2 for each group. Longer rows do not fit L1: one group at a time.
  const int chunk = in <= 2048 ? 8 : 1;
  const int groups = (out + 2) / 3;
  const int full = in - in % kW;  // the part covered by whole registers
#pragma omp parallel for schedule(static)
  for (int c = 0; c < (groups + chunk - 1) / chunk; ++c) {
    const int g_end = imin(groups, (c + 1) * chunk);
    for (int r0 = 0; r0 < rows; r0 += 4) {
      const int nr = imin(4, rows - r0);
      const float* xr[4];
      for (int r = 0; r < 4; ++r) xr[r] = x + at(r0 + imin(r, nr - 1), ldx);
      for (int group = c * chunk; group < g_end; ++group) {
        const int o = 3 * group;
        const int n_out = imin(3, out - o);
        const typename W::Weight* w[3];
        for (int k = 0; k < 3; ++k) w[k] = weight + at(o + imin(k, n_out - 1), in);
        vf acc[3][4];
        for (auto& row : acc)
          for (vf& a : row) a = V::zero();
        for (int i = 0; i < full; i += kW) tile_step<V, Format, false>(acc, w, xr, i);
        if (full < in) tile_step<V, Format, true>(acc, w, xr, full);  // kWidth 16 and in % 16 == 8
        for (int k = 0; k < n_out; ++k) {
          const float scale = row_scale ? row_scale[o + k] : 1.0f, b = bias ? bias[o + k] : 0.0f;
          for (int r = 0; r < nr; ++r) y[at(r0 + r, ldy) + o + k] = scale * V::hsum(acc[k][r]) + b;
        }
      }
    }
  }
}

template <class V, class Format>
void linear_tiled(const float* x, int ldx, int rows, int in, const typename Weights<V, Format>::Weight* weight,
                  int out, const float* bias, float* y, int ldy) {
  linear_tiled_scaled<V, Format>(x, ldx, rows, in, weight, nullptr, out, bias, y, ldy);
}

template <class V>
void linear_tiled_int8(const float* x, int ldx, int rows, int in, const int8_t* weight, const float* row_scale, int out,
                       const float* bias, float* y, int ldy) {
  linear_tiled_scaled<V, Int8>(x, ldx, rows, in, weight, row_scale, out, bias, y, ldy);
}

// w · x over `in` floats (any in): two accumulators over alternating registers, the rest scalar.
template <class V>
float dot(const float* w, const float* x, int in) {
  constexpr int kW = V::kWidth;
  typename V::vf a = V::zero(), b = V::zero();
  int i = 0;
  for (; i + 2 * kW <= in; i += 2 * kW) {
    a = V::fmadd(V::load(w + i), V::load(x + i), a);
    b = V::fmadd(V::load(w + i + kW), V::load(x + i + kW), b);
  }
  for (; i + kW <= in; i += kW) a = V::fmadd(V::load(w + i), V::load(x + i), a);
  float sum = V::hsum(V::add(a, b));
  for (; i < in; ++i) sum += w[i] * x[i];
  return sum;
}

// Float32, few rows (or `in` not a multiple of 8): a dot product per (output, row).
template <class V>
void linear_dots(const float* x, int ldx, int rows, int in, const float* weight, int out, const float* bias,
                 float* y, int ldy) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; ++o)
    for (int r = 0; r < rows; ++r)
      y[at(r, ldy) + o] = dot<V>(weight + at(o, in), x + at(r, ldx), in) + (bias ? bias[o] : 0.0f);
}

// 16-bit weights, 1..3 rows: four weight rows at a time against one input row, two accumulators per
// weight row over alternating registers, so the loop streams the weights at memory speed instead of
// waiting on FMA latency. out % 4 == 0 and in % 16 == 0 (kWidth 16: a last 16 goes to one register).
template <class V, class Format>
void linear_few_rows_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                        const float* bias, float* y, int ldy) {
  using W = Weights<V, Format>;
  using vf = typename V::vf;
  constexpr int kW = V::kWidth;
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; o += 4) {
    const uint16_t* w = weight + at(o, in);
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + at(r, ldx);
      vf a[4], c[4];
      for (int k = 0; k < 4; ++k) a[k] = c[k] = V::zero();
      int i = 0;
      for (; i + 2 * kW <= in; i += 2 * kW) {
        const vf lo = V::load(xr + i), hi = V::load(xr + i + kW);
        for (int k = 0; k < 4; ++k) {
          const uint16_t* wk = w + at(k, in) + i;
          a[k] = V::fmadd(W::get(wk), lo, a[k]);
          c[k] = V::fmadd(W::get(wk + kW), hi, c[k]);
        }
      }
      if (i < in) {  // kWidth 16 and in % 32 == 16
        const vf lo = V::load(xr + i);
        for (int k = 0; k < 4; ++k) a[k] = V::fmadd(W::get(w + at(k, in) + i), lo, a[k]);
      }
      for (int k = 0; k < 4; ++k) y[at(r, ldy) + o + k] = V::hsum(V::add(a[k], c[k])) + (bias ? bias[o + k] : 0.0f);
    }
  }
}

// 16-bit weights, rows 1..64, in % 8 == 0: the streaming kernel where it applies, else the tile.
template <class V, class Format>
void linear_small_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                     const float* bias, float* y, int ldy) {
  if (rows < 4 && out % 4 == 0 && in % 16 == 0)
    linear_few_rows_16<V, Format>(x, ldx, rows, in, weight, out, bias, y, ldy);
  else
    linear_tiled<V, Format>(x, ldx, rows, in, weight, out, bias, y, ldy);
}

// dst [n] = src [n] widened to float32. The last n % kWidth values go through a zero-padded copy
// (no scalar conversion: a scalar helper from another header could be merged across levels).
template <class V, class Format>
void widen_16(const uint16_t* src, int n, float* dst) {
  int i = 0;
  for (; i + V::kWidth <= n; i += V::kWidth) V::store(dst + i, V::load(Format{}, src + i));
  if (i == n) return;
  uint16_t bits[V::kWidth] = {};
  float wide[V::kWidth];
  for (int k = 0; k < n - i; ++k) bits[k] = src[i + k];
  V::store(wide, V::load(Format{}, bits));
  for (int k = 0; k < n - i; ++k) dst[i + k] = wide[k];
}

// The table of one level.
template <class V>
constexpr LinearKernels linear_kernels_of() {
  return {linear_dots<V>,       linear_tiled<V, float>, linear_small_16<V, F16>, linear_small_16<V, BF16>,
          linear_tiled_int8<V>, widen_16<V, F16>,       widen_16<V, BF16>};
}

}  // namespace
}  // namespace gptj::cpu
