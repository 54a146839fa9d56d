// A small HTTP/1.1 server on Boost.Beast for the OpenAI front end (design.md: HTTP on rank 0).
// One thread per connection, synchronous I/O: the engine, not the socket layer, is the
// bottleneck (one forward takes 10-100 ms), and blocking code keeps cancellation simple: a
// handler polls client_gone() while it waits, and a failed write means the client left.
// Every read and write has a deadline (header, body, keep-alive idle, write), so a client that
// stalls cannot hold a thread. Keep-alive is supported; a request that arrives while stopping is
// still handed to the handler (which answers 503) and its connection then closes. Bodies over
// max_body get 413 before the handler runs; unparsable requests get 400, stalled ones 408.
// Past max_connections the connection that has waited longest for a request is closed to make
// room, so a flood of idle sockets never locks out /health.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace cllm::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target's path: no query string, percent-decoded
  bool path_ok = true;  // false: a malformed percent-escape (the request is refused with 400)
  std::string id;      // X-Request-Id: the client's, or a fresh random one; sent back on the response
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
  // A 200 whose body follows in pieces: chunked for HTTP/1.1, ended by closing the connection for
  // HTTP/1.0. Returns false when the client is gone.
  virtual bool start_stream(const std::string& content_type) = 0;
  virtual bool write_chunk(const std::string& data) = 0;  // false: the client is gone
  virtual void end_stream() = 0;
  // True once the peer has reset or fully closed the connection (checked without blocking).
  virtual bool client_gone() = 0;
  // True once the peer has sent FIN: it has either left or only finished sending (shutdown(SHUT_WR));
  // only a write can tell which.
  virtual bool peer_finished_sending() = 0;
  // No answer will be sent (the client left): `status` is what the access log and metrics record.
  virtual void abandon(int status) = 0;
};

using Handler = std::function<void(const Request&, Responder&)>;
// Once per answered (or abandoned) request. on_status runs as the status is decided, before any
// byte goes out (a client that has its answer sees it counted); on_done after the last byte.
struct Observer {
  std::function<void(const Request&, int status)> on_status;
  std::function<void(const Request&, int status, size_t body_bytes, double seconds)> on_done;
};

struct Connection;  // a socket being served (http_server.cpp)

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;               // 0: any free port (see Server::port())
  size_t max_body = 1 << 20;     // bytes
  int max_connections = 512;     // above it the longest-waiting idle connection is closed
  double header_timeout_s = 10;  // from a request's first byte to the end of its header
  double body_timeout_s = 60;    // for the whole body once the header is in
  double idle_timeout_s = 30;    // keep-alive: for the next request's first byte
  double write_timeout_s = 60;   // for each write to make progress
};

bool iequals(std::string_view a, std::string_view b);  // ASCII, as HTTP compares tokens

// 128 random bits in hex: request and response ids that no restart repeats.
std::string new_id();

// OpenAI-style error body: {"error": {"message", "type", "param", "code"}}.
std::string error_json(const std::string& message, const std::string& type, const std::string& code = "",
                       const std::string& param = "");

class Server {
 public:
  // Binds and listens at once (throws naming host:port on failure); accepts after start().
  Server(const ServerOptions& opts, Handler handler, Observer observer = {});
  ~Server();
  int port() const { return port_; }
  void start();
  // Stops accepting; requests still arriving on open connections are handled and their
  // connections closed after the answer.
  void stop();
  // Closes idle connections and waits until every connection has closed, or at most
  // max_seconds (then returns false).
  bool join(double max_seconds = 1e9);

 private:
  struct Impl;
  void accept_loop();
  void serve(std::unique_ptr<Connection> conn);
  void evict_longest_waiting();  // mu_ held

  std::unique_ptr<Impl> impl_;
  ServerOptions opts_;
  Handler handler_;
  Observer observer_;
  int port_ = 0;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable closed_;
  int open_ = 0;                  // connections being served
  bool joining_ = false;          // join() has closed the waiting connections; close new waiters too
  std::map<int, double> waiting_; // fd -> since when (steady seconds) it waits for a request
};

}  // namespace cllm::http
