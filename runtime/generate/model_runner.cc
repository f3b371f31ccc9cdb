#include "runtime/generate/model_runner.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/core/error.h"

namespace gptj {

ModelRunner::ModelRunner(Backend& backend, Communicator& comm, int vocab_size)
    : backend_(backend), comm_(comm), vocab_size_(vocab_size) {}

namespace {
void broadcast_plan(Communicator& comm, std::vector<uint8_t>& bytes) {
  uint64_t length = bytes.size();
  comm.broadcast_idle_wait(&length, sizeof(length));  // workers may wait long here: don't spin
  bytes.resize(length);
  comm.broadcast(bytes.data(), length);
}
}  // namespace

const std::vector<float>& ModelRunner::step(const StepBatch& batch) {
  GPTJ_CHECK(comm_.rank() == 0 && !shut_down_, "ModelRunner::step is rank 0's, before shutdown");
  if (watchdog_) watchdog_->begin_step(steps_ + 1, batch.total_tokens());
  if (comm_.size() > 1) {
    std::vector<uint8_t> plan = serialize_step(batch, false);
    broadcast_plan(comm_, plan);
  }
  run_step(batch);
  if (watchdog_) watchdog_->end_step();
  // Gathered layout: [tp][rows][shard]; reorder to [rows][vocab] and drop the padding.
  const int rows = batch.logit_rows();
  const int64_t shard = backend_.vocab_shard_rows();
  logits_.resize(static_cast<std::size_t>(rows) * vocab_size_);
  for (int r = 0; r < rows; ++r) {
    for (int p = 0; p < comm_.size(); ++p) {
      const int64_t begin = p * shard;
      const int64_t count = std::min<int64_t>(shard, vocab_size_ - begin);
      if (count <= 0) continue;
      std::memcpy(&logits_[static_cast<std::size_t>(r) * vocab_size_ + begin],
                  &gathered_[(static_cast<std::size_t>(p) * rows + r) * shard], sizeof(float) * count);
    }
  }
  return logits_;
}

void ModelRunner::run_step(const StepBatch& batch) {
  ++steps_;
  maybe_inject_fault();
  const std::size_t count = static_cast<std::size_t>(batch.logit_rows()) * backend_.vocab_shard_rows();
  shard_.resize(count);
  backend_.forward(batch, shard_.data());
  if (comm_.rank() == 0) gathered_.resize(count * comm_.size());
  comm_.gather_to_root(shard_.data(), count, comm_.rank() == 0 ? gathered_.data() : nullptr);
}

void ModelRunner::shutdown(int exit_code) {
  if (shut_down_) return;
  shut_down_ = true;
  if (comm_.size() > 1) {
    std::vector<uint8_t> plan = serialize_step(StepBatch{}, true);
    plan.resize(plan.size() + sizeof(int32_t));
    const int32_t code = exit_code;
    std::memcpy(plan.data() + plan.size() - sizeof(code), &code, sizeof(code));
    broadcast_plan(comm_, plan);
  }
}

int ModelRunner::run_worker_loop() {
  StepBatch batch;
  std::vector<uint8_t> plan;
  for (;;) {
    broadcast_plan(comm_, plan);
    if (!deserialize_step(plan, batch)) {
      int32_t code = 0;  // rank 0 appends its exit code to the shutdown plan
      if (plan.size() >= 12) std::memcpy(&code, plan.data() + plan.size() - sizeof(code), sizeof(code));
      return code;
    }
    if (watchdog_) watchdog_->begin_step(steps_ + 1, batch.total_tokens());  // plan arrived: time the step
    run_step(batch);
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
