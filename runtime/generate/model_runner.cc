#include "runtime/generate/model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

#include "runtime/core/error.h"

namespace gptj {

ModelRunner::ModelRunner(Backend& backend, Communicator& comm, int vocab_size)
    : backend_(backend), comm_(comm), vocab_size_(vocab_size) {}

namespace {
// A plan of length 0 is a keepalive: only its length travels.
void broadcast_plan(Communicator& comm, std::vector<uint8_t>& bytes) {
  uint64_t length = bytes.size();
  comm.broadcast_idle_wait(&length, sizeof(length));  // workers may wait long here: don't spin
  bytes.resize(length);
  if (length > 0) comm.broadcast(bytes.data(), length);
}
}  // namespace

const std::vector<float>& ModelRunner::step(const StepBatch& plan) {
  GPTJ_CHECK(plan.draws.empty(), "ModelRunner::step returns raw logits; use step_draws for draws");
  StepBatch batch = plan;
  batch.raw_logits = true;
  begin_timing(batch);
  run_step(batch, nullptr);
  if (watchdog_) watchdog_->end_step();
  assemble_rows(batch.logit_rows(), logits_);
  const auto bad = std::find_if(logits_.begin(), logits_.end(), [](float v) { return !std::isfinite(v); });
  if (bad != logits_.end())
    fail_non_finite(batch, static_cast<int>((bad - logits_.begin()) / vocab_size_), "");
  return logits_;
}

namespace {
// "logit row r: position p of sequence i of the step, which fed positions a..b".
std::string describe_row(const StepBatch& batch, int row) {
  int first = 0;
  for (std::size_t i = 0; i < batch.seqs.size(); ++i) {
    const SequenceStep& s = batch.seqs[i];
    const int n = static_cast<int>(s.tokens.size());
    const int rows = s.all_logits ? n : 1;
    if (row < first + rows) {
      const int position = s.start_pos + (s.all_logits ? row - first : n - 1);
      return fmt::format("logit row {}: position {} of sequence {} of the step, which fed positions {}..{}",
                         row, position, i, s.start_pos, s.start_pos + n - 1);
    }
    first += rows;
  }
  return fmt::format("logit row {}", row);
}
}  // namespace

void ModelRunner::fail_non_finite(const StepBatch& batch, int row, const std::string& ranks) const {
  fail("step {}: the forward pass produced NaN or infinite logits ({}){}; the checkpoint's weights "
       "or activations are not finite, so no token can be drawn",
       steps_, describe_row(batch, row), ranks);
}

namespace {
// A NeedsRow callback as a resolver that never searches.
class RowResolver final : public ModelRunner::DrawResolver {
 public:
  explicit RowResolver(const ModelRunner::NeedsRow& needs_row) : needs_row_(needs_row) {}
  Need summaries(int draw, const DrawSummary* per_rank, int ranks) override {
    return needs_row_(draw, per_rank, ranks) ? Need::kRow : Need::kNothing;
  }
  bool next_query(int, SearchQuery&) override { return false; }
  void replies(int, const SearchReply*, int) override {}
  bool needs_row(int) override { return false; }

 private:
  const ModelRunner::NeedsRow& needs_row_;
};
}  // namespace

const ModelRunner::DrawResults& ModelRunner::step_draws(const StepBatch& batch, const NeedsRow& needs_row) {
  RowResolver resolver(needs_row);
  return step_draws(batch, resolver);
}

const ModelRunner::DrawResults& ModelRunner::step_draws(const StepBatch& batch, DrawResolver& resolver) {
  GPTJ_CHECK(!batch.raw_logits, "ModelRunner::step_draws samples; use step for raw logits");
  begin_timing(batch);
  run_step(batch, &resolver);
  if (watchdog_) watchdog_->end_step();
  if (non_finite_draw_ >= 0) {  // every rank has finished the step: failing here leaves none waiting
    const std::size_t draws = batch.draws.size();
    std::string ranks;
    int flagged = 0;
    for (int r = 0; r < comm_.size(); ++r)
      if (gathered_summaries_[static_cast<std::size_t>(r) * draws + non_finite_draw_].non_finite)
        ranks += (flagged++ ? ", " : "") + std::to_string(r);
    fail_non_finite(batch, batch.draws[non_finite_draw_].logit_row,
                    fmt::format(" in the vocab shard{} of rank{} {}", flagged > 1 ? "s" : "", flagged > 1 ? "s" : "", ranks));
  }
  DrawResults& out = draw_results_;
  out.row_of_draw.assign(batch.draws.size(), -1);
  for (std::size_t d = 0; d < batch.draws.size(); ++d)
    for (std::size_t i = 0; i < fetch_rows_.size(); ++i)
      if (fetch_rows_[i] == batch.draws[d].logit_row) out.row_of_draw[d] = static_cast<int32_t>(i);
  assemble_rows(static_cast<int>(fetch_rows_.size()), out.rows);
  return out;
}

void ModelRunner::begin_timing(const StepBatch& batch) {
  GPTJ_CHECK(comm_.rank() == 0 && !shut_down_, "ModelRunner steps are rank 0's, before shutdown");
  if (watchdog_) watchdog_->begin_step(steps_ + 1, batch.total_tokens());
  if (comm_.size() > 1) {
    std::vector<uint8_t> plan = serialize_step(batch, false);
    send_plan(plan);
  }
}

void ModelRunner::send_plan(std::vector<uint8_t>& plan) {
  broadcast_plan(comm_, plan);
  last_sent_ = std::chrono::steady_clock::now();
}

std::chrono::steady_clock::time_point ModelRunner::keepalive_due() const {
  if (!watchdog_ || comm_.size() == 1 || shut_down_) return std::chrono::steady_clock::time_point::max();
  return last_sent_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                          std::chrono::duration<double>(StepWatchdog::kKeepaliveIntervalS));
}

void ModelRunner::keepalive_if_due() {
  if (std::chrono::steady_clock::now() < keepalive_due()) return;
  GPTJ_CHECK(comm_.rank() == 0, "keepalives are rank 0's");
  std::vector<uint8_t> empty;
  watchdog_->begin_wait(StepWatchdog::Wait::kKeepaliveSent, watchdog_->rank0_silence_limit());
  send_plan(empty);
  watchdog_->end_wait();
}

void ModelRunner::assemble_rows(int n, std::vector<float>& out) const {
  // Gathered layout: [tp][n][shard]; reorder to [n][vocab] and drop the padding.
  const int64_t shard = backend_.vocab_shard_rows();
  out.resize(static_cast<std::size_t>(n) * vocab_size_);
  for (int r = 0; r < n; ++r) {
    for (int p = 0; p < comm_.size(); ++p) {
      const int64_t begin = p * shard;
      const int64_t count = std::min<int64_t>(shard, vocab_size_ - begin);
      if (count <= 0) continue;
      std::memcpy(&out[static_cast<std::size_t>(r) * vocab_size_ + begin],
                  &gathered_[(static_cast<std::size_t>(p) * n + r) * shard], sizeof(float) * count);
    }
  }
}

void ModelRunner::gather_rows(const std::vector<int32_t>& rows) {
  const std::size_t count = rows.size() * static_cast<std::size_t>(backend_.vocab_shard_rows());
  shard_.resize(count);
  if (count > 0) backend_.read_logit_rows(rows, shard_.data());
  if (comm_.rank() == 0) gathered_.resize(count * comm_.size());
  comm_.gather_to_root(shard_.data(), count, comm_.rank() == 0 ? gathered_.data() : nullptr);
}

void ModelRunner::run_search(const StepBatch& batch, DrawResolver* resolver, const std::vector<int>& searching) {
  static_assert(sizeof(SearchReply) % sizeof(float) == 0);
  constexpr std::size_t kWords = sizeof(SearchReply) / sizeof(float);
  const std::size_t ranks = static_cast<std::size_t>(comm_.size());
  std::vector<SearchReply>& per_rank = reply_of_draw_;
  per_rank.resize(ranks);
  for (;;) {
    int32_t n = 0;
    if (comm_.rank() == 0 && resolver) {
      queries_.clear();
      SearchQuery query;
      for (int d : searching)
        if (resolver->next_query(d, query)) {
          query.draw = d;
          queries_.push_back(query);
        }
      n = static_cast<int32_t>(queries_.size());
    }
    if (comm_.size() > 1) {
      comm_.broadcast(&n, sizeof(n));
      queries_.resize(static_cast<std::size_t>(n));
      if (n > 0) comm_.broadcast(queries_.data(), queries_.size() * sizeof(SearchQuery));
    }
    if (n == 0) return;
    for (const SearchQuery& q : queries_)
      GPTJ_CHECK(q.draw >= 0 && static_cast<std::size_t>(q.draw) < batch.draws.size(),
                 "corrupt search query (draw {})", q.draw);
    local_replies_.resize(queries_.size());
    backend_.answer_search(batch.draws, queries_, local_replies_.data());
    if (comm_.rank() == 0) gathered_replies_.resize(queries_.size() * ranks);  // [rank][query]
    comm_.gather_to_root(reinterpret_cast<const float*>(local_replies_.data()), queries_.size() * kWords,
                         comm_.rank() == 0 ? reinterpret_cast<float*>(gathered_replies_.data()) : nullptr);
    if (comm_.rank() == 0 && resolver) {
      ++search_rounds_;
      for (std::size_t i = 0; i < queries_.size(); ++i) {
        for (std::size_t r = 0; r < ranks; ++r) per_rank[r] = gathered_replies_[r * queries_.size() + i];
        resolver->replies(queries_[i].draw, per_rank.data(), static_cast<int>(ranks));
      }
    }
  }
}

void ModelRunner::run_step(const StepBatch& batch, DrawResolver* resolver) {
  ++steps_;
  maybe_inject_fault();
  backend_.forward(batch);
  fetch_rows_.clear();
  non_finite_draw_ = -1;
  if (batch.raw_logits) {
    for (int r = 0; r < batch.logit_rows(); ++r) fetch_rows_.push_back(r);
    gather_rows(fetch_rows_);
    return;
  }
  if (batch.draws.empty()) return;  // prompt chunks only: nothing to sample, nothing to gather
  // Round 1: every rank's summaries of every draw, to rank 0 (gathered as float words).
  static_assert(sizeof(DrawSummary) % sizeof(float) == 0);
  const std::size_t draws = batch.draws.size(), ranks = static_cast<std::size_t>(comm_.size());
  constexpr std::size_t kWords = sizeof(DrawSummary) / sizeof(float);
  local_summaries_.resize(draws);
  backend_.summarize_draws(batch.draws, local_summaries_.data());
  if (comm_.rank() == 0) gathered_summaries_.resize(draws * ranks);  // [rank][draw]
  comm_.gather_to_root(reinterpret_cast<const float*>(local_summaries_.data()), draws * kWords,
                       comm_.rank() == 0 ? reinterpret_cast<float*>(gathered_summaries_.data()) : nullptr);
  // Round 2: rank 0 names the rows it needs in full (usually none); every rank sends its shards.
  int32_t n_fetch = 0;
  if (comm_.rank() == 0) {
    // A summary flagging non-finite logits means nothing: no draw is settled and no row fetched;
    // step_draws() fails the step once every rank has finished it.
    for (std::size_t i = 0; i < draws * ranks && non_finite_draw_ < 0; ++i)
      if (gathered_summaries_[i].non_finite) non_finite_draw_ = static_cast<int>(i % draws);
  }
  std::vector<int> searching;
  if (comm_.rank() == 0 && resolver && non_finite_draw_ < 0) {  // rank 0 always has a resolver
    std::vector<DrawSummary> per_rank(ranks);
    auto fetch = [&](int32_t row) {
      if (std::find(fetch_rows_.begin(), fetch_rows_.end(), row) == fetch_rows_.end()) fetch_rows_.push_back(row);
    };
    for (std::size_t d = 0; d < draws; ++d) {
      for (std::size_t r = 0; r < ranks; ++r) per_rank[r] = gathered_summaries_[r * draws + d];
      const DrawResolver::Need need = resolver->summaries(static_cast<int>(d), per_rank.data(), static_cast<int>(ranks));
      if (need == DrawResolver::Need::kRow) fetch(batch.draws[d].logit_row);
      if (need == DrawResolver::Need::kSearch) searching.push_back(static_cast<int>(d));
    }
    searched_draws_ += searching.size();
  }
  // Rounds 2..: the threshold search (every rank takes part while rank 0 has queries).
  run_search(batch, resolver, searching);
  if (comm_.rank() == 0 && resolver && non_finite_draw_ < 0) {  // rank 0 always has a resolver
    for (int d : searching)
      if (resolver->needs_row(d) && std::find(fetch_rows_.begin(), fetch_rows_.end(), batch.draws[d].logit_row) ==
                                        fetch_rows_.end())
        fetch_rows_.push_back(batch.draws[d].logit_row);
    n_fetch = static_cast<int32_t>(fetch_rows_.size());
    rows_fetched_ += fetch_rows_.size();
  }
  if (comm_.size() > 1) {
    comm_.broadcast(&n_fetch, sizeof(n_fetch));
    fetch_rows_.resize(static_cast<std::size_t>(n_fetch));
    if (n_fetch > 0) comm_.broadcast(fetch_rows_.data(), fetch_rows_.size() * sizeof(int32_t));
  }
  if (n_fetch > 0) gather_rows(fetch_rows_);
}

void ModelRunner::shutdown(int exit_code) {
  if (shut_down_) return;
  shut_down_ = true;
  spdlog::debug("sampling: {} draws searched in {} threshold-search rounds; {} full logit rows fetched",
                searched_draws_, search_rounds_, rows_fetched_);
  if (comm_.size() > 1) {
    std::vector<uint8_t> plan = serialize_step(StepBatch{}, true);
    plan.resize(plan.size() + sizeof(int32_t));
    const int32_t code = exit_code;
    std::memcpy(plan.data() + plan.size() - sizeof(code), &code, sizeof(code));
    send_plan(plan);
  }
}

int ModelRunner::run_worker_loop() {
  StepBatch batch;
  std::vector<uint8_t> plan;
  for (bool first = true;; first = false) {
    // Rank 0 sends at least every kKeepaliveIntervalS s; the first word may wait for its load.
    if (watchdog_)
      watchdog_->begin_wait(first ? StepWatchdog::Wait::kRank0Startup : StepWatchdog::Wait::kRank0,
                            first ? startup_wait_s_ : watchdog_->rank0_silence_limit());
    broadcast_plan(comm_, plan);
    if (watchdog_) watchdog_->end_wait();
    if (plan.empty()) continue;  // a keepalive: no step
    if (!deserialize_step(plan, batch)) {
      int32_t code = 0;  // rank 0 appends its exit code to the shutdown plan
      if (plan.size() >= 12) std::memcpy(&code, plan.data() + plan.size() - sizeof(code), sizeof(code));
      return code;
    }
    if (watchdog_) watchdog_->begin_step(steps_ + 1, batch.total_tokens());  // plan arrived: time the step
    run_step(batch, nullptr);
    if (watchdog_) watchdog_->end_step();
  }
}

void ModelRunner::maybe_inject_fault() const {
  const char* spec = std::getenv("GPTJ_FAULT_INJECT");
  if (!spec) return;
  int rank = -1;
  unsigned long long step = 0;
  if (std::sscanf(spec, "rank=%d,step=%llu", &rank, &step) == 2 && rank == comm_.rank() &&
      step == steps_)
    fail("fault injected by GPTJ_FAULT_INJECT at step {}", steps_);
}

}  // namespace gptj
