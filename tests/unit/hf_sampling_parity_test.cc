// Parity with Hugging Face generate() (tests/data/hf-sampling: the first sampled token's processed
// distribution, output_scores[0] softmaxed, for six settings; see /work/shared/fixtures/README.md):
//   1. our processed distribution (the sampler's edits, temperature, top-k, top-p on the model's
//      own logits, computed in process) equals HF's probabilities id for id, within 2e-4;
//   2. 4,000 first tokens drawn with seeds 0..3999 as the ranks draw them (shard summaries, then the
//      threshold search; 2 shards simulated) never leave HF's support and pass a likelihood-ratio
//      (G) test against HF's distribution at significance 1e-3;
//   3. the test has power: on the peaked model, drawing with repetition_penalty 1.0 instead of
//      1.2, or temperature 0.8 instead of 0.7, is rejected (p < 1e-6).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/generate/sampler.h"
#include "tests/golden/cpu_model.h"
#include "tests/unit/split_draw.h"

namespace gptj {
namespace {

struct Setting {
  std::string name;
  SamplingParams params;
  std::map<int32_t, double> probs;  // HF: id -> probability (> 0)
};

struct Fixture {
  std::vector<int32_t> prompt;
  int allowed_vocab = 0;
  std::vector<Setting> settings;
};

Fixture load_fixture(const std::string& model) {
  std::ifstream in(std::string(GPTJ_TEST_DATA_DIR) + "/hf-sampling/" + model + ".json");
  std::stringstream text;
  text << in.rdbuf();
  const boost::json::object doc = boost::json::parse(text.str()).as_object();
  Fixture f;
  for (const auto& id : doc.at("prompt_ids").as_array()) f.prompt.push_back(static_cast<int32_t>(id.to_number<int64_t>()));
  f.allowed_vocab = static_cast<int>(doc.at("allowed_vocab").to_number<int64_t>());
  for (const auto& s : doc.at("settings").as_array()) {
    const boost::json::object& o = s.as_object();
    Setting setting;
    setting.name = std::string(o.at("name").as_string());
    const boost::json::object& p = o.at("params").as_object();
    auto number = [&](const char* key, double fallback) {
      return p.contains(key) ? p.at(key).to_number<double>() : fallback;
    };
    setting.params.temperature = static_cast<float>(number("temperature", 1.0));
    setting.params.top_k = static_cast<int>(number("top_k", 0));
    setting.params.top_p = static_cast<float>(number("top_p", 1.0));
    setting.params.repetition_penalty = static_cast<float>(number("repetition_penalty", 1.0));
    setting.params.no_repeat_ngram_size = static_cast<int>(number("no_repeat_ngram_size", 0));
    for (const auto& pair : o.at("probs").as_array())
      setting.probs[static_cast<int32_t>(pair.as_array()[0].to_number<int64_t>())] = pair.as_array()[1].to_number<double>();
    f.settings.push_back(std::move(setting));
  }
  return f;
}

// The model's raw next-token logits after the prompt.
std::vector<float> last_logits(testing::CpuModel& model, const std::vector<int32_t>& prompt) {
  StepBatch batch;
  std::vector<int32_t> blocks;
  for (int b = 0; b * 16 < static_cast<int>(prompt.size()) + 16; ++b) blocks.push_back(b);
  batch.seqs.push_back({prompt, 0, blocks, false});
  return model.runner->step(batch);
}

// Our processed distribution (the full-row reference's kept set and softmax at temperature T).
std::map<int32_t, double> our_distribution(const SamplingParams& params, std::vector<float> row,
                                           const std::vector<int32_t>& prompt, int allowed) {
  Sampler sampler(params, allowed);
  const DrawPlan plan = sampler.plan(prompt, static_cast<int>(prompt.size()), 0);
  process_row(row.data(), 0, static_cast<int64_t>(row.size()), plan);
  const int n = static_cast<int>(row.size());
  for (float& v : row) v /= params.temperature;
  apply_top_k(row.data(), n, params.top_k);
  apply_top_p(row.data(), n, params.top_p);
  double m = -INFINITY, sum = 0;
  for (float v : row) m = std::max<double>(m, v);
  for (float v : row) sum += std::exp(static_cast<double>(v) - m);
  std::map<int32_t, double> out;
  for (int i = 0; i < n; ++i)
    if (row[i] != -INFINITY) out[i] = std::exp(static_cast<double>(row[i]) - m) / sum;
  return out;
}

// First tokens of `draws` samples (seeds 0..draws-1) drawn from the model's logits as the ranks and
// rank 0 draw them (summaries, then the threshold search), the vocab cut into 2 shards.
std::map<int32_t, int> draw_first_tokens(const std::vector<float>& logits, const Fixture& f, SamplingParams params,
                                         int draws) {
  const testing::Shards shards(logits, 2);
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) {
    params.seed = static_cast<uint64_t>(i);
    Sampler sampler(params, f.allowed_vocab);
    const DrawPlan plan = sampler.plan(f.prompt, static_cast<int>(f.prompt.size()), 0);
    const std::optional<TokenChoice> choice = testing::split_draw(sampler, plan, shards).choice;
    EXPECT_TRUE(choice.has_value()) << "seed " << i << " needed the full row";
    if (choice) ++counts[choice->token];
  }
  return counts;
}

// Likelihood-ratio (G) test of counts against probabilities; bins expected below 5 are pooled.
// Returns the p-value (Wilson-Hilferty approximation of the chi-square tail), 0 when a token
// outside the support was drawn.
double g_test(const std::map<int32_t, int>& counts, const std::map<int32_t, double>& probs, int total,
              int* outside = nullptr) {
  int out_of_support = 0;
  for (const auto& [token, c] : counts)
    if (!probs.count(token)) out_of_support += c;
  if (outside) *outside = out_of_support;
  if (out_of_support > 0) return 0.0;
  double g = 0, pooled_e = 0, pooled_o = 0;
  int bins = 0;
  for (const auto& [token, p] : probs) {
    const double e = p * total;
    const auto it = counts.find(token);
    const double o = it == counts.end() ? 0 : it->second;
    if (e < 5) {
      pooled_e += e;
      pooled_o += o;
      continue;
    }
    if (o > 0) g += 2 * o * std::log(o / e);
    g -= 2 * (o - e);  // sum(o) == sum(e) overall; kept per bin so pooling stays exact
    ++bins;
  }
  if (pooled_e > 0) {
    if (pooled_o > 0) g += 2 * pooled_o * std::log(pooled_o / pooled_e);
    g -= 2 * (pooled_o - pooled_e);
    ++bins;
  }
  const double df = std::max(1, bins - 1);
  const double z = (std::cbrt(g / df) - (1 - 2 / (9 * df))) / std::sqrt(2 / (9 * df));
  return 0.5 * std::erfc(z / std::sqrt(2.0));
}

constexpr int kDraws = 4000;
constexpr double kSignificance = 1e-3;

void check_model(const std::string& name, bool sample) {
  const Fixture f = load_fixture(name);
  testing::CpuModel model(name, 64);
  const std::vector<float> logits = last_logits(model, f.prompt);
  for (const Setting& s : f.settings) {
    SCOPED_TRACE(name + " " + s.name);
    const std::map<int32_t, double> ours = our_distribution(s.params, logits, f.prompt, f.allowed_vocab);
    ASSERT_EQ(ours.size(), s.probs.size()) << "support size";
    for (const auto& [token, p] : s.probs) {
      ASSERT_TRUE(ours.count(token)) << "id " << token << " missing from our support";
      EXPECT_NEAR(ours.at(token), p, 2e-4) << "id " << token;
    }
    if (!sample) continue;
    int outside = 0;
    const double pv = g_test(draw_first_tokens(logits, f, s.params, kDraws), s.probs, kDraws, &outside);
    EXPECT_EQ(outside, 0) << "drew ids outside HF's support";
    EXPECT_GT(pv, kSignificance) << "G-test p-value " << pv;
    std::printf("%s %s: p = %.3g over %d draws\n", name.c_str(), s.name.c_str(), pv, kDraws);
  }
}

TEST(HfSamplingParity, PeakedModel) { check_model("tiny-gptj-b-peaked", true); }
TEST(HfSamplingParity, FlatModelDistributions) { check_model("tiny-gptj-b", false); }

TEST(HfSamplingParity, TheTestRejectsAWrongPenaltyOrTemperature) {
  const Fixture f = load_fixture("tiny-gptj-b-peaked");
  testing::CpuModel model("tiny-gptj-b-peaked", 64);
  const std::vector<float> logits = last_logits(model, f.prompt);
  for (const Setting& s : f.settings) {
    SamplingParams wrong = s.params;
    if (s.name == "seed_example_no_topk") wrong.repetition_penalty = 1.0f;  // HF's: 1.2
    else if (s.name == "t07_topk40") wrong.temperature = 0.8f;             // HF's: 0.7
    else continue;
    SCOPED_TRACE(s.name);
    const double pv = g_test(draw_first_tokens(logits, f, wrong, kDraws), s.probs, kDraws);
    std::printf("%s with the wrong parameter: p = %.3g\n", s.name.c_str(), pv);
    EXPECT_LT(pv, 1e-6);
  }
}

}  // namespace
}  // namespace gptj
