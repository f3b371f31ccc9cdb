#include "runtime/generate/scheduler.h"

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "runtime/core/error.h"
#include "runtime/generate/draw_chooser.h"
#include "runtime/generate/tokenizer.h"

namespace gptj {

namespace {
// Where the first of the stop strings begins in `text` at or after `from` (npos: none occurs).
// Prefix-cache key of a full block: its tokens and, through `prev` (the key of the block before it,
// 0 for the first), everything before them. Never 0.
uint64_t block_key(uint64_t prev, const int32_t* tokens, int n) {
  uint64_t h = mix64(prev ^ 0x6A09E667F3BCC908ull);
  for (int i = 0; i < n; ++i) h = mix64(h ^ static_cast<uint32_t>(tokens[i]));
  return h != 0 ? h : 1;
}

std::size_t earliest_stop(const std::string& text, const std::vector<std::string>& stops, std::size_t from) {
  std::size_t cut = std::string::npos;
  for (const auto& stop : stops)
    if (!stop.empty()) cut = std::min(cut, text.find(stop, from));
  return cut;
}
}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kEos: return "eos";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kNone: break;
  }
  return "none";
}

struct Scheduler::Sequence {
  GenerationRequest request;
  Sampler sampler;
  std::vector<int32_t> tokens;     // prompt + generated
  std::vector<int32_t> generated;  // emitted tokens
  std::string text;                // generated tokens' bytes, kept when the request has stop strings
  std::size_t stop_checked = 0;    // bytes of `text` already searched for a complete stop string
  std::vector<int32_t> blocks;     // KV blocks, in position order
  int cached = 0;                  // positions whose K/V sit in the cache
  bool cancelled = false;
  int forks_pending = 0;           // samples still to start from this prompt's prefill
  bool scored = false;             // score_prompt: the prompt's logprobs were reported
  int published = 0;               // leading full blocks published to the prefix cache
  uint64_t chain_key = 0;          // prefix-cache key of block published - 1
  std::vector<TokenChoice> prompt_scores;  // score_prompt: collected during the prefill step

  Sequence(GenerationRequest r, int allowed_vocab)
      : request(std::move(r)), sampler(request.sampling, allowed_vocab), tokens(request.prompt) {
    forks_pending = request.n - 1;
    request.n = 1;
  }
  int prompt_len() const { return static_cast<int>(request.prompt.size()); }
  // This step prefills (part of) a prompt whose logprobs were asked for (every position's logits).
  bool scoring_now() const { return request.score_prompt && !scored && cached < prompt_len(); }
  // Tokens not yet in the KV cache: 1 while decoding, more while a prompt is prefilled in chunks.
  int pending() const { return static_cast<int>(tokens.size()) - cached; }
};

Scheduler::Scheduler(ModelRunner& runner, const SchedulerOptions& options, const Tokenizer* tokenizer)
    : runner_(runner), options_(options), tokenizer_(tokenizer), blocks_(options.kv.num_blocks) {
  if (options_.allowed_vocab <= 0) options_.allowed_vocab = runner.vocab_size();
}

Scheduler::~Scheduler() = default;

ReplicaStats Scheduler::stats(int) const {
  ReplicaStats s;
  s.running = static_cast<int>(running_.size());
  s.waiting = static_cast<int>(waiting_.size());
  s.kv_blocks_used = blocks_.used_blocks();
  s.kv_blocks_free = blocks_.free_blocks();
  s.kv_blocks_total = blocks_.total_blocks();
  s.peak_used_blocks = peak_used_blocks_;
  s.preemptions = preemptions_;
  s.prefix_hit_tokens = prefix_hit_tokens_;
  s.sequences_finished = sequences_finished_;
  s.tokens_generated = tokens_generated_;
  return s;
}

void Scheduler::submit(GenerationRequest request) {
  check(request);
  waiting_.push_back(std::make_unique<Sequence>(std::move(request), options_.allowed_vocab));
}

void Scheduler::check(const GenerationRequest& request) const {
  const int len = static_cast<int>(request.prompt.size());
  GPTJ_CHECK(len > 0, "the prompt is empty");
  GPTJ_CHECK(request.n >= 1 && request.n <= options_.max_batch, "n = {} must be within 1..{} (--max-batch)",
             request.n, options_.max_batch);
  GPTJ_CHECK(request.max_new_tokens >= 1 || (request.max_new_tokens == 0 && request.score_prompt && request.n == 1),
             "max_new_tokens must be at least 1 (got {}; 0 only when scoring the prompt, with n = 1)",
             request.max_new_tokens);
  GPTJ_CHECK(len < options_.n_positions, "the prompt has {} tokens; the model takes at most {}", len,
             options_.n_positions - 1);
  for (int32_t id : request.prompt)
    GPTJ_CHECK(id >= 0 && id < runner_.vocab_size(), "token id {} outside the vocabulary [0, {})", id,
               runner_.vocab_size());
  // The prompt and room for its next token, and a private last block for each further sample (admit()).
  const int needed_blocks = (len + options_.kv.block_size) / options_.kv.block_size + (request.n - 1);
  GPTJ_CHECK(needed_blocks <= options_.kv.num_blocks, "the prompt{} needs {} KV blocks but the cache has {}",
             request.n > 1 ? fmt::format(" with n = {}", request.n) : "", needed_blocks, options_.kv.num_blocks);
  GPTJ_CHECK(request.stop.empty() || tokenizer_ != nullptr,
             "stop strings need a tokenizer (vocab.json + merges.txt in the model directory)");
}

void Scheduler::cancel(uint64_t handle) {
  for (auto& seq : running_)
    if (seq->request.handle == handle) seq->cancelled = true;
  for (auto& seq : waiting_)
    if (seq->request.handle == handle) seq->cancelled = true;
}

void Scheduler::accept_choice(Sequence& seq, const TokenChoice& choice, std::vector<GenerationEvent>& events) {
  GenerationEvent event;
  event.handle = seq.request.handle;
  event.choice = choice;
  seq.tokens.push_back(event.choice.token);
  seq.generated.push_back(event.choice.token);
  ++tokens_generated_;
  if (!seq.request.stop.empty()) seq.text += tokenizer_->token_bytes(event.choice.token);
  event.generated = &seq.generated;
  event.prompt_tokens = seq.prompt_len();
  events.push_back(std::move(event));
  const FinishReason reason = check_stop(seq);
  if (reason == FinishReason::kStop) {
    // Drop the tokens that reach into the stop string; report the text cut before it.
    const std::size_t cut = earliest_stop(seq.text, seq.request.stop, 0);
    std::size_t kept = seq.text.size();
    while (!seq.generated.empty() && kept > cut) {
      kept -= tokenizer_->token_bytes(seq.generated.back()).size();
      seq.generated.pop_back();
    }
    events.back().choice.token = -1;
    events.back().stop_text = seq.text.substr(0, cut);
  }
  if (reason != FinishReason::kNone) events.back().finish = reason;
}

std::unique_ptr<Scheduler::Sequence> Scheduler::make_fork(const Sequence& parent, int k) const {
  GenerationRequest request = parent.request;
  request.handle = parent.request.handle + static_cast<uint64_t>(k);
  if (request.sampling.seed) request.sampling.seed = *request.sampling.seed + static_cast<uint64_t>(k);
  auto fork = std::make_unique<Sequence>(std::move(request), options_.allowed_vocab);
  fork->scored = true;  // the parent reports the prompt's logprobs
  return fork;
}

void Scheduler::start_fork(Sequence& parent, std::unique_ptr<Sequence> fork, const TokenChoice& choice,
                           std::vector<GenerationEvent>& events, std::vector<std::unique_ptr<Sequence>>& forks) {
  const int bs = options_.kv.block_size;
  const int len = parent.prompt_len();
  const int full = len / bs;
  const bool partial = len % bs != 0;
  if (partial && blocks_.free_blocks() == 0) {
    // No room to copy the prompt's last block: it recomputes its prompt later, drawing afresh (a
    // new Sequence, so a seeded sample still makes the same first draw).
    waiting_.push_back(make_fork(parent, static_cast<int>(fork->request.handle - parent.request.handle)));
    return;
  }
  for (int b = 0; b < full; ++b) {
    blocks_.share(parent.blocks[b]);
    fork->blocks.push_back(parent.blocks[b]);
  }
  if (partial) {
    fork->blocks.push_back(blocks_.allocate());
    pending_copies_.push_back({parent.blocks[full], fork->blocks.back()});
  }
  fork->cached = len;
  accept_choice(*fork, choice, events);
  forks.push_back(std::move(fork));
}

bool Scheduler::grow_blocks(Sequence& seq, int positions) {
  while (static_cast<int>(seq.blocks.size()) * options_.kv.block_size < positions) {
    if (blocks_.free_blocks() == 0) return false;
    seq.blocks.push_back(blocks_.allocate());
  }
  return true;
}

bool Scheduler::admit(Sequence& seq, int budget) {
  const int len = static_cast<int>(seq.tokens.size());
  const int bs = options_.kv.block_size;
  if (budget <= 0) return false;
  if (seq.forks_pending > 0 && !running_.empty() &&
      static_cast<int>(running_.size()) + 1 + seq.forks_pending > options_.max_batch)
    return false;
  // Prefix cache: take the longest run of leading full blocks already computed (leaving at least
  // the last token to compute, for its logits). A prompt being scored needs every row: no reuse.
  std::vector<int32_t> taken;
  uint64_t key = 0;
  if (options_.prefix_caching && !seq.scoring_now()) {
    for (int b = 0; b < (len - 1) / bs; ++b) {
      const uint64_t next = block_key(key, &seq.tokens[static_cast<std::size_t>(b) * bs], bs);
      const int32_t block = blocks_.take_cached(next);
      if (block < 0) break;
      taken.push_back(block);
      key = next;
    }
  }
  // Room for one more token, and a private last block for each sample forked from this prompt.
  const int needed = (len + bs) / bs - static_cast<int>(taken.size()) + seq.forks_pending;
  if (blocks_.free_blocks() < needed) {
    blocks_.release(taken);
    return false;
  }
  seq.cached = static_cast<int>(taken.size()) * bs;
  seq.published = static_cast<int>(taken.size());
  seq.chain_key = key;
  prefix_hit_tokens_ += static_cast<uint64_t>(seq.cached);
  seq.blocks = std::move(taken);
  grow_blocks(seq, len);
  return true;
}

void Scheduler::publish_full_blocks(Sequence& seq) {
  const int bs = options_.kv.block_size;
  while ((seq.published + 1) * bs <= seq.cached) {
    seq.chain_key = block_key(seq.chain_key, &seq.tokens[static_cast<std::size_t>(seq.published) * bs], bs);
    blocks_.publish(seq.blocks[static_cast<std::size_t>(seq.published)], seq.chain_key);
    ++seq.published;
  }
}

void Scheduler::preempt_last() {
  std::unique_ptr<Sequence> victim = std::move(running_.back());
  running_.pop_back();
  blocks_.release(victim->blocks);
  victim->cached = 0;
  victim->published = 0;
  victim->chain_key = 0;
  if (!victim->scored) victim->prompt_scores.clear();  // recomputed with its prefill
  ++preemptions_;
  waiting_.push_front(std::move(victim));
}

void Scheduler::finish(Sequence& seq, FinishReason reason, std::vector<GenerationEvent>& events) {
  if (!events.empty() && events.back().handle == seq.request.handle && events.back().finish == FinishReason::kNone) {
    events.back().finish = reason;
  } else {
    GenerationEvent event;
    event.handle = seq.request.handle;
    event.finish = reason;
    event.generated = &seq.generated;
    event.prompt_tokens = seq.prompt_len();
    events.push_back(std::move(event));
  }
  blocks_.release(seq.blocks);
}

FinishReason Scheduler::check_stop(Sequence& seq) {
  const int32_t token = seq.generated.back();
  if (token == options_.eos_id && !seq.request.ignore_eos) return FinishReason::kEos;
  if (!seq.request.stop.empty()) {
    // Only a stop string ending in the new bytes can be new: search from (longest stop - 1) bytes
    // before them, so the whole check stays linear in the output length.
    std::size_t longest = 0;
    for (const auto& stop : seq.request.stop) longest = std::max(longest, stop.size());
    const std::size_t from = seq.stop_checked >= longest ? seq.stop_checked - longest + 1 : 0;
    seq.stop_checked = seq.text.size();
    if (earliest_stop(seq.text, seq.request.stop, from) != std::string::npos) return FinishReason::kStop;
  }
  if (static_cast<int>(seq.generated.size()) >= seq.request.max_new_tokens) return FinishReason::kLength;
  if (static_cast<int>(seq.tokens.size()) >= options_.n_positions) return FinishReason::kLength;
  return FinishReason::kNone;
}

std::vector<GenerationEvent> Scheduler::step() {
  finished_.clear();
  std::vector<GenerationEvent> events;
  // Cancelled sequences leave first.
  auto drop_cancelled = [&](auto& list) {
    for (auto it = list.begin(); it != list.end();) {
      if ((*it)->cancelled) {
        finish(**it, FinishReason::kCancelled, events);
        ++sequences_finished_;
        finished_.push_back(std::move(*it));
        it = list.erase(it);
      } else {
        ++it;
      }
    }
  };
  drop_cancelled(running_);
  drop_cancelled(waiting_);

  // Running sequences need room for the token they are about to feed; preempt from the back.
  for (std::size_t i = 0; i < running_.size();) {
    Sequence& seq = *running_[i];
    if (grow_blocks(seq, static_cast<int>(seq.tokens.size()))) {
      ++i;
    } else if (running_.size() > 1) {
      const bool victim_is_self = (i == running_.size() - 1);
      preempt_last();
      if (victim_is_self) break;
    } else {
      fail("KV cache too small: one sequence of {} tokens needs more than {} blocks",
           seq.tokens.size(), blocks_.total_blocks());
    }
  }
  // This step's tokens (chunked prefill): every decoding sequence feeds its one token; the rest of
  // the max_step_tokens budget goes, in admission order, to prompts still being prefilled, a chunk
  // each; a sequence whose chunk is 0 sits this step out. Waiting requests are admitted while
  // budget, blocks and the batch size allow, their first chunk as large as the budget left.
  std::vector<int> chunk(running_.size(), 0);  // parallel to running_
  int budget = options_.max_step_tokens;
  for (std::size_t i = 0; i < running_.size(); ++i)
    if (running_[i]->pending() == 1) chunk[i] = 1, --budget;
  budget = std::max(budget, 0);
  for (std::size_t i = 0; i < running_.size(); ++i)
    if (running_[i]->pending() > 1) budget -= chunk[i] = std::min(running_[i]->pending(), budget);
  const bool may_admit = !options_.static_batching || running_.empty();
  while (may_admit && !waiting_.empty() && static_cast<int>(running_.size()) < options_.max_batch &&
         admit(*waiting_.front(), budget)) {
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    budget -= chunk.emplace_back(std::min(running_.back()->pending(), budget));
  }
  if (running_.empty() && !waiting_.empty()) {
    // Nothing runs, so nothing will free a block: a request the whole pool cannot admit never will
    // (check() refuses those at submit; this is the guard against a loop that makes no progress).
    const Sequence& seq = *waiting_.front();
    const int bs = options_.kv.block_size;
    fail("KV cache too small: one sequence of {} tokens{} needs {} blocks of {} and the pool has {}",
         seq.tokens.size(), seq.forks_pending > 0 ? fmt::format(" with {} more samples of it", seq.forks_pending) : "",
         (static_cast<int>(seq.tokens.size()) + bs) / bs + seq.forks_pending, bs, blocks_.total_blocks());
  }
  struct Active {  // a sequence in this step, in running_ order, and how many tokens it feeds
    Sequence* seq;
    int tokens;
  };
  std::vector<Active> active;
  for (std::size_t i = 0; i < running_.size(); ++i)
    if (chunk[i] > 0) active.push_back({running_[i].get(), chunk[i]});
  if (active.empty()) return events;

  StepBatch batch;
  batch.block_copies.swap(pending_copies_);
  for (const Active& a : active) {
    const Sequence& seq = *a.seq;
    SequenceStep s;
    s.start_pos = seq.cached;
    s.tokens.assign(seq.tokens.begin() + seq.cached, seq.tokens.begin() + seq.cached + a.tokens);
    s.block_table = seq.blocks;
    s.all_logits = seq.scoring_now();  // a prompt to score: every position's row
    batch.seqs.push_back(std::move(s));
  }
  peak_used_blocks_ = std::max(peak_used_blocks_, blocks_.used_blocks());
  // One draw per running sequence from its (last) logit row; a prompt with n samples also gets a
  // draw for each of its other samples, from the same row (their Sequences are made now, started
  // after); a prompt being scored gets a scoring draw for each of its tokens after the first.
  struct Drawer {                   // per entry of batch.draws
    Sequence* who;                  // whose sampler planned it (or whose prompt is scored)
    std::unique_ptr<Sequence> fork; // set when the draw starts a fork of `who`'s parent
    bool score;                     // a scoring draw
  };
  std::vector<Drawer> drawers;
  int32_t row = 0;
  for (std::size_t i = 0; i < active.size(); ++i) {
    Sequence& seq = *active[i].seq;
    auto add = [&](DrawPlan plan, Sequence* who, std::unique_ptr<Sequence> fork, bool score) {
      batch.draws.push_back(std::move(plan));
      drawers.push_back({who, std::move(fork), score});
    };
    const int n = active[i].tokens;
    const int rows = batch.seqs[i].all_logits ? n : 1;
    if (batch.seqs[i].all_logits)  // position p's row scores prompt token p + 1
      for (int j = 0; j < n && seq.cached + j + 1 < seq.prompt_len(); ++j)
        add(score_plan(row + j, seq.tokens[seq.cached + j + 1], options_.allowed_vocab, seq.request.sampling.logprobs),
            &seq, nullptr, true);
    const int32_t last = row + rows - 1;
    row += rows;
    // Only a sequence whose step reaches its last token samples (a prefill chunk does not).
    if (seq.request.max_new_tokens == 0 || seq.cached + n < static_cast<int>(seq.tokens.size())) continue;
    add(seq.sampler.plan(seq.tokens, seq.prompt_len(), last), &seq, nullptr, false);
    for (int k = 1; k <= seq.forks_pending; ++k) {
      std::unique_ptr<Sequence> fork = make_fork(seq, k);
      Sequence* who = fork.get();
      add(who->sampler.plan(seq.tokens, seq.prompt_len(), last), who, std::move(fork), false);
    }
  }
  const int64_t vocab = runner_.vocab_size();
  // Each draw from its summaries; a wide top-k / top-p one through the threshold search; the row
  // only where neither settles it (degenerate rows; none in normal operation).
  std::vector<DrawChooser::Draw> chosen(drawers.size());
  for (std::size_t d = 0; d < drawers.size(); ++d) {
    if (drawers[d].score) chosen[d].score_top_n = drawers[d].who->request.sampling.logprobs;
    else chosen[d].sampler = &drawers[d].who->sampler;
  }
  DrawChooser chooser(batch, vocab, chosen);
  chooser.choose_from_rows(runner_.step_draws(batch, chooser));
  for (const Active& a : active) {
    a.seq->cached += a.tokens;
    if (options_.prefix_caching) publish_full_blocks(*a.seq);
  }
  std::vector<std::unique_ptr<Sequence>> forks;
  Sequence* parent = nullptr;
  for (std::size_t d = 0; d < drawers.size(); ++d) {
    Drawer& dr = drawers[d];
    if (dr.score) {
      dr.who->prompt_scores.push_back(std::move(*chosen[d].choice));
    } else if (!dr.fork) {
      parent = dr.who;
      parent->forks_pending = 0;
      accept_choice(*parent, *chosen[d].choice, events);
      if (!parent->scored && parent->request.score_prompt) {  // its first event carries the scores
        events.back().prompt_logprobs = std::move(parent->prompt_scores);
        parent->scored = true;
      }
    } else {
      start_fork(*parent, std::move(dr.fork), *chosen[d].choice, events, forks);
    }
  }
  for (const Active& a : active) {  // scoring-only requests end with their prefill
    Sequence* seq = a.seq;
    if (seq->request.max_new_tokens > 0 || seq->scored || seq->pending() > 0) continue;
    seq->scored = true;
    GenerationEvent event;
    event.handle = seq->request.handle;
    event.finish = FinishReason::kLength;
    event.generated = &seq->generated;
    event.prompt_tokens = seq->prompt_len();
    event.prompt_logprobs = std::move(seq->prompt_scores);
    events.push_back(std::move(event));
  }
  for (auto& fork : forks) running_.push_back(std::move(fork));
  // Finished sequences leave the batch and free their blocks now.
  for (auto it = running_.begin(); it != running_.end();) {
    bool done = false;
    for (const auto& e : events)
      if (e.handle == (*it)->request.handle && e.finish != FinishReason::kNone) done = true;
    if (done) {
      blocks_.release((*it)->blocks);
      ++sequences_finished_;
      finished_.push_back(std::move(*it));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  return events;
}

}  // namespace gptj
