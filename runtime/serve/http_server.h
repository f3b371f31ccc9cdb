// HTTP/1.1 server on Boost.Beast for rank 0 (keep-alive, a small Asio I/O thread pool).
// Each connection lives on its own strand; a request is handed to the handler on an I/O thread with
// an HttpReply through which any thread (typically the coordinator) answers it later, in one piece
// or as a stream (chunked; close-delimited for HTTP/1.0). The server reports a client that goes
// away while its answer is pending (on_disconnect), so the work behind it can be cancelled; a client
// that only half-closes (shutdown(SHUT_WR) after its request) is not gone and gets its answer.
// HTTP/1.1 requests without exactly one Host are refused (400). It never calls MPI or the model.
#pragma once
#include <boost/beast/http.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace gptj {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;

// Response header fields beyond those the server sets, as (name, value): Allow, Retry-After, ...
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// The answer to one request. Thread-safe; calls after the answer is complete (or the client is
// gone) are ignored. Either send() once, or begin_stream(), write()*, end().
class HttpReply {
 public:
  virtual ~HttpReply() = default;
  virtual void send(unsigned status, const std::string& content_type, std::string body,
                    HttpHeaders headers = {}) = 0;
  // 200; chunked for an HTTP/1.1 client, close-delimited (Connection: close) for an HTTP/1.0 one.
  virtual void begin_stream(const std::string& content_type) = 0;
  virtual void write(std::string data) = 0;
  virtual void end() = 0;
  // Runs (once, on an I/O thread) if the client is gone (reset, or a write failed) before the
  // answer is complete.
  virtual void on_disconnect(std::function<void()> callback) = 0;
};

using HttpHandler = std::function<void(const HttpRequest&, std::shared_ptr<HttpReply>)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;  // 0: any free port (see port())
  int io_threads = 2;
  std::size_t body_limit = 1 << 20;
  std::chrono::seconds idle_timeout{60};   // keep-alive connection with no request
  std::chrono::seconds write_timeout{60};  // a client that does not read its answer
};

class HttpServer {
 public:
  // Binds and listens (throws gptj::Error naming host:port when it cannot); start() serves.
  HttpServer(const HttpServerOptions& options, HttpHandler handler);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  uint16_t port() const;
  void start();
  void stop_accepting();
  // Answers still being written; stop() waits (bounded) for them to reach 0.
  int pending_answers() const;
  // Waits up to `grace` for pending answers, then closes everything and joins the threads.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace gptj
