// Server metrics in Prometheus text format (rank 0 only).
// Written by the coordinator thread (tokens, latencies, gauges after each step) and by the HTTP I/O
// threads and request workers (request counts by status); read by an I/O thread for GET /metrics. All methods are
// thread-safe (one mutex: updates are a few per step, far from contended).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/generate/engine.h"

namespace gptj {

// A Prometheus histogram: cumulative buckets with upper bounds, plus sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends the `name_bucket`, `name_sum` and `name_count` lines.
  void render(const std::string& name, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Gauges the coordinator publishes after every step.
struct SchedulerGauges {
  int queue_depth = 0;       // requests accepted but not yet running (queue + scheduler waiting)
  int running = 0;           // sequences in the running batch
  int kv_blocks_used = 0;
  int kv_blocks_free = 0;
  uint64_t preemptions = 0;
  uint64_t prefix_hit_tokens = 0;  // prompt tokens whose keys/values came from the prefix cache
  // Per data-parallel replica (launcher/replicas.h), rendered with a `replica` label; the fields
  // above are their sums.
  std::vector<ReplicaStats> replicas;
};

class ServerMetrics {
 public:
  ServerMetrics();

  void count_request(int http_status);         // any thread
  void add_prompt_tokens(uint64_t n);          // coordinator
  void add_generated_tokens(uint64_t n);       // coordinator
  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds);
  void observe_step(int batch_sequences);      // sequences that got a token in one model step
  void set_gauges(const SchedulerGauges& gauges);
  void set_ready(bool ready);

  std::string render() const;  // Prometheus text exposition format 0.0.4

 private:
  mutable std::mutex mu_;
  std::map<int, uint64_t> requests_by_status_;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0, steps_ = 0;
  int max_running_ = 0;
  bool ready_ = false;
  SchedulerGauges gauges_;
  Histogram ttft_, itl_, batch_size_;
};

}  // namespace gptj
