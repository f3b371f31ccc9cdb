// cpu::linear for int8/int4 weights (kernels/cpu/linear_quant.cc); cpu::linear() routes here.
// Shapes and layouts as in cpu_kernels.h (WeightRef) and runtime/core/quant.h.
#pragma once
#include "kernels/cpu/cpu_kernels.h"

namespace gptj::cpu {

struct LinearKernels;  // kernels/cpu/linear_kernels.h

// y [rows, out] = x [rows, in] · dequant(W)^T (+ bias); weight.dtype is kInt8 or kInt4.
void linear_quantized(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
                      float* y, int ldy);

// Rows [row_begin, row_begin + n) of a quantized weight as float32, out [n, in]: scale * q, one
// rounding, the same values runtime/core/quant.h's dequantize_rows gives.
void dequantize_weight_rows(WeightRef weight, int in, int row_begin, int n, float* out);

// int8 weights x int8 activations (kernels/cpu/linear_w8a8.cc): each input row r quantized as
// sx[r] = max|x[r, :]| / 127, xq = round(x / sx[r]) in [-127, 127] (a zero row: sx 0, xq 0), then
// y[r, o] = w_scale[o] * sx[r] * (exact int32 sum of wq * xq) + bias[o].
void linear_int8_activations(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
                             float* y, int ldy);
// The same with a given level's table instead of the active one (tests run an emulated level).
void linear_int8_activations(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
                             float* y, int ldy, const LinearKernels& kernels);
// The row quantization it uses: xq [rows, activation_row_stride(in)] (zero-padded), sx [rows].
int activation_row_stride(int in);
void quantize_activation_rows(const float* x, int ldx, int rows, int in, int8_t* xq, float* sx);

}  // namespace gptj::cpu
