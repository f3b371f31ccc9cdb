// Step watchdog (every rank of a multi-rank job): a thread that ends this process when one model
// step takes longer than its limit — the sign that a peer rank is stopped, hung or unreachable and a
// collective will never return — or when the health probe (the backend's NCCL async-error query)
// reports a failure. Exiting without MPI_Finalize makes mpirun/srun end every other rank, so the job
// stops with a message instead of hanging. Output already written stays (batch writes each line as
// it finishes).
//
// The limit of a step of `tokens` tokens is base + kAllowanceFactor * cost * tokens, where cost is
// the seconds per token this rank measured on its recent steps (the largest recent figure, decaying
// slowly), or, before any step completed, a conservative prior from the model's size. So with the
// default base of 15 s a stopped rank is found within ~15 s of decode steps, while a 4096-token CPU
// prefill of GPT-J-6B (minutes) is never taken for a hang.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace gptj {

class StepWatchdog {
 public:
  // base_timeout_s <= 0 disables the watchdog. `who` is "rank R on HOST", used in the message.
  // prior_seconds_per_token: the cost assumed until a step has been measured.
  StepWatchdog(double base_timeout_s, std::string who, double prior_seconds_per_token);
  ~StepWatchdog();
  StepWatchdog(const StepWatchdog&) = delete;
  StepWatchdog& operator=(const StepWatchdog&) = delete;

  // Polled from the watchdog thread about once a second, steps or not: a non-empty answer is a
  // fatal asynchronous failure and ends the process with that message. Set before the first step.
  void set_health_probe(std::function<std::string()> probe);

  // Main thread, before the step's collectives.
  void begin_step(uint64_t step, int tokens);
  void end_step();  // main thread, after them: the step's cost per token enters the estimate

  // The limit a step of `tokens` tokens gets now (seconds).
  double limit_for(int tokens) const;
  static constexpr double kAllowanceFactor = 4.0;
  // Each completed step lowers the remembered worst cost per token by this factor at most.
  static constexpr double kCostDecay = 0.98;

 private:
  void watch();
  [[noreturn]] void end_job(const std::string& why);

  double base_s_;
  std::string who_;
  std::atomic<double> cost_per_token_s_;
  std::atomic<int64_t> step_started_ns_{0};  // 0: no step in progress
  std::atomic<uint64_t> step_{0};
  std::atomic<int> step_tokens_{0};
  std::atomic<double> limit_s_{0};  // of the step in progress
  std::function<std::string()> probe_;
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace gptj
