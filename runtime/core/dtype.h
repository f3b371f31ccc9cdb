// Element types of stored weights and of compute, with exact widening to float32.
// F16 -> F32 is exact including subnormals; BF16 -> F32 is the top half of the float32 bits.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gptj {

enum class DType { kF32, kF16, kBF16 };

std::size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // "float32", "float16", "bfloat16"
// Accepts "float32"/"fp32"/"F32", "float16"/"fp16"/"F16", "bfloat16"/"bf16"/"BF16"; throws otherwise.
DType parse_dtype(std::string_view text);

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);  // round to nearest even, overflow to inf
inline float bf16_to_f32(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float out;
  __builtin_memcpy(&out, &word, sizeof(out));
  return out;
}
uint16_t f32_to_bf16(float value);  // round to nearest even, NaN kept NaN

// Widens `count` elements of `dtype` at `src` into float32 at `dst`.
void convert_to_f32(DType dtype, const void* src, float* dst, std::size_t count);
// Narrows float32 into `dtype` (`dst` holds count * dtype_size(dtype) bytes).
void convert_from_f32(DType dtype, const float* src, void* dst, std::size_t count);

}  // namespace gptj
