#include "parallel/watchdog.h"

#include <unistd.h>

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

StepWatchdog::StepWatchdog(double timeout_s, std::string who) : timeout_s_(timeout_s), who_(std::move(who)) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { watch(); });
}

StepWatchdog::~StepWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StepWatchdog::begin_step(uint64_t step, int tokens) {
  step_ = step;
  limit_s_ = timeout_s_ + kSecondsPerToken * tokens;
  step_started_ns_ = now_ns();
}

void StepWatchdog::end_step() { step_started_ns_ = 0; }

void StepWatchdog::watch() {
  const auto poll = std::chrono::milliseconds(std::max<int64_t>(50, static_cast<int64_t>(timeout_s_ * 100)));
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_cv_.wait_for(lock, poll, [this] { return stopping_; })) {
    const int64_t started = step_started_ns_;
    const double limit = limit_s_;
    if (started == 0 || (now_ns() - started) / 1e9 < limit) continue;
    std::fprintf(stderr,
                 "%s: step %llu did not complete within %.0f s (--step-timeout): another rank is "
                 "stopped, hung or unreachable; ending the job\n",
                 who_.c_str(), static_cast<unsigned long long>(step_.load()), limit);
    std::fflush(stderr);
    // No MPI from this thread (FUNNELED) and the main thread is stuck in a collective: leave now;
    // the launcher sees a rank exit without finalizing and ends the others.
    std::_Exit(3);
  }
}

}  // namespace gptj
