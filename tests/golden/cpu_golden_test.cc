// Golden tests on CPU, TP = 1, in process: logits of the fixture models against Hugging Face
// transformers' (max abs error 1e-5), through the one-shot path and the KV-cache decode path (also
// with tiny-gptj-b loaded from pytorch_model.bin, single and sharded), and
// greedy tokens (alone and batched together) identical to transformers' generate(). ctest runs it at
// the best CPU kernel level the machine has and forced to the lowest (GPTJ_CPU_ISA=avx2); the run
// prints which.
#include <gtest/gtest.h>

#include <cstdio>

#include "kernels/cpu/cpu_isa.h"
#include "runtime/backend/backend.h"
#include "runtime/generate/scheduler.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/cpu_model.h"

namespace gptj {
namespace {

constexpr float kTolerance = 1e-5f;

struct SayCpuIsa : ::testing::Environment {
  void SetUp() override { std::printf("CPU kernels: %s\n", cpu::describe_cpu_isa().c_str()); }
};
[[maybe_unused]] ::testing::Environment* const kSayCpuIsa = ::testing::AddGlobalTestEnvironment(new SayCpuIsa);

using Fixture = testing::CpuModel;

class Golden : public ::testing::TestWithParam<std::string> {};
// The logits tests also run on tiny-gptj-b's weights saved as pytorch_model.bin (one file, and 5
// shards + index): the same expected logits apply (tests/data/<model>/same_as).
class GoldenLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenLogits, LastPositionLogitsOfEveryPrompt) {
  Fixture f(GetParam());
  const auto expected = testing::expected_logits(f.model, "logits_last.f32.bin");
  const auto prompts = testing::prompts(f.model);
  const std::size_t V = f.config.vocab_size;
  ASSERT_EQ(expected.size(), prompts.size() * V);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const int n = static_cast<int>(prompts[i].size());
    const auto rows = f.logits(prompts[i], {n});
    EXPECT_LE(testing::max_abs_diff(rows.data() + (n - 1) * V, expected.data() + i * V, V), kTolerance)
        << "prompt " << i << " (" << n << " tokens)";
  }
}

TEST_P(GoldenLogits, AllPositionsOneShotAndThroughTheKvCache) {
  Fixture f(GetParam());
  const auto expected = testing::expected_logits(f.model, "logits_p7_all.f32.bin");
  const auto prompt = testing::prompts(f.model)[1];
  ASSERT_EQ(prompt.size(), 7u);
  const std::size_t V = f.config.vocab_size;
  // One shot; prefill 3 then four decode steps; token by token.
  for (const auto& steps : std::vector<std::vector<int>>{{7}, {3, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1}}) {
    const auto rows = f.logits(prompt, steps);
    ASSERT_EQ(rows.size(), 7 * V);
    for (int t = 0; t < 7; ++t)
      EXPECT_LE(testing::max_abs_diff(rows.data() + t * V, expected.data() + t * V, V), kTolerance)
          << "position " << t << " with " << steps.size() << " steps";
  }
}

TEST_P(Golden, GreedyTokensThroughTheKvCache) {
  Fixture f(GetParam());
  const auto expected = testing::expected_greedy(f.model);
  const auto prompts = testing::prompts(f.model);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    Scheduler scheduler(*f.runner, f.scheduler_options(), nullptr);
    scheduler.submit({i, prompts[i], {}, 32, {}, false});
    std::vector<int32_t> got;
    while (!scheduler.idle())
      for (const auto& e : scheduler.step())
        if (e.finish != FinishReason::kNone) got = *e.generated;
    EXPECT_EQ(got, expected[i]) << "prompt " << i;
  }
}

// The 4 prompts run together in one continuous batch: every row equals the batched golden output.
TEST_P(Golden, BatchedGreedyHasNoCrossTalk) {
  Fixture f(GetParam());
  const auto expected = testing::expected_batched(f.model);
  const auto prompts = testing::prompts(f.model);
  Scheduler scheduler(*f.runner, f.scheduler_options(), nullptr);
  for (std::size_t i = 0; i < prompts.size(); ++i) scheduler.submit({i, prompts[i], {}, 16, {}, false});
  std::vector<std::vector<int32_t>> got(prompts.size());
  while (!scheduler.idle())
    for (const auto& e : scheduler.step())
      if (e.finish != FinishReason::kNone) got[e.handle] = *e.generated;
  for (std::size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "row " << i;
}

// Many copies of the prompts in flight at once, on a cache so small that sequences must wait and
// be preempted: greedy tokens must not change.
TEST_P(Golden, ContinuousBatchingUnderKvPressureKeepsGoldenTokens) {
  Fixture f(GetParam(), 40);
  const auto expected = testing::expected_greedy(f.model);
  const auto prompts = testing::prompts(f.model);
  auto options = f.scheduler_options(40);
  options.max_batch = 16;
  Scheduler scheduler(*f.runner, options, nullptr);
  const int copies = 11;  // 44 requests of mixed lengths
  for (int c = 0; c < copies; ++c)
    for (std::size_t i = 0; i < prompts.size(); ++i)
      scheduler.submit({c * prompts.size() + i, prompts[i], {}, 32, {}, false});
  int finished = 0;
  while (!scheduler.idle()) {
    for (const auto& e : scheduler.step()) {
      if (e.finish == FinishReason::kNone) continue;
      ++finished;
      EXPECT_EQ(*e.generated, expected[e.handle % prompts.size()]) << "request " << e.handle;
    }
  }
  EXPECT_EQ(finished, copies * 4);
  EXPECT_GT(scheduler.preemptions(), 0u) << "the cache was meant to be too small for the batch";
  EXPECT_GT(scheduler.prefix_hit_tokens(), 0u) << "copies of a prompt should reuse its cached blocks";
  EXPECT_EQ(scheduler.blocks().free_blocks(), 40);
}

// Prefix cache: a prompt run again takes its computed full blocks (all but the block holding its
// last token) instead of recomputing them, and still yields the golden tokens; with the cache off,
// nothing is reused.
TEST_P(Golden, PrefixCacheReusesComputedPromptBlocks) {
  const auto prompts = testing::prompts(GetParam());
  const auto greedy = testing::expected_greedy(GetParam());
  const std::size_t longest = 3;  // 130 tokens: 8 full blocks of 16 can be reused
  for (bool caching : {true, false}) {
    Fixture f(GetParam());
    auto options = f.scheduler_options();
    options.prefix_caching = caching;
    Scheduler scheduler(*f.runner, options, nullptr);
    for (uint64_t round = 0; round < 2; ++round) {
      scheduler.submit({round, prompts[longest], {}, 32, {}, false});
      std::vector<int32_t> got;
      while (!scheduler.idle())
        for (const auto& e : scheduler.step())
          if (e.finish != FinishReason::kNone) got = *e.generated;
      EXPECT_EQ(got, greedy[longest]) << "round " << round << (caching ? " (cache on)" : " (cache off)");
    }
    const uint64_t reusable = (prompts[longest].size() - 1) / 16 * 16;
    EXPECT_EQ(scheduler.prefix_hit_tokens(), caching ? reusable : 0u);
  }
}

// Chunked prefill: with a step budget of 1..5 tokens every prompt longer than the budget is
// prefilled over several steps (alongside the decoding sequences); batched greedy tokens must not
// change, also when sequences are preempted mid-prefill on a small cache.
TEST_P(Golden, ChunkedPrefillKeepsGoldenTokens) {
  const auto prompts = testing::prompts(GetParam());
  const auto batched = testing::expected_batched(GetParam());
  const auto greedy = testing::expected_greedy(GetParam());
  for (int budget : {1, 2, 3, 5}) {
    Fixture f(GetParam());
    auto options = f.scheduler_options();
    options.max_step_tokens = budget;
    Scheduler scheduler(*f.runner, options, nullptr);
    for (std::size_t i = 0; i < prompts.size(); ++i) scheduler.submit({i, prompts[i], {}, 16, {}, false});
    std::vector<std::vector<int32_t>> got(prompts.size());
    int steps = 0;
    while (!scheduler.idle()) {
      ++steps;
      for (const auto& e : scheduler.step())
        if (e.finish != FinishReason::kNone) got[e.handle] = *e.generated;
    }
    for (std::size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i], batched[i]) << "budget " << budget << " row " << i;
    EXPECT_GT(steps, 16) << "budget " << budget << ": the prompts should have taken extra steps";
  }
  Fixture f(GetParam(), 12);
  auto options = f.scheduler_options(12);
  options.max_batch = 8;
  options.max_step_tokens = 5;
  Scheduler scheduler(*f.runner, options, nullptr);
  for (int c = 0; c < 5; ++c)
    for (std::size_t i = 0; i < prompts.size(); ++i) scheduler.submit({c * prompts.size() + i, prompts[i], {}, 32, {}, false});
  int finished = 0;
  while (!scheduler.idle())
    for (const auto& e : scheduler.step())
      if (e.finish != FinishReason::kNone) {
        ++finished;
        EXPECT_EQ(*e.generated, greedy[e.handle % prompts.size()]) << "request " << e.handle;
      }
  EXPECT_EQ(finished, 20);
  EXPECT_GT(scheduler.preemptions(), 0u) << "the cache was meant to be too small for the batch";
  EXPECT_EQ(scheduler.blocks().free_blocks(), 12);
}

INSTANTIATE_TEST_SUITE_P(FixtureModels, Golden, ::testing::Values("tiny-gptj-a", "tiny-gptj-b"));
INSTANTIATE_TEST_SUITE_P(FixtureModels, GoldenLogits,
                         ::testing::Values("tiny-gptj-a", "tiny-gptj-b", "tiny-gptj-b-bin", "tiny-gptj-b-bin-sharded"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace gptj
