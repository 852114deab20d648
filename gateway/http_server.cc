#include "gateway/http_server.h"

#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/host_port.h"

namespace accllm::gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

constexpr std::size_t kMaxHeaderBytes = 64 << 10;

// Connections, so that Stop can close those still open.
class Closeable {
 public:
  virtual ~Closeable() = default;
  virtual void Close() = 0;
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  net::io_context ioc;
  std::optional<ssl::context> tls;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  int port = 0;
  std::atomic<int> connections{0};
  std::mutex mutex;
  std::set<std::shared_ptr<Closeable>> open;  // guarded by mutex
  bool stopped = false;                       // guarded by mutex

  void Accept();
  void Track(const std::shared_ptr<Closeable>& c) {
    std::lock_guard<std::mutex> lock(mutex);
    if (stopped) return c->Close();
    open.insert(c);
  }
  void Untrack(const std::shared_ptr<Closeable>& c) {
    std::lock_guard<std::mutex> lock(mutex);
    open.erase(c);
  }
};

namespace {

template <class Stream>
class Session;

// The handler's side of one request. Every method hops onto the connection's strand.
template <class Stream>
class Exchange final : public HttpExchange, public std::enable_shared_from_this<Exchange<Stream>> {
 public:
  Exchange(std::shared_ptr<Session<Stream>> session, HttpRequest request)
      : session_(std::move(session)), request_(std::move(request)) {}

  const HttpRequest& request() const override { return request_; }

  void Respond(int status, const std::string& content_type, std::string body, const HttpHeaders& headers = {}) override {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, content_type);
    AddHeaders(res, headers);
    res.body() = std::move(body);
    res.keep_alive(keep_alive_);
    res.prepare_payload();
    std::ostringstream out;
    out << res;
    Post(out.str(), /*complete=*/true);
  }

  void StartStream(int status, const std::string& content_type, const HttpHeaders& headers = {}) override {
    http::response<http::empty_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-cache");
    AddHeaders(res, headers);
    res.keep_alive(keep_alive_);
    res.chunked(true);
    std::ostringstream out;
    out << res.base();
    Post(out.str(), /*complete=*/false);
  }

  void Send(std::string data) override {
    if (data.empty()) return;  // an empty chunk would end the stream
    Post(absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n"), false);
  }

  void EndStream() override { Post("0\r\n\r\n", true); }

  void OnClientGone(std::function<void()> callback) override;

  // On the strand.
  bool complete = false;  // the whole response is queued
  bool gone = false;      // the client left first
  std::function<void()> on_gone;
  bool keep_alive_ = true;

 private:
  template <class Response>
  void AddHeaders(Response& res, const HttpHeaders& headers) {
    res.set(http::field::server, "accllm-gateway");
    for (const auto& [name, value] : session_->ExtraHeaders(request_)) res.set(name, value);
    for (const auto& [name, value] : headers) res.set(name, value);
  }
  void Post(std::string bytes, bool complete);

  std::shared_ptr<Session<Stream>> session_;
  HttpRequest request_;
};

template <class Stream>
class Session final : public Closeable, public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(HttpServer::Impl& server, Stream stream)
      : server_(server), stream_(std::move(stream)), idle_(stream_.get_executor()) {}

  void Start() {
    server_.connections.fetch_add(1);
    server_.Track(this->shared_from_this());
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        beast::get_lowest_layer(self->stream_).expires_never();
        if (ec) return self->Shutdown();
        self->ReadNext();
      });
    } else {
      net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->ReadNext(); });
    }
  }

  ~Session() override { server_.connections.fetch_sub(1); }

  void Close() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->Shutdown(); });
  }

  // On the strand, from Exchange.
  void Queue(const std::shared_ptr<Exchange<Stream>>& exchange, std::string bytes, bool complete) {
    if (closed_ || exchange != current_ || exchange->gone || exchange->complete) return;
    exchange->complete = complete;
    if (complete) exchange->on_gone = nullptr;  // it may hold what holds the exchange
    out_.push_back(std::move(bytes));
    if (complete && !exchange->keep_alive_) close_after_writes_ = true;
    if (!writing_) WriteNext();
  }

  void ClientGone() {
    if (current_ && !current_->gone && !current_->complete) {
      current_->gone = true;
      if (current_->on_gone) std::exchange(current_->on_gone, nullptr)();
    }
    if (queued_) queued_.reset();
  }

  auto executor() { return stream_.get_executor(); }
  HttpHeaders ExtraHeaders(const HttpRequest& request) const {
    return server_.options.extra_headers ? server_.options.extra_headers(request) : HttpHeaders{};
  }

 private:
  void ReadNext() {
    if (closed_ || reading_) return;
    parser_.emplace();
    parser_->body_limit(server_.options.max_body_bytes);
    parser_->header_limit(kMaxHeaderBytes);
    reading_ = true;
    if (!current_) ArmIdleTimer();
    http::async_read_header(stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      self->OnHeader(ec);
    });
  }

  // A client that sent `Expect: 100-continue` (curl does, for bodies over 1 KiB) waits for our
  // go-ahead before it sends the body.
  void OnHeader(beast::error_code ec) {
    if (ec || closed_) return OnRead(ec);
    const auto& header = parser_->get();
    if (!current_ && absl::EqualsIgnoreCase(std::string(header[http::field::expect]), "100-continue")) {
      out_.push_back("HTTP/1.1 100 Continue\r\n\r\n");
      if (!writing_) WriteNext();
    }
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->OnRead(ec); });
  }

  void ArmIdleTimer() {
    idle_.expires_after(std::chrono::seconds(server_.options.idle_timeout_seconds));
    idle_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (!ec && !self->current_) self->Shutdown();
    });
  }

  void OnRead(beast::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec == http::error::body_limit || ec == http::error::header_limit) {
      if (current_) return Shutdown();  // a pipelined request over the limit: drop the connection
      const bool body = ec == http::error::body_limit;
      StartExchange(HttpRequest{});
      current_->keep_alive_ = false;
      const std::string message =
          body ? absl::StrCat("the request body is larger than ", server_.options.max_body_bytes, " bytes")
               : "the request headers are too large";
      current_->Respond(body ? 413 : 431, "application/json",
                        absl::StrCat(R"({"error":{"message":")", message,
                                     R"(","type":"invalid_request_error","param":null,"code":null}})"));
      return;
    }
    if (ec) {  // the client closed the connection (or sent garbage)
      read_failed_ = true;
      ClientGone();
      if (!current_ || current_->gone) Shutdown();
      return;
    }
    http::request<http::string_body> message = parser_->release();
    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    for (const auto& field : message) {
      request.headers[absl::AsciiStrToLower(std::string(field.name_string()))] = std::string(field.value());
    }
    request.body = std::move(message.body());
    const bool keep_alive = message.keep_alive();
    if (current_) {
      queued_.emplace(std::move(request), keep_alive);  // pipelined: after the current response
      return;
    }
    Dispatch(std::move(request), keep_alive);
  }

  void StartExchange(HttpRequest request) {
    idle_.cancel();
    current_ = std::make_shared<Exchange<Stream>>(this->shared_from_this(), std::move(request));
  }

  void Dispatch(HttpRequest request, bool keep_alive) {
    StartExchange(std::move(request));
    current_->keep_alive_ = keep_alive;
    // Keep reading: the next request, or the end of the connection if the client leaves.
    ReadNext();
    server_.handler(current_);
  }

  void WriteNext() {
    writing_ = true;
    net::async_write(stream_, net::buffer(out_.front()),
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->OnWrite(ec); });
  }

  void OnWrite(beast::error_code ec) {
    writing_ = false;
    if (closed_) return;
    if (ec) {
      ClientGone();
      return Shutdown();
    }
    out_.pop_front();
    if (!out_.empty()) return WriteNext();
    if (!current_ || !current_->complete) return;
    current_.reset();  // the response is out
    if (close_after_writes_ || read_failed_) return Shutdown();
    if (queued_) {
      auto [request, keep_alive] = *std::move(queued_);
      queued_.reset();
      return Dispatch(std::move(request), keep_alive);
    }
    if (!reading_) ReadNext();
    ArmIdleTimer();
  }

  void Shutdown() {
    if (closed_) return;
    closed_ = true;
    ClientGone();
    idle_.cancel();
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).socket().close(ignored);
    current_.reset();
    server_.Untrack(this->shared_from_this());
  }

  HttpServer::Impl& server_;
  Stream stream_;
  net::steady_timer idle_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Exchange<Stream>> current_;
  std::optional<std::pair<HttpRequest, bool>> queued_;
  std::deque<std::string> out_;
  bool reading_ = false, writing_ = false, read_failed_ = false, close_after_writes_ = false, closed_ = false;
};

template <class Stream>
void Exchange<Stream>::Post(std::string bytes, bool complete) {
  net::post(session_->executor(), [self = this->shared_from_this(), bytes = std::move(bytes), complete]() mutable {
    self->session_->Queue(self, std::move(bytes), complete);
  });
}

template <class Stream>
void Exchange<Stream>::OnClientGone(std::function<void()> callback) {
  net::post(session_->executor(), [self = this->shared_from_this(), callback = std::move(callback)]() mutable {
    if (self->gone) return callback();
    if (!self->complete) self->on_gone = std::move(callback);
  });
}

// "host:port" (IPv6 hosts in brackets; an empty host is every interface) to an endpoint.
absl::StatusOr<tcp::endpoint> ParseListen(const std::string& listen) {
  absl::StatusOr<std::pair<std::string, int>> split = SplitHostPort(listen);
  if (!split.ok()) return split.status();
  auto [host, port] = *std::move(split);
  if (host.empty()) host = "0.0.0.0";
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("listen host \"", host, "\" is not an IP address"));
  return tcp::endpoint(address, static_cast<unsigned short>(port));
}

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      socket.set_option(tcp::no_delay(true), ec);
      if (tls) {
        std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
            *this, beast::ssl_stream<beast::tcp_stream>(beast::tcp_stream(std::move(socket)), *tls))
            ->Start();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(*this, beast::tcp_stream(std::move(socket)))->Start();
      }
    }
    Accept();
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options, HttpHandler handler) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->handler = std::move(handler);
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and a key");
  }
  if (!options.tls_cert_file.empty()) {
    impl->tls.emplace(ssl::context::tls_server);
    impl->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                           ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    beast::error_code ec;
    impl->tls->use_certificate_chain_file(options.tls_cert_file, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("TLS certificate ", options.tls_cert_file, ": ", ec.message()));
    impl->tls->use_private_key_file(options.tls_key_file, ssl::context::pem, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("TLS key ", options.tls_key_file, ": ", ec.message()));
  }
  absl::StatusOr<tcp::endpoint> endpoint = ParseListen(options.listen);
  if (!endpoint.ok()) return endpoint.status();
  beast::error_code ec;
  impl->acceptor.open(endpoint->protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(*endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen, ": ", ec.message()));
  impl->port = impl->acceptor.local_endpoint().port();
  impl->Accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    impl->threads.emplace_back([impl = impl.get()] { impl->ioc.run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  Stop();
  // Handlers posted after the threads left (an exchange answered late) run now, while
  // everything they touch is still alive; each finds its connection closed.
  impl_->ioc.restart();
  impl_->ioc.run();
}

int HttpServer::port() const { return impl_->port; }

int HttpServer::open_connections() const { return impl_->connections.load(); }

void HttpServer::Stop() {
  std::set<std::shared_ptr<Closeable>> open;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->stopped) return;
    impl_->stopped = true;
    open.swap(impl_->open);
  }
  net::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  for (const auto& c : open) c->Close();
  open.clear();
  // Closed sockets finish their operations with errors; then the threads run out of work.
  for (std::thread& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace accllm::gateway
