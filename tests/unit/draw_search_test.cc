// The threshold search (runtime/generate/draw_search.h, answer_search_query in runtime/backend/draw.h)
// against the full-row reference (Sampler::choose_from_row): top-p 0.5/0.9/0.99, top-k 1/50/100/1000/
// 50400 and mixes, with and without penalties, at TP 1/2/4 (shards simulated as the backends cut
// them), on flat rows (a random model's: nuclei of thousands), peaked rows and rows full of ties. Every
// draw must give the reference's token and logprob without its row, in few rounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "runtime/backend/draw.h"
#include "runtime/generate/draw_search.h"
#include "runtime/generate/sampler.h"
#include "tests/unit/split_draw.h"

namespace gptj {
namespace {

constexpr int kVocab = 50400;    // GPT-J's row: ids >= kAllowed are padding
constexpr int kAllowed = 50257;

enum class Shape { kFlat, kPeaked, kTied };

std::vector<float> make_row(std::mt19937& rng, Shape shape) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> row(kVocab);
  for (float& v : row) v = normal(rng);
  if (shape == Shape::kFlat) {
    for (float& v : row) v *= 0.4f;  // tiny-gptj-a's logits spread about this much
  } else if (shape == Shape::kPeaked) {
    for (float& v : row) v *= 2.0f;
    for (int i = 0; i < 20; ++i) row[rng() % kAllowed] += 6.0f + static_cast<float>(i % 5);
  } else {
    for (float& v : row) v = std::round(v * 2.0f) / 2.0f;  // a few values, thousands of ids each
  }
  return row;
}

using testing::Shards;
using testing::split_draw;

struct Setting {
  float temperature;
  int top_k;
  float top_p;
  bool penalties;
};

std::string describe(const Setting& c, Shape shape, int tp) {
  return "T=" + std::to_string(c.temperature) + " k=" + std::to_string(c.top_k) + " p=" + std::to_string(c.top_p) +
         (c.penalties ? " +penalties" : "") + " shape=" + std::to_string(static_cast<int>(shape)) +
         " tp=" + std::to_string(tp);
}

TEST(DrawSearch, GivesTheFullRowsTokenAndLogprobWithoutTheRow) {
  std::vector<Setting> settings;
  for (float p : {0.5f, 0.9f, 0.99f}) settings.push_back({1.0f, 0, p, false});
  for (int k : {1, 50, 100, 1000, 50400}) settings.push_back({1.0f, k, 1.0f, false});
  settings.push_back({0.7f, 1000, 0.9f, true});
  settings.push_back({1.3f, 100, 0.99f, true});
  settings.push_back({0.8f, 0, 0.9f, true});
  settings.push_back({1.0f, 50, 0.9f, true});  // the HF example's settings
  std::mt19937 rng(11);
  int searched = 0, settled_by_summaries = 0, max_rounds = 0;
  for (const Setting& c : settings) {
    for (Shape shape : {Shape::kFlat, Shape::kPeaked, Shape::kTied}) {
      for (int tp : {1, 2, 4}) {
        SCOPED_TRACE(describe(c, shape, tp));
        SamplingParams params;
        params.temperature = c.temperature;
        params.top_k = c.top_k;
        params.top_p = c.top_p;
        params.seed = 99;
        params.report_logprob = true;
        params.logprobs = 2;
        if (c.penalties) {
          params.repetition_penalty = 1.2f;
          params.presence_penalty = 0.3f;
          params.no_repeat_ngram_size = 2;
        }
        Sampler full(params, kAllowed), split(params, kAllowed);
        std::vector<int32_t> context{5, 6, 5, 7, 100, 2000, 5};
        for (int draw = 0; draw < 3; ++draw) {
          const std::vector<float> row = make_row(rng, shape);
          const DrawPlan plan = full.plan(context, 2, 0);
          const DrawPlan same = split.plan(context, 2, 0);
          std::vector<float> work = row;
          const TokenChoice want = full.choose_from_row(plan, work.data(), kVocab);
          const testing::SplitOutcome got = split_draw(split, same, Shards(row, tp));
          ASSERT_TRUE(got.choice.has_value()) << "draw " << draw << " needed its row";
          EXPECT_EQ(got.choice->token, want.token) << "draw " << draw;
          EXPECT_NEAR(got.choice->logprob, want.logprob, 2e-5) << "draw " << draw;
          ASSERT_EQ(got.choice->top.size(), want.top.size());
          for (std::size_t i = 0; i < want.top.size(); ++i) EXPECT_EQ(got.choice->top[i].first, want.top[i].first);
          (got.searched ? searched : settled_by_summaries) += 1;
          max_rounds = std::max(max_rounds, got.rounds);
          context.push_back(want.token);
        }
      }
    }
  }
  // Wide settings on these rows do need the search; it settles in a few rounds.
  EXPECT_GT(searched, 100) << settled_by_summaries << " settled by the summaries";
  EXPECT_LE(max_rounds, 5);
  std::printf("searched %d draws (at most %d rounds), %d settled by the summaries\n", searched, max_rounds,
              settled_by_summaries);
}

// Many seeds on one flat row: the token distribution the search draws is the reference's, draw for
// draw (so also the nucleus boundary, where a cut off by one id would show).
TEST(DrawSearch, ManySeedsOnOneRowAgreeDrawForDraw) {
  std::mt19937 rng(5);
  const std::vector<float> row = make_row(rng, Shape::kFlat);
  const Shards shards(row, 2);
  for (uint64_t seed = 0; seed < 60; ++seed) {
    SamplingParams params;
    params.temperature = 1.0f;
    params.top_p = 0.9f;
    params.top_k = seed % 2 ? 1000 : 0;
    params.seed = seed;
    Sampler full(params, kAllowed), split(params, kAllowed);
    const DrawPlan plan = full.plan({}, 0, 0);
    std::vector<float> work = row;
    const TokenChoice want = full.choose_from_row(plan, work.data(), kVocab);
    const testing::SplitOutcome got = split_draw(split, split.plan({}, 0, 0), shards);
    ASSERT_TRUE(got.choice.has_value());
    EXPECT_EQ(got.choice->token, want.token) << "seed " << seed;
  }
}

// The integer masses make the nucleus independent of how the row is cut: the kept set of
// apply_top_p equals the set the search keeps (here checked through its size on a tied row).
TEST(DrawSearch, KeyOrderAndMassesAreExact) {
  for (float a : {-3.5f, -1e-30f, 0.0f, 1e-30f, 2.0f, 7.25f})
    for (float b : {-3.5f, -1e-30f, 0.0f, 1e-30f, 2.0f, 7.25f}) {
      EXPECT_EQ(a < b, float_key(a) < float_key(b)) << a << " " << b;
      EXPECT_EQ(key_float(float_key(a)), a);
    }
  EXPECT_EQ(token_mass(3.0f, 3.0f), uint64_t{1} << kMassBits);
  EXPECT_EQ(token_mass(-INFINITY, 3.0f), 0u);
  EXPECT_EQ(token_mass(3.0f - 30.0f, 3.0f), 0u);  // below 2^-40
  std::vector<float> tied(1000, 1.0f);
  apply_top_p(tied.data(), 1000, 0.5f);  // 500 equal ids reach half the mass: the first 500 by id
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(tied[i] == 1.0f, i < 500) << i;
}

}  // namespace
}  // namespace gptj
