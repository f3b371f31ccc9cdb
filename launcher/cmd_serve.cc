// gptj serve: the OpenAI-compatible HTTP server (rank 0) in front of the continuous batch.
// Rank 0 starts the HTTP server first (so /health answers 503 while the model loads), then loads
// its shard and runs the coordinator loop on its main thread; ranks > 0 load theirs and serve steps.
// This file wires the pieces and routes URLs; the work is in runtime/serve/.
//
// Threads: the HTTP I/O threads only route and answer what is cheap (/health, /metrics, errors);
// a completion's body is parsed, tokenized and submitted on a request worker (as many as
// --http-threads), and so is a /tokenize or /detokenize body answered, so a slow request (a
// multi-megabyte prompt) never holds an I/O thread and /health keeps answering.
// GPTJ_SERVE_PREPARE_DELAY_MS=N (tests) makes each preparation sleep N ms.
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "launcher/commands.h"
#include "launcher/model_info.h"
#include "launcher/stop_signals.h"
#include "runtime/core/error.h"
#include "runtime/generate/tokenizer.h"
#include "runtime/serve/completion_api.h"
#include "runtime/serve/coordinator.h"
#include "runtime/serve/http_server.h"
#include "runtime/serve/metrics.h"

namespace gptj {

namespace {

struct ServeArgs {
  ModelOptions model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key_file, model_name;
  std::size_t max_body_bytes = 1 << 20;
  int max_queued = 256;
  BatchingOptions batching;
  int http_threads = 2;
  double request_timeout_s = 600;
  double drain_timeout_s = 30;
};

std::string read_api_key(const std::string& path) {
  std::ifstream in(path);
  GPTJ_CHECK(in.good(), "--api-key-file {}: cannot read it", path);
  std::string key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(key.begin());
  GPTJ_CHECK(!key.empty(), "--api-key-file {}: the file is empty", path);
  return key;
}

// Compares without an early exit, so the time taken does not reveal how much of the key matched.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<std::size_t>(1, b.size())]);
  return diff == 0;
}

// The credentials of an "Authorization: Bearer TOKEN" header; nullopt for another scheme. The
// scheme is case-insensitive and may be followed by several spaces (RFC 7235 §2.1).
std::optional<std::string_view> bearer_token(std::string_view header) {
  constexpr std::string_view kScheme = "bearer";
  if (header.size() <= kScheme.size() || header[kScheme.size()] != ' ') return std::nullopt;
  for (std::size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) != kScheme[i]) return std::nullopt;
  header.remove_prefix(kScheme.size());
  while (!header.empty() && header.front() == ' ') header.remove_prefix(1);
  return header;
}

// Links a client's disconnect to its job, which exists only once a request worker has prepared it:
// a client gone before then cancels the job as it is attached (or its preparation is skipped).
class DisconnectLink {
 public:
  explicit DisconnectLink(Coordinator& coordinator) : coordinator_(coordinator) {}
  void client_gone() {  // I/O thread
    std::lock_guard lock(mu_);
    gone_ = true;
    if (auto job = job_.lock()) cancel(*job);
  }
  void attach(const std::shared_ptr<Job>& job) {  // request worker, after submit
    std::lock_guard lock(mu_);
    job_ = job;
    if (gone_) cancel(*job);
  }
  bool gone() {
    std::lock_guard lock(mu_);
    return gone_;
  }

 private:
  void cancel(Job& job) {
    job.cancelled = true;
    coordinator_.wake();
  }
  Coordinator& coordinator_;
  std::mutex mu_;
  bool gone_ = false;
  std::weak_ptr<Job> job_;
};

// The test hook's delay (see the top of this file); 0 when unset.
std::chrono::milliseconds prepare_delay_from_env() {
  const char* value = std::getenv("GPTJ_SERVE_PREPARE_DELAY_MS");
  return std::chrono::milliseconds(value ? std::max(0L, std::strtol(value, nullptr, 10)) : 0L);
}

// The URLs the router serves past /health and /metrics.
enum class Endpoint { kCompletions, kChat, kModels, kTokenize, kDetokenize };

std::optional<Endpoint> endpoint_for(std::string_view target) {
  if (target == "/v1/completions") return Endpoint::kCompletions;
  if (target == "/v1/chat/completions") return Endpoint::kChat;
  if (target == "/v1/models" || target.starts_with("/v1/models/")) return Endpoint::kModels;
  if (target == "/tokenize") return Endpoint::kTokenize;
  if (target == "/detokenize") return Endpoint::kDetokenize;
  return std::nullopt;
}

// Routes requests (I/O threads) and prepares completions and answers /tokenize and /detokenize
// (request workers). Model facts are published once, before `ready` turns true.
class Router {
 public:
  Router(const ServeArgs& args, std::string api_key, Coordinator& coordinator, ServerMetrics& metrics)
      : args_(args), api_key_(std::move(api_key)), coordinator_(coordinator), metrics_(metrics),
        workers_(static_cast<std::size_t>(std::max(1, args.http_threads))), prepare_delay_(prepare_delay_from_env()) {}

  // Waits for the requests being prepared. Call once the HTTP server has stopped (so no new ones
  // come) and before it is destroyed (their answers go through it).
  void join_workers() { workers_.join(); }

  void set_model(const ModelInfo& info) {
    model_ = info;
    ready_.store(true, std::memory_order_release);
    metrics_.set_ready(true);
  }

  void handle(const HttpRequest& request, const std::shared_ptr<HttpReply>& reply) {
    namespace http = boost::beast::http;
    std::string_view target = request.target();
    target = target.substr(0, target.find('?'));
    const http::verb method = request.method();
    const bool ready = ready_.load(std::memory_order_acquire);
    if (target == "/health") {
      if (method != http::verb::get && method != http::verb::head) return not_allowed(reply, "GET, HEAD");
      if (!ready || coordinator_.stopping())
        return respond(reply, 503, json_text({{"status", ready ? "shutting down" : "loading"}}));
      return respond(reply, 200, json_text({{"status", "ok"}}));
    }
    if (target == "/metrics") {
      if (method != http::verb::get) return not_allowed(reply, "GET");
      return respond(reply, 200, metrics_.render(), "text/plain; version=0.0.4");
    }
    const std::optional<Endpoint> endpoint = endpoint_for(target);
    if (!endpoint)
      return respond(reply, 404, error_body("no such endpoint: " + std::string(target), "invalid_request_error"));
    const bool models = *endpoint == Endpoint::kModels;
    if (models && method != http::verb::get) return not_allowed(reply, "GET");
    if (!models && method != http::verb::post) return not_allowed(reply, "POST");
    if (!api_key_.empty()) {
      const std::optional<std::string_view> token = bearer_token(request[http::field::authorization]);
      if (!token || !same_secret(*token, api_key_))
        return respond(reply, 401, error_body("missing or wrong API key: send 'Authorization: Bearer KEY'",
                                              "invalid_request_error"));
    }
    if (!ready) return respond(reply, 503, error_body("the model is still loading", "server_not_ready"));
    if (models) return list_models(target, reply);
    // A client that goes away cancels its sequences; the coordinator frees their KV blocks.
    auto link = std::make_shared<DisconnectLink>(coordinator_);
    reply->on_disconnect([link] { link->client_gone(); });
    boost::asio::post(workers_, [this, body = request.body(), endpoint = *endpoint, reply, link] {
      prepare(body, endpoint, reply, *link);
    });
  }

 private:
  static std::string json_text(boost::json::object o) { return boost::json::serialize(o); }

  void respond(const std::shared_ptr<HttpReply>& reply, unsigned status, std::string body,
               const std::string& type = "application/json", HttpHeaders headers = {}) {
    metrics_.count_request(static_cast<int>(status));
    reply->send(status, type, std::move(body), std::move(headers));
  }

  void not_allowed(const std::shared_ptr<HttpReply>& reply, const std::string& allow) {
    respond(reply, 405, error_body("method not allowed here; use " + allow, "invalid_request_error"),
            "application/json", {{"Allow", allow}});
  }

  void list_models(std::string_view target, const std::shared_ptr<HttpReply>& reply) {
    boost::json::object entry{{"id", model_.name}, {"object", "model"}, {"created", model_.created},
                              {"owned_by", "gptj"}, {"max_model_len", model_.n_positions}};
    if (target == "/v1/models")
      return respond(reply, 200, json_text({{"object", "list"}, {"data", boost::json::array{entry}}}));
    if (target.substr(11) != model_.name)
      return respond(reply, 404, error_body("no such model: " + std::string(target.substr(11)), "invalid_request_error", "model"));
    respond(reply, 200, json_text(entry));
  }

  // On a request worker: answers /tokenize and /detokenize; parses a completion and submits its job.
  void prepare(const std::string& body, Endpoint endpoint, const std::shared_ptr<HttpReply>& reply,
               DisconnectLink& link) {
    if (prepare_delay_.count() > 0) std::this_thread::sleep_for(prepare_delay_);
    if (link.gone()) return;  // nobody to answer
    std::shared_ptr<Job> job;
    try {
      if (endpoint == Endpoint::kTokenize) return respond(reply, 200, tokenize_answer(body, model_));
      if (endpoint == Endpoint::kDetokenize) return respond(reply, 200, detokenize_answer(body, model_));
      CompletionRequest request = parse_completion_request(body, model_, endpoint == Endpoint::kChat);
      job = make_completion_job(std::move(request), model_, reply, metrics_,
                                std::chrono::milliseconds(static_cast<int64_t>(args_.request_timeout_s * 1000)));
    } catch (const ApiError& e) {
      return respond(reply, static_cast<unsigned>(e.status), error_body(e.what(), e.type, e.param));
    } catch (const Error& e) {  // e.g. the tokenizer refusing input
      return respond(reply, 400, error_body(e.what(), "invalid_request_error", "prompt"));
    }
    switch (coordinator_.submit(job)) {
      case SubmitResult::kAccepted: break;
      case SubmitResult::kQueueFull:
        return respond(reply, 429, error_body("too many requests are queued; retry later", "rate_limit_error"),
                       "application/json", {{"Retry-After", "1"}});
      case SubmitResult::kShuttingDown:
        return respond(reply, 503, error_body("the server is shutting down", "server_shutting_down"));
    }
    link.attach(job);
  }

  const ServeArgs& args_;
  std::string api_key_;
  Coordinator& coordinator_;
  ServerMetrics& metrics_;
  ModelInfo model_;
  std::atomic<bool> ready_{false};
  boost::asio::thread_pool workers_;
  const std::chrono::milliseconds prepare_delay_;
};

// OpenMPI's mpirun (4.1), when it is sent SIGTERM or SIGINT, sends the ranks SIGCONT at once,
// SIGTERM odls_base_sigkill_timeout seconds later (1 by default) and SIGKILL as long again after
// that: the drain gets that timeout, minus the time the ranks need to shut down. Said once at
// start-up when the environment shows a timeout too short for --drain-timeout (mpirun --mca and
// OMPI_MCA_ variables reach the ranks' environment; a setting in an MCA parameter file does not).
constexpr double kShutdownMarginS = 5;

void warn_if_mpirun_cuts_the_drain(const World& world, double drain_timeout_s) {
  if (world.launcher() != "mpirun") return;
  const char* env = std::getenv("OMPI_MCA_odls_base_sigkill_timeout");
  const double timeout_s = env ? std::atof(env) : 1.0;
  if (timeout_s >= drain_timeout_s + kShutdownMarginS) return;
  std::fprintf(stderr,
               "gptj serve: warning: mpirun kills the ranks %g s after passing on a SIGTERM "
               "(odls_base_sigkill_timeout%s), less than --drain-timeout %g s + %g s: stopping mpirun "
               "would cut in-flight requests. Start it with OMPI_MCA_odls_base_sigkill_timeout=%d "
               "(README.md, \"Stopping\").\n",
               timeout_s, env ? "" : ", OpenMPI's default", drain_timeout_s, kShutdownMarginS,
               static_cast<int>(std::ceil(drain_timeout_s + kShutdownMarginS)));
}

int serve_rank0(World& world, const ServeArgs& args) {
  warn_if_mpirun_cuts_the_drain(world, args.drain_timeout_s);
  const std::string api_key = args.api_key_file.empty() ? "" : read_api_key(args.api_key_file);
  GPTJ_CHECK(args.port >= 0 && args.port <= 65535, "--port {} is not a TCP port", args.port);
  ServerMetrics metrics;
  CoordinatorOptions coordinator_options;
  coordinator_options.max_queued = args.max_queued;
  coordinator_options.drain_timeout = std::chrono::milliseconds(static_cast<int64_t>(args.drain_timeout_s * 1000));
  Coordinator coordinator(metrics, coordinator_options);
  Router router(args, api_key, coordinator, metrics);
  HttpServerOptions http_options;
  http_options.host = args.host;
  http_options.port = static_cast<uint16_t>(args.port);
  http_options.io_threads = args.http_threads;
  http_options.body_limit = args.max_body_bytes;
  HttpServer server(http_options, [&router](const HttpRequest& request, std::shared_ptr<HttpReply> reply) {
    router.handle(request, reply);
  });
  // Until the drain is over: the first SIGTERM/SIGINT stops accepting and drains; later ones are
  // ignored (launcher/stop_signals.h), so a repeated signal cannot kill the server mid-drain.
  OnStopSignal on_stop([&](int signal) {
    std::fprintf(stderr, "gptj serve: signal %d: draining in-flight requests, then exiting\n", signal);
    std::fflush(stderr);
    server.stop_accepting();
    coordinator.request_stop();
  });
  // However this function ends: the I/O threads stop before the request workers are joined, and
  // both before the server (which their answers go through) is destroyed.
  struct StopInOrder {
    HttpServer& server;
    Router& router;
    ~StopInOrder() {
      server.stop(std::chrono::milliseconds(0));
      router.join_workers();
    }
  } stop_in_order{server, router};
  server.start();
  const bool v6 = args.host.find(':') != std::string::npos;
  std::fprintf(stderr, "gptj serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", args.host.c_str(),
               v6 ? "]" : "", server.port());
  std::fflush(stderr);

  ModelSession session(world, args.model, "serve");
  std::optional<Tokenizer> tokenizer;
  if (Tokenizer::available(session.options().model_dir)) tokenizer = Tokenizer::from_model_dir(session.options().model_dir);
  const SchedulerOptions options = scheduler_options_for(session, args.batching, tokenizer ? &*tokenizer : nullptr);
  // Returns once every replica has loaded (launcher/replicas.h); /health says ready only then.
  return session.run_engine(options, tokenizer ? &*tokenizer : nullptr, [&](Engine& engine) {
    const ModelInfo info = model_info_for(session, options, tokenizer ? &*tokenizer : nullptr, args.model_name);
    router.set_model(info);
    std::fprintf(stderr, "gptj serve: %s\n", session.weights_summary().c_str());
    coordinator.run(engine);  // returns after SIGTERM/SIGINT and the drain
    metrics.set_ready(false);
    server.stop(std::chrono::milliseconds(5000));  // let the last answers reach their clients
    std::fprintf(stderr, "gptj serve: stopped\n");
    return 0;
  });
}

}  // namespace

CommandRunner register_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (completions) at rank 0");
  add_common_model_options(*cmd, args->model);
  cmd->add_option("--host", args->host, "address to bind")->capture_default_str();
  cmd->add_option("--port", args->port, "TCP port; 0 picks a free one (printed)")->capture_default_str();
  cmd->add_option("--api-key-file", args->api_key_file, "file holding the API key; turns on Bearer auth for /v1/*, /tokenize and /detokenize");
  cmd->add_option("--served-model-name", args->model_name, "model name in answers (default: the model directory's name)");
  cmd->add_option("--max-body-bytes", args->max_body_bytes, "largest request body")->capture_default_str();
  cmd->add_option("--max-queued", args->max_queued, "choices waiting to run before 429")->capture_default_str();
  add_batching_options(*cmd, args->batching);
  cmd->add_option("--http-threads", args->http_threads, "HTTP I/O threads")->capture_default_str();
  cmd->add_option("--request-timeout", args->request_timeout_s, "seconds a completion may take (0: none)")->capture_default_str();
  cmd->add_option("--drain-timeout", args->drain_timeout_s, "seconds in-flight requests get at SIGTERM")->capture_default_str();
  return [args](World& world) {
    // Every rank catches SIGTERM/SIGINT for the rest of its life: mpirun (after its kill delay),
    // Slurm and systemd signal every rank, not only rank 0. Rank 0 drains; the workers take no
    // action of their own and serve steps until rank 0's shutdown plan arrives.
    install_stop_signal_handler("gptj serve");
    if (world.rank() == 0) return serve_rank0(world, *args);
    ModelSession session(world, args->model, "serve");
    // The other replicas' leaders serve rank 0's requests (and need the tokenizer for stop strings);
    // the remaining ranks serve their leader's steps. The body runs on rank 0 only.
    std::optional<Tokenizer> tokenizer;
    if (Tokenizer::available(session.options().model_dir)) tokenizer = Tokenizer::from_model_dir(session.options().model_dir);
    const Tokenizer* tok = tokenizer ? &*tokenizer : nullptr;
    return session.run_engine(scheduler_options_for(session, args->batching, tok), tok,
                              [](Engine&) { return 0; });
  };
}

}  // namespace gptj
