// A draw the way the ranks and rank 0 settle it, with the TP shards simulated in process: every
// rank's summary of its shard, Sampler::choose_from_summaries, and when that does not settle it the
// threshold search (each rank answering with answer_search_query). Shared by the unit tests.
#pragma once
#include <algorithm>
#include <optional>
#include <vector>

#include "runtime/backend/draw.h"
#include "runtime/generate/draw_search.h"
#include "runtime/generate/sampler.h"

namespace gptj::testing {

// A row cut into tp shards as the backends cut it (ceil(vocab / tp) ids each; padding holds 0).
struct Shards {
  Shards(const std::vector<float>& row, int tp_size)
      : vocab(static_cast<int64_t>(row.size())), tp(tp_size), shard((vocab + tp_size - 1) / tp_size) {
    padded.assign(static_cast<std::size_t>(shard) * tp, 0.0f);
    std::copy(row.begin(), row.end(), padded.begin());
  }
  const float* of(int r) const { return &padded[static_cast<std::size_t>(r) * shard]; }
  int64_t vocab;
  int tp;
  int64_t shard;
  std::vector<float> padded;
};

struct SplitOutcome {
  std::optional<TokenChoice> choice;  // nullopt: only the full row settles it
  bool searched = false;
  int rounds = 0;
};

inline SplitOutcome split_draw(const Sampler& sampler, const DrawPlan& plan, const Shards& s) {
  std::vector<DrawSummary> summaries(s.tp);
  std::vector<float> scratch;
  for (int r = 0; r < s.tp; ++r) summarize_draw(s.of(r), r * s.shard, s.shard, plan, summaries[r], scratch);
  SplitOutcome out;
  out.choice = sampler.choose_from_summaries(plan, summaries.data(), s.tp, s.vocab);
  if (out.choice) return out;
  std::optional<DrawSearch> search = sampler.search_for(plan, summaries.data(), s.tp, s.vocab);
  if (!search) return out;
  out.searched = true;
  SearchQuery query;
  std::vector<SearchReply> replies(s.tp);
  while (search->next_query(query)) {
    for (int r = 0; r < s.tp; ++r) answer_search_query(s.of(r), r * s.shard, s.shard, plan, query, r, replies[r], scratch);
    search->take_replies(replies.data(), s.tp);
  }
  out.rounds = search->rounds();
  out.choice = sampler.choose_from_search(plan, *search, summaries.data(), s.tp);
  return out;
}

}  // namespace gptj::testing
