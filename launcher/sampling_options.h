// CLI options for sampling, shared by `gptj generate` and `gptj bench`.
#pragma once
#include <CLI/CLI.hpp>

#include "runtime/generate/scheduler.h"

namespace gptj {

struct GenerationOptions {
  SamplingParams sampling;
  int max_new_tokens = 32;
  std::vector<std::string> stop;
  uint64_t seed = 0;
  bool seeded = false;
};

inline void add_sampling_options(CLI::App& cmd, GenerationOptions& o) {
  cmd.add_option("--max-new-tokens", o.max_new_tokens, "tokens to generate")->capture_default_str();
  cmd.add_option("--temperature", o.sampling.temperature, "0: greedy")->capture_default_str();
  cmd.add_option("--top-k", o.sampling.top_k, "0: off");
  cmd.add_option("--top-p", o.sampling.top_p, "1: off");
  cmd.add_option("--repetition-penalty", o.sampling.repetition_penalty, "Hugging Face semantics; 1: off");
  cmd.add_option("--presence-penalty", o.sampling.presence_penalty, "OpenAI semantics");
  cmd.add_option("--frequency-penalty", o.sampling.frequency_penalty, "OpenAI semantics");
  cmd.add_option("--no-repeat-ngram-size", o.sampling.no_repeat_ngram_size, "0: off");
  cmd.add_option("--stop", o.stop, "stop string (repeatable)");
  cmd.add_option_function<uint64_t>(
      "--seed", [&o](uint64_t seed) { o.sampling.seed = seed; }, "sampling seed");
}

}  // namespace gptj
