// The OpenAI completions and chat completions APIs (rank 0): request JSON → validated CompletionRequest → GenerationRequests,
// and the answer in OpenAI's shape, whole or as server-sent events. Parsing runs on a request
// worker (launcher/cmd_serve.cc), never an HTTP I/O thread; a CompletionJob's callbacks run on the coordinator thread and answer through HttpReply.
// Also vLLM's /tokenize and /detokenize, answered on a request worker from the tokenizer alone.
//
// Extension (not in OpenAI's API): each choice, and each stream chunk's choice, carries "token_ids",
// the ids of the generated tokens it covers (the prompt's ids too when echo is set).
#pragma once
#include <boost/json.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/generate/tokenizer.h"
#include "runtime/serve/coordinator.h"
#include "runtime/serve/http_server.h"
#include "runtime/serve/metrics.h"

namespace gptj {

// A request the API refuses: HTTP status and OpenAI's error object.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "", std::string type = "invalid_request_error")
      : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)) {}
  int status;
  std::string type, param;
};

// {"error": {"message", "type", "param", "code"}} serialized.
std::string error_body(const std::string& message, const std::string& type, const std::string& param = "");

// What the API knows of the model it serves.
struct ModelInfo {
  std::string name;              // "model" in answers and /v1/models
  int n_positions = 2048;        // prompt + max_tokens must fit
  int allowed_vocab = 50257;     // prompt ids must be below this
  int vocab_size = 50400;        // rows of the embedding: ids in [allowed_vocab, vocab_size) are GPT-J's padding
  int eos_id = -1;
  int kv_capacity_tokens = 0;    // KV cache size in tokens (one sequence must fit)
  const Tokenizer* tokenizer = nullptr;  // null: token prompts only, no text in answers
  int64_t created = 0;           // Unix time the server loaded the model ("created" in /v1/models)
  std::string fingerprint;       // "system_fingerprint" in answers: the backend configuration
};

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

// Throws ApiError (400, naming the field in `param`) for anything malformed or out of range.
// chat: the body is a /v1/chat/completions request ("messages", logprobs as a bool + top_logprobs);
// fields asking for what the server cannot do (tools, functions, tool_choice, function_call, a
// response_format other than text) are refused, not ignored.
CompletionRequest parse_completion_request(const std::string& body, const ModelInfo& model, bool chat = false);

// One completion call in flight. Build with make_completion_job(); submit to the Coordinator.
std::shared_ptr<Job> make_completion_job(CompletionRequest request, const ModelInfo& model,
                                         std::shared_ptr<HttpReply> reply, ServerMetrics& metrics,
                                         std::chrono::milliseconds timeout);

// POST /tokenize (vLLM's shape): {"prompt": "text"} or {"messages": [...]} (rendered with the chat
// template, runtime/serve/chat_template.h; "add_generation_prompt": false is refused, the template
// always ends with the assistant's turn), "add_special_tokens" accepted and ignored (GPT-2 BPE adds
// none) → {"count", "max_model_len", "tokens"} serialized. Throws ApiError (400 naming the field).
std::string tokenize_answer(const std::string& body, const ModelInfo& model);

// POST /detokenize (vLLM's shape): {"tokens": [ids]} → {"prompt": "text"} serialized (bytes that do
// not form UTF-8 become U+FFFD). Ids outside [0, allowed_vocab), GPT-J's padding ids among them, are
// refused: ApiError (400, param "tokens").
std::string detokenize_answer(const std::string& body, const ModelInfo& model);

}  // namespace gptj
