// logit_bias (OpenAI semantics, runtime/generate/sampler.h): one more LogitEdit per biased token, so
// every rank applies it to its own vocab shard. +100 on one id makes greedy pick it, -100 on the
// greedy token forbids it — from the full row and from the shard summaries at TP 1, 2 and 3 — a
// bias adds to what the penalties leave, and it reaches other replicas (runtime/generate/wire.h).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "runtime/backend/draw.h"
#include "runtime/generate/sampler.h"
#include "runtime/generate/wire.h"

namespace gptj {
namespace {

constexpr int kVocab = 300;

std::vector<float> random_row() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> row(kVocab);
  for (float& v : row) v = normal(rng);
  return row;
}

// The greedy token from the ranks' summaries of `row` split into `tp` shards (the path every step
// takes), checked against the full-row path.
int32_t greedy_token(const SamplingParams& params, const std::vector<float>& row, int tp) {
  Sampler sampler(params, kVocab);
  const std::vector<int32_t> context{1, 2, 3};
  const DrawPlan plan = sampler.plan(context, 3, 0);
  const int shard = (kVocab + tp - 1) / tp;
  std::vector<float> padded(static_cast<std::size_t>(shard) * tp, 0.0f);
  std::copy(row.begin(), row.end(), padded.begin());
  std::vector<DrawSummary> summaries(tp);
  std::vector<float> scratch;
  for (int r = 0; r < tp; ++r)
    summarize_draw(&padded[static_cast<std::size_t>(r) * shard], int64_t{r} * shard, shard, plan, summaries[r], scratch);
  const std::optional<TokenChoice> from_summaries = sampler.choose_from_summaries(plan, summaries.data(), tp, kVocab);
  std::vector<float> copy = row;
  const TokenChoice from_row = sampler.choose_from_row(plan, copy.data(), kVocab);
  EXPECT_TRUE(from_summaries.has_value());
  EXPECT_EQ(from_summaries ? from_summaries->token : -1, from_row.token);
  return from_row.token;
}

TEST(LogitBias, PlusHundredForcesAndMinusHundredForbids) {
  const std::vector<float> row = random_row();
  const int32_t greedy = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
  const int32_t weakest = static_cast<int32_t>(std::min_element(row.begin(), row.end()) - row.begin());
  for (int tp : {1, 2, 3}) {
    SamplingParams params;
    EXPECT_EQ(greedy_token(params, row, tp), greedy);
    params.logit_bias = {{weakest, 100.0f}};
    EXPECT_EQ(greedy_token(params, row, tp), weakest) << "tp " << tp;
    params.logit_bias = {{greedy, -100.0f}};
    const int32_t second = greedy_token(params, row, tp);
    EXPECT_NE(second, greedy) << "tp " << tp;
    std::vector<float> without = row;
    without[greedy] = -1e30f;
    EXPECT_EQ(second, std::max_element(without.begin(), without.end()) - without.begin());
  }
}

TEST(LogitBias, IsOneEditPerTokenAddedAfterThePenalties) {
  SamplingParams params;
  params.presence_penalty = 0.5f;
  params.logit_bias = {{2, 3.0f}, {9, -1.0f}};
  const std::vector<int32_t> context{1, 2};  // prompt {1}, generated {2}
  const std::vector<LogitEdit> edits = make_logit_edits(params, context, 1);
  ASSERT_EQ(edits.size(), 2u);
  EXPECT_EQ(edits[0].token, 2);
  EXPECT_FLOAT_EQ(edits[0].subtract, 0.5f - 3.0f);  // presence penalty, then the bias
  EXPECT_EQ(edits[1].token, 9);
  EXPECT_FLOAT_EQ(edits[1].subtract, 1.0f);
  EXPECT_FLOAT_EQ(apply_logit_edit(2.0f, edits[0]), 4.5f);
}

TEST(LogitBias, TravelsToOtherReplicas) {
  GenerationRequest request;
  request.prompt = {1, 2};
  request.sampling.logit_bias = {{5, -100.0f}, {70, 2.5f}};
  request.sampling.logprobs = 3;
  const GenerationRequest back = wire::decode_request(wire::encode_request(request));
  EXPECT_EQ(back.sampling.logit_bias, request.sampling.logit_bias);
  EXPECT_EQ(back.sampling.logprobs, 3);
}

}  // namespace
}  // namespace gptj
