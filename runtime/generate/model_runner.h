// The control channel between rank 0 and the worker ranks (DESIGN §2).
// Rank 0 calls step(): the plan is broadcast, every rank runs its shard, the vocab shards of the
// logits are gathered to rank 0. Ranks > 0 sit in run_worker_loop() until rank 0 calls shutdown().
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "parallel/watchdog.h"
#include "runtime/backend/backend.h"

namespace gptj {

class ModelRunner {
 public:
  // `vocab_size`: the model's real vocabulary; padded shard rows past it are dropped.
  ModelRunner(Backend& backend, Communicator& comm, int vocab_size);

  // Rank 0 only. Returns logits [batch.logit_rows(), vocab_size] float32, row-major.
  const std::vector<float>& step(const StepBatch& batch);
  // Rank 0 only: ends the worker loops, handing them rank 0's exit code. Safe to call twice.
  void shutdown(int exit_code = 0);
  // Ranks > 0: serve steps until shutdown; returns rank 0's exit code. A fault can be injected for tests with the environment
  // variable GPTJ_FAULT_INJECT="rank=R,step=S" (that rank throws at its S-th step).
  int run_worker_loop();

  // Every step of this rank is timed by `watchdog` (not owned; may be null).
  void set_watchdog(StepWatchdog* watchdog) { watchdog_ = watchdog; }

  int vocab_size() const { return vocab_size_; }
  uint64_t steps() const { return steps_; }

 private:
  void run_step(const StepBatch& batch);  // forward + gather, every rank
  void maybe_inject_fault() const;

  Backend& backend_;
  Communicator& comm_;
  int vocab_size_;
  uint64_t steps_ = 0;
  StepWatchdog* watchdog_ = nullptr;
  bool shut_down_ = false;
  std::vector<float> shard_, gathered_, logits_;
};

}  // namespace gptj
