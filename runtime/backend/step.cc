#include "runtime/backend/step.h"

#include <cstring>

#include "runtime/core/error.h"

namespace gptj {

int StepBatch::total_tokens() const {
  int n = 0;
  for (const auto& seq : seqs) n += static_cast<int>(seq.tokens.size());
  return n;
}

int StepBatch::logit_rows() const {
  int n = 0;
  for (const auto& seq : seqs) n += seq.all_logits ? static_cast<int>(seq.tokens.size()) : 1;
  return n;
}

void validate_step(const StepBatch& batch, int n_positions, int vocab_size, const KvCacheOptions& kv) {
  GPTJ_CHECK(!batch.seqs.empty(), "step has no sequences");
  for (const auto& copy : batch.block_copies)
    GPTJ_CHECK(copy.src >= 0 && copy.src < kv.num_blocks && copy.dst >= 0 && copy.dst < kv.num_blocks &&
                   copy.src != copy.dst,
               "bad KV block copy {} -> {}", copy.src, copy.dst);
  for (const auto& seq : batch.seqs) {
    GPTJ_CHECK(!seq.tokens.empty(), "step sequence has no tokens");
    const int end = seq.start_pos + static_cast<int>(seq.tokens.size());
    GPTJ_CHECK(seq.start_pos >= 0 && end <= n_positions, "sequence of {} positions exceeds n_positions {}",
               end, n_positions);
    GPTJ_CHECK(static_cast<int64_t>(seq.block_table.size()) * kv.block_size >= end,
               "block table of {} blocks cannot hold {} positions", seq.block_table.size(), end);
    for (int32_t block : seq.block_table)
      GPTJ_CHECK(block >= 0 && block < kv.num_blocks, "KV block {} out of range [0, {})", block,
                 kv.num_blocks);
    for (int32_t id : seq.tokens)
      GPTJ_CHECK(id >= 0 && id < vocab_size, "token id {} outside the vocabulary [0, {})", id, vocab_size);
  }
  const int rows = batch.logit_rows();
  GPTJ_CHECK(!(batch.raw_logits && !batch.draws.empty()), "a step asks for raw logits and draws at once");
  for (const DrawPlan& draw : batch.draws) {
    GPTJ_CHECK(draw.logit_row >= 0 && draw.logit_row < rows, "draw from logit row {} of a step with {} rows",
               draw.logit_row, rows);
    GPTJ_CHECK(draw.allowed_vocab >= 1 && draw.allowed_vocab <= vocab_size,
               "draw allows {} ids of a {}-id vocabulary", draw.allowed_vocab, vocab_size);
    GPTJ_CHECK(draw.score_token >= -1 && draw.score_token < vocab_size, "draw scores token {} outside the vocabulary",
               draw.score_token);
    GPTJ_CHECK(draw.candidates >= 1 && draw.candidates <= kDrawCandidates, "draw asks for {} candidates (1..{})",
               draw.candidates, kDrawCandidates);
    for (const LogitEdit& edit : draw.edits)
      GPTJ_CHECK(edit.token >= 0 && edit.token < vocab_size, "logit edit of token {} outside the vocabulary",
                 edit.token);
  }
}

// Wire format: int32 words. [shutdown, n_seqs, then per seq: start_pos, all_logits, n_tokens,
// tokens..., n_blocks, blocks..., then n_copies, (src, dst)..., then n_draws, per draw: logit_row,
// allowed_vocab, temperature, top_p, noise_key (2 words), want_log_norm, score_token, candidates, n_edits,
// edits (4 words each), then raw_logits]. Floats and the key travel as their bits.
std::vector<uint8_t> serialize_step(const StepBatch& batch, bool shutdown) {
  std::vector<int32_t> words{shutdown ? 1 : 0, static_cast<int32_t>(batch.seqs.size())};
  for (const auto& seq : batch.seqs) {
    words.push_back(seq.start_pos);
    words.push_back(seq.all_logits ? 1 : 0);
    words.push_back(static_cast<int32_t>(seq.tokens.size()));
    words.insert(words.end(), seq.tokens.begin(), seq.tokens.end());
    words.push_back(static_cast<int32_t>(seq.block_table.size()));
    words.insert(words.end(), seq.block_table.begin(), seq.block_table.end());
  }
  words.push_back(static_cast<int32_t>(batch.block_copies.size()));
  for (const auto& copy : batch.block_copies) {
    words.push_back(copy.src);
    words.push_back(copy.dst);
  }
  words.push_back(static_cast<int32_t>(batch.draws.size()));
  auto push_bits = [&](const void* p, std::size_t n) {
    const std::size_t at = words.size();
    words.resize(at + n / sizeof(int32_t));
    std::memcpy(&words[at], p, n);
  };
  for (const DrawPlan& draw : batch.draws) {
    words.push_back(draw.logit_row);
    words.push_back(draw.allowed_vocab);
    push_bits(&draw.temperature, sizeof(float));
    push_bits(&draw.top_p, sizeof(float));
    push_bits(&draw.noise_key, sizeof(uint64_t));
    words.push_back(draw.want_log_norm);
    words.push_back(draw.score_token);
    words.push_back(draw.candidates);
    words.push_back(static_cast<int32_t>(draw.edits.size()));
    static_assert(sizeof(LogitEdit) == 4 * sizeof(int32_t));
    if (!draw.edits.empty()) push_bits(draw.edits.data(), draw.edits.size() * sizeof(LogitEdit));
  }
  words.push_back(batch.raw_logits ? 1 : 0);
  std::vector<uint8_t> bytes(words.size() * sizeof(int32_t));
  std::memcpy(bytes.data(), words.data(), bytes.size());
  return bytes;
}

bool deserialize_step(const std::vector<uint8_t>& bytes, StepBatch& batch) {
  GPTJ_CHECK(bytes.size() % 4 == 0 && bytes.size() >= 8, "corrupt step plan ({} bytes)", bytes.size());
  std::vector<int32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  std::size_t at = 0;
  auto next = [&]() {
    GPTJ_CHECK(at < words.size(), "corrupt step plan (truncated)");
    return words[at++];
  };
  auto take = [&](std::vector<int32_t>& out) {
    const int32_t n = next();
    GPTJ_CHECK(n >= 0 && at + static_cast<std::size_t>(n) <= words.size(), "corrupt step plan");
    out.assign(words.begin() + static_cast<long>(at), words.begin() + static_cast<long>(at + n));
    at += static_cast<std::size_t>(n);
  };
  const bool shutdown = next() != 0;
  const int32_t n_seqs = next();
  GPTJ_CHECK(n_seqs >= 0 && static_cast<std::size_t>(n_seqs) <= words.size(), "corrupt step plan ({} sequences)", n_seqs);
  batch.seqs.assign(static_cast<std::size_t>(n_seqs), {});
  for (auto& seq : batch.seqs) {
    seq.start_pos = next();
    seq.all_logits = next() != 0;
    take(seq.tokens);
    take(seq.block_table);
  }
  batch.block_copies.clear();
  if (!shutdown) {
    std::vector<int32_t> pairs;
    const int32_t n_copies = next();
    GPTJ_CHECK(n_copies >= 0 && at + 2 * static_cast<std::size_t>(n_copies) <= words.size(),
               "corrupt step plan ({} block copies)", n_copies);
    for (int32_t i = 0; i < n_copies; ++i) {
      const int32_t src = next();
      batch.block_copies.push_back({src, next()});
    }
  }
  batch.draws.clear();
  if (!shutdown) {
    auto take_bits = [&](void* p, std::size_t n) {
      GPTJ_CHECK(at + n / sizeof(int32_t) <= words.size(), "corrupt step plan (truncated draw)");
      std::memcpy(p, &words[at], n);
      at += n / sizeof(int32_t);
    };
    const int32_t n_draws = next();
    GPTJ_CHECK(n_draws >= 0 && static_cast<std::size_t>(n_draws) <= words.size(), "corrupt step plan ({} draws)",
               n_draws);
    batch.draws.resize(static_cast<std::size_t>(n_draws));
    for (DrawPlan& draw : batch.draws) {
      draw.logit_row = next();
      draw.allowed_vocab = next();
      take_bits(&draw.temperature, sizeof(float));
      take_bits(&draw.top_p, sizeof(float));
      take_bits(&draw.noise_key, sizeof(uint64_t));
      draw.want_log_norm = next();
      draw.score_token = next();
      draw.candidates = next();
      const int32_t n_edits = next();
      GPTJ_CHECK(n_edits >= 0 && at + 4 * static_cast<std::size_t>(n_edits) <= words.size(),
                 "corrupt step plan ({} logit edits)", n_edits);
      draw.edits.resize(static_cast<std::size_t>(n_edits));
      if (n_edits > 0) take_bits(draw.edits.data(), draw.edits.size() * sizeof(LogitEdit));
    }
    batch.raw_logits = next() != 0;
  }
  return !shutdown;
}

}  // namespace gptj
