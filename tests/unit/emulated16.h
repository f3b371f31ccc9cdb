// A 16-float "register" emulated by two AVX2 ones: the level interface of kernels/cpu/linear_simd.h
// at the avx512 level's width, so the kernel templates' 16-float loops and 8-float tails run on any
// x86-64-v3 machine (tests only; cpu::linear_kernels_of<Emulated16>() is its table).
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/linear_simd.h"

namespace gptj::testing {

struct Emulated16 {
  struct vf {
    __m256 lo, hi;
  };
  static constexpr int kWidth = 16;
  static constexpr int kTileOutputs = 6;  // as the avx512 level's register tile
  static vf zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static vf add(vf a, vf b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static vf fmadd(vf a, vf b, vf c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
  static float hsum(vf v) {
    float lanes[16];
    _mm256_storeu_ps(lanes, v.lo);
    _mm256_storeu_ps(lanes + 8, v.hi);
    float sum = 0;
    for (float lane : lanes) sum += lane;
    return sum;
  }
  static __m256 eight(const float* p) { return _mm256_loadu_ps(p); }
  static __m256 eight(cpu::F16, const uint16_t* p) { return _mm256_cvtph_ps(bits(p)); }
  static __m256 eight(cpu::BF16, const uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits(p)), 16));
  }
  // 16 values, or (load8) 8 and zeros.
  static vf load(const float* p) { return {eight(p), eight(p + 8)}; }
  static void store(float* p, vf v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
  }
  template <class Format>
  static vf load(Format f, const uint16_t* p) {
    return {eight(f, p), eight(f, p + 8)};
  }
  static __m256 eight(cpu::Int8, const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static vf load(cpu::Int8 f, const int8_t* p) { return {eight(f, p), eight(f, p + 8)}; }
  static vf load8(cpu::Int8 f, const int8_t* p) { return {eight(f, p), _mm256_setzero_ps()}; }
  static vf load8(const float* p) { return {eight(p), _mm256_setzero_ps()}; }
  template <class Format>
  static vf load8(Format f, const uint16_t* p) {
    return {eight(f, p), _mm256_setzero_ps()};
  }
  static __m128i bits(const uint16_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
};

// Emulated16 plus the avx512bf16 level's bfloat16 operations (linear_simd.h: vbf, load_bf16,
// round_to_bf16, dot_bf16), lane by lane in scalar code after Intel's documented pseudocode, so that
// cpu::linear_kernels_of<Emulated16Bf16>() fills tiled_bf16_dot and its loops and tails run here.
//   round_to_bf16 (VCVTNE2PS2BF16): zero or denormal -> signed zero (DAZ/FTZ), infinity truncated,
//     NaN truncated with the quiet bit (bit 6) set, a normal number rounded to nearest even by the
//     integer add of 0x7FFF + bit 16.
//   dot_bf16 (VDPBF16PS): per float32 lane i, acc = fma(a[2i+1], b[2i+1], acc), then
//     acc = fma(a[2i], b[2i], acc): each product is exact in float32 (8-bit significands), one
//     rounding to nearest even per step; denormal inputs (the bfloat16 values and the accumulator)
//     are read as signed zero and a denormal result is flushed to signed zero, whatever MXCSR says.
struct Emulated16Bf16 : Emulated16 {
  struct vbf {
    uint16_t v[32];
  };
  static vbf load_bf16(const uint16_t* p) {
    vbf r;
    std::memcpy(r.v, p, sizeof r.v);
    return r;
  }
  static void round_to_bf16(const float* src, uint16_t* dst) {
    for (int k = 0; k < 32; ++k) {
      uint32_t b;
      std::memcpy(&b, &src[k], 4);
      const uint32_t magnitude = b & 0x7fffffffu;
      if (magnitude < 0x00800000u)
        dst[k] = static_cast<uint16_t>((b >> 16) & 0x8000u);
      else if (magnitude > 0x7f800000u)
        dst[k] = static_cast<uint16_t>((b >> 16) | 0x40u);
      else if (magnitude == 0x7f800000u)
        dst[k] = static_cast<uint16_t>(b >> 16);
      else
        dst[k] = static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    }
  }
  static vf dot_bf16(vf acc, vbf a, vbf b) {
    float lanes[16];
    store(lanes, acc);
    for (int i = 0; i < 16; ++i) {
      float sum = flush(lanes[i]);
      sum = flush(std::fma(widen(a.v[2 * i + 1]), widen(b.v[2 * i + 1]), sum));
      sum = flush(std::fma(widen(a.v[2 * i]), widen(b.v[2 * i]), sum));
      lanes[i] = sum;
    }
    return load(lanes);
  }

 private:
  static float flush(float f) {  // a denormal to signed zero
    return std::fpclassify(f) == FP_SUBNORMAL ? std::copysign(0.0f, f) : f;
  }
  static float widen(uint16_t bits) {  // make_fp32, with denormal inputs as zero
    const uint32_t b = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return flush(f);
  }
};

// The avx512vnni level's int8 x int8 step (kernels/cpu/w8a8_simd.h's B at 64 bytes: the avx512 levels'
// masked-subtract sign and VPDPBUSD) in scalar code after Intel's pseudocode: per int32 lane l,
// acc[l] += sum over k < 4 of unsigned a[4l+k] times signed b[4l+k], a = |w| (as unsigned bytes),
// b = x with w's sign. Emulated16Vnni's table fills w8a8, so the 64-byte loop and its tails run here.
struct Emulated64Bytes {
  struct vi {
    int32_t lane[16];
  };
  static constexpr int kBytes = 64;
  struct WeightBytes {
    uint8_t magnitude[64];
    bool negative[64];
  };
  static vi zero() { return {}; }
  static WeightBytes weights(const int8_t* p) {
    WeightBytes w;
    for (int j = 0; j < 64; ++j) {
      w.magnitude[j] = static_cast<uint8_t>(p[j] < 0 ? -static_cast<int>(p[j]) : p[j]);  // -128 -> 128
      w.negative[j] = p[j] < 0;
    }
    return w;
  }
  static vi dot(vi acc, const WeightBytes& w, const int8_t* x) {
    for (int l = 0; l < 16; ++l)
      for (int k = 0; k < 4; ++k) {
        const int j = 4 * l + k;
        const int8_t b = w.negative[j] ? static_cast<int8_t>(-x[j]) : x[j];  // vpsubb: wraps, as the mask sub
        acc.lane[l] += static_cast<int32_t>(w.magnitude[j]) * b;
      }
    return acc;
  }
  static int32_t hsum(vi v) {
    int32_t sum = 0;
    for (int32_t lane : v.lane) sum += lane;
    return sum;
  }
};
struct Emulated16Vnni : Emulated16 {
  using Bytes = Emulated64Bytes;
};

}  // namespace gptj::testing
