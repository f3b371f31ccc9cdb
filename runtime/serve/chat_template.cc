#include "runtime/serve/chat_template.h"

#include "runtime/serve/completion_api.h"

namespace gptj {

namespace json = boost::json;

std::vector<ChatMessage> parse_chat_messages(const json::object& request) {
  const json::value* messages = request.if_contains("messages");
  if (!messages) throw ApiError(400, "'messages' is required", "messages");
  if (!messages->is_array() || messages->get_array().empty())
    throw ApiError(400, "'messages' must be a non-empty array of {role, content} objects", "messages");
  std::vector<ChatMessage> out;
  for (const json::value& m : messages->get_array()) {
    const std::string at = "messages[" + std::to_string(out.size()) + "]";
    if (!m.is_object()) throw ApiError(400, at + " must be an object", "messages");
    const json::object& o = m.get_object();
    const json::value* role = o.if_contains("role");
    if (!role || !role->is_string()) throw ApiError(400, at + ".role must be a string", "messages");
    ChatMessage message{std::string(role->get_string()), ""};
    if (message.role == "developer") message.role = "system";
    if (message.role != "system" && message.role != "user" && message.role != "assistant")
      throw ApiError(400, at + ".role '" + message.role + "' is not system, user or assistant", "messages");
    const json::value* content = o.if_contains("content");
    if (content && content->is_string()) {
      message.content = std::string(content->get_string());
    } else if (content && content->is_array()) {  // [{"type": "text", "text": ...}, ...]
      for (const json::value& part : content->get_array()) {
        const json::object* p = part.if_object();
        const json::value* text = p ? p->if_contains("text") : nullptr;
        if (!p || !p->contains("type") || p->at("type") != "text" || !text || !text->is_string())
          throw ApiError(400, at + ".content parts must be {\"type\": \"text\", \"text\": ...}", "messages");
        message.content += std::string(text->get_string());
      }
    } else if (!(content && content->is_null() && message.role == "assistant")) {
      throw ApiError(400, at + ".content must be a string or an array of text parts", "messages");
    }
    out.push_back(std::move(message));
  }
  return out;
}

std::string render_chat_prompt(const std::vector<ChatMessage>& messages) {
  std::string prompt;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") prompt += m.content + "\n\n";
    else if (m.role == "user") prompt += "User: " + m.content + "\n";
    else prompt += "Assistant: " + m.content + "\n";
  }
  return prompt + "Assistant:";
}

const std::vector<std::string>& chat_template_stops() {
  static const std::vector<std::string> stops{"\nUser:"};
  return stops;
}

}  // namespace gptj
