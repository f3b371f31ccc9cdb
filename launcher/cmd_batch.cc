// gptj batch: JSONL in, JSONL out, through the continuous-batching scheduler (rank 0), at any TP
// size. Each result line is written and flushed as its request finishes; --resume skips ids
// already in the output (after cutting a torn last line); SIGINT/SIGTERM stop after the current
// step with every finished line kept. Progress goes to stderr: a bar at a terminal, else a log
// line every 10 s; a summary at the end.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <map>

#include "launcher/batch_io.h"
#include "launcher/commands.h"
#include "runtime/core/error.h"
#include "runtime/generate/utf8_stream.h"

namespace gptj {
namespace json = boost::json;

namespace {

std::atomic<int> g_stop_signal{0};
void on_stop_signal(int signal) { g_stop_signal = signal; }

using Clock = std::chrono::steady_clock;

// Progress on stderr: a redrawn bar at a terminal, periodic plain lines otherwise.
class Progress {
 public:
  explicit Progress(std::size_t total) : total_(total), tty_(::isatty(2)), start_(Clock::now()), last_(start_) {}
  void update(std::size_t done, uint64_t tokens, bool force = false) {
    const auto now = Clock::now();
    const double since_last = std::chrono::duration<double>(now - last_).count();
    if (!force && since_last < (tty_ ? 0.2 : 10.0)) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? tokens / elapsed : 0;
    const double lines_rate = elapsed > 0 ? done / elapsed : 0;
    const double eta = lines_rate > 0 ? (total_ - done) / lines_rate : 0;
    if (tty_) {
      const int width = 30, filled = total_ ? static_cast<int>(width * done / total_) : width;
      std::fprintf(stderr, "\r[%s%s] %zu/%zu | %.0f tok/s | ETA %.0fs   ", std::string(filled, '#').c_str(),
                   std::string(width - filled, '.').c_str(), done, total_, rate, eta);
    } else {
      std::fprintf(stderr, "gptj batch: %zu/%zu lines, %.0f tok/s, ETA %.0fs\n", done, total_, rate, eta);
    }
    std::fflush(stderr);
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  std::size_t total_;
  bool tty_;
  Clock::time_point start_, last_;
};

// Logprobs of a run of tokens: per token its logprob and its [[id, logprob], ...] alternatives.
struct SampleLogprobs {
  json::array token_logprobs, top_logprobs;
};

struct Pending {
  json::value id;
  int n = 1;
  int received = 0;
  int prompt_tokens = 0;
  bool logprobs = false;  // the line asked for logprobs
  bool scores_prompt = false;  // ... of its prompt tokens too
  int top_logprobs = 0;   // ... with this many alternatives per token
  std::vector<json::object> samples;
  SampleLogprobs prompt;  // when the line set prompt_logprobs (entry 0: null)
};

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

void record_logprobs(const TokenChoice& choice, SampleLogprobs& lp) {
  lp.token_logprobs.push_back(choice.logprob);
  json::array top;
  for (const auto& [token, logprob] : choice.top) top.push_back(json::array{token, logprob});
  lp.top_logprobs.push_back(std::move(top));
}

// Adds the logprobs of the tokens the sample kept (a stop string may have removed the last ones).
void attach_logprobs(SampleLogprobs& lp, std::size_t kept, bool with_top, json::object& sample) {
  lp.token_logprobs.resize(std::min(kept, lp.token_logprobs.size()));
  lp.top_logprobs.resize(std::min(kept, lp.top_logprobs.size()));
  sample["token_logprobs"] = std::move(lp.token_logprobs);
  if (with_top) sample["top_logprobs"] = std::move(lp.top_logprobs);
}

}  // namespace

CommandRunner register_batch(CLI::App& app) {
  struct Args {
    ModelOptions model;
    std::string input, output;
    bool resume = false;
    int max_new_tokens = 64;
    BatchingOptions batching;
    bool static_batching = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("batch", "Generate for every line of a JSONL file");
  add_common_model_options(*cmd, args->model);
  cmd->add_option("--input", args->input, "input JSONL")->required();
  cmd->add_option("--output", args->output, "output JSONL (lines flushed as they finish)")->required();
  cmd->add_flag("--resume", args->resume, "skip ids already in --output and append the rest");
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "default for lines without one")->capture_default_str();
  add_batching_options(*cmd, args->batching);
  cmd->add_flag("--static-batching", args->static_batching,
                "admit new sequences only when the whole batch has finished (for comparison)");
  return [args](World& world) {
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    std::ifstream in(args->input);
    GPTJ_CHECK(world.rank() != 0 || in.good(), "cannot open --input {}", args->input);
    ModelSession session(world, args->model, "batch");
    return session.run([&]() {
      std::optional<Tokenizer> tokenizer;
      if (Tokenizer::available(args->model.model_dir)) tokenizer = Tokenizer::from_model_dir(args->model.model_dir);
      const Tokenizer* tok = tokenizer ? &*tokenizer : nullptr;
      std::vector<std::string> lines;
      for (std::string line; std::getline(in, line);)
        if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
      JsonlWriter writer(args->output, args->resume);  // locks the output first
      std::set<std::string> done_ids = args->resume ? finished_ids_and_repair(args->output) : std::set<std::string>{};
      SchedulerOptions options = scheduler_options_for(session, args->batching);
      options.static_batching = args->static_batching;
      Scheduler scheduler(session.runner(), options, tok);

      std::map<uint64_t, Pending> pending;  // by first handle
      std::map<uint64_t, uint64_t> owner;   // handle -> first handle
      std::map<uint64_t, SampleLogprobs> logprobs;  // by handle, for lines that asked
      uint64_t next_handle = 0, tokens_generated = 0;
      std::size_t next_line = 0, written = 0, errors = 0, skipped = 0;
      Progress progress(lines.size());
      const auto start = Clock::now();
      // A line without a usable id is keyed by its line number, so --resume does not repeat it.
      auto error_key = [](const json::value& id, std::size_t line_no) {
        return id.is_null() ? "line:" + std::to_string(line_no) : json::serialize(id);
      };
      auto write_error = [&](const json::value& id, std::size_t line_no, const std::string& message) {
        json::object line{{"id", id}, {"error", message}};
        if (id.is_null()) line["line"] = line_no;
        writer.write(line);
        done_ids.insert(error_key(id, line_no));
        ++errors;
        ++written;
      };
      auto feed = [&]() {
        while (next_line < lines.size() && scheduler.waiting() < 2 * args->batching.max_batch) {
          const std::size_t line_no = ++next_line;
          json::value id;
          try {
            BatchItem item = parse_batch_line(lines[line_no - 1], tok, args->max_new_tokens, id);
            const std::string key = json::serialize(item.id);
            if (done_ids.count(key)) {
              ++skipped;
              continue;
            }
            // One request for the n samples: the prompt is prefilled once and its KV blocks shared;
            // sample k gets handle first + k and seed + k.
            const uint64_t first = next_handle;
            GenerationRequest r = item.request;
            r.handle = first;
            r.n = item.n;
            scheduler.submit(std::move(r));
            next_handle += static_cast<uint64_t>(item.n);
            for (int k = 0; k < item.n; ++k) owner[first + k] = first;
            pending[first] = {item.id, item.n, 0, static_cast<int>(item.request.prompt.size()),
                              item.request.sampling.report_logprob, item.request.score_prompt,
                              item.request.sampling.logprobs, {}, {}};
            done_ids.insert(key);  // a later line with the same id is skipped
          } catch (const Error& e) {
            if (done_ids.count(error_key(id, line_no))) {
              ++skipped;  // its error line is already in the output (--resume)
              continue;
            }
            write_error(id, line_no, fmt::format("line {}: {}", line_no, e.what()));
          }
        }
      };
      while (!g_stop_signal && (next_line < lines.size() || !scheduler.idle())) {
        feed();
        if (scheduler.idle()) continue;
        for (const GenerationEvent& e : scheduler.step()) {
          if (e.choice.token >= 0) ++tokens_generated;
          const uint64_t first = owner.at(e.handle);
          Pending& p = pending.at(first);
          if (p.logprobs && e.choice.token >= 0) record_logprobs(e.choice, logprobs[e.handle]);
          if (p.scores_prompt && e.handle == first && p.prompt.token_logprobs.empty()) {  // its first event
            p.prompt.token_logprobs.push_back(nullptr);  // the first prompt token has no logprob
            p.prompt.top_logprobs.push_back(nullptr);
            for (const TokenChoice& c : e.prompt_logprobs) record_logprobs(c, p.prompt);
          }
          if (e.finish == FinishReason::kNone) continue;
          p.samples.resize(static_cast<std::size_t>(p.n));
          json::object& sample = p.samples[e.handle - first];
          sample = sample_json(e, tok);
          if (p.logprobs) {
            attach_logprobs(logprobs[e.handle], e.generated->size(), p.top_logprobs > 0, sample);
            logprobs.erase(e.handle);
          }
          if (++p.received < p.n) continue;
          json::object line{{"id", p.id}};
          for (const char* key : {"text", "tokens", "finish_reason"}) line[key] = p.samples[0].at(key);
          line["prompt_tokens"] = p.prompt_tokens;
          line["completion_tokens"] = p.samples[0].at("completion_tokens");
          for (const char* key : {"token_logprobs", "top_logprobs"})
            if (p.samples[0].contains(key)) line[key] = p.samples[0].at(key);
          if (p.scores_prompt) {
            line["prompt_logprobs"] = std::move(p.prompt.token_logprobs);
            if (p.top_logprobs > 0) line["prompt_top_logprobs"] = std::move(p.prompt.top_logprobs);
          }
          if (p.n > 1) line["samples"] = json::value_from(p.samples);
          writer.write(line);
          ++written;
          for (int k = 0; k < p.n; ++k) owner.erase(first + k);
          pending.erase(first);
        }
        progress.update(written + skipped, tokens_generated);
      }
      progress.update(written + skipped, tokens_generated, true);
      progress.finish();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      // One block: K and V of block_size positions, every layer, this rank's heads.
      const GptjConfig& c = session.config();
      const double block_mb = 2.0 * options.kv.block_size * (c.n_embd / world.size()) * c.n_layer *
                              dtype_size(parse_dtype(session.options().dtype)) / 1e6;
      std::fprintf(stderr,
                   "gptj batch: %zu lines written (%zu errors), %zu skipped as already done, %llu tokens "
                   "in %.1f s (%.1f tok/s), %llu preemptions, %llu prompt tokens from the prefix cache, peak KV "
                   "%d of %d blocks (%.1f MB per rank; contiguous per-sequence caches for the same batch: %.1f MB)\n",
                   written, errors, skipped, static_cast<unsigned long long>(tokens_generated), seconds,
                   seconds > 0 ? tokens_generated / seconds : 0.0,
                   static_cast<unsigned long long>(scheduler.preemptions()),
                   static_cast<unsigned long long>(scheduler.prefix_hit_tokens()), scheduler.peak_used_blocks(),
                   options.kv.num_blocks, scheduler.peak_used_blocks() * block_mb,
                   static_cast<double>(args->batching.max_batch) * session.config().n_positions / options.kv.block_size * block_mb);
      if (g_stop_signal) {
        std::fprintf(stderr, "gptj batch: stopped by signal %d; finished lines are in %s; rerun with --resume\n",
                     g_stop_signal.load(), args->output.c_str());
        return 128 + g_stop_signal.load();
      }
      return 0;
    });
  };
}

}  // namespace gptj
