#include "runtime/generate/draw_chooser.h"

#include <cstdlib>
#include <string>

namespace gptj {

DrawChooser::DrawChooser(const StepBatch& batch, int64_t vocab, std::vector<Draw>& draws)
    : batch_(batch), vocab_(vocab), draws_(draws) {
  const char* v = std::getenv("GPTJ_SAMPLING_FULL_ROWS");  // the full-row reference, for tests
  full_rows_ = v && std::string(v) == "1";
}

ModelRunner::DrawResolver::Need DrawChooser::summaries(int d, const DrawSummary* per_rank, int ranks) {
  Draw& dr = draws_[d];
  const DrawPlan& plan = batch_.draws[d];
  if (dr.score_top_n >= 0) {
    dr.choice = score_from_summaries(plan, per_rank, ranks, dr.score_top_n);
    return Need::kNothing;
  }
  dr.choice = dr.sampler->choose_from_summaries(plan, per_rank, ranks, vocab_);
  if (dr.choice) return Need::kNothing;
  if (full_rows_) return Need::kRow;
  dr.search = dr.sampler->search_for(plan, per_rank, ranks, vocab_);
  if (!dr.search) return Need::kRow;
  dr.summaries.assign(per_rank, per_rank + ranks);
  return Need::kSearch;
}

bool DrawChooser::needs_row(int d) {
  Draw& dr = draws_[d];
  dr.choice = dr.sampler->choose_from_search(batch_.draws[d], *dr.search, dr.summaries.data(),
                                             static_cast<int>(dr.summaries.size()));
  return !dr.choice.has_value();
}

void DrawChooser::choose_from_rows(const ModelRunner::DrawResults& results) {
  std::vector<float> row;
  for (std::size_t d = 0; d < draws_.size(); ++d) {
    if (draws_[d].choice) continue;
    const float* fetched = &results.rows[static_cast<std::size_t>(results.row_of_draw[d]) * vocab_];
    row.assign(fetched, fetched + vocab_);
    draws_[d].choice = draws_[d].sampler->choose_from_row(batch_.draws[d], row.data(), vocab_);
  }
}

}  // namespace gptj
