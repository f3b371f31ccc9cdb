#include "parallel/watchdog.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace gptj {

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

StepWatchdog::StepWatchdog(double base_timeout_s, std::string who, double prior_seconds_per_token)
    : base_s_(base_timeout_s), who_(std::move(who)), cost_per_token_s_(std::max(0.0, prior_seconds_per_token)) {
  if (base_s_ > 0) thread_ = std::thread([this] { watch(); });
}

StepWatchdog::~StepWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StepWatchdog::set_health_probe(std::function<std::string()> probe) {
  std::lock_guard<std::mutex> lock(mutex_);
  probe_ = std::move(probe);
}

double StepWatchdog::limit_for(int tokens) const {
  return base_s_ + kAllowanceFactor * cost_per_token_s_.load() * std::max(tokens, 1);
}

void StepWatchdog::begin_step(uint64_t step, int tokens) {
  wait_started_ns_ = 0;
  step_ = step;
  step_tokens_ = tokens;
  limit_s_ = limit_for(tokens);
  step_started_ns_ = now_ns();
}

void StepWatchdog::end_step() {
  const int64_t started = step_started_ns_.exchange(0);
  if (started == 0) return;
  const double measured = (now_ns() - started) / 1e9 / std::max(step_tokens_.load(), 1);
  cost_per_token_s_ = std::max(measured, kCostDecay * cost_per_token_s_.load());
}

double StepWatchdog::startup_wait_limit(double load_seconds, double shard_bytes) const {
  return rank0_silence_limit() +
         std::max(kAllowanceFactor * std::max(load_seconds, 0.0), std::max(shard_bytes, 0.0) / kSlowReadBytesPerS);
}

void StepWatchdog::begin_wait(Wait kind, double limit_s) {
  wait_kind_ = kind;
  wait_limit_s_ = limit_s;
  wait_started_ns_ = now_ns();
}

void StepWatchdog::end_wait() { wait_started_ns_ = 0; }

void StepWatchdog::end_job(const std::string& why) {
  std::fprintf(stderr, "%s: %s; ending the job\n", who_.c_str(), why.c_str());
  std::fflush(stderr);
  // No MPI from this thread (FUNNELED) and the main thread is stuck in a collective: leave now;
  // the launcher sees a rank exit without finalizing and ends the others.
  std::_Exit(3);
}

void StepWatchdog::watch() {
  const auto poll = std::chrono::milliseconds(std::clamp<int64_t>(static_cast<int64_t>(base_s_ * 50), 50, 1000));
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_cv_.wait_for(lock, poll, [this] { return stopping_; })) {
    if (probe_) {
      const std::string failure = probe_();
      if (!failure.empty()) end_job(failure);
    }
    check_wait();
    const int64_t started = step_started_ns_;
    const double limit = limit_s_;
    if (started == 0 || (now_ns() - started) / 1e9 < limit) continue;
    end_job(fmt::format("step {} ({} tokens) did not complete within {:.0f} s (--step-timeout {:.0f} s + {:.1f} x "
                        "the measured cost per token): {} is stopped, hung or unreachable",
                        step_.load(), step_tokens_.load(), limit, base_s_, kAllowanceFactor, step_peers_));
  }
}

void StepWatchdog::check_wait() {
  const int64_t started = wait_started_ns_;
  const double limit = wait_limit_s_;
  if (started == 0 || (now_ns() - started) / 1e9 < limit) return;
  const std::string& leader = leader_name_;
  std::string why;
  switch (wait_kind_.load()) {
    case Wait::kRank0:
      why = fmt::format("no word from {} for {:.0f} s (stopped, hung or unreachable)", leader, limit);
      break;
    case Wait::kRank0Startup:
      why = fmt::format("no word from {} for {:.0f} s after this rank loaded its shard ({} stopped, hung or "
                        "unreachable while loading)", leader, limit, leader);
      break;
    case Wait::kKeepaliveSent:
      why = fmt::format("a keepalive to the other ranks did not complete within {:.0f} s: {} is stopped, "
                        "hung or unreachable", limit, step_peers_);
      break;
  }
  end_job(why);
}

}  // namespace gptj
