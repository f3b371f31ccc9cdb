// JSONL input/output of `gptj batch` (docs/DESIGN.md §5), rank 0 only.
// Input line: {"id": any, "prompt": "text"} or {"id": any, "tokens": [ids]}, with optional
// max_new_tokens, temperature, top_k, top_p, repetition_penalty, presence_penalty,
// frequency_penalty, no_repeat_ngram_size, seed, stop (string or strings), n, logprobs (0..20),
// prompt_logprobs (bool; then max_new_tokens may be 0).
// Output line: {"id", "text", "tokens", "finish_reason", "prompt_tokens", "completion_tokens"}
// (+ "samples" when n > 1; + "token_logprobs" [per token] when the line asked for logprobs, and
// "top_logprobs" [per token: [[id, logprob], ...] best first] when logprobs > 0; + "prompt_logprobs"
// [null, then per prompt token after the first] and "prompt_top_logprobs" likewise when the line set
// prompt_logprobs), or {"id", "error"}
// for a line that cannot run ({"id": null, "error", "line": N} when the line has no usable id).
#pragma once
#include <boost/json.hpp>
#include <cstdio>
#include <optional>
#include <set>
#include <string>

#include "runtime/generate/scheduler.h"
#include "runtime/generate/tokenizer.h"

namespace gptj {

struct BatchItem {
  boost::json::value id;  // echoed exactly
  GenerationRequest request;
  int n = 1;
};

// Parses one input line. Throws gptj::Error naming the field; `id` is set (or null) before any
// throw so the error line can carry it.
BatchItem parse_batch_line(const std::string& line, const Tokenizer* tokenizer, int default_max_new_tokens,
                           boost::json::value& id);

// The ids already written to an output file (for --resume), as serialized JSON, plus "line:N" for
// error lines of id-less input lines. A torn last line (the job was killed mid-write) is cut off the
// file so the output stays valid JSONL.
std::set<std::string> finished_ids_and_repair(const std::string& path);

// Appends lines with one write() each (no user-space buffer), so a kill loses at most the line in
// flight. Holds an exclusive flock on the file: a second job writing the same output is refused.
class JsonlWriter {
 public:
  JsonlWriter(const std::string& path, bool append);
  ~JsonlWriter();
  void write(const boost::json::object& line);

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace gptj
