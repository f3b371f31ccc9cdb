// The control channel between rank 0 and the worker ranks (docs/DESIGN.md §2).
// Rank 0 calls step() or step_draws(): the plan is broadcast and every rank runs its shard. step()
// gathers the vocab shards of the raw logits to rank 0. step_draws() gathers only each rank's
// DrawSummary per draw (runtime/backend/draw.h); then, for the top-k / top-p draws the summaries do
// not settle, the rounds of the threshold search (runtime/generate/draw_search.h: rank 0 broadcasts
// one SearchQuery per such draw, every rank answers from its shard, the SearchReply values are
// gathered; all such draws of the step share each round, so a step has as many rounds as its
// slowest search, usually 2-3); then the full rows of the draws nothing else settles (a last round,
// empty in normal operation: only the reference tests and degenerate rows use it; counted in
// rows_fetched()).
// Logits that are NaN or ±inf (the draw summaries flag them; step() checks the rows it returns) make
// rank 0's call throw, once every rank has finished the step, an Error naming the step, the logit row
// and its sequence and position: the caller's job fails (launcher/main.cc ends every rank), since
// non-finite logits mean broken weights or activations, not one bad request.
// Ranks > 0 sit in run_worker_loop() until rank 0 calls shutdown().
// With a watchdog (a multi-rank job, --step-timeout > 0) rank 0 also promises the workers a word at
// least every StepWatchdog::kKeepaliveIntervalS seconds: wherever it waits or works between steps it
// calls keepalive_if_due(), which broadcasts an empty *keepalive plan* when nothing was sent for that
// long. Workers recognise it (a zero-length plan; the shutdown plan is never empty), run nothing and
// count no step, and time their wait for the next plan (parallel/watchdog.h), so a stopped or hung
// rank 0 ends the job even when no step is in flight.
#pragma once
#include <chrono>
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
  // Rank 0's side of a drawing step with the threshold search: for every draw, summaries() first;
  // then, while any draw searches, next_query()/replies() once per round; then needs_row().
  class DrawResolver {
   public:
    enum class Need { kNothing, kSearch, kRow };
    virtual ~DrawResolver() = default;
    virtual Need summaries(int draw, const DrawSummary* per_rank, int ranks) = 0;
    virtual bool next_query(int draw, SearchQuery& query) = 0;  // false: this draw asks no more
    virtual void replies(int draw, const SearchReply* per_rank, int ranks) = 0;
    virtual bool needs_row(int draw) = 0;  // after the search rounds
  };
  const DrawResults& step_draws(const StepBatch& batch, DrawResolver& resolver);
  // Rank 0 only: ends the worker loops, handing them rank 0's exit code. Safe to call twice.
  void shutdown(int exit_code = 0);
  // Rank 0, main thread, between steps: sends a keepalive plan when nothing was sent for
  // StepWatchdog::kKeepaliveIntervalS seconds (only a clock read otherwise). A no-op without a
  // watchdog, at TP 1 and after shutdown. The first call after the model loaded sends at once: the
  // workers' word that rank 0 is up.
  void keepalive_if_due();
  // When keepalive_if_due() will next send (time_point::max() when it never will): how long rank 0
  // may sleep between steps.
  std::chrono::steady_clock::time_point keepalive_due() const;
  // Ranks > 0: serve steps until shutdown; returns rank 0's exit code. A fault can be injected for tests with the environment
  // variable GPTJ_FAULT_INJECT="rank=R,step=S" (that rank throws at its S-th step).
  int run_worker_loop();

  // Every step of this rank is timed by `watchdog` (not owned; may be null), and so is a worker's
  // wait for rank 0's next plan: at most watchdog->rank0_silence_limit() s between plans, and
  // startup_wait_s for the first one (rank 0 may still be loading; StepWatchdog::startup_wait_limit).
  void set_watchdog(StepWatchdog* watchdog, double startup_wait_s) {
    watchdog_ = watchdog;
    startup_wait_s_ = startup_wait_s;
  }

  int vocab_size() const { return vocab_size_; }
  uint64_t steps() const { return steps_; }  // model steps run (keepalives are not steps)
  // Rank 0: full logit rows fetched for draws (0 in normal operation), threshold-search rounds run
  // and draws that searched, since the start.
  uint64_t rows_fetched() const { return rows_fetched_; }
  uint64_t search_rounds() const { return search_rounds_; }
  uint64_t searched_draws() const { return searched_draws_; }

 private:
  void run_step(const StepBatch& batch, DrawResolver* resolver);  // every rank
  void run_search(const StepBatch& batch, DrawResolver* resolver, const std::vector<int>& searching);
  void gather_rows(const std::vector<int32_t>& rows);  // every rank: rows' shards into gathered_
  // Reorders gathered_ [tp][n][shard] into out [n][vocab_size], dropping the padding.
  void assemble_rows(int n, std::vector<float>& out) const;
  void begin_timing(const StepBatch& batch);
  void send_plan(std::vector<uint8_t>& plan);  // rank 0: broadcast_plan, noting when
  void maybe_inject_fault() const;
  // Throws the one-line error of a step whose logits are not finite, naming the step and the row.
  [[noreturn]] void fail_non_finite(const StepBatch& batch, int row, const std::string& ranks) const;

  Backend& backend_;
  Communicator& comm_;
  int vocab_size_;
  uint64_t steps_ = 0;
  StepWatchdog* watchdog_ = nullptr;
  double startup_wait_s_ = 0;
  std::chrono::steady_clock::time_point last_sent_{};  // rank 0: the last plan broadcast (epoch: none yet)
  bool shut_down_ = false;
  std::vector<float> shard_, gathered_, logits_;
  std::vector<DrawSummary> local_summaries_, gathered_summaries_;
  std::vector<int32_t> fetch_rows_;
  std::vector<SearchQuery> queries_;
  std::vector<SearchReply> local_replies_, gathered_replies_, reply_of_draw_;
  uint64_t rows_fetched_ = 0, search_rounds_ = 0, searched_draws_ = 0;
  int non_finite_draw_ = -1;  // rank 0: a draw of the step whose summaries flag NaN/inf logits, or -1
  DrawResults draw_results_;
};

}  // namespace gptj
