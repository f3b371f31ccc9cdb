// n samples of one prompt (GenerationRequest::n) are prefilled once and share the prompt's full KV
// blocks; each copies only the partly filled last block. Their tokens must equal those of separate
// requests with seeds seed + k, and they must hold fewer blocks than separate requests would.
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "parallel/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/generate/scheduler.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/cpu_model.h"

namespace gptj {
namespace {

struct Model : testing::CpuModel {
  Model() : CpuModel("tiny-gptj-b") {}
};

// Runs the requests to the end; returns tokens by handle and the peak of KV blocks in use.
std::map<uint64_t, std::vector<int32_t>> run(Model& m, const std::vector<GenerationRequest>& requests,
                                             int* peak_blocks = nullptr) {
  Scheduler scheduler(*m.runner, m.scheduler_options(), nullptr);
  for (const auto& r : requests) scheduler.submit(r);
  std::map<uint64_t, std::vector<int32_t>> out;
  while (!scheduler.idle())
    for (const auto& e : scheduler.step())
      if (e.finish != FinishReason::kNone) out[e.handle] = *e.generated;
  EXPECT_EQ(scheduler.blocks().free_blocks(), 256) << "blocks leaked";
  if (peak_blocks) *peak_blocks = scheduler.peak_used_blocks();
  return out;
}

GenerationRequest sampled(const std::vector<int32_t>& prompt, uint64_t handle, uint64_t seed, int n) {
  GenerationRequest r;
  r.handle = handle;
  r.prompt = prompt;
  r.sampling.temperature = 0.9f;
  r.sampling.top_k = 40;
  r.sampling.seed = seed;
  r.max_new_tokens = 20;
  r.n = n;
  return r;
}

TEST(SampleSharing, SamplesEqualSeparateSeededRequestsAndShareBlocks) {
  Model m;
  const auto prompt = testing::prompts("tiny-gptj-b")[2];  // 33 tokens: 2 full blocks + 1 partial
  ASSERT_EQ(prompt.size(), 33u);
  std::vector<GenerationRequest> separate;
  for (int k = 0; k < 4; ++k) separate.push_back(sampled(prompt, 10 + k, 500 + k, 1));
  int peak_separate = 0, peak_shared = 0;
  const auto expected = run(m, separate, &peak_separate);
  const auto got = run(m, {sampled(prompt, 10, 500, 4)}, &peak_shared);
  ASSERT_EQ(got.size(), 4u);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(got.at(10 + k), expected.at(10 + k)) << "sample " << k;
  // Separate: 4 x 4 blocks (33 + 20 tokens). Shared: the 2 full prompt blocks once.
  EXPECT_EQ(peak_separate, 16);
  EXPECT_EQ(peak_shared, 16 - 3 * 2);
  bool differ = false;
  for (int k = 1; k < 4; ++k) differ |= got.at(10 + k) != got.at(10);
  EXPECT_TRUE(differ) << "different seeds should give different samples";
}

TEST(SampleSharing, GreedySamplesAllEqualTheGoldenTokens) {
  Model m;
  const auto golden = testing::expected_greedy("tiny-gptj-b");
  for (int i : {1, 3}) {  // 7 tokens (partial block) and 130 tokens
    GenerationRequest r;
    r.handle = 0;
    r.prompt = testing::prompts("tiny-gptj-b")[i];
    r.max_new_tokens = 32;
    r.n = 3;
    const auto got = run(m, {r});
    for (uint64_t k = 0; k < 3; ++k) EXPECT_EQ(got.at(k), golden[i]) << "prompt " << i << " sample " << k;
  }
}

TEST(SampleSharing, PromptOfWholeBlocksNeedsNoCopy) {
  Model m;
  std::vector<int32_t> prompt(32);
  for (int i = 0; i < 32; ++i) prompt[i] = (i * 37) % 999;
  int peak = 0;
  const auto got = run(m, {sampled(prompt, 0, 9, 3)}, &peak);
  EXPECT_EQ(got.size(), 3u);
  // 2 shared prompt blocks + each sample's own block for its 20 new tokens (positions 32..51 span 2).
  EXPECT_EQ(peak, 2 + 3 * 2);
}

}  // namespace
}  // namespace gptj
