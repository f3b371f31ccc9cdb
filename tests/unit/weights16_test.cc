// The CPU backend keeps float16/bfloat16 weights 16-bit and widens them in its kernels. A model
// stored in 16 bits must give the same logits as the same values stored as float32 (widened
// exactly), through every kernel path: 1-3 rows (decode), 4-64 rows, and > 64 rows (prefill); once
// per CPU ISA level (suffix _avx2, _avx512, _avx512bf16), skipped where the CPU lacks the level.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <tuple>

#include "parallel/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/generate/model_runner.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"
#include "tests/unit/cpu_isa_levels.h"

namespace gptj {
namespace {

namespace fs = std::filesystem;

GptjConfig tiny_config() {
  GptjConfig c;
  c.vocab_size = 96;
  c.n_positions = 256;
  c.n_embd = 64;
  c.n_layer = 2;
  c.n_head = 4;
  c.rotary_dim = 8;
  c.n_inner = 256;
  c.eos_token_id = c.bos_token_id = 95;
  c.activation_function = "gelu_new";
  return c;
}

// Writes the model twice: weight matrices in `dtype`, and the same values widened to float32.
void write_pair(const GptjConfig& c, DType dtype, const fs::path& narrow, const fs::path& wide) {
  const auto shapes = gptj_tensor_shapes(c);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::map<std::string, TensorToWrite> narrow_tensors, wide_tensors;
  for (const auto& [name, shape] : shapes) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    const bool gamma = name.find("ln_") != std::string::npos && name.ends_with(".weight");
    std::vector<float> values(static_cast<std::size_t>(n));
    for (auto& v : values) v = gamma ? 1.0f + 0.1f * normal(rng) : 0.05f * normal(rng);
    const bool matrix = shape.size() == 2;
    TensorToWrite t{matrix ? dtype : DType::kF32, shape, std::vector<uint8_t>(values.size() * (matrix ? 2 : 4))};
    convert_from_f32(t.dtype, values.data(), t.bytes.data(), values.size());
    TensorToWrite w{DType::kF32, shape, std::vector<uint8_t>(values.size() * 4)};
    convert_to_f32(t.dtype, t.bytes.data(), reinterpret_cast<float*>(w.bytes.data()), values.size());
    narrow_tensors.emplace(name, std::move(t));
    wide_tensors.emplace(name, std::move(w));
  }
  for (const auto& [dir, tensors] : {std::pair{narrow, &narrow_tensors}, std::pair{wide, &wide_tensors}}) {
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << config_to_json(c);
    write_safetensors((dir / "model.safetensors").string(), *tensors);
  }
}

// Logits of a 100-token prompt (one prefill) then 3 decode steps, and of 3 sequences decoding together.
std::vector<float> run(const fs::path& dir) {
  const GptjConfig config = load_config((dir / "config.json").string());
  Checkpoint checkpoint(dir.string());
  SingleCommunicator comm;
  BackendOptions options;
  options.kv.num_blocks = 64;
  auto backend = make_cpu_backend(config, checkpoint, options, comm);
  ModelRunner runner(*backend, comm, config.vocab_size);
  std::vector<float> all;
  std::vector<int32_t> prompt(100);
  for (int i = 0; i < 100; ++i) prompt[i] = (i * 31 + 5) % 95;
  std::vector<int32_t> table(8);
  for (int b = 0; b < 8; ++b) table[b] = b;
  auto keep = [&](const std::vector<float>& logits) { all.insert(all.end(), logits.begin(), logits.end()); };
  keep(runner.step({{{prompt, 0, table, true}}, {}, {}}));  // > 64 rows
  for (int t = 0; t < 3; ++t) keep(runner.step({{{{int32_t(t + 1)}, 100 + t, table, false}}, {}, {}}));  // 1 row
  StepBatch three;  // 3 sequences x 5 tokens: 15 rows (the 4..64-row kernel)
  for (int s = 0; s < 3; ++s) {
    std::vector<int32_t> t2(8);
    for (int b = 0; b < 8; ++b) t2[b] = 8 + 8 * s + b;
    three.seqs.push_back({{1, 2, 3, 4, int32_t(s)}, 0, t2, true});
  }
  keep(runner.step(three));
  return all;
}

// Param: the weights' dtype and the CPU ISA level.
class Weights16 : public testing::CpuIsaTest<std::tuple<DType, cpu::CpuIsa>> {
 protected:
  cpu::CpuIsa level() const override { return std::get<1>(GetParam()); }
  DType dtype() const { return std::get<0>(GetParam()); }
};

TEST_P(Weights16, SameLogitsAsTheWidenedFloat32Model) {
  const fs::path root = fs::temp_directory_path() / ("gptj-weights16-" + std::to_string(::getpid()) + "-" +
                                                     std::string(dtype_name(dtype())));
  write_pair(tiny_config(), dtype(), root / "narrow", root / "wide");
  const auto narrow = run(root / "narrow"), wide = run(root / "wide");
  fs::remove_all(root);
  ASSERT_EQ(narrow.size(), wide.size());
  float worst = 0;  // NaN anywhere makes it NaN, and the check below fails
  for (std::size_t i = 0; i < narrow.size(); ++i) {
    const float diff = std::fabs(narrow[i] - wide[i]);
    if (!(diff <= worst)) worst = diff;
  }
  EXPECT_LE(worst, 1e-5f) << dtype_name(dtype()) << " weights";
}

INSTANTIATE_TEST_SUITE_P(DtypesAndLevels, Weights16,
                         ::testing::Combine(::testing::Values(DType::kF16, DType::kBF16), testing::kAllCpuIsaLevels),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" +
                                  std::string(cpu::cpu_isa_name(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace gptj
