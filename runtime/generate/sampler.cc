#include "runtime/generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

namespace gptj {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}

Sampler::Sampler(const SamplingParams& params, int allowed_vocab)
    : params_(params),
      allowed_vocab_(allowed_vocab),
      rng_(params.seed.has_value() ? *params.seed : std::random_device{}()) {}

void apply_repetition_penalty(float* logits, const std::vector<int32_t>& context, float penalty) {
  if (penalty == 1.0f) return;
  std::vector<int32_t> seen(context);
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  for (int32_t id : seen) logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
}

void apply_presence_frequency(float* logits, const std::vector<int32_t>& generated, float presence,
                              float frequency) {
  if (presence == 0.0f && frequency == 0.0f) return;
  std::map<int32_t, int> counts;
  for (int32_t id : generated) ++counts[id];
  for (const auto& [id, count] : counts) logits[id] -= presence + frequency * static_cast<float>(count);
}

void apply_no_repeat_ngram(float* logits, const std::vector<int32_t>& context, int n) {
  const int len = static_cast<int>(context.size());
  if (n <= 0 || len + 1 < n) return;
  // Ban every token that followed an earlier occurrence of the last n-1 tokens.
  for (int start = 0; start + n <= len; ++start) {
    bool match = true;
    for (int i = 0; i < n - 1 && match; ++i) match = context[start + i] == context[len - n + 1 + i];
    if (match) logits[context[start + n - 1]] = kNegInf;
  }
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
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const float max_logit = logits[order[0]];
  double total = 0;
  std::vector<double> probs(vocab);
  for (int i = 0; i < vocab; ++i) total += probs[i] = std::exp(static_cast<double>(logits[order[i]] - max_logit));
  // HF: remove tokens whose cumulative probability (ascending order) is <= 1 - p; equivalently
  // keep the descending prefix until the mass reaches p, always keeping the top token.
  double cumulative = 0;
  int keep = vocab;
  for (int i = 0; i < vocab; ++i) {
    cumulative += probs[i] / total;
    if (cumulative >= p - 1e-6) {  // tolerance: p arrives as float (0.8f = 0.8000000119)
      keep = i + 1;
      break;
    }
  }
  for (int i = keep; i < vocab; ++i) logits[order[i]] = kNegInf;
}

TokenChoice Sampler::choose(float* logits, int vocab, const std::vector<int32_t>& context,
                            int n_prompt) {
  for (int i = allowed_vocab_; i < vocab; ++i) logits[i] = kNegInf;
  apply_repetition_penalty(logits, context, params_.repetition_penalty);
  apply_no_repeat_ngram(logits, context, params_.no_repeat_ngram_size);
  const std::vector<int32_t> generated(context.begin() + n_prompt, context.end());
  apply_presence_frequency(logits, generated, params_.presence_penalty, params_.frequency_penalty);

  // Log-probabilities of the processed distribution, for logprobs reporting.
  const float max_logit = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  const float log_norm = max_logit + static_cast<float>(std::log(sum));

  TokenChoice choice;
  if (params_.temperature <= 0.0f) {
    choice.token = static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  } else {
    std::vector<float> scaled(logits, logits + vocab);
    for (float& v : scaled) v /= params_.temperature;
    apply_top_k(scaled.data(), vocab, params_.top_k);
    apply_top_p(scaled.data(), vocab, params_.top_p);
    const float m = *std::max_element(scaled.begin(), scaled.end());
    std::vector<double> weights(vocab);
    for (int i = 0; i < vocab; ++i) weights[i] = std::exp(static_cast<double>(scaled[i] - m));
    std::discrete_distribution<int> pick(weights.begin(), weights.end());
    choice.token = pick(rng_);
  }
  choice.logprob = logits[choice.token] - log_norm;
  if (params_.logprobs > 0) {
    const int n = std::min(params_.logprobs, vocab);
    std::vector<int> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + n, order.end(),
                      [&](int a, int b) { return logits[a] > logits[b]; });
    for (int i = 0; i < n; ++i) choice.top.emplace_back(order[i], logits[order[i]] - log_norm);
  }
  return choice;
}

}  // namespace gptj
