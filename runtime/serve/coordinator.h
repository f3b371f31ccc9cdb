// The coordinator: rank 0's main thread loop between the HTTP threads and the scheduler.
// HTTP threads hand it jobs (submit, cancel, request_stop: thread-safe, never block on the
// model); the main thread runs run(), the only caller of the Engine (one replica's Scheduler or the
// data-parallel front-end over several, launcher/replicas.h) and therefore of MPI
// (MPI_THREAD_FUNNELED). While requests are in flight it steps the scheduler continuously; when
// nothing is in flight it sleeps on a condition variable, so an idle rank 0 uses no CPU, waking
// every few seconds only to send the worker ranks a keepalive (ModelRunner::keepalive_if_due).
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/generate/engine.h"
#include "runtime/serve/metrics.h"

namespace gptj {

using SteadyClock = std::chrono::steady_clock;

// One HTTP request's work: one GenerationRequest per prompt (with its n samples) or per choice. Created by a request worker; after
// submit() its callbacks run on the coordinator thread only. `cancelled` may be set by any thread.
class Job {
 public:
  virtual ~Job() = default;
  // One event of choice `index` (see `requests`); the last one has event.finish set.
  virtual void on_event(int index, const GenerationEvent& event) = 0;
  // The job ends without finishing (scheduler refused it, timeout, shutdown). Called at most once,
  // and no on_event follows.
  virtual void on_failed(int http_status, const std::string& type, const std::string& message) = 0;

  // Handles are assigned by the coordinator; a request of n samples answers n consecutive choices
  // (on_event's index: requests before it count their n each).
  std::vector<GenerationRequest> requests;
  std::size_t choices() const {
    std::size_t n = 0;
    for (const auto& r : requests) n += static_cast<std::size_t>(std::max(r.n, 1));
    return n;
  }
  SteadyClock::time_point accepted_at = SteadyClock::now();
  SteadyClock::time_point deadline = SteadyClock::time_point::max();
  std::atomic<bool> cancelled{false};  // the client went away: stop and free its KV blocks
};

struct CoordinatorOptions {
  int max_queued = 256;                         // requests waiting to run, then 429
  std::chrono::milliseconds drain_timeout{30000};  // after request_stop, in-flight work gets this long
};

enum class SubmitResult { kAccepted, kQueueFull, kShuttingDown };

class Coordinator {
 public:
  Coordinator(ServerMetrics& metrics, const CoordinatorOptions& options);

  // Any thread.
  SubmitResult submit(std::shared_ptr<Job> job);
  void wake();          // call after setting job->cancelled
  void request_stop();  // stop taking jobs; finish in-flight ones (bounded by drain_timeout)
  bool stopping() const { return stop_requested_.load(); }

  // Main thread of rank 0: serves jobs until request_stop() and the drain are done.
  void run(Engine& engine);

 private:
  struct Active {  // one scheduled choice
    std::shared_ptr<Job> job;
    int index = 0;
    bool first_token_seen = false;
    SteadyClock::time_point last_token;
  };
  void admit(Engine& engine, std::vector<std::shared_ptr<Job>>& incoming);
  void end_job(Engine& engine, Job& job, int status, const std::string& type, const std::string& message);
  void check_cancel_and_deadlines(Engine& engine);
  void dispatch(const std::vector<GenerationEvent>& events);
  void publish_gauges(const Engine& engine);

  ServerMetrics& metrics_;
  CoordinatorOptions options_;

  std::mutex mu_;  // guards inbox_ and wake_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> inbox_;
  bool wake_ = false;
  std::atomic<bool> stop_requested_{false};
  std::atomic<int> waiting_in_scheduler_{0};  // published by run() for submit()'s 429 check

  // Coordinator thread only.
  uint64_t next_handle_ = 1;
  std::unordered_map<uint64_t, Active> active_;
};

}  // namespace gptj
