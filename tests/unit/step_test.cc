// Unit tests for runtime/backend/step.h (StepBatch counts, serialize/deserialize round-trip,
// corrupt plans) and runtime/generate/block_allocator.h (allocate all, release, exhaustion).
#include "runtime/backend/step.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/generate/block_allocator.h"

namespace gptj {
namespace {

StepBatch sample_batch() {
  StepBatch batch;
  batch.seqs.push_back({{464, 6193, 2354, 11}, 0, {3, 9}, false});     // prefill
  batch.seqs.push_back({{50256}, 37, {0, 1, 2}, false});               // decode
  batch.seqs.push_back({{1, 2, 3}, 16, {5, 4}, true});                 // chunk with all logits
  batch.seqs.push_back({{}, 0, {}, false});                            // degenerate, still carried
  batch.seqs.push_back({{-7, 2147483647}, 2147483000, {255}, true});  // extreme values
  DrawPlan greedy;
  greedy.logit_row = 1;
  greedy.allowed_vocab = 50257;
  DrawPlan hot;
  hot.logit_row = 2;
  hot.allowed_vocab = 7;
  hot.temperature = 0.7f;
  hot.top_p = 0.9f;
  hot.noise_key = 0xFEDCBA9876543210ull;
  hot.want_log_norm = 1;
  hot.score_token = 50255;
  hot.candidates = 7;
  hot.edits = {{3, 1.3f, 0.5f, 0}, {50256, 1.0f, -0.25f, 1}};
  batch.draws = {greedy, hot, hot};
  return batch;
}

void expect_same(const StepBatch& a, const StepBatch& b) {
  ASSERT_EQ(a.seqs.size(), b.seqs.size());
  for (std::size_t i = 0; i < a.seqs.size(); ++i) {
    SCOPED_TRACE("seq " + std::to_string(i));
    EXPECT_EQ(a.seqs[i].tokens, b.seqs[i].tokens);
    EXPECT_EQ(a.seqs[i].start_pos, b.seqs[i].start_pos);
    EXPECT_EQ(a.seqs[i].block_table, b.seqs[i].block_table);
    EXPECT_EQ(a.seqs[i].all_logits, b.seqs[i].all_logits);
  }
  EXPECT_EQ(a.raw_logits, b.raw_logits);
  ASSERT_EQ(a.draws.size(), b.draws.size());
  for (std::size_t i = 0; i < a.draws.size(); ++i) {
    SCOPED_TRACE("draw " + std::to_string(i));
    const DrawPlan &x = a.draws[i], &y = b.draws[i];
    EXPECT_EQ(x.logit_row, y.logit_row);
    EXPECT_EQ(x.allowed_vocab, y.allowed_vocab);
    EXPECT_EQ(x.temperature, y.temperature);
    EXPECT_EQ(x.top_p, y.top_p);
    EXPECT_EQ(x.noise_key, y.noise_key);
    EXPECT_EQ(x.want_log_norm, y.want_log_norm);
    EXPECT_EQ(x.score_token, y.score_token);
    EXPECT_EQ(x.candidates, y.candidates);
    ASSERT_EQ(x.edits.size(), y.edits.size());
    for (std::size_t e = 0; e < x.edits.size(); ++e)
      EXPECT_EQ(std::memcmp(&x.edits[e], &y.edits[e], sizeof(LogitEdit)), 0);
  }
}

TEST(Step, Counts) {
  const StepBatch batch = sample_batch();
  EXPECT_EQ(batch.total_tokens(), 4 + 1 + 3 + 0 + 2);
  EXPECT_EQ(batch.logit_rows(), 1 + 1 + 3 + 1 + 2);
  EXPECT_EQ(StepBatch{}.total_tokens(), 0);
  EXPECT_EQ(StepBatch{}.logit_rows(), 0);
}

TEST(Step, RoundTrip) {
  const StepBatch batch = sample_batch();
  StepBatch back;
  back.seqs.push_back({{99}, 1, {1}, true});  // stale content must be replaced
  EXPECT_TRUE(deserialize_step(serialize_step(batch, false), back));
  expect_same(batch, back);
  StepBatch raw = sample_batch();
  raw.draws.clear();
  raw.raw_logits = true;
  EXPECT_TRUE(deserialize_step(serialize_step(raw, false), back));
  expect_same(raw, back);
  EXPECT_EQ(back.total_tokens(), batch.total_tokens());
  EXPECT_EQ(back.logit_rows(), batch.logit_rows());
}

TEST(Step, ShutdownFlag) {
  StepBatch back;
  EXPECT_FALSE(deserialize_step(serialize_step(StepBatch{}, true), back));
  EXPECT_TRUE(back.seqs.empty());
  StepBatch batch = sample_batch();
  batch.draws.clear();  // a shutdown plan carries no draws
  EXPECT_FALSE(deserialize_step(serialize_step(batch, true), back));
  expect_same(batch, back);
  EXPECT_TRUE(deserialize_step(serialize_step(StepBatch{}, false), back));
  EXPECT_TRUE(back.seqs.empty());
}

TEST(Step, CorruptPlansThrow) {
  const auto good = serialize_step(sample_batch(), false);
  StepBatch back;
  EXPECT_THROW(deserialize_step({}, back), Error);
  EXPECT_THROW(deserialize_step({1, 2, 3}, back), Error);
  auto odd = good;
  odd.pop_back();
  EXPECT_THROW(deserialize_step(odd, back), Error);
  for (std::size_t cut = 4; cut < good.size(); cut += 4) {
    std::vector<uint8_t> truncated(good.begin(), good.begin() + static_cast<long>(cut));
    EXPECT_THROW(deserialize_step(truncated, back), Error) << "cut at " << cut;
  }
  // A token count running past the end.
  auto bad_count = good;
  const int32_t huge = 1 << 28;
  std::memcpy(bad_count.data() + 4 * 4, &huge, 4);  // seq 0's n_tokens
  EXPECT_THROW(deserialize_step(bad_count, back), Error);
  const int32_t negative = -3;
  std::memcpy(bad_count.data() + 4 * 4, &negative, 4);
  EXPECT_THROW(deserialize_step(bad_count, back), Error);
}

// A corrupt (negative) sequence count must be a gptj::Error, not std::length_error from
// vector::assign(size_t(-1)). (Huge positive counts are not tried: they would allocate first.)
TEST(Step, CorruptSequenceCountThrowsGptjError) {
  auto bytes = serialize_step(sample_batch(), false);
  StepBatch back;
  for (int32_t count : {-1, -100}) {
    std::memcpy(bytes.data() + 4, &count, 4);
    try {
      deserialize_step(bytes, back);
      ADD_FAILURE() << "no error for n_seqs " << count;
    } catch (const Error&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "n_seqs " << count << ": non-gptj::Error " << e.what();
    }
  }
}

TEST(BlockAllocator, AllocateAllReleaseAndExhaustion) {
  BlockAllocator blocks(8);
  EXPECT_EQ(blocks.total_blocks(), 8);
  EXPECT_EQ(blocks.free_blocks(), 8);
  EXPECT_EQ(blocks.used_blocks(), 0);
  std::vector<int32_t> got;
  for (int i = 0; i < 8; ++i) got.push_back(blocks.allocate());
  EXPECT_EQ(blocks.free_blocks(), 0);
  EXPECT_EQ(blocks.used_blocks(), 8);
  std::vector<int32_t> sorted = got;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));  // each id exactly once
  EXPECT_EQ(got.front(), 0);  // lowest first
  try {
    blocks.allocate();
    FAIL() << "no error when out of blocks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos) << e.what();
  }
  EXPECT_EQ(blocks.free_blocks(), 0);

  std::vector<int32_t> some{got[2], got[5], got[6]};
  blocks.release(some);
  EXPECT_TRUE(some.empty());
  EXPECT_EQ(blocks.free_blocks(), 3);
  EXPECT_EQ(blocks.used_blocks(), 5);
  std::set<int32_t> again;
  for (int i = 0; i < 3; ++i) again.insert(blocks.allocate());
  EXPECT_EQ(again, (std::set<int32_t>{got[2], got[5], got[6]}));
  EXPECT_THROW(blocks.allocate(), Error);

  blocks.release(got);
  EXPECT_EQ(blocks.free_blocks(), 8);
  std::vector<int32_t> none;
  blocks.release(none);
  EXPECT_EQ(blocks.free_blocks(), 8);

  BlockAllocator empty(0);
  EXPECT_THROW(empty.allocate(), Error);
}

}  // namespace
}  // namespace gptj

namespace gptj {
namespace {

TEST(BlockAllocator, PrefixCacheKeepsPublishedBlocksUntilTheirRoomIsNeeded) {
  BlockAllocator blocks(4);
  std::vector<int32_t> a{blocks.allocate(), blocks.allocate()};
  blocks.publish(a[0], 11);
  blocks.publish(a[1], 12);
  blocks.publish(a[1], 99);  // a block is published once
  EXPECT_EQ(blocks.cached_blocks(), 2);
  EXPECT_EQ(blocks.take_cached(99), -1);
  // Held and cached: a second holder takes it.
  EXPECT_EQ(blocks.take_cached(11), a[0]);
  EXPECT_EQ(blocks.holders(a[0]), 2);
  std::vector<int32_t> extra{a[0]};
  blocks.release(extra);
  // Released by everyone: still cached, and counted as free room.
  const int32_t first = a[0], second = a[1];
  blocks.release(a);
  EXPECT_EQ(blocks.free_blocks(), 4);
  EXPECT_EQ(blocks.cached_blocks(), 2);
  EXPECT_EQ(blocks.take_cached(12), second);  // back from the evictable list
  EXPECT_EQ(blocks.free_blocks(), 3);
  // Allocation uses never-published blocks first, then evicts the least recently released.
  std::vector<int32_t> fresh{blocks.allocate(), blocks.allocate()};
  EXPECT_NE(fresh[0], first);
  EXPECT_NE(fresh[1], first);
  EXPECT_EQ(blocks.cached_blocks(), 2);
  EXPECT_EQ(blocks.allocate(), first);  // evicted: its key is gone
  EXPECT_EQ(blocks.cached_blocks(), 1);
  EXPECT_EQ(blocks.take_cached(11), -1);
  EXPECT_EQ(blocks.free_blocks(), 0);
  EXPECT_THROW(blocks.allocate(), Error);
}

}  // namespace
}  // namespace gptj
