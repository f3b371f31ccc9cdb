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
#include <string>
#include <vector>

#include "runtime/generate/tokenizer.h"
#include "runtime/serve/request_frontend.h"
#include "runtime/serve/coordinator.h"
#include "runtime/serve/http_server.h"
#include "runtime/serve/metrics.h"

namespace gptj {

// ApiError, error_body, ModelInfo and CompletionRequest: runtime/serve/request_frontend.h.

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
