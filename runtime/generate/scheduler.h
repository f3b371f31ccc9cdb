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
#include "runtime/generate/model_runner.h"
#include "runtime/generate/sampler.h"

namespace gptj {

class Tokenizer;

struct GenerationRequest {
  uint64_t handle = 0;  // caller's key, echoed in events
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int max_new_tokens = 64;
  std::vector<std::string> stop;  // needs a tokenizer
  bool ignore_eos = false;
  // Samples of this prompt: sample k has handle + k and seed + k (when seeded). The prompt is
  // prefilled once; the samples share its full KV blocks and copy only its partly filled last one.
  int n = 1;
  // Also report the logprobs of prompt tokens 1.. (each given the tokens before it) with
  // sampling.logprobs alternatives, in the request's first event. max_new_tokens may then be 0:
  // the request ends after its prefill (lm-eval-style scoring).
  bool score_prompt = false;
};

enum class FinishReason { kNone, kLength, kStop, kEos, kCancelled };
const char* finish_reason_name(FinishReason reason);

// What happened to one request in a step: a new token (unless the token completed a stop string),
// and whether it finished.
struct GenerationEvent {
  uint64_t handle = 0;
  TokenChoice choice;          // choice.token == -1 when nothing is emitted this step
  FinishReason finish = FinishReason::kNone;
  const std::vector<int32_t>* generated = nullptr;  // all tokens emitted so far (stop text removed)
  std::string stop_text;       // on kStop with a tokenizer: the generated text, cut before the stop string
  int prompt_tokens = 0;
  // score_prompt, first event only: prompt tokens 1.. (token = the prompt's id, its logprob, top).
  std::vector<TokenChoice> prompt_logprobs;
};

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

class Scheduler {
 public:
  Scheduler(ModelRunner& runner, const SchedulerOptions& options, const Tokenizer* tokenizer);
  ~Scheduler();

  // Throws gptj::Error when the request cannot ever run (empty prompt, too long, bad ids).
  void submit(GenerationRequest request);
  void cancel(uint64_t handle);
  bool idle() const { return waiting_.empty() && running_.empty(); }
  // Runs one model step over the running batch; returns what happened.
  std::vector<GenerationEvent> step();

  int running() const { return static_cast<int>(running_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
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
  int peak_used_blocks_ = 0;
  std::vector<BlockCopy> pending_copies_;  // for the next step
};

}  // namespace gptj
