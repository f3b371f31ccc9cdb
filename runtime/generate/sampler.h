// Per-request sampling (rank 0). Order follows Hugging Face generate(): repetition_penalty,
// no_repeat_ngram_size, presence/frequency penalties (OpenAI), then temperature, top_k, top_p.
// temperature 0 is greedy (the processors above still apply). Ids >= allowed_vocab (GPT-J's
// padding rows 50257..50399) are never chosen.
//
// Each token is one *draw* (runtime/backend/draw.h): plan() turns the request's state into a
// DrawPlan that travels with the step; the ranks reduce their vocab shards to DrawSummary values;
// choose_from_summaries() picks the token from those, or says that the row's full logits are needed,
// and choose_from_row() picks it from the full row. Both paths give the same token: sampling is a
// Gumbel-max race keyed by (seed, draw number), so a seeded request gets the same tokens whatever the
// batch, the TP size or the path.
#pragma once
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "runtime/backend/draw.h"
#include "runtime/generate/draw_search.h"

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
  // OpenAI logit_bias: (token, bias) sorted by token, ids < allowed_vocab; bias added to the logit.
  std::vector<std::pair<int32_t, float>> logit_bias;
  int logprobs = 0;                 // top-N alternatives to report (at most kDrawCandidates)
  bool report_logprob = false;      // compute the chosen token's logprob (implied by logprobs > 0)
};

struct TokenChoice {
  int32_t token = -1;
  float logprob = 0;  // log-softmax of the processed logits (before temperature), chosen token
  std::vector<std::pair<int32_t, float>> top;  // the top `logprobs` alternatives
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, int allowed_vocab);

  // Plans the next draw from step logit row `logit_row`. context: prompt + generated so far;
  // n_prompt: how many of them are the prompt. Advances the draw counter (the noise key).
  DrawPlan plan(const std::vector<int32_t>& context, int n_prompt, int32_t logit_row);
  // The token from every rank's summary of `plan` (per_rank[r] for rank r; vocab = the row's full
  // length), or nullopt when they do not determine it (then call choose_from_row).
  std::optional<TokenChoice> choose_from_summaries(const DrawPlan& plan, const DrawSummary* per_rank,
                                                   int ranks, int64_t vocab) const;
  // When the summaries do not settle a top-k / top-p draw: the threshold search over the shards that
  // will (runtime/generate/draw_search.h), or nullopt when only the full row can (a row too small
  // for the logprobs asked). Then choose_from_search() once the search has settled: the full-row
  // path's token and logprob; nullopt when the search gave up (fetch the row).
  std::optional<DrawSearch> search_for(const DrawPlan& plan, const DrawSummary* per_rank, int ranks,
                                       int64_t vocab) const;
  std::optional<TokenChoice> choose_from_search(const DrawPlan& plan, const DrawSearch& search,
                                                const DrawSummary* per_rank, int ranks) const;
  // The token from the full raw row [vocab] (modified in place): the reference the other paths match.
  TokenChoice choose_from_row(const DrawPlan& plan, float* row, int64_t vocab) const;
  // plan() + choose_from_row() in one call.
  TokenChoice choose(float* logits, int vocab, const std::vector<int32_t>& context, int n_prompt);

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  int allowed_vocab_;
  uint64_t seed_;
  uint64_t draws_ = 0;
};

// Scoring a given token (a prompt token's logprob): the plan for logit row `logit_row`, and the
// result from the ranks' summaries: choice.token = token, its logprob (log-softmax of the row over
// the allowed ids, no penalties), and the top `top_n` (<= kDrawCandidates) alternatives.
DrawPlan score_plan(int32_t logit_row, int32_t token, int allowed_vocab, int top_n);
TokenChoice score_from_summaries(const DrawPlan& plan, const DrawSummary* per_rank, int ranks, int top_n);

// The logit edits of one draw (HF order; one entry per affected token, sorted by token); logit_bias
// comes last, added to what the penalties leave (a bias is a negative `subtract`).
std::vector<LogitEdit> make_logit_edits(const SamplingParams& params, const std::vector<int32_t>& context,
                                        int n_prompt);

// The pieces, exposed for tests (each modifies logits[0..vocab) in place).
void apply_repetition_penalty(float* logits, const std::vector<int32_t>& context, float penalty);
void apply_presence_frequency(float* logits, const std::vector<int32_t>& generated, float presence,
                              float frequency);
void apply_no_repeat_ngram(float* logits, const std::vector<int32_t>& context, int n);
// Keeps the k largest (ties at the k-th kept, as HF); the rest become -inf.
void apply_top_k(float* logits, int vocab, int k);
// Keeps the smallest set of highest-probability tokens whose mass reaches p (HF semantics: at least
// one token kept; equal logits ordered by id); the rest become -inf. logits already divided by
// temperature.
void apply_top_p(float* logits, int vocab, float p);

}  // namespace gptj
