// The avx2 level of the linear kernels (the baseline, x86-64-v3): 256-bit registers, 8 floats;
// float16 widened with F16C, bfloat16 by a 16-bit shift. Built with the project's flags plus
// -mtune=generic (kernels/cpu/CMakeLists.txt).
#include <immintrin.h>

#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/linear_simd.h"

namespace gptj::cpu {
namespace {

// int8 x int8 products, 32 per step (w8a8_simd.h): |w| as unsigned bytes times x with w's sign
// (vpsignb), pairs summed to int16 by vpmaddubsw (at most 2 * 128 * 127: no saturation), then to
// int32 by vpmaddwd.
struct Avx2Bytes {
  using vi = __m256i;
  static constexpr int kBytes = 32;
  struct WeightBytes {
    __m256i codes, magnitudes;
  };
  static vi zero() { return _mm256_setzero_si256(); }
  static WeightBytes weights(const int8_t* p) {
    const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {codes, _mm256_abs_epi8(codes)};
  }
  static vi dot(vi acc, WeightBytes w, const int8_t* x) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
    const __m256i pairs = _mm256_maddubs_epi16(w.magnitudes, _mm256_sign_epi8(xv, w.codes));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  static int32_t hsum(vi v) {
    const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i s2 = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0xB1)));
  }
};

struct Avx2 {
  using vf = __m256;
  using Bytes = Avx2Bytes;
  static constexpr int kWidth = 8;
  static vf pin(vf v) {  // linear_simd.h: pinned()
    asm("" : "+x"(v));
    return v;
  }
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
