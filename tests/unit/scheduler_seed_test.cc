// Scheduler behaviour on the real CPU backend with the fixture models:
//  - a seeded sampled request yields the same tokens alone, inside a batch of other requests that
//    join at different steps, and under KV-cache pressure (preemption and recompute);
//  - a stop string spanning two tokens ends the request with kStop, cut before the stop string.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/generate/model_runner.h"
#include "runtime/generate/scheduler.h"
#include "runtime/generate/tokenizer.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/cpu_model.h"

namespace gptj {
namespace {


using Model = testing::CpuModel;

GenerationRequest request_a() {
  GenerationRequest r;
  r.handle = 100;
  r.prompt = {17, 256, 3, 998, 42, 42, 7, 600, 311};
  r.sampling.temperature = 0.9f;
  r.sampling.top_k = 50;
  r.sampling.seed = 1234;
  r.max_new_tokens = 24;
  return r;
}

GenerationRequest other_request(uint64_t handle) {
  GenerationRequest r;
  r.handle = handle;
  for (uint64_t i = 0; i < 5 + handle * 3; ++i) r.prompt.push_back(static_cast<int32_t>((handle * 131 + i * 37) % 999));
  r.sampling.temperature = 0.7f + 0.1f * static_cast<float>(handle);
  r.sampling.top_p = 0.9f;
  r.sampling.seed = 1000 + handle;
  r.max_new_tokens = 10 + static_cast<int>(handle) * 4;
  r.ignore_eos = true;
  return r;
}

// Runs the scheduler until idle; `arrivals[step]` are submitted before that step. Returns the
// generated tokens of every finished request by handle.
std::map<uint64_t, std::vector<int32_t>> run(Scheduler& scheduler,
                                             std::map<int, std::vector<GenerationRequest>> arrivals) {
  std::map<uint64_t, std::vector<int32_t>> done;
  std::map<uint64_t, std::vector<int32_t>> emitted;
  for (int step = 0; step < 1000; ++step) {
    if (auto it = arrivals.find(step); it != arrivals.end()) {
      for (auto& r : it->second) scheduler.submit(r);
      arrivals.erase(it);
    }
    if (scheduler.idle() && arrivals.empty()) break;
    for (const auto& e : scheduler.step()) {
      if (e.choice.token >= 0) emitted[e.handle].push_back(e.choice.token);
      if (e.finish != FinishReason::kNone) {
        EXPECT_FALSE(done.count(e.handle)) << "request " << e.handle << " finished twice";
        done[e.handle] = *e.generated;
        EXPECT_EQ(emitted[e.handle], *e.generated) << "request " << e.handle;
      }
    }
  }
  EXPECT_TRUE(scheduler.idle());
  return done;
}

TEST(SchedulerSeed, SeededRequestIsReproducibleAcrossBatchCompositions) {
  Model m("tiny-gptj-b");
  std::vector<int32_t> alone;
  {
    Scheduler scheduler(*m.runner, m.scheduler_options(), nullptr);
    alone = run(scheduler, {{0, {request_a()}}}).at(100);
  }
  ASSERT_FALSE(alone.empty());
  if (alone.back() != m.config.eos_token_id) {
    EXPECT_EQ(alone.size(), 24u);
  }

  // Repeat alone: same seed, same tokens.
  {
    Scheduler scheduler(*m.runner, m.scheduler_options(), nullptr);
    EXPECT_EQ(run(scheduler, {{0, {request_a()}}}).at(100), alone);
  }
  // A with two others from the start, three more joining after 3 and 7 steps.
  {
    Scheduler scheduler(*m.runner, m.scheduler_options(), nullptr);
    auto done = run(scheduler, {{0, {other_request(1), request_a(), other_request(2)}},
                                {3, {other_request(3), other_request(4)}},
                                {7, {other_request(5)}}});
    EXPECT_EQ(done.size(), 6u);
    EXPECT_EQ(done.at(100), alone);
    for (uint64_t h = 1; h <= 5; ++h) EXPECT_EQ(done.at(h).size(), static_cast<std::size_t>(10 + h * 4));
  }
  // A joins a batch that is already decoding.
  {
    Scheduler scheduler(*m.runner, m.scheduler_options(), nullptr);
    auto done = run(scheduler, {{0, {other_request(4), other_request(5)}},
                                {2, {other_request(1)}},
                                {5, {request_a(), other_request(2), other_request(3)}}});
    EXPECT_EQ(done.at(100), alone);
  }
  // Under KV pressure: 8 blocks of 16 positions for six requests forces preemption and recompute.
  {
    Scheduler scheduler(*m.runner, m.scheduler_options(8), nullptr);
    auto done = run(scheduler, {{0, {other_request(5), other_request(4), request_a()}},
                                {1, {other_request(3), other_request(2), other_request(1)}}});
    EXPECT_EQ(done.size(), 6u);
    EXPECT_EQ(done.at(100), alone);
    EXPECT_GT(scheduler.preemptions(), 0u) << "the cache was meant to be too small";
    EXPECT_EQ(scheduler.blocks().free_blocks(), 8);
  }
  // The other requests' own tokens do not depend on the batch either.
  {
    Scheduler a(*m.runner, m.scheduler_options(), nullptr);
    const auto solo = run(a, {{0, {other_request(3)}}}).at(3);
    Scheduler b(*m.runner, m.scheduler_options(), nullptr);
    auto done = run(b, {{0, {other_request(1), other_request(2)}}, {4, {other_request(3), request_a()}}});
    EXPECT_EQ(done.at(3), solo);
  }
}

// Greedy tokens and their texts on tiny-gptj-a (which has the GPT-2 tokenizer files).
class StopStrings : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new Model("tiny-gptj-a");
    tokenizer_ = new Tokenizer(Tokenizer::from_model_dir(model_->dir));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete model_;
  }
  SchedulerOptions options() const {
    SchedulerOptions o = model_->scheduler_options();
    o.allowed_vocab = tokenizer_->vocab_size();
    return o;
  }
  GenerationRequest greedy(std::vector<std::string> stop) const {
    GenerationRequest r;
    r.handle = 7;
    r.prompt = tokenizer_->encode("The quick brown fox jumps over the lazy dog. Once upon a time");
    r.max_new_tokens = 20;
    r.ignore_eos = true;
    r.stop = std::move(stop);
    return r;
  }
  // Runs one request; returns its final event's fields.
  struct Result {
    FinishReason finish = FinishReason::kNone;
    std::vector<int32_t> generated;
    std::string stop_text;
    int32_t last_choice = -2;
    int steps = 0;
  };
  Result run_one(const GenerationRequest& r) const {
    Scheduler scheduler(*model_->runner, options(), tokenizer_);
    scheduler.submit(r);
    Result out;
    while (!scheduler.idle()) {
      ++out.steps;
      for (const auto& e : scheduler.step()) {
        if (e.finish == FinishReason::kNone) continue;
        out.finish = e.finish;
        out.generated = *e.generated;
        out.stop_text = e.stop_text;
        out.last_choice = e.choice.token;
      }
    }
    return out;
  }
  static Model* model_;
  static Tokenizer* tokenizer_;
};
Model* StopStrings::model_ = nullptr;
Tokenizer* StopStrings::tokenizer_ = nullptr;

TEST_F(StopStrings, StopStringAcrossTokenBoundaries) {
  const Result plain = run_one(greedy({}));
  ASSERT_EQ(plain.finish, FinishReason::kLength);
  ASSERT_EQ(plain.generated.size(), 20u);
  const std::vector<int32_t>& tokens = plain.generated;
  std::vector<std::string> pieces;
  std::vector<std::size_t> starts;
  std::string text;
  for (int32_t t : tokens) {
    ASSERT_LT(t, tokenizer_->vocab_size());
    starts.push_back(text.size());
    pieces.push_back(tokenizer_->token_bytes(t));
    text += pieces.back();
  }
  ASSERT_EQ(text, tokenizer_->decode(tokens));

  int tried = 0;
  for (std::size_t i = 1; i + 1 < tokens.size() && tried < 3; ++i) {
    // Variant 1: the stop string starts inside token i and ends inside token i + 1.
    // Variant 2: it starts exactly at token i's start and ends inside token i + 1.
    for (int variant : {1, 2}) {
      if (pieces[i].size() < 2 || pieces[i + 1].empty()) continue;
      const std::size_t begin = variant == 1 ? starts[i] + pieces[i].size() - 1 : starts[i];
      const std::size_t end = starts[i + 1] + 1;
      const std::string stop = text.substr(begin, end - begin);
      if (text.find(stop) != begin) continue;  // must first occur here
      ++tried;
      SCOPED_TRACE("stop '" + stop + "' at byte " + std::to_string(begin) + ", tokens " +
                   std::to_string(i) + "/" + std::to_string(i + 1));
      const Result r = run_one(greedy({"never-there", stop}));
      EXPECT_EQ(r.finish, FinishReason::kStop);
      EXPECT_EQ(r.stop_text, text.substr(0, begin));
      EXPECT_EQ(r.generated, std::vector<int32_t>(tokens.begin(), tokens.begin() + static_cast<long>(i)));
      EXPECT_EQ(r.last_choice, -1) << "the token completing the stop string is not emitted";
      EXPECT_EQ(r.steps, static_cast<int>(i) + 2) << "stops at the step that generated token i + 1";
      EXPECT_EQ(r.stop_text.find(stop), std::string::npos);
    }
  }
  EXPECT_GT(tried, 0) << "no usable token pair in: " << text;
}

TEST_F(StopStrings, StopStringAbsentRunsToLength) {
  const Result plain = run_one(greedy({}));
  const Result r = run_one(greedy({"\x01\x02 not generated \x03"}));
  EXPECT_EQ(r.finish, FinishReason::kLength);
  EXPECT_EQ(r.generated, plain.generated);
  EXPECT_TRUE(r.stop_text.empty());
}

TEST_F(StopStrings, StopNeedsATokenizer) {
  Scheduler scheduler(*model_->runner, options(), nullptr);
  EXPECT_THROW(scheduler.submit(greedy({"x"})), Error);
}

}  // namespace
}  // namespace gptj
