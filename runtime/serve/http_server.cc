// Beast HTTP/1.1 server. Every connection runs on its own strand, so a Session's members are only
// touched there; HttpReply methods called from other threads post onto that strand.
#include "runtime/serve/http_server.h"

#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <optional>
#include <thread>
#include <vector>

#include "runtime/core/error.h"

namespace gptj {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

std::string error_json(const std::string& message, const char* type) {
  boost::json::object error{{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  return boost::json::serialize(boost::json::object{{"error", error}});
}

const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// What a Session reads ahead of the request it answers (a pipelined next request) at most; past
// that it stops watching the socket until the answer is written.
constexpr std::size_t kReadAheadLimit = 64 * 1024;

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> work;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  std::atomic<int> pending{0};
  std::atomic<bool> stopped{false};

  Impl(const HttpServerOptions& o, HttpHandler h)
      : options(o), handler(std::move(h)), ioc(std::max(1, o.io_threads)), work(ioc.get_executor()),
        acceptor(net::make_strand(ioc)) {}
  void do_accept();
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpServer::Impl& server) : stream_(std::move(socket)), server_(server) {}
  void start() { do_read(); }

  // --- called on the strand (through Reply) ---
  void send(uint64_t seq, unsigned status, const std::string& type, std::string body, const HttpHeaders& headers) {
    if (!can_answer(seq)) return;
    answer_started_ = true;
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status), 11);
    res->set(http::field::server, "gptj");
    res->set(http::field::content_type, type);
    for (const auto& [name, value] : headers) res->set(name, value);
    res->keep_alive(keep_alive_);
    res->body() = std::move(body);
    res->prepare_payload();
    queue_.push_back(Out{Out::kFull, res, nullptr, nullptr, {}, true});
    write_next();
  }
  void begin_stream(uint64_t seq, const std::string& type) {
    if (!can_answer(seq)) return;
    answer_started_ = stream_open_ = true;
    auto res = std::make_shared<http::response<http::empty_body>>(http::status::ok, 11);
    res->set(http::field::server, "gptj");
    res->set(http::field::content_type, type);
    res->set(http::field::cache_control, "no-cache");
    // HTTP/1.0 has no chunked coding: the stream's end is the connection's.
    stream_chunked_ = !http10_;
    if (!stream_chunked_) keep_alive_ = false;
    res->keep_alive(keep_alive_);
    res->chunked(stream_chunked_);
    queue_.push_back(Out{Out::kHeader, nullptr, res, nullptr, {}, false});
    write_next();
  }
  void write(uint64_t seq, std::string data) {
    if (closed_ || seq != seq_ || !stream_open_ || data.empty()) return;  // an empty chunk would end the body
    queue_.push_back(Out{Out::kChunk, nullptr, nullptr, nullptr, std::move(data), false});
    write_next();
  }
  void end(uint64_t seq) {
    if (closed_ || seq != seq_ || !stream_open_) return;
    stream_open_ = false;
    queue_.push_back(Out{Out::kLast, nullptr, nullptr, nullptr, {}, true});
    write_next();
  }
  void set_on_disconnect(uint64_t seq, std::function<void()> callback) {
    if (seq != seq_) return;
    if (closed_ && !answer_done_) {
      callback();  // already gone
      return;
    }
    on_disconnect_ = std::move(callback);
  }
  uint64_t seq() const { return seq_; }
  beast::tcp_stream& stream() { return stream_; }

 private:
  struct Out {
    enum Kind { kFull, kHeader, kChunk, kLast, kInterim } kind;
    std::shared_ptr<http::response<http::string_body>> full;
    std::shared_ptr<http::response<http::empty_body>> header;
    std::shared_ptr<http::response_serializer<http::empty_body>> serializer;
    std::string data;
    bool final;  // the answer is complete once this is written
  };

  bool can_answer(uint64_t seq) const { return !closed_ && seq == seq_ && answering_ && !answer_started_; }

  void do_read() {
    parser_.emplace();
    parser_->body_limit(server_.options.body_limit);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(server_.options.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (ec) return on_read(ec, 0);
    const auto length = parser_->content_length();
    if (length && *length > server_.options.body_limit)
      return answer_read_error(413, "the request body is larger than the server's limit of " +
                                        std::to_string(server_.options.body_limit) + " bytes");
    if (parser_->get()[http::field::expect] == "100-continue") {
      net::async_write(stream_, net::buffer(kContinue), [self = shared_from_this()](beast::error_code e, std::size_t) {
        if (e) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset)
      return close();
    if (ec == http::error::body_limit)
      return answer_read_error(413, "the request body is larger than the server's limit of " +
                                        std::to_string(server_.options.body_limit) + " bytes");
    if (ec == http::error::header_limit) return answer_read_error(431, "the request headers are too large");
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category())
      return answer_read_error(400, "malformed HTTP request: " + ec.message());
    if (ec) return close();
    stream_.expires_never();
    HttpRequest request = parser_->release();
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (HTTP/1.0 may omit it), never two.
    const std::size_t hosts = request.count(http::field::host);
    if (hosts > 1 || (hosts == 0 && request.version() >= 11))
      return answer_read_error(400, hosts ? "the request has more than one Host header"
                                          : "an HTTP/1.1 request must have a Host header");
    keep_alive_ = request.keep_alive();
    http10_ = request.version() < 11;
    begin_answer();
    watch_for_disconnect();
    auto reply = make_reply();
    try {
      server_.handler(request, reply);
    } catch (const std::exception& e) {
      send(seq_, 500, "application/json", error_json(std::string("internal error: ") + e.what(), "server_error"), {});
    }
  }

  void answer_read_error(unsigned status, const std::string& message) {
    keep_alive_ = false;  // the rest of the stream cannot be trusted
    begin_answer();
    send(seq_, status, "application/json", error_json(message, "invalid_request_error"), {});
  }

  void begin_answer() {
    ++seq_;
    answering_ = true;
    answer_started_ = answer_done_ = stream_open_ = false;
    on_disconnect_ = nullptr;
    ++server_.pending;
  }

  void finish_answer() {
    if (!answering_) return;
    answering_ = false;
    answer_done_ = true;
    on_disconnect_ = nullptr;
    --server_.pending;
  }

  // While a request is answered the socket is watched. Bytes that come meanwhile (a pipelined next
  // request) are read into buffer_, where the next read finds them; the end of the client's data
  // (FIN) is noticed. A FIN alone only says the client sends no more: a half-closed client
  // (shutdown(SHUT_WR)) still gets its answer. Only one that is gone (reset) cancels it.
  void watch_for_disconnect() {
    if (peer_done_sending_) return probe_peer();
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(), seq = seq_](beast::error_code ec) {
      if (ec || self->closed_ || seq != self->seq_ || !self->answering_) return;
      self->read_ahead();
    });
  }

  void read_ahead() {
    const auto space = buffer_.prepare(16 * 1024);
    const ssize_t n = ::recv(stream_.socket().native_handle(), space.data(), space.size(), MSG_DONTWAIT);
    if (n > 0) {
      buffer_.commit(static_cast<std::size_t>(n));
      // Past the limit the socket is left alone: the answer's own writes notice a gone client.
      if (buffer_.size() <= kReadAheadLimit) watch_for_disconnect();
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return watch_for_disconnect();
    if (n < 0) return client_gone();  // reset
    peer_done_sending_ = true;
    probe_peer();
  }

  // After a FIN only a write tells a half-closed client from a closed one: a closed socket's
  // system answers data with a reset. An HTTP/1.1 client whose answer has not started is sent an
  // interim "100 Continue" (clients must accept 1xx answers before the final one); a stream's
  // chunks do the same. HTTP/1.0 has no 1xx: such a client is noticed when its answer is written.
  // The reset shows as an error on the socket.
  void probe_peer() {
    stream_.socket().async_wait(tcp::socket::wait_error, [self = shared_from_this(), seq = seq_](beast::error_code ec) {
      if (ec || self->closed_ || seq != self->seq_ || !self->answering_) return;
      self->client_gone();
    });
    if (!answer_started_ && !http10_) {
      queue_.push_back(Out{Out::kInterim, nullptr, nullptr, nullptr, kContinue, false});
      write_next();
    }
  }

  void client_gone() {
    auto callback = std::move(on_disconnect_);
    on_disconnect_ = nullptr;
    close();
    if (callback) callback();
  }

  void write_next() {
    if (writing_ || queue_.empty() || closed_) return;
    writing_ = true;
    Out& out = queue_.front();
    stream_.expires_after(server_.options.write_timeout);
    auto done = beast::bind_front_handler(&Session::on_write, shared_from_this());
    switch (out.kind) {
      case Out::kFull: http::async_write(stream_, *out.full, std::move(done)); break;
      case Out::kHeader:
        out.serializer = std::make_shared<http::response_serializer<http::empty_body>>(*out.header);
        http::async_write_header(stream_, *out.serializer, std::move(done));
        break;
      case Out::kChunk:
        if (stream_chunked_) net::async_write(stream_, http::make_chunk(net::buffer(out.data)), std::move(done));
        else net::async_write(stream_, net::buffer(out.data), std::move(done));
        break;
      case Out::kLast:
        if (stream_chunked_) net::async_write(stream_, http::make_chunk_last(), std::move(done));
        else net::async_write(stream_, net::buffer(out.data), std::move(done));  // nothing: the close ends it
        break;
      case Out::kInterim: net::async_write(stream_, net::buffer(out.data), std::move(done)); break;
    }
  }

  void on_write(beast::error_code ec, std::size_t) {
    writing_ = false;
    const bool final = queue_.front().final;
    queue_.pop_front();
    if (ec) return client_gone();
    if (final) {
      finish_answer();
      if (!keep_alive_ || server_.stopped) return close();
      return do_read();
    }
    write_next();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    // A write in progress still reads its buffers (it completes with an error): keep them.
    while (queue_.size() > (writing_ ? 1u : 0u)) queue_.pop_back();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    finish_answer();
  }

  std::shared_ptr<HttpReply> make_reply();

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpServer::Impl& server_;
  uint64_t seq_ = 0;  // which request is being answered; stale replies are ignored
  bool answering_ = false, answer_started_ = false, answer_done_ = false, stream_open_ = false;
  bool keep_alive_ = true, writing_ = false, closed_ = false;
  bool http10_ = false;             // the request answered is HTTP/1.0
  bool stream_chunked_ = true;      // the stream answered is in chunked coding (else close-delimited)
  bool peer_done_sending_ = false;  // the client's FIN came (half-closed, or gone)
  std::deque<Out> queue_;
  std::function<void()> on_disconnect_;
};

class Reply : public HttpReply {
 public:
  Reply(std::shared_ptr<Session> session, uint64_t seq) : session_(std::move(session)), seq_(seq) {}
  void send(unsigned status, const std::string& type, std::string body, HttpHeaders headers) override {
    run([seq = seq_, status, type, headers = std::move(headers), body = std::move(body)](Session& s) mutable {
      s.send(seq, status, type, std::move(body), headers);
    });
  }
  void begin_stream(const std::string& type) override {
    run([seq = seq_, type](Session& s) { s.begin_stream(seq, type); });
  }
  void write(std::string data) override {
    run([seq = seq_, data = std::move(data)](Session& s) mutable { s.write(seq, std::move(data)); });
  }
  void end() override {
    run([seq = seq_](Session& s) { s.end(seq); });
  }
  void on_disconnect(std::function<void()> callback) override {
    run([seq = seq_, callback = std::move(callback)](Session& s) mutable { s.set_on_disconnect(seq, std::move(callback)); });
  }

 private:
  // On the session's strand: inline when already there, else posted.
  template <class F>
  void run(F&& f) {
    net::dispatch(session_->stream().get_executor(), [s = session_, f = std::forward<F>(f)]() mutable { f(*s); });
  }
  std::shared_ptr<Session> session_;
  uint64_t seq_;
};

std::shared_ptr<HttpReply> Session::make_reply() {
  return std::make_shared<Reply>(shared_from_this(), seq_);
}

}  // namespace

void HttpServer::Impl::do_accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) std::make_shared<Session>(std::move(socket), *this)->start();
    do_accept();
  });
}

HttpServer::HttpServer(const HttpServerOptions& options, HttpHandler handler)
    : impl_(std::make_unique<Impl>(options, std::move(handler))) {
  try {
    tcp::resolver resolver(impl_->ioc);
    const auto results = resolver.resolve(options.host, std::to_string(options.port),
                                          tcp::resolver::passive | tcp::resolver::numeric_service);
    const tcp::endpoint endpoint = results.begin()->endpoint();
    impl_->acceptor.open(endpoint.protocol());
    impl_->acceptor.set_option(net::socket_base::reuse_address(true));
    impl_->acceptor.bind(endpoint);
    impl_->acceptor.listen(net::socket_base::max_listen_connections);
  } catch (const boost::system::system_error& e) {
    fail("cannot listen on {}:{}: {}", options.host, options.port, e.code().message());
  }
}

HttpServer::~HttpServer() { stop(std::chrono::milliseconds(0)); }

uint16_t HttpServer::port() const { return impl_->acceptor.local_endpoint().port(); }

void HttpServer::start() {
  impl_->do_accept();
  for (int i = 0; i < std::max(1, impl_->options.io_threads); ++i)
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

void HttpServer::stop_accepting() {
  net::post(impl_->acceptor.get_executor(), [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
  });
}

int HttpServer::pending_answers() const { return impl_->pending.load(); }

void HttpServer::stop(std::chrono::milliseconds grace) {
  if (impl_->stopped.exchange(true)) return;
  stop_accepting();
  const auto until = std::chrono::steady_clock::now() + grace;
  while (impl_->pending.load() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& thread : impl_->threads) thread.join();
  impl_->threads.clear();
}

}  // namespace gptj
