// The seam between the request front-ends (gptj batch, gptj serve's coordinator, gptj generate)
// and whatever runs the requests (rank 0 only, main thread only):
// - Scheduler (runtime/generate/scheduler.h): one tensor-parallel group, stepped in this process;
// - DataParallelEngine (launcher/replicas.h): several replicas, each a Scheduler on its own leader
//   rank, rank 0's own among them; requests are dispatched to them and their events come back.
// Both take requests with caller-chosen handles and report GenerationEvents from step(); a request
// of n samples uses handles h .. h + n - 1.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/generate/request.h"

namespace gptj {

// One replica's figures (the whole engine's are their sums: Engine::total()).
struct ReplicaStats {
  int running = 0;             // sequences in its running batch
  int waiting = 0;             // sequences queued (at rank 0 or at the replica), not yet running
  int kv_blocks_used = 0, kv_blocks_free = 0, kv_blocks_total = 0;
  int peak_used_blocks = 0;
  uint64_t preemptions = 0;
  uint64_t prefix_hit_tokens = 0;  // prompt tokens whose keys/values came from its prefix cache
  uint64_t sequences_finished = 0;  // sequences it finished (any reason)
  uint64_t tokens_generated = 0;    // tokens it sampled (some may later be cut by a stop string)
  bool ready = true;           // loaded and heard from (a remote replica: its first word arrived)
};

class Engine {
 public:
  virtual ~Engine() = default;
  // Throws gptj::Error when the request can never run (the same checks on every engine).
  virtual void submit(GenerationRequest request) = 0;
  virtual void cancel(uint64_t handle) = 0;  // a finish event with kCancelled follows
  // Nothing submitted is unfinished.
  virtual bool idle() const = 0;
  // Runs (or waits for) one round of work and returns its events. A Scheduler runs one model step;
  // a DataParallelEngine steps rank 0's replica when it has work and collects what the others sent
  // (waiting a few milliseconds at most when none arrived). Events' `generated` pointers stay valid
  // until the next step().
  virtual std::vector<GenerationEvent> step() = 0;
  // How many more sequences the caller may submit now to keep every replica's queue ahead of its
  // batch (batch reads input while this is positive). May be negative.
  virtual int queue_room() const = 0;

  virtual int replicas() const { return 1; }
  // The replica a handle was given to (0 with one replica), while it runs and in the step() that
  // reports its finish.
  virtual int replica_of(uint64_t /*handle*/) const { return 0; }
  // One line on what dispatching to the replicas cost (empty with one replica).
  virtual std::string frontend_summary() const { return ""; }
  virtual ReplicaStats stats(int replica) const = 0;
  ReplicaStats total() const;
  int running() const { return total().running; }
  int waiting() const { return total().waiting; }

  // Rank 0, between steps: the word other ranks expect at least every few seconds (keepalive plans
  // to its own TP workers, heartbeats to the other replicas' leaders). Only a clock read when none is due.
  virtual void keepalive_if_due() = 0;
  // When keepalive_if_due() will next have something to send (max(): never): how long an idle
  // caller may sleep.
  virtual std::chrono::steady_clock::time_point keepalive_due() const = 0;
};

inline ReplicaStats Engine::total() const {
  ReplicaStats sum;
  for (int r = 0; r < replicas(); ++r) {
    const ReplicaStats s = stats(r);
    sum.running += s.running;
    sum.waiting += s.waiting;
    sum.kv_blocks_used += s.kv_blocks_used;
    sum.kv_blocks_free += s.kv_blocks_free;
    sum.kv_blocks_total += s.kv_blocks_total;
    sum.peak_used_blocks += s.peak_used_blocks;
    sum.preemptions += s.preemptions;
    sum.prefix_hit_tokens += s.prefix_hit_tokens;
    sum.sequences_finished += s.sequences_finished;
    sum.tokens_generated += s.tokens_generated;
    sum.ready = sum.ready && s.ready;
  }
  return sum;
}

}  // namespace gptj
