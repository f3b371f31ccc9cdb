// The control channel between rank 0 and the worker ranks (docs/DESIGN.md §2).
// Rank 0 calls step() or step_draws(): the plan is broadcast and every rank runs its shard. step()
// gathers the vocab shards of the raw logits to rank 0. step_draws() gathers only each rank's
// DrawSummary per draw (runtime/backend/draw.h), then the full rows of the draws whose summaries do
// not settle the token (a second, usually empty, round: rank 0 broadcasts the row list).
// Logits that are NaN or ±inf (the draw summaries flag them; step() checks the rows it returns) make
// rank 0's call throw, once every rank has finished the step, an Error naming the step, the logit row
// and its sequence and position: the caller's job fails (launcher/main.cc ends every rank), since
// non-finite logits mean broken weights or activations, not one bad request.
// Ranks > 0 sit in run_worker_loop() until rank 0 calls shutdown().
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "parallel/watchdog.h"
#include "runtime/backend/backend.h"

namespace gptj {

class ModelRunner {
 public:
  // `vocab_size`: the model's real vocabulary; padded shard rows past it are dropped.
  ModelRunner(Backend& backend, Communicator& comm, int vocab_size);

  // Rank 0 only; batch.draws must be empty. Returns logits [batch.logit_rows(), vocab_size] float32,
  // row-major.
  const std::vector<float>& step(const StepBatch& batch);

  struct DrawResults {
    std::vector<int32_t> row_of_draw;    // per draw: its row in `rows`, or -1 when not fetched
    std::vector<float> rows;             // fetched raw logits [fetched, vocab_size]
  };
  // Rank 0 only; batch.draws may be empty (a step of prompt chunks). needs_row(d, summaries of draw
  // d [ranks], ranks) says whether draw d needs its full row.
  using NeedsRow = std::function<bool(int draw, const DrawSummary* per_rank, int ranks)>;
  const DrawResults& step_draws(const StepBatch& batch, const NeedsRow& needs_row);
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
  void run_step(const StepBatch& batch, const NeedsRow* needs_row);  // every rank
  void gather_rows(const std::vector<int32_t>& rows);  // every rank: rows' shards into gathered_
  // Reorders gathered_ [tp][n][shard] into out [n][vocab_size], dropping the padding.
  void assemble_rows(int n, std::vector<float>& out) const;
  void begin_timing(const StepBatch& batch);
  void maybe_inject_fault() const;
  // Throws the one-line error of a step whose logits are not finite, naming the step and the row.
  [[noreturn]] void fail_non_finite(const StepBatch& batch, int row, const std::string& ranks) const;

  Backend& backend_;
  Communicator& comm_;
  int vocab_size_;
  uint64_t steps_ = 0;
  StepWatchdog* watchdog_ = nullptr;
  bool shut_down_ = false;
  std::vector<float> shard_, gathered_, logits_;
  std::vector<DrawSummary> local_summaries_, gathered_summaries_;
  std::vector<int32_t> fetch_rows_;
  int non_finite_draw_ = -1;  // rank 0: a draw of the step whose summaries flag NaN/inf logits, or -1
  DrawResults draw_results_;
};

}  // namespace gptj
