// Step watchdog (every rank): a thread that ends this process when one model step takes longer
// than the timeout — the sign that a peer rank is stopped, hung or unreachable and a collective will
// never return. Exiting without MPI_Finalize makes mpirun/srun end every other rank, so the job
// stops with a message instead of hanging. Output already written stays (batch writes each line
// as it finishes).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace gptj {

class StepWatchdog {
 public:
  // timeout_s <= 0 disables the watchdog. `who` is "rank R on HOST", used in the message.
  StepWatchdog(double timeout_s, std::string who);
  ~StepWatchdog();
  StepWatchdog(const StepWatchdog&) = delete;
  StepWatchdog& operator=(const StepWatchdog&) = delete;

  // Main thread, before the step's collectives. A step of `tokens` tokens may take
  // timeout_s + tokens * kSecondsPerToken: a long prefill on a slow CPU is not a hang.
  void begin_step(uint64_t step, int tokens);
  static constexpr double kSecondsPerToken = 0.25;
  void end_step();                 // main thread, after them

 private:
  void watch();

  double timeout_s_;
  std::string who_;
  std::atomic<int64_t> step_started_ns_{0};  // 0: no step in progress
  std::atomic<uint64_t> step_{0};
  std::atomic<double> limit_s_{0};  // of the step in progress
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace gptj
