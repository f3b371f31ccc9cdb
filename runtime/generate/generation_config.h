// Defaults from a checkpoint's generation_config.json (Hugging Face), applied as vLLM applies them:
// to every setting the user did not give. Honoured: temperature, top_k, top_p (these three only
// when the file says do_sample: true; Hugging Face samples with them only then), repetition_penalty,
// no_repeat_ngram_size, max_new_tokens, eos_token_id (an int, or the first of a list). Every other
// field is ignored. Unlike generate(), nothing is assumed where the file is silent: Hugging Face
// applies top_k = 50 when sampling unless told otherwise; we apply no top-k (README, "Sampling
// defaults").
#pragma once
#include <optional>
#include <string>

#include "runtime/generate/sampler.h"

namespace gptj {

struct GenerationDefaults {
  std::optional<float> temperature, top_p, repetition_penalty;
  std::optional<int> top_k, no_repeat_ngram_size, max_new_tokens, eos_token_id;
};

// The defaults in DIR/generation_config.json (none when the file is absent); a field of the wrong
// type or out of range is an error naming the file and the field.
GenerationDefaults load_generation_defaults(const std::string& model_dir);

}  // namespace gptj
