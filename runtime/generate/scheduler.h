// Rank 0's continuous-batching scheduler over the paged KV cache.
// Requests wait in a queue; at every step waiting requests join the running batch while KV blocks
// and the batch size allow. Each step feeds every decoding sequence its token and spends the rest of
// max_step_tokens on prompts, a chunk of each (chunked prefill: a long prompt spreads over several
// steps and never stalls the decoding ones); finished sequences leave and free their blocks at once. When a running
// sequence needs a block and none is free, the most recently admitted sequence is preempted: its
// blocks are freed and it waits to be recomputed (prompt + what it generated), never a crash.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/generate/block_allocator.h"
#include "runtime/generate/engine.h"
#include "runtime/generate/model_runner.h"
#include "runtime/generate/request.h"
#include "runtime/generate/sampler.h"

namespace gptj {

class Tokenizer;

struct SchedulerOptions {
  int max_batch = 64;            // running sequences at most
  int max_step_tokens = 4096;    // tokens per step: decodes first, then prompt chunks (chunked prefill)
  KvCacheOptions kv;
  int n_positions = 2048;
  int eos_id = -1;
  int allowed_vocab = 0;         // ids >= this are never sampled
  bool static_batching = false;  // admit only into an empty batch (for comparison benchmarks)
  bool prefix_caching = true;    // reuse the KV blocks of prompt prefixes computed before
};

class Scheduler final : public Engine {
 public:
  Scheduler(ModelRunner& runner, const SchedulerOptions& options, const Tokenizer* tokenizer);
  ~Scheduler() override;

  // Throws gptj::Error when the request cannot ever run (empty prompt, too long, bad ids); check()
  // alone is what submit() checks (the data-parallel front-end checks before it dispatches).
  void check(const GenerationRequest& request) const;
  void submit(GenerationRequest request) override;
  void cancel(uint64_t handle) override;
  bool idle() const override { return waiting_.empty() && running_.empty(); }
  // Runs one model step over the running batch; returns what happened.
  std::vector<GenerationEvent> step() override;
  // 2 x max_batch sequences waiting is look-ahead enough.
  int queue_room() const override { return 2 * options_.max_batch - static_cast<int>(waiting_.size()); }
  ReplicaStats stats(int replica = 0) const override;
  void keepalive_if_due() override { runner_.keepalive_if_due(); }
  std::chrono::steady_clock::time_point keepalive_due() const override { return runner_.keepalive_due(); }

  const SchedulerOptions& options() const { return options_; }
  const BlockAllocator& blocks() const { return blocks_; }
  uint64_t preemptions() const { return preemptions_; }
  // Prompt tokens whose keys/values came from the prefix cache instead of being computed.
  uint64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }
  int peak_used_blocks() const { return peak_used_blocks_; }
  // The runner it steps (its callers send keepalives through it while idle: model_runner.h).
  ModelRunner& runner() { return runner_; }

 private:
  struct Sequence;
  bool admit(Sequence& seq, int budget);  // blocks and batch room for `seq`, budget > 0
  void publish_full_blocks(Sequence& seq);  // its newly computed full blocks, to the prefix cache
  bool grow_blocks(Sequence& seq, int positions);
  void preempt_last();
  // Sample k (1..n-1) of `parent`'s request: handle + k, seed + k.
  std::unique_ptr<Sequence> make_fork(const Sequence& parent, int k) const;
  // After `parent`'s prompt prefill: the fork shares its prompt blocks and takes its first token.
  void start_fork(Sequence& parent, std::unique_ptr<Sequence> fork, const TokenChoice& choice,
                  std::vector<GenerationEvent>& events, std::vector<std::unique_ptr<Sequence>>& forks);
  // Appends the sampled token to `seq` and reports it (and a finish, when it ends the sequence).
  void accept_choice(Sequence& seq, const TokenChoice& choice, std::vector<GenerationEvent>& events);
  void finish(Sequence& seq, FinishReason reason, std::vector<GenerationEvent>& events);
  FinishReason check_stop(Sequence& seq);

  ModelRunner& runner_;
  SchedulerOptions options_;
  const Tokenizer* tokenizer_;
  BlockAllocator blocks_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<std::unique_ptr<Sequence>> finished_;  // kept until the next step (events point into them)
  uint64_t preemptions_ = 0;
  uint64_t prefix_hit_tokens_ = 0;
  uint64_t sequences_finished_ = 0, tokens_generated_ = 0;
  int peak_used_blocks_ = 0;
  std::vector<BlockCopy> pending_copies_;  // for the next step
};

}  // namespace gptj
