#include "runtime/backend/cuda_gemm.h"

#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"
#include "runtime/core/error.h"

namespace gptj {

namespace {
constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;  // cuBLASLt scratch (split-K etc.)

// Largest power of two (at most 256) dividing the address.
int alignment_of(const void* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  int alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment >>= 1;
  return alignment;
}

void check_lt(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS error in {}: {} ({})", what, cublasGetStatusString(status), static_cast<int>(status));
}
}  // namespace

CudaGemm::CudaGemm(cudaStream_t stream, int device) : stream_(stream), device_(device) {
  check_lt(cublasLtCreate(&lt_), "cublasLtCreate");
  check_lt(cublasCreate(&blas_), "cublasCreate");
  check_lt(cublasSetStream(blas_, stream_), "cublasSetStream");
  const cudaError_t err = cudaMalloc(&workspace_, kWorkspaceBytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail("GPU {}: cannot allocate the {} MiB cuBLASLt workspace: {}", device_, kWorkspaceBytes >> 20,
         cudaGetErrorString(err));
  }
  workspace_bytes_ = kWorkspaceBytes;
}

CudaGemm::~CudaGemm() {
  for (auto& [key, plan] : plans_) {
    if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c) cublasLtMatrixLayoutDestroy(plan.c);
    if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
  }
  if (workspace_) cudaFree(workspace_);
  if (blas_) cublasDestroy(blas_);
  if (lt_) cublasLtDestroy(lt_);
}

// Column-major view: y^T [out, rows] = op_T(W as [in, out], ld in) · x^T [in, rows] (ld ldx).
CudaGemm::Plan& CudaGemm::plan_for(const Key& key) {
  auto found = plans_.find(key);
  if (found != plans_.end()) return found->second;
  const auto [rows, in, out, ldx, ldy, in_type_i, y_type_i, align_w, align_x, align_y] = key;
  const auto in_type = static_cast<cudaDataType_t>(in_type_i), y_type = static_cast<cudaDataType_t>(y_type_i);
  Plan& plan = plans_[key];
  check_lt(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  check_lt(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)),
           "cublasLtMatmulDescSetAttribute(TRANSA)");
  check_lt(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)),
           "cublasLtMatmulDescSetAttribute(TRANSB)");
  check_lt(cublasLtMatrixLayoutCreate(&plan.a, in_type, in, out, in), "cublasLtMatrixLayoutCreate(W)");
  check_lt(cublasLtMatrixLayoutCreate(&plan.b, in_type, in, rows, ldx), "cublasLtMatrixLayoutCreate(x)");
  check_lt(cublasLtMatrixLayoutCreate(&plan.c, y_type, out, rows, ldy), "cublasLtMatrixLayoutCreate(y)");
  if (in_type == CUDA_R_8F_E4M3) {
    // The heuristic sees scale pointers set, as the products will (linear_fp8 points them at the
    // real scales before each call); the workspace stands in for them here.
    for (cublasLtMatmulDescAttributes_t which : {CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER})
      check_lt(cublasLtMatmulDescSetAttribute(plan.desc, which, &workspace_, sizeof(workspace_)),
               "cublasLtMatmulDescSetAttribute(scale pointer)");
  }
  cublasLtMatmulPreference_t preference = nullptr;
  check_lt(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  check_lt(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &workspace_bytes_, sizeof(workspace_bytes_)),
           "cublasLtMatmulPreferenceSetAttribute");
  const uint32_t alignments[4] = {static_cast<uint32_t>(align_w), static_cast<uint32_t>(align_x),
                                  static_cast<uint32_t>(align_y), static_cast<uint32_t>(align_y)};
  const cublasLtMatmulPreferenceAttributes_t which[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    check_lt(cublasLtMatmulPreferenceSetAttribute(preference, which[i], &alignments[i], sizeof(uint32_t)),
             "cublasLtMatmulPreferenceSetAttribute(alignment)");
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(lt_, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                                               preference, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(preference);
  if (status == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    plan.algo = result.algo;
    plan.has_algo = true;
  }
  return plan;
}

void CudaGemm::linear(const void* x, int ldx, int rows, int in, const void* w, int out, void* y, int ldy,
                      cudaDataType_t in_type, cudaDataType_t y_type) {
  if (rows <= 0) return;
  const float alpha = 1.0f, beta = 0.0f;
  Plan& plan = plan_for({rows, in, out, ldx, ldy, static_cast<int>(in_type), static_cast<int>(y_type),
                         alignment_of(w), alignment_of(x), alignment_of(y)});
  if (plan.has_algo) {
    ++lt_calls_;
    check_lt(cublasLtMatmul(lt_, plan.desc, &alpha, w, plan.a, x, plan.b, &beta, y, plan.c, y, plan.c,
                            &plan.algo, workspace_, workspace_bytes_, stream_),
             "cublasLtMatmul");
    return;
  }
  ++fallback_calls_;
  check_lt(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, in_type, in, x, in_type, ldx,
                        &beta, y, y_type, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
           "cublasGemmEx");
}

void CudaGemm::linear_fp8(const void* x8, int rows, int in, const void* w8, int out, const float* x_scale,
                          const float* w_scale, void* y, int ldy, cudaDataType_t y_type) {
  if (rows <= 0) return;
  Plan& plan = plan_for({rows, in, out, in, ldy, static_cast<int>(CUDA_R_8F_E4M3), static_cast<int>(y_type),
                         alignment_of(w8), alignment_of(x8), alignment_of(y)});
  if (!plan.has_algo)
    fail("cuBLASLt has no FP8 algorithm for x [{}, {}] · W [{}, {}]^T into type {} (row stride {}) on GPU {}", rows,
         in, out, in, static_cast<int>(y_type), ldy, device_);
  check_lt(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof(w_scale)),
           "cublasLtMatmulDescSetAttribute(A scale)");
  check_lt(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof(x_scale)),
           "cublasLtMatmulDescSetAttribute(B scale)");
  const float alpha = 1.0f, beta = 0.0f;
  ++lt_calls_;
  check_lt(cublasLtMatmul(lt_, plan.desc, &alpha, w8, plan.a, x8, plan.b, &beta, y, plan.c, y, plan.c, &plan.algo,
                          workspace_, workspace_bytes_, stream_),
           "cublasLtMatmul (fp8)");
}

}  // namespace gptj
