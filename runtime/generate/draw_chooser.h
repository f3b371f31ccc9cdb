// Rank 0: the tokens of a step's draws (ModelRunner::step_draws), each from the shard summaries, the
// threshold search (runtime/generate/draw_search.h) when they do not settle it, or, only where neither
// can (degenerate rows) or GPTJ_SAMPLING_FULL_ROWS=1 asks for the reference, its fetched row.
// Used by the scheduler and by `gptj bench`.
#pragma once
#include <optional>
#include <vector>

#include "runtime/generate/draw_search.h"
#include "runtime/generate/model_runner.h"
#include "runtime/generate/sampler.h"

namespace gptj {

class DrawChooser final : public ModelRunner::DrawResolver {
 public:
  struct Draw {
    const Sampler* sampler = nullptr;  // a sampled draw: the sampler that planned it
    int score_top_n = -1;              // >= 0: a scoring draw (score_plan) with this many alternatives
    std::optional<TokenChoice> choice;  // the result, once settled
    std::optional<DrawSearch> search;
    std::vector<DrawSummary> summaries;  // kept for the logprob once the search settles
  };
  // draws[d] for batch.draws[d]; both must outlive the chooser.
  DrawChooser(const StepBatch& batch, int64_t vocab, std::vector<Draw>& draws);

  Need summaries(int d, const DrawSummary* per_rank, int ranks) override;
  bool next_query(int d, SearchQuery& query) override { return draws_[d].search->next_query(query); }
  void replies(int d, const SearchReply* per_rank, int ranks) override {
    draws_[d].search->take_replies(per_rank, ranks);
  }
  bool needs_row(int d) override;
  // After step_draws(): the choices of the draws whose rows were fetched.
  void choose_from_rows(const ModelRunner::DrawResults& results);

 private:
  const StepBatch& batch_;
  int64_t vocab_;
  std::vector<Draw>& draws_;
  bool full_rows_;
};

}  // namespace gptj
