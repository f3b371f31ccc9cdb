// gptj batch: JSONL in, JSONL out, through the continuous-batching scheduler (rank 0), at any TP
// size. The input is streamed: lines are read as the scheduler has room for them (at most
// 2 x --max-batch waiting), never all at once, and a line longer than --max-line-bytes gets an error
// line without being held. Each result line is written and flushed as its request finishes; an id
// seen before in the input gets an error line; --resume skips ids already in the output (after
// cutting a torn last line and moving corrupt lines aside); SIGINT/SIGTERM stop after the current
// step with every finished line kept. Progress goes to stderr: a bar at a terminal, else a log
// line every 10 s; a summary at the end.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <map>
#include <unordered_map>

#include "launcher/batch_io.h"
#include "launcher/batch_lines.h"
#include "launcher/commands.h"
#include "launcher/model_info.h"
#include "runtime/core/error.h"

namespace gptj {
namespace json = boost::json;

namespace {

std::atomic<int> g_stop_signal{0};
void on_stop_signal(int signal) { g_stop_signal = signal; }

using Clock = std::chrono::steady_clock;

// Progress on stderr: a redrawn bar at a terminal, periodic plain lines otherwise. `total` is the
// input's non-blank line count, or -1 when it is unknown (a pipe): then lines done without an ETA.
class Progress {
 public:
  explicit Progress(int64_t total) : total_(total), tty_(::isatty(2)), start_(Clock::now()), last_(start_) {}
  void update(std::size_t done, uint64_t tokens, bool force = false) {
    const auto now = Clock::now();
    const double since_last = std::chrono::duration<double>(now - last_).count();
    if (!force && since_last < (tty_ ? 0.2 : 10.0)) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? tokens / elapsed : 0;
    const double lines_rate = elapsed > 0 ? done / elapsed : 0;
    if (total_ < 0) {
      std::fprintf(stderr, tty_ ? "\r%zu lines done | %.0f tok/s   " : "gptj batch: %zu lines done, %.0f tok/s\n", done,
                   rate);
      std::fflush(stderr);
      return;
    }
    const std::size_t total = std::max(static_cast<std::size_t>(total_), done);  // the file may have grown
    const double eta = lines_rate > 0 ? (total - done) / lines_rate : 0;
    if (tty_) {
      const int width = 30, filled = total ? static_cast<int>(width * done / total) : width;
      std::fprintf(stderr, "\r[%s%s] %zu/%zu | %.0f tok/s | ETA %.0fs   ", std::string(filled, '#').c_str(),
                   std::string(width - filled, '.').c_str(), done, total, rate, eta);
    } else {
      std::fprintf(stderr, "gptj batch: %zu/%zu lines, %.0f tok/s, ETA %.0fs\n", done, total, rate, eta);
    }
    std::fflush(stderr);
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  int64_t total_;
  bool tty_;
  Clock::time_point start_, last_;
};

}  // namespace

CommandRunner register_batch(CLI::App& app) {
  struct Args {
    ModelOptions model;
    std::string input, output;
    bool resume = false;
    int max_new_tokens = 64;
    std::size_t max_line_bytes = 1 << 20;
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
  cmd->add_option("--max-line-bytes", args->max_line_bytes,
                  "a longer input line gets an error line (and is never held in memory)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_batching_options(*cmd, args->batching);
  cmd->add_flag("--static-batching", args->static_batching,
                "admit new sequences only when the whole batch has finished (for comparison)");
  return [args](World& world) {
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    // Rank 0 opens the input (and counts its lines) before the model loads, so a bad path fails fast.
    int64_t input_lines = -1;
    std::optional<LineReader> reader;
    if (world.rank() == 0)
      reader.emplace(open_input(args->input, &input_lines), "--input " + args->input, args->max_line_bytes);
    // The output is locked first. Keys of the lines already done (--resume): result lines by id key,
    // error lines as "line:N". A resumed output is read and repaired before the model loads too:
    // reading a long one takes a while (~80 MB/s), which must not count against the workers' wait
    // for rank 0's word once they have loaded (model_runner.h). A fresh output is only truncated once
    // the model loaded, so a bad --model leaves the previous one alone.
    std::optional<JsonlWriter> writer;
    std::unordered_set<std::string> done;
    auto open_output = [&] {
      writer.emplace(args->output, args->resume);
      if (args->resume) done = writer->finished_and_repair();
    };
    if (world.rank() == 0 && args->resume) open_output();
    ModelSession session(world, args->model, "batch");
    // Every replica leader needs the tokenizer (stop strings) and the same scheduler options.
    std::optional<Tokenizer> tokenizer;
    if (Tokenizer::available(args->model.model_dir)) tokenizer = Tokenizer::from_model_dir(args->model.model_dir);
    const Tokenizer* tok = tokenizer ? &*tokenizer : nullptr;
    SchedulerOptions options = scheduler_options_for(session, args->batching, tok);
    options.static_batching = args->static_batching;
    return session.run_engine(options, tok, [&](Engine& engine) {
      if (!writer) open_output();

      // Both input formats, line by line (launcher/batch_lines.h); OpenAI batch lines are answered by
      // the server's own request path, so they need what the server knows of the model.
      BatchLineContext context;
      context.tokenizer = tok;
      context.default_max_new_tokens = args->max_new_tokens;
      context.model = model_info_for(session, options, tok, "");
      std::map<uint64_t, std::unique_ptr<BatchLine>> pending;  // by first handle
      std::map<uint64_t, uint64_t> owner;   // handle -> first handle
      uint64_t next_handle = 0, tokens_generated = 0;
      struct ReplicaWork {
        uint64_t lines = 0, tokens = 0;
      };
      std::vector<ReplicaWork> per_replica(static_cast<std::size_t>(engine.replicas()));
      std::size_t written = 0, errors = 0, skipped = 0;
      // Each id's (custom_id's) first input line, so that a later line with the same one gets an error line.
      std::unordered_map<std::string, uint64_t> first_seen;
      Progress progress(input_lines);
      const auto start = Clock::now();
      // An error line carries its line number, and --resume knows it by that ("line:N"), not by its
      // id: the id may still run on its own line (a duplicate's error must not stand for the original).
      auto line_key = [](uint64_t line_no) { return "line:" + std::to_string(line_no); };
      auto reject = [&](const std::string& id, uint64_t line_no, const std::string& message) {
        if (done.count(line_key(line_no))) {
          ++skipped;  // its error line is already in the output (--resume)
          return;
        }
        writer->write(id, plain_error_line(line_no, message));
        ++errors;
        ++written;
      };
      // Writes the line's output once it is complete; says whether it did.
      auto emit = [&](BatchLine& line) {
        std::optional<json::object> out = line.take_output();
        if (!out) return false;
        writer->write(line.id(), *out);
        errors += line.is_error() ? 1 : 0;
        ++written;
        return true;
      };
      // Reads and submits lines while the engine has room (the look-ahead); waits up to wait_ms for
      // input that has not come yet (a pipe).
      auto feed = [&](int wait_ms) {
        LineReader::Line input;
        while (engine.queue_room() > 0 &&
               reader->next(input, std::exchange(wait_ms, 0)) == LineReader::Status::kLine) {
          engine.keepalive_if_due();  // parsing many long lines takes a while
          if (input.blank) continue;
          const uint64_t line_no = input.number;
          std::string id, key, error;
          std::unique_ptr<BatchLine> item;
          if (input.too_long) {
            id = key = leading_id(input.text);
            error = fmt::format("longer than --max-line-bytes {} ({} bytes)", args->max_line_bytes, input.length);
          } else {
            try {
              item = parse_input_line(input.text, line_no, context, id, key);
            } catch (const Error& e) {
              error = e.what();
            }
          }
          input = {};  // drop the text before the prompt runs
          if (!key.empty()) {
            const auto [first, inserted] = first_seen.emplace(key, line_no);
            if (!inserted) {
              const bool openai = item && key != item->id();  // keyed by custom_id, not by its id
              error = fmt::format("duplicate {}: first seen on line {}", openai ? "custom_id" : "id", first->second);
              if (openai) {  // its own error form
                if (done.count(line_key(line_no))) {
                  ++skipped;
                  continue;
                }
                item->refuse(line_no, error);
                emit(*item);
                continue;
              }
              item.reset();
            }
          }
          if (!item) {
            reject(id, line_no, error);
            continue;
          }
          // Done: its result line is there, or its error line (a line the engine refused).
          if ((!item->key().empty() && done.count(item->key())) || done.count(line_key(line_no))) {
            ++skipped;
            continue;
          }
          if (emit(*item)) continue;  // answered without running: an OpenAI body the server refuses
          // A plain line is one request for its n samples: the prompt is prefilled once and its KV
          // blocks shared; sample k gets handle first + k and seed + k. An OpenAI line is what the
          // server submits for its body (one request per prompt with its n samples, as a rule).
          const uint64_t first = next_handle;
          uint64_t handle = first;
          std::vector<uint64_t> submitted;
          try {
            for (GenerationRequest& r : item->requests()) {
              r.handle = handle;
              handle += static_cast<uint64_t>(r.n);
              engine.submit(std::move(r));  // refuses a prompt that does not fit the model
              submitted.push_back(r.handle);  // (a moved-from request keeps its handle)
            }
          } catch (const Error& e) {
            for (uint64_t h : submitted) engine.cancel(h);  // its kCancelled events find no owner
            item->on_refused(e.what());
            emit(*item);
            continue;
          }
          next_handle = handle;
          for (uint64_t h = first; h < handle; ++h) owner[h] = first;
          pending[first] = std::move(item);
        }
      };
      while (!g_stop_signal && (!reader->at_end() || !engine.idle())) {
        engine.keepalive_if_due();  // the other ranks time rank 0's silence, also while idle
        feed(engine.idle() ? 200 : 0);  // idle: wait a little for a slow pipe, then look at the signal
        if (engine.idle()) continue;
        for (const GenerationEvent& e : engine.step()) {
          const auto it = owner.find(e.handle);
          if (it == owner.end()) continue;  // a request cancelled when its line was refused
          const int replica = engine.replica_of(e.handle);
          if (e.choice.token >= 0) ++tokens_generated, ++per_replica[replica].tokens;
          const uint64_t first = it->second;
          BatchLine& line = *pending.at(first);
          line.on_event(static_cast<int>(e.handle - first), e);
          if (!emit(line)) continue;
          ++per_replica[replica].lines;
          for (auto h = owner.lower_bound(first); h != owner.end() && h->second == first;) h = owner.erase(h);
          pending.erase(first);
        }
        progress.update(written + skipped, tokens_generated);
      }
      progress.update(written + skipped, tokens_generated, true);
      progress.finish();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      // One block: K and V of block_size positions, every layer, this rank's heads.
      const GptjConfig& c = session.config();
      const double block_mb = 2.0 * options.kv.block_size * (c.n_embd / session.replicas().tp) * c.n_layer *
                              dtype_size(parse_dtype(session.options().dtype)) / 1e6;
      const ReplicaStats total = engine.total();
      std::fprintf(stderr,
                   "gptj batch: %zu lines written (%zu errors), %zu skipped as already done, %llu tokens "
                   "in %.1f s (%.1f tok/s), %llu preemptions, %llu prompt tokens from the prefix cache, peak KV "
                   "%d of %d blocks (%.1f MB per rank; contiguous per-sequence caches for the same batch: %.1f MB)\n",
                   written, errors, skipped, static_cast<unsigned long long>(tokens_generated), seconds,
                   seconds > 0 ? tokens_generated / seconds : 0.0,
                   static_cast<unsigned long long>(total.preemptions),
                   static_cast<unsigned long long>(total.prefix_hit_tokens), total.peak_used_blocks,
                   total.kv_blocks_total, total.peak_used_blocks * block_mb / engine.replicas(),
                   static_cast<double>(args->batching.max_batch) * session.config().n_positions / options.kv.block_size * block_mb);
      std::fprintf(stderr, "gptj batch: %s\n", session.weights_summary().c_str());
      if (engine.replicas() > 1) {
        std::fprintf(stderr, "gptj batch: %s\n", engine.frontend_summary().c_str());
      }
      if (engine.replicas() > 1)
        for (int r = 0; r < engine.replicas(); ++r) {
          const ReplicaStats s = engine.stats(r);
          std::fprintf(stderr,
                       "gptj batch: replica %d (ranks %d..%d): %llu lines, %llu tokens (%.1f tok/s), %llu preemptions, "
                       "%llu prompt tokens from the prefix cache, peak KV %d of %d blocks\n",
                       r, session.replicas().leader_rank(r), session.replicas().leader_rank(r) + session.replicas().tp - 1,
                       static_cast<unsigned long long>(per_replica[r].lines),
                       static_cast<unsigned long long>(per_replica[r].tokens),
                       seconds > 0 ? per_replica[r].tokens / seconds : 0.0,
                       static_cast<unsigned long long>(s.preemptions),
                       static_cast<unsigned long long>(s.prefix_hit_tokens), s.peak_used_blocks, s.kv_blocks_total);
        }
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
