// Sampling split across the vocabulary shards, so full logits never have to cross to rank 0.
//
// A *draw* is one sampled token from one logit row of a step (a row can carry several draws: the n
// samples of one prompt). Rank 0 plans each draw (DrawPlan: which row, the penalty edits, the
// temperature, the noise key) and sends the plans with the step. Every rank reduces its own vocab
// shard of the row to a small DrawSummary (the shard's top kDrawCandidates processed logits, its
// log-sum-exp pieces, and the winner of the Gumbel-max race over the whole shard); rank 0 merges
// the summaries and picks the token. Only when the answer needs more than the summaries hold (a
// top-p nucleus wider than the candidates, a top-k beyond them) are that row's raw logits fetched.
//
// Sampling is Gumbel-max: token = argmax over kept ids of logit/T + G(noise_key, id), where G is a
// Gumbel(0,1) value from a counter-based hash. This is an exact draw from softmax(logit/T) over the
// kept ids, needs no prefix sums, and gives the same token whichever rank, shard or path computed it.
//
// The structs and functions the CUDA kernels share with the host (DrawSummary, LogitEdit, the Gumbel
// noise, the race) live in the leaf header kernels/sampling_math.h; this one adds the host side.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/sampling_math.h"

namespace gptj {

// One draw's instructions (rank 0 → every rank).
struct DrawPlan {
  int32_t logit_row = 0;       // row of the step's logits [logit_rows, vocab]
  int32_t allowed_vocab = 0;   // ids >= this are never chosen (GPT-J's padding rows)
  float temperature = 0.0f;    // <= 0: greedy
  float top_p = 1.0f;          // ranks compute the temperature-scaled sum only when top_p < 1
  uint64_t noise_key = 0;      // Gumbel noise of this draw
  int32_t want_log_norm = 0;   // 1: compute the T = 1 log-sum-exp (for logprobs)
  int32_t score_token = -1;    // >= 0: report this id's processed logit (scoring a given token)
  int32_t candidates = 64;     // top entries each shard lists (1 for plain greedy: just the argmax)
  std::vector<LogitEdit> edits;  // unique tokens
};

// CPU reduction of one draw: logits_shard [count] holds raw logits of ids vocab_begin..; `scratch`
// is reused between calls. This is the reference the CUDA kernels are tested against. Raw logits
// that are NaN or ±inf set out.non_finite (the rest of the summary is then meaningless: rank 0
// fails the step, runtime/generate/model_runner.h).
void summarize_draw(const float* logits_shard, int64_t vocab_begin, int64_t count, const DrawPlan& plan,
                    DrawSummary& out, std::vector<float>& scratch);

// Writes the processed logits (padding masked, edits applied) of a full raw row [vocab] in place.
void process_row(float* row, int64_t vocab_begin, int64_t count, const DrawPlan& plan);

// Gumbel-max race over processed logits v[count] of ids vocab_begin.. (race_enter for each).
void race_over(const float* v, int64_t vocab_begin, int64_t count, float temperature, uint64_t key,
               RaceLeader& leader);

// CPU answer of one rank (`rank`) to a threshold-search query (kernels/sampling_math.h) about draw
// `plan` over its raw logits_shard [count] of ids vocab_begin..; the reference of the CUDA kernel.
void answer_search_query(const float* logits_shard, int64_t vocab_begin, int64_t count, const DrawPlan& plan,
                         const SearchQuery& query, int rank, SearchReply& out, std::vector<float>& scratch);

// The top-p criterion both paths use: the descending prefix of integer mass `cumulative` out of
// `total` reaches p (with a 1e-6 tolerance: p arrives as a float, 0.8f = 0.8000000119).
inline bool nucleus_reached(uint64_t cumulative, uint64_t total, float p) {
  return static_cast<double>(cumulative) >= (static_cast<double>(p) - 1e-6) * static_cast<double>(total);
}

}  // namespace gptj
