#include "launcher/batch_lines.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "launcher/batch_io.h"
#include "runtime/core/error.h"
#include "runtime/generate/utf8_stream.h"
#include "runtime/serve/completion_api.h"

namespace gptj {
namespace json = boost::json;

namespace {

// ------------------------------------------------------------------------------------------------
// Plain lines: one request whose n samples share the prompt's prefill.

// Logprobs of a run of tokens: per token its logprob and its [[id, logprob], ...] alternatives.
struct SampleLogprobs {
  json::array token_logprobs, top_logprobs;
};

void record_logprobs(const TokenChoice& choice, SampleLogprobs& lp) {
  lp.token_logprobs.push_back(choice.logprob);
  json::array top;
  for (const auto& [token, logprob] : choice.top) top.push_back(json::array{token, logprob});
  lp.top_logprobs.push_back(std::move(top));
}

json::object sample_json(const GenerationEvent& e, const Tokenizer* tokenizer) {
  const std::vector<int32_t>& tokens = *e.generated;
  // JSON needs valid UTF-8: a generation cut mid-character ends in U+FFFD, as in Hugging Face.
  const std::string text = utf8::to_valid_utf8(
      e.finish == FinishReason::kStop ? e.stop_text : tokenizer ? tokenizer->decode(tokens) : "");
  json::object out{{"text", text}, {"finish_reason", finish_reason_name(e.finish)},
                   {"completion_tokens", tokens.size()}};
  out["tokens"] = json::value_from(tokens);
  return out;
}

class PlainLine : public BatchLine {
 public:
  PlainLine(BatchItem item, const Tokenizer* tokenizer) : tokenizer_(tokenizer) {
    id_ = key_ = item.id;
    GenerationRequest& r = item.request;
    n_ = item.n;
    r.n = item.n;
    prompt_tokens_ = static_cast<int>(r.prompt.size());
    logprobs_ = r.sampling.report_logprob;
    scores_prompt_ = r.score_prompt;
    top_logprobs_ = r.sampling.logprobs;
    samples_.resize(static_cast<std::size_t>(n_));
    sample_logprobs_.resize(static_cast<std::size_t>(n_));
    requests_.push_back(std::move(r));
  }

  std::vector<GenerationRequest>& requests() override { return requests_; }

  void on_event(int index, const GenerationEvent& e) override {
    SampleLogprobs& lp = sample_logprobs_[static_cast<std::size_t>(index)];
    if (logprobs_ && e.choice.token >= 0) record_logprobs(e.choice, lp);
    if (scores_prompt_ && index == 0 && prompt_.token_logprobs.empty()) {  // its first event
      prompt_.token_logprobs.push_back(nullptr);  // the first prompt token has no logprob
      prompt_.top_logprobs.push_back(nullptr);
      for (const TokenChoice& c : e.prompt_logprobs) record_logprobs(c, prompt_);
    }
    if (e.finish == FinishReason::kNone) return;
    json::object& sample = samples_[static_cast<std::size_t>(index)];
    sample = sample_json(e, tokenizer_);
    if (logprobs_) {  // the logprobs of the tokens the sample kept (a stop string may have removed the last ones)
      const std::size_t kept = e.generated->size();
      lp.token_logprobs.resize(std::min(kept, lp.token_logprobs.size()));
      lp.top_logprobs.resize(std::min(kept, lp.top_logprobs.size()));
      sample["token_logprobs"] = std::move(lp.token_logprobs);
      if (top_logprobs_ > 0) sample["top_logprobs"] = std::move(lp.top_logprobs);
    }
    if (++received_ < n_) return;
    json::object line;
    for (const char* key : {"text", "tokens", "finish_reason"}) line[key] = samples_[0].at(key);
    line["prompt_tokens"] = prompt_tokens_;
    line["completion_tokens"] = samples_[0].at("completion_tokens");
    for (const char* key : {"token_logprobs", "top_logprobs"})
      if (samples_[0].contains(key)) line[key] = samples_[0].at(key);
    if (scores_prompt_) {
      line["prompt_logprobs"] = std::move(prompt_.token_logprobs);
      if (top_logprobs_ > 0) line["prompt_top_logprobs"] = std::move(prompt_.top_logprobs);
    }
    if (n_ > 1) line["samples"] = json::value_from(samples_);
    output_ = std::move(line);
  }

  void on_refused(const std::string& message) override { refuse(line_no_, message); }
  void refuse(uint64_t line_no, const std::string& message) override {
    output_ = plain_error_line(line_no, message);
    error_ = true;
  }
  std::optional<json::object> take_output() override { return std::exchange(output_, std::nullopt); }
  bool is_error() const override { return error_; }
  void set_line(uint64_t line_no) { line_no_ = line_no; }

 private:
  const Tokenizer* tokenizer_;
  std::vector<GenerationRequest> requests_;
  int n_ = 1, received_ = 0, prompt_tokens_ = 0, top_logprobs_ = 0;
  bool logprobs_ = false, scores_prompt_ = false, error_ = false;
  uint64_t line_no_ = 0;
  std::vector<json::object> samples_;
  std::vector<SampleLogprobs> sample_logprobs_;
  SampleLogprobs prompt_;  // when the line set prompt_logprobs (entry 0: null)
  std::optional<json::object> output_;
};

// ------------------------------------------------------------------------------------------------
// OpenAI batch lines: the server's CompletionJob, answering into a CapturedReply.

// Keeps the answer a CompletionJob sends instead of sending it.
class CapturedReply : public HttpReply {
 public:
  void send(unsigned status, const std::string&, std::string body, HttpHeaders) override {
    status_ = status;
    body_ = std::move(body);
    sent_ = true;
  }
  void begin_stream(const std::string&) override { status_ = 200; }  // never: batch refuses streaming
  void write(std::string data) override { body_ += data; }
  void end() override { sent_ = true; }
  void on_disconnect(std::function<void()>) override {}

  bool sent() const { return sent_; }
  unsigned status() const { return status_; }
  const std::string& body() const { return body_; }

 private:
  bool sent_ = false;
  unsigned status_ = 0;
  std::string body_;
};

std::string random_hex_id(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}{:016x}", prefix, rng(), rng());
}

// The counters a CompletionJob updates; `gptj batch` has no /metrics to show them.
ServerMetrics& unread_metrics() {
  static ServerMetrics metrics;
  return metrics;
}

class OpenAiLine : public BatchLine {
 public:
  // custom_id: JSON text of the line's custom_id (a string); empty when it has none.
  explicit OpenAiLine(const std::string& custom_id) : custom_id_(custom_id) {
    id_ = json::serialize(json::value(random_hex_id("batch_req_")));
    if (!custom_id.empty()) key_ = custom_id_key(custom_id);
  }

  // Prepares the job for `body` at `url` as the server's request worker would.
  void prepare(const json::object& body, bool chat, const ModelInfo& model) {
    try {
      CompletionRequest request = parse_completion_request(json::serialize(body), model, chat);
      if (request.stream)
        throw ApiError(400, "'stream' is not supported in a batch file: each line gets one whole answer", "stream");
      job_ = make_completion_job(std::move(request), model, reply_, unread_metrics(), std::chrono::milliseconds(0));
    } catch (const ApiError& e) {
      reply_->send(static_cast<unsigned>(e.status), "application/json", error_body(e.what(), e.type, e.param), {});
    } catch (const Error& e) {  // e.g. the tokenizer refusing input: what the server answers
      reply_->send(400, "application/json", error_body(e.what(), "invalid_request_error", "prompt"), {});
    }
  }

  std::vector<GenerationRequest>& requests() override { return job_ ? job_->requests : no_requests_; }
  void on_event(int index, const GenerationEvent& e) override { job_->on_event(index, e); }
  // As the coordinator does when the scheduler refuses a job.
  void on_refused(const std::string& message) override { job_->on_failed(400, "invalid_request_error", message); }
  void refuse(uint64_t line_no, const std::string& message) override {
    output_ = openai_error_line(custom_id_, line_no, message);
    error_ = true;
  }

  std::optional<json::object> take_output() override {
    if (output_ || !reply_->sent() || taken_) return std::exchange(output_, std::nullopt);
    taken_ = true;
    json::object response{{"status_code", reply_->status()}, {"request_id", random_hex_id("req_")},
                          {"body", json::parse(reply_->body())}};
    return json::object{{"custom_id", json::parse(custom_id_)}, {"response", std::move(response)}, {"error", nullptr}};
  }
  // A bad envelope, a repeated custom_id, or a body the server refuses.
  bool is_error() const override { return error_ || (reply_->sent() && reply_->status() != 200); }

 private:
  std::string custom_id_;
  std::shared_ptr<CapturedReply> reply_ = std::make_shared<CapturedReply>();
  std::shared_ptr<Job> job_;
  std::vector<GenerationRequest> no_requests_;
  std::optional<json::object> output_;
  bool error_ = false, taken_ = false;
};

std::unique_ptr<BatchLine> parse_openai_line(const json::object& o, uint64_t line_no, const BatchLineContext& context,
                                             std::string& id, std::string& key) {
  const json::value& custom = o.at("custom_id");
  auto line = std::make_unique<OpenAiLine>(custom.is_string() ? json::serialize(custom) : std::string());
  id = line->id();
  key = line->key();  // none without a custom_id: its error line counts by its line number
  auto refuse = [&](const std::string& message) {
    line->refuse(line_no, message);
    return std::move(line);
  };
  if (!custom.is_string()) return refuse("'custom_id' must be a string");
  const json::value* method = o.if_contains("method");
  if (method && !(method->is_string() && method->get_string() == "POST"))
    return refuse("'method' must be \"POST\"");
  const json::value* url = o.if_contains("url");
  if (!url || !url->is_string()) return refuse("'url' must be \"/v1/completions\" or \"/v1/chat/completions\"");
  const bool chat = url->get_string() == "/v1/chat/completions";
  if (!chat && url->get_string() != "/v1/completions")
    return refuse(fmt::format("'url' {} is not supported: use \"/v1/completions\" or \"/v1/chat/completions\"",
                              json::serialize(*url)));
  const json::value* body = o.if_contains("body");
  if (!body || !body->is_object()) return refuse("'body' must be a JSON object: the request");
  line->prepare(body->get_object(), chat, context.model);
  return line;
}

}  // namespace

std::unique_ptr<BatchLine> parse_input_line(const std::string& text, uint64_t line_no, const BatchLineContext& context,
                                            std::string& id, std::string& key) {
  id.clear();
  key.clear();
  if (text.find("custom_id") != std::string::npos) {  // else it cannot be an OpenAI line: parse once
    boost::system::error_code ec;
    const json::value v = json::parse(text, ec);
    if (!ec && v.is_object() && v.get_object().contains("custom_id"))
      return parse_openai_line(v.get_object(), line_no, context, id, key);
  }
  try {
    auto line = std::make_unique<PlainLine>(
        parse_batch_line(text, context.tokenizer, context.default_max_new_tokens, id, context.model.allowed_vocab),
        context.tokenizer);
    line->set_line(line_no);
    key = id;
    return line;
  } catch (...) {
    key = id;
    throw;
  }
}

json::object plain_error_line(uint64_t line_no, const std::string& message) {
  return json::object{{"error", fmt::format("line {}: {}", line_no, message)}, {"line", line_no}};
}

json::object openai_error_line(const std::string& custom_id, uint64_t line_no, const std::string& message) {
  json::object error{{"code", "invalid_batch_line"}, {"message", fmt::format("line {}: {}", line_no, message)}};
  return json::object{{"custom_id", custom_id.empty() ? json::value(nullptr) : json::parse(custom_id)},
                      {"response", nullptr},
                      {"error", std::move(error)},
                      {"line", line_no}};
}

}  // namespace gptj
