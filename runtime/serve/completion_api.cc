#include "runtime/serve/completion_api.h"

#include "runtime/serve/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <random>

#include "runtime/core/error.h"
#include "runtime/generate/utf8_stream.h"

namespace gptj {

namespace json = boost::json;

std::string error_body(const std::string& message, const std::string& type, const std::string& param) {
  json::object error{{"message", message}, {"type", type}, {"code", nullptr}};
  error["param"] = param.empty() ? json::value(nullptr) : json::value(param);
  return json::serialize(json::object{{"error", error}});
}

// ------------------------------------------------------------------------------------------------
// Request parsing. Every refusal names the field (OpenAI's "param").
namespace {

const json::value* present(const json::object& o, const char* name) {
  const json::value* v = o.if_contains(name);
  return v && !v->is_null() ? v : nullptr;
}

int64_t get_int(const json::object& o, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const json::value* v = present(o, name);
  if (!v) return fallback;
  int64_t x = 0;
  if (v->is_int64()) x = v->get_int64();
  else if (v->is_uint64()) x = v->get_uint64() > static_cast<uint64_t>(hi) ? hi + 1 : static_cast<int64_t>(v->get_uint64());
  else throw ApiError(400, fmt::format("'{}' must be an integer", name), name);
  if (x < lo || x > hi) throw ApiError(400, fmt::format("'{}' must be between {} and {} (got {})", name, lo, hi, x), name);
  return x;
}

double get_number(const json::object& o, const char* name, double fallback, double lo, double hi) {
  const json::value* v = present(o, name);
  if (!v) return fallback;
  if (!v->is_number()) throw ApiError(400, fmt::format("'{}' must be a number", name), name);
  const double x = v->to_number<double>();
  if (!(x >= lo && x <= hi)) throw ApiError(400, fmt::format("'{}' must be between {} and {} (got {})", name, lo, hi, x), name);
  return x;
}

bool get_bool(const json::object& o, const char* name, bool fallback) {
  const json::value* v = present(o, name);
  if (!v) return fallback;
  if (!v->is_bool()) throw ApiError(400, fmt::format("'{}' must be true or false", name), name);
  return v->get_bool();
}

// The request body, which must be a JSON object.
json::value parse_body(const std::string& body) {
  boost::system::error_code ec;
  json::value root = json::parse(body, ec);
  if (ec) throw ApiError(400, "the request body is not valid JSON: " + ec.message());
  if (!root.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return root;
}

// Token ids from the array in field `field`: integers in [0, allowed_vocab) (GPT-J's padding ids
// above that are named as such).
std::vector<int32_t> token_ids(const json::array& ids, const ModelInfo& model, const char* field) {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (const auto& id : ids) {
    if (!id.is_int64() && !id.is_uint64())
      throw ApiError(400, fmt::format("a token array in '{}' must hold only integers", field), field);
    const int64_t x = id.is_int64() ? id.get_int64() : -1;
    if (x < 0 || x >= model.allowed_vocab) {
      const bool padding = x >= model.allowed_vocab && x < model.vocab_size;
      throw ApiError(400, fmt::format("token id {} in '{}' is outside the vocabulary [0, {}){}", json::serialize(id),
                                      field, model.allowed_vocab,
                                      padding ? fmt::format(": ids {}..{} are GPT-J's padding rows, not tokens",
                                                            model.allowed_vocab, model.vocab_size - 1)
                                              : std::string()),
                     field);
    }
    out.push_back(static_cast<int32_t>(x));
  }
  return out;
}

std::vector<int32_t> token_prompt(const json::array& ids, const ModelInfo& model) {
  if (ids.empty()) throw ApiError(400, "'prompt' holds an empty token array", "prompt");
  return token_ids(ids, model, "prompt");
}

std::vector<int32_t> text_prompt(const std::string& text, const ModelInfo& model) {
  if (!model.tokenizer)
    throw ApiError(400, "text prompts need the tokenizer files (vocab.json, merges.txt) in the model directory; send token ids", "prompt");
  if (text.empty()) {
    // As OpenAI: an empty prompt continues from <|endoftext|>.
    if (model.eos_id < 0) throw ApiError(400, "'prompt' is empty", "prompt");
    return {model.eos_id};
  }
  return model.tokenizer->encode(text);
}

std::vector<std::vector<int32_t>> parse_prompts(const json::object& o, const ModelInfo& model) {
  const json::value* p = present(o, "prompt");
  if (!p) throw ApiError(400, "'prompt' is required", "prompt");
  const char* shape = "'prompt' must be a string, an array of strings, an array of token ids or an array of token arrays";
  if (p->is_string()) return {text_prompt(std::string(p->get_string()), model)};
  if (!p->is_array()) throw ApiError(400, shape, "prompt");
  const json::array& a = p->get_array();
  if (a.empty()) throw ApiError(400, "'prompt' is an empty array", "prompt");
  if (a[0].is_int64() || a[0].is_uint64()) return {token_prompt(a, model)};
  if (a.size() > 64) throw ApiError(400, "'prompt' holds more than 64 prompts", "prompt");
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& item : a) {
    if (item.is_string() && a[0].is_string()) prompts.push_back(text_prompt(std::string(item.get_string()), model));
    else if (item.is_array() && a[0].is_array()) prompts.push_back(token_prompt(item.get_array(), model));
    else throw ApiError(400, shape, "prompt");
  }
  return prompts;
}

std::vector<std::string> parse_stop(const json::object& o) {
  const json::value* v = present(o, "stop");
  std::vector<std::string> stops;
  if (!v) return stops;
  if (v->is_string()) {
    stops.emplace_back(v->get_string());
  } else if (v->is_array()) {
    if (v->get_array().size() > 16) throw ApiError(400, "'stop' holds more than 16 strings", "stop");
    for (const auto& s : v->get_array()) {
      if (!s.is_string()) throw ApiError(400, "'stop' must be a string or an array of strings", "stop");
      stops.emplace_back(s.get_string());
    }
  } else {
    throw ApiError(400, "'stop' must be a string or an array of strings", "stop");
  }
  std::erase_if(stops, [](const std::string& s) { return s.empty(); });
  return stops;
}

void check_model_field(const json::object& o) {
  if (const json::value* m = present(o, "model"); m && !m->is_string())
    throw ApiError(400, "'model' must be a string", "model");
}

const char* const kNeedTokenizer = "needs the tokenizer files (vocab.json, merges.txt) in the model directory";

// Chat fields for features the server does not have. Each is refused (400 naming it) rather than
// silently ignored; the values that mean "none of that" are accepted.
void refuse_unsupported_chat_fields(const json::object& o) {
  for (const char* name : {"tools", "functions"})
    if (const json::value* v = present(o, name); v && !(v->is_array() && v->get_array().empty()))
      throw ApiError(400, fmt::format("'{}' is not supported: this server does not call tools", name), name);
  for (const char* name : {"tool_choice", "function_call"})
    if (const json::value* v = present(o, name); v && !(v->is_string() && v->get_string() == "none"))
      throw ApiError(400, fmt::format("'{}' is not supported: this server does not call tools", name), name);
  if (const json::value* v = present(o, "response_format")) {
    const json::object* format = v->if_object();
    const json::value* type = format ? format->if_contains("type") : nullptr;
    if (!type || !type->is_string() || type->get_string() != "text")
      throw ApiError(400, "'response_format' is not supported other than {\"type\": \"text\"}", "response_format");
  }
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, const ModelInfo& model, bool chat) {
  const json::value root = parse_body(body);
  const json::object& o = root.get_object();
  CompletionRequest r;
  check_model_field(o);
  if (const json::value* u = present(o, "user")) {
    if (!u->is_string()) throw ApiError(400, "'user' must be a string", "user");
    r.user = std::string(u->get_string());
  }
  if (const json::value* s = present(o, "suffix"); s && !(s->is_string() && s->get_string().empty()))
    throw ApiError(400, "'suffix' is not supported", "suffix");
  if (const json::value* b = present(o, "logit_bias"); b && !(b->is_object() && b->get_object().empty()))
    throw ApiError(400, "'logit_bias' is not supported", "logit_bias");
  r.chat = chat;
  if (chat) refuse_unsupported_chat_fields(o);
  r.echo = get_bool(o, "echo", false);
  if (chat && r.echo) throw ApiError(400, "'echo' is not supported by chat completions", "echo");
  // max_tokens 0 with echo: score the prompt only (what lm-eval's loglikelihood requests send).
  // Chat: max_completion_tokens (or the older max_tokens); by default up to 256 that fit the context.
  const char* max_field = chat && present(o, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  const bool max_given = present(o, max_field) != nullptr;
  r.max_tokens = static_cast<int>(get_int(o, max_field, chat ? 256 : 16, r.echo ? 0 : 1, model.n_positions));
  r.n = static_cast<int>(get_int(o, "n", 1, 1, 16));
  if (get_int(o, "best_of", r.n, 1, 16) != r.n)
    throw ApiError(400, "'best_of' other than n is not supported", "best_of");
  r.stream = get_bool(o, "stream", false);
  if (const json::value* so = present(o, "stream_options")) {
    if (!so->is_object()) throw ApiError(400, "'stream_options' must be an object", "stream_options");
    r.include_usage = get_bool(so->get_object(), "include_usage", false);
  }
  if (chat) {  // "logprobs": true, "top_logprobs": N
    if (get_bool(o, "logprobs", false)) r.logprobs = static_cast<int>(get_int(o, "top_logprobs", 0, 0, 20));
    else if (present(o, "top_logprobs")) throw ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
  } else if (present(o, "logprobs")) {
    r.logprobs = static_cast<int>(get_int(o, "logprobs", 0, 0, 20));
  }
  r.stop = parse_stop(o);
  if (chat) r.stop.insert(r.stop.end(), chat_template_stops().begin(), chat_template_stops().end());
  if (!r.stop.empty() && !model.tokenizer)
    throw ApiError(400, "'stop' needs the tokenizer files in the model directory", "stop");
  SamplingParams& s = r.sampling;
  s.temperature = static_cast<float>(get_number(o, "temperature", 1.0, 0.0, 2.0));
  s.top_p = static_cast<float>(get_number(o, "top_p", 1.0, 0.0, 1.0));
  s.top_k = static_cast<int>(std::max<int64_t>(0, get_int(o, "top_k", 0, -1, 1 << 20)));
  s.presence_penalty = static_cast<float>(get_number(o, "presence_penalty", 0.0, -2.0, 2.0));
  s.frequency_penalty = static_cast<float>(get_number(o, "frequency_penalty", 0.0, -2.0, 2.0));
  s.repetition_penalty = static_cast<float>(get_number(o, "repetition_penalty", 1.0, 0.01, 100.0));
  s.no_repeat_ngram_size = static_cast<int>(get_int(o, "no_repeat_ngram_size", 0, 0, 1 << 20));
  s.logprobs = r.logprobs.value_or(0);
  s.report_logprob = r.logprobs.has_value();
  if (const json::value* seed = present(o, "seed")) {
    if (seed->is_int64()) s.seed = static_cast<uint64_t>(seed->get_int64());
    else if (seed->is_uint64()) s.seed = seed->get_uint64();
    else throw ApiError(400, "'seed' must be an integer", "seed");
  }
  if (chat) {
    if (!model.tokenizer) throw ApiError(400, "chat completions need the tokenizer files in the model directory", "messages");
    r.prompts = {text_prompt(render_chat_prompt(parse_chat_messages(o)), model)};
    const int room = model.n_positions - static_cast<int>(r.prompts[0].size());
    if (!max_given && room > 0) r.max_tokens = std::min(r.max_tokens, room);
  } else {
    r.prompts = parse_prompts(o, model);
  }
  if (r.prompts.size() * r.n > 128) throw ApiError(400, "more than 128 choices (prompts times n)", "n");
  for (const auto& prompt : r.prompts) {
    const int len = static_cast<int>(prompt.size());
    if (len + r.max_tokens > model.n_positions)
      throw ApiError(400, fmt::format("This model's maximum context length is {} tokens, however you requested {} "
                                      "tokens ({} in your prompt; {} for the completion). Reduce the prompt or max_tokens.",
                                      model.n_positions, len + r.max_tokens, len, r.max_tokens),
                     len >= model.n_positions ? "prompt" : "max_tokens");
    if (model.kv_capacity_tokens > 0 && len + r.max_tokens + 1 > model.kv_capacity_tokens)
      throw ApiError(400, fmt::format("prompt ({} tokens) plus max_tokens ({}) exceeds the server's KV cache of {} tokens",
                                      len, r.max_tokens, model.kv_capacity_tokens), "max_tokens");
  }
  return r;
}

// ------------------------------------------------------------------------------------------------
// /tokenize and /detokenize.

std::string tokenize_answer(const std::string& body, const ModelInfo& model) {
  const json::value root = parse_body(body);
  const json::object& o = root.get_object();
  check_model_field(o);
  get_bool(o, "add_special_tokens", true);  // type-checked; GPT-2 BPE adds no special tokens
  const bool chat = present(o, "messages") != nullptr;
  const char* field = chat ? "messages" : "prompt";
  std::string text;
  if (chat) {
    if (present(o, "prompt")) throw ApiError(400, "send either 'prompt' or 'messages', not both", "prompt");
    if (!get_bool(o, "add_generation_prompt", true))
      throw ApiError(400, "'add_generation_prompt': false is not supported: the chat template always ends with "
                          "the assistant's turn", "add_generation_prompt");
    text = render_chat_prompt(parse_chat_messages(o));
  } else {
    const json::value* p = present(o, "prompt");
    if (!p) throw ApiError(400, "'prompt' (or 'messages') is required", "prompt");
    if (!p->is_string()) throw ApiError(400, "'prompt' must be a string", "prompt");
    text = std::string(p->get_string());
  }
  if (!model.tokenizer) throw ApiError(400, fmt::format("/tokenize {}", kNeedTokenizer), field);
  std::vector<int32_t> ids;
  try {
    ids = model.tokenizer->encode(text);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), field);
  }
  return json::serialize(json::object{{"count", ids.size()}, {"max_model_len", model.n_positions},
                                      {"tokens", json::value_from(ids)}});
}

std::string detokenize_answer(const std::string& body, const ModelInfo& model) {
  const json::value root = parse_body(body);
  const json::object& o = root.get_object();
  check_model_field(o);
  const json::value* tokens = present(o, "tokens");
  if (!tokens) throw ApiError(400, "'tokens' is required", "tokens");
  if (!tokens->is_array()) throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
  const std::vector<int32_t> ids = token_ids(tokens->get_array(), model, "tokens");
  if (!model.tokenizer) throw ApiError(400, fmt::format("/detokenize {}", kNeedTokenizer), "tokens");
  std::string text;
  try {
    text = model.tokenizer->decode(ids);
  } catch (const Error& e) {  // an id the vocab lacks
    throw ApiError(400, e.what(), "tokens");
  }
  return json::serialize(json::object{{"prompt", utf8::to_valid_utf8(text)}});
}

// ------------------------------------------------------------------------------------------------
// The job: collects each choice's tokens; answers at the end, or streams as tokens arrive.
namespace {

// "cmpl-..." for completions, "chatcmpl-..." for chat completions, as OpenAI's.
std::string completion_id(bool chat) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}-{:016x}{:08x}", chat ? "chatcmpl" : "cmpl", rng(), static_cast<uint32_t>(rng()));
}

// Length of the longest tail of `text` that is a proper prefix of some stop string: text that may
// still turn into a stop string and must not be streamed yet.
std::size_t stop_holdback(const std::string& text, const std::vector<std::string>& stops) {
  std::size_t hold = 0;
  for (const auto& stop : stops)
    for (std::size_t k = std::min(stop.size() - 1, text.size()); k > hold; --k)
      if (text.compare(text.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}

class CompletionJob : public Job {
 public:
  CompletionJob(CompletionRequest request, const ModelInfo& model, std::shared_ptr<HttpReply> reply,
                ServerMetrics& metrics)
      : req_(std::move(request)), model_(model), reply_(std::move(reply)), metrics_(metrics),
        id_(completion_id(req_.chat)), created_(static_cast<int64_t>(std::time(nullptr))) {
    for (std::size_t p = 0; p < req_.prompts.size(); ++p) {
      for (int i = 0; i < req_.n; ++i) {
        GenerationRequest g;
        g.prompt = req_.prompts[p];
        g.sampling = req_.sampling;
        if (g.sampling.seed) g.sampling.seed = *g.sampling.seed + static_cast<uint64_t>(i);
        g.max_new_tokens = req_.max_tokens;
        g.score_prompt = req_.echo && req_.logprobs.has_value();  // the echoed prompt's logprobs
        g.stop = req_.stop;
        requests.push_back(std::move(g));
        Choice c;
        c.prompt_index = static_cast<int>(p);
        if (model_.tokenizer) c.decoder.emplace(*model_.tokenizer);
        choices_.push_back(std::move(c));
      }
    }
    remaining_ = static_cast<int>(choices_.size());
  }

  void on_event(int index, const GenerationEvent& event) override {
    Choice& c = choices_[static_cast<std::size_t>(index)];
    if (c.done || event.finish == FinishReason::kCancelled) return;
    if (!event.prompt_logprobs.empty()) c.prompt_scores = event.prompt_logprobs;  // first event only
    if (req_.stream) start_choice_stream(index, c);
    const int32_t token = event.choice.token;
    const bool eos = event.finish == FinishReason::kEos;
    if (token >= 0 && !eos) {
      c.tokens.push_back(token);
      c.token_logprobs.push_back(event.choice.logprob);
      c.top.push_back(event.choice.top);
      if (req_.stream && event.finish == FinishReason::kNone) {
        if (c.decoder) c.decoded += c.decoder->push(token);
        const std::size_t safe = c.decoded.size() - stop_holdback(c.decoded, req_.stop);
        std::string delta;
        if (safe > c.emitted) delta = c.decoded.substr(c.emitted, safe - c.emitted);
        c.emitted = std::max(c.emitted, safe);
        send_chunk(index, c, utf8::to_valid_utf8(delta), c.tokens.size() - 1, c.tokens.size(), nullptr);
      }
    }
    if (event.finish == FinishReason::kNone) return;
    // The scheduler drops tokens that reach into a stop string; keep what it kept.
    std::size_t keep = event.generated ? event.generated->size() : c.tokens.size();
    if (eos && keep > 0) --keep;
    const std::size_t streamed = req_.stream ? c.tokens.size() - (token >= 0 && !eos ? 1 : 0) : 0;
    keep = std::min(keep, c.tokens.size());
    c.tokens.resize(keep);
    c.token_logprobs.resize(keep);
    c.top.resize(keep);
    const char* reason = event.finish == FinishReason::kLength ? "length" : "stop";
    c.text = event.finish == FinishReason::kStop ? event.stop_text
             : model_.tokenizer                  ? model_.tokenizer->decode(c.tokens)
                                                 : std::string();
    c.done = true;
    if (req_.stream) {
      const std::string rest = c.text.size() > c.emitted ? c.text.substr(c.emitted) : std::string();
      const std::size_t from = std::min(streamed, c.tokens.size());
      send_chunk(index, c, utf8::to_valid_utf8(rest), from, c.tokens.size(), reason);
    }
    c.finish = reason;
    if (--remaining_ == 0) finish_all();
  }

  void on_failed(int status, const std::string& type, const std::string& message) override {
    metrics_.count_request(status);
    if (stream_started_) {
      reply_->write("data: " + error_body(message, type) + "\n\n");
      reply_->write("data: [DONE]\n\n");
      reply_->end();
    } else {
      reply_->send(static_cast<unsigned>(status), "application/json", error_body(message, type));
    }
  }

 private:
  struct Choice {
    int prompt_index = 0;
    std::vector<int32_t> tokens;  // generated, without a final <|endoftext|>
    std::vector<float> token_logprobs;
    std::vector<std::vector<std::pair<int32_t, float>>> top;
    std::optional<StreamDecoder> decoder;
    std::string decoded;       // streamed text so far (complete UTF-8 only)
    std::size_t emitted = 0;   // bytes of `decoded` sent
    bool started = false, done = false;
    std::size_t echo_offset = 0;  // bytes of echoed prompt text sent before the completion
    std::vector<TokenChoice> prompt_scores;  // echo + logprobs: prompt tokens 1.. (token 0 has none)
    std::string text, finish;  // when done
  };

  std::string token_text(int32_t id) const {
    return model_.tokenizer ? utf8::to_valid_utf8(model_.tokenizer->token_bytes(id)) : std::string();
  }
  std::string prompt_text(const Choice& c) const {
    return model_.tokenizer ? utf8::to_valid_utf8(model_.tokenizer->decode(req_.prompts[c.prompt_index])) : std::string();
  }

  // OpenAI's logprobs object for generated tokens [from, to), optionally led by the echoed prompt
  // (its first token's logprob is null, as OpenAI's).
  json::value logprobs_json(const Choice& c, std::size_t from, std::size_t to, bool with_prompt,
                            std::size_t offset) const {
    if (!req_.logprobs) return nullptr;
    if (req_.chat) return chat_logprobs_json(c, from, to);
    json::array tokens, lps, tops, offsets;
    if (with_prompt) {
      const std::vector<int32_t>& prompt = req_.prompts[c.prompt_index];
      for (std::size_t i = 0; i < prompt.size(); ++i) {
        const std::string t = token_text(prompt[i]);
        tokens.emplace_back(t);
        if (i == 0 || i > c.prompt_scores.size()) {
          lps.emplace_back(nullptr);
          tops.emplace_back(nullptr);
        } else {
          const TokenChoice& score = c.prompt_scores[i - 1];
          lps.emplace_back(score.logprob);
          json::object top;
          for (const auto& [id, lp] : score.top) top[token_text(id)] = lp;
          tops.emplace_back(std::move(top));
        }
        offsets.emplace_back(offset);
        offset += t.size();
      }
    }
    for (std::size_t i = from; i < to; ++i) {
      const std::string t = token_text(c.tokens[i]);
      tokens.emplace_back(t);
      lps.emplace_back(c.token_logprobs[i]);
      json::object top;
      for (const auto& [id, lp] : c.top[i]) top[token_text(id)] = lp;
      tops.emplace_back(std::move(top));
      offsets.emplace_back(offset);
      offset += t.size();
    }
    return json::object{{"tokens", tokens}, {"token_logprobs", lps},
                        {"top_logprobs", std::move(tops)},
                        {"text_offset", offsets}};
  }

  // Chat's logprobs object: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
  json::value chat_logprobs_json(const Choice& c, std::size_t from, std::size_t to) const {
    auto entry = [&](int32_t id, float logprob) {
      const std::string raw = model_.tokenizer ? model_.tokenizer->token_bytes(id) : std::string();
      json::array bytes;
      for (unsigned char b : raw) bytes.emplace_back(static_cast<int>(b));
      return json::object{{"token", utf8::to_valid_utf8(raw)}, {"logprob", logprob}, {"bytes", std::move(bytes)}};
    };
    json::array content;
    for (std::size_t i = from; i < to; ++i) {
      json::object item = entry(c.tokens[i], c.token_logprobs[i]);
      json::array top;
      for (const auto& [id, lp] : c.top[i]) top.push_back(entry(id, lp));
      item["top_logprobs"] = std::move(top);
      content.push_back(std::move(item));
    }
    return json::object{{"content", std::move(content)}, {"refusal", nullptr}};
  }

  json::object envelope(bool chunk) const {
    const char* object = !req_.chat ? "text_completion" : chunk ? "chat.completion.chunk" : "chat.completion";
    json::object out{{"id", id_}, {"object", object}, {"created", created_}, {"model", model_.name},
                     {"system_fingerprint", model_.fingerprint}};
    if (chunk && req_.include_usage) out["usage"] = nullptr;  // every chunk but the last (usage) one
    return out;
  }

  // One choice of an answer (chunk: of a stream chunk) in the endpoint's shape.
  json::object choice_json(std::size_t index, std::string text, json::value logprobs, json::value finish,
                           bool chunk) const {
    json::object choice{{"index", index}};
    if (!req_.chat) {
      choice["text"] = std::move(text);
    } else if (chunk) {
      choice["delta"] = json::object{{"content", std::move(text)}};
    } else {
      choice["message"] = json::object{{"role", "assistant"}, {"content", std::move(text)}, {"refusal", nullptr}};
    }
    choice["logprobs"] = std::move(logprobs);
    choice["finish_reason"] = std::move(finish);
    return choice;
  }

  json::object usage() const {
    std::size_t prompt = 0, completion = 0;
    for (const auto& p : req_.prompts) prompt += p.size();
    for (const auto& c : choices_) completion += c.tokens.size();
    return json::object{{"prompt_tokens", prompt}, {"completion_tokens", completion},
                        {"total_tokens", prompt + completion}};
  }

  void write_event(const json::object& chunk) { reply_->write("data: " + json::serialize(chunk) + "\n\n"); }

  void start_choice_stream(int index, Choice& c) {
    if (!stream_started_) {
      stream_started_ = true;
      metrics_.count_request(200);
      reply_->begin_stream("text/event-stream");
    }
    if (c.started) return;
    c.started = true;
    if (req_.chat) {  // the first chunk names the role
      json::object choice{{"index", index}, {"delta", json::object{{"role", "assistant"}, {"content", ""}}},
                          {"logprobs", nullptr}, {"finish_reason", nullptr}};
      json::object chunk = envelope(true);
      chunk["choices"] = json::array{choice};
      write_event(chunk);
      return;
    }
    if (!req_.echo) return;
    const std::string text = prompt_text(c);
    json::object choice = choice_json(static_cast<std::size_t>(index), text, logprobs_json(c, 0, 0, true, 0),
                                      nullptr, true);
    choice["token_ids"] = json::value_from(req_.prompts[c.prompt_index]);
    json::object chunk = envelope(true);
    chunk["choices"] = json::array{choice};
    write_event(chunk);
    c.echo_offset = text.size();
  }

  void send_chunk(int index, const Choice& c, const std::string& text, std::size_t from, std::size_t to,
                  const char* finish) {
    if (text.empty() && from >= to && !finish) return;
    json::object choice = choice_json(static_cast<std::size_t>(index), text,
                                      logprobs_json(c, from, to, false, c.echo_offset + c.emitted),
                                      finish ? json::value(finish) : json::value(nullptr), true);
    choice["token_ids"] = json::value_from(std::vector<int32_t>(c.tokens.begin() + from, c.tokens.begin() + to));
    json::object chunk = envelope(true);
    chunk["choices"] = json::array{choice};
    write_event(chunk);
  }

  void finish_all() {
    if (req_.stream) {
      if (req_.include_usage) {
        json::object chunk = envelope(true);
        chunk["choices"] = json::array{};
        chunk["usage"] = usage();
        write_event(chunk);
      }
      reply_->write("data: [DONE]\n\n");
      reply_->end();
      return;
    }
    json::array choices;
    for (std::size_t i = 0; i < choices_.size(); ++i) {
      const Choice& c = choices_[i];
      const std::string prefix = req_.echo ? prompt_text(c) : std::string();
      json::object choice = choice_json(i, prefix + utf8::to_valid_utf8(c.text),
                                        logprobs_json(c, 0, c.tokens.size(), req_.echo, 0), json::value(c.finish), false);
      std::vector<int32_t> ids = req_.echo ? req_.prompts[c.prompt_index] : std::vector<int32_t>{};
      ids.insert(ids.end(), c.tokens.begin(), c.tokens.end());
      choice["token_ids"] = json::value_from(ids);
      choices.push_back(std::move(choice));
    }
    json::object body = envelope(false);
    body["choices"] = std::move(choices);
    body["usage"] = usage();
    metrics_.count_request(200);
    reply_->send(200, "application/json", json::serialize(body));
  }

  CompletionRequest req_;
  ModelInfo model_;
  std::shared_ptr<HttpReply> reply_;
  ServerMetrics& metrics_;
  std::string id_;
  int64_t created_;
  std::vector<Choice> choices_;
  int remaining_ = 0;
  bool stream_started_ = false;
};

}  // namespace

std::shared_ptr<Job> make_completion_job(CompletionRequest request, const ModelInfo& model,
                                         std::shared_ptr<HttpReply> reply, ServerMetrics& metrics,
                                         std::chrono::milliseconds timeout) {
  auto job = std::make_shared<CompletionJob>(std::move(request), model, std::move(reply), metrics);
  if (timeout.count() > 0) job->deadline = job->accepted_at + timeout;
  return job;
}

}  // namespace gptj
