#include "runtime/backend/draw.h"

#include <algorithm>
#include <cmath>

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

// Keeps the best kDrawCandidates of the shard (ids visited in ascending order), then sorts them.
void collect_top(const float* values, int64_t vocab_begin, int64_t count, DrawSummary& out) {
  TokenScore heap[kDrawCandidates];  // heap.front() is the worst kept entry
  int size = 0;
  for (int64_t j = 0; j < count; ++j) {
    const TokenScore entry{values[j], static_cast<int32_t>(vocab_begin + j)};
    if (size < kDrawCandidates) {
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

void summarize_draw(const float* logits_shard, int64_t vocab_begin, int64_t count, const DrawPlan& plan,
                    DrawSummary& out, std::vector<float>& scratch) {
  scratch.assign(logits_shard, logits_shard + count);
  float* v = scratch.data();
  process_row(v, vocab_begin, count, plan);
  out = DrawSummary{};
  collect_top(v, vocab_begin, count, out);
  const float m = out.count > 0 ? out.top[0].value : -INFINITY;
  out.max_logit = m;
  if (m == -INFINITY) return;  // nothing in this shard can be chosen
  if (plan.want_log_norm) {
    double sum = 0;
    for (int64_t j = 0; j < count; ++j) sum += std::exp(static_cast<double>(v[j] - m));
    out.sum_exp = sum;
  }
  const float t = plan.temperature;
  if (t <= 0.0f) return;
  if (plan.top_p < 1.0f) {
    const float m_t = m / t;
    double sum = 0;
    for (int64_t j = 0; j < count; ++j) sum += std::exp(static_cast<double>(v[j] / t - m_t));
    out.sum_exp_t = sum;
  }
  // Gumbel-max race over the shard. Start from the candidates (the likely winners) so the bound
  // logit/T + kGumbelMax skips almost every other id; ties go to the lower id.
  auto enter = [&](int64_t j) {
    if (v[j] == -INFINITY || v[j] / t + kGumbelMax < out.noise_score) return;
    const int32_t token = static_cast<int32_t>(vocab_begin + j);
    const float score = race_score(v[j], t, plan.noise_key, token);
    if (score > out.noise_score || (score == out.noise_score && token < out.noise_best.token)) {
      out.noise_score = score;
      out.noise_best = {v[j], token};
    }
  };
  for (int i = 0; i < out.count; ++i) enter(out.top[i].token - vocab_begin);
  for (int64_t j = 0; j < count; ++j) enter(j);
}

}  // namespace gptj
