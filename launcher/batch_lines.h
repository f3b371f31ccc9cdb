// The input lines of `gptj batch` in flight (rank 0), in its two formats, read per line:
//  - plain: {"id", "prompt" | "tokens", ...} (launcher/batch_io.h) → {"id", "text", "tokens", ...};
//  - OpenAI batch: a JSON object with "custom_id" (+ "method": "POST", "url": "/v1/completions" or
//    "/v1/chat/completions", "body": the request) → {"id": "batch_req_...", "custom_id", "response":
//    {"status_code", "request_id", "body"}, "error": null}, where status and body are exactly what
//    `gptj serve` answers for that body: the body goes through the server's own parser and
//    CompletionJob (runtime/serve/completion_api.h), whose answer is captured instead of sent. A body
//    the server would refuse gets its 400 and OpenAI error body; "stream": true is refused (400,
//    param "stream"). A line whose envelope is wrong (custom_id not a string, another method or url,
//    no body object) or that repeats a custom_id gets {"id", "custom_id", "response": null,
//    "error": {"code", "message"}, "line": N}.
// Either way a line is one BatchLine: the GenerationRequests to submit (request i's n samples take the
// next n handles), its events by sample index (handle - the line's first handle), and its output line.
#pragma once
#include <boost/json.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/generate/scheduler.h"
#include "runtime/serve/request_frontend.h"

namespace gptj {

class BatchLine {
 public:
  virtual ~BatchLine() = default;
  // The requests to submit, each with its samples (n); the caller sets their handles.
  virtual std::vector<GenerationRequest>& requests() = 0;
  // One event of sample `index` (its handle minus the line's first handle).
  virtual void on_event(int index, const GenerationEvent& event) = 0;
  // The scheduler refused the line's requests (e.g. a prompt that does not fit): `message`.
  virtual void on_refused(const std::string& message) = 0;
  // The output line without its "id" (see id()), once it is complete: every sample finished, the line
  // refused or (OpenAI) its body answered with an error; nullopt before. Call once it is there.
  virtual std::optional<boost::json::object> take_output() = 0;
  // Whether its output is an error line (counted as one in the summary).
  virtual bool is_error() const = 0;
  // Makes the output the error line of input line `line_no` (a repeated id or custom_id): see
  // error_output(); ready at once in take_output().
  virtual void refuse(uint64_t line_no, const std::string& message) = 0;

  const std::string& id() const { return id_; }    // JSON text written as "id"
  const std::string& key() const { return key_; }  // the duplicate and --resume key

 protected:
  std::string id_, key_;
};

// What parsing a line needs.
struct BatchLineContext {
  const Tokenizer* tokenizer = nullptr;
  int default_max_new_tokens = 64;  // plain lines without max_new_tokens
  ModelInfo model;                   // OpenAI lines: what the server would know
};

// Parses input line number `line_no`. A plain line that cannot run throws gptj::Error (with `id` set
// as parse_batch_line sets it); an OpenAI line never throws: an error becomes its output (status 400
// response, or an error line for a bad envelope), ready at once in take_output(). `key` is set to the
// line's key before any throw (empty: none could be read).
std::unique_ptr<BatchLine> parse_input_line(const std::string& line, uint64_t line_no, const BatchLineContext& context,
                                            std::string& id, std::string& key);

// The error line of plain input line `line_no` that cannot run: {"error": "line N: message", "line": N}
// (written with the line's id, or null). An OpenAI line's (BatchLine::refuse, or its bad envelope):
// {"custom_id" (JSON text; empty: null), "response": null, "error": {"code": "invalid_batch_line",
// "message": "line N: message"}, "line": N}, written with a fresh "batch_req_..." id.
boost::json::object plain_error_line(uint64_t line_no, const std::string& message);
boost::json::object openai_error_line(const std::string& custom_id, uint64_t line_no, const std::string& message);

}  // namespace gptj
