// An HTTP/1.1 server on Boost.Beast: a fixed number of threads run every connection (plain or
// TLS) asynchronously, so an open stream costs a socket and a little memory, not a thread.
//
// Each request is handed to the handler as an HttpExchange, which the handler answers from any
// thread, at once or later, with one response or an event stream. While a response is pending
// the connection keeps reading: a client that goes away is noticed at once (OnClientGone), and a
// pipelined request waits its turn.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace accllm::gateway {

struct HttpRequest {
  std::string method;  // GET, POST, …
  std::string target;  // path and query
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string Header(const std::string& lower_name) const {
    const auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// One request's answer. Thread-safe; exactly one of Respond or StartStream (then any number of
// Send, then EndStream) is called.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequest& request() const = 0;
  virtual void Respond(int status, const std::string& content_type, std::string body, const HttpHeaders& headers = {}) = 0;
  virtual void StartStream(int status, const std::string& content_type, const HttpHeaders& headers = {}) = 0;
  virtual void Send(std::string data) = 0;
  virtual void EndStream() = 0;
  // `callback` runs once (on a server thread) if the client disconnects before the response was
  // complete; at once if it already has.
  virtual void OnClientGone(std::function<void()> callback) = 0;
};

using HttpHandler = std::function<void(std::shared_ptr<HttpExchange>)>;

struct HttpServerOptions {
  std::string listen = "127.0.0.1:8000";  // host:port; port 0 picks one
  int threads = 2;
  std::size_t max_body_bytes = 4 << 20;    // larger bodies get 413
  int idle_timeout_seconds = 75;           // an idle keep-alive connection is closed after this
  std::string tls_cert_file;               // both set: HTTPS only
  std::string tls_key_file;
  // Added to every response (CORS, for example).
  std::function<HttpHeaders(const HttpRequest&)> extra_headers;
};

class HttpServer {
 public:
  // Binds and starts serving. INVALID_ARGUMENT for a bad address or TLS files, UNAVAILABLE when
  // the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options, HttpHandler handler);
  ~HttpServer();  // Stop()

  int port() const;
  // Stops accepting, closes every connection and joins the threads.
  void Stop();
  int open_connections() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace accllm::gateway
