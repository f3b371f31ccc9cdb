// What a caller asks of an Engine (runtime/generate/engine.h) and what it reports back: one
// GenerationRequest per prompt, GenerationEvents per step. Plain data (rank 0; the data-parallel
// front-end also sends them between ranks: runtime/generate/wire.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/generate/sampler.h"

namespace gptj {

struct GenerationRequest {
  uint64_t handle = 0;  // caller's key, echoed in events
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int max_new_tokens = 64;
  std::vector<std::string> stop;  // needs a tokenizer
  bool ignore_eos = false;
  // Samples of this prompt: sample k has handle + k and seed + k (when seeded). The prompt is
  // prefilled once; the samples share its full KV blocks and copy only its partly filled last one.
  int n = 1;
  // Also report the logprobs of prompt tokens 1.. (each given the tokens before it) with
  // sampling.logprobs alternatives, in the request's first event. max_new_tokens may then be 0:
  // the request ends after its prefill (lm-eval-style scoring).
  bool score_prompt = false;
};

enum class FinishReason { kNone, kLength, kStop, kEos, kCancelled };
const char* finish_reason_name(FinishReason reason);

// What happened to one request in a step: a new token (unless the token completed a stop string),
// and whether it finished.
struct GenerationEvent {
  uint64_t handle = 0;
  TokenChoice choice;          // choice.token == -1 when nothing is emitted this step
  FinishReason finish = FinishReason::kNone;
  const std::vector<int32_t>* generated = nullptr;  // all tokens emitted so far (stop text removed)
  std::string stop_text;       // on kStop with a tokenizer: the generated text, cut before the stop string
  int prompt_tokens = 0;
  // score_prompt, first event only: prompt tokens 1.. (token = the prompt's id, its logprob, top).
  std::vector<TokenChoice> prompt_logprobs;
};

}  // namespace gptj
