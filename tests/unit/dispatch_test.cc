// Rank 0's data-parallel dispatch, without a model or MPI: which replica a request goes to
// (least loaded, prefix affinity within a slack), and the byte encodings of the replica messages
// (round trips; a truncated or padded buffer is refused, never over-read).
#include <gtest/gtest.h>

#include "runtime/core/error.h"
#include "runtime/generate/dispatch.h"
#include "runtime/generate/wire.h"

namespace gptj {
namespace {

TEST(ChooseReplica, LeastOutstandingThenMostFreeBlocksThenLowestIndex) {
  EXPECT_EQ(choose_replica({{true, 3, 10}, {true, 1, 10}, {true, 2, 10}}, -1, 0), 1);
  EXPECT_EQ(choose_replica({{true, 2, 10}, {true, 2, 50}, {true, 2, 20}}, -1, 0), 1);
  EXPECT_EQ(choose_replica({{true, 2, 10}, {true, 2, 10}}, -1, 0), 0);
}

TEST(ChooseReplica, SkipsReplicasNotReady) {
  EXPECT_EQ(choose_replica({{true, 9, 0}, {false, 0, 100}}, -1, 0), 0);
  EXPECT_EQ(choose_replica({{false, 0, 0}, {false, 0, 0}}, -1, 0), -1);
  EXPECT_EQ(choose_replica({{true, 9, 0}, {false, 0, 100}}, 1, 100), 0);  // preferred but not ready
}

TEST(ChooseReplica, PreferredWinsOnlyWithinTheSlack) {
  const std::vector<ReplicaLoad> loads{{true, 4, 10}, {true, 8, 10}};
  EXPECT_EQ(choose_replica(loads, 1, 4), 1);
  EXPECT_EQ(choose_replica(loads, 1, 3), 0);
  EXPECT_EQ(choose_replica(loads, 7, 100), 0);  // out of range: ignored
}

TEST(PrefixDirectory, LongestFullBlockPrefixWins) {
  PrefixDirectory directory(4);
  std::vector<int32_t> a{1, 2, 3, 4, 5, 6, 7, 8, 9}, b{1, 2, 3, 4, 50, 60, 70, 80, 90};
  EXPECT_EQ(directory.lookup(a), -1);
  directory.remember(a, 2);
  EXPECT_EQ(directory.lookup(a), 2);
  EXPECT_EQ(directory.lookup(b), 2);  // shares the first block only
  directory.remember(b, 1);
  EXPECT_EQ(directory.lookup(b), 1);
  EXPECT_EQ(directory.lookup(a), 2);  // its second block is still replica 2's
  EXPECT_EQ(directory.lookup({1, 2, 3, 4}), -1);  // the last token is never a cached position
  EXPECT_EQ(directory.lookup({9, 2, 3, 4, 5}), -1);
}

TEST(PrefixDirectory, StaysBounded) {
  PrefixDirectory directory(1, 8);
  for (int i = 0; i < 100; ++i) directory.remember({i, i + 1, i + 2, i + 3}, i % 3);
  EXPECT_EQ(directory.lookup({99, 100, 101, 102}), 0);
  EXPECT_EQ(directory.lookup({0, 1, 2, 3}), -1);  // forgotten
}

GenerationRequest sample_request() {
  GenerationRequest q;
  q.handle = 0x1234567890ull;
  q.prompt = {5, 6, 7, 50255};
  q.sampling.temperature = 0.7f;
  q.sampling.top_k = 40;
  q.sampling.top_p = 0.9f;
  q.sampling.repetition_penalty = 1.2f;
  q.sampling.presence_penalty = 0.5f;
  q.sampling.frequency_penalty = -0.25f;
  q.sampling.no_repeat_ngram_size = 3;
  q.sampling.seed = 77;
  q.sampling.logprobs = 5;
  q.sampling.report_logprob = true;
  q.max_new_tokens = 33;
  q.stop = {"\n\n", "", "END"};
  q.ignore_eos = true;
  q.n = 4;
  q.score_prompt = true;
  return q;
}

TEST(Wire, RequestRoundTrip) {
  const GenerationRequest q = sample_request();
  const GenerationRequest r = wire::decode_request(wire::encode_request(q));
  EXPECT_EQ(r.handle, q.handle);
  EXPECT_EQ(r.prompt, q.prompt);
  EXPECT_EQ(r.sampling.temperature, q.sampling.temperature);
  EXPECT_EQ(r.sampling.top_k, q.sampling.top_k);
  EXPECT_EQ(r.sampling.top_p, q.sampling.top_p);
  EXPECT_EQ(r.sampling.repetition_penalty, q.sampling.repetition_penalty);
  EXPECT_EQ(r.sampling.presence_penalty, q.sampling.presence_penalty);
  EXPECT_EQ(r.sampling.frequency_penalty, q.sampling.frequency_penalty);
  EXPECT_EQ(r.sampling.no_repeat_ngram_size, q.sampling.no_repeat_ngram_size);
  EXPECT_EQ(r.sampling.seed, q.sampling.seed);
  EXPECT_EQ(r.sampling.logprobs, q.sampling.logprobs);
  EXPECT_EQ(r.sampling.report_logprob, q.sampling.report_logprob);
  EXPECT_EQ(r.max_new_tokens, q.max_new_tokens);
  EXPECT_EQ(r.stop, q.stop);
  EXPECT_EQ(r.ignore_eos, q.ignore_eos);
  EXPECT_EQ(r.n, q.n);
  EXPECT_EQ(r.score_prompt, q.score_prompt);

  GenerationRequest unseeded;
  unseeded.prompt = {1};
  EXPECT_FALSE(wire::decode_request(wire::encode_request(unseeded)).sampling.seed.has_value());
}

TEST(Wire, ReportRoundTrip) {
  ReplicaStats stats;
  stats.running = 3;
  stats.waiting = 2;
  stats.kv_blocks_used = 11;
  stats.kv_blocks_free = 5;
  stats.kv_blocks_total = 16;
  stats.peak_used_blocks = 12;
  stats.preemptions = 7;
  stats.prefix_hit_tokens = 99;
  stats.sequences_finished = 4;
  stats.tokens_generated = 123;
  std::vector<int32_t> kept{10, 11};
  std::vector<GenerationEvent> events(2);
  events[0].handle = 8;
  events[0].choice = {42, -1.5f, {{42, -1.5f}, {7, -2.0f}}};
  events[0].prompt_tokens = 5;
  events[0].prompt_logprobs = {{3, -0.25f, {{3, -0.25f}}}};
  events[1].handle = 9;
  events[1].choice.token = -1;
  events[1].finish = FinishReason::kStop;
  events[1].stop_text = "ab";
  events[1].generated = &kept;

  ReplicaStats got;
  std::vector<wire::WireEvent> decoded;
  wire::decode_report(wire::encode_report(stats, events), got, decoded);
  EXPECT_EQ(got.running, 3);
  EXPECT_EQ(got.waiting, 2);
  EXPECT_EQ(got.kv_blocks_used, 11);
  EXPECT_EQ(got.kv_blocks_free, 5);
  EXPECT_EQ(got.kv_blocks_total, 16);
  EXPECT_EQ(got.peak_used_blocks, 12);
  EXPECT_EQ(got.preemptions, 7u);
  EXPECT_EQ(got.prefix_hit_tokens, 99u);
  EXPECT_EQ(got.sequences_finished, 4u);
  EXPECT_EQ(got.tokens_generated, 123u);
  ASSERT_EQ(decoded.size(), 2u);
  EXPECT_EQ(decoded[0].event.handle, 8u);
  EXPECT_EQ(decoded[0].event.choice.token, 42);
  EXPECT_EQ(decoded[0].event.choice.logprob, -1.5f);
  ASSERT_EQ(decoded[0].event.choice.top.size(), 2u);
  EXPECT_EQ(decoded[0].event.choice.top[1].first, 7);
  EXPECT_EQ(decoded[0].event.choice.top[1].second, -2.0f);
  EXPECT_EQ(decoded[0].event.finish, FinishReason::kNone);
  EXPECT_EQ(decoded[0].event.prompt_tokens, 5);
  ASSERT_EQ(decoded[0].event.prompt_logprobs.size(), 1u);
  EXPECT_EQ(decoded[0].event.prompt_logprobs[0].token, 3);
  EXPECT_TRUE(decoded[0].final_tokens.empty());
  EXPECT_EQ(decoded[1].event.finish, FinishReason::kStop);
  EXPECT_EQ(decoded[1].event.stop_text, "ab");
  EXPECT_EQ(decoded[1].final_tokens, kept);
  EXPECT_EQ(decoded[1].event.generated, nullptr);
}

TEST(Wire, TruncatedOrPaddedMessagesAreRefused) {
  const std::vector<uint8_t> whole = wire::encode_request(sample_request());
  for (std::size_t n = 0; n < whole.size(); ++n) {
    const std::vector<uint8_t> cut(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(wire::decode_request(cut), Error) << "cut at " << n;
  }
  std::vector<uint8_t> padded = whole;
  padded.push_back(0);
  EXPECT_THROW(wire::decode_request(padded), Error);

  std::vector<GenerationEvent> events(1);
  events[0].choice = {1, 0.f, {{1, 0.f}}};
  const std::vector<uint8_t> report = wire::encode_report({}, events);
  ReplicaStats stats;
  std::vector<wire::WireEvent> decoded;
  for (std::size_t n = 0; n < report.size(); ++n) {
    const std::vector<uint8_t> cut(report.begin(), report.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(wire::decode_report(cut, stats, decoded), Error) << "cut at " << n;
  }
}

}  // namespace
}  // namespace gptj
