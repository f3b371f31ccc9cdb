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

// Wire format: int32 words. [shutdown, n_seqs, then per seq: start_pos, all_logits, n_tokens,
// tokens..., n_blocks, blocks...].
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
  return !shutdown;
}

}  // namespace gptj
