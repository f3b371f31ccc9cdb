// The element types of the CUDA backend's compute (float, __half, __nv_bfloat16): each one's
// gptj::DType and cudaDataType_t. Host code; shared by the backend and the GPU tests.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <library_types.h>

#include "runtime/core/dtype.h"

namespace gptj {

template <typename T>
struct CudaTypeInfo;
template <>
struct CudaTypeInfo<float> {
  static constexpr DType kDType = DType::kF32;
  static constexpr cudaDataType_t kCuda = CUDA_R_32F;
};
template <>
struct CudaTypeInfo<__half> {
  static constexpr DType kDType = DType::kF16;
  static constexpr cudaDataType_t kCuda = CUDA_R_16F;
};
template <>
struct CudaTypeInfo<__nv_bfloat16> {
  static constexpr DType kDType = DType::kBF16;
  static constexpr cudaDataType_t kCuda = CUDA_R_16BF;
};

}  // namespace gptj
