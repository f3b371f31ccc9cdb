// A 16-float "register" emulated by two AVX2 ones: the level interface of kernels/cpu/linear_simd.h
// at the avx512 level's width, so the kernel templates' 16-float loops and 8-float tails run on any
// x86-64-v3 machine (tests only; cpu::linear_kernels_of<Emulated16>() is its table).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/linear_simd.h"

namespace gptj::testing {

struct Emulated16 {
  struct vf {
    __m256 lo, hi;
  };
  static constexpr int kWidth = 16;
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

}  // namespace gptj::testing
