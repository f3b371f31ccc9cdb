// The CUDA backend's draw summaries (kernels/cuda/sampling.cu) against the CPU reference
// summarize_draw() on the same logits (read back from the GPU): candidates (tokens and values,
// exactly: same inputs, same edit formula), maxima, log-sum-exp pieces (float exps summed in double:
// 1e-6 relative) and the Gumbel-max winner, for greedy, tempered, top-p and penalized draws,
// several draws per row, and scored ids (score_token).
// Reading a row back after summarizing gives the raw logits. The threshold-search rounds on the
// device (answer_search) give the CPU reference's replies (counts and integer masses exactly, the
// listed ids as a set, the race winners) and the full-row path's token, at top-p 0.5/0.9/0.99 and
// top-k 100/1000, with penalties.
// Skips with the reason when no CUDA device is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/backend/cuda_backend.h"
#include "runtime/backend/draw.h"
#include "runtime/generate/draw_search.h"
#include "runtime/generate/sampler.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/golden_data.h"
#include "tests/gpu/gpu_test_support.h"

namespace gptj {
namespace {

// tiny-gptj-a on the CUDA backend, fp16, 16 KV blocks of 4.
struct TinyA {
  TinyA() : dir(testing::model_dir("tiny-gptj-a")), config(load_config(dir + "/config.json")), checkpoint(dir) {
    BackendOptions options;
    options.kv.num_blocks = 16;
    options.kv.block_size = 4;
    options.compute_dtype = "float16";
    backend = make_cuda_backend(config, &checkpoint, 0, options, comm, 0);
  }
  std::string dir;
  GptjConfig config;
  Checkpoint checkpoint;
  SingleCommunicator comm;
  std::unique_ptr<Backend> backend;
};

TEST(CudaDraws, SummariesMatchTheCpuReference) {
  SKIP_WITHOUT_GPU();
  TinyA a;
  Backend* backend = a.backend.get();
  StepBatch batch;
  batch.seqs.push_back({{1, 2, 3, 4, 5}, 0, {0, 1}, false});
  batch.seqs.push_back({{7, 8, 9}, 0, {2}, true});  // rows 1..3
  const std::vector<float> logits = testing::forward_logits(*backend, batch);
  const int64_t vocab = backend->vocab_shard_rows();

  std::vector<DrawPlan> draws;
  auto add = [&](int row, float t, float top_p, uint64_t key, std::vector<LogitEdit> edits) {
    DrawPlan d;
    d.logit_row = row;
    d.allowed_vocab = static_cast<int32_t>(vocab - 3);
    d.temperature = t;
    d.top_p = top_p;
    d.noise_key = key;
    d.want_log_norm = 1;
    d.edits = std::move(edits);
    draws.push_back(d);
  };
  add(0, 0.0f, 1.0f, 0, {});
  add(0, 1.0f, 1.0f, 11, {});
  add(0, 1.0f, 1.0f, 12, {});  // same row, another key
  add(1, 0.7f, 0.9f, 13, {{2, 1.3f, 0.0f, 0}, {5, 1.0f, 0.5f, 0}, {6, 1.0f, 0.0f, 1}});
  add(3, 1.5f, 0.5f, 14, {{static_cast<int32_t>(vocab - 1), 2.0f, 0.0f, 0}});
  add(2, 0.0f, 1.0f, 0, {{3, 1.0f, 0.0f, 1}});
  draws.back().candidates = 1;                                  // plain greedy: argmax only, no sort
  draws.back().want_log_norm = 0;
  draws[0].score_token = 6;                                     // a scored id
  draws[3].score_token = 6;                                     // ... after a ban: -inf
  draws[4].score_token = static_cast<int32_t>(vocab - 2);       // ... past allowed_vocab: -inf
  std::vector<DrawSummary> gpu(draws.size());
  backend->summarize_draws(draws, gpu.data());

  std::vector<float> scratch;
  for (std::size_t d = 0; d < draws.size(); ++d) {
    SCOPED_TRACE("draw " + std::to_string(d));
    DrawSummary cpu;
    summarize_draw(&logits[static_cast<std::size_t>(draws[d].logit_row) * vocab], 0, vocab, draws[d], cpu, scratch);
    ASSERT_EQ(gpu[d].count, cpu.count);
    for (int i = 0; i < cpu.count; ++i) {
      EXPECT_EQ(gpu[d].top[i].token, cpu.top[i].token) << i;
      EXPECT_EQ(gpu[d].top[i].value, cpu.top[i].value) << i;
    }
    EXPECT_EQ(gpu[d].max_logit, cpu.max_logit);
    EXPECT_NEAR(gpu[d].sum_exp, cpu.sum_exp, 1e-6 * cpu.sum_exp);  // float exps, double sums
    EXPECT_NEAR(gpu[d].sum_exp_t, cpu.sum_exp_t, 1e-6 * std::max(1.0, cpu.sum_exp_t));
    EXPECT_EQ(gpu[d].noise_best.token, cpu.noise_best.token);
    EXPECT_EQ(gpu[d].noise_best.value, cpu.noise_best.value);
    EXPECT_EQ(gpu[d].score_found, cpu.score_found);
    EXPECT_EQ(gpu[d].score_value, cpu.score_value);
    EXPECT_EQ(gpu[d].non_finite, cpu.non_finite);
  }
  // Reading a row after summarizing still gives the raw logits (the summaries work on a copy).
  std::vector<float> row(static_cast<std::size_t>(vocab));
  backend->read_logit_rows({1}, row.data());
  EXPECT_EQ(std::vector<float>(logits.begin() + vocab, logits.begin() + 2 * vocab), row);
}

TEST(CudaDraws, ThresholdSearchMatchesTheCpuReference) {
  SKIP_WITHOUT_GPU();
  TinyA a;
  const GptjConfig& config = a.config;
  Backend* backend = a.backend.get();
  StepBatch batch;
  batch.seqs.push_back({{1, 2, 3, 4, 5}, 0, {0, 1}, false});
  const std::vector<float> logits = testing::forward_logits(*backend, batch);
  const int64_t vocab = backend->vocab_shard_rows();
  struct Setting {
    float t, p;
    int k;
  };
  int searched = 0;
  for (const Setting& c : {Setting{1.0f, 0.5f, 0}, Setting{1.0f, 0.9f, 0}, Setting{0.8f, 0.99f, 0},
                           Setting{1.0f, 1.0f, 100}, Setting{1.2f, 0.9f, 1000}}) {
    SamplingParams params;
    params.temperature = c.t;
    params.top_p = c.p;
    params.top_k = c.k;
    params.repetition_penalty = 1.2f;
    params.seed = 7;
    Sampler sampler(params, config.vocab_size - 143);
    const DrawPlan plan = sampler.plan({1, 2, 3, 4, 5}, 5, 0);
    SCOPED_TRACE("T " + std::to_string(c.t) + " p " + std::to_string(c.p) + " k " + std::to_string(c.k));
    std::vector<DrawSummary> gpu(1);
    backend->summarize_draws({plan}, gpu.data());
    std::optional<DrawSearch> search = sampler.search_for(plan, gpu.data(), 1, vocab);
    if (!search) continue;  // settled by the summaries
    ++searched;
    SearchQuery query;
    std::vector<float> scratch;
    while (search->next_query(query)) {
      query.draw = 0;
      std::vector<SearchReply> on_gpu(1);
      backend->answer_search({plan}, {query}, on_gpu.data());
      SearchReply cpu;
      answer_search_query(logits.data(), 0, vocab, plan, query, 0, cpu, scratch);
      const SearchReply& g = on_gpu[0];
      EXPECT_EQ(g.min_scaled, cpu.min_scaled);
      EXPECT_EQ(g.max_scaled, cpu.max_scaled);
      EXPECT_EQ(g.best.token, cpu.best.token);
      EXPECT_EQ(g.best_score, cpu.best_score);
      if (query.mode == kSearchHistogram) {
        for (int b = 0; b < kSearchBuckets; ++b) {
          EXPECT_EQ(g.hist.count[b], cpu.hist.count[b]) << b;
          EXPECT_EQ(g.hist.mass[b], cpu.hist.mass[b]) << b;
        }
      } else if (query.mode == kSearchList) {
        ASSERT_EQ(g.listed, cpu.listed);
        std::vector<int32_t> a, b;
        for (int i = 0; i < g.listed; ++i) a.push_back(g.list[i].token), b.push_back(cpu.list[i].token);
        std::sort(a.begin(), a.end());
        std::sort(b.begin(), b.end());
        EXPECT_EQ(a, b);
      }
      search->take_replies(on_gpu.data(), 1);
    }
    const std::optional<TokenChoice> got = sampler.choose_from_search(plan, *search, gpu.data(), 1);
    ASSERT_TRUE(got.has_value());
    std::vector<float> row(logits.begin(), logits.begin() + vocab);
    EXPECT_EQ(got->token, sampler.choose_from_row(plan, row.data(), vocab).token);
  }
  EXPECT_GT(searched, 0);
}

}  // namespace
}  // namespace gptj
