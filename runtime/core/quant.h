// Weight formats a backend can hold a weight matrix in, and round-to-nearest quantization into them.
// A weight matrix is [rows, cols] in nn.Linear layout (one row per output channel); quantization is
// done once, at load, on each rank from its own slices (no conversion step, no calibration data).
//
//   int8  symmetric per row (output channel): scale = max|w| / 127, q = round(w / scale) in
//         [-127, 127], stored [rows, cols] int8; scales float32 [rows].
//   int4  symmetric per group of kInt4Group = 128 consecutive columns of a row (the last group of a
//         row may be shorter): scale = max|w| / 7, q = round(w / scale) in [-7, 7], stored as q + 8
//         in a nibble; scales float16 [rows, groups]. Nibble layout: every 8 bytes hold 16
//         consecutive values, byte j's low nibble = value j and its high nibble = value j + 8
//         (so one 8-byte load widens to two runs of 8 values); a row is padded to a multiple of 16
//         values with the nibble for 0.
// A scale of 0 (an all-zero row or group; for int4 also a group whose max|w| / 7 is below float16's
// smallest subnormal, 2^-24) dequantizes to zeros. Non-finite weights are refused at
// load with the tensor's name. Why symmetric round-to-nearest: it needs no calibration data and no
// zero-points in the inner loop (the kernels multiply by the scale once per row or group), and GPT-J's
// weights are close to symmetric around 0; int4 keeps [-7, 7] so +/-max|w| are both representable.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/aligned.h"
#include "runtime/core/matrix.h"

namespace gptj {

// What --weights asks for: the checkpoint's own dtype (kStored, "auto") or a quantized format.
enum class WeightFormat { kStored, kInt8, kInt4, kFp8 };

// "auto"/"stored", "int8", "int4", "fp8"; throws naming the valid choices otherwise.
WeightFormat parse_weight_format(std::string_view text);
std::string_view weight_format_name(WeightFormat format);  // "auto", "int8", "int4", "fp8"

constexpr int kInt4Group = 128;
// An int4 row of `cols` values: its bytes (padded to 16 values) and its number of scale groups.
constexpr int64_t int4_row_bytes(int64_t cols) { return (cols + 15) / 16 * 8; }
constexpr int64_t int4_groups(int64_t cols) { return (cols + kInt4Group - 1) / kInt4Group; }

// A quantized [rows, cols] matrix (format kInt8 or kInt4; see the layout above).
struct QuantizedMatrix {
  WeightFormat format = WeightFormat::kInt8;
  int64_t rows = 0, cols = 0;
  AlignedVector<uint8_t> values;  // int8: rows * cols bytes; int4: rows * row_bytes(); 64-byte aligned
  std::vector<float> scales;     // int8 only: [rows]
  std::vector<uint16_t> scales16;  // int4 only: float16 [rows, groups()]

  int64_t row_bytes() const { return format == WeightFormat::kInt8 ? cols : int4_row_bytes(cols); }
  int64_t groups() const { return int4_groups(cols); }
  std::size_t size_bytes() const {
    return values.size() + scales.size() * sizeof(float) + scales16.size() * sizeof(uint16_t);
  }
};

// Quantizes `m` (any stored dtype) into `format` (kInt8 or kInt4). `name` names the tensor in the
// error for a non-finite weight ("<name>: weight [r, c] is nan; cannot quantize").
QuantizedMatrix quantize(const HostMatrix& m, WeightFormat format, std::string_view name);

// Rows [row_begin, row_begin + n) dequantized to float32 (scale * q, rounded once), out [n, cols].
void dequantize_rows(const QuantizedMatrix& q, int64_t row_begin, int64_t n, float* out);
// One row of raw codes, the scalar reference the kernels agree with: int8 values [cols] with their
// row's scale; int4 bytes [int4_row_bytes(cols)] with their float16 scales [int4_groups(cols)].
void dequantize_int8_row(const int8_t* values, float scale, int64_t cols, float* out);
void dequantize_int4_row(const uint8_t* bytes, const uint16_t* scales16, int64_t cols, float* out);

// A weight matrix as a backend holds it: the checkpoint's dtype (f32/f16/bf16) or quantized.
class WeightMatrix {
 public:
  WeightMatrix() = default;
  explicit WeightMatrix(HostMatrix plain) : plain_(std::move(plain)) {}
  explicit WeightMatrix(QuantizedMatrix quantized) : quantized_(std::move(quantized)), is_quantized_(true) {}
  // `m` as `format` (kStored keeps it as it is).
  static WeightMatrix make(HostMatrix m, WeightFormat format, std::string_view name);

  bool is_quantized() const { return is_quantized_; }
  int64_t rows() const { return is_quantized_ ? quantized_.rows : plain_.rows(); }
  int64_t cols() const { return is_quantized_ ? quantized_.cols : plain_.cols(); }
  std::size_t size_bytes() const { return is_quantized_ ? quantized_.size_bytes() : plain_.size_bytes(); }
  const HostMatrix& plain() const { return plain_; }
  const QuantizedMatrix& quantized() const { return quantized_; }
  // "float16", "int8", ... (for the reports).
  std::string format_name() const;

 private:
  HostMatrix plain_;
  QuantizedMatrix quantized_;
  bool is_quantized_ = false;
};

}  // namespace gptj
