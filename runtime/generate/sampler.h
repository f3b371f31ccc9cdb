// Per-request sampling (rank 0). Order follows Hugging Face generate(): repetition_penalty,
// no_repeat_ngram_size, presence/frequency penalties (OpenAI), then temperature, top_k, top_p.
// temperature 0 is greedy (the processors above still apply). Ids >= allowed_vocab (GPT-J's
// padding rows 50257..50399) are never chosen.
#pragma once
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

namespace gptj {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // 1: off
  float repetition_penalty = 1.0f;  // HF: over prompt + generated; > 1 discourages
  float presence_penalty = 0.0f;    // OpenAI: over generated tokens
  float frequency_penalty = 0.0f;   // OpenAI: over generated tokens, times their count
  int no_repeat_ngram_size = 0;     // HF: over prompt + generated
  std::optional<uint64_t> seed;     // same seed, same request => same tokens, whatever the batch
  int logprobs = 0;                 // top-N alternatives to report (0: only the chosen token's)
};

struct TokenChoice {
  int32_t token = -1;
  float logprob = 0;  // log-softmax of the processed logits (before temperature), chosen token
  std::vector<std::pair<int32_t, float>> top;  // the top `logprobs` alternatives
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, int allowed_vocab);
  // logits: [vocab] of one position (modified in place). context: prompt + generated so far;
  // n_prompt: how many of them are the prompt.
  TokenChoice choose(float* logits, int vocab, const std::vector<int32_t>& context, int n_prompt);

 private:
  SamplingParams params_;
  int allowed_vocab_;
  std::mt19937_64 rng_;
};

// The pieces, exposed for tests (each modifies logits[0..vocab) in place).
void apply_repetition_penalty(float* logits, const std::vector<int32_t>& context, float penalty);
void apply_presence_frequency(float* logits, const std::vector<int32_t>& generated, float presence,
                              float frequency);
void apply_no_repeat_ngram(float* logits, const std::vector<int32_t>& context, int n);
// Keeps the k largest (ties at the k-th kept, as HF); the rest become -inf.
void apply_top_k(float* logits, int vocab, int k);
// Keeps the smallest set of highest-probability tokens whose mass reaches p (HF semantics: at least
// one token kept); the rest become -inf. logits already divided by temperature.
void apply_top_p(float* logits, int vocab, float p);

}  // namespace gptj
