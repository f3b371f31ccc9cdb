// The avx512bf16 level of the linear kernels: the avx512vnni level's kernels (kernels/cpu/avx512_level.h;
// the int8 x int8 product on vpdpbusd: every CPU with AVX512-BF16 has VNNI) plus the bfloat16 x bfloat16
// register tile (LinearKernels::tiled_bf16_dot): input rows rounded with vcvtne2ps2bf16, pairs
// multiplied and accumulated in float32 with vdpbf16ps. Built with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mavx512vnni -mavx512bf16 -mtune=generic (kernels/cpu/CMakeLists.txt); runs only where
// detected_cpu_isa() says the CPU and OS support AVX512-BF16 and VNNI. Never run on such hardware
// by this project yet: its logic is tested here through an emulation (tests/unit/emulated16.h).
#include "kernels/cpu/avx512_level.h"
#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/linear_simd.h"

namespace gptj::cpu {
namespace {

struct Avx512Bf16 : Avx512 {
  using Bytes = Avx512VnniBytes;
  using vbf = __m512bh;  // 32 bfloat16 values
  using Avx512::pin;
  static vbf pin(vbf v) {  // linear_simd.h: pinned()
    asm("" : "+v"(v));
    return v;
  }
  static vbf load_bf16(const uint16_t* p) { return reinterpret_cast<vbf>(_mm512_loadu_si512(p)); }
  // 32 floats to bfloat16: _mm512_cvtne2ps_pbh(a, b) puts b's 16 in the low half, a's in the high.
  static void round_to_bf16(const float* src, uint16_t* dst) {
    const __m512bh bits = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
    _mm512_storeu_si512(dst, reinterpret_cast<__m512i>(bits));
  }
  static vf dot_bf16(vf acc, vbf a, vbf b) { return _mm512_dpbf16_ps(acc, a, b); }
};

}  // namespace

constinit const LinearKernels kLinearAvx512Bf16 = linear_kernels_of<Avx512Bf16>();

}  // namespace gptj::cpu
