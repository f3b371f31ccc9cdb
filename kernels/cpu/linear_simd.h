// The linear kernels written once over a vector "level" V, included by each level's translation unit
// (linear_avx2.cc, linear_avx512.cc, linear_avx512bf16.cc), which supplies V and is built with that
// level's flags.
//
// V provides: vf (the register type), kWidth (floats per register), zero(), add(a, b),
// fmadd(a, b, c) = a * b + c, hsum(v), and loads of kWidth consecutive weights widened to float —
// load(const float*), load(F16{}, const uint16_t*), load(BF16{}, const uint16_t*),
// load(Int8{}, const int8_t*) (the codes as floats) — plus load8(...) of the same four forms (8 values
// in the low lanes, zeros above; kWidth == 8: the same as load), and store(float*, vf) of kWidth
// floats. Optional: kTileOutputs, the weight rows of the register tile (default 3: 16 registers hold 12
// accumulators, 3 weights and an input; 6 at avx512, whose 32 registers hold 24), and pin(v), which
// makes v an opaque register value (linear_simd.h's pinned()).
//
// A level with bfloat16 dot products (avx512bf16; an emulation in the tests) also provides vbf (a
// register of 2 * kWidth bfloat16 values), load_bf16(const uint16_t*) of 2 * kWidth values,
// round_to_bf16(const float* src, uint16_t* dst): 2 * kWidth floats to bfloat16, round to nearest
// even (vcvtne2ps2bf16: denormals to signed zero, NaN kept quiet NaN), and dot_bf16(acc, a, b): per
// float lane i, acc += a[2i+1] * b[2i+1], then acc += a[2i] * b[2i] (vdpbf16ps: each an FMA of an
// exact product, rounded to nearest even; denormal inputs are zero, denormal results flushed to zero).
// linear_kernels_of<V>() then fills tiled_bf16_dot.
//
// A level names its int8 x int8 dot as V::Bytes (kernels/cpu/w8a8_simd.h); linear_kernels_of<V>() then
// fills w8a8 (every real level has one; the tests' emulated levels do not).
//
// Everything here is in an anonymous namespace on purpose: an inline function or template
// instantiation with external linkage, compiled in two translation units with different flags, is
// merged by the linker into one copy — possibly the AVX-512 one, which the avx2 level would then run
// (SIGILL). For the same reason this file uses no std:: algorithm templates.
#pragma once
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/w8a8_simd.h"

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

// The register tile's weight rows at level V (the outputs one pass over `in` produces per input row).
template <class V>
constexpr int tile_outputs_of() {
  if constexpr (requires { V::kTileOutputs; })
    return V::kTileOutputs;
  else
    return 3;
}

// v as an opaque register value where the level has pin(): a load feeding several FMAs is then done
// once. (Without it GCC 12 folded each use into its FMA as a memory operand at 512 bits: the tile's
// loop made 15 loads per 12 FMAs instead of 7 and ran at 0.7x the avx2 tile's speed on Zen 4.)
template <class V, class T>
inline T pinned(T v) {
  if constexpr (requires { V::pin(v); })
    return V::pin(v);
  else
    return v;
}

// One register step of the tile below at column i: acc[k][r] += w[k][i..] * xr[r][i..] (kLow8: the
// last 8 columns, in the low lanes); K = tile_outputs_of<V>().
template <class V, class Format, bool kLow8, int K>
inline void tile_step(typename V::vf (&acc)[K][4], const typename Weights<V, Format>::Weight* const (&w)[K],
                      const float* const (&xr)[4], int i) {
  using W = Weights<V, Format>;
  typename V::vf wv[K];
  for (int k = 0; k < K; ++k) wv[k] = pinned<V>(W::template get<kLow8>(w[k] + i));
  for (int r = 0; r < 4; ++r) {
    const typename V::vf xv = pinned<V>(Weights<V, float>::template get<kLow8>(xr[r] + i));
    for (int k = 0; k < K; ++k) acc[k][r] = V::fmadd(wv[k], xv, acc[k][r]);
  }
}

// The register tile's loops, for every format: K = tile_outputs_of<V>() outputs o..o+K-1 for input
// rows r..r+3, 4K accumulators. A short last group (out % K) or block (rows % 4) repeats its last
// weight row / input row; those results are not stored. accumulate(acc, w, xr) adds the products of
// the K weight rows w (row stride ldw) and the 4 input rows xr (row stride ldx) over all `in`
// columns; then y = row_scale[o] * sum + bias (row_scale null: the sum).
template <class V, class XElem, class WElem, class Accumulate>
void tile_outputs(int rows, int in, int out, const XElem* x, int ldx, const WElem* weight, int ldw,
                  const float* row_scale, const float* bias, float* y, int ldy, const Accumulate& accumulate) {
  using vf = typename V::vf;
  constexpr int K = tile_outputs_of<V>();
  // Output groups are taken `chunk` at a time: for each block of 4 input rows (16 KB at in = 1024,
  // kept in L1) the chunk's 24 weight rows (96 KB, in L2) are visited, instead of re-reading every
  // input row block from L2 for each group. Longer rows do not fit L1: one group at a time.
  const int chunk = in <= 2048 ? 24 / K : 1;
  const int groups = (out + K - 1) / K;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < (groups + chunk - 1) / chunk; ++c) {
    const int g_end = imin(groups, (c + 1) * chunk);
    for (int r0 = 0; r0 < rows; r0 += 4) {
      const int nr = imin(4, rows - r0);
      const XElem* xr[4];
      for (int r = 0; r < 4; ++r) xr[r] = x + at(r0 + imin(r, nr - 1), ldx);
      for (int group = c * chunk; group < g_end; ++group) {
        const int o = K * group;
        const int n_out = imin(K, out - o);
        const WElem* w[K];
        for (int k = 0; k < K; ++k) w[k] = weight + at(o + imin(k, n_out - 1), ldw);
        vf acc[K][4];
        for (auto& row : acc)
          for (vf& a : row) a = V::zero();
        accumulate(acc, w, xr);
        for (int k = 0; k < n_out; ++k) {
          const float scale = row_scale ? row_scale[o + k] : 1.0f, b = bias ? bias[o + k] : 0.0f;
          for (int r = 0; r < nr; ++r) y[at(r0 + r, ldy) + o + k] = scale * V::hsum(acc[k][r]) + b;
        }
      }
    }
  }
}

// The register tile on float / 16-bit / int8 weights, in % 8 == 0: a last part of 8 (kWidth 16) is
// loaded into the low lanes. With row_scale (int8 codes), y = row_scale[o] * (the sum over the
// codes) + bias.
template <class V, class Format>
void linear_tiled_scaled(const float* x, int ldx, int rows, int in, const typename Weights<V, Format>::Weight* weight,
                         const float* row_scale, int out, const float* bias, float* y, int ldy) {
  using Weight = typename Weights<V, Format>::Weight;
  const int full = in - in % V::kWidth;  // the part covered by whole registers
  tile_outputs<V>(rows, in, out, x, ldx, weight, in, row_scale, bias, y, ldy,
                  [full, in](auto& acc, const Weight* const(&w)[tile_outputs_of<V>()], const float* const(&xr)[4]) {
                    for (int i = 0; i < full; i += V::kWidth) tile_step<V, Format, false>(acc, w, xr, i);
                    if (full < in) tile_step<V, Format, true>(acc, w, xr, full);  // kWidth 16, in % 16 == 8
                  });
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

// Weights of any stored format (Int8 codes, F16, BF16), 1..3 input rows (decode: memory-bound),
// output o: the weight row streamed front to back, U = 4 / R (at least 2) independent accumulators per
// input row over consecutive registers, so the loop waits on memory, not on FMA latency; then
// (kWidth 16) a last 8 in the low lanes, for int8 the in % 8 columns in scalar (16-bit weights come
// with in % 8 == 0), and the row's scale (int8 codes; 1 for 16-bit) once on its sum.
template <class V, class Format, int R>
void stream_rows(const float* x, int ldx, int in, const typename StoredAs<Format>::type* w, float scale, float bias,
                 float* y, int ldy) {
  using vf = typename V::vf;
  using W = Weights<V, Format>;
  constexpr int kW = V::kWidth, U = R == 1 ? 4 : 2;
  vf acc[R][U];
  for (auto& row : acc)
    for (vf& a : row) a = V::zero();
  const int unrolled = in / (kW * U) * (kW * U), whole = in / kW * kW;
  for (int i = 0; i < unrolled; i += kW * U)
    for (int u = 0; u < U; ++u) {
      const vf wv = W::get(w + i + kW * u);
      for (int r = 0; r < R; ++r) acc[r][u] = V::fmadd(wv, V::load(x + at(r, ldx) + i + kW * u), acc[r][u]);
    }
  for (int i = unrolled; i < whole; i += kW) {
    const vf wv = W::get(w + i);
    for (int r = 0; r < R; ++r) acc[r][0] = V::fmadd(wv, V::load(x + at(r, ldx) + i), acc[r][0]);
  }
  int tail = whole;
  if (kW == 16 && in - tail >= 8) {
    const vf wv = W::template get<true>(w + tail);
    for (int r = 0; r < R; ++r) acc[r][0] = V::fmadd(wv, V::load8(x + at(r, ldx) + tail), acc[r][0]);
    tail += 8;
  }
  for (int r = 0; r < R; ++r) {
    const float* xr = x + at(r, ldx);
    vf sum = acc[r][0];
    for (int u = 1; u < U; ++u) sum = V::add(sum, acc[r][u]);
    float total = V::hsum(sum);
    if constexpr (std::is_same_v<Format, Int8>)
      for (int i = tail; i < in; ++i) total += static_cast<float>(w[i]) * xr[i];
    y[at(r, ldy)] = scale * total + bias;
  }
}

// 1..3 rows, any in (16-bit weights: in % 8 == 0): the outputs split over the threads in contiguous
// ranges, each thread streaming its weight rows one after the other. Measured against 4 interleaved
// weight rows at a time: int8 on a 2-core Zen 3 VM 1.7x faster; float16 on a 2-core Zen 4 VM, 1 row x
// 1024 x 131072 (268 MB), 2.5x at 1 thread (26.7 -> 10.5 ms), 1.8-2.0x at 2 (16.1 -> 8.1 ms: 33 GB/s,
// what float32 and int8 reach there).
template <class V, class Format>
void linear_few_rows(const float* x, int ldx, int rows, int in, const typename StoredAs<Format>::type* weight,
                     const float* row_scale, int out, const float* bias, float* y, int ldy) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; ++o) {
    const auto* w = weight + at(o, in);
    const float scale = row_scale ? row_scale[o] : 1.0f, b = bias ? bias[o] : 0.0f;
    if (rows == 1) stream_rows<V, Format, 1>(x, ldx, in, w, scale, b, y + o, ldy);
    if (rows == 2) stream_rows<V, Format, 2>(x, ldx, in, w, scale, b, y + o, ldy);
    if (rows == 3) stream_rows<V, Format, 3>(x, ldx, in, w, scale, b, y + o, ldy);
  }
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

// 16-bit weights, rows 1..64, in % 8 == 0: the streaming kernel where it applies, else the tile.
template <class V, class Format>
void linear_small_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                     const float* bias, float* y, int ldy) {
  if (rows < 4)
    linear_few_rows<V, Format>(x, ldx, rows, in, weight, nullptr, out, bias, y, ldy);
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

template <class V>
concept HasBf16Dot = requires(typename V::vf acc, typename V::vbf a, const uint16_t* p, const float* src,
                              uint16_t* dst) {
  { V::load_bf16(p) } -> std::same_as<typename V::vbf>;
  V::round_to_bf16(src, dst);
  { V::dot_bf16(acc, a, a) } -> std::same_as<typename V::vf>;
};

// One register step of the bfloat16 tile at column i: acc[k][r] += pairs of w[k][i..] * xr[r][i..].
template <class V, int K>
inline void tile_step_bf16(typename V::vf (&acc)[K][4], const uint16_t* const (&w)[K], const uint16_t* const (&xr)[4],
                           int i) {
  typename V::vbf wv[K];
  for (int k = 0; k < K; ++k) wv[k] = pinned<V>(V::load_bf16(w[k] + i));
  for (int r = 0; r < 4; ++r) {
    const typename V::vbf xv = pinned<V>(V::load_bf16(xr[r] + i));
    for (int k = 0; k < K; ++k) acc[k][r] = V::dot_bf16(acc[k][r], wv[k], xv);
  }
}

// bfloat16 x bfloat16 (LinearKernels::tiled_bf16_dot): the input rows are rounded to bfloat16 into
// scratch (stride bf16_dot_stride(in), zero-padded), then the K x 4 register tile (tile_outputs) with
// 2 * kWidth values per register. A last in % (2 * kWidth) weights go through a zero-padded copy of
// each of the group's K rows (the rows are not padded; reading past them could fault or meet NaN).
template <class V>
void linear_tiled_bf16_dot(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                           const float* bias, float* y, int ldy, uint16_t* scratch) {
  constexpr int kP = 2 * V::kWidth;  // bfloat16 values per register
  static_assert(kBf16DotPad % kP == 0, "the scratch rows must hold whole registers");
  const int stride = bf16_dot_stride(in);
  const int full = in - in % kP;  // the part covered by whole registers
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    const float* src = x + at(r, ldx);
    uint16_t* dst = scratch + at(r, stride);
    int i = 0;
    for (; i < full; i += kP) V::round_to_bf16(src + i, dst + i);
    for (; i < stride; i += kP) {  // the last in % kP values, then zeros
      float part[kP];
      for (int k = 0; k < kP; ++k) part[k] = i + k < in ? src[i + k] : 0.0f;
      V::round_to_bf16(part, dst + i);
    }
  }
  tile_outputs<V>(rows, in, out, static_cast<const uint16_t*>(scratch), stride, weight, in, nullptr, bias, y, ldy,
                  [full, in](auto& acc, const uint16_t* const(&w)[tile_outputs_of<V>()], const uint16_t* const(&xr)[4]) {
                    constexpr int K = tile_outputs_of<V>();
                    for (int i = 0; i < full; i += kP) tile_step_bf16<V>(acc, w, xr, i);
                    if (full == in) return;
                    uint16_t tail[K][kP];
                    const uint16_t* wt[K];
                    for (int k = 0; k < K; ++k) {
                      for (int j = 0; j < kP; ++j) tail[k][j] = full + j < in ? w[k][full + j] : 0;
                      wt[k] = tail[k];
                    }
                    const uint16_t* const xt[4] = {xr[0] + full, xr[1] + full, xr[2] + full, xr[3] + full};
                    tile_step_bf16<V>(acc, wt, xt, 0);
                  });
}

// The table of one level.
template <class V>
constexpr LinearKernels linear_kernels_of() {
  // The float32 tile beats OpenBLAS sgemm (which packs the whole weight matrix per call) up to 48 rows
  // with 3 weight rows per tile and up to 96 with 6 (linear_bench, 2 threads, 64-byte aligned rows,
  // 1024 x 7168 and 4096 x 1024 on a Zen 4 VM: avx512 tile 143-154 vs sgemm 114-143 GFLOP/s at 96
  // rows; at avx2 the tile is level with sgemm at 64 and 10-30 % behind at 96).
  constexpr int kTiledRowsF32 = tile_outputs_of<V>() >= 6 ? 96 : 48;
  LinearKernels table = {kTiledRowsF32, linear_dots<V>, linear_tiled<V, float>, linear_small_16<V, F16>,
                         linear_small_16<V, BF16>, linear_tiled_int8<V>, linear_few_rows<V, Int8>, widen_16<V, F16>,
                         widen_16<V, BF16>,    nullptr,
                         nullptr};
  if constexpr (HasBf16Dot<V>) table.tiled_bf16_dot = linear_tiled_bf16_dot<V>;
  if constexpr (requires { typename V::Bytes; }) table.w8a8 = linear_w8a8<typename V::Bytes>;
  return table;
}

}  // namespace
}  // namespace gptj::cpu
