// HostMatrix: an owning row-major matrix [rows, cols] in host memory, element type F32, F16 or BF16.
// The CPU backend keeps 16-bit checkpoint weights 16-bit (half the memory and memory traffic; the
// kernels widen them to float32 in registers, exactly) and float32 ones float32.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "runtime/core/aligned.h"
#include "runtime/core/dtype.h"
#include "runtime/core/error.h"

namespace gptj {

class HostMatrix {
 public:
  HostMatrix() = default;
  HostMatrix(DType dtype, int64_t rows, int64_t cols)
      : dtype_(dtype), rows_(rows), cols_(cols),
        bytes_(static_cast<std::size_t>(rows * cols) * dtype_size(dtype)) {}

  DType dtype() const { return dtype_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  std::size_t size_bytes() const { return bytes_.size(); }
  const void* data() const { return bytes_.data(); }
  void* data() { return bytes_.data(); }
  const uint8_t* row(int64_t r) const { return bytes_.data() + static_cast<std::size_t>(r * cols_) * dtype_size(dtype_); }
  uint8_t* row(int64_t r) { return bytes_.data() + static_cast<std::size_t>(r * cols_) * dtype_size(dtype_); }

  // The same values as float32 (exact widening).
  HostMatrix to_f32() const {
    HostMatrix out(DType::kF32, rows_, cols_);
    convert_to_f32(dtype_, data(), static_cast<float*>(out.data()), static_cast<std::size_t>(rows_ * cols_));
    return out;
  }

  // [a; b; ...] — all with the same cols. Mixed dtypes are widened to float32.
  static HostMatrix stack_rows(const std::vector<HostMatrix>& parts) {
    return join(parts, /*by_rows=*/true);
  }
  // [a | b | ...] — all with the same rows. Mixed dtypes are widened to float32.
  static HostMatrix stack_cols(const std::vector<HostMatrix>& parts) {
    return join(parts, /*by_rows=*/false);
  }

 private:
  static HostMatrix join(const std::vector<HostMatrix>& parts, bool by_rows) {
    GPTJ_CHECK(!parts.empty(), "nothing to stack");
    bool same = true;
    for (const auto& p : parts) same &= p.dtype_ == parts[0].dtype_;
    if (!same) {
      std::vector<HostMatrix> widened;
      for (const auto& p : parts) widened.push_back(p.to_f32());
      return join(widened, by_rows);
    }
    const DType dtype = parts[0].dtype_;
    const std::size_t elem = dtype_size(dtype);
    int64_t rows = by_rows ? 0 : parts[0].rows_, cols = by_rows ? parts[0].cols_ : 0;
    for (const auto& p : parts) {
      GPTJ_CHECK(by_rows ? p.cols_ == cols : p.rows_ == rows, "stacked matrices do not line up");
      (by_rows ? rows : cols) += by_rows ? p.rows_ : p.cols_;
    }
    HostMatrix out(dtype, rows, cols);
    if (by_rows) {
      uint8_t* at = static_cast<uint8_t*>(out.data());
      for (const auto& p : parts) {
        std::memcpy(at, p.data(), p.size_bytes());
        at += p.size_bytes();
      }
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        uint8_t* at = out.row(r);
        for (const auto& p : parts) {
          std::memcpy(at, p.row(r), static_cast<std::size_t>(p.cols_) * elem);
          at += static_cast<std::size_t>(p.cols_) * elem;
        }
      }
    }
    return out;
  }

  DType dtype_ = DType::kF32;
  int64_t rows_ = 0, cols_ = 0;
  AlignedVector<uint8_t> bytes_;  // 64-byte aligned (aligned.h)
};

}  // namespace gptj
