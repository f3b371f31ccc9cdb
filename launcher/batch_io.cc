#include "launcher/batch_io.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "runtime/core/error.h"

namespace gptj {
namespace json = boost::json;

namespace {

double number_field(const json::object& obj, const char* name, double low, double high) {
  const json::value& v = obj.at(name);
  GPTJ_CHECK(v.is_number(), "field '{}' must be a number", name);
  const double x = v.to_number<double>();
  GPTJ_CHECK(x >= low && x <= high, "field '{}' = {} is outside [{}, {}]", name, x, low, high);
  return x;
}

int int_field(const json::object& obj, const char* name, int64_t low, int64_t high) {
  const json::value& v = obj.at(name);
  GPTJ_CHECK(v.is_int64() || v.is_uint64(), "field '{}' must be an integer", name);
  const int64_t x = v.to_number<int64_t>();
  GPTJ_CHECK(x >= low && x <= high, "field '{}' = {} is outside [{}, {}]", name, x, low, high);
  return static_cast<int>(x);
}

}  // namespace

BatchItem parse_batch_line(const std::string& line, const Tokenizer* tokenizer,
                           int default_max_new_tokens, json::value& id) {
  id = nullptr;
  json::value root;
  boost::system::error_code ec;
  root = json::parse(line, ec);
  GPTJ_CHECK(!ec, "not valid JSON ({})", ec.message());
  GPTJ_CHECK(root.is_object(), "a line must be a JSON object");
  const json::object& obj = root.as_object();
  GPTJ_CHECK(obj.contains("id"), "missing field 'id'");
  id = obj.at("id");
  static const std::set<std::string> known{
      "id", "prompt", "tokens", "max_new_tokens", "temperature", "top_k", "top_p",
      "repetition_penalty", "presence_penalty", "frequency_penalty", "no_repeat_ngram_size", "seed",
      "stop", "n", "logprobs", "prompt_logprobs"};
  for (const auto& [key, value] : obj)
    GPTJ_CHECK(known.count(std::string(key)), "unknown field '{}'", std::string(key));

  BatchItem item;
  item.id = id;
  GenerationRequest& r = item.request;
  const bool has_prompt = obj.contains("prompt"), has_tokens = obj.contains("tokens");
  GPTJ_CHECK(has_prompt != has_tokens, "give exactly one of 'prompt' and 'tokens'");
  if (has_prompt) {
    GPTJ_CHECK(obj.at("prompt").is_string(), "field 'prompt' must be a string");
    GPTJ_CHECK(tokenizer != nullptr, "field 'prompt' needs the tokenizer files; use 'tokens'");
    r.prompt = tokenizer->encode(std::string(obj.at("prompt").as_string()));
  } else {
    GPTJ_CHECK(obj.at("tokens").is_array(), "field 'tokens' must be an array of token ids");
    for (const auto& t : obj.at("tokens").as_array()) {
      GPTJ_CHECK(t.is_int64() && t.as_int64() >= 0 && t.as_int64() <= INT32_MAX,
                 "field 'tokens' must hold non-negative integer ids");
      r.prompt.push_back(static_cast<int32_t>(t.as_int64()));
    }
  }
  GPTJ_CHECK(!r.prompt.empty(), "the prompt is empty");
  if (obj.contains("prompt_logprobs")) {
    GPTJ_CHECK(obj.at("prompt_logprobs").is_bool(), "field 'prompt_logprobs' must be true or false");
    r.score_prompt = obj.at("prompt_logprobs").as_bool();
  }
  // Scoring a prompt may generate nothing (max_new_tokens 0).
  r.max_new_tokens = obj.contains("max_new_tokens") ? int_field(obj, "max_new_tokens", r.score_prompt ? 0 : 1, 1 << 20)
                                                   : default_max_new_tokens;
  SamplingParams& s = r.sampling;
  if (obj.contains("temperature")) s.temperature = static_cast<float>(number_field(obj, "temperature", 0, 100));
  if (obj.contains("top_k")) s.top_k = int_field(obj, "top_k", 0, 1 << 20);
  if (obj.contains("top_p")) s.top_p = static_cast<float>(number_field(obj, "top_p", 1e-6, 1));
  if (obj.contains("repetition_penalty"))
    s.repetition_penalty = static_cast<float>(number_field(obj, "repetition_penalty", 1e-6, 100));
  if (obj.contains("presence_penalty"))
    s.presence_penalty = static_cast<float>(number_field(obj, "presence_penalty", -2, 2));
  if (obj.contains("frequency_penalty"))
    s.frequency_penalty = static_cast<float>(number_field(obj, "frequency_penalty", -2, 2));
  if (obj.contains("no_repeat_ngram_size"))
    s.no_repeat_ngram_size = int_field(obj, "no_repeat_ngram_size", 0, 1 << 20);
  if (obj.contains("logprobs")) {  // the chosen tokens' logprobs, plus the top N alternatives
    s.logprobs = int_field(obj, "logprobs", 0, 20);
    s.report_logprob = true;
  }
  if (obj.contains("seed")) {
    const json::value& seed = obj.at("seed");
    GPTJ_CHECK(seed.is_int64() || seed.is_uint64(), "field 'seed' must be an integer");
    s.seed = seed.is_uint64() ? seed.as_uint64() : static_cast<uint64_t>(seed.as_int64());
  }
  if (obj.contains("stop")) {
    const json::value& stop = obj.at("stop");
    if (stop.is_string()) {
      r.stop.emplace_back(stop.as_string());
    } else {
      GPTJ_CHECK(stop.is_array(), "field 'stop' must be a string or an array of strings");
      for (const auto& s_value : stop.as_array()) {
        GPTJ_CHECK(s_value.is_string(), "field 'stop' must be a string or an array of strings");
        r.stop.emplace_back(s_value.as_string());
      }
    }
    GPTJ_CHECK(r.stop.empty() || tokenizer != nullptr, "field 'stop' needs the tokenizer files");
  }
  if (obj.contains("n")) item.n = int_field(obj, "n", 1, 128);
  return item;
}

std::set<std::string> finished_ids_and_repair(const std::string& path) {
  std::set<std::string> ids;
  if (!std::filesystem::exists(path)) return ids;
  std::ifstream in(path, std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  std::size_t good_end = 0, at = 0;
  while (at < content.size()) {
    const std::size_t newline = content.find('\n', at);
    if (newline == std::string::npos) break;  // torn last line: no newline
    boost::system::error_code ec;
    json::value line = json::parse(std::string_view(content).substr(at, newline - at), ec);
    if (ec || !line.is_object()) break;
    const json::object& entry = line.as_object();
    const json::value* id = entry.if_contains("id");
    const json::value* line_no = entry.if_contains("line");
    if (id && id->is_null() && line_no && line_no->is_number())  // error line of an id-less input line
      ids.insert("line:" + std::to_string(line_no->to_number<int64_t>()));
    else if (id)
      ids.insert(json::serialize(*id));
    good_end = newline + 1;
    at = newline + 1;
  }
  if (good_end < content.size()) std::filesystem::resize_file(path, good_end);
  return ids;
}

JsonlWriter::JsonlWriter(const std::string& path, bool append) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  GPTJ_CHECK(fd_ >= 0, "cannot open output {} ({})", path, std::strerror(errno));
  // Two jobs appending to one output would duplicate ids: the second one refuses.
  GPTJ_CHECK(::flock(fd_, LOCK_EX | LOCK_NB) == 0, "output {} is locked by another running gptj batch", path);
  if (!append) GPTJ_CHECK(::ftruncate(fd_, 0) == 0, "cannot truncate {}", path);
}

JsonlWriter::~JsonlWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void JsonlWriter::write(const json::object& line) {
  const std::string text = json::serialize(line) + "\n";
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    GPTJ_CHECK(n > 0, "write to {} failed ({})", path_, std::strerror(errno));
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace gptj
