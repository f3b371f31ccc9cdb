// JSONL input/output of `gptj batch` (docs/DESIGN.md §5), rank 0 only.
// Input line: {"id": any, "prompt": "text"} or {"id": any, "tokens": [ids]}, with optional
// max_new_tokens, temperature, top_k, top_p, repetition_penalty, presence_penalty,
// frequency_penalty, no_repeat_ngram_size, seed, stop (string or strings), n, logprobs (0..20),
// logit_bias ({"id": bias}), prompt_logprobs (bool; then max_new_tokens may be 0). The generation
// fields are read by the server's parser (runtime/serve/request_frontend.h: same checks, same errors).
// Lines in OpenAI's batch format ({"custom_id", "method", "url", "body"}) are launcher/batch_lines.h's.
// Output line: {"id", "text", "tokens", "finish_reason", "prompt_tokens", "completion_tokens"}
// (+ "samples" when n > 1; + "token_logprobs" [per token] when the line asked for logprobs, and
// "top_logprobs" [per token: [[id, logprob], ...] best first] when logprobs > 0; + "prompt_logprobs"
// [null, then per prompt token after the first] and "prompt_top_logprobs" likewise when the line set
// prompt_logprobs), or {"id", "error"}
// for a line that cannot run (with "line": N, its line number in the input; "id" is null when none could
// be read from the line).
// Ids are kept as JSON text (numbers digit for digit, so 1e400 and 2^64+1 round-trip): an id's key is
// its text without whitespace, strings re-escaped canonically ("\u0061" is "a"); 1 and 1.0 differ.
#pragma once
#include <boost/json.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>

#include "runtime/generate/scheduler.h"
#include "runtime/generate/tokenizer.h"

namespace gptj {

struct BatchItem {
  std::string id;  // canonical JSON text of the line's id (id_key), written back as is
  GenerationRequest request;
  int n = 1;
};

// Parses one input line. Throws gptj::Error naming the field; `id` is set before any throw when the
// line has one (for a line that is not valid JSON: the id it begins with, {"id": VALUE, ...}), else
// left empty, so the error line can carry it. logit_bias keys must be ids below allowed_vocab (pass
// the model's: a larger id would be refused by the step's checks and end the job).
BatchItem parse_batch_line(const std::string& line, const Tokenizer* tokenizer, int default_max_new_tokens,
                           std::string& id, int allowed_vocab = INT32_MAX);

// The canonical text of the JSON value `text` (which must be valid JSON): whitespace outside strings
// dropped, strings re-escaped as Boost.JSON writes them, numbers exactly as written.
std::string id_key(std::string_view text);

// The --resume and duplicate key of an OpenAI batch line (launcher/batch_lines.h) whose custom_id
// is the JSON string `custom_id` as Boost.JSON writes it: "custom_id:" + that text. Plain lines are
// keyed by id_key(), which never starts so.
std::string custom_id_key(const std::string& custom_id);

// The canonical id of a line that begins {"id": VALUE, or {"id": VALUE} (the rest may be cut off or
// invalid); empty when it does not.
std::string leading_id(std::string_view line);

// Reads lines from a file descriptor (a regular file, a pipe or a FIFO) through a fixed buffer, so
// memory is bounded by max_line_bytes: of a longer line only the first max_line_bytes bytes are kept.
class LineReader {
 public:
  struct Line {
    uint64_t number = 0;     // 1-based
    uint64_t offset = 0;     // of its first byte in the stream
    uint64_t length = 0;     // bytes, without the newline
    std::string text;        // the line without its newline (its first max_line_bytes bytes)
    bool too_long = false;   // length > max_line_bytes
    bool terminated = false; // ended by a newline (false only for a last line)
    bool blank = true;       // only spaces, tabs, CR
  };
  enum class Status { kLine, kEnd, kNotReady };

  // Takes ownership of fd; `name` is for error messages.
  LineReader(int fd, std::string name, std::size_t max_line_bytes);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  // The next line; waits for input at most wait_ms in all (-1: as long as it takes) and returns
  // kNotReady when no whole line came by then (a pipe whose writer is slow: a partial line is kept
  // for the next call). Throws on a read error.
  Status next(Line& line, int wait_ms = -1);
  bool at_end() const { return eof_ && begin_ == end_ && !partial_; }

 private:
  bool fill(int wait_ms);  // false: nothing read before the wait ended

  int fd_;
  std::string name_;
  std::size_t max_line_bytes_;
  std::string buffer_;
  std::size_t begin_ = 0, end_ = 0;
  uint64_t consumed_ = 0;  // stream offset of buffer_[begin_]
  bool eof_ = false;
  bool partial_ = false;   // current_ holds the start of an unfinished line
  uint64_t lines_ = 0;     // lines begun
  Line current_;
};

// Opens --input for streaming: refuses a directory or anything that cannot be opened or read, in one
// line naming it. Sets *lines to its non-blank line count (a first pass over the file, nothing kept)
// when it is a regular file, else to -1 (a pipe cannot be read twice).
int open_input(const std::string& path, int64_t* lines);

// Appends lines with one write() each (no user-space buffer), so a kill loses at most the line in
// flight. Holds an exclusive flock on the file: a second job writing the same output is refused.
class JsonlWriter {
 public:
  JsonlWriter(const std::string& path, bool append);
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;

  // For --resume: the keys of the lines already in the output, each result line by its id's key and
  // each error line (it has "line": N) as "line:N" (an error does not count its id as done: the id may
  // still run on its own line). A torn last line (no newline and not a result line: the job was killed
  // mid-write) is cut off. Any other line that is not a result line is reported on stderr by number
  // and moved to PATH.corrupt: the output is rewritten without it (a new file renamed over the old
  // one, so a crash leaves one or the other whole), and its id is not done, so it is redone.
  std::unordered_set<std::string> finished_and_repair();

  // Writes {"id": <id>, ...line} (`id` is JSON text, e.g. from id_key; empty means null).
  void write(const std::string& id, const boost::json::object& line);

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace gptj
