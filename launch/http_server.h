// A small HTTP/1.1 server on Boost.Beast for the OpenAI front end (design.md: HTTP on rank 0).
// One thread per connection, synchronous I/O: the engine, not the socket layer, is the
// bottleneck (one forward takes 10-100 ms), and blocking code keeps cancellation simple: a
// handler polls client_gone() while it waits, and a failed write means the client left.
// Keep-alive is supported; a response to a request that arrives while stopping closes the
// connection. Bodies over max_body get 413 before the handler runs; unparsable requests get 400.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace cllm::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query string
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// How a handler answers: either one send(), or start_stream() + write_chunk()* + end_stream().
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void send(int status, const std::string& content_type, const std::string& body,
                    const Headers& extra = {}) = 0;
  // A 200 with chunked transfer encoding (SSE). Returns false when the client is gone.
  virtual bool start_stream(const std::string& content_type) = 0;
  virtual bool write_chunk(const std::string& data) = 0;  // false: the client is gone
  virtual void end_stream() = 0;
  // True once the peer has closed or reset its side (checked without blocking).
  virtual bool client_gone() = 0;
};

using Handler = std::function<void(const Request&, Responder&)>;

struct Connection;  // a socket being served (http_server.cpp)

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;               // 0: any free port (see Server::port())
  size_t max_body = 1 << 20;     // bytes
  int max_connections = 512;     // more are answered 503 and closed
};

// OpenAI-style error body: {"error": {"message", "type", "param", "code"}}.
std::string error_json(const std::string& message, const std::string& type, const std::string& code = "",
                       const std::string& param = "");

class Server {
 public:
  // Binds and listens at once (throws naming host:port on failure); accepts after start().
  Server(const ServerOptions& opts, Handler handler);
  ~Server();
  int port() const { return port_; }
  void start();
  // Stops accepting and closes idle keep-alive connections; requests in flight go on.
  void stop();
  // Waits until every connection has closed (call after stop()).
  void join();

 private:
  struct Impl;
  void accept_loop();
  void serve(std::unique_ptr<Connection> conn);

  std::unique_ptr<Impl> impl_;
  ServerOptions opts_;
  Handler handler_;
  int port_ = 0;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable closed_;
  int open_ = 0;              // connections being served
  std::set<int> idle_fds_;    // connections waiting for their next request
};

}  // namespace cllm::http
