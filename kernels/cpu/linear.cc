// cpu::linear: y [rows, out] = x [rows, in] · W^T (+ bias), W [out, in] in float32, float16 or
// bfloat16. Which code runs depends on the number of input rows (a step's token count):
//   rows 1..3     memory-bound: every weight row is streamed once and dotted with the few inputs
//   rows 4..48    (float32 at avx2, 4..96 at the avx512 levels; 4..64 for 16-bit weights) a register
//                 tile of 3 (avx2) or 6 (avx512) weight rows x 4 input rows: each register of weights
//                 feeds 4 FMAs; 16-bit weights are widened in registers.
//                 Measured on the project's 2-core VM at 32 rows it beats OpenBLAS sgemm by 10-35 %
//                 (which also packs the whole weight matrix first, even for one row).
//   more rows     OpenBLAS sgemm (16-bit weights widened block by block into a float32 scratch).
// The arithmetic is float32 throughout, so 16-bit weights give what their float32 widening gives —
// except with WeightRef::bf16_products (opt-in --dtype bfloat16): input rows rounded to bfloat16,
// then vdpbf16ps (the avx512bf16 level's tile, any row count) or, at other levels, the same by widening.
// The first two are instruction-set specific: this file dispatches them to the table of the active
// level (cpu_isa.h; linear_avx2.cc, linear_avx512.cc, linear_avx512vnni.cc, linear_avx512bf16.cc).
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/linear_kernels.h"
#include "kernels/cpu/linear_quant.h"
#include "kernels/cpu/widened_blocks.h"
#include "runtime/core/aligned.h"
#include "runtime/core/dtype.h"

namespace gptj::cpu {
namespace {

constexpr int kTiledRows16 = 64;   // 16-bit weights: widening for sgemm costs more until here

const LinearKernels& kernels() { return active_linear_kernels(); }

// WeightRef::bf16_products: the input rows rounded to bfloat16, products of bfloat16 pairs summed in
// float32 (cpu_kernels.h).
void linear_bf16_products(const float* x, int ldx, int rows, int in, const uint16_t* w, int out, const float* bias,
                          float* y, int ldy) {
  // 1-3 rows (decode) are memory-bound: the streaming kernel on the rounded rows reads each weight once
  // (the tile would compute 4 rows for 1); the same numerics, a bf16 x bf16 product being exact in float32.
  if (const auto kernel = kernels().tiled_bf16_dot; kernel && rows >= 4) {
    static thread_local AlignedVector<uint16_t> scratch;  // the calling thread's
    scratch.resize(static_cast<std::size_t>(rows) * bf16_dot_stride(in));
    kernel(x, ldx, rows, in, w, out, bias, y, ldy, scratch.data());
    return;
  }
  // No vdpbf16ps at this level: the rows rounded to bfloat16 and widened back, then the float32 path.
  static thread_local AlignedVector<float> rounded;  // the calling thread's; OpenMP workers get a pointer
  rounded.resize(static_cast<std::size_t>(rows) * in);
  float* const dst = rounded.data();
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < in; ++i)
      dst[static_cast<std::size_t>(r) * in + i] = bf16_to_f32(f32_to_bf16(x[static_cast<std::size_t>(r) * ldx + i]));
  linear(dst, in, rows, in, WeightRef{w, WeightRef::kBF16}, out, bias, y, ldy);
}

}  // namespace

int bf16_dot_stride(int in) { return (in + kBf16DotPad - 1) / kBf16DotPad * kBf16DotPad; }

// By CpuIsa.
const LinearKernels& active_linear_kernels() {
  static constexpr const LinearKernels* kByLevel[kCpuIsaLevels] = {&kLinearAvx2, &kLinearAvx512, &kLinearAvx512Vnni,
                                                                   &kLinearAvx512Bf16};
  return *kByLevel[static_cast<int>(active_cpu_isa())];
}

void linear(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
            float* y, int ldy) {
  if (weight.dtype == WeightRef::kInt8 || weight.dtype == WeightRef::kInt4) {
    linear_quantized(x, ldx, rows, in, weight, out, bias, y, ldy);
    return;
  }
  if (weight.dtype == 0) {
    linear(x, ldx, rows, in, static_cast<const float*>(weight.data), out, bias, y, ldy);
    return;
  }
  const auto* w = static_cast<const uint16_t*>(weight.data);
  if (weight.dtype == WeightRef::kBF16 && weight.bf16_products) {
    linear_bf16_products(x, ldx, rows, in, w, out, bias, y, ldy);
    return;
  }
  const bool half = weight.dtype == 1;
  if (rows <= kTiledRows16 && in % 8 == 0) {
    (half ? kernels().small_f16 : kernels().small_bf16)(x, ldx, rows, in, w, out, bias, y, ldy);
    return;
  }
  // Larger products: widen blocks of 512 weight rows into a float32 scratch and let sgemm run on each.
  const auto widen = half ? kernels().widen_f16 : kernels().widen_bf16;
  linear_widened_blocks(x, ldx, rows, in, out, bias, y, ldy, 512, [&](int row, float* dst) {
    widen(w + static_cast<std::size_t>(row) * in, in, dst);
  });
}

void linear(const float* x, int ldx, int rows, int in, const float* weight, int out,
            const float* bias, float* y, int ldy) {
  if (rows <= kernels().tiled_rows_f32) {
    (rows >= 4 && in % 8 == 0 ? kernels().tiled_f32 : kernels().dots_f32)(x, ldx, rows, in, weight, out, bias, y,
                                                                           ldy);
    return;
  }
  if (bias) {
    for (int r = 0; r < rows; ++r) std::memcpy(y + static_cast<std::size_t>(r) * ldy, bias, sizeof(float) * out);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, ldx, weight, in,
              bias ? 1.0f : 0.0f, y, ldy);
}

}  // namespace gptj::cpu
