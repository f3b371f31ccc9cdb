// cpu::linear against a double-precision reference, for every code path it picks by size: 1..3
// rows, the 3 x 4 register tile (ragged last output group and row block), sgemm for larger row
// counts, with float32, float16 and bfloat16 weights (compared with their float32 widening),
// strided x / y (column blocks of wider matrices) and with or without a bias. Every test runs once
// per CPU ISA level (suffix /avx2, /avx512, /avx512bf16), skipped where the CPU lacks the level.
// Also: the kernel templates at 16 floats per register (the avx512 level's width: its loops and
// 8-float tails) with the registers emulated by AVX2 pairs, so that logic runs on any machine.
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/linear_kernels.h"
#include "runtime/core/dtype.h"
#include "tests/unit/cpu_isa_levels.h"
#include "tests/unit/emulated16.h"

namespace gptj {
namespace {

using LinearFn = void (*)(const float* x, int ldx, int rows, int in, cpu::WeightRef weight, int out,
                          const float* bias, float* y, int ldy);

// Runs `linear` (cpu::linear unless given) and compares with the double-precision reference.
void check(int rows, int in, int out, DType dtype, bool with_bias, LinearFn linear = cpu::linear) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " in " + std::to_string(in) + " out " + std::to_string(out) +
               " dtype " + std::to_string(static_cast<int>(dtype)) + (with_bias ? " bias" : ""));
  std::mt19937 rng(static_cast<uint32_t>(rows * 7919 + in * 31 + out));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int ldx = in + 8, ldy = out + 5;
  std::vector<float> x(static_cast<std::size_t>(rows) * ldx), w(static_cast<std::size_t>(out) * in), bias(out);
  for (float& v : x) v = u(rng);
  for (float& v : w) v = u(rng);
  for (float& v : bias) v = u(rng);
  // The weights as stored, and the float32 values they widen to (the reference's weights).
  std::vector<uint8_t> stored(w.size() * dtype_size(dtype));
  convert_from_f32(dtype, w.data(), stored.data(), w.size());
  convert_to_f32(dtype, stored.data(), w.data(), w.size());
  std::vector<float> y(static_cast<std::size_t>(rows) * ldy, 12345.0f);
  linear(x.data(), ldx, rows, in, cpu::WeightRef{stored.data(), static_cast<int>(dtype)}, out,
              with_bias ? bias.data() : nullptr, y.data(), ldy);
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < out; ++o) {
      double want = with_bias ? bias[o] : 0.0;
      for (int i = 0; i < in; ++i)
        want += static_cast<double>(x[static_cast<std::size_t>(r) * ldx + i]) * w[static_cast<std::size_t>(o) * in + i];
      ASSERT_NEAR(y[static_cast<std::size_t>(r) * ldy + o], want, 1e-5 * (1 + std::sqrt(in)))
          << "row " << r << " output " << o;
    }
    for (int o = out; o < ldy; ++o)  // the padding columns of y stay untouched
      ASSERT_EQ(y[static_cast<std::size_t>(r) * ldy + o], 12345.0f) << "row " << r << " column " << o;
  }
}

class Linear : public testing::CpuIsaTest<cpu::CpuIsa> {
  cpu::CpuIsa level() const override { return GetParam(); }
};

TEST_P(Linear, EveryPathMatchesTheReference) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    for (int rows : {1, 2, 3, 4, 5, 7, 8, 31, 32, 48, 49, 64, 65, 100})
      for (int out : {1, 2, 3, 4, 5, 8, 67})
        for (int in : {8, 16, 72, 200})
          check(rows, in, out, dtype, (rows + out) % 2 == 0);
}

TEST_P(Linear, SizesThatAreNotMultiplesOfEight) {
  for (DType dtype : {DType::kF32, DType::kF16})
    for (int rows : {1, 4, 9, 70})
      check(rows, 13, 6, dtype, true);
}

// Sizes of the real models' products (and of their register remainders at 16 floats: in = 1032 is
// 64 registers of 16 and one of 8), where the streaming kernel's two-register loop runs long.
TEST_P(Linear, ModelSizedRows) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    for (int rows : {1, 3, 4, 32})
      for (int in : {1024, 1032, 1040})
        check(rows, in, 12, dtype, rows % 2 == 1);
}

// The prefill path's widening (16-bit weight rows to float32 for sgemm) against dtype.h's scalar
// conversion, for every one of the 65536 bit patterns (subnormals, infinities, NaNs: NaN stays NaN),
// at every length 0..40 (the tails) too.
void check_widening(const cpu::LinearKernels& table) {
  std::vector<uint16_t> every(65536);
  for (int i = 0; i < 65536; ++i) every[i] = static_cast<uint16_t>(i);
  for (bool half : {true, false}) {
    SCOPED_TRACE(half ? "float16" : "bfloat16");
    const auto widen = half ? table.widen_f16 : table.widen_bf16;
    for (int n : {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 40, 65536}) {
      std::vector<float> wide(n + 1, 777.0f);
      widen(every.data() + (65536 - n), n, wide.data());
      for (int i = 0; i < n; ++i) {
        const uint16_t bits = every[65536 - n + i];
        const float want = half ? f16_to_f32(bits) : bf16_to_f32(bits);
        if (std::isnan(want))
          ASSERT_TRUE(std::isnan(wide[i])) << "bits " << bits;
        else
          ASSERT_EQ(std::memcmp(&want, &wide[i], sizeof(float)), 0) << "bits " << bits << ": " << wide[i] << " vs " << want;
      }
      ASSERT_EQ(wide[n], 777.0f) << "wrote past n = " << n;
    }
  }
}

TEST_P(Linear, WideningIsExactForEveryBitPattern) { check_widening(cpu::active_linear_kernels()); }

INSTANTIATE_TEST_SUITE_P(Levels, Linear, testing::kAllCpuIsaLevels,
                         [](const auto& info) { return std::string(cpu::cpu_isa_name(info.param)); });


// cpu::linear's choice among the table's kernels (linear.cc) for rows <= 48, on the emulated level.
void linear_emulated16(const float* x, int ldx, int rows, int in, cpu::WeightRef weight, int out, const float* bias,
                       float* y, int ldy) {
  static constexpr cpu::LinearKernels kTable = cpu::linear_kernels_of<testing::Emulated16>();
  const auto* w16 = static_cast<const uint16_t*>(weight.data);
  if (weight.dtype == 0)
    (rows >= 4 && in % 8 == 0 ? kTable.tiled_f32 : kTable.dots_f32)(x, ldx, rows, in, static_cast<const float*>(weight.data),
                                                                     out, bias, y, ldy);
  else
    (weight.dtype == 1 ? kTable.small_f16 : kTable.small_bf16)(x, ldx, rows, in, w16, out, bias, y, ldy);
}

TEST(LinearAt16Floats, EveryPathAndTailMatchesTheReference) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    for (int rows : {1, 2, 3, 4, 5, 9, 32, 48})
      for (int out : {1, 4, 5, 12})
        for (int in : {8, 16, 24, 32, 40, 48, 72, 1040})  // in % 16 == 8 and in % 32 == 16 included
          check(rows, in, out, dtype, (rows + out) % 2 == 0, linear_emulated16);
  check(3, 13, 8, DType::kF32, true, linear_emulated16);  // f32 dots with a scalar tail
}

TEST(LinearAt16Floats, WideningIsExactForEveryBitPattern) {
  static constexpr cpu::LinearKernels kTable = cpu::linear_kernels_of<testing::Emulated16>();
  check_widening(kTable);
}

}  // namespace
}  // namespace gptj
