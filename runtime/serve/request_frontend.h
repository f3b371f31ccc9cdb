// The request front-end that `gptj serve` (runtime/serve/completion_api.h) and `gptj batch`
// (launcher/batch_io.h, launcher/batch_lines.h) share, rank 0 only, pure functions:
//  - parse_generation_fields(): the generation fields of a request (max tokens, n, temperature,
//    top_k, top_p, penalties, no_repeat_ngram_size, seed, stop, logprobs, logit_bias) → a
//    GenerationRequest, with one validation and one error wording for every format: each refusal is an
//    ApiError (400) whose message is one line naming the field ('temperature' must be between ...)
//    and whose `param` is the field. The formats differ only in GenerationFieldRules (field name and
//    range of the token count, temperature default and range, n's limit, chat's logprobs shape).
//  - collect_token() / finish_choice(): a choice's scheduler events → ChoiceResult.
//  - completion_body(): the non-streaming OpenAI answer (text_completion or chat.completion) from the
//    request and its ChoiceResults; the streaming code builds its chunks from the same pieces
//    (response_envelope, choice_json, choice_logprobs, usage_json).
#pragma once
#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/generate/scheduler.h"
#include "runtime/generate/tokenizer.h"

namespace gptj {

// A request the API refuses: HTTP status and OpenAI's error object ("type", "param"). A gptj::Error
// too, so `gptj batch` reports it as the line's error like any other.
struct ApiError : Error {
  ApiError(int status, std::string message, std::string param = "", std::string type = "invalid_request_error")
      : Error(message), status(status), type(std::move(type)), param(std::move(param)) {}
  int status;
  std::string type, param;
};

// {"error": {"message", "type", "param" (null when empty), "code": null}}, as an object and serialized.
boost::json::object error_object(const std::string& message, const std::string& type, const std::string& param = "");
std::string error_body(const std::string& message, const std::string& type, const std::string& param = "");

// Field readers over a request object. A member that is null counts as absent (returns `fallback`;
// present() returns nullptr). Each throws ApiError(400, ..., name) naming the field when the value has
// the wrong type or lies outside [lo, hi].
const boost::json::value* present(const boost::json::object& o, const char* name);
int64_t get_int(const boost::json::object& o, const char* name, int64_t fallback, int64_t lo, int64_t hi);
double get_number(const boost::json::object& o, const char* name, double fallback, double lo, double hi);
bool get_bool(const boost::json::object& o, const char* name, bool fallback);

// What a request format decides for itself; every other field is read and checked the same way.
struct GenerationFieldRules {
  const char* max_tokens_field = "max_tokens";  // the field giving how many tokens to generate
  int default_max_tokens = 16;
  int min_max_tokens = 1;                        // 0 where the prompt is only scored
  int max_max_tokens = 2048;
  double default_temperature = 1.0;
  double max_temperature = 2.0;
  int max_n = 16;
  bool chat_logprobs = false;  // chat: "logprobs": true + "top_logprobs": N; else "logprobs": N
};

// Reads the generation fields of request `o` into a GenerationRequest (prompt, handle and
// score_prompt are left for the caller):
//   max_new_tokens  ← rules.max_tokens_field, integer in [min_max_tokens, max_max_tokens]
//   n               ← "n", integer in [1, max_n]
//   sampling        ← "temperature" [0, max_temperature], "top_k" [-1, 2^20] (-1 and 0: off), "top_p"
//                     [0, 1], "repetition_penalty" [1e-6, 100], "presence_penalty" and
//                     "frequency_penalty" [-2, 2], "no_repeat_ngram_size" [0, 2^20], "seed" (any
//                     integer; negative ones wrap to uint64), logprobs (rules.chat_logprobs: "logprobs"
//                     bool + "top_logprobs" [0, 20]; else "logprobs" [0, 20]: sets report_logprob),
//                     "logit_bias" (parse_logit_bias)
//   stop            ← "stop": a string or at most 16 strings; empty ones are dropped; needs `tokenizer`
// Throws ApiError (400, param = the field).
GenerationRequest parse_generation_fields(const boost::json::object& o, const GenerationFieldRules& rules,
                                          int allowed_vocab, const Tokenizer* tokenizer);

// "logit_bias" of `o` (OpenAI semantics): an object mapping token ids, written as decimal strings,
// to a number in [-100, 100] that is added to that token's logit before sampling. Keys must be ids in
// [0, allowed_vocab) written canonically (no sign, no leading zero). Returns (token, bias) sorted by token; empty when absent. Throws ApiError (400,
// param "logit_bias").
std::vector<std::pair<int32_t, float>> parse_logit_bias(const boost::json::object& o, int allowed_vocab);

// What the API knows of the model it serves.
struct ModelInfo {
  std::string name;              // "model" in answers and /v1/models
  int n_positions = 2048;        // prompt + max_tokens must fit
  int allowed_vocab = 50257;     // prompt ids must be below this
  int vocab_size = 50400;        // rows of the embedding: ids in [allowed_vocab, vocab_size) are GPT-J's padding
  int eos_id = -1;
  int kv_capacity_tokens = 0;    // KV cache size in tokens (one sequence must fit)
  int max_batch = 64;            // sequences a replica runs at once (n samples sharing a prefill must fit)
  const Tokenizer* tokenizer = nullptr;  // null: token prompts only, no text in answers
  int64_t created = 0;           // Unix time the server loaded the model ("created" in /v1/models)
  std::string fingerprint;       // "system_fingerprint" in answers: the backend configuration
};

// A validated /v1/completions or /v1/chat/completions request (parse_completion_request).
struct CompletionRequest {
  std::vector<std::vector<int32_t>> prompts;
  int max_tokens = 16;
  int n = 1;
  bool stream = false, include_usage = false, echo = false;
  std::optional<int> logprobs;  // top-N alternatives; nullopt: no logprobs in the answer
  std::vector<std::string> stop;
  SamplingParams sampling;      // temperature defaults to 1 as in OpenAI
  std::string user;
  bool chat = false;            // /v1/chat/completions: one prompt rendered from "messages"
                                // (runtime/serve/chat_template.h), answered as chat.completion
};

// One choice of a completion as its scheduler events leave it.
struct ChoiceResult {
  int prompt_index = 0;
  std::vector<int32_t> tokens;  // generated, without a final <|endoftext|>
  std::vector<float> token_logprobs;
  std::vector<std::vector<std::pair<int32_t, float>>> top;
  std::vector<TokenChoice> prompt_scores;  // echo + logprobs: prompt tokens 1.. (token 0 has none)
  std::string text, finish;  // once done: the generated text and "stop" | "length"
  bool done = false;
};

// Takes event `e` of choice `c` (not done, not cancelled): its prompt scores (first event) and its
// token, unless the token is the final <|endoftext|>. Returns whether a token was appended.
bool collect_token(ChoiceResult& c, const GenerationEvent& e);
// For the event that ends `c` (e.finish set): keeps the tokens the scheduler kept (a stop string may
// have removed the last ones; an end-of-text is dropped), sets text (nothing without a tokenizer) and
// finish, marks it done.
void finish_choice(ChoiceResult& c, const GenerationEvent& e, const Tokenizer* tokenizer);

// The answer's top-level fields: {"id", "object" (text_completion | chat.completion |
// chat.completion.chunk), "created", "model", "system_fingerprint"} (+ "usage": null for a chunk of a
// stream with include_usage).
boost::json::object response_envelope(const CompletionRequest& req, const ModelInfo& model, const std::string& id,
                                      int64_t created, bool chunk);
// One choice in the endpoint's shape: {"index", "text" | "message" | "delta", "logprobs", "finish_reason"}.
boost::json::object choice_json(const CompletionRequest& req, std::size_t index, std::string text,
                                boost::json::value logprobs, boost::json::value finish, bool chunk);
// The logprobs object of generated tokens [from, to) of `c`, or null when the request asked for none.
// Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}, led by the prompt's tokens
// when with_prompt (the first prompt token's logprob is null), offsets counted from `offset`. Chat:
// {"content": [{"token", "logprob", "bytes", "top_logprobs"}], "refusal": null}.
boost::json::value choice_logprobs(const CompletionRequest& req, const ModelInfo& model, const ChoiceResult& c,
                                   std::size_t from, std::size_t to, bool with_prompt, std::size_t offset);
// The text of choice c's prompt (what echo puts before the completion); empty without a tokenizer.
std::string prompt_text(const CompletionRequest& req, const ModelInfo& model, const ChoiceResult& c);
// {"prompt_tokens", "completion_tokens", "total_tokens"} over every prompt and choice.
boost::json::object usage_json(const CompletionRequest& req, const std::vector<ChoiceResult>& choices);

// The whole non-streaming answer: the envelope, "choices" (each with the "token_ids" extension: the
// generated ids, led by the prompt's when echo is set; text led by the prompt's text when echo is set)
// and "usage". Every choice must be done. `id` is "cmpl-..." or "chatcmpl-...".
boost::json::object completion_body(const CompletionRequest& req, const ModelInfo& model, const std::string& id,
                                    int64_t created, const std::vector<ChoiceResult>& choices);

// "cmpl-<24 hex>" for completions, "chatcmpl-<24 hex>" for chat completions, as OpenAI's.
std::string completion_id(bool chat);

}  // namespace gptj
