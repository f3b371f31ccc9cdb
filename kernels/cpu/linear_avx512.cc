// The avx512 level of the linear kernels: 512-bit registers, 16 floats; float16 widened with
// vcvtph2ps (AVX-512F), bfloat16 by a 16-bit shift. Built with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mtune=generic on top of the project's flags (kernels/cpu/CMakeLists.txt); runs only
// where detected_cpu_isa() says the CPU and OS support it.

#include "kernels/cpu/avx512_level.h"
#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/linear_simd.h"

namespace gptj::cpu {

constinit const LinearKernels kLinearAvx512 = linear_kernels_of<Avx512>();

}  // namespace gptj::cpu
