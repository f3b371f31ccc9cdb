// The avx512vnni level of the linear kernels: the avx512 level's kernels (kernels/cpu/avx512_level.h)
// with the int8 x int8 product (LinearKernels::w8a8, --int8-activations) on vpdpbusd. Built with
// -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mtune=generic (kernels/cpu/CMakeLists.txt);
// runs only where detected_cpu_isa() says the CPU and OS support AVX512-VNNI (Cascade Lake, Ice Lake
// and later Xeons; AMD Zen 4 and later). Never run on such hardware by this project yet: the same
// template runs here at avx2 and at 64 bytes per step emulated (tests/unit/linear_quant_test.cc).
#include "kernels/cpu/avx512_level.h"
#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/linear_simd.h"

namespace gptj::cpu {
namespace {

struct Avx512Vnni : Avx512 {
  using Bytes = Avx512VnniBytes;
};

}  // namespace

constinit const LinearKernels kLinearAvx512Vnni = linear_kernels_of<Avx512Vnni>();

}  // namespace gptj::cpu
