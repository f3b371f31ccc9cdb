// cpu::linear for weights the float32 kernels cannot read directly (16-bit, int8, int4) at row counts
// where sgemm or the register tile wins: blocks of `block_rows` weight rows are widened into a float32
// scratch, in parallel, by widen_row(row, dst [in]), and the float32 cpu::linear runs on each block.
// The arithmetic is the float32 product with the widened weights, exactly. Used by linear.cc (16-bit
// weights) and linear_quant.cc (int8/int4); both are built with the baseline flags.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace gptj::cpu {

// y [rows, out] (row stride ldy) = x [rows, in] (row stride ldx) · W^T (+ bias [out]).
template <class WidenRow>
void linear_widened_blocks(const float* x, int ldx, int rows, int in, int out, const float* bias, float* y, int ldy,
                           int block_rows, const WidenRow& widen_row) {
  static thread_local std::vector<float> scratch;  // the calling thread's; OpenMP workers get a pointer
  scratch.resize(static_cast<std::size_t>(block_rows) * in);
  float* const block = scratch.data();
  for (int o = 0; o < out; o += block_rows) {
    const int n = std::min(block_rows, out - o);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; ++r) widen_row(o + r, block + static_cast<std::size_t>(r) * in);
    linear(x, ldx, rows, in, block, n, bias ? bias + o : nullptr, y + o, ldy);
  }
}

}  // namespace gptj::cpu
