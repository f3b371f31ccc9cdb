// Whole-model accuracy figures shared by the golden tests against Hugging Face's float32 logits
// (quant_golden_test.cc, bf16_golden_test.cc): max / mean |logit error| and the mean KL(HF || got) of
// the next-token distributions, and a greedy continuation with each step's top-1 margin.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/golden/cpu_model.h"

namespace gptj::testing {

struct LogitErrors {
  double max_abs = 0, sum_abs = 0, sum_kl = 0;
  std::size_t values = 0, rows = 0;
  void add(const float* got, const float* want, std::size_t n) {
    double m_got = -INFINITY, m_want = -INFINITY;
    for (std::size_t i = 0; i < n; ++i) {
      const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
      max_abs = std::max(max_abs, e);
      sum_abs += e;
      m_got = std::max(m_got, static_cast<double>(got[i]));
      m_want = std::max(m_want, static_cast<double>(want[i]));
    }
    double z_got = 0, z_want = 0;
    for (std::size_t i = 0; i < n; ++i) {
      z_got += std::exp(got[i] - m_got);
      z_want += std::exp(want[i] - m_want);
    }
    double kl = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double lp_want = want[i] - m_want - std::log(z_want), lp_got = got[i] - m_got - std::log(z_got);
      kl += std::exp(lp_want) * (lp_want - lp_got);
    }
    sum_kl += kl;
    values += n;
    ++rows;
  }
  double mean_abs() const { return sum_abs / static_cast<double>(values); }
  double mean_kl() const { return sum_kl / static_cast<double>(rows); }
};

// Greedy continuation of `prompt` for `n` tokens through the KV cache, and each step's top-1 margin.
inline std::vector<int32_t> greedy(CpuModel& m, const std::vector<int32_t>& prompt, int n,
                            std::vector<float>* margins) {
  const std::size_t V = m.config.vocab_size;
  std::vector<int32_t> table;
  for (int b = 0; b * 16 < static_cast<int>(prompt.size()) + n; ++b) table.push_back(b);
  std::vector<int32_t> out, feed = prompt;
  int at = 0;
  for (int step = 0; step < n; ++step) {
    StepBatch batch;
    batch.seqs.push_back({feed, at, table, false});
    const std::vector<float>& row = m.runner->step(batch);
    const float* last = row.data();
    const int32_t best = static_cast<int32_t>(std::max_element(last, last + V) - last);
    float second = -INFINITY;
    for (std::size_t i = 0; i < V; ++i)
      if (static_cast<int32_t>(i) != best) second = std::max(second, last[i]);
    if (margins) margins->push_back(last[best] - second);
    out.push_back(best);
    at += static_cast<int>(feed.size());
    feed = {best};
  }
  return out;
}

// The golden rows of a fixture model (tests/data/<model>/expected: the last position of each prompt,
// every position of the 7-token prompt one shot and through the KV cache) and the stored-weights
// run's greedy tokens (= HF's generate()) with each step's top-1 margin.
class GoldenAccuracy {
 public:
  static constexpr int kGreedyTokens = 16;
  explicit GoldenAccuracy(const std::string& model)
      : stored(model), prompts_(testing::prompts(model)), last_(expected_logits(model, "logits_last.f32.bin")),
        p7_all_(expected_logits(model, "logits_p7_all.f32.bin")), margins_(prompts_.size()), reference_(prompts_.size()) {
    for (std::size_t p = 0; p < prompts_.size(); ++p) reference_[p] = greedy(stored, prompts_[p], kGreedyTokens, &margins_[p]);
  }

  struct Result {
    LogitErrors errors;
    int compared = 0;                  // greedy tokens equal to the stored run's
    int diverged_at_small_margin = 0;  // prompts whose greedy text diverged (each at a margin <= the limit)
  };
  // q's errors on the golden rows, and its greedy tokens against the stored run's until the first
  // difference, which fails (EXPECT) unless the stored run's top-1 margin there is <= margin_limit.
  Result measure(CpuModel& q, float margin_limit) const {
    Result out;
    const std::size_t V = stored.config.vocab_size;
    for (std::size_t i = 0; i < prompts_.size(); ++i) {
      const int n = static_cast<int>(prompts_[i].size());
      const auto rows = q.logits(prompts_[i], {n});
      out.errors.add(rows.data() + (n - 1) * V, last_.data() + i * V, V);
    }
    for (const auto& steps : std::vector<std::vector<int>>{{7}, {3, 1, 1, 1, 1}}) {
      const auto rows = q.logits(prompts_[1], steps);
      for (int t = 0; t < 7; ++t) out.errors.add(rows.data() + t * V, p7_all_.data() + t * V, V);
    }
    for (std::size_t p = 0; p < prompts_.size(); ++p) {
      const std::vector<int32_t> got = greedy(q, prompts_[p], kGreedyTokens, nullptr);
      for (int t = 0; t < kGreedyTokens; ++t) {
        if (got[t] == reference_[p][t]) {
          ++out.compared;
          continue;
        }
        EXPECT_LE(margins_[p][t], margin_limit)
            << "prompt " << p << " token " << t << ": greedy diverged where the top-1 margin is " << margins_[p][t];
        ++out.diverged_at_small_margin;
        break;  // later tokens continue a different text
      }
    }
    return out;
  }

  CpuModel stored;  // the weights as stored, float32 compute

 private:
  std::vector<std::vector<int32_t>> prompts_;
  std::vector<float> last_, p7_all_;
  std::vector<std::vector<float>> margins_;
  std::vector<std::vector<int32_t>> reference_;
};

}  // namespace gptj::testing
