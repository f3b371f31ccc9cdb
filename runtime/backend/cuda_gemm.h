// Matrix products of the CUDA backend on cuBLASLt: y [rows, out] = x [rows, in] · W^T with W
// [out, in] row-major (a linear layer), 16-bit (or float32) inputs, float32 accumulation
// (CUBLAS_COMPUTE_32F), output in the input type or float32. Each distinct shape gets its
// descriptors and the heuristic's best algorithm once (cached; `rows` varies with the step's token
// count, so there is one entry per count seen); a shape cuBLASLt has no algorithm for falls back to
// cublasGemmEx (FP8 products have none). One per backend, used on its one stream; main thread only.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <tuple>

namespace gptj {

class CudaGemm {
 public:
  CudaGemm(cudaStream_t stream, int device);
  ~CudaGemm();
  CudaGemm(const CudaGemm&) = delete;
  CudaGemm& operator=(const CudaGemm&) = delete;

  // y (row stride ldy, type y_type) = x (row stride ldx, type in_type) · W^T, W [out, in] (in_type).
  void linear(const void* x, int ldx, int rows, int in, const void* w, int out, void* y, int ldy,
              cudaDataType_t in_type, cudaDataType_t y_type);

  // FP8 E4M3 (sm_89+): y = (x_scale * x8) · (w_scale * w8)^T, x8 [rows, in] dense, w8 [out, in], both
  // E4M3 bytes (in a multiple of 16); x_scale / w_scale point to one float each on the device
  // (cuBLASLt's B / A scale pointers); float32 accumulation without fast accumulation. Throws when
  // cuBLASLt has no algorithm for the shape (there is no cublasGemmEx fallback for FP8).
  void linear_fp8(const void* x8, int rows, int in, const void* w8, int out, const float* x_scale,
                  const float* w_scale, void* y, int ldy, cudaDataType_t y_type);

  // How many products ran through cuBLASLt and through the cublasGemmEx fallback (for the bench).
  std::size_t lt_calls() const { return lt_calls_; }
  std::size_t fallback_calls() const { return fallback_calls_; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool has_algo = false;
  };
  // rows, in, out, ldx, ldy, in_type, y_type, and the alignments of w, x, y in bytes (<= 256): an
  // algorithm is only chosen among those that work with the pointers' actual alignment.
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int>;
  Plan& plan_for(const Key& key);

  cudaStream_t stream_;
  int device_;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;  // the fallback
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
  std::size_t lt_calls_ = 0, fallback_calls_ = 0;
};

}  // namespace gptj
