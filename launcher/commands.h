// The subcommands of `gptj`. Each registers its CLI11 subcommand and options; main() runs the one
// chosen. Model commands run on every rank (rank 0 does the I/O, the others serve steps).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

#include "launcher/session.h"
#include "runtime/generate/scheduler.h"

namespace gptj {

// Runs the chosen subcommand; returns the exit code.
using CommandRunner = std::function<int(World&)>;

void add_common_model_options(CLI::App& command, ModelOptions& options);

CommandRunner register_logits(CLI::App& app);
CommandRunner register_generate(CLI::App& app);
CommandRunner register_bench(CLI::App& app);
CommandRunner register_make_random(CLI::App& app);
CommandRunner register_tokenize(CLI::App& app);
CommandRunner register_detokenize(CLI::App& app);
CommandRunner register_batch(CLI::App& app);
CommandRunner register_serve(CLI::App& app);

// The continuous-batching flags `gptj batch` and `gptj serve` share (cmd_generate.cc).
struct BatchingOptions {
  int max_batch = 64;         // --max-batch
  int max_step_tokens = 4096; // --max-step-tokens
  bool prefix_cache = true;   // --no-prefix-cache turns it off
};
void add_batching_options(CLI::App& command, BatchingOptions& options);

// Scheduler options matching the session's KV cache, model limits and `tokenizer` (the caller's,
// may be null: then every id of the embedding may be sampled), with `batching`'s limits (cmd_generate.cc).
SchedulerOptions scheduler_options_for(ModelSession& session, const BatchingOptions& batching,
                                       const Tokenizer* tokenizer);

// Parses "1,2,3" into ids; throws naming the bad item.
std::vector<int32_t> parse_id_list(const std::string& text, const std::string& flag);

}  // namespace gptj
