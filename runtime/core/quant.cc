#include "runtime/core/quant.h"

#include <algorithm>
#include <cmath>

#include "runtime/core/error.h"

namespace gptj {
namespace {

// The row `r` of `m` as float32, refusing non-finite values by tensor name and position.
void row_f32(const HostMatrix& m, int64_t r, std::string_view name, std::vector<float>& out) {
  out.resize(static_cast<std::size_t>(m.cols()));
  convert_to_f32(m.dtype(), m.row(r), out.data(), out.size());
  for (std::size_t c = 0; c < out.size(); ++c)
    GPTJ_CHECK(std::isfinite(out[c]), "{}: weight [{}, {}] is {}; cannot quantize a non-finite weight", name, r, c,
               out[c]);
}

float max_abs(const float* v, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(v[i]));
  return m;
}

int quantize_value(float w, float scale, int limit) {
  if (scale == 0.0f) return 0;
  const float q = std::nearbyint(w / scale);
  return static_cast<int>(std::clamp(q, static_cast<float>(-limit), static_cast<float>(limit)));
}

void quantize_int8_row(const std::vector<float>& w, uint8_t* out, float& scale) {
  scale = max_abs(w.data(), static_cast<int64_t>(w.size())) / 127.0f;
  for (std::size_t c = 0; c < w.size(); ++c)
    out[c] = static_cast<uint8_t>(static_cast<int8_t>(quantize_value(w[c], scale, 127)));
}

// One row into nibbles (layout in quant.h); scales16 [groups] float16.
void quantize_int4_row(const std::vector<float>& w, int64_t r, std::string_view name, uint8_t* out,
                       uint16_t* scales16) {
  const int64_t cols = static_cast<int64_t>(w.size());
  for (int64_t g = 0; g * kInt4Group < cols; ++g) {
    const int64_t begin = g * kInt4Group, n = std::min<int64_t>(kInt4Group, cols - begin);
    scales16[g] = f32_to_f16(max_abs(&w[begin], n) / 7.0f);
    // Quantize with the float16 scale the kernels will multiply by.
    const float scale = f16_to_f32(scales16[g]);
    GPTJ_CHECK(std::isfinite(scale), "{}: row {} has weights beyond float16's range ({}); cannot quantize to int4",
               name, r, max_abs(&w[begin], n));
    for (int64_t c = begin; c < begin + n; ++c) {
      const uint8_t nibble = static_cast<uint8_t>(quantize_value(w[c], scale, 7) + 8);
      uint8_t& byte = out[c / 16 * 8 + c % 8];
      byte = (c % 16 < 8) ? static_cast<uint8_t>((byte & 0xF0) | nibble) : static_cast<uint8_t>((byte & 0x0F) | (nibble << 4));
    }
  }
}

}  // namespace

WeightFormat parse_weight_format(std::string_view text) {
  if (text == "auto" || text == "stored") return WeightFormat::kStored;
  if (text == "int8") return WeightFormat::kInt8;
  if (text == "int4") return WeightFormat::kInt4;
  if (text == "fp8") return WeightFormat::kFp8;
  fail("unknown --weights '{}' (expected auto, int8, int4 or fp8)", text);
}

std::string_view weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kStored: return "auto";
    case WeightFormat::kInt8: return "int8";
    case WeightFormat::kInt4: return "int4";
    case WeightFormat::kFp8: return "fp8";
  }
  return "?";
}

QuantizedMatrix quantize(const HostMatrix& m, WeightFormat format, std::string_view name) {
  GPTJ_CHECK(format == WeightFormat::kInt8 || format == WeightFormat::kInt4,
             "{}: cannot quantize to '{}' on the host (int8 or int4)", name, weight_format_name(format));
  QuantizedMatrix q;
  q.format = format;
  q.rows = m.rows();
  q.cols = m.cols();
  // Unused nibbles (row padding) hold 8, the code for 0.
  q.values.assign(static_cast<std::size_t>(q.rows * q.row_bytes()), format == WeightFormat::kInt4 ? 0x88 : 0);
  if (format == WeightFormat::kInt8)
    q.scales.resize(static_cast<std::size_t>(q.rows));
  else
    q.scales16.resize(static_cast<std::size_t>(q.rows * q.groups()));
  std::vector<float> row;
  for (int64_t r = 0; r < q.rows; ++r) {
    row_f32(m, r, name, row);
    uint8_t* out = q.values.data() + r * q.row_bytes();
    if (format == WeightFormat::kInt8)
      quantize_int8_row(row, out, q.scales[r]);
    else
      quantize_int4_row(row, r, name, out, q.scales16.data() + r * q.groups());
  }
  return q;
}

void dequantize_int8_row(const int8_t* values, float scale, int64_t cols, float* out) {
  for (int64_t c = 0; c < cols; ++c) out[c] = scale * static_cast<float>(values[c]);
}

void dequantize_int4_row(const uint8_t* bytes, const uint16_t* scales16, int64_t cols, float* out) {
  for (int64_t c = 0; c < cols; ++c) {
    const uint8_t byte = bytes[c / 16 * 8 + c % 8];
    const int nibble = (c % 16 < 8) ? (byte & 0x0F) : (byte >> 4);
    out[c] = f16_to_f32(scales16[c / kInt4Group]) * static_cast<float>(nibble - 8);
  }
}

void dequantize_rows(const QuantizedMatrix& q, int64_t row_begin, int64_t n, float* out) {
  GPTJ_CHECK(row_begin >= 0 && n >= 0 && row_begin + n <= q.rows, "dequantize rows [{}, {}) of {}", row_begin,
             row_begin + n, q.rows);
  for (int64_t r = row_begin; r < row_begin + n; ++r, out += q.cols) {
    const uint8_t* v = q.values.data() + r * q.row_bytes();
    if (q.format == WeightFormat::kInt8)
      dequantize_int8_row(reinterpret_cast<const int8_t*>(v), q.scales[r], q.cols, out);
    else
      dequantize_int4_row(v, q.scales16.data() + r * q.groups(), q.cols, out);
  }
}

WeightMatrix WeightMatrix::make(HostMatrix m, WeightFormat format, std::string_view name) {
  if (format == WeightFormat::kStored) return WeightMatrix(std::move(m));
  return WeightMatrix(quantize(m, format, name));
}

std::string WeightMatrix::format_name() const {
  if (is_quantized_) return std::string(weight_format_name(quantized_.format));
  return std::string(dtype_name(plain_.dtype()));
}

}  // namespace gptj
