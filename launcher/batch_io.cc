#include "launcher/batch_io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/serve/request_frontend.h"

namespace gptj {
namespace json = boost::json;

namespace {

// Scanners over JSON text that may be cut off or invalid: they never read past the end and return
// npos where they cannot follow the text. Validity is Boost.JSON's to judge; these only find spans.
constexpr std::size_t npos = std::string_view::npos;

bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::size_t skip_space(std::string_view s, std::size_t i) {
  while (i < s.size() && json_space(s[i])) ++i;
  return i;
}

std::size_t skip_string(std::string_view s, std::size_t i) {  // s[i] is the opening quote
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') ++i;
    else if (s[i] == '"') return i + 1;
  }
  return npos;
}

std::size_t skip_value(std::string_view s, std::size_t i) {
  if (i >= s.size()) return npos;
  if (s[i] == '"') return skip_string(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = skip_string(s, i);
        if (i == npos) return npos;
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if ((c == '}' || c == ']') && --depth == 0) return i + 1;
      ++i;
    }
    return npos;
  }
  std::size_t end = i;  // a number or a literal
  while (end < s.size() && (std::isalnum(static_cast<unsigned char>(s[end])) || s[end] == '+' || s[end] == '-' ||
                            s[end] == '.'))
    ++end;
  return end > i ? end : npos;
}

// The decoded key of the member name at s[i] (a JSON string), or nullopt; *end is set past it.
std::optional<std::string> member_name(std::string_view s, std::size_t i, std::size_t* end) {
  if (i >= s.size() || s[i] != '"') return std::nullopt;
  *end = skip_string(s, i);
  if (*end == npos) return std::nullopt;
  const std::string_view raw = s.substr(i + 1, *end - i - 2);
  if (raw.find('\\') == npos) return std::string(raw);  // no escapes: the name as it stands
  boost::system::error_code ec;
  json::value key = json::parse(s.substr(i, *end - i), ec);
  if (ec) return std::nullopt;
  return std::string(key.as_string());
}

// The raw text of each top-level "id" member of the valid JSON object `s`.
std::vector<std::string_view> id_members(std::string_view s) {
  std::vector<std::string_view> ids;
  std::size_t i = skip_space(s, 0);
  if (i >= s.size() || s[i] != '{') return ids;
  i = skip_space(s, i + 1);
  if (i < s.size() && s[i] == '}') return ids;
  while (i < s.size()) {
    std::size_t name_end = 0;
    const std::optional<std::string> name = member_name(s, i, &name_end);
    if (!name) break;
    i = skip_space(s, name_end);
    if (i >= s.size() || s[i] != ':') break;
    i = skip_space(s, i + 1);
    const std::size_t value_end = skip_value(s, i);
    if (value_end == npos) break;
    if (*name == "id") ids.push_back(s.substr(i, value_end - i));
    i = skip_space(s, value_end);
    if (i >= s.size() || s[i] != ',') break;
    i = skip_space(s, i + 1);
  }
  return ids;
}

void write_all(int fd, std::string_view text, const std::string& path) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    GPTJ_CHECK(n > 0, "write to {} failed ({})", path, std::strerror(errno));
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

std::string id_key(std::string_view text) {
  std::string key;
  for (std::size_t i = 0; i < text.size();) {
    if (json_space(text[i])) {
      ++i;
    } else if (text[i] == '"') {
      const std::size_t end = skip_string(text, i);
      GPTJ_CHECK(end != npos, "id_key: unterminated string");
      key += json::serialize(json::parse(text.substr(i, end - i)).as_string());
      i = end;
    } else {
      key += text[i++];
    }
  }
  return key;
}

std::string custom_id_key(const std::string& custom_id) { return "custom_id:" + custom_id; }

std::string leading_id(std::string_view line) {
  std::size_t i = skip_space(line, 0), name_end = 0;
  if (i >= line.size() || line[i] != '{') return {};
  i = skip_space(line, i + 1);
  const std::optional<std::string> name = member_name(line, i, &name_end);
  if (name != "id") return {};
  i = skip_space(line, name_end);
  if (i >= line.size() || line[i] != ':') return {};
  const std::size_t start = skip_space(line, i + 1), end = skip_value(line, start);
  if (end == npos) return {};
  const std::size_t after = skip_space(line, end);  // the value must be complete: "12" of "123" is not
  if (after >= line.size() || (line[after] != ',' && line[after] != '}')) return {};
  boost::system::error_code ec;
  json::parse(line.substr(start, end - start), ec);
  return ec ? std::string() : id_key(line.substr(start, end - start));
}

BatchItem parse_batch_line(const std::string& line, const Tokenizer* tokenizer,
                           int default_max_new_tokens, std::string& id, int allowed_vocab) {
  id.clear();
  json::value root;
  boost::system::error_code ec;
  root = json::parse(line, ec);
  if (ec) id = leading_id(line);
  GPTJ_CHECK(!ec, "not valid JSON ({})", ec.message());
  GPTJ_CHECK(root.is_object(), "a line must be a JSON object");
  const json::object& obj = root.as_object();
  const std::vector<std::string_view> ids = id_members(line);
  GPTJ_CHECK(!ids.empty(), "missing field 'id'");
  GPTJ_CHECK(ids.size() == 1, "field 'id' is given {} times", ids.size());
  id = id_key(ids[0]);
  static const std::set<std::string> known{
      "id", "prompt", "tokens", "max_new_tokens", "temperature", "top_k", "top_p",
      "repetition_penalty", "presence_penalty", "frequency_penalty", "no_repeat_ngram_size", "seed",
      "stop", "n", "logprobs", "prompt_logprobs", "logit_bias"};
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
  r.score_prompt = get_bool(obj, "prompt_logprobs", false);
  // The generation fields, read and checked as the server reads them (runtime/serve/request_frontend.h),
  // with this format's names, defaults and limits. Scoring a prompt may generate nothing (max_new_tokens 0).
  GenerationFieldRules rules;
  rules.max_tokens_field = "max_new_tokens";
  rules.default_max_tokens = default_max_new_tokens;
  rules.min_max_tokens = r.score_prompt ? 0 : 1;
  rules.max_max_tokens = 1 << 20;
  rules.default_temperature = 0;
  rules.max_temperature = 100;
  rules.max_n = 128;
  GenerationRequest fields = parse_generation_fields(obj, rules, allowed_vocab, tokenizer);
  r.max_new_tokens = fields.max_new_tokens;
  r.sampling = std::move(fields.sampling);
  r.stop = std::move(fields.stop);
  item.n = fields.n;
  return item;
}

LineReader::LineReader(int fd, std::string name, std::size_t max_line_bytes)
    : fd_(fd), name_(std::move(name)), max_line_bytes_(max_line_bytes), buffer_(64 << 10, '\0') {}

LineReader::~LineReader() {
  if (fd_ >= 0) ::close(fd_);
}

bool LineReader::fill(int wait_ms) {
  begin_ = end_ = 0;
  if (wait_ms >= 0) {
    pollfd p{fd_, POLLIN, 0};
    int ready;
    while ((ready = ::poll(&p, 1, wait_ms)) < 0 && errno == EINTR) {
    }
    GPTJ_CHECK(ready >= 0, "waiting for {} failed ({})", name_, std::strerror(errno));
    if (ready == 0) return false;
  }
  ssize_t n;
  while ((n = ::read(fd_, buffer_.data(), buffer_.size())) < 0 && errno == EINTR) {
  }
  GPTJ_CHECK(n >= 0, "reading {} failed ({})", name_, std::strerror(errno));
  if (n == 0) eof_ = true;
  end_ = static_cast<std::size_t>(n);
  return true;
}

LineReader::Status LineReader::next(Line& line, int wait_ms) {
  // wait_ms is for the whole call, not for each read: a line trickling in returns kNotReady (its
  // start is kept) once the time is up.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(wait_ms, 0));
  auto wait_left_ms = [&]() -> int {
    if (wait_ms < 0) return -1;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(left.count(), 0));
  };
  while (true) {
    if (begin_ == end_) {
      if (!eof_ && !fill(wait_left_ms())) return Status::kNotReady;
      if (begin_ == end_) {  // end of input
        if (!partial_) return Status::kEnd;
        partial_ = false;
        line = std::move(current_);
        return Status::kLine;
      }
    }
    if (!partial_) {
      current_ = Line{};
      current_.number = ++lines_;
      current_.offset = consumed_;
      partial_ = true;
    }
    const std::string_view rest(buffer_.data() + begin_, end_ - begin_);
    const std::size_t newline = rest.find('\n');
    const std::string_view piece = rest.substr(0, newline);
    if (current_.blank && piece.find_first_not_of(" \t\r") != npos) current_.blank = false;
    if (current_.text.size() < max_line_bytes_)
      current_.text.append(piece.substr(0, max_line_bytes_ - current_.text.size()));
    current_.length += piece.size();
    current_.too_long = current_.length > max_line_bytes_;
    const std::size_t used = piece.size() + (newline != npos ? 1 : 0);
    begin_ += used;
    consumed_ += used;
    if (newline != npos) {
      partial_ = false;
      current_.terminated = true;
      line = std::move(current_);
      return Status::kLine;
    }
  }
}

int open_input(const std::string& path, int64_t* lines) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  GPTJ_CHECK(fd >= 0, "cannot open --input {} ({})", path, std::strerror(errno));
  struct stat st {};
  try {
    GPTJ_CHECK(::fstat(fd, &st) == 0, "cannot stat --input {} ({})", path, std::strerror(errno));
    GPTJ_CHECK(!S_ISDIR(st.st_mode), "--input {} is a directory, not a JSONL file", path);
    *lines = -1;
    if (S_ISREG(st.st_mode)) {  // count the lines to come, for the progress report; keep none
      const int copy = ::dup(fd);
      GPTJ_CHECK(copy >= 0, "cannot read --input {} ({})", path, std::strerror(errno));
      LineReader counter(copy, "--input " + path, 0);
      int64_t count = 0;
      for (LineReader::Line line; counter.next(line) == LineReader::Status::kLine;) count += line.blank ? 0 : 1;
      GPTJ_CHECK(::lseek(fd, 0, SEEK_SET) == 0, "cannot rewind --input {} ({})", path, std::strerror(errno));
      *lines = count;
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  return fd;
}

namespace {

// The resume key of an output line (see finished_and_repair), or empty with `why` set when the line is
// not one gptj batch writes.
std::string result_key(std::string_view text, std::string& why) {
  boost::system::error_code ec;
  const json::value value = json::parse(text, ec);
  if (ec) {
    why = "not valid JSON";
    return {};
  }
  const json::object* line = value.if_object();
  const std::vector<std::string_view> ids = id_members(text);
  if (line == nullptr || ids.size() != 1 ||
      !(line->contains("finish_reason") || line->contains("error") || line->contains("response"))) {
    why = "not an object with one 'id' and a 'finish_reason', 'error' or 'response'";
    return {};
  }
  if (const json::value* number = line->if_contains("line"); number && (number->is_int64() || number->is_uint64()))
    return "line:" + json::serialize(*number);
  // An OpenAI batch line's result: known by its custom_id (launcher/batch_lines.h), not by its
  // "batch_req_..." id.
  if (const json::value* custom = line->if_contains("custom_id"); custom && custom->is_string() && line->contains("response"))
    return custom_id_key(json::serialize(*custom));
  return id_key(ids[0]);
}

constexpr std::size_t kReportedCorruptLines = 10;

}  // namespace

JsonlWriter::JsonlWriter(const std::string& path, bool append) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  GPTJ_CHECK(fd_ >= 0, "cannot open output {} ({})", path, std::strerror(errno));
  // Two jobs appending to one output would duplicate ids: the second one refuses.
  GPTJ_CHECK(::flock(fd_, LOCK_EX | LOCK_NB) == 0, "output {} is locked by another running gptj batch", path);
  if (!append) GPTJ_CHECK(::ftruncate(fd_, 0) == 0, "cannot truncate {}", path);
}

JsonlWriter::~JsonlWriter() {
  if (fd_ >= 0) ::close(fd_);
}

std::unordered_set<std::string> JsonlWriter::finished_and_repair() {
  const std::string moved = path_ + ".corrupt", fresh = path_ + ".tmp";
  auto open_read = [&]() {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    GPTJ_CHECK(fd >= 0, "cannot read output {} ({})", path_, std::strerror(errno));
    return fd;
  };
  std::unordered_set<std::string> keys;
  std::vector<uint64_t> corrupt;  // line numbers, ascending
  uint64_t keep_bytes = 0, torn = 0;
  bool add_newline = false;
  {
    LineReader in(open_read(), "output " + path_, std::numeric_limits<std::size_t>::max());
    for (LineReader::Line line; in.next(line) == LineReader::Status::kLine;) {
      std::string why;
      const std::string key = line.blank ? std::string() : result_key(line.text, why);
      if (!line.terminated && key.empty()) {  // a torn last line: the job died writing it
        torn = line.number;
        break;
      }
      keep_bytes = line.offset + line.length + (line.terminated ? 1 : 0);
      if (!key.empty()) {
        keys.insert(key);
        add_newline = !line.terminated;
      } else if (!line.blank) {
        corrupt.push_back(line.number);
        if (corrupt.size() > kReportedCorruptLines) continue;
        const std::string id = leading_id(line.text);
        std::fprintf(stderr,
                     "gptj batch: output %s line %llu is corrupt (%s; %s): moved to %s, its input line is redone\n",
                     path_.c_str(), static_cast<unsigned long long>(line.number), why.c_str(),
                     id.empty() ? "no id" : ("id " + id).c_str(), moved.c_str());
      }
    }
  }
  if (corrupt.empty()) {
    if (torn)
      GPTJ_CHECK(::ftruncate(fd_, static_cast<off_t>(keep_bytes)) == 0, "cannot cut the torn last line of {} ({})",
                 path_, std::strerror(errno));
    if (add_newline) write_all(fd_, "\n", path_);
    return keys;
  }
  if (corrupt.size() > kReportedCorruptLines)
    std::fprintf(stderr, "gptj batch: output %s: %zu corrupt lines in all, moved to %s\n", path_.c_str(),
                 corrupt.size(), moved.c_str());
  // Rewrite without the corrupt lines: a new file, locked before it takes the output's name.
  struct stat st {};
  GPTJ_CHECK(::fstat(fd_, &st) == 0, "cannot stat {} ({})", path_, std::strerror(errno));
  const int out = ::open(fresh.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  GPTJ_CHECK(out >= 0, "cannot create {} ({})", fresh, std::strerror(errno));
  const int side = ::open(moved.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  try {
    GPTJ_CHECK(side >= 0, "cannot open {} ({})", moved, std::strerror(errno));
    GPTJ_CHECK(::fchmod(out, st.st_mode & 07777) == 0 && ::flock(out, LOCK_EX | LOCK_NB) == 0, "cannot prepare {} ({})",
               fresh, std::strerror(errno));
    LineReader in(open_read(), "output " + path_, std::numeric_limits<std::size_t>::max());
    std::size_t next_corrupt = 0;
    for (LineReader::Line line; in.next(line) == LineReader::Status::kLine && line.number != torn;) {
      const bool bad = next_corrupt < corrupt.size() && corrupt[next_corrupt] == line.number;
      next_corrupt += bad ? 1 : 0;
      line.text += '\n';
      write_all(bad ? side : out, line.text, bad ? moved : fresh);
    }
    GPTJ_CHECK(::fsync(side) == 0 && ::fsync(out) == 0, "cannot sync {} ({})", fresh, std::strerror(errno));
    GPTJ_CHECK(::rename(fresh.c_str(), path_.c_str()) == 0, "cannot replace {} ({})", path_, std::strerror(errno));
  } catch (...) {
    if (side >= 0) ::close(side);
    ::close(out);
    ::unlink(fresh.c_str());
    throw;
  }
  ::close(side);
  const std::string dir = std::filesystem::absolute(path_).parent_path().string();
  if (const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {  // make the rename durable
    ::fsync(d);
    ::close(d);
  }
  ::close(fd_);
  fd_ = out;
  return keys;
}

void JsonlWriter::write(const std::string& id, const json::object& line) {
  const std::string rest = json::serialize(line);
  std::string text = "{\"id\":" + (id.empty() ? std::string("null") : id);
  if (rest.size() > 2) {
    text += ',';
    text.append(rest, 1);
  } else {
    text += '}';
  }
  text += '\n';
  write_all(fd_, text, path_);
}

}  // namespace gptj
