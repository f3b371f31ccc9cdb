#include "runtime/generate/sampler.h"

#include "runtime/generate/draw_search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

namespace gptj {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void apply_edits(float* logits, const std::vector<LogitEdit>& edits) {
  for (const LogitEdit& edit : edits) logits[edit.token] = apply_logit_edit(logits[edit.token], edit);
}

bool wants_logprob(const SamplingParams& params) { return params.report_logprob || params.logprobs > 0; }

// The Gumbel-max race winner among `tokens` (values = processed logits), or -1.
template <typename ValueOf>
int32_t race(const std::vector<int32_t>& tokens, ValueOf value_of, float temperature, uint64_t key) {
  RaceLeader leader;
  for (int32_t token : tokens) race_enter(leader, value_of(token), temperature, key, token);
  return leader.entry.token;
}
}  // namespace

std::vector<LogitEdit> make_logit_edits(const SamplingParams& params, const std::vector<int32_t>& context,
                                        int n_prompt) {
  std::map<int32_t, LogitEdit> edits;
  auto at = [&](int32_t token) -> LogitEdit& {
    LogitEdit& edit = edits[token];
    edit.token = token;
    return edit;
  };
  if (params.repetition_penalty != 1.0f)
    for (int32_t id : context) at(id).repetition_penalty = params.repetition_penalty;
  const int n = params.no_repeat_ngram_size, len = static_cast<int>(context.size());
  if (n > 0 && len + 1 >= n) {
    // Ban every token that followed an earlier occurrence of the last n-1 tokens.
    for (int start = 0; start + n <= len; ++start) {
      bool match = true;
      for (int i = 0; i < n - 1 && match; ++i) match = context[start + i] == context[len - n + 1 + i];
      if (match) at(context[start + n - 1]).ban = 1;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    std::map<int32_t, int> counts;
    for (int i = n_prompt; i < len; ++i) ++counts[context[i]];
    for (const auto& [id, count] : counts)
      at(id).subtract = params.presence_penalty + params.frequency_penalty * static_cast<float>(count);
  }
  for (const auto& [id, bias] : params.logit_bias) at(id).subtract -= bias;
  std::vector<LogitEdit> out;
  out.reserve(edits.size());
  for (const auto& [token, edit] : edits) out.push_back(edit);
  return out;
}

void apply_repetition_penalty(float* logits, const std::vector<int32_t>& context, float penalty) {
  SamplingParams p;
  p.repetition_penalty = penalty;
  apply_edits(logits, make_logit_edits(p, context, static_cast<int>(context.size())));
}

void apply_presence_frequency(float* logits, const std::vector<int32_t>& generated, float presence,
                              float frequency) {
  SamplingParams p;
  p.presence_penalty = presence;
  p.frequency_penalty = frequency;
  apply_edits(logits, make_logit_edits(p, generated, 0));
}

void apply_no_repeat_ngram(float* logits, const std::vector<int32_t>& context, int n) {
  SamplingParams p;
  p.no_repeat_ngram_size = n;
  apply_edits(logits, make_logit_edits(p, context, static_cast<int>(context.size())));
}

void apply_top_k(float* logits, int vocab, int k) {
  if (k <= 0 || k >= vocab) return;
  std::vector<float> sorted(logits, logits + vocab);
  std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<float>());
  const float threshold = sorted[k - 1];
  for (int i = 0; i < vocab; ++i)
    if (logits[i] < threshold) logits[i] = kNegInf;
}

void apply_top_p(float* logits, int vocab, float p) {
  if (p >= 1.0f) return;
  std::vector<int> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  // Integer masses relative to the top logit (kernels/sampling_math.h: exact sums in any order, the
  // same the threshold search over the shards adds up).
  const float top = logits[order[0]];
  uint64_t total = 0;
  for (int i = 0; i < vocab; ++i) total += token_mass(logits[order[i]], top);
  // HF: remove tokens whose cumulative probability (ascending order) is <= 1 - p; equivalently
  // keep the descending prefix until the mass reaches p, always keeping the top token.
  int keep = vocab;
  uint64_t cumulative = 0;
  for (int i = 0; i < vocab; ++i) {
    cumulative += token_mass(logits[order[i]], top);
    if (nucleus_reached(cumulative, total, p)) {
      keep = i + 1;
      break;
    }
  }
  for (int i = keep; i < vocab; ++i) logits[order[i]] = kNegInf;
}

Sampler::Sampler(const SamplingParams& params, int allowed_vocab)
    : params_(params),
      allowed_vocab_(allowed_vocab),
      seed_(params.seed.has_value() ? *params.seed : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()) {}

DrawPlan Sampler::plan(const std::vector<int32_t>& context, int n_prompt, int32_t logit_row) {
  DrawPlan plan;
  plan.logit_row = logit_row;
  plan.allowed_vocab = allowed_vocab_;
  plan.temperature = params_.temperature;
  plan.top_p = params_.top_p;
  plan.noise_key = mix64(seed_ ^ mix64(draws_++));
  plan.want_log_norm = wants_logprob(params_) ? 1 : 0;
  // Plain greedy needs only each shard's argmax; anything else may need the candidates.
  plan.candidates = params_.temperature <= 0.0f && !wants_logprob(params_) ? 1 : kDrawCandidates;
  plan.edits = make_logit_edits(params_, context, n_prompt);
  return plan;
}

TokenChoice Sampler::choose(float* logits, int vocab, const std::vector<int32_t>& context, int n_prompt) {
  return choose_from_row(plan(context, n_prompt, 0), logits, vocab);
}

TokenChoice Sampler::choose_from_row(const DrawPlan& plan, float* row, int64_t vocab) const {
  process_row(row, 0, vocab, plan);
  const int n = static_cast<int>(vocab);
  TokenChoice choice;
  const int32_t argmax = static_cast<int32_t>(std::max_element(row, row + n) - row);
  choice.token = argmax;
  const float t = plan.temperature;
  if (t > 0.0f) {
    RaceLeader leader;  // the top token is always kept; entering it first prunes the rest
    race_enter(leader, row[argmax], t, plan.noise_key, argmax);
    const bool top_k_on = params_.top_k > 0 && params_.top_k < n;
    if (!top_k_on && plan.top_p >= 1.0f) {
      race_over(row, 0, n, t, plan.noise_key, leader);
    } else {
      std::vector<float> scaled(row, row + n);
      for (float& v : scaled) v /= t;
      apply_top_k(scaled.data(), n, params_.top_k);
      apply_top_p(scaled.data(), n, plan.top_p);
      for (int32_t i = 0; i < n; ++i)
        if (scaled[i] != kNegInf) race_enter(leader, row[i], t, plan.noise_key, i);
    }
    if (leader.entry.token >= 0) choice.token = leader.entry.token;
  }
  if (plan.want_log_norm) {
    const float m = row[argmax];
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(row[i] - m));
    const float log_norm = m + static_cast<float>(std::log(sum));
    choice.logprob = row[choice.token] - log_norm;
    const int top_n = std::min(params_.logprobs, n);
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_n, order.end(),
                      [&](int32_t a, int32_t b) { return ranks_before({row[a], a}, {row[b], b}); });
    for (int i = 0; i < top_n; ++i) choice.top.emplace_back(order[i], row[order[i]] - log_norm);
  }
  return choice;
}

namespace {
// The ranks' summaries of one draw merged: the global top kDrawCandidates (each rank listed its
// shard's best), the maximum, and how many ids were listed.
struct Merged {
  std::vector<TokenScore> cands;
  float max_logit = kNegInf;
  int64_t listed = 0;
};
Merged merge(const DrawSummary* per_rank, int ranks) {
  Merged out;
  for (int r = 0; r < ranks; ++r) {
    out.max_logit = std::max(out.max_logit, per_rank[r].max_logit);
    out.listed += per_rank[r].count;
    out.cands.insert(out.cands.end(), per_rank[r].top, per_rank[r].top + per_rank[r].count);
  }
  std::sort(out.cands.begin(), out.cands.end(), ranks_before);
  if (out.cands.size() > static_cast<std::size_t>(kDrawCandidates)) out.cands.resize(kDrawCandidates);
  return out;
}
// log sum exp of the processed logits over the whole row, from the shards' pieces.
float log_norm(const DrawSummary* per_rank, int ranks, float m) {
  double sum = 0;
  for (int r = 0; r < ranks; ++r)
    if (per_rank[r].max_logit != kNegInf)
      sum += per_rank[r].sum_exp * std::exp(static_cast<double>(per_rank[r].max_logit - m));
  return m + static_cast<float>(std::log(sum));
}
}  // namespace

TokenChoice score_from_summaries(const DrawPlan& plan, const DrawSummary* per_rank, int ranks, int top_n) {
  const Merged merged = merge(per_rank, ranks);
  const float norm = log_norm(per_rank, ranks, merged.max_logit);
  TokenChoice choice;
  choice.token = plan.score_token;
  choice.logprob = kNegInf;
  for (int r = 0; r < ranks; ++r)
    if (per_rank[r].score_found) choice.logprob = per_rank[r].score_value - norm;
  const int n = std::min<int>(top_n, static_cast<int>(merged.cands.size()));
  for (int i = 0; i < n; ++i) choice.top.emplace_back(merged.cands[i].token, merged.cands[i].value - norm);
  return choice;
}

DrawPlan score_plan(int32_t logit_row, int32_t token, int allowed_vocab, int top_n) {
  DrawPlan plan;
  plan.logit_row = logit_row;
  plan.allowed_vocab = allowed_vocab;
  plan.want_log_norm = 1;
  plan.score_token = token;
  plan.candidates = std::clamp(top_n, 1, kDrawCandidates);
  return plan;
}

std::optional<TokenChoice> Sampler::choose_from_summaries(const DrawPlan& plan, const DrawSummary* per_rank,
                                                          int ranks, int64_t vocab) const {
  const Merged merged = merge(per_rank, ranks);
  const std::vector<TokenScore>& cands = merged.cands;
  const float m = merged.max_logit;
  const int64_t listed = merged.listed;
  if (cands.empty()) return std::nullopt;
  const bool complete = listed >= vocab && listed <= kDrawCandidates;  // every id of the row is a candidate
  auto value_of = [&](int32_t token) {
    for (const TokenScore& c : cands)
      if (c.token == token) return c.value;
    return kNegInf;
  };

  TokenChoice choice;
  choice.token = cands[0].token;
  float chosen_value = cands[0].value;
  const float t = plan.temperature;
  if (t > 0.0f) {
    // The kept ids as a prefix of the candidates in the full-row path's order (scaled logit
    // descending, then id), when the candidates determine it. An id tying the last candidate's
    // scaled logit may be missing from the list: only the ids above it are known to be complete.
    std::vector<TokenScore> order;  // (scaled, token)
    for (const TokenScore& c : cands) order.push_back({c.value / t, c.token});
    std::sort(order.begin(), order.end(), ranks_before);
    std::vector<float> scaled;
    for (const TokenScore& o : order) scaled.push_back(o.value);
    std::size_t known = order.size();  // a prefix of the row's order
    if (!complete)
      while (known > 0 && scaled[known - 1] == scaled.back()) --known;
    std::size_t kept = order.size();
    const int k = params_.top_k;
    const bool top_k_on = k > 0 && k < vocab;
    if (top_k_on) {
      if (static_cast<std::size_t>(k) > known) return std::nullopt;
      const float threshold = scaled[k - 1];
      kept = k;
      while (kept < known && scaled[kept] >= threshold) ++kept;
      if (kept == known && known < order.size() && !(scaled.back() < threshold))
        return std::nullopt;  // ties run past the list
    }
    if (plan.top_p < 1.0f) {
      const float top = scaled[0];  // the row's largest scaled logit
      std::size_t nucleus = 0;
      uint64_t cumulative = 0;
      if (top_k_on || complete) {  // the kept set's mass is the candidates' (exact)
        uint64_t total = 0;
        for (std::size_t i = 0; i < kept; ++i) total += token_mass(scaled[i], top);
        for (std::size_t i = 0; i < kept && nucleus == 0; ++i) {
          cumulative += token_mass(scaled[i], top);
          if (nucleus_reached(cumulative, total, plan.top_p)) nucleus = i + 1;
        }
        if (nucleus == 0) nucleus = kept;
      } else {
        // The whole row's mass from the shards' float sums: within a relative 1e-5 of the exact
        // integer total, so a cut clear of that margin is the exact path's cut; one inside it (or
        // past the candidates) goes to the threshold search.
        double approx = 0;
        for (int r = 0; r < ranks; ++r)
          if (per_rank[r].max_logit != kNegInf)
            approx += per_rank[r].sum_exp_t *
                      std::exp(static_cast<double>(per_rank[r].max_logit / t) - static_cast<double>(top));
        approx *= static_cast<double>(uint64_t{1} << kMassBits);
        constexpr double kMargin = 1e-5;
        const double want = static_cast<double>(plan.top_p) - 1e-6;
        for (std::size_t i = 0; i < known && nucleus == 0; ++i) {
          cumulative += token_mass(scaled[i], top);
          const double c = static_cast<double>(cumulative);
          if (c >= want * approx * (1 + kMargin)) nucleus = i + 1;
          else if (!(c < want * approx * (1 - kMargin))) return std::nullopt;  // too close to call
        }
        if (nucleus == 0) return std::nullopt;  // wider than the candidates
      }
      kept = nucleus;
    }
    if (top_k_on || plan.top_p < 1.0f || complete) {
      std::vector<int32_t> tokens;
      for (std::size_t i = 0; i < kept; ++i) tokens.push_back(order[i].token);
      choice.token = race(tokens, value_of, t, plan.noise_key);
      chosen_value = value_of(choice.token);
    } else {  // every id races: the ranks ran it over their shards
      const DrawSummary* best = nullptr;
      for (int r = 0; r < ranks; ++r) {
        const DrawSummary& s = per_rank[r];
        if (s.noise_best.token < 0) continue;
        if (!best || s.noise_score > best->noise_score ||
            (s.noise_score == best->noise_score && s.noise_best.token < best->noise_best.token))
          best = &s;  // race_enter's order: higher score, then lower id
      }
      if (!best) return std::nullopt;
      choice.token = best->noise_best.token;
      chosen_value = best->noise_best.value;
    }
  }
  if (plan.want_log_norm) {
    const float norm = log_norm(per_rank, ranks, m);
    choice.logprob = chosen_value - norm;
    const int top_n = std::min<int>(params_.logprobs, static_cast<int>(cands.size()));
    if (top_n < params_.logprobs && !complete) return std::nullopt;
    for (int i = 0; i < top_n; ++i) choice.top.emplace_back(cands[i].token, cands[i].value - norm);
  }
  return choice;
}

std::optional<DrawSearch> Sampler::search_for(const DrawPlan& plan, const DrawSummary* per_rank, int ranks,
                                               int64_t vocab) const {
  const bool top_k_on = params_.top_k > 0 && params_.top_k < vocab;
  if (!(plan.temperature > 0.0f) || (!top_k_on && !(plan.top_p < 1.0f))) return std::nullopt;
  const Merged merged = merge(per_rank, ranks);
  if (merged.cands.size() < static_cast<std::size_t>(params_.logprobs)) return std::nullopt;  // a tiny row
  DrawSearch search(plan, params_.top_k, per_rank, ranks, vocab);
  if (search.failed()) return std::nullopt;
  return search;
}

std::optional<TokenChoice> Sampler::choose_from_search(const DrawPlan& plan, const DrawSearch& search,
                                                       const DrawSummary* per_rank, int ranks) const {
  if (!search.settled()) return std::nullopt;
  TokenChoice choice;
  choice.token = search.winner().token;
  if (plan.want_log_norm) {
    const Merged merged = merge(per_rank, ranks);
    const float norm = log_norm(per_rank, ranks, merged.max_logit);
    choice.logprob = search.winner().value - norm;
    const int top_n = std::min<int>(params_.logprobs, static_cast<int>(merged.cands.size()));
    for (int i = 0; i < top_n; ++i) choice.top.emplace_back(merged.cands[i].token, merged.cands[i].value - norm);
  }
  return choice;
}

}  // namespace gptj
