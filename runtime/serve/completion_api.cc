#include "runtime/serve/completion_api.h"

#include "runtime/serve/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "runtime/core/error.h"
#include "runtime/generate/utf8_stream.h"

namespace gptj {

namespace json = boost::json;

// ------------------------------------------------------------------------------------------------
// Request parsing. Every refusal names the field (OpenAI's "param").
namespace {

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
  r.chat = chat;
  if (chat) refuse_unsupported_chat_fields(o);
  r.echo = get_bool(o, "echo", false);
  if (chat && r.echo) throw ApiError(400, "'echo' is not supported by chat completions", "echo");
  // The generation fields, read as every request format reads them (request_frontend.h).
  // max_tokens 0 with echo: score the prompt only (what lm-eval's loglikelihood requests send).
  // Chat: max_completion_tokens (or the older max_tokens); by default up to 256 that fit the context.
  GenerationFieldRules rules;
  rules.max_tokens_field = chat && present(o, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  rules.default_max_tokens = chat ? 256 : 16;
  rules.min_max_tokens = r.echo ? 0 : 1;
  rules.max_max_tokens = model.n_positions;
  rules.chat_logprobs = chat;
  const bool max_given = present(o, rules.max_tokens_field) != nullptr;
  const GenerationRequest g = parse_generation_fields(o, rules, model.allowed_vocab, model.tokenizer);
  r.max_tokens = g.max_new_tokens;
  r.n = g.n;
  r.sampling = g.sampling;
  r.stop = g.stop;
  if (g.sampling.report_logprob) r.logprobs = g.sampling.logprobs;
  if (get_int(o, "best_of", r.n, 1, 16) != r.n)
    throw ApiError(400, "'best_of' other than n is not supported", "best_of");
  r.stream = get_bool(o, "stream", false);
  if (const json::value* so = present(o, "stream_options")) {
    if (!so->is_object()) throw ApiError(400, "'stream_options' must be an object", "stream_options");
    r.include_usage = get_bool(so->get_object(), "include_usage", false);
  }
  if (chat) r.stop.insert(r.stop.end(), chat_template_stops().begin(), chat_template_stops().end());
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
// The job: collects each choice's tokens; answers at the end (completion_body, request_frontend.h),
// or streams as tokens arrive.
namespace {

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
    // The n samples of a prompt are one request (one prefill, the prompt's KV blocks shared; sample
    // k gets seed + k): choices p*n .. p*n + n-1. Two cases keep n separate requests (the same
    // tokens, each prefilling the prompt): echoed prompt logprobs (only a request's first sample
    // reports them) and n above what one replica's batch holds.
    const bool share = req_.n > 1 && req_.n <= model_.max_batch && !(req_.echo && req_.logprobs.has_value());
    for (std::size_t p = 0; p < req_.prompts.size(); ++p) {
      for (int i = 0; i < req_.n; ++i) {
        ChoiceResult result;
        result.prompt_index = static_cast<int>(p);
        results_.push_back(std::move(result));
        streams_.emplace_back();
        if (model_.tokenizer) streams_.back().decoder.emplace(*model_.tokenizer);
        if (share && i > 0) continue;
        GenerationRequest g;
        g.prompt = req_.prompts[p];
        g.sampling = req_.sampling;
        if (g.sampling.seed) g.sampling.seed = *g.sampling.seed + static_cast<uint64_t>(i);
        g.max_new_tokens = req_.max_tokens;
        g.score_prompt = req_.echo && req_.logprobs.has_value();  // the echoed prompt's logprobs
        g.stop = req_.stop;
        g.n = share ? req_.n : 1;
        requests.push_back(std::move(g));
      }
    }
    remaining_ = static_cast<int>(results_.size());
  }

  void on_event(int index, const GenerationEvent& event) override {
    ChoiceResult& c = results_[static_cast<std::size_t>(index)];
    Stream& s = streams_[static_cast<std::size_t>(index)];
    if (c.done || event.finish == FinishReason::kCancelled) return;
    if (!event.prompt_logprobs.empty()) c.prompt_scores = event.prompt_logprobs;  // for the echoed prompt's chunk
    if (req_.stream) start_choice_stream(index, c, s);
    const bool appended = collect_token(c, event);
    if (appended && req_.stream && event.finish == FinishReason::kNone) {
      if (s.decoder) s.decoded += s.decoder->push(event.choice.token);
      const std::size_t safe = s.decoded.size() - stop_holdback(s.decoded, req_.stop);
      std::string delta;
      if (safe > s.emitted) delta = s.decoded.substr(s.emitted, safe - s.emitted);
      s.emitted = std::max(s.emitted, safe);
      send_chunk(index, c, s, utf8::to_valid_utf8(delta), c.tokens.size() - 1, c.tokens.size(), nullptr);
    }
    if (event.finish == FinishReason::kNone) return;
    const std::size_t streamed = req_.stream ? c.tokens.size() - (appended ? 1 : 0) : 0;
    finish_choice(c, event, model_.tokenizer);
    if (req_.stream) {
      const std::string rest = c.text.size() > s.emitted ? c.text.substr(s.emitted) : std::string();
      const std::size_t from = std::min(streamed, c.tokens.size());
      send_chunk(index, c, s, utf8::to_valid_utf8(rest), from, c.tokens.size(), c.finish.c_str());
    }
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
  struct Stream {  // a choice's streaming state
    std::optional<StreamDecoder> decoder;
    std::string decoded;       // streamed text so far (complete UTF-8 only)
    std::size_t emitted = 0;   // bytes of `decoded` sent
    bool started = false;
    std::size_t echo_offset = 0;  // bytes of echoed prompt text sent before the completion
  };

  void write_event(const json::object& chunk) { reply_->write("data: " + json::serialize(chunk) + "\n\n"); }

  void start_choice_stream(int index, const ChoiceResult& c, Stream& s) {
    if (!stream_started_) {
      stream_started_ = true;
      metrics_.count_request(200);
      reply_->begin_stream("text/event-stream");
    }
    if (s.started) return;
    s.started = true;
    if (req_.chat) {  // the first chunk names the role
      json::object choice{{"index", index}, {"delta", json::object{{"role", "assistant"}, {"content", ""}}},
                          {"logprobs", nullptr}, {"finish_reason", nullptr}};
      json::object chunk = response_envelope(req_, model_, id_, created_, true);
      chunk["choices"] = json::array{choice};
      write_event(chunk);
      return;
    }
    if (!req_.echo) return;
    const std::string text = prompt_text(req_, model_, c);
    json::object choice = choice_json(req_, static_cast<std::size_t>(index), text,
                                      choice_logprobs(req_, model_, c, 0, 0, true, 0), nullptr, true);
    choice["token_ids"] = json::value_from(req_.prompts[c.prompt_index]);
    json::object chunk = response_envelope(req_, model_, id_, created_, true);
    chunk["choices"] = json::array{choice};
    write_event(chunk);
    s.echo_offset = text.size();
  }

  void send_chunk(int index, const ChoiceResult& c, const Stream& s, const std::string& text, std::size_t from,
                  std::size_t to, const char* finish) {
    if (text.empty() && from >= to && !finish) return;
    json::object choice = choice_json(req_, static_cast<std::size_t>(index), text,
                                      choice_logprobs(req_, model_, c, from, to, false, s.echo_offset + s.emitted),
                                      finish ? json::value(finish) : json::value(nullptr), true);
    choice["token_ids"] = json::value_from(std::vector<int32_t>(c.tokens.begin() + from, c.tokens.begin() + to));
    json::object chunk = response_envelope(req_, model_, id_, created_, true);
    chunk["choices"] = json::array{choice};
    write_event(chunk);
  }

  void finish_all() {
    if (req_.stream) {
      if (req_.include_usage) {
        json::object chunk = response_envelope(req_, model_, id_, created_, true);
        chunk["choices"] = json::array{};
        chunk["usage"] = usage_json(req_, results_);
        write_event(chunk);
      }
      reply_->write("data: [DONE]\n\n");
      reply_->end();
      return;
    }
    metrics_.count_request(200);
    reply_->send(200, "application/json", json::serialize(completion_body(req_, model_, id_, created_, results_)));
  }

  CompletionRequest req_;
  ModelInfo model_;
  std::shared_ptr<HttpReply> reply_;
  ServerMetrics& metrics_;
  std::string id_;
  int64_t created_;
  std::vector<ChoiceResult> results_;
  std::vector<Stream> streams_;
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
