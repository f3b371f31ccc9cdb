// The per-level kernels behind cpu::linear (linear.cc dispatches to them by active_cpu_isa()).
// Each level's translation unit is built with its own instruction-set flags (kernels/cpu/
// CMakeLists.txt) and defines one table; the tables are plain function pointers, constant-initialized,
// so loading the binary runs no code of any level.
//
// Every kernel computes y [rows, out] = x [rows, in] · W^T (+ bias [out] when non-null), W [out, in]
// row-major (nn.Linear layout), ldx / ldy the row strides of x / y; it never allocates.
#pragma once
#include <cstdint>

namespace gptj::cpu {

template <class Weight>
using LinearKernel = void (*)(const float* x, int ldx, int rows, int in, const Weight* weight, int out,
                              const float* bias, float* y, int ldy);

struct LinearKernels {
  // float32 weights: rows up to this many go to tiled_f32 (4+) / dots_f32, more to OpenBLAS sgemm.
  int tiled_rows_f32;
  LinearKernel<float> dots_f32;    // float32, a dot product per (output, row): any rows, any in
  LinearKernel<float> tiled_f32;   // float32 register tile (meant for 4..48 rows): in % 8 == 0
  // 16-bit weights (float16 / bfloat16), widened in registers, any rows (meant for 1..64): in % 8 == 0.
  // Each picks the few-rows streaming kernel (rows < 4) or the tile.
  LinearKernel<uint16_t> small_f16;
  LinearKernel<uint16_t> small_bf16;
  // int8 codes with one float32 scale per weight row (runtime/core/quant.h), the register tile widening
  // the codes in registers (meant for 4..64 rows): y = row_scale[o] * sum_i(x[i] * code[o, i]) + bias[o].
  // in % 8 == 0.
  void (*tiled_int8)(const float* x, int ldx, int rows, int in, const int8_t* weight, const float* row_scale,
                     int out, const float* bias, float* y, int ldy);
  // The same product for 1..3 rows (decode), streaming each weight row once: any in.
  void (*few_rows_int8)(const float* x, int ldx, int rows, int in, const int8_t* weight, const float* row_scale,
                        int out, const float* bias, float* y, int ldy);
  // dst [n] = src [n] widened to float32, exactly (the prefill path widens weight blocks for sgemm).
  void (*widen_f16)(const uint16_t* src, int n, float* dst);
  void (*widen_bf16)(const uint16_t* src, int n, float* dst);
  // bfloat16 x bfloat16 products (opt-in bfloat16 compute; only the avx512bf16 level has it, nullptr
  // elsewhere): bfloat16 weights [out, in], each input row first rounded to bfloat16 (to nearest even)
  // into `scratch`, products of bfloat16 pairs accumulated in float32 (vdpbf16ps), the register tile
  // (meant for 4+ rows, prefill counts too). Any rows, in, out. scratch: rows * bf16_dot_stride(in)
  // values (the rounded rows, zero-padded to that stride).
  void (*tiled_bf16_dot)(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                         const float* bias, float* y, int ldy, uint16_t* scratch);
  // int8 weights x int8 activations (opt-in --int8-activations; every level has it): input rows already
  // quantized (linear_quant.h: xq [rows, stride], codes in [-127, 127], scales sx [rows]); the sums
  // exact in int32, y[r, o] = row_scale[o] * sx[r] * sum + bias[o]. Any rows, in, out (meant for all).
  void (*w8a8)(const int8_t* xq, int stride, int rows, int in, const int8_t* weight, const float* row_scale, int out,
               const float* sx, const float* bias, float* y, int ldy);
};

// The row stride of tiled_bf16_dot's scratch: in rounded up to a multiple of kBf16DotPad (32: one
// 512-bit register of bfloat16 values). Defined in linear.cc (baseline flags), not inline: an inline
// function compiled at several levels could be merged into the AVX-512 copy (linear_simd.h).
constexpr int kBf16DotPad = 32;
int bf16_dot_stride(int in);

extern const LinearKernels kLinearAvx2;    // linear_avx2.cc: 256-bit, AVX2 + FMA + F16C
extern const LinearKernels kLinearAvx512;      // linear_avx512.cc: 512-bit, AVX-512 F/BW/VL/DQ
extern const LinearKernels kLinearAvx512Vnni;  // linear_avx512vnni.cc: the avx512 kernels, w8a8 on vpdpbusd
extern const LinearKernels kLinearAvx512Bf16;  // linear_avx512bf16.cc: avx512vnni's + tiled_bf16_dot

// The table of the level active_cpu_isa() chose (linear.cc).
const LinearKernels& active_linear_kernels();

}  // namespace gptj::cpu
