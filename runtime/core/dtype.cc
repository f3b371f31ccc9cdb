#include "runtime/core/dtype.h"

#include <cmath>
#include <cstring>

#include "runtime/core/error.h"

namespace gptj {

std::size_t dtype_size(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "float32";
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
  }
  return "?";
}

DType parse_dtype(std::string_view text) {
  if (text == "float32" || text == "fp32" || text == "F32") return DType::kF32;
  if (text == "float16" || text == "fp16" || text == "F16" || text == "half") return DType::kF16;
  if (text == "bfloat16" || text == "bf16" || text == "BF16") return DType::kBF16;
  fail("unknown dtype '{}' (expected float32, float16 or bfloat16)", text);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: value = mantissa * 2^-24, exactly representable in float32
      float value = std::ldexp(static_cast<float>(mantissa), -24);
      std::memcpy(&bits, &value, 4);
      bits |= sign;
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

uint16_t f32_to_f16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits >= 0x7f800000u) {  // inf or NaN
    return sign | 0x7c00 | (abs_bits > 0x7f800000u ? 0x200 : 0);
  }
  if (abs_bits >= 0x477ff000u) return sign | 0x7c00;  // rounds past 65504: inf
  if (abs_bits < 0x38800000u) {                        // below the smallest normal half
    // Subnormal half: round abs * 2^24 to the nearest integer, ties to even.
    float abs_value;
    std::memcpy(&abs_value, &abs_bits, 4);
    float scaled = abs_value * 16777216.0f;  // exact (power of two)
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1u);
  return sign | static_cast<uint16_t>((rounded - (112u << 23)) >> 13);
}

uint16_t f32_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

void convert_to_f32(DType dtype, const void* src, float* dst, std::size_t count) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * 4);
      return;
    case DType::kF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (std::size_t i = 0; i < count; ++i) dst[i] = f16_to_f32(in[i]);
      return;
    }
    case DType::kBF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (std::size_t i = 0; i < count; ++i) dst[i] = bf16_to_f32(in[i]);
      return;
    }
  }
}

void convert_from_f32(DType dtype, const float* src, void* dst, std::size_t count) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * 4);
      return;
    case DType::kF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (std::size_t i = 0; i < count; ++i) out[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::kBF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (std::size_t i = 0; i < count; ++i) out[i] = f32_to_bf16(src[i]);
      return;
    }
  }
}

}  // namespace gptj
