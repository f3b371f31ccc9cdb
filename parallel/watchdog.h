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
//
// Between steps a rank may also be in a timed *wait* (begin_wait .. end_wait), which is not a step
// (no step number, no cost measured). Ranks > 0 wait for rank 0's next plan; rank 0 promises one at
// least every kKeepaliveIntervalS seconds (ModelRunner::keepalive_if_due sends an empty keepalive
// plan when it has sent nothing for that long), so silence for rank0_silence_limit() =
// base + 2 x kKeepaliveIntervalS seconds means rank 0 is stopped, hung or unreachable: the job ends
// even when rank 0 stops while no step is in flight (an idle server, a batch job between steps).
// The first wait, while rank 0 may still be loading its shard, gets a longer limit
// (startup_wait_limit). Rank 0 times the sending of a keepalive the same way.
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
  // Who the waits for "rank 0" wait for, in messages (default "rank 0"; a replica's workers wait
  // for their replica's leader: "rank 2 (the leader of replica 1)"). Set before the first step.
  void set_leader_name(std::string name) { leader_name_ = std::move(name); }
  // Who else takes part in this rank's steps, in messages: "the other rank of this step (rank 2 on
  // vm)" (default "another rank"). Set before the first step.
  void set_step_peers(std::string peers) { step_peers_ = std::move(peers); }

  // Main thread, before the step's collectives (ends a wait in progress).
  void begin_step(uint64_t step, int tokens);
  void end_step();  // main thread, after them: the step's cost per token enters the estimate

  // What a rank waits for outside a step (each names itself in the message when its limit passes).
  enum class Wait {
    kRank0,            // ranks > 0: rank 0's next plan or keepalive
    kRank0Startup,     // ranks > 0: rank 0's first word after this rank loaded its shard
    kKeepaliveSent,    // rank 0: a keepalive plan to the other ranks to complete
  };
  // Main thread: a wait of `kind` starts now and ends the process when it lasts limit_s seconds;
  // end_wait() or begin_step() ends it.
  void begin_wait(Wait kind, double limit_s);
  void end_wait();

  // Rank 0 sends something at least this often (seconds) while the watchdog is on.
  static constexpr double kKeepaliveIntervalS = 4.0;
  // The longest ranks > 0 wait for rank 0's next word between steps: base + 2 x the interval.
  double rank0_silence_limit() const { return base_s_ + 2 * kKeepaliveIntervalS; }
  // The longest they wait for its first word after loading: rank 0 may still be reading its shard.
  // `load_seconds`: how long this rank took to load; `shard_bytes`: the bytes of its weights. The
  // silence limit plus the larger of kAllowanceFactor x load_seconds and a read of shard_bytes at
  // kSlowReadBytesPerS (a deliberately slow disk or network file system).
  double startup_wait_limit(double load_seconds, double shard_bytes) const;
  static constexpr double kSlowReadBytesPerS = 10e6;

  // The limit a step of `tokens` tokens gets now (seconds), and the part of it above the base.
  double limit_for(int tokens) const;
  double allowance_for(int tokens) const { return limit_for(tokens) - base_s_; }
  static constexpr double kAllowanceFactor = 4.0;
  // Each completed step lowers the remembered worst cost per token by this factor at most.
  static constexpr double kCostDecay = 0.98;

 private:
  void watch();
  void check_wait();  // watchdog thread: ends the process when the wait in progress is past its limit
  [[noreturn]] void end_job(const std::string& why);

  double base_s_;
  std::string who_;
  std::string leader_name_ = "rank 0";
  std::string step_peers_ = "another rank";
  std::atomic<double> cost_per_token_s_;
  std::atomic<int64_t> step_started_ns_{0};  // 0: no step in progress
  std::atomic<uint64_t> step_{0};
  std::atomic<int> step_tokens_{0};
  std::atomic<double> limit_s_{0};  // of the step in progress
  std::atomic<int64_t> wait_started_ns_{0};  // 0: no wait in progress
  std::atomic<Wait> wait_kind_{Wait::kRank0};
  std::atomic<double> wait_limit_s_{0};
  std::function<std::string()> probe_;
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace gptj
