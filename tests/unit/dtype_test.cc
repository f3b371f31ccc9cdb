// Unit tests for runtime/core/dtype.h: exact F16 widening for all 65536 patterns, F32 -> F16 and
// F32 -> BF16 round-to-nearest-even at every tie, overflow and subnormals, NaN preservation, and
// dtype names.
#include "runtime/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "runtime/core/error.h"

namespace gptj {
namespace {

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

// IEEE binary16 by the textbook formula.
double f16_reference(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  if (exponent == 0) return sign * std::ldexp(static_cast<double>(mantissa), -24);
  if (exponent == 31) return mantissa ? std::nan("") : sign * INFINITY;
  return sign * std::ldexp(static_cast<double>(1024 + mantissa), exponent - 25);
}

bool is_f16_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

TEST(Dtype, F16ToF32AllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = f16_to_f32(static_cast<uint16_t>(h));
    const double want = f16_reference(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(got), want) << std::hex << "0x" << h;
    ASSERT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << "0x" << h;
  }
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0xfc00), -INFINITY);
}

TEST(Dtype, F32ToF16RoundTripsEveryF16) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (is_f16_nan(static_cast<uint16_t>(h))) continue;
    ASSERT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h) << std::hex << "0x" << h;
  }
}

// Between each pair of neighbouring halves (subnormals, normals, and 65504 -> inf): just below the
// midpoint rounds down, just above rounds up, the midpoint itself rounds to the even one.
TEST(Dtype, F32ToF16RoundsToNearestEven) {
  for (uint32_t magnitude = 0; magnitude < 0x7c00; ++magnitude) {
    for (uint32_t sign : {0u, 0x8000u}) {
      const uint16_t lo = static_cast<uint16_t>(sign | magnitude);
      const uint16_t hi = static_cast<uint16_t>(sign | (magnitude + 1));
      const float a = f16_to_f32(lo);
      // Past 65504 the next step would be 65536, which is inf in binary16.
      const float b = magnitude + 1 == 0x7c00 ? std::copysign(65536.0f, a) : f16_to_f32(hi);
      const float mid = (a + b) / 2;  // exact: one more bit than a half has
      ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(a) + b) / 2);
      const uint16_t even = (lo & 1) ? hi : lo;
      ASSERT_EQ(f32_to_f16(mid), even) << std::hex << "tie between 0x" << lo << " and 0x" << hi;
      ASSERT_EQ(f32_to_f16(std::nextafter(mid, a)), lo) << std::hex << "below mid 0x" << lo;
      ASSERT_EQ(f32_to_f16(std::nextafter(mid, b)), hi) << std::hex << "above mid 0x" << lo;
    }
  }
}

TEST(Dtype, F32ToF16SpecialValues) {
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // tie with the odd 65504: rounds up to inf
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e30f), 0xfc00);
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00);
  EXPECT_EQ(f32_to_f16(-INFINITY), 0xfc00);
  EXPECT_EQ(f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  // Subnormal outputs.
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);          // tie with 0: to even (0)
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);          // tie 1.5 ulp: to even (2)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);
  EXPECT_EQ(f32_to_f16(-std::ldexp(5.0f, -24)), 0x8005);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -30)), 0x0000);          // underflow to +0
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);         // underflow to -0
  EXPECT_EQ(f32_to_f16(std::ldexp(1023.5f, -24)), 0x0400);       // rounds up into the normals
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie, 1.0 is even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie, odd 0x3c01 -> 0x3c02
  // NaN stays NaN, including a payload only in the low 13 bits (plain truncation would give inf).
  EXPECT_TRUE(is_f16_nan(f32_to_f16(std::nanf(""))));
  EXPECT_TRUE(is_f16_nan(f32_to_f16(from_bits(0x7f800001u))));
  EXPECT_TRUE(is_f16_nan(f32_to_f16(from_bits(0xff800001u))));
}

#if defined(__FLT16_MAX__)
// Against the compiler's own binary16 conversion on a million random floats of all magnitudes.
TEST(Dtype, F32ToF16MatchesCompilerFloat16) {
  std::mt19937 rng(42);
  for (int i = 0; i < 1000000; ++i) {
    const float value = from_bits(static_cast<uint32_t>(rng()));
    if (std::isnan(value)) continue;
    const _Float16 ref = static_cast<_Float16>(value);
    uint16_t want;
    std::memcpy(&want, &ref, 2);
    ASSERT_EQ(f32_to_f16(value), want) << std::hex << "0x" << to_bits(value);
  }
}
#endif

TEST(Dtype, Bf16ToF32IsTheTopHalf) {
  for (uint32_t b = 0; b < 65536; ++b)
    ASSERT_EQ(to_bits(bf16_to_f32(static_cast<uint16_t>(b))), b << 16);
}

TEST(Dtype, F32ToBf16RoundsToNearestEven) {
  for (uint32_t b = 0; b < 0x7f80; ++b) {
    for (uint32_t sign : {0u, 0x8000u}) {
      const uint32_t base = (sign | b) << 16;
      const uint16_t lo = static_cast<uint16_t>(sign | b), hi = static_cast<uint16_t>(sign | (b + 1));
      ASSERT_EQ(f32_to_bf16(from_bits(base)), lo);
      ASSERT_EQ(f32_to_bf16(from_bits(base | 0x7fff)), lo) << std::hex << base;
      ASSERT_EQ(f32_to_bf16(from_bits(base | 0x8000)), (b & 1) ? hi : lo) << std::hex << base;
      ASSERT_EQ(f32_to_bf16(from_bits(base | 0x8001)), hi) << std::hex << base;
      ASSERT_EQ(f32_to_bf16(from_bits(base | 0xffff)), hi) << std::hex << base;
    }
  }
  EXPECT_EQ(f32_to_bf16(3.4028235e38f), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xff80);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    const uint16_t got = f32_to_bf16(from_bits(nan));
    EXPECT_TRUE(std::isnan(bf16_to_f32(got))) << std::hex << nan << " -> " << got;
    EXPECT_EQ(got & 0x8000, (nan >> 16) & 0x8000);
  }
}

TEST(Dtype, ConvertArrays) {
  const float values[] = {1.0f, -2.5f, 0.1f, 65504.0f, 1e-7f};
  uint16_t halves[5], brains[5];
  convert_from_f32(DType::kF16, values, halves, 5);
  convert_from_f32(DType::kBF16, values, brains, 5);
  float back[5];
  convert_to_f32(DType::kF16, halves, back, 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back[i], f16_to_f32(f32_to_f16(values[i])));
  convert_to_f32(DType::kBF16, brains, back, 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back[i], bf16_to_f32(f32_to_bf16(values[i])));
  float copy[5];
  convert_from_f32(DType::kF32, values, copy, 5);
  convert_to_f32(DType::kF32, copy, back, 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back[i], values[i]);
}

TEST(Dtype, NamesAndSizes) {
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_name(DType::kF32), "float32");
  EXPECT_EQ(dtype_name(DType::kF16), "float16");
  EXPECT_EQ(dtype_name(DType::kBF16), "bfloat16");
  for (const char* name : {"float32", "fp32", "F32"}) EXPECT_EQ(parse_dtype(name), DType::kF32) << name;
  for (const char* name : {"float16", "fp16", "F16"}) EXPECT_EQ(parse_dtype(name), DType::kF16) << name;
  for (const char* name : {"bfloat16", "bf16", "BF16"}) EXPECT_EQ(parse_dtype(name), DType::kBF16) << name;
  for (auto d : {DType::kF32, DType::kF16, DType::kBF16}) EXPECT_EQ(parse_dtype(dtype_name(d)), d);
}

TEST(Dtype, ParseDtypeErrorNamesTheText) {
  for (const char* bad : {"int8", "", "float64", "Float32 "}) {
    try {
      parse_dtype(bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace gptj
