// Grow-only CUDA buffers for the CUDA backend's per-step workspaces: device memory or pinned host
// memory that is reallocated only when a step needs more than any step before (with 25 % headroom),
// so the steady-state step loop does no cudaMalloc. Owned by one backend; main thread only.
// Layout helper: Carve hands out 256-byte-aligned offsets inside one buffer.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "kernels/cuda/cuda_kernels.h"
#include "runtime/core/error.h"

namespace gptj {

class CudaGrowBuffer {
 public:
  enum class Kind { kDevice, kPinnedHost };
  CudaGrowBuffer(Kind kind, const char* what) : kind_(kind), what_(what) {}
  ~CudaGrowBuffer() { release(); }
  CudaGrowBuffer(const CudaGrowBuffer&) = delete;
  CudaGrowBuffer& operator=(const CudaGrowBuffer&) = delete;

  // Makes the buffer hold at least `bytes`. Synchronizes `stream` before freeing an old buffer
  // (work queued on it may still read it). Contents are not preserved.
  void reserve(std::size_t bytes, cudaStream_t stream, int device) {
    if (bytes <= bytes_) return;
    GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream));
    release();
    const std::size_t want = bytes + bytes / 4;
    const cudaError_t err = kind_ == Kind::kDevice ? cudaMalloc(&data_, want) : cudaMallocHost(&data_, want);
    if (err != cudaSuccess) {
      cudaGetLastError();
      data_ = nullptr;
      fail("GPU {}: cannot allocate {} MiB of {} {}: {}", device, want >> 20,
           kind_ == Kind::kDevice ? "device memory for the" : "pinned host memory for the", what_,
           cudaGetErrorString(err));
    }
    bytes_ = want;
  }
  template <typename T>
  T* at(std::size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(data_) + offset);
  }

  // Frees the buffer now (the caller makes sure no queued work still uses it).
  void release() {
    if (data_) kind_ == Kind::kDevice ? cudaFree(data_) : cudaFreeHost(data_);
    data_ = nullptr;
    bytes_ = 0;
  }

 private:
  Kind kind_;
  const char* what_;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// Successive 256-byte-aligned offsets; total() is the size a buffer needs for all of them.
class Carve {
 public:
  std::size_t take(std::size_t bytes) {
    const std::size_t here = at_;
    at_ += (bytes + 255) / 256 * 256;
    return here;
  }
  std::size_t total() const { return at_; }

 private:
  std::size_t at_ = 0;
};

}  // namespace gptj
