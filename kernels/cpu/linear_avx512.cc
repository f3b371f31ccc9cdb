// The avx512 level of the linear kernels: 512-bit registers, 16 floats; float16 widened with
// vcvtph2ps (AVX-512F), bfloat16 by a 16-bit shift. Built with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mtune=generic on top of the project's flags (kernels/cpu/CMakeLists.txt); runs only
// where detected_cpu_isa() says the CPU and OS support it.

// GCC 12's AVX-512 intrinsics start from _mm*_undefined_*() (`__m512 __Y = __Y;`), which
// -Wmaybe-uninitialized reports wherever they inline (GCC bug 105593, fixed in GCC 13); the warning
// is located in the intrinsics' headers, so it is silenced for them only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/linear_simd.h"

namespace gptj::cpu {
namespace {

struct Avx512 {
  using vf = __m512;
  static constexpr int kWidth = 16;
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

constinit const LinearKernels kLinearAvx512 = linear_kernels_of<Avx512>();

}  // namespace gptj::cpu
