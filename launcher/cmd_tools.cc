// gptj make-random, tokenize, detokenize: single-process tools (rank 0 does the work).
#include <boost/json.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "launcher/commands.h"
#include "runtime/core/error.h"
#include "runtime/generate/tokenizer.h"
#include "runtime/model/safetensors.h"

namespace gptj {
namespace fs = std::filesystem;

namespace {

// splitmix64 + Box-Muller: fast, deterministic standard normals for random checkpoints.
class NormalStream {
 public:
  explicit NormalStream(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  float next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(bits() >> 11) + 1.0) / 9007199254740993.0;
    const double u2 = static_cast<double>(bits() >> 11) / 9007199254740992.0;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(2 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(2 * M_PI * u2));
  }

 private:
  uint64_t bits() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
  float spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace

void make_random_model(const GptjConfig& config, const std::string& out_dir, uint64_t seed,
                       DType dtype) {
  fs::create_directories(out_dir);
  GptjConfig written = config;
  written.torch_dtype = std::string(dtype_name(dtype));
  std::ofstream(fs::path(out_dir) / "config.json") << config_to_json(written) << "\n";
  std::map<std::string, TensorToWrite> tensors;
  uint64_t index = 0;
  for (const auto& [name, shape] : gptj_tensor_shapes(config)) {
    NormalStream normal(seed * 1000003ull + index++);
    int64_t count = 1;
    for (auto d : shape) count *= d;
    const bool is_ln = name.find("ln_") != std::string::npos;
    const bool is_gamma = is_ln && name.ends_with(".weight");
    std::vector<float> values(static_cast<std::size_t>(count));
    for (auto& v : values) v = is_gamma ? 1.0f + 0.1f * normal.next() : (is_ln ? 0.1f : 0.02f) * normal.next();
    TensorToWrite t{dtype, shape, std::vector<uint8_t>(values.size() * dtype_size(dtype))};
    convert_from_f32(dtype, values.data(), t.bytes.data(), values.size());
    tensors.emplace(name, std::move(t));
  }
  write_safetensors((fs::path(out_dir) / "model.safetensors").string(), tensors);
  // Tokenizer files (GPT-2 BPE) for vocabularies that hold them.
  const fs::path bpe_dir = fs::path(GPTJ_SOURCE_DIR) / "tests/data/tiny-gptj-a/model";
  if (config.vocab_size >= 50257 && fs::exists(bpe_dir / "vocab.json")) {
    for (const char* file : {"vocab.json", "merges.txt"})
    {
      fs::copy_file(bpe_dir / file, fs::path(out_dir) / file, fs::copy_options::overwrite_existing);
      fs::permissions(fs::path(out_dir) / file, fs::perms::owner_write, fs::perm_options::add);
    }
  }
}

CommandRunner register_make_random(CLI::App& app) {
  struct Args {
    std::string config, output, dtype = "float32";
    uint64_t seed = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("make-random", "Write a random-weight GPT-J model directory");
  cmd->add_option("--config", args->config, "config.json giving the shape")->required();
  cmd->add_option("--output", args->output, "model directory to write")->required();
  cmd->add_option("--seed", args->seed, "weight seed")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "stored dtype: float32|float16|bfloat16")->capture_default_str();
  return [args](World& world) {
    if (world.rank() != 0) return 0;
    make_random_model(load_config(args->config), args->output, args->seed, parse_dtype(args->dtype));
    std::cerr << "wrote " << args->output << "\n";
    return 0;
  };
}

CommandRunner register_tokenize(CLI::App& app) {
  struct Args {
    std::string model, text;
    bool has_text = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Text to token ids (a JSON array on stdout)");
  cmd->add_option("--model", args->model, "model directory with vocab.json + merges.txt")->required();
  auto* text = cmd->add_option("--text", args->text, "text (default: all of stdin)");
  return [args, text](World& world) {
    if (world.rank() != 0) return 0;
    Tokenizer tokenizer = Tokenizer::from_model_dir(args->model);
    std::string input = args->text;
    if (text->count() == 0) input.assign(std::istreambuf_iterator<char>(std::cin), {});
    std::cout << boost::json::serialize(boost::json::value_from(tokenizer.encode(input))) << "\n";
    return 0;
  };
}

CommandRunner register_detokenize(CLI::App& app) {
  struct Args {
    std::string model, tokens;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("detokenize", "Token ids to text (raw, on stdout)");
  cmd->add_option("--model", args->model, "model directory with vocab.json + merges.txt")->required();
  cmd->add_option("--tokens", args->tokens, "comma-separated token ids")->required();
  return [args](World& world) {
    if (world.rank() != 0) return 0;
    Tokenizer tokenizer = Tokenizer::from_model_dir(args->model);
    std::cout << tokenizer.decode(parse_id_list(args->tokens, "--tokens"));
    return 0;
  };
}

}  // namespace gptj
