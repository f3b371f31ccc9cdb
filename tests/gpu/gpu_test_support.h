// GPU tests skip, with the reason, where no CUDA device is visible (they must pass where one is).
// Shared helpers: DeviceMem (one owned device allocation), forward_logits.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cuda_backend.h"

#define SKIP_WITHOUT_GPU()                                       \
  do {                                                           \
    std::string why;                                             \
    if (!::gptj::cuda_device_available(&why)) GTEST_SKIP() << why; \
  } while (0)

namespace gptj::testing {
// Owns one device allocation.
class DeviceMem {
 public:
  explicit DeviceMem(std::size_t bytes) { GPTJ_CUDA_CHECK(cudaMalloc(&ptr_, std::max<std::size_t>(bytes, 1))); }
  ~DeviceMem() { cudaFree(ptr_); }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  template <typename U>
  U* as() const { return static_cast<U*>(ptr_); }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

// Runs the step and reads back every logit row: [batch.logit_rows(), vocab_shard_rows()].
inline std::vector<float> forward_logits(Backend& backend, const StepBatch& batch) {
  backend.forward(batch);
  std::vector<int32_t> rows(static_cast<std::size_t>(batch.logit_rows()));
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int32_t>(i);
  std::vector<float> logits(rows.size() * static_cast<std::size_t>(backend.vocab_shard_rows()));
  backend.read_logit_rows(rows, logits.data());
  return logits;
}

// The GPU tests' small backend: 8 KV blocks of 4 positions, float16 compute.
inline BackendOptions small_float16_options() {
  BackendOptions options;
  options.kv.num_blocks = 8;
  options.kv.block_size = 4;
  options.compute_dtype = "float16";
  return options;
}
}  // namespace gptj::testing
