// cpu::linear for int8/int4 weights (kernels/cpu/linear_quant.cc); cpu::linear() routes here.
// Shapes and layouts as in cpu_kernels.h (WeightRef) and runtime/core/quant.h.
#pragma once
#include "kernels/cpu/cpu_kernels.h"

namespace gptj::cpu {

// y [rows, out] = x [rows, in] · dequant(W)^T (+ bias); weight.dtype is kInt8 or kInt4.
void linear_quantized(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
                      float* y, int ldy);

// Rows [row_begin, row_begin + n) of a quantized weight as float32, out [n, in]: scale * q, one
// rounding, the same values runtime/core/quant.h's dequantize_rows gives.
void dequantize_weight_rows(WeightRef weight, int in, int row_begin, int n, float* out);

}  // namespace gptj::cpu
