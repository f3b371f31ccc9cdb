// What one forward step computes, built by rank 0's scheduler and broadcast to every rank.
// Sequences are flattened: the step's tokens are seqs[0].tokens, then seqs[1].tokens, ...
// Prefill (many tokens) and decode (one token) sequences mix freely in one step.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/backend/draw.h"

namespace gptj {

struct SequenceStep {
  std::vector<int32_t> tokens;       // new tokens this step
  int32_t start_pos = 0;             // tokens[i] sits at position start_pos + i; [0, start_pos) is cached
  std::vector<int32_t> block_table;  // physical KV blocks covering positions [0, start_pos + tokens.size())
  bool all_logits = false;           // logits for every new token (else only for the last one)
};

struct BlockCopy {
  int32_t src = 0, dst = 0;  // physical KV blocks: dst gets src's keys and values in every layer
};

struct StepBatch {
  std::vector<SequenceStep> seqs;
  // Done before the step's layers run: a sample forked from a shared prompt gets its own copy of
  // the prompt's partly filled last block before it writes there.
  std::vector<BlockCopy> block_copies;
  // Tokens to sample from this step's logit rows (runtime/backend/draw.h); may be empty (a step of
  // prompt chunks only).
  std::vector<DrawPlan> draws;
  // The caller wants every logit row itself (gptj logits, tests) instead of draws.
  bool raw_logits = false;

  int total_tokens() const;
  int logit_rows() const;  // sum over seqs of (all_logits ? tokens.size() : 1)
};

// Paged KV cache shape shared by every backend: num_blocks blocks of block_size positions each,
// per layer, per local head. Block ids index [0, num_blocks).
struct KvCacheOptions {
  int num_blocks = 256;
  int block_size = 16;
};

// Throws gptj::Error naming what is wrong: no sequences, positions past n_positions, a block table
// too short or with ids outside [0, kv.num_blocks), token ids outside [0, vocab_size), a draw from a
// row the step does not produce or with edits outside the vocabulary.
void validate_step(const StepBatch& batch, int n_positions, int vocab_size, const KvCacheOptions& kv);

// Serialization for the control channel (rank 0 -> all).
std::vector<uint8_t> serialize_step(const StepBatch& batch, bool shutdown);
// Returns false when the bytes say shutdown.
bool deserialize_step(const std::vector<uint8_t>& bytes, StepBatch& batch);

}  // namespace gptj
