// The avx2 level of the linear kernels (the baseline, x86-64-v3): 256-bit registers, 8 floats;
// float16 widened with F16C, bfloat16 by a 16-bit shift. Built with the project's flags plus
// -mtune=generic (kernels/cpu/CMakeLists.txt).
#include <immintrin.h>

#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/linear_simd.h"

namespace gptj::cpu {
namespace {

struct Avx2 {
  using vf = __m256;
  static constexpr int kWidth = 8;
  static vf zero() { return _mm256_setzero_ps(); }
  static vf add(vf a, vf b) { return _mm256_add_ps(a, b); }
  static vf fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(vf v) {
    const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_shuffle_ps(sum2, sum2, 1)));
  }
  static vf load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, vf v) { _mm256_storeu_ps(p, v); }
  static vf load(F16, const uint16_t* p) { return _mm256_cvtph_ps(load_bits(p)); }
  static vf load(BF16, const uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_bits(p)), 16));
  }
  static vf load(Int8, const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  template <class... P>
  static vf load8(P... p) {  // a register holds 8 floats: the same as load
    return load(p...);
  }

 private:
  static __m128i load_bits(const uint16_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
};

}  // namespace

constinit const LinearKernels kLinearAvx2 = linear_kernels_of<Avx2>();

}  // namespace gptj::cpu
