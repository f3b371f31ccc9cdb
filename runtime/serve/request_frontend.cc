#include "runtime/serve/request_frontend.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <random>

#include "runtime/generate/utf8_stream.h"

namespace gptj {

namespace json = boost::json;

json::object error_object(const std::string& message, const std::string& type, const std::string& param) {
  json::object error{{"message", message}, {"type", type}, {"code", nullptr}};
  error["param"] = param.empty() ? json::value(nullptr) : json::value(param);
  return json::object{{"error", std::move(error)}};
}

std::string error_body(const std::string& message, const std::string& type, const std::string& param) {
  return json::serialize(error_object(message, type, param));
}

// ------------------------------------------------------------------------------------------------
// Field readers. Every refusal names the field (OpenAI's "param").

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

namespace {

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

}  // namespace

std::vector<std::pair<int32_t, float>> parse_logit_bias(const json::object& o, int allowed_vocab) {
  std::vector<std::pair<int32_t, float>> bias;
  const json::value* v = present(o, "logit_bias");
  if (!v) return bias;
  if (!v->is_object())
    throw ApiError(400, "'logit_bias' must be an object mapping token ids to biases", "logit_bias");
  for (const auto& [key, value] : v->get_object()) {
    const std::string_view k = key;
    int64_t id = -1;
    const auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), id);
    // Canonical decimal ids only ("7", not "07" or "+7"), so no two keys name one token.
    if (k.empty() || ec != std::errc() || end != k.data() + k.size() || k[0] == '-' || (k[0] == '0' && k.size() > 1) ||
        id >= allowed_vocab)
      throw ApiError(400, fmt::format("'logit_bias' key \"{}\" is not a token id in [0, {})", std::string(k), allowed_vocab),
                     "logit_bias");
    if (!value.is_number())
      throw ApiError(400, fmt::format("'logit_bias' value for token {} must be a number", id), "logit_bias");
    const double b = value.to_number<double>();
    if (!(b >= -100 && b <= 100))
      throw ApiError(400, fmt::format("'logit_bias' value for token {} must be between -100 and 100 (got {})", id, b),
                     "logit_bias");
    bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(b));
  }
  std::sort(bias.begin(), bias.end());
  return bias;
}

GenerationRequest parse_generation_fields(const json::object& o, const GenerationFieldRules& rules, int allowed_vocab,
                                          const Tokenizer* tokenizer) {
  GenerationRequest r;
  r.max_new_tokens = static_cast<int>(
      get_int(o, rules.max_tokens_field, rules.default_max_tokens, rules.min_max_tokens, rules.max_max_tokens));
  r.n = static_cast<int>(get_int(o, "n", 1, 1, rules.max_n));
  SamplingParams& s = r.sampling;
  s.temperature = static_cast<float>(get_number(o, "temperature", rules.default_temperature, 0.0, rules.max_temperature));
  s.top_p = static_cast<float>(get_number(o, "top_p", 1.0, 0.0, 1.0));
  s.top_k = static_cast<int>(std::max<int64_t>(0, get_int(o, "top_k", 0, -1, 1 << 20)));
  s.presence_penalty = static_cast<float>(get_number(o, "presence_penalty", 0.0, -2.0, 2.0));
  s.frequency_penalty = static_cast<float>(get_number(o, "frequency_penalty", 0.0, -2.0, 2.0));
  s.repetition_penalty = static_cast<float>(get_number(o, "repetition_penalty", 1.0, 1e-6, 100.0));
  s.no_repeat_ngram_size = static_cast<int>(get_int(o, "no_repeat_ngram_size", 0, 0, 1 << 20));
  if (rules.chat_logprobs) {  // "logprobs": true, "top_logprobs": N
    if (get_bool(o, "logprobs", false)) {
      s.logprobs = static_cast<int>(get_int(o, "top_logprobs", 0, 0, 20));
      s.report_logprob = true;
    } else if (present(o, "top_logprobs")) {
      throw ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
    }
  } else if (present(o, "logprobs")) {  // the chosen tokens' logprobs, plus the top N alternatives
    s.logprobs = static_cast<int>(get_int(o, "logprobs", 0, 0, 20));
    s.report_logprob = true;
  }
  if (const json::value* seed = present(o, "seed")) {
    if (seed->is_int64()) s.seed = static_cast<uint64_t>(seed->get_int64());
    else if (seed->is_uint64()) s.seed = seed->get_uint64();
    else throw ApiError(400, "'seed' must be an integer", "seed");
  }
  s.logit_bias = parse_logit_bias(o, allowed_vocab);
  r.stop = parse_stop(o);
  if (!r.stop.empty() && !tokenizer)
    throw ApiError(400, "'stop' needs the tokenizer files (vocab.json, merges.txt) in the model directory", "stop");
  return r;
}

// ------------------------------------------------------------------------------------------------
// Choices and answers.

bool collect_token(ChoiceResult& c, const GenerationEvent& e) {
  if (!e.prompt_logprobs.empty() && c.prompt_scores.empty()) c.prompt_scores = e.prompt_logprobs;  // first event only
  if (e.choice.token < 0 || e.finish == FinishReason::kEos) return false;
  c.tokens.push_back(e.choice.token);
  c.token_logprobs.push_back(e.choice.logprob);
  c.top.push_back(e.choice.top);
  return true;
}

void finish_choice(ChoiceResult& c, const GenerationEvent& e, const Tokenizer* tokenizer) {
  // The scheduler drops tokens that reach into a stop string; keep what it kept.
  std::size_t keep = e.generated ? e.generated->size() : c.tokens.size();
  if (e.finish == FinishReason::kEos && keep > 0) --keep;
  keep = std::min(keep, c.tokens.size());
  c.tokens.resize(keep);
  c.token_logprobs.resize(keep);
  c.top.resize(keep);
  c.text = e.finish == FinishReason::kStop ? e.stop_text : tokenizer ? tokenizer->decode(c.tokens) : std::string();
  c.finish = e.finish == FinishReason::kLength ? "length" : "stop";
  c.done = true;
}

namespace {

std::string token_text(const ModelInfo& model, int32_t id) {
  return model.tokenizer ? utf8::to_valid_utf8(model.tokenizer->token_bytes(id)) : std::string();
}


json::value chat_logprobs(const ModelInfo& model, const ChoiceResult& c, std::size_t from, std::size_t to) {
  auto entry = [&](int32_t id, float logprob) {
    const std::string raw = model.tokenizer ? model.tokenizer->token_bytes(id) : std::string();
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

}  // namespace

json::value choice_logprobs(const CompletionRequest& req, const ModelInfo& model, const ChoiceResult& c,
                            std::size_t from, std::size_t to, bool with_prompt, std::size_t offset) {
  if (!req.logprobs) return nullptr;
  if (req.chat) return chat_logprobs(model, c, from, to);
  json::array tokens, lps, tops, offsets;
  if (with_prompt) {
    const std::vector<int32_t>& prompt = req.prompts[c.prompt_index];
    for (std::size_t i = 0; i < prompt.size(); ++i) {
      const std::string t = token_text(model, prompt[i]);
      tokens.emplace_back(t);
      if (i == 0 || i > c.prompt_scores.size()) {
        lps.emplace_back(nullptr);
        tops.emplace_back(nullptr);
      } else {
        const TokenChoice& score = c.prompt_scores[i - 1];
        lps.emplace_back(score.logprob);
        json::object top;
        for (const auto& [id, lp] : score.top) top[token_text(model, id)] = lp;
        tops.emplace_back(std::move(top));
      }
      offsets.emplace_back(offset);
      offset += t.size();
    }
  }
  for (std::size_t i = from; i < to; ++i) {
    const std::string t = token_text(model, c.tokens[i]);
    tokens.emplace_back(t);
    lps.emplace_back(c.token_logprobs[i]);
    json::object top;
    for (const auto& [id, lp] : c.top[i]) top[token_text(model, id)] = lp;
    tops.emplace_back(std::move(top));
    offsets.emplace_back(offset);
    offset += t.size();
  }
  return json::object{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", std::move(tops)},
                      {"text_offset", offsets}};
}

std::string prompt_text(const CompletionRequest& req, const ModelInfo& model, const ChoiceResult& c) {
  return model.tokenizer ? utf8::to_valid_utf8(model.tokenizer->decode(req.prompts[c.prompt_index])) : std::string();
}

json::object response_envelope(const CompletionRequest& req, const ModelInfo& model, const std::string& id,
                               int64_t created, bool chunk) {
  const char* object = !req.chat ? "text_completion" : chunk ? "chat.completion.chunk" : "chat.completion";
  json::object out{{"id", id}, {"object", object}, {"created", created}, {"model", model.name},
                   {"system_fingerprint", model.fingerprint}};
  if (chunk && req.include_usage) out["usage"] = nullptr;  // every chunk but the last (usage) one
  return out;
}

json::object choice_json(const CompletionRequest& req, std::size_t index, std::string text, json::value logprobs,
                         json::value finish, bool chunk) {
  json::object choice{{"index", index}};
  if (!req.chat) {
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

json::object usage_json(const CompletionRequest& req, const std::vector<ChoiceResult>& choices) {
  std::size_t prompt = 0, completion = 0;
  for (const auto& p : req.prompts) prompt += p.size();
  for (const auto& c : choices) completion += c.tokens.size();
  return json::object{{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

json::object completion_body(const CompletionRequest& req, const ModelInfo& model, const std::string& id,
                             int64_t created, const std::vector<ChoiceResult>& choices) {
  json::array out;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    const std::string prefix = req.echo ? prompt_text(req, model, c) : std::string();
    json::object choice = choice_json(req, i, prefix + utf8::to_valid_utf8(c.text),
                                      choice_logprobs(req, model, c, 0, c.tokens.size(), req.echo, 0),
                                      json::value(c.finish), false);
    std::vector<int32_t> ids = req.echo ? req.prompts[c.prompt_index] : std::vector<int32_t>{};
    ids.insert(ids.end(), c.tokens.begin(), c.tokens.end());
    choice["token_ids"] = json::value_from(ids);
    out.push_back(std::move(choice));
  }
  json::object body = response_envelope(req, model, id, created, false);
  body["choices"] = std::move(out);
  body["usage"] = usage_json(req, choices);
  return body;
}

std::string completion_id(bool chat) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}-{:016x}{:08x}", chat ? "chatcmpl" : "cmpl", rng(), static_cast<uint32_t>(rng()));
}

}  // namespace gptj
