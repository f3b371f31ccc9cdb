// gptj logits: the logits of a token sequence as float32 .npy (docs/DESIGN.md §5). With --prefill N the
// first N tokens are one prefill step and each later token its own decode step through the KV
// cache, which must reproduce the one-shot logits (this is what catches decode-position bugs).
#include "launcher/commands.h"
#include "runtime/core/error.h"
#include "runtime/core/npy.h"

namespace gptj {

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& flag) {
  std::vector<int32_t> ids;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    std::size_t used = 0;
    long value = -1;
    try {
      value = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    GPTJ_CHECK(used == item.size() && !item.empty() && value >= 0 && value <= INT32_MAX,
               "{}: '{}' is not a token id", flag, item);
    ids.push_back(static_cast<int32_t>(value));
    at = comma + 1;
  }
  return ids;
}

void add_common_model_options(CLI::App& command, ModelOptions& options) {
  command.add_option("--model", options.model_dir, "Hugging Face GPT-J checkpoint directory")->required();
  command.add_option("--backend", options.backend, "cpu|cuda|auto")->capture_default_str();
  command.add_option("--dtype", options.dtype,
                     "compute dtype: float32|float16|bfloat16|auto (cpu: float32, or opt-in bfloat16: bfloat16 "
                     "weights and bfloat16-rounded activations, float32 sums)")
      ->capture_default_str();
  command.add_option("--weights", options.weights,
                     "weight format: auto (as stored) | int8 (per output channel) | int4 (groups of 128) | fp8; "
                     "quantized at load")
      ->capture_default_str();
  command.add_flag("--quantize-lm-head", options.quantize_lm_head,
                   "with --weights int8/int4: quantize lm_head too (default: kept as stored)");
  command.add_flag("--int8-activations", options.int8_activations,
                   "with --weights int8 on the cpu backend: quantize each product's input rows to int8 too "
                   "(exact int8 x int8 sums; faster, slightly less accurate: README)");
  command.add_option("--kv-blocks", options.kv_blocks,
                     "KV cache blocks per rank (0: generate and logits take what the run needs, batch and serve "
                     "fill --kv-memory-gb)");
  command.add_option("--kv-memory-gb", options.kv_memory_gb,
                     "KV cache memory per rank (0: generate and logits take what the run needs; batch and serve "
                     "1 on cpu, 24 on cuda)");
  command.add_option("--block-size", options.block_size, "positions per KV block")->capture_default_str();
  command.add_option("--step-timeout", options.step_timeout_s,
                     "base seconds a model step may take before the job is ended as hung (0: off); "
                     "a step also gets 4x this rank's measured seconds per token times its tokens")
      ->capture_default_str();
  command.add_option("--tp", options.tp,
                     "ranks per tensor-parallel replica (0: all ranks, one replica); batch and serve run "
                     "world / tp data-parallel replicas behind rank 0")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

CommandRunner register_logits(CLI::App& app) {
  struct Args {
    ModelOptions model;
    std::string tokens, output;
    bool all_positions = false;
    int prefill = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("logits", "Logits of a token sequence, written as float32 .npy");
  add_common_model_options(*cmd, args->model);
  cmd->add_option("--tokens", args->tokens, "comma-separated token ids")->required();
  cmd->add_option("--output", args->output, "output .npy file")->required();
  cmd->add_flag("--all-positions", args->all_positions, "[n_tokens, vocab] instead of [1, vocab]");
  cmd->add_option("--prefill", args->prefill,
                  "prefill the first N tokens, then decode the rest one step each through the KV cache");
  return [args](World& world) {
    const std::vector<int32_t> ids = parse_id_list(args->tokens, "--tokens");
    const int n = static_cast<int>(ids.size());
    GPTJ_CHECK(args->prefill >= 0 && args->prefill <= n, "--prefill {} must be within 0..{} (the number of tokens)",
               args->prefill, n);
    args->model.kv_need = {1, n};  // one sequence of the --tokens (unless --kv-blocks / --kv-memory-gb)
    ModelSession session(world, args->model, "logits");
    return session.run([&]() {
      const int vocab = session.config().vocab_size;
      const int block_size = session.options().block_size;
      GPTJ_CHECK(n <= session.config().n_positions, "--tokens has {} ids; the model takes at most {}", n,
                 session.config().n_positions);
      std::vector<int32_t> blocks;
      for (int b = 0; b * block_size < n; ++b) blocks.push_back(b);
      GPTJ_CHECK(static_cast<int>(blocks.size()) <= session.kv_blocks(), "--tokens needs {} KV blocks; raise --kv-blocks",
                 blocks.size());
      std::vector<float> rows;  // [n, vocab]
      // Steps: [0, first) as one prefill (first = prefill or n), then one token per step.
      const int first = args->prefill > 0 ? args->prefill : n;
      for (int begin = 0; begin < n;) {
        const int end = begin == 0 ? first : begin + 1;
        StepBatch batch;
        SequenceStep seq;
        seq.tokens.assign(ids.begin() + begin, ids.begin() + end);
        seq.start_pos = begin;
        seq.block_table = blocks;
        seq.all_logits = true;
        batch.seqs.push_back(seq);
        const std::vector<float>& logits = session.runner().step(batch);
        rows.insert(rows.end(), logits.begin(), logits.begin() + static_cast<long>(end - begin) * vocab);
        begin = end;
      }
      if (args->all_positions) {
        write_npy_f32(args->output, {n, vocab}, rows.data());
      } else {
        write_npy_f32(args->output, {1, vocab}, rows.data() + static_cast<std::size_t>(n - 1) * vocab);
      }
      return 0;
    });
  };
}

}  // namespace gptj
