// The avx512 vector level (kernels/cpu/linear_simd.h's V at 512 bits, 16 floats): float16 widened
// with vcvtph2ps (AVX-512F), bfloat16 by a 16-bit shift. Included only by translation units built
// with at least -mavx512f -mavx512bw -mavx512vl -mavx512dq (linear_avx512.cc, linear_avx512vnni.cc,
// linear_avx512bf16.cc; the last two add -mavx512vnni, which Avx512VnniBytes needs);
// in an anonymous namespace for linear_simd.h's reason (no copy merged across levels).
#pragma once
// GCC 12's AVX-512 intrinsics start from _mm*_undefined_*() (`__m512 __Y = __Y;`), which
// -Wmaybe-uninitialized (or, inlined into some loops, -Wuninitialized) reports wherever they inline
// (GCC bug 105593, fixed in GCC 13); the warning is located in the intrinsics' headers, so it is
// silenced for them only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "kernels/cpu/linear_simd.h"

namespace gptj::cpu {
namespace {

// int8 x int8 products, 64 per step (w8a8_simd.h): x takes w's sign by a masked subtract (AVX-512
// has no vpsignb), then vpmaddubsw + vpmaddwd as at avx2.
struct Avx512Bytes {
  using vi = __m512i;
  static constexpr int kBytes = 64;
  struct WeightBytes {
    __m512i magnitudes;
    __mmask64 negative;
  };
  static vi zero() { return _mm512_setzero_si512(); }
  static WeightBytes weights(const int8_t* p) {
    const __m512i codes = _mm512_loadu_si512(p);
    return {_mm512_abs_epi8(codes), _mm512_movepi8_mask(codes)};
  }
  static __m512i signed_like(WeightBytes w, const int8_t* x) {  // x[j] * sign(w[j]), where w[j] != 0
    const __m512i xv = _mm512_loadu_si512(x);
    return _mm512_mask_sub_epi8(xv, w.negative, _mm512_setzero_si512(), xv);
  }
  static vi dot(vi acc, WeightBytes w, const int8_t* x) {
    const __m512i pairs = _mm512_maddubs_epi16(w.magnitudes, signed_like(w, x));
    return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
  }
  static int32_t hsum(vi v) { return _mm512_reduce_add_epi32(v); }
};

#if defined(__AVX512VNNI__)
// The same with VNNI: one vpdpbusd (unsigned |w| times signed x, four products summed into each
// int32 lane) per 64 bytes, in place of vpmaddubsw + vpmaddwd + vpaddd.
struct Avx512VnniBytes : Avx512Bytes {
  static vi dot(vi acc, WeightBytes w, const int8_t* x) { return _mm512_dpbusd_epi32(acc, w.magnitudes, signed_like(w, x)); }
};
#endif

struct Avx512 {
  using vf = __m512;
  using Bytes = Avx512Bytes;
  static constexpr int kWidth = 16;
  // The register tile: 6 weight rows x 4 input rows, 24 of the 32 registers accumulating; a step
  // loads 10 registers for 24 FMAs (the 3 x 4 tile: 7 for 12).
  static constexpr int kTileOutputs = 6;
  static vf pin(vf v) {  // linear_simd.h: pinned()
    asm("" : "+v"(v));
    return v;
  }
  static vf zero() { return _mm512_setzero_ps(); }
  static vf add(vf a, vf b) { return _mm512_add_ps(a, b); }
  static vf fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(vf v) { return _mm512_reduce_add_ps(v); }
  // 16 values.
  static vf load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, vf v) { _mm512_storeu_ps(p, v); }
  static vf load(F16, const uint16_t* p) { return _mm512_cvtph_ps(load_bits(p)); }
  static vf load(BF16, const uint16_t* p) { return from_bf16(load_bits(p)); }
  // 8 values in the low lanes, zeros above (reads only those 8).
  static vf load8(const float* p) { return _mm512_maskz_loadu_ps(0x00FF, p); }
  static vf load8(F16, const uint16_t* p) { return _mm512_cvtph_ps(load8_bits(p)); }
  static vf load8(BF16, const uint16_t* p) { return from_bf16(load8_bits(p)); }
  static vf load(Int8, const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static vf load8(Int8, const int8_t* p) {  // 8 bytes read, the upper 8 lanes zero
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }

 private:
  static __m256i load_bits(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static __m256i load8_bits(const uint16_t* p) {
    return _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static vf from_bf16(__m256i bits) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)); }
};

}  // namespace
}  // namespace gptj::cpu
