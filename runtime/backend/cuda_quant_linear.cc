#include "runtime/backend/cuda_quant_linear.h"

#include <algorithm>

#include "runtime/core/error.h"
#include "runtime/core/quant.h"

namespace gptj {

// The device kernels' group size is the one the host quantized with.
static_assert(cuda::kQuantGroup == kInt4Group, "kernels/cuda's int4 group differs from runtime/core/quant.h's");
namespace {

std::size_t element_bytes(cudaDataType_t type) {
  switch (type) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
    default: fail("quantized linear: unsupported input type {}", static_cast<int>(type));
  }
}

template <typename T>
void gemv(const void* x, int ldx, int rows, const cuda::QuantWeights& w, void* y, int ldy, bool y_f32,
          cudaStream_t stream) {
  cuda::quant_gemv<T>(static_cast<const T*>(x), ldx, rows, w, y, ldy, y_f32, stream);
}

template <typename T>
void dequantize(const cuda::QuantWeights& w, int row_begin, int n, void* out, cudaStream_t stream) {
  cuda::quant_dequantize<T>(w, row_begin, n, static_cast<T*>(out), stream);
}

}  // namespace

int CudaQuantLinear::tile_rows(std::size_t tile_bytes, int cols, std::size_t elem_bytes) {
  const std::size_t row = std::max<std::size_t>(1, static_cast<std::size_t>(cols) * elem_bytes);
  return static_cast<int>(std::max<std::size_t>(16, tile_bytes / row / 16 * 16));
}

void CudaQuantLinear::linear(const void* x, int ldx, int rows, const cuda::QuantWeights& w, void* y, int ldy,
                             cudaDataType_t in_type, cudaDataType_t y_type) {
  if (rows <= 0 || w.rows <= 0) return;
  GPTJ_CHECK(y_type == in_type || y_type == CUDA_R_32F, "quantized linear: output type {} for input type {}",
             static_cast<int>(y_type), static_cast<int>(in_type));
  const std::size_t elem = element_bytes(in_type);
  if (rows <= cuda::kQuantGemvMaxRows) {
    const bool y_f32 = y_type == CUDA_R_32F;
    if (in_type == CUDA_R_32F)
      gemv<float>(x, ldx, rows, w, y, ldy, y_f32, stream_);
    else if (in_type == CUDA_R_16F)
      gemv<__half>(x, ldx, rows, w, y, ldy, y_f32, stream_);
    else
      gemv<__nv_bfloat16>(x, ldx, rows, w, y, ldy, y_f32, stream_);
    return;
  }
  const int tile = std::min(w.rows, tile_rows(tile_bytes_, w.cols, elem));
  scratch_.reserve(static_cast<std::size_t>(tile) * w.cols * elem, stream_, device_);
  void* scratch = scratch_.at<void>(0);
  const std::size_t y_elem = element_bytes(y_type);
  for (int o = 0; o < w.rows; o += tile) {
    const int n = std::min(tile, w.rows - o);
    if (in_type == CUDA_R_32F)
      dequantize<float>(w, o, n, scratch, stream_);
    else if (in_type == CUDA_R_16F)
      dequantize<__half>(w, o, n, scratch, stream_);
    else
      dequantize<__nv_bfloat16>(w, o, n, scratch, stream_);
    gemm_.linear(x, ldx, rows, w.cols, scratch, n, static_cast<char*>(y) + o * y_elem, ldy, in_type, y_type);
  }
}

}  // namespace gptj
