// Data-parallel replicas behind world rank 0 (docs/DESIGN.md §15).
//
// Every replica is a whole engine: its leader runs a Scheduler (paged KV cache, prefix cache,
// sampler) over its own tensor-parallel group. World rank 0 leads replica 0 and is the front-end:
// its DataParallelEngine takes every request, dispatches it to the least-loaded replica (or to the
// one that holds its prompt's prefix), steps its own replica, and collects the events the other
// leaders report after each of their steps. The other leaders run run_replica_leader().
//
// Messages (ReplicaLink, non-blocking both ways; every one begins with the sender's *allowance*:
// how much longer than the watchdog's base its next model step may take (StepWatchdog::
// allowance_for(max_step_tokens)), so the receiver's silence limit stretches over it):
//   rank 0 -> leader: kSubmit (a GenerationRequest), kCancel (a handle), kHeartbeat, kStop (exit code)
//   leader -> rank 0: kReport (its figures and one step's events; the first one, sent after it loaded,
//                     makes it ready), kHeartbeat (its figures, no events)
// Each side sends something at least every StepWatchdog::kKeepaliveIntervalS seconds between steps
// and ends the job (throws: launcher/main.cc aborts every rank) when the other stays silent for
// silence_s + the other's allowance (startup_s before its first word).
#pragma once
#include <chrono>
#include <deque>
#include <unordered_map>
#include <vector>

#include "parallel/replica_link.h"
#include "parallel/watchdog.h"
#include "parallel/world.h"
#include "runtime/generate/dispatch.h"
#include "runtime/generate/scheduler.h"

namespace gptj {

struct ReplicaTimeouts {
  double silence_s = 0;  // 0: never end the job for silence (--step-timeout 0)
  double startup_s = 0;  // before the first word from the other side
  // This rank's own step allowance (how much longer than the base a step of max_step_tokens may take
  // now), sent with every message; null: 0.
  const StepWatchdog* watchdog = nullptr;
  int max_step_tokens = 4096;
};

// World rank 0, main thread only.
class DataParallelEngine final : public Engine {
 public:
  DataParallelEngine(Scheduler& local, World& world, const ReplicaTimeouts& timeouts);
  ~DataParallelEngine() override;

  void submit(GenerationRequest request) override;
  void cancel(uint64_t handle) override;
  bool idle() const override;
  std::vector<GenerationEvent> step() override;
  int queue_room() const override;
  int replicas() const override { return static_cast<int>(replicas_.size()); }
  ReplicaStats stats(int replica) const override;
  void keepalive_if_due() override;
  std::chrono::steady_clock::time_point keepalive_due() const override;

  // Until every replica has reported that it loaded (bounded by the start-up silence limit).
  void wait_until_ready();
  // Tells every other leader to shut its replica down with `exit_code`, waiting at most
  // `delivery_wait` for the messages to leave. Safe to call twice. (The destructor, reached only when
  // an error unwinds rank 0, waits 0.2 s: the job is about to be aborted, and a stopped or hung
  // replica would never take the message.)
  void stop(int exit_code, std::chrono::milliseconds delivery_wait = std::chrono::milliseconds(5000));
  // Which replica a handle runs on, or ran on when it finished in the last step() (else -1).
  int replica_of(uint64_t handle) const override;
  uint64_t link_messages() const { return link_.messages(); }
  uint64_t link_bytes() const { return link_.bytes(); }
  // Seconds rank 0 spent dispatching requests and taking in the other replicas' reports (encoding,
  // MPI calls, decoding; not the waits): the front-end's own cost.
  double frontend_seconds() const { return frontend_s_; }
  std::string frontend_summary() const override;

 private:
  struct Remote {
    int rank = 0;              // its leader's world rank
    std::string host;
    ReplicaStats stats;        // as last reported (ready once its first report came)
    int outstanding = 0;       // sequences given to it and not finished
    std::chrono::steady_clock::time_point last_heard, last_sent;
    double allowance_s = 0;    // its announced longest next step
  };
  void receive(LinkMessage& message, std::vector<GenerationEvent>& events);  // consumes message.bytes
  void send(Remote& to, int kind, const std::vector<uint8_t>& payload);
  void check_silence();
  std::vector<ReplicaLoad> loads() const;

  Scheduler& local_;
  ReplicaLink& link_;
  ReplicaTimeouts timeouts_;
  std::vector<Remote> replicas_;  // [0] is rank 0's own (only its host/outstanding are used)
  PrefixDirectory prefixes_;
  std::unordered_map<uint64_t, int> owner_;  // handle -> replica, while unfinished
  std::unordered_map<uint64_t, int> finished_on_;  // handle -> replica, of the last step's finished ones
  std::unordered_map<uint64_t, std::vector<int32_t>> tokens_;  // remote handles' tokens so far
  std::deque<std::vector<int32_t>> finished_tokens_;  // of the last step's finished remote handles
  int remote_outstanding_ = 0;
  double frontend_s_ = 0;
  uint64_t remote_requests_ = 0;
  bool stopped_ = false;
};

// Replica leaders other than world rank 0: take requests from rank 0, step `scheduler`, report;
// until rank 0 sends kStop. Returns rank 0's exit code.
int run_replica_leader(Scheduler& scheduler, World& world, const ReplicaTimeouts& timeouts);

}  // namespace gptj
