#include "runtime/generate/draw_search.h"

#include <algorithm>
#include <cmath>

namespace gptj {

namespace {
// The first histogram of a phase that covers the whole row: fine buckets over the kFirstWidth
// scaled-logit units below the maximum (every id with a mass of at least 2^-40 lies there), the rest
// in the last bucket.
constexpr double kFirstWidth = 28.0;

float float_below(float f) { return std::nextafter(f, -INFINITY); }
}  // namespace

DrawSearch::DrawSearch(const DrawPlan& plan, int top_k, const DrawSummary* per_rank, int ranks, int64_t vocab)
    : t_(plan.temperature), top_p_(plan.top_p), ranks_(ranks), interval_count_(ranks, 0) {
  float m = -INFINITY;
  for (int r = 0; r < ranks; ++r) m = std::max(m, per_rank[r].max_logit);
  scaled_max_ = m / t_;
  const bool top_k_on = top_k > 0 && top_k < vocab;
  if (!(t_ > 0.0f) || m == -INFINITY || (!top_k_on && !(top_p_ < 1.0f))) {
    state_ = State::kFailed;  // nothing to search: the summaries or the row settle it
    return;
  }
  phase_ = top_k_on ? Phase::kTopK : Phase::kTopP;
  k_ = top_k;
  start_histogram(-INFINITY, scaled_max_);
}

bool DrawSearch::next_query(SearchQuery& query) const {
  if (state_ != State::kActive) return false;
  query = query_;
  return true;
}

void DrawSearch::start_histogram(float lo, float hi) {
  constexpr int kB = kSearchBuckets;
  SearchQuery q;
  q.mode = kSearchHistogram;
  q.scaled_max = scaled_max_;
  q.lo = lo;
  q.hi = hi;
  q.edges[0] = hi;
  q.edges[kB] = lo;
  // Edges evenly spaced in value, then made strictly decreasing as keys (down to lo), so every round
  // narrows the interval; an interval of at most kB floats gets one bucket per value.
  const uint32_t k_lo = float_key(lo);
  uint32_t prev = float_key(hi);
  for (int b = 1; b < kB; ++b) {
    const double want = lo == -INFINITY ? hi - kFirstWidth * b / (kB - 1)
                                        : static_cast<double>(hi) - (static_cast<double>(hi) - lo) * b / kB;
    uint32_t key = float_key(static_cast<float>(want));
    if (prev > k_lo) key = std::min(key, prev - 1);
    key = std::max(key, k_lo);
    q.edges[b] = key_float(key);
    prev = key;
  }
  q.want_mass = phase_ == Phase::kTopP ? 1 : 0;
  q.bucket_scale = lo == -INFINITY ? static_cast<float>((kB - 1) / kFirstWidth)
                                   : static_cast<float>(kB / (static_cast<double>(hi) - lo));
  if (!std::isfinite(q.bucket_scale)) q.bucket_scale = 0;
  query_ = q;
}

void DrawSearch::consider(float score, TokenScore entry) {
  if (entry.token < 0 || !(score > -INFINITY)) return;
  if (winner_.token < 0 || score > best_score_ || (score == best_score_ && entry.token < winner_.token)) {
    best_score_ = score;
    winner_ = entry;
  }
}

void DrawSearch::finish_race(float cut, int tie_rank, int64_t tie_take) {
  SearchQuery q;
  q.mode = kSearchRace;
  q.scaled_max = scaled_max_;
  q.cut = cut;
  q.lo = cut;
  q.hi = cut;
  q.tie_rank = tie_rank;
  q.tie_take = static_cast<int32_t>(tie_take);
  query_ = q;
}

void DrawSearch::after_top_k(float threshold) {
  // Top-k keeps every id with s >= threshold (ties at the k-th included, as HF).
  if (top_p_ < 1.0f) {  // then top-p within that set: a new phase, its first histogram over all of it
    phase_ = Phase::kTopP;
    first_of_phase_ = true;
    above_count_ = 0;
    above_mass_ = 0;
    start_histogram(threshold == -INFINITY ? -INFINITY : float_below(threshold), scaled_max_);
  } else {
    finish_race(threshold, ranks_, 0);  // s > threshold, and every tie at it
  }
}

void DrawSearch::settle_value(float value) {
  if (phase_ == Phase::kTopK) return after_top_k(value);
  // Top-p's cut falls among ids of one value: each adds the same mass; the first j in id order
  // (ranks hold ascending id ranges) complete the nucleus.
  int64_t in_bucket = 0;
  for (int64_t c : interval_count_) in_bucket += c;
  const uint64_t q = token_mass(value, scaled_max_);
  int64_t j = 1;
  while (j < in_bucket && !nucleus_reached(above_mass_ + static_cast<uint64_t>(j) * q, total_mass_, top_p_)) ++j;
  int64_t rest = j;
  int tie_rank = ranks_ - 1;
  for (int r = 0; r < ranks_; ++r) {
    if (rest <= interval_count_[r]) {
      tie_rank = r;
      break;
    }
    rest -= interval_count_[r];
  }
  finish_race(value, tie_rank, rest);
}

void DrawSearch::choose_bucket(const std::vector<int64_t>& per_rank_count, float lo, float hi) {
  interval_count_ = per_rank_count;
  const int64_t widest = *std::max_element(interval_count_.begin(), interval_count_.end());
  if (float_key(hi) - float_key(lo) <= 1) {
    settle_value(hi);
  } else if (widest <= kSearchListed) {
    SearchQuery q;
    q.mode = kSearchList;
    q.scaled_max = scaled_max_;
    q.lo = lo;
    q.hi = hi;
    query_ = q;
  } else {
    start_histogram(lo, hi);
  }
}

void DrawSearch::take_replies(const SearchReply* per_rank, int ranks) {
  if (state_ != State::kActive) return;
  if (++rounds_ > kMaxRounds || ranks != ranks_) {
    state_ = State::kFailed;
    return;
  }
  const SearchQuery& q = query_;
  if (q.mode == kSearchRace) {
    for (int r = 0; r < ranks; ++r) consider(per_rank[r].best_score, per_rank[r].best);
    state_ = winner_.token >= 0 ? State::kSettled : State::kFailed;
    return;
  }
  if (q.mode == kSearchList) {
    struct Entry {
      float s;
      ListedToken t;
    };
    std::vector<Entry> entries;
    for (int r = 0; r < ranks; ++r) {
      consider(per_rank[r].best_score, per_rank[r].best);  // the ids above the bucket: all kept
      for (int i = 0; i < per_rank[r].listed; ++i) entries.push_back({per_rank[r].list[i].value / t_, per_rank[r].list[i]});
    }
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return a.s > b.s || (a.s == b.s && a.t.token < b.t.token);
    });
    if (phase_ == Phase::kTopK) {
      const int64_t at = k_ - above_count_ - 1;
      if (at < 0 || at >= static_cast<int64_t>(entries.size())) {
        state_ = State::kFailed;
        return;
      }
      const float threshold = entries[static_cast<std::size_t>(at)].s;
      if (top_p_ < 1.0f) {
        best_score_ = -INFINITY;
        winner_ = TokenScore{};
        return after_top_k(threshold);
      }
      for (const Entry& e : entries)
        if (e.s >= threshold) consider(e.t.score, {e.t.value, e.t.token});
      state_ = State::kSettled;
      return;
    }
    uint64_t cumulative = above_mass_;
    for (const Entry& e : entries) {
      cumulative += token_mass(e.s, scaled_max_);
      consider(e.t.score, {e.t.value, e.t.token});
      if (nucleus_reached(cumulative, total_mass_, top_p_)) {
        state_ = State::kSettled;
        return;
      }
    }
    state_ = State::kFailed;
    return;
  }
  // A histogram: the bucket where the cut falls.
  constexpr int kB = kSearchBuckets;
  std::vector<int64_t> count(kB, 0);
  std::vector<uint64_t> mass(kB, 0);
  float min_scaled = INFINITY, max_scaled = -INFINITY;
  std::vector<int64_t> in_interval(ranks, 0);
  for (int r = 0; r < ranks; ++r) {
    min_scaled = std::min(min_scaled, per_rank[r].min_scaled);
    max_scaled = std::max(max_scaled, per_rank[r].max_scaled);
    for (int b = 0; b < kB; ++b) {
      count[b] += per_rank[r].hist.count[b];
      mass[b] += per_rank[r].hist.mass[b];
      in_interval[r] += per_rank[r].hist.count[b];
    }
  }
  if (phase_ == Phase::kTopP && first_of_phase_) {
    total_mass_ = 0;
    for (uint64_t m : mass) total_mass_ += m;
  }
  int64_t in_all = 0;
  for (int64_t c : in_interval) in_all += c;
  if (phase_ == Phase::kTopK && first_of_phase_ && in_all < k_) {
    first_of_phase_ = false;
    return after_top_k(-INFINITY);  // fewer finite ids than k: top-k keeps them all
  }
  if (in_all > 0 && min_scaled == max_scaled) {  // one value (ties): the cut is settled
    first_of_phase_ = false;
    interval_count_ = in_interval;
    return settle_value(min_scaled);
  }
  int found = -1;
  for (int b = 0; b < kB && found < 0; ++b) {
    const bool here = phase_ == Phase::kTopK ? above_count_ + count[b] >= k_
                                             : nucleus_reached(above_mass_ + mass[b], total_mass_, top_p_);
    if (here) {
      found = b;
    } else {
      above_count_ += count[b];
      above_mass_ += mass[b];
    }
  }
  first_of_phase_ = false;
  if (found < 0) {
    state_ = State::kFailed;
    return;
  }
  std::vector<int64_t> per_rank_count(ranks);
  for (int r = 0; r < ranks; ++r) per_rank_count[r] = per_rank[r].hist.count[found];
  // The interval's extremes bound the bucket when it is the highest or lowest one holding ids.
  float lo = q.edges[found + 1], hi = q.edges[found];
  bool highest = true, lowest = true;
  for (int b = 0; b < found; ++b) highest = highest && count[b] == 0;
  for (int b = found + 1; b < kB; ++b) lowest = lowest && count[b] == 0;
  if (highest) hi = std::min(hi, max_scaled);
  if (lowest) lo = std::max(lo, float_below(min_scaled));
  choose_bucket(per_rank_count, lo, hi);
}

}  // namespace gptj
