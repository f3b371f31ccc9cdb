// gptj generate: one prompt (text or token ids) through the scheduler; prints the continuation.
#include <boost/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <iostream>

#include "launcher/commands.h"
#include "launcher/sampling_options.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/generate/generation_config.h"
#include "runtime/generate/tokenizer.h"
#include "runtime/generate/utf8_stream.h"

namespace gptj {

void add_batching_options(CLI::App& command, BatchingOptions& options) {
  command.add_option("--max-batch", options.max_batch, "sequences in the running batch at most")->capture_default_str();
  command.add_option("--max-step-tokens", options.max_step_tokens,
                     "tokens per step: decodes first, then prompt chunks (chunked prefill; fewer: steadier "
                     "token latency)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command.add_flag("!--no-prefix-cache", options.prefix_cache,
                   "recompute every prompt (default: reuse the KV blocks of prefixes computed before)");
}

SchedulerOptions scheduler_options_for(ModelSession& session, const BatchingOptions& batching,
                                       const Tokenizer* tokenizer) {
  SchedulerOptions options;
  options.max_batch = batching.max_batch;
  options.max_step_tokens = batching.max_step_tokens;
  options.prefix_caching = batching.prefix_cache;
  options.kv.num_blocks = session.kv_blocks();
  options.kv.block_size = session.options().block_size;
  options.n_positions = session.config().n_positions;
  options.eos_id = session.config().eos_token_id;
  options.allowed_vocab = session.config().vocab_size;
  if (tokenizer) options.allowed_vocab = std::min(options.allowed_vocab, tokenizer->vocab_size());
  return options;
}

CommandRunner register_generate(CLI::App& app) {
  struct Args {
    ModelOptions model;
    GenerationOptions gen;
    std::string prompt, tokens;
    bool json = false;
    int n = 1;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("generate", "Continue one prompt and print the continuation");
  add_common_model_options(*cmd, args->model);
  auto* prompt = cmd->add_option("--prompt", args->prompt, "prompt text (needs the tokenizer files)");
  auto* tokens = cmd->add_option("--tokens", args->tokens, "prompt as comma-separated token ids");
  prompt->excludes(tokens);
  cmd->add_flag("--json", args->json, "print one JSON object (text, tokens, finish_reason; samples when --n > 1)");
  cmd->add_option("--n", args->n, "samples of the prompt (sample k: seed + k), each printed")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  add_sampling_options(*cmd, args->gen);
  return [args, cmd](World& world) {
    GPTJ_CHECK(!args->prompt.empty() || !args->tokens.empty(), "generate needs --prompt or --tokens");
    // The request first, on every rank (the same files, the same arguments), so that each sizes its
    // KV pool to it: --n sequences of prompt + max_new_tokens positions (ModelOptions::kv_need).
    std::optional<Tokenizer> tokenizer;
    GenerationRequest request;
    if (!args->tokens.empty()) {
      request.prompt = parse_id_list(args->tokens, "--tokens");
    } else if (std::filesystem::exists(std::filesystem::path(args->model.model_dir) / "config.json")) {
      // (Without config.json the session says what is wrong with --model.)
      GPTJ_CHECK(Tokenizer::available(args->model.model_dir),
                 "--prompt needs vocab.json and merges.txt in {}; use --tokens", args->model.model_dir);
      tokenizer = Tokenizer::from_model_dir(args->model.model_dir);
      request.prompt = tokenizer->encode(args->prompt);
    }
    // generation_config.json's defaults for what the command line leaves unset (as vLLM).
    const GenerationDefaults defaults = load_generation_defaults(args->model.model_dir);
    SamplingParams& sp = args->gen.sampling;
    auto unset = [&](const char* flag) { return cmd->count(flag) == 0; };
    if (defaults.temperature && unset("--temperature")) sp.temperature = *defaults.temperature;
    if (defaults.top_k && unset("--top-k")) sp.top_k = *defaults.top_k;
    if (defaults.top_p && unset("--top-p")) sp.top_p = *defaults.top_p;
    if (defaults.repetition_penalty && unset("--repetition-penalty")) sp.repetition_penalty = *defaults.repetition_penalty;
    if (defaults.no_repeat_ngram_size && unset("--no-repeat-ngram-size"))
      sp.no_repeat_ngram_size = *defaults.no_repeat_ngram_size;
    if (defaults.max_new_tokens && unset("--max-new-tokens")) args->gen.max_new_tokens = *defaults.max_new_tokens;
    request.sampling = sp;
    request.max_new_tokens = args->gen.max_new_tokens;
    request.stop = args->gen.stop;
    request.n = args->n;
    // The last token drawn is never written to the cache, but prompt + max_new_tokens keeps the
    // scheduler's admission check ((prompt + 1) positions) satisfied for max_new_tokens >= 1.
    const int64_t positions = static_cast<int64_t>(request.prompt.size()) + std::max(request.max_new_tokens, 1);
    args->model.kv_need = {args->n, static_cast<int>(std::min<int64_t>(positions, INT32_MAX))};
    ModelSession session(world, args->model, "generate");
    return session.run([&]() {
      if (!tokenizer && Tokenizer::available(args->model.model_dir))
        tokenizer = Tokenizer::from_model_dir(args->model.model_dir);
      SchedulerOptions options = scheduler_options_for(session, BatchingOptions{.max_batch = args->n},
                                                       tokenizer ? &*tokenizer : nullptr);
      if (defaults.eos_token_id) options.eos_id = *defaults.eos_token_id;
      Scheduler scheduler(session.runner(), options, tokenizer ? &*tokenizer : nullptr);
      scheduler.submit(request);
      struct Sample {
        std::vector<int32_t> generated;
        std::string text, finish;
      };
      std::vector<Sample> samples(static_cast<std::size_t>(args->n));  // sample k: handle k
      while (!scheduler.idle()) {
        for (const auto& event : scheduler.step()) {
          if (event.finish == FinishReason::kNone || event.handle >= samples.size()) continue;
          Sample& s = samples[event.handle];
          s.generated = *event.generated;
          s.finish = finish_reason_name(event.finish);
          s.text = event.finish == FinishReason::kStop ? event.stop_text
                   : tokenizer                         ? tokenizer->decode(s.generated)
                                                       : "";
        }
      }
      const ReplicaStats kv = scheduler.stats();
      spdlog::debug("generate: peak {} of {} KV blocks used, {} preemptions", kv.peak_used_blocks, kv.kv_blocks_total,
                    kv.preemptions);
      auto as_json = [&](const Sample& s) {
        boost::json::object out{{"text", utf8::to_valid_utf8(s.text)}, {"finish_reason", s.finish},
                                {"prompt_tokens", request.prompt.size()},
                                {"completion_tokens", s.generated.size()}};
        out["tokens"] = boost::json::value_from(s.generated);
        return out;
      };
      if (args->json) {
        boost::json::object out = as_json(samples[0]);
        if (args->n > 1) {
          boost::json::array all;
          for (const Sample& s : samples) all.push_back(as_json(s));
          out["samples"] = std::move(all);
        }
        std::cout << boost::json::serialize(out) << std::endl;
        return 0;
      }
      for (std::size_t k = 0; k < samples.size(); ++k) {
        if (args->n > 1) std::cout << "=== sample " << k << " (" << samples[k].finish << ")" << std::endl;
        if (tokenizer) {
          std::cout << samples[k].text << std::endl;
        } else {
          for (std::size_t i = 0; i < samples[k].generated.size(); ++i)
            std::cout << (i ? "," : "") << samples[k].generated[i];
          std::cout << std::endl;
        }
      }
      return 0;
    });
  };
}

}  // namespace gptj
