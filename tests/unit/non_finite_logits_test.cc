// A forward pass whose logits are NaN or ±inf is an error naming the step, never silent output: the
// fixture tiny-gptj-a with one lm_head.bias entry made NaN or +inf (so exactly one logit of every
// row is not finite, which a greedy argmax over the row would simply pass over) fails step_draws()
// and step() with a gptj::Error naming the step, the logit row and its sequence and position. The
// flag itself (DrawSummary::non_finite) is tested in draw_test.cc.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/generate/model_runner.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/expect_error.h"
#include "tests/golden/golden_data.h"

namespace gptj {
namespace {
namespace fs = std::filesystem;

constexpr int kPoisonedToken = 1234;  // its lm_head bias becomes non-finite

// A copy of tiny-gptj-a whose lm_head.bias[kPoisonedToken] is `value`; removed at the end.
class PoisonedModel {
 public:
  explicit PoisonedModel(float value)
      : dir_(fs::temp_directory_path() / ("gptj_non_finite_test_" + std::to_string(::getpid()))) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string source = testing::model_dir("tiny-gptj-a");
    fs::copy_file(source + "/config.json", dir_ / "config.json");
    std::ifstream in(source + "/model.safetensors", std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
    uint64_t header_len = 0;
    std::memcpy(&header_len, bytes.data(), 8);
    const auto header = boost::json::parse(std::string_view(bytes.data() + 8, header_len)).as_object();
    const auto begin = header.at("lm_head.bias").at("data_offsets").as_array()[0].to_number<uint64_t>();
    std::memcpy(bytes.data() + 8 + header_len + begin + 4 * kPoisonedToken, &value, 4);
    std::ofstream(dir_ / "model.safetensors", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    config_ = load_config((dir_ / "config.json").string());
    checkpoint_ = std::make_unique<Checkpoint>(dir_.string());
    BackendOptions options;
    options.kv.num_blocks = 8;
    options.kv.block_size = 16;
    backend_ = make_cpu_backend(config_, *checkpoint_, options, comm_);
    runner_ = std::make_unique<ModelRunner>(*backend_, comm_, config_.vocab_size);
  }
  ~PoisonedModel() {
    runner_.reset();
    backend_.reset();
    checkpoint_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  ModelRunner& runner() { return *runner_; }

 private:
  fs::path dir_;
  GptjConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  SingleCommunicator comm_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<ModelRunner> runner_;
};

// Two sequences: the second (3 tokens, prefilled from position 0) is the one whose row is drawn from.
StepBatch two_sequences() {
  StepBatch batch;
  SequenceStep a;
  a.tokens = {464, 6193};
  a.block_table = {0};
  SequenceStep b;
  b.tokens = {15496, 995, 318};
  b.block_table = {1};
  batch.seqs = {a, b};
  return batch;
}

DrawPlan greedy_plan(int row) {
  DrawPlan plan;
  plan.logit_row = row;
  plan.allowed_vocab = 50257;
  plan.candidates = 1;  // plain greedy: the summary lists only the argmax
  return plan;
}

void expect_step_draws_fails(float value) {
  PoisonedModel model(value);
  StepBatch batch = two_sequences();
  batch.draws.push_back(greedy_plan(1));
  testing::expect_gptj_error([&] { model.runner().step_draws(batch, [](int, const DrawSummary*, int) { return false; }); },
                             {"step 1:", "NaN or infinite logits", "logit row 1: position 2 of sequence 1", "rank 0"});
  // A step of prompt chunks only draws nothing: no logits are reduced, and none are checked.
  StepBatch chunks = two_sequences();
  chunks.seqs[0].start_pos = 2;
  chunks.seqs[0].tokens = {318};
  chunks.seqs.pop_back();
  EXPECT_NO_THROW(model.runner().step_draws(chunks, [](int, const DrawSummary*, int) { return false; }));
}

TEST(NonFiniteLogits, NanFailsTheDrawingStep) { expect_step_draws_fails(std::numeric_limits<float>::quiet_NaN()); }
TEST(NonFiniteLogits, InfinityFailsTheDrawingStep) { expect_step_draws_fails(std::numeric_limits<float>::infinity()); }

TEST(NonFiniteLogits, RawLogitsStepFails) {
  PoisonedModel model(std::numeric_limits<float>::quiet_NaN());
  StepBatch batch = two_sequences();
  batch.seqs[1].all_logits = true;  // rows: sequence 0's last, then sequence 1's three
  testing::expect_gptj_error([&] { model.runner().step(batch); },
                             {"step 1:", "NaN or infinite logits", "logit row 0: position 1 of sequence 0"});
}

TEST(NonFiniteLogits, FiniteModelSteps) {
  PoisonedModel model(-3.0f);  // a finite edit: nothing to report
  StepBatch batch = two_sequences();
  batch.draws.push_back(greedy_plan(1));
  EXPECT_NO_THROW(model.runner().step_draws(batch, [](int, const DrawSummary*, int) { return false; }));
}

}  // namespace
}  // namespace gptj
