// Sampling split over vocab shards (runtime/backend/draw.h + Sampler::choose_from_summaries) against
// sampling from the full row (Sampler::choose_from_row): for random rows, every control (greedy,
// temperature, top_k, top_p, penalties, no_repeat_ngram, logprobs) and TP 1/2/3/4 shards, the
// summaries either give exactly the full row's token (and its logprob, and the top-N list) or ask for
// the row. Also: the summary of a shard (and its flag for NaN/inf raw logits), and how often the
// summaries suffice.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "runtime/backend/draw.h"
#include "runtime/generate/sampler.h"

namespace gptj {
namespace {

constexpr int kVocab = 1000;    // row length (like GPT-J's 50400: padding past kAllowed)
constexpr int kAllowed = 990;

// Row with a few strong tokens over a spread of weak ones; `scale` < 1 flattens it.
std::vector<float> random_row(std::mt19937& rng, float scale) {
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> row(kVocab);
  for (float& v : row) v = normal(rng) * scale;
  for (int i = 0; i < 5; ++i) row[rng() % kVocab] += 8.0f * scale;
  row[rng() % kVocab] = row[rng() % kVocab];  // a tie
  return row;
}

// Every rank's summary of `plan` over `row`, sharded as the backends shard it.
std::vector<DrawSummary> summarize(const std::vector<float>& row, const DrawPlan& plan, int tp) {
  const int shard = (kVocab + tp - 1) / tp;
  std::vector<float> padded(static_cast<std::size_t>(shard) * tp, 0.0f);  // padding rows hold 0
  std::copy(row.begin(), row.end(), padded.begin());
  std::vector<DrawSummary> out(tp);
  std::vector<float> scratch;
  for (int r = 0; r < tp; ++r)
    summarize_draw(&padded[static_cast<std::size_t>(r) * shard], int64_t{r} * shard, shard, plan, out[r], scratch);
  return out;
}

struct Case {
  const char* name;
  SamplingParams params;
  float scale;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  auto add = [&](const char* name, float scale, auto set) {
    SamplingParams p;
    p.seed = 1234;
    set(p);
    out.push_back({name, p, scale});
  };
  add("greedy", 1.0f, [](SamplingParams&) {});
  add("greedy logprobs 5 + penalties", 1.0f, [](SamplingParams& p) {
    p.logprobs = 5;
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.3f;
    p.no_repeat_ngram_size = 2;
  });
  for (float t : {0.5f, 1.0f, 1.7f}) {
    add("temperature", 1.0f, [t](SamplingParams& p) { p.temperature = t; p.report_logprob = true; });
    add("temperature flat", 0.2f, [t](SamplingParams& p) { p.temperature = t; });
    for (int k : {1, 5, 40, 63, 64, 65, 500})
      add("top_k", 1.0f, [t, k](SamplingParams& p) { p.temperature = t; p.top_k = k; p.logprobs = 3; });
    for (float q : {0.3f, 0.9f, 0.99f}) {
      add("top_p", 1.0f, [t, q](SamplingParams& p) { p.temperature = t; p.top_p = q; });
      add("top_p flat", 0.2f, [t, q](SamplingParams& p) { p.temperature = t; p.top_p = q; });
      add("top_k + top_p", 1.0f, [t, q](SamplingParams& p) { p.temperature = t; p.top_k = 20; p.top_p = q; });
    }
    add("penalties", 1.0f, [t](SamplingParams& p) {
      p.temperature = t;
      p.repetition_penalty = 1.5f;
      p.frequency_penalty = 0.5f;
      p.no_repeat_ngram_size = 3;
      p.top_p = 0.95f;
    });
  }
  return out;
}

TEST(Draw, SummariesGiveTheFullRowsTokenOrAskForTheRow) {
  std::mt19937 rng(7);
  int decided = 0, asked = 0;
  for (const Case& c : cases()) {
    for (int tp : {1, 2, 3, 4}) {
      SCOPED_TRACE(std::string(c.name) + " T=" + std::to_string(c.params.temperature) + " k=" +
                   std::to_string(c.params.top_k) + " p=" + std::to_string(c.params.top_p) +
                   " tp=" + std::to_string(tp));
      Sampler full(c.params, kAllowed), split(c.params, kAllowed);
      std::vector<int32_t> context{5, 6, 5, 6, 7, 8, 9};
      const int n_prompt = 3;
      for (int draw = 0; draw < 12; ++draw) {
        const std::vector<float> row = random_row(rng, c.scale);
        const DrawPlan plan = full.plan(context, n_prompt, 0);
        const DrawPlan same = split.plan(context, n_prompt, 0);
        ASSERT_EQ(plan.noise_key, same.noise_key);
        std::vector<float> work = row;
        const TokenChoice want = full.choose_from_row(plan, work.data(), kVocab);
        ASSERT_GE(want.token, 0);
        ASSERT_LT(want.token, kAllowed);
        const std::vector<DrawSummary> summaries = summarize(row, same, tp);
        const auto got = split.choose_from_summaries(same, summaries.data(), tp, kVocab);
        if (!got) {
          ++asked;
          // The cases that may need the row: a nucleus or top_k wider than the candidates.
          EXPECT_TRUE(c.params.top_k >= kDrawCandidates || (c.params.top_p < 1.0f && c.params.top_k == 0));
        } else {
          ++decided;
          ASSERT_EQ(got->token, want.token) << "draw " << draw;
          EXPECT_NEAR(got->logprob, want.logprob, 2e-5);
          ASSERT_EQ(got->top.size(), want.top.size());
          for (std::size_t i = 0; i < want.top.size(); ++i) {
            EXPECT_EQ(got->top[i].first, want.top[i].first);
            EXPECT_NEAR(got->top[i].second, want.top[i].second, 2e-5);
          }
        }
        context.push_back(want.token);
      }
    }
  }
  // Only the top-p and wide top-k cases may ask (checked above); on these deliberately flat rows
  // they often do, yet most draws are settled by the summaries.
  EXPECT_GT(decided, asked) << decided << " decided, " << asked << " asked for the row";
}

TEST(Draw, ScoringAGivenTokenIsItsLogSoftmax) {
  std::mt19937 rng(3);
  for (int tp : {1, 2, 3, 4}) {
    for (int32_t token : {0, 17, 499, 500, kAllowed - 1, kAllowed}) {  // kAllowed: a padding id
      SCOPED_TRACE("tp " + std::to_string(tp) + " token " + std::to_string(token));
      const std::vector<float> row = random_row(rng, 1.0f);
      double m = -1e30, sum = 0;
      for (int i = 0; i < kAllowed; ++i) m = std::max<double>(m, row[i]);
      for (int i = 0; i < kAllowed; ++i) sum += std::exp(row[i] - m);
      const double norm = m + std::log(sum);
      const DrawPlan plan = score_plan(0, token, kAllowed, 5);
      const std::vector<DrawSummary> summaries = summarize(row, plan, tp);
      const TokenChoice c = score_from_summaries(plan, summaries.data(), tp, 5);
      EXPECT_EQ(c.token, token);
      if (token < kAllowed)
        EXPECT_NEAR(c.logprob, row[token] - norm, 2e-5);
      else
        EXPECT_EQ(c.logprob, -INFINITY);  // an id the model may not produce
      ASSERT_EQ(c.top.size(), 5u);
      std::vector<int> order(kAllowed);
      for (int i = 0; i < kAllowed; ++i) order[i] = i;
      std::sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      for (int i = 0; i < 5; ++i) {
        EXPECT_EQ(c.top[i].first, order[i]);
        EXPECT_NEAR(c.top[i].second, row[order[i]] - norm, 2e-5);
      }
    }
  }
}

TEST(Draw, ShardSummaryHoldsTheTopCandidatesInOrder) {
  std::vector<float> logits(300);
  for (int i = 0; i < 300; ++i) logits[i] = static_cast<float>((i * 37) % 101);  // many ties
  DrawPlan plan;
  plan.allowed_vocab = 1000 + 250;  // ids >= 1250 (the last 50 of this shard) are padding
  plan.want_log_norm = 1;
  plan.edits = {{1000 + 3, 1.0f, 0.0f, 1}, {1000 + 7, 2.0f, 0.5f, 0}, {5, 1.0f, 9.0f, 0}};  // id 5: not ours
  DrawSummary s;
  std::vector<float> scratch;
  summarize_draw(logits.data(), 1000, 300, plan, s, scratch);
  std::vector<float> processed = logits;
  process_row(processed.data(), 1000, 300, plan);
  EXPECT_EQ(processed[3], -INFINITY);
  EXPECT_FLOAT_EQ(processed[7], logits[7] / 2.0f - 0.5f);
  std::vector<TokenScore> want;
  for (int i = 0; i < 300; ++i) want.push_back({processed[i], 1000 + i});
  std::sort(want.begin(), want.end(), ranks_before);
  ASSERT_EQ(s.count, kDrawCandidates);
  for (int i = 0; i < kDrawCandidates; ++i) {
    EXPECT_EQ(s.top[i].token, want[i].token) << i;
    EXPECT_EQ(s.top[i].value, want[i].value) << i;
  }
  EXPECT_EQ(s.max_logit, want[0].value);
  double sum = 0;
  for (float v : processed) sum += std::exp(static_cast<double>(v - want[0].value));
  EXPECT_NEAR(s.sum_exp, sum, 1e-6 * sum);  // float exps, double sum
  EXPECT_EQ(s.noise_best.token, -1);  // greedy: no race
  EXPECT_EQ(s.non_finite, 0);  // padding and a ban are -inf by design, not a failed forward pass
}

// One NaN or ±inf among the raw logits flags the summary, whatever the plan, and even where the
// id is padding or banned; a greedy argmax alone would pass over it.
TEST(Draw, NonFiniteRawLogitsFlagTheSummary) {
  for (const float bad : {NAN, INFINITY, -INFINITY}) {
    for (const int at : {0, 17, 299}) {
      std::vector<float> logits(300);
      for (int i = 0; i < 300; ++i) logits[i] = static_cast<float>(i % 13) - 6.0f;
      logits[at] = bad;
      DrawPlan greedy;
      greedy.allowed_vocab = 1000 + 290;  // id 1299 is padding
      greedy.candidates = 1;
      greedy.edits = {{1000 + 17, 1.0f, 0.0f, 1}};  // id 1017 is banned
      DrawPlan sampled = greedy;
      sampled.candidates = kDrawCandidates;
      sampled.temperature = 0.8f;
      sampled.top_p = 0.9f;
      sampled.want_log_norm = 1;
      for (const DrawPlan& plan : {greedy, sampled}) {
        SCOPED_TRACE(::testing::Message() << "value " << bad << " at " << at << ", T " << plan.temperature);
        DrawSummary s;
        std::vector<float> scratch;
        summarize_draw(logits.data(), 1000, 300, plan, s, scratch);
        EXPECT_EQ(s.non_finite, 1);
      }
    }
  }
}

TEST(Draw, GumbelNoiseIsStandardGumbel) {
  // Mean of Gumbel(0,1) is the Euler-Mascheroni constant, variance pi^2/6; bounded by kGumbelMax.
  double sum = 0, sq = 0, hi = -1e9;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double g = gumbel_noise(42, i);
    sum += g;
    sq += g * g;
    hi = std::max(hi, g);
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.5772, 0.01);
  EXPECT_NEAR(var, 1.6449, 0.03);
  EXPECT_LT(hi, kGumbelMax);
  EXPECT_NE(gumbel_noise(1, 5), gumbel_noise(2, 5));
}

}  // namespace
}  // namespace gptj
