// Quantization round trips (runtime/core/quant.h) for int8 and int4 on random and adversarial rows:
// every dequantized weight is within half a quantization step of the original, the codes stay in
// range, zero rows stay zero, one huge value does not break the others' scale bound, subnormal
// inputs are handled, ragged widths (the last int4 group shorter, a row not a multiple of 16) pack
// right, and a non-finite weight is refused with the tensor's name and position.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/core/quant.h"

namespace gptj {
namespace {

HostMatrix matrix_of(const std::vector<float>& values, int64_t rows, int64_t cols, DType dtype = DType::kF32) {
  HostMatrix m(dtype, rows, cols);
  convert_from_f32(dtype, values.data(), m.data(), values.size());
  return m;
}

std::vector<float> widened(const HostMatrix& m) {
  std::vector<float> out(static_cast<std::size_t>(m.rows() * m.cols()));
  convert_to_f32(m.dtype(), m.data(), out.data(), out.size());
  return out;
}

// The scale that covers column c of row r (int8: the row's; int4: the group's).
float scale_of(const QuantizedMatrix& q, int64_t r, int64_t c) {
  if (q.format == WeightFormat::kInt8) return q.scales[r];
  return f16_to_f32(q.scales16[r * q.groups() + c / kInt4Group]);
}

// Dequantizes and checks every value: |w - deq| <= step / 2 (with a float rounding allowance), and
// each group's scale is max|w| / levels (int4: as rounded to float16).
void check_round_trip(const HostMatrix& m, WeightFormat format) {
  const QuantizedMatrix q = quantize(m, format, "test.weight");
  ASSERT_EQ(q.rows, m.rows());
  ASSERT_EQ(q.cols, m.cols());
  std::vector<float> back(static_cast<std::size_t>(m.rows() * m.cols()));
  dequantize_rows(q, 0, m.rows(), back.data());
  const std::vector<float> w = widened(m);
  const float levels = format == WeightFormat::kInt8 ? 127.0f : 7.0f;
  for (int64_t r = 0; r < m.rows(); ++r) {
    for (int64_t c = 0; c < m.cols(); ++c) {
      const std::size_t i = static_cast<std::size_t>(r * m.cols() + c);
      const float scale = scale_of(q, r, c);
      ASSERT_GE(scale, 0.0f);
      // int4's float16 scale may round below max|w| / 7: the top value then clamps to 7 levels,
      // at most max|w| * 2^-11 further off.
      const float allowed = 0.5f * scale * (1 + 1e-6f) + std::fabs(w[i]) * (format == WeightFormat::kInt4 ? 1e-3f : 1e-6f) +
                            std::numeric_limits<float>::denorm_min();
      // int4: a group whose max|w| / 7 is below float16's smallest subnormal (2^-24) has scale 0
      // and comes back as zeros.
      if (format == WeightFormat::kInt4 && scale == 0.0f) {
        ASSERT_LE(std::fabs(w[i]), 7.0f * std::ldexp(1.0f, -24)) << "row " << r << " col " << c;
        ASSERT_EQ(back[i], 0.0f);
        continue;
      }
      ASSERT_LE(std::fabs(back[i] - w[i]), allowed) << "row " << r << " col " << c << " w " << w[i] << " scale " << scale;
      ASSERT_LE(std::fabs(back[i]), levels * scale * (1 + 1e-6f));
    }
  }
}

TEST(Quantize, RandomRowsOfEveryStoredDtypeAndRaggedWidth) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 0.02f);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t cols : {1, 7, 15, 16, 17, 64, 127, 128, 129, 300, 1024}) {
      SCOPED_TRACE("dtype " + std::string(dtype_name(dtype)) + " cols " + std::to_string(cols));
      std::vector<float> v(static_cast<std::size_t>(5 * cols));
      for (float& x : v) x = n(rng);
      const HostMatrix m = matrix_of(v, 5, cols, dtype);
      check_round_trip(m, WeightFormat::kInt8);
      check_round_trip(m, WeightFormat::kInt4);
    }
  }
}

TEST(Quantize, AdversarialRows) {
  const int64_t cols = 260;  // two full int4 groups and a short one
  std::vector<float> v(static_cast<std::size_t>(4 * cols), 0.0f);  // row 0: all zeros
  for (int64_t c = 0; c < cols; ++c) {
    v[cols + c] = 0.001f * static_cast<float>(c % 13 - 6);  // row 1: small values and one huge one
    v[2 * cols + c] = 1e-41f * static_cast<float>(c % 5 - 2);  // row 2: float32 subnormals
    v[3 * cols + c] = (c % 2 ? 1.0f : -1.0f) * 3e4f;            // row 3: large, near float16's top
  }
  v[cols + 5] = 1e3f;
  const HostMatrix m = matrix_of(v, 4, cols);
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    SCOPED_TRACE(std::string(weight_format_name(format)));
    check_round_trip(m, format);
    const QuantizedMatrix q = quantize(m, format, "x");
    std::vector<float> back(static_cast<std::size_t>(4 * cols));
    dequantize_rows(q, 0, 4, back.data());
    for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(back[c], 0.0f) << "a zero row must stay zero";
    // The largest value of a row comes back as itself (int8) or within float16's rounding of
    // the int4 scale.
    EXPECT_NEAR(back[cols + 5], 1e3f, format == WeightFormat::kInt8 ? 1e-3f : 1.0f);
  }
  // int4: the huge value costs only its own group; the other groups of row 1 keep a small step.
  const QuantizedMatrix q4 = quantize(m, WeightFormat::kInt4, "x");
  EXPECT_GT(scale_of(q4, 1, 0), 100.0f);
  EXPECT_LT(scale_of(q4, 1, 200), 0.001f);
}

TEST(Quantize, Int4PacksTwoRunsOfEightPerEightBytesAndPadsWithZero) {
  std::vector<float> v(20);
  for (int c = 0; c < 20; ++c) v[c] = static_cast<float>(c % 15 - 7);  // codes -7..7, scale 1
  const QuantizedMatrix q = quantize(matrix_of(v, 1, 20), WeightFormat::kInt4, "x");
  ASSERT_EQ(q.row_bytes(), 16);  // 20 values -> two 16-value units
  EXPECT_EQ(f16_to_f32(q.scales16[0]), 1.0f);
  for (int c = 0; c < 20; ++c) {
    const uint8_t byte = q.values[c / 16 * 8 + c % 8];
    const int nibble = (c % 16 < 8) ? (byte & 0x0F) : (byte >> 4);
    EXPECT_EQ(nibble - 8, c % 15 - 7) << "column " << c;
  }
  for (int c = 20; c < 32; ++c) {
    const uint8_t byte = q.values[c / 16 * 8 + c % 8];
    EXPECT_EQ((c % 16 < 8) ? (byte & 0x0F) : (byte >> 4), 8) << "padding column " << c << " is the code for 0";
  }
}

TEST(Quantize, NonFiniteWeightsAreRefusedByName) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> v(2 * 40, 0.01f);
    v[40 + 33] = bad;
    const HostMatrix m = matrix_of(v, 2, 40);
    for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
      try {
        quantize(m, format, "transformer.h.3.mlp.fc_in.weight");
        FAIL() << "a non-finite weight was quantized";
      } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("transformer.h.3.mlp.fc_in.weight: weight [1, 33]"), std::string::npos) << what;
        EXPECT_NE(what.find("non-finite"), std::string::npos) << what;
      }
    }
  }
}

TEST(Quantize, WeightFormatNamesAndStoredMatricesKeptAsTheyAre) {
  EXPECT_EQ(parse_weight_format("auto"), WeightFormat::kStored);
  EXPECT_EQ(parse_weight_format("int8"), WeightFormat::kInt8);
  EXPECT_EQ(parse_weight_format("int4"), WeightFormat::kInt4);
  EXPECT_EQ(parse_weight_format("fp8"), WeightFormat::kFp8);
  try {
    parse_weight_format("int3");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown --weights 'int3' (expected auto, int8, int4 or fp8)"),
              std::string::npos)
        << e.what();
  }
  const WeightMatrix stored = WeightMatrix::make(matrix_of({1, 2, 3, 4}, 2, 2, DType::kBF16), WeightFormat::kStored, "x");
  EXPECT_FALSE(stored.is_quantized());
  EXPECT_EQ(stored.format_name(), "bfloat16");
  EXPECT_EQ(stored.size_bytes(), 8u);
  const WeightMatrix q8 = WeightMatrix::make(matrix_of(std::vector<float>(256, 1.0f), 2, 128), WeightFormat::kInt8, "x");
  EXPECT_EQ(q8.format_name(), "int8");
  EXPECT_EQ(q8.size_bytes(), 256u + 2 * sizeof(float));
  const WeightMatrix q4 = WeightMatrix::make(matrix_of(std::vector<float>(256, 1.0f), 2, 128), WeightFormat::kInt4, "x");
  EXPECT_EQ(q4.size_bytes(), 128u + 2 * sizeof(uint16_t));
}

}  // namespace
}  // namespace gptj
