// /v1/chat/completions for a base model: GPT-J has no chat format of its own, so the server renders
// the messages with one plain, documented template and stops the reply where the model would start
// the next user turn:
//
//     {system content}\n\n            (each system message, in order)
//     User: {content}\n               (each user message)
//     Assistant: {content}\n          (each earlier assistant message)
//     Assistant:                      (the reply is generated from here)
//
// plus the stop string "\nUser:". (vLLM and llama.cpp's server use the model's own template when it
// has one; a base model gets a plain one, as here.)
#pragma once
#include <boost/json.hpp>
#include <string>
#include <vector>

namespace gptj {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant" ("developer" is taken as "system")
  std::string content;
};

// Parses the request's "messages". Throws ApiError (400, param "messages") naming what is wrong.
std::vector<ChatMessage> parse_chat_messages(const boost::json::object& request);

// The prompt text for `messages`, ending with "Assistant:".
std::string render_chat_prompt(const std::vector<ChatMessage>& messages);

// Stop strings the template adds to the request's own.
const std::vector<std::string>& chat_template_stops();

}  // namespace gptj
