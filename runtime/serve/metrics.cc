#include "runtime/serve/metrics.h"

#include <algorithm>
#include <fmt/format.h>

namespace gptj {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  // First bucket whose upper bound holds the value; past the last bound is the +Inf bucket.
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, count_);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, sum_, name, count_);
}

ServerMetrics::ServerMetrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256}) {}

void ServerMetrics::count_request(int http_status) {
  std::lock_guard lock(mu_);
  ++requests_by_status_[http_status];
}

void ServerMetrics::add_prompt_tokens(uint64_t n) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += n;
}

void ServerMetrics::add_generated_tokens(uint64_t n) {
  std::lock_guard lock(mu_);
  generated_tokens_ += n;
}

void ServerMetrics::observe_time_to_first_token(double seconds) {
  std::lock_guard lock(mu_);
  ttft_.observe(seconds);
}

void ServerMetrics::observe_inter_token_latency(double seconds) {
  std::lock_guard lock(mu_);
  itl_.observe(seconds);
}

void ServerMetrics::observe_step(int batch_sequences) {
  std::lock_guard lock(mu_);
  ++steps_;
  batch_size_.observe(batch_sequences);
  max_running_ = std::max(max_running_, batch_sequences);
}

void ServerMetrics::set_gauges(const SchedulerGauges& gauges) {
  std::lock_guard lock(mu_);
  gauges_ = gauges;
  max_running_ = std::max(max_running_, gauges.running);
}

void ServerMetrics::set_ready(bool ready) {
  std::lock_guard lock(mu_);
  ready_ = ready;
}

std::string ServerMetrics::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
  };
  out += "# HELP gptj_requests_total HTTP requests answered, by status code.\n"
         "# TYPE gptj_requests_total counter\n";
  for (const auto& [status, count] : requests_by_status_)
    out += fmt::format("gptj_requests_total{{status=\"{}\"}} {}\n", status, count);
  metric("gptj_ready", "gauge", "1 when the model is loaded on every rank.", ready_ ? 1 : 0);
  metric("gptj_prompt_tokens_total", "counter", "Prompt tokens of accepted completions.", prompt_tokens_);
  metric("gptj_generated_tokens_total", "counter", "Tokens generated.", generated_tokens_);
  metric("gptj_model_steps_total", "counter", "Model steps run.", steps_);
  metric("gptj_queue_depth", "gauge", "Requests accepted and not yet running.", gauges_.queue_depth);
  metric("gptj_running_sequences", "gauge", "Sequences in the running batch.", gauges_.running);
  metric("gptj_running_sequences_max", "gauge", "Most sequences ever in one batch.", max_running_);
  metric("gptj_kv_blocks_used", "gauge", "KV cache blocks in use.", gauges_.kv_blocks_used);
  metric("gptj_kv_blocks_free", "gauge", "KV cache blocks free.", gauges_.kv_blocks_free);
  metric("gptj_preemptions_total", "counter", "Sequences preempted for KV blocks.", gauges_.preemptions);
  metric("gptj_prefix_cache_hit_tokens_total", "counter", "Prompt tokens taken from the prefix cache.",
         gauges_.prefix_hit_tokens);
  auto per_replica = [&](const char* name, const char* type, const char* help, auto field) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    for (std::size_t r = 0; r < gauges_.replicas.size(); ++r)
      out += fmt::format("{}{{replica=\"{}\"}} {}\n", name, r, field(gauges_.replicas[r]));
  };
  per_replica("gptj_replica_ready", "gauge", "1 when the replica has loaded and reported.",
              [](const ReplicaStats& s) { return s.ready ? 1 : 0; });
  per_replica("gptj_replica_queue_depth", "gauge", "Sequences given to the replica, not yet running.",
              [](const ReplicaStats& s) { return s.waiting; });
  per_replica("gptj_replica_running_sequences", "gauge", "Sequences in the replica's running batch.",
              [](const ReplicaStats& s) { return s.running; });
  per_replica("gptj_replica_kv_blocks_used", "gauge", "The replica's KV cache blocks in use.",
              [](const ReplicaStats& s) { return s.kv_blocks_used; });
  per_replica("gptj_replica_kv_blocks_free", "gauge", "The replica's KV cache blocks free.",
              [](const ReplicaStats& s) { return s.kv_blocks_free; });
  per_replica("gptj_replica_preemptions_total", "counter", "The replica's sequences preempted for KV blocks.",
              [](const ReplicaStats& s) { return s.preemptions; });
  per_replica("gptj_replica_prefix_cache_hit_tokens_total", "counter",
              "Prompt tokens the replica took from its prefix cache.",
              [](const ReplicaStats& s) { return s.prefix_hit_tokens; });
  per_replica("gptj_replica_sequences_finished_total", "counter", "Sequences the replica finished.",
              [](const ReplicaStats& s) { return s.sequences_finished; });
  per_replica("gptj_replica_generated_tokens_total", "counter", "Tokens the replica sampled.",
              [](const ReplicaStats& s) { return s.tokens_generated; });
  out += "# HELP gptj_time_to_first_token_seconds From request accepted to its first token.\n"
         "# TYPE gptj_time_to_first_token_seconds histogram\n";
  ttft_.render("gptj_time_to_first_token_seconds", out);
  out += "# HELP gptj_inter_token_latency_seconds Between consecutive tokens of one sequence.\n"
         "# TYPE gptj_inter_token_latency_seconds histogram\n";
  itl_.render("gptj_inter_token_latency_seconds", out);
  out += "# HELP gptj_step_batch_size Sequences given a token by one model step.\n"
         "# TYPE gptj_step_batch_size histogram\n";
  batch_size_.render("gptj_step_batch_size", out);
  return out;
}

}  // namespace gptj
