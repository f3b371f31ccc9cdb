// GPU tests skip, with the reason, where no CUDA device is visible (they must pass where one is).
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/backend/cuda_backend.h"

#define SKIP_WITHOUT_GPU()                                       \
  do {                                                           \
    std::string why;                                             \
    if (!::gptj::cuda_device_available(&why)) GTEST_SKIP() << why; \
  } while (0)

namespace gptj::testing {
// Runs the step and reads back every logit row: [batch.logit_rows(), vocab_shard_rows()].
inline std::vector<float> forward_logits(Backend& backend, const StepBatch& batch) {
  backend.forward(batch);
  std::vector<int32_t> rows(static_cast<std::size_t>(batch.logit_rows()));
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int32_t>(i);
  std::vector<float> logits(rows.size() * static_cast<std::size_t>(backend.vocab_shard_rows()));
  backend.read_logit_rows(rows, logits.data());
  return logits;
}
}  // namespace gptj::testing
