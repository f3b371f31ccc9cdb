#include "runtime/backend/draw.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/core/error.h"

namespace gptj {

void process_row(float* row, int64_t vocab_begin, int64_t count, const DrawPlan& plan) {
  const int64_t allowed_end = std::clamp<int64_t>(plan.allowed_vocab - vocab_begin, 0, count);
  std::fill(row + allowed_end, row + count, -INFINITY);
  for (const LogitEdit& edit : plan.edits) {
    const int64_t j = edit.token - vocab_begin;
    if (j >= 0 && j < count) row[j] = apply_logit_edit(row[j], edit);
  }
}

namespace {

// Keeps the best `keep` (<= kDrawCandidates) of the shard (ids visited in ascending order), then
// sorts them.
void collect_top(const float* values, int64_t vocab_begin, int64_t count, int keep, DrawSummary& out) {
  TokenScore heap[kDrawCandidates];  // heap.front() is the worst kept entry
  int size = 0;
  for (int64_t j = 0; j < count; ++j) {
    const TokenScore entry{values[j], static_cast<int32_t>(vocab_begin + j)};
    if (size < keep) {
      heap[size++] = entry;
      std::push_heap(heap, heap + size, ranks_before);
    } else if (entry.value > heap[0].value) {  // later ids lose ties, so only a larger value enters
      std::pop_heap(heap, heap + size, ranks_before);
      heap[size - 1] = entry;
      std::push_heap(heap, heap + size, ranks_before);
    }
  }
  std::sort_heap(heap, heap + size, ranks_before);
  out.count = size;
  std::copy(heap, heap + size, out.top);
  std::fill(out.top + size, out.top + kDrawCandidates, TokenScore{});
}

}  // namespace

namespace {

// Rejection thresholds: an id needing noise above c = best - v/T wins only if u >= exp(-exp(-c)).
// kRejectBelow[b] = that threshold at c = b / kBinsPerUnit - kMargin, a lower bound over the bin
// (the margin covers float rounding of the scores), so u < kRejectBelow[bin] proves it loses.
constexpr int kBinsPerUnit = 8;
constexpr int kBins = static_cast<int>(kGumbelMax) * kBinsPerUnit + kBinsPerUnit;
constexpr double kMargin = 1e-3;
const std::vector<float>& reject_below() {
  static const std::vector<float> table = [] {
    std::vector<float> t(kBins);
    for (int b = 0; b < kBins; ++b) {
      const double c = static_cast<double>(b) / kBinsPerUnit - kMargin;
      // Round down to float so the test stays a lower bound.
      t[b] = std::nextafter(static_cast<float>(std::exp(-std::exp(-c))), 0.0f);
    }
    return t;
  }();
  return table;
}

}  // namespace

namespace {
// race_over restricted to the ids `keep(j, scaled)` accepts (visited in ascending order).
template <typename Keep>
void race_where(const float* v, int64_t vocab_begin, int64_t count, float temperature, uint64_t key,
                RaceLeader& leader, Keep keep) {
  const std::vector<float>& reject = reject_below();
  for (int64_t j = 0; j < count; ++j) {
    if (v[j] == -INFINITY) continue;
    const float scaled = v[j] / temperature;
    if (!keep(j, scaled)) continue;
    const int32_t token = static_cast<int32_t>(vocab_begin + j);
    if (leader.entry.token >= 0) {
      const float c = leader.score - scaled;  // the noise this id needs
      if (c >= kGumbelMax + 0.01f) continue;
      if (c > 0.0f) {
        const int bin = static_cast<int>(c * kBinsPerUnit);
        if (gumbel_uniform(key, token) < reject[bin]) continue;
      }
    }
    race_enter(leader, v[j], temperature, key, token);
  }
}
}  // namespace

void race_over(const float* v, int64_t vocab_begin, int64_t count, float temperature, uint64_t key,
               RaceLeader& leader) {
  race_where(v, vocab_begin, count, temperature, key, leader, [](int64_t, float) { return true; });
}

void answer_search_query(const float* logits_shard, int64_t vocab_begin, int64_t count, const DrawPlan& plan,
                         const SearchQuery& q, int rank, SearchReply& out, std::vector<float>& scratch) {
  scratch.assign(logits_shard, logits_shard + count);
  float* v = scratch.data();
  process_row(v, vocab_begin, count, plan);
  const float t = plan.temperature;
  GPTJ_CHECK(t > 0.0f, "threshold search for a greedy draw");
  std::memset(static_cast<void*>(&out), 0, sizeof(out));
  out.min_scaled = INFINITY;
  out.max_scaled = -INFINITY;
  out.best_score = -INFINITY;
  out.best = TokenScore{};
  auto note = [&](float s) {
    out.min_scaled = std::min(out.min_scaled, s);
    out.max_scaled = std::max(out.max_scaled, s);
  };
  RaceLeader leader;
  if (q.mode == kSearchHistogram) {
    constexpr int kLast = kSearchBuckets - 1;
    thread_local std::vector<float> in_s;  // the interval's scaled logits and their buckets
    thread_local std::vector<uint16_t> in_bucket;
    in_s.clear();
    in_bucket.clear();
    for (int64_t j = 0; j < count; ++j) {
      if (v[j] == -INFINITY) continue;
      const float s = v[j] / t;
      if (!(s > q.lo && s <= q.hi)) continue;
      note(s);
      // bucket b: edges[b+1] < s <= edges[b]; guessed from the spacing, then moved to the edges
      const float guess = (q.hi - s) * q.bucket_scale;
      int b = guess >= static_cast<float>(kLast) ? kLast : guess > 0.0f ? static_cast<int>(guess) : 0;
      while (b > 0 && s > q.edges[b]) --b;
      while (b < kLast && !(s > q.edges[b + 1])) ++b;
      out.hist.count[b] += 1;
      if (q.want_mass) {
        in_s.push_back(s);
        in_bucket.push_back(static_cast<uint16_t>(b));
      }
    }
    // The masses in a loop of their own: independent fma chains, no branches between them.
    for (std::size_t i = 0; i < in_s.size(); ++i) out.hist.mass[in_bucket[i]] += token_mass(in_s[i], q.scaled_max);
    return;
  }
  for (int64_t j = 0; j < count; ++j)
    if (v[j] != -INFINITY && v[j] / t > q.lo && v[j] / t <= q.hi) note(v[j] / t);
  if (q.mode == kSearchList) {
    for (int64_t j = 0; j < count; ++j) {
      if (v[j] == -INFINITY) continue;
      const float s = v[j] / t;
      if (!(s > q.lo && s <= q.hi)) continue;
      GPTJ_CHECK(out.listed < kSearchListed, "threshold search: more than {} ids listed", kSearchListed);
      const int32_t token = static_cast<int32_t>(vocab_begin + j);
      out.list[out.listed++] = {v[j], token, race_score(v[j], t, plan.noise_key, token), 0};
    }
    race_where(v, vocab_begin, count, t, plan.noise_key, leader, [&](int64_t, float s) { return s > q.hi; });
  } else {
    GPTJ_CHECK(q.mode == kSearchRace, "threshold search: unknown mode {}", q.mode);
    // Ties at the cut, in id order: this rank keeps all, its first tie_take, or none.
    const int64_t take = rank < q.tie_rank ? count : rank == q.tie_rank ? q.tie_take : 0;
    int64_t ties = 0;
    race_where(v, vocab_begin, count, t, plan.noise_key, leader, [&](int64_t, float s) {
      if (s > q.cut) return true;
      return s == q.cut && ties++ < take;
    });
  }
  out.best_score = leader.score;
  out.best = leader.entry;
}

namespace {
// 1 when any of v[0, count) is NaN or ±inf: one branch-free pass over the raw row.
int32_t any_non_finite(const float* v, int64_t count) {
  uint32_t any = 0;
  for (int64_t j = 0; j < count; ++j) {
    uint32_t bits;
    std::memcpy(&bits, v + j, sizeof(bits));
    any |= non_finite_bits(bits) ? 1u : 0u;
  }
  return static_cast<int32_t>(any);
}
}  // namespace

void summarize_draw(const float* logits_shard, int64_t vocab_begin, int64_t count, const DrawPlan& plan,
                    DrawSummary& out, std::vector<float>& scratch) {
  scratch.assign(logits_shard, logits_shard + count);
  float* v = scratch.data();
  out = DrawSummary{};
  out.non_finite = any_non_finite(v, count);  // before processing: padding and bans are -inf by design
  process_row(v, vocab_begin, count, plan);
  collect_top(v, vocab_begin, count, std::clamp(plan.candidates, 1, kDrawCandidates), out);
  const float m = out.count > 0 ? out.top[0].value : -INFINITY;
  out.max_logit = m;
  if (plan.score_token >= vocab_begin && plan.score_token < vocab_begin + count) {
    out.score_found = 1;
    out.score_value = v[plan.score_token - vocab_begin];
  }
  if (m == -INFINITY) return;  // nothing in this shard can be chosen
  if (plan.want_log_norm) {
    double sum = 0;
    for (int64_t j = 0; j < count; ++j) sum += std::exp(v[j] - m);
    out.sum_exp = sum;
  }
  const float t = plan.temperature;
  if (t <= 0.0f) return;
  if (plan.top_p < 1.0f) {
    const float m_t = m / t;
    double sum = 0;
    for (int64_t j = 0; j < count; ++j) sum += std::exp(v[j] / t - m_t);
    out.sum_exp_t = sum;
  }
  // Gumbel-max race over the shard, the candidates (likely winners) first so the rest is mostly
  // skipped; entering an id twice changes nothing.
  RaceLeader leader;
  for (int i = 0; i < out.count; ++i) race_enter(leader, out.top[i].value, t, plan.noise_key, out.top[i].token);
  race_over(v, vocab_begin, count, t, plan.noise_key, leader);
  out.noise_score = leader.score;
  out.noise_best = leader.entry;
}

}  // namespace gptj
