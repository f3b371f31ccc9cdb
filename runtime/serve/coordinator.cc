#include "runtime/serve/coordinator.h"

#include <unordered_set>

#include "runtime/core/error.h"

namespace gptj {

Coordinator::Coordinator(ServerMetrics& metrics, const CoordinatorOptions& options)
    : metrics_(metrics), options_(options) {}

SubmitResult Coordinator::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mu_);
    if (stop_requested_.load()) return SubmitResult::kShuttingDown;
    // Queued = not yet taken by the loop + waiting inside the scheduler (counted in choices).
    std::size_t queued = waiting_in_scheduler_.load();
    for (const auto& pending : inbox_) queued += pending->choices();
    if (queued + job->choices() > static_cast<std::size_t>(options_.max_queued))
      return SubmitResult::kQueueFull;
    inbox_.push_back(std::move(job));
  }
  cv_.notify_one();
  return SubmitResult::kAccepted;
}

void Coordinator::wake() {
  {
    std::lock_guard lock(mu_);
    wake_ = true;
  }
  cv_.notify_one();
}

void Coordinator::request_stop() {
  {
    std::lock_guard lock(mu_);
    stop_requested_ = true;
  }
  cv_.notify_one();
}

void Coordinator::admit(Engine& engine, std::vector<std::shared_ptr<Job>>& incoming) {
  for (auto& job : incoming) {
    if (job->cancelled) continue;  // gone before it started
    std::vector<uint64_t> submitted;
    try {
      int choice = 0;  // a request of n samples answers choices choice .. choice + n - 1
      for (GenerationRequest& request : job->requests) {
        const int n = std::max(request.n, 1);
        request.handle = next_handle_;
        next_handle_ += static_cast<uint64_t>(n);
        engine.submit(request);
        for (int k = 0; k < n; ++k) {
          submitted.push_back(request.handle + k);
          active_[request.handle + k] = Active{job, choice + k, false, SteadyClock::now()};
        }
        choice += n;
        metrics_.add_prompt_tokens(request.prompt.size());
      }
    } catch (const Error& e) {
      // The API checks requests first; this is the scheduler's own limit (e.g. the KV cache).
      for (uint64_t handle : submitted) {
        engine.cancel(handle);
        active_.erase(handle);
      }
      job->on_failed(400, "invalid_request_error", e.what());
    }
  }
  incoming.clear();
}

void Coordinator::end_job(Engine& engine, Job& job, int status, const std::string& type,
                          const std::string& message) {
  bool any = false;
  for (auto it = active_.begin(); it != active_.end();) {
    if (it->second.job.get() == &job) {
      engine.cancel(it->first);
      it = active_.erase(it);
      any = true;
    } else {
      ++it;
    }
  }
  if (any) job.on_failed(status, type, message);
}

void Coordinator::check_cancel_and_deadlines(Engine& engine) {
  const auto now = SteadyClock::now();
  std::unordered_set<Job*> seen;
  std::vector<std::shared_ptr<Job>> ending;
  for (const auto& [handle, active] : active_) {
    Job* job = active.job.get();
    if (!seen.insert(job).second) continue;
    if (job->cancelled || now >= job->deadline) ending.push_back(active.job);
  }
  for (const auto& job : ending) {
    if (job->cancelled)
      end_job(engine, *job, 499, "cancelled", "the client closed the connection");
    else
      end_job(engine, *job, 504, "timeout_error", "the request took longer than the server's request timeout");
  }
}

void Coordinator::dispatch(const std::vector<GenerationEvent>& events) {
  const auto now = SteadyClock::now();
  int with_token = 0;
  for (const auto& event : events) {
    auto it = active_.find(event.handle);
    if (it == active_.end()) continue;  // cancelled by us: its job already ended
    Active& active = it->second;
    if (event.choice.token >= 0) {
      ++with_token;
      metrics_.add_generated_tokens(1);
      if (!active.first_token_seen)
        metrics_.observe_time_to_first_token(std::chrono::duration<double>(now - active.job->accepted_at).count());
      else
        metrics_.observe_inter_token_latency(std::chrono::duration<double>(now - active.last_token).count());
      active.first_token_seen = true;
      active.last_token = now;
    }
    std::shared_ptr<Job> job = active.job;
    const int index = active.index;
    if (event.finish != FinishReason::kNone) active_.erase(it);
    job->on_event(index, event);
  }
  if (with_token > 0) metrics_.observe_step(with_token);
}

void Coordinator::publish_gauges(const Engine& engine) {
  SchedulerGauges gauges;
  for (int r = 0; r < engine.replicas(); ++r) gauges.replicas.push_back(engine.stats(r));
  const ReplicaStats total = engine.total();
  gauges.running = total.running;
  gauges.kv_blocks_used = total.kv_blocks_used;
  gauges.kv_blocks_free = total.kv_blocks_free;
  gauges.preemptions = total.preemptions;
  gauges.prefix_hit_tokens = total.prefix_hit_tokens;
  waiting_in_scheduler_ = total.waiting;
  std::size_t inbox = 0;
  {
    std::lock_guard lock(mu_);
    for (const auto& job : inbox_) inbox += job->choices();
  }
  gauges.queue_depth = total.waiting + static_cast<int>(inbox);
  metrics_.set_gauges(gauges);
}

void Coordinator::run(Engine& engine) {
  std::vector<std::shared_ptr<Job>> incoming;
  std::optional<SteadyClock::time_point> drain_deadline;
  publish_gauges(engine);
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (active_.empty() && engine.idle()) {
        // Nothing in flight: sleep until a job, a stop request or a wake-up arrives, or until the
        // workers are due a keepalive (they take rank 0's silence for a hang).
        const auto woken = [&] { return !inbox_.empty() || wake_ || stop_requested_.load(); };
        const SteadyClock::time_point due = engine.keepalive_due();
        if (due == SteadyClock::time_point::max())
          cv_.wait(lock, woken);
        else
          cv_.wait_until(lock, due, woken);
      }
      wake_ = false;
      incoming.assign(inbox_.begin(), inbox_.end());
      inbox_.clear();
    }
    engine.keepalive_if_due();
    admit(engine, incoming);
    if (stop_requested_ && !drain_deadline) drain_deadline = SteadyClock::now() + options_.drain_timeout;
    if (drain_deadline && SteadyClock::now() >= *drain_deadline) {
      std::vector<std::shared_ptr<Job>> jobs;
      for (const auto& [handle, active] : active_) jobs.push_back(active.job);
      for (const auto& job : jobs)
        end_job(engine, *job, 503, "server_shutting_down", "the server is shutting down");
    }
    check_cancel_and_deadlines(engine);
    if (!engine.idle()) {
      std::vector<GenerationEvent> events = engine.step();
      publish_gauges(engine);  // before the answers go out, so a client then sees current gauges
      dispatch(events);
    }
    publish_gauges(engine);
    if (stop_requested_ && active_.empty() && engine.idle()) {
      std::lock_guard lock(mu_);
      if (inbox_.empty()) break;  // submit() refuses new jobs once stop is requested
    }
  }
}

}  // namespace gptj
