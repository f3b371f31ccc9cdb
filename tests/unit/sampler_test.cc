// Unit tests for runtime/generate/sampler.h: every sampling control against hand-computed
// expectations on tiny logit vectors, the HF order of processors (temperature before top_k/top_p),
// seeded reproducibility, empirical frequencies, and logprobs.
#include "runtime/generate/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <vector>

namespace gptj {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<double> softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double m = -1e300;
  for (float v : logits) m = std::max(m, v / temperature);
  std::vector<double> out;
  double sum = 0;
  for (float v : logits) sum += std::exp(v / temperature - m);
  for (float v : logits) out.push_back(std::exp(v / temperature - m) / sum);
  return out;
}

TokenChoice choose_once(const SamplingParams& params, std::vector<float> logits, int allowed,
                        const std::vector<int32_t>& context = {}, int n_prompt = 0) {
  Sampler sampler(params, allowed);
  return sampler.choose(logits.data(), static_cast<int>(logits.size()), context, n_prompt);
}

// Draws `n` tokens from one seeded sampler; returns counts per token.
std::vector<int> draw(const SamplingParams& params, const std::vector<float>& logits, int allowed, int n) {
  Sampler sampler(params, allowed);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) {
    std::vector<float> row = logits;
    const int token = sampler.choose(row.data(), static_cast<int>(row.size()), {}, 0).token;
    EXPECT_GE(token, 0);
    EXPECT_LT(token, static_cast<int>(logits.size()));
    if (token >= 0 && token < static_cast<int>(logits.size())) ++counts[token];
  }
  return counts;
}

TEST(Sampler, GreedyIsArgmax) {
  SamplingParams greedy;
  EXPECT_EQ(choose_once(greedy, {0.1f, 2.0f, -1.0f, 1.5f}, 4).token, 1);
  EXPECT_EQ(choose_once(greedy, {-3.0f, -2.0f, -1.0f, -1.5f}, 4).token, 2);
  EXPECT_EQ(choose_once(greedy, {5.0f}, 1).token, 0);
}

TEST(Sampler, IdsAtOrBeyondAllowedVocabAreNeverChosen) {
  SamplingParams greedy;
  EXPECT_EQ(choose_once(greedy, {0.0f, 1.0f, 2.0f, 9.0f, 8.0f}, 3).token, 2);
  SamplingParams hot;
  hot.temperature = 1.0f;
  hot.seed = 5;
  const auto counts = draw(hot, {0.0f, 0.0f, 0.0f, 10.0f, 10.0f}, 3, 3000);
  EXPECT_EQ(counts[3] + counts[4], 0);
  for (int t = 0; t < 3; ++t) EXPECT_GT(counts[t], 800) << "token " << t;
}

TEST(Sampler, RepetitionPenaltyDividesPositivesMultipliesNegatives) {
  std::vector<float> logits{2.0f, -2.0f, 1.0f, 3.0f, -0.5f};
  apply_repetition_penalty(logits.data(), {0, 1, 1, 4, 0}, 2.0f);  // repeats penalized once
  EXPECT_EQ(logits, (std::vector<float>{1.0f, -4.0f, 1.0f, 3.0f, -1.0f}));
  std::vector<float> same{2.0f, -2.0f};
  apply_repetition_penalty(same.data(), {0, 1}, 1.0f);
  EXPECT_EQ(same, (std::vector<float>{2.0f, -2.0f}));
}

TEST(Sampler, RepetitionPenaltyCoversThePromptInChoose) {
  SamplingParams p;
  p.repetition_penalty = 4.0f;
  // Token 0 is the max but sits in the prompt: 3.0 / 4 = 0.75 < 1.0.
  EXPECT_EQ(choose_once(p, {3.0f, 1.0f, 0.5f}, 3, {0, 2}, 2).token, 1);
}

TEST(Sampler, PresenceAndFrequencyPenalties) {
  std::vector<float> logits{1.0f, 0.0f, 1.5f, 1.4f};
  apply_presence_frequency(logits.data(), {2, 2, 0}, 0.5f, 0.25f);
  EXPECT_FLOAT_EQ(logits[0], 1.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(logits[1], 0.0f);
  EXPECT_FLOAT_EQ(logits[2], 1.5f - 0.5f - 0.5f);
  EXPECT_FLOAT_EQ(logits[3], 1.4f);

  // In choose(): only context[n_prompt:] counts. The prompt's token 3 is not penalized, so it wins;
  // were the prompt counted, token 3 would drop to 0.15 and token 2 (0.5) would win.
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.report_logprob = true;  // the logprob is computed only when asked for
  const TokenChoice c = choose_once(p, {1.0f, 0.0f, 1.5f, 1.4f}, 4, {3, 3, 3, 2, 2, 0}, 3);
  EXPECT_EQ(c.token, 3);
  const auto probs = softmax({0.25f, 0.0f, 0.5f, 1.4f});
  EXPECT_NEAR(c.logprob, std::log(probs[3]), 1e-5);
}

TEST(Sampler, NoRepeatNgramHfSemantics) {
  {
    std::vector<float> logits(6, 0.0f);
    apply_no_repeat_ngram(logits.data(), {1, 2, 3, 1, 2}, 3);  // [1, 2] was followed by 3
    for (int t = 0; t < 6; ++t) EXPECT_EQ(logits[t], t == 3 ? -kInf : 0.0f) << "token " << t;
  }
  {
    std::vector<float> logits(6, 0.0f);
    apply_no_repeat_ngram(logits.data(), {5, 1, 5, 2, 5}, 2);  // 5 was followed by 1 and 2
    for (int t = 0; t < 6; ++t) EXPECT_EQ(logits[t], (t == 1 || t == 2) ? -kInf : 0.0f) << "token " << t;
  }
  {
    std::vector<float> logits(6, 0.0f);
    apply_no_repeat_ngram(logits.data(), {4, 0, 4}, 1);  // n = 1: every seen token
    for (int t = 0; t < 6; ++t) EXPECT_EQ(logits[t], (t == 0 || t == 4) ? -kInf : 0.0f) << "token " << t;
  }
  {
    std::vector<float> logits(6, 0.0f);
    apply_no_repeat_ngram(logits.data(), {1, 2, 3, 4, 2}, 3);  // [4, 2] never seen before
    apply_no_repeat_ngram(logits.data(), {1}, 3);               // too short
    apply_no_repeat_ngram(logits.data(), {1, 1, 1}, 0);         // off
    for (int t = 0; t < 6; ++t) EXPECT_EQ(logits[t], 0.0f) << "token " << t;
  }
  SamplingParams p;
  p.no_repeat_ngram_size = 3;
  EXPECT_EQ(choose_once(p, {0.0f, 0.1f, 0.2f, 5.0f, 1.0f}, 5, {1, 2, 3, 1, 2}, 3).token, 4);
}

TEST(Sampler, TopKKeepsExactlyK) {
  std::vector<float> logits{1.0f, 5.0f, 3.0f, 4.0f, 2.0f};
  apply_top_k(logits.data(), 5, 2);
  EXPECT_EQ(logits, (std::vector<float>{-kInf, 5.0f, -kInf, 4.0f, -kInf}));
  std::vector<float> one{1.0f, 5.0f, 3.0f};
  apply_top_k(one.data(), 3, 1);
  EXPECT_EQ(one, (std::vector<float>{-kInf, 5.0f, -kInf}));
  std::vector<float> off{1.0f, 2.0f};
  apply_top_k(off.data(), 2, 0);
  EXPECT_EQ(off, (std::vector<float>{1.0f, 2.0f}));
  apply_top_k(off.data(), 2, 5);
  EXPECT_EQ(off, (std::vector<float>{1.0f, 2.0f}));
  std::vector<float> ties{1.0f, 3.0f, 3.0f, 3.0f, 0.0f};  // ties at the k-th are kept (HF)
  apply_top_k(ties.data(), 5, 2);
  EXPECT_EQ(ties, (std::vector<float>{-kInf, 3.0f, 3.0f, 3.0f, -kInf}));
}

int kept_by_top_p(float p) {
  // probabilities 0.15, 0.5, 0.05, 0.3 (shuffled so the sort matters)
  std::vector<float> logits{std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  apply_top_p(logits.data(), 4, p);
  int kept = 0;
  for (float v : logits) kept += v != -kInf;
  // What is kept is always a prefix of the descending order.
  const std::vector<int> order{1, 3, 0, 2};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(logits[order[i]] != -kInf, i < kept) << "p=" << p;
  return kept;
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  EXPECT_EQ(kept_by_top_p(0.3f), 1);
  EXPECT_EQ(kept_by_top_p(0.7f), 2);
  EXPECT_EQ(kept_by_top_p(0.79f), 2);
  EXPECT_EQ(kept_by_top_p(0.8f), 2);  // 0.5 + 0.3 reaches 0.8
  EXPECT_EQ(kept_by_top_p(0.81f), 3);
  EXPECT_EQ(kept_by_top_p(0.94f), 3);
  EXPECT_EQ(kept_by_top_p(0.96f), 4);
  EXPECT_EQ(kept_by_top_p(1.0f), 4);  // off
  EXPECT_EQ(kept_by_top_p(0.0f), 1);  // at least one
}

TEST(Sampler, TemperatureFrequenciesMatchSoftmax) {
  const std::vector<float> logits{1.0f, 0.5f, -0.5f, 0.0f, 2.0f};
  for (float temperature : {0.7f, 1.0f, 1.8f}) {
    SamplingParams p;
    p.temperature = temperature;
    p.seed = 2024;
    const int n = 20000;
    const auto counts = draw(p, logits, 5, n);
    const auto want = softmax(logits, temperature);
    for (int t = 0; t < 5; ++t)
      EXPECT_NEAR(static_cast<double>(counts[t]) / n, want[t], 0.02) << "T=" << temperature << " token " << t;
  }
}

// HF order: temperature first, then top_k, then top_p (on the tempered distribution).
TEST(Sampler, TopKAndTopPApplyAfterTemperature) {
  const std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 0.5f;  // tempered probs 0.685, 0.247, 0.062, 0.007
  p.top_p = 0.6f;        // reached by token 0 alone (untempered it would need 2)
  p.seed = 3;
  auto counts = draw(p, logits, 4, 2000);
  EXPECT_EQ(counts[0], 2000);

  SamplingParams k;
  k.temperature = 1.0f;
  k.top_k = 2;
  k.seed = 4;
  const int n = 20000;
  counts = draw(k, logits, 4, n);
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_NEAR(static_cast<double>(counts[0]) / n, 0.5 / 0.8, 0.02);
}

TEST(Sampler, SameSeedSameChoices) {
  const std::vector<float> logits{0.3f, 0.1f, 0.2f, 0.0f, 0.25f, 0.15f};
  auto run = [&](uint64_t seed) {
    SamplingParams p;
    p.temperature = 1.0f;
    p.seed = seed;
    Sampler sampler(p, 6);
    std::vector<int> tokens;
    for (int i = 0; i < 64; ++i) {
      std::vector<float> row = logits;
      tokens.push_back(sampler.choose(row.data(), 6, {}, 0).token);
    }
    return tokens;
  };
  EXPECT_EQ(run(77), run(77));
  EXPECT_NE(run(77), run(78));
}

TEST(Sampler, LogprobsAreLogSoftmaxAndTopNSorted) {
  const std::vector<float> logits{1.0f, 2.0f, 3.0f, 0.0f, -1.0f};
  const auto probs = softmax(logits);
  SamplingParams p;
  p.logprobs = 3;
  const TokenChoice c = choose_once(p, logits, 5);
  EXPECT_EQ(c.token, 2);
  EXPECT_NEAR(c.logprob, std::log(probs[2]), 1e-6);
  ASSERT_EQ(c.top.size(), 3u);
  const std::vector<int> order{2, 1, 0};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.top[i].first, order[i]);
    EXPECT_NEAR(c.top[i].second, std::log(probs[order[i]]), 1e-6);
  }
  EXPECT_TRUE(choose_once(SamplingParams{}, logits, 5).top.empty());

  // With temperature, the reported logprob is still of the untempered distribution.
  SamplingParams hot;
  hot.temperature = 3.0f;
  hot.seed = 11;
  hot.logprobs = 5;
  Sampler sampler(hot, 5);
  for (int i = 0; i < 20; ++i) {
    std::vector<float> row = logits;
    const TokenChoice s = sampler.choose(row.data(), 5, {}, 0);
    ASSERT_GE(s.token, 0);
    EXPECT_NEAR(s.logprob, std::log(probs[s.token]), 1e-6);
    ASSERT_EQ(s.top.size(), 5u);
    for (int j = 1; j < 5; ++j) EXPECT_GE(s.top[j - 1].second, s.top[j].second);
  }
}

}  // namespace
}  // namespace gptj
