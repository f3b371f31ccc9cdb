// cpu::linear with int8 / int4 weights against the same product done in double precision on the
// dequantized weights (runtime/core/quant.h's dequantize_rows): this checks the kernels exactly,
// apart from quantization error. Every code path the kernel picks: 1..3 rows (dequantized in
// registers; K weight rows at a time and the out % K tail), int8 at 4..64 rows (the register tile on
// the codes), more rows (panels through the float32 kernels: register tile and sgemm), in not a
// multiple of 8/16 (scalar tail / panel path), ragged
// last int4 group, strided x and y, with and without bias. Once per CPU ISA level (suffix /avx2,
// /avx512, /avx512vnni, /avx512bf16; skipped where the CPU lacks it), and the int8 tile and 1..3-row
// kernel at 16 floats and the int8 x int8 product at 64 bytes (the VNNI step) emulated.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/linear_quant.h"
#include "runtime/core/quant.h"
#include "tests/unit/cpu_isa_levels.h"
#include "tests/unit/emulated16.h"

namespace gptj {
namespace {

cpu::WeightRef ref(const QuantizedMatrix& q) {
  if (q.format == WeightFormat::kInt8) return {q.values.data(), cpu::WeightRef::kInt8, q.scales.data()};
  return {q.values.data(), cpu::WeightRef::kInt4, q.scales16.data()};
}

using LinearFn = void (*)(const float* x, int ldx, int rows, int in, cpu::WeightRef weight, int out,
                          const float* bias, float* y, int ldy);

void check(WeightFormat format, int rows, int in, int out, bool with_bias, LinearFn linear = cpu::linear) {
  SCOPED_TRACE(std::string(weight_format_name(format)) + " rows " + std::to_string(rows) + " in " + std::to_string(in) +
               " out " + std::to_string(out) + (with_bias ? " bias" : ""));
  std::mt19937 rng(static_cast<uint32_t>(rows * 7919 + in * 31 + out));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int ldx = in + 3, ldy = out + 5;
  std::vector<float> x(static_cast<std::size_t>(rows) * ldx), w(static_cast<std::size_t>(out) * in), bias(out);
  for (float& v : x) v = u(rng);
  for (float& v : w) v = u(rng) * (1.0f + static_cast<float>(&v - w.data()) / static_cast<float>(w.size()));
  for (float& v : bias) v = u(rng);
  HostMatrix m(DType::kF32, out, in);
  std::copy(w.begin(), w.end(), static_cast<float*>(m.data()));
  const QuantizedMatrix q = quantize(m, format, "test");
  std::vector<float> deq(w.size()), deq_kernel(w.size());
  dequantize_rows(q, 0, out, deq.data());
  cpu::dequantize_weight_rows(ref(q), in, 0, out, deq_kernel.data());
  ASSERT_EQ(deq, deq_kernel) << "the kernels' dequantization differs from runtime/core/quant's";

  std::vector<float> y(static_cast<std::size_t>(rows) * ldy, 12345.0f);
  linear(x.data(), ldx, rows, in, ref(q), out, with_bias ? bias.data() : nullptr, y.data(), ldy);
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < ldy; ++o) {
      const float got = y[static_cast<std::size_t>(r) * ldy + o];
      if (o >= out) {
        ASSERT_EQ(got, 12345.0f) << "wrote past out at row " << r;
        continue;
      }
      double want = with_bias ? bias[o] : 0.0, magnitude = std::fabs(want);
      for (int i = 0; i < in; ++i) {
        const double term = static_cast<double>(x[static_cast<std::size_t>(r) * ldx + i]) * deq[static_cast<std::size_t>(o) * in + i];
        want += term;
        magnitude += std::fabs(term);
      }
      // float32 accumulation of `in` terms: a few ulps of the sum of magnitudes.
      ASSERT_NEAR(got, want, 1e-6 * magnitude * (1 + std::sqrt(in)) + 1e-6) << "row " << r << " out " << o;
    }
  }
}

class LinearQuant : public testing::CpuIsaTest<cpu::CpuIsa> {
 protected:
  cpu::CpuIsa level() const override { return GetParam(); }
};

TEST_P(LinearQuant, EveryPathAgainstTheDequantizedProduct) {
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    for (int rows : {1, 2, 3, 4, 5, 17, 48, 49, 64, 65, 100}) {
      for (int in : {16, 64, 136, 320}) {
        for (int out : {1, 5, 13, 130}) check(format, rows, in, out, rows % 2 == 1);
      }
    }
  }
}

TEST_P(LinearQuant, WidthsNotAMultipleOfTheVectorLength) {
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    for (int rows : {1, 2, 3, 7, 70}) {
      for (int in : {1, 7, 9, 23, 100, 129}) check(format, rows, in, 11, true);
    }
  }
}

TEST_P(LinearQuant, ModelSizedRows) {
  // gptj-small's fused input projection (in 1024) and a 6B-wide row (in 4096) at decode sizes.
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    check(format, 1, 1024, 260, false);
    check(format, 3, 4096, 64, true);
    check(format, 32, 1024, 96, false);
  }
}

// int8 x int8 (--int8-activations): against the exact integer sum of the same quantized weights
// and activations (quantize_activation_rows), scaled once: equal within the final products' rounding.
void check_int8_activations(int rows, int in, int out, LinearFn linear = cpu::linear) {
  SCOPED_TRACE("w8a8 rows " + std::to_string(rows) + " in " + std::to_string(in) + " out " + std::to_string(out));
  std::mt19937 rng(static_cast<uint32_t>(rows * 131 + in * 7 + out));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int ldx = in + 5, ldy = out + 2;
  std::vector<float> x(static_cast<std::size_t>(rows) * ldx), bias(out);
  for (float& v : x) v = u(rng) * u(rng) * 4.0f;
  for (float& v : bias) v = u(rng);
  HostMatrix m(DType::kF32, out, in);
  for (int64_t i = 0; i < out * static_cast<int64_t>(in); ++i) static_cast<float*>(m.data())[i] = u(rng);
  const QuantizedMatrix q = quantize(m, WeightFormat::kInt8, "test");
  cpu::WeightRef w = ref(q);
  w.int8_activations = true;
  std::vector<float> y(static_cast<std::size_t>(rows) * ldy, 777.0f);
  linear(x.data(), ldx, rows, in, w, out, bias.data(), y.data(), ldy);
  const int stride = cpu::activation_row_stride(in);
  std::vector<int8_t> xq(static_cast<std::size_t>(rows) * stride);
  std::vector<float> sx(rows);
  cpu::quantize_activation_rows(x.data(), ldx, rows, in, xq.data(), sx.data());
  for (int r = 0; r < rows; ++r) {
    for (int i = in; i < stride; ++i) ASSERT_EQ(xq[static_cast<std::size_t>(r) * stride + i], 0) << "padding";
    for (int o = 0; o < out; ++o) {
      int64_t sum = 0;
      for (int i = 0; i < in; ++i)
        sum += static_cast<int64_t>(static_cast<int8_t>(q.values[static_cast<std::size_t>(o) * in + i])) *
               xq[static_cast<std::size_t>(r) * stride + i];
      const double want = static_cast<double>(q.scales[o]) * sx[r] * static_cast<double>(sum) + bias[o];
      const double scale = std::fabs(static_cast<double>(q.scales[o]) * sx[r] * static_cast<double>(sum)) + std::fabs(bias[o]);
      ASSERT_NEAR(y[static_cast<std::size_t>(r) * ldy + o], want, 4e-7 * scale + 1e-7) << "row " << r << " out " << o;
    }
    for (int o = out; o < ldy; ++o) ASSERT_EQ(y[static_cast<std::size_t>(r) * ldy + o], 777.0f);
  }
  // Quantizing the activations costs accuracy, not correctness: within a few % of the float32 product.
  std::vector<float> y_float(y.size());
  cpu::linear(x.data(), ldx, rows, in, ref(q), out, bias.data(), y_float.data(), ldy);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      double magnitude = 0;
      for (int i = 0; i < in; ++i) magnitude += std::fabs(x[static_cast<std::size_t>(r) * ldx + i]) * q.scales[o] * 127;
      ASSERT_NEAR(y[static_cast<std::size_t>(r) * ldy + o], y_float[static_cast<std::size_t>(r) * ldy + o], 0.01 * magnitude + 1e-6);
    }
}

TEST_P(LinearQuant, Int8ActivationsEqualTheExactIntegerProduct) {
  for (int rows : {1, 2, 3, 4, 5, 8, 11, 64})
    for (int in : {1, 31, 32, 33, 100, 1024})
      for (int out : {1, 7, 65}) check_int8_activations(rows, in, out);
}

// The largest products, all of one sign, over 4096 columns: no 16-bit pair sum or 32-bit lane saturates
// (127 * 127 * 2 < 32767), and weight codes of either sign meet activations of either sign.
TEST_P(LinearQuant, Int8ActivationsAtTheExtremesDoNotSaturate) {
  constexpr int kIn = 4096, kOut = 4;
  HostMatrix m(DType::kF32, kOut, kIn);
  std::vector<float> x(2 * kIn);
  for (int i = 0; i < kIn; ++i) {
    const float sign = i % 3 == 0 ? -1.0f : 1.0f;
    x[i] = 2.5f * sign;              // row 0: codes +-127 with the weights' signs of output 0
    x[kIn + i] = -2.5f * sign;       // row 1: the opposite signs
    for (int o = 0; o < kOut; ++o) static_cast<float*>(m.data())[o * kIn + i] = (o % 2 ? -sign : sign) * 0.5f;
  }
  const QuantizedMatrix q = quantize(m, WeightFormat::kInt8, "test");
  cpu::WeightRef w = ref(q);
  w.int8_activations = true;
  std::vector<float> y(2 * kOut);
  cpu::linear(x.data(), kIn, 2, kIn, w, kOut, nullptr, y.data(), kOut);
  const double full = 127.0 * 127.0 * kIn * q.scales[0] * (2.5 / 127.0);
  for (int r = 0; r < 2; ++r)
    for (int o = 0; o < kOut; ++o) {
      const double want = ((r + o) % 2 ? -1.0 : 1.0) * full;
      EXPECT_NEAR(y[r * kOut + o], want, 1e-5 * full) << "row " << r << " out " << o;
    }
}

TEST_P(LinearQuant, EveryLevelHasTheInt8ByInt8Product) { EXPECT_NE(cpu::active_linear_kernels().w8a8, nullptr); }

TEST_P(LinearQuant, Int8ActivationsOfAZeroRowGiveTheBias) {
  std::vector<float> x(64, 0.0f), bias{0.5f, -2.0f}, y(2, 9.0f);
  HostMatrix m(DType::kF32, 2, 64);
  for (int i = 0; i < 128; ++i) static_cast<float*>(m.data())[i] = 0.01f * static_cast<float>(i);
  const QuantizedMatrix q = quantize(m, WeightFormat::kInt8, "test");
  cpu::WeightRef w = ref(q);
  w.int8_activations = true;
  cpu::linear(x.data(), 64, 1, 64, w, 2, bias.data(), y.data(), 2);
  EXPECT_EQ(y[0], 0.5f);
  EXPECT_EQ(y[1], -2.0f);
}

INSTANTIATE_TEST_SUITE_P(Levels, LinearQuant, testing::kAllCpuIsaLevels,
                         [](const auto& info) { return std::string(cpu::cpu_isa_name(info.param)); });

// The int8 register tile at 16 floats per register (the avx512 level's loops and 8-float tails),
// emulated with AVX2 pairs so that it runs on any machine.
void tiled_int8_emulated16(const float* x, int ldx, int rows, int in, cpu::WeightRef weight, int out, const float* bias,
                           float* y, int ldy) {
  static constexpr cpu::LinearKernels kTable = cpu::linear_kernels_of<testing::Emulated16>();
  kTable.tiled_int8(x, ldx, rows, in, static_cast<const int8_t*>(weight.data), static_cast<const float*>(weight.scales),
                    out, bias, y, ldy);
}

// The int8 1..3-row kernel at 16 floats per register: its unrolled loop, the 16-float remainder, the
// 8-float tail in the low lanes and the scalar columns.
void few_rows_int8_emulated16(const float* x, int ldx, int rows, int in, cpu::WeightRef weight, int out,
                              const float* bias, float* y, int ldy) {
  static constexpr cpu::LinearKernels kTable = cpu::linear_kernels_of<testing::Emulated16>();
  kTable.few_rows_int8(x, ldx, rows, in, static_cast<const int8_t*>(weight.data),
                       static_cast<const float*>(weight.scales), out, bias, y, ldy);
}

TEST(LinearQuantAt16Floats, Int8FewRowsAgainstTheDequantizedProduct) {
  for (int rows : {1, 2, 3})
    for (int in : {1, 7, 8, 16, 24, 40, 72, 136, 1032, 1037})
      for (int out : {1, 4, 5}) check(WeightFormat::kInt8, rows, in, out, (rows + out) % 2 == 0, few_rows_int8_emulated16);
}

TEST(LinearQuantAt16Floats, Int8TileAgainstTheDequantizedProduct) {
  for (int rows : {4, 5, 9, 32, 64})
    for (int in : {8, 16, 24, 40, 136, 1032})
      for (int out : {1, 4, 5, 13}) check(WeightFormat::kInt8, rows, in, out, (rows + out) % 2 == 0, tiled_int8_emulated16);
}

// The int8 x int8 product at 64 bytes per step with the VNNI level's arithmetic, emulated
// (tests/unit/emulated16.h): the template's 64-byte loop, the 32-byte-padded rows and the scalar tails.
void w8a8_emulated_vnni(const float* x, int ldx, int rows, int in, cpu::WeightRef weight, int out, const float* bias,
                        float* y, int ldy) {
  static constexpr cpu::LinearKernels kTable = cpu::linear_kernels_of<testing::Emulated16Vnni>();
  static_assert(cpu::linear_kernels_of<testing::Emulated16>().w8a8 == nullptr);
  cpu::linear_int8_activations(x, ldx, rows, in, weight, out, bias, y, ldy, kTable);
}

TEST(LinearQuantAt64Bytes, Int8ActivationsEqualTheExactIntegerProduct) {
  for (int rows : {1, 3, 4, 7, 32})
    for (int in : {1, 32, 63, 64, 65, 96, 200, 1024})
      for (int out : {1, 7}) check_int8_activations(rows, in, out, w8a8_emulated_vnni);
}

}  // namespace
}  // namespace gptj
