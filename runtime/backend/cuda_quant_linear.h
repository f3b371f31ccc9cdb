// Weight-only quantized linear layers of the CUDA backend: y [rows, out] = x [rows, in] · dequant(W)^T
// for W [out, in] int8 / int4 on the device (kernels/cuda/cuda_kernels.h, QuantWeights), x in the
// compute type (float32 / float16 / bfloat16), y in it or in float32, float32 accumulation.
//   rows <= kQuantGemvMaxRows (decode): cuda::quant_gemv, weights dequantized in registers;
//   more rows: tiles of W's rows are dequantized into a scratch of the compute type (about
//   tile_bytes, at least 16 rows) and each tile is one cuBLASLt product (CudaGemm) into its columns of y.
// One per backend, on its stream (shared with its CudaGemm); the scratch grows once to its size and
// is reused by every tile and every matrix (stream order serializes them). Main thread only.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "kernels/cuda/cuda_kernels.h"
#include "runtime/backend/cuda_buffer.h"
#include "runtime/backend/cuda_gemm.h"

namespace gptj {

class CudaQuantLinear {
 public:
  static constexpr std::size_t kDefaultTileBytes = std::size_t{16} << 20;
  CudaQuantLinear(CudaGemm& gemm, cudaStream_t stream, int device, std::size_t tile_bytes = kDefaultTileBytes)
      : gemm_(gemm), stream_(stream), device_(device), tile_bytes_(tile_bytes) {}

  // y (row stride ldy, type y_type: in_type or CUDA_R_32F) = x (row stride ldx, type in_type:
  // CUDA_R_32F, CUDA_R_16F or CUDA_R_16BF) · dequant(w)^T; x [rows, w.cols], y [rows, w.rows].
  void linear(const void* x, int ldx, int rows, const cuda::QuantWeights& w, void* y, int ldy, cudaDataType_t in_type,
              cudaDataType_t y_type);

  // Rows of W per dequantized tile of about tile_bytes for a matrix of `cols` columns in elements of
  // `elem_bytes`: a multiple of 16, at least 16.
  static int tile_rows(std::size_t tile_bytes, int cols, std::size_t elem_bytes);

 private:
  CudaGemm& gemm_;
  cudaStream_t stream_;
  int device_;
  std::size_t tile_bytes_;
  CudaGrowBuffer scratch_{CudaGrowBuffer::Kind::kDevice, "dequantized weight tile"};
};

}  // namespace gptj
