// Error helpers for the CUDA kernels and backend. Compiled by the host compiler (fmt stays out of
// nvcc's way).
#include "kernels/cuda/cuda_kernels.h"
#include "runtime/core/error.h"

namespace gptj::cuda {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  fail("CUDA error in {} ({}:{}): {}: {}", what, file, line, cudaGetErrorName(err),
       cudaGetErrorString(err));
}

void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    fail("CUDA kernel '{}' failed to launch: {}: {}", kernel, cudaGetErrorName(err),
         cudaGetErrorString(err));
}

}  // namespace gptj::cuda
