// cpu::linear for int8 weights with int8 activations (opt-in: --int8-activations): each input row is
// quantized on the fly (symmetric, one float32 scale per row), the products are exact int32 sums of
// int8 x int8, and one float multiply per output applies both scales. The products are the active
// level's LinearKernels::w8a8 (kernels/cpu/w8a8_simd.h): vpmaddubsw + vpmaddwd at avx2 (32 weights in
// ~4 instructions instead of ~16 when the weights are widened to float32, so a core is no longer
// compute-bound below its share of the memory bandwidth), the same at 512 bits at avx512, vpdpbusd at
// avx512vnni and avx512bf16. What it changes is the arithmetic (the activations' rounding): its
// accuracy is measured in tests/golden/quant_golden_test.cc.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/linear_quant.h"
#include "runtime/core/aligned.h"
#include "runtime/core/error.h"

namespace gptj::cpu {

int activation_row_stride(int in) { return (in + 31) / 32 * 32; }

void quantize_activation_rows(const float* x, int ldx, int rows, int in, int8_t* xq, float* sx) {
  const int stride = activation_row_stride(in);
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<std::size_t>(r) * ldx;
    float m = 0.0f;
    for (int i = 0; i < in; ++i) m = std::max(m, std::fabs(xr[i]));
    sx[r] = m / 127.0f;
    int8_t* q = xq + static_cast<std::size_t>(r) * stride;
    for (int i = 0; i < stride; ++i)
      q[i] = (i < in && m > 0.0f) ? static_cast<int8_t>(std::clamp(std::nearbyint(xr[i] / sx[r]), -127.0f, 127.0f)) : 0;
  }
}

void linear_int8_activations(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
                             float* y, int ldy, const LinearKernels& kernels) {
  GPTJ_CHECK(kernels.w8a8 != nullptr, "int8 activations: the active CPU kernel level has no int8 x int8 product");
  const int stride = activation_row_stride(in);
  static thread_local AlignedVector<int8_t> xq;  // the calling thread's; OpenMP workers get a pointer
  static thread_local std::vector<float> sx;
  xq.resize(static_cast<std::size_t>(rows) * stride);
  sx.resize(static_cast<std::size_t>(rows));
  quantize_activation_rows(x, ldx, rows, in, xq.data(), sx.data());
  kernels.w8a8(xq.data(), stride, rows, in, static_cast<const int8_t*>(weight.data),
               static_cast<const float*>(weight.scales), out, sx.data(), bias, y, ldy);
}

void linear_int8_activations(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
                             float* y, int ldy) {
  linear_int8_activations(x, ldx, rows, in, weight, out, bias, y, ldy, active_linear_kernels());
}

}  // namespace gptj::cpu
