// Rank 0's side of the threshold search: top-k of any k and top-p of any p settled over the vocab
// shards without moving a row (docs/DESIGN.md §8). A draw whose summaries (runtime/backend/draw.h)
// do not settle it starts a DrawSearch; each round the search asks every rank one SearchQuery
// (kernels/sampling_math.h) and reads their SearchReply values:
//   histogram  counts and integer masses of the shard's scaled logits s = v / T in B buckets of an
//              interval (lo, hi]; the first round covers the whole row
//   list       the shard's ids in a bucket holding at most kSearchListed per rank, with their race
//              scores, and the shard's race winner over the ids above the bucket: rank 0 then sorts
//              the bucket and settles the cut and the winner at once
//   race       (a bucket of one value too many ties to list) the race over the kept ids: s > cut,
//              ties at the cut taken in id order as rank 0 counted them
// First top-k's threshold is found (by counts: the k-th largest s; ties at it are kept, as HF), then
// within it top-p's cut (by mass: the shortest prefix in (s descending, id ascending) order whose
// mass reaches p of the kept mass; at least one id). The result is the token the full-row path
// (Sampler::choose_from_row) gives for the same seed, exactly: the same masses, the same order, the
// same race scores. A search that has not settled within kMaxRounds gives up (failed()): the caller
// fetches the row — never seen in the tests, kept for rows of pathological shape.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/backend/draw.h"

namespace gptj {

class DrawSearch {
 public:
  static constexpr int kMaxRounds = 12;

  // A sampled draw (plan.temperature > 0): top_k (0 or >= vocab: off), plan.top_p (1: off); the
  // ranks' summaries give the row's maximum.
  DrawSearch(const DrawPlan& plan, int top_k, const DrawSummary* per_rank, int ranks, int64_t vocab);

  // The next query (query.draw is left to the caller), or false when settled or failed.
  bool next_query(SearchQuery& query) const;
  // The ranks' replies to the last query: per_rank[r] from rank r.
  void take_replies(const SearchReply* per_rank, int ranks);

  bool settled() const { return state_ == State::kSettled; }
  bool failed() const { return state_ == State::kFailed; }
  TokenScore winner() const { return winner_; }  // settled: the token and its processed logit
  int rounds() const { return rounds_; }

 private:
  enum class State { kActive, kSettled, kFailed };
  enum class Phase { kTopK, kTopP };
  void start_histogram(float lo, float hi);  // the next query: a histogram of (lo, hi]
  void choose_bucket(const std::vector<int64_t>& per_rank_count, float lo, float hi);
  void settle_value(float value);            // the cut's bucket holds one value
  void after_top_k(float threshold);         // top-k's threshold found
  void finish_race(float cut, int tie_rank, int64_t tie_take);
  void consider(float score, TokenScore entry);  // into winner_ (race order)

  float t_, top_p_;
  int64_t k_ = 0;             // top-k target (phase kTopK)
  int ranks_;
  float scaled_max_;
  Phase phase_;
  State state_ = State::kActive;
  SearchQuery query_;         // the next query
  bool query_ready_ = false;
  bool first_of_phase_ = true;  // this histogram covers every id the phase considers: it gives the total
  int64_t above_count_ = 0;   // ids (of the phase's set) with s above the current interval
  uint64_t above_mass_ = 0;
  uint64_t total_mass_ = 0;   // top-p: the mass of the kept set
  std::vector<int64_t> interval_count_;  // per rank, ids in the current interval
  int rounds_ = 0;
  float best_score_ = -INFINITY;
  TokenScore winner_;
};

}  // namespace gptj
