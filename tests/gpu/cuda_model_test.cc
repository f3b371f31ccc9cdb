// Whole-model checks of the CUDA backend on the fixture models (tests/data/tiny-gptj-{a,b}), TP = 1:
//  - golden: a 7-token prefill with all_logits against Hugging Face's float32 logits
//    (expected/logits_p7_all.f32.bin, [7, vocab]). Tolerance, max abs logit error: float16 2e-2,
//    bfloat16 6e-2 (16-bit weights and activations, float32 accumulation and residual stream);
//    greedy tokens must match wherever the expected top-1 margin exceeds twice that.
//  - prefill then decode through the paged KV cache equals the one-shot run (same tolerances);
//  - two sequences in one step equal each alone;
//  - random weights on the GPU are deterministic and finite.
// Skips with the reason when no CUDA device is visible.
#include <gtest/gtest.h>

#include <cstdlib>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cuda_backend.h"
#include "tests/golden/golden_data.h"
#include "tests/gpu/gpu_test_support.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"

namespace gptj {
namespace {

using testing::max_abs_diff;

struct Case {
  std::string model;
  std::string dtype;
  float tol;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.model + "_" + info.param.dtype;
  for (char& c : name)
    if (c == '-') c = '_';
  return name;
}

class CudaModel : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_device_available(&why)) GTEST_SKIP() << why;
    const std::string dir = testing::model_dir(GetParam().model);
    config_ = load_config(dir + "/config.json");
    checkpoint_ = std::make_unique<Checkpoint>(dir);
    BackendOptions options;
    options.kv.num_blocks = 32;
    options.kv.block_size = 4;
    options.compute_dtype = GetParam().dtype;
    backend_ = make_cuda_backend(config_, checkpoint_.get(), 0, options, comm_, 0);
    vocab_ = config_.vocab_size;
    ASSERT_EQ(backend_->vocab_shard_rows(), vocab_);
    tokens_ = testing::prompts(GetParam().model)[1];  // the 7-token prompt
    ASSERT_EQ(tokens_.size(), 7u);
  }

  // Logits of a one-shot prefill of the 7 tokens, every position, [7, vocab].
  std::vector<float> one_shot(std::vector<int32_t> blocks) {
    StepBatch batch;
    batch.seqs.push_back({tokens_, 0, std::move(blocks), true});
    return testing::forward_logits(*backend_, batch);
  }

  SingleCommunicator comm_;
  GptjConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Backend> backend_;
  int64_t vocab_ = 0;
  std::vector<int32_t> tokens_;
};

TEST_P(CudaModel, PrefillMatchesTransformers) {
  const std::vector<float> expected =
      testing::expected_logits(GetParam().model, "logits_p7_all.f32.bin");
  ASSERT_EQ(expected.size(), 7 * static_cast<std::size_t>(vocab_));
  const std::vector<float> logits = one_shot({5, 2});
  EXPECT_LE(max_abs_diff(logits.data(), expected.data(), logits.size()), GetParam().tol);
  for (int t = 0; t < 7; ++t) {  // greedy tokens, where the reference's margin is clear
    const float* e = expected.data() + t * vocab_;
    const float* g = logits.data() + t * vocab_;
    int64_t best = 0, second = -1;
    for (int64_t i = 1; i < vocab_; ++i) {
      if (e[i] > e[best]) {
        second = best;
        best = i;
      } else if (second < 0 || e[i] > e[second]) {
        second = i;
      }
    }
    if (e[best] - e[second] <= 2 * GetParam().tol) continue;
    const int64_t got = std::max_element(g, g + vocab_) - g;
    EXPECT_EQ(got, best) << "position " << t;
  }
}

TEST_P(CudaModel, PrefillThenDecodeMatchesOneShot) {
  const std::vector<float> reference = one_shot({9, 3});
  // Prefill 4 tokens, then 3 single-token decode steps through the KV cache (other blocks).
  const std::vector<int32_t> blocks = {7, 1};
  StepBatch prefill;
  prefill.seqs.push_back({{tokens_.begin(), tokens_.begin() + 4}, 0, blocks, true});
  const std::vector<float> logits = testing::forward_logits(*backend_, prefill);
  EXPECT_LE(max_abs_diff(logits.data(), reference.data(), logits.size()), GetParam().tol);
  for (int t = 4; t < 7; ++t) {
    StepBatch decode;
    decode.seqs.push_back({{tokens_[t]}, t, blocks, false});
    const std::vector<float> row = testing::forward_logits(*backend_, decode);
    EXPECT_LE(max_abs_diff(row.data(), reference.data() + t * vocab_, vocab_), GetParam().tol)
        << "decode position " << t;
  }
}

TEST_P(CudaModel, TwoSequencesInOneStepEqualEachAlone) {
  const std::vector<float> reference = one_shot({0, 4});
  StepBatch batch;
  batch.seqs.push_back({tokens_, 0, {10, 11}, false});                        // last row only
  batch.seqs.push_back({{tokens_.begin(), tokens_.begin() + 3}, 0, {12}, true});  // 3 rows
  const std::vector<float> logits = testing::forward_logits(*backend_, batch);
  EXPECT_LE(max_abs_diff(logits.data(), reference.data() + 6 * vocab_, vocab_), GetParam().tol);
  EXPECT_LE(max_abs_diff(logits.data() + vocab_, reference.data(), 3 * vocab_), GetParam().tol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaModel,
                         ::testing::Values(Case{"tiny-gptj-a", "float16", 2e-2f},
                                           Case{"tiny-gptj-a", "bfloat16", 6e-2f},
                                           Case{"tiny-gptj-b", "float16", 2e-2f},
                                           Case{"tiny-gptj-b", "bfloat16", 6e-2f}),
                         case_name);

TEST(CudaRandomWeights, DeterministicAndFinite) {
  SKIP_WITHOUT_GPU();
  const GptjConfig config = load_config(testing::model_dir("tiny-gptj-b") + "/config.json");
  BackendOptions options = testing::small_float16_options();
  SingleCommunicator comm;
  StepBatch batch;
  batch.seqs.push_back({{1, 2, 3, 4, 5}, 0, {3, 6}, false});
  const std::vector<float> first =
      testing::forward_logits(*make_cuda_backend(config, nullptr, 42, options, comm, 0), batch);
  auto backend = make_cuda_backend(config, nullptr, 42, options, comm, 0);
  EXPECT_GT(backend->weight_bytes(), 0);
  const std::vector<float> second = testing::forward_logits(*backend, batch);
  EXPECT_EQ(first, second);
  for (float v : first) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace gptj
