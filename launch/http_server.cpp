#include "launch/http_server.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <limits>
#include <chrono>
#include <cstdio>
#include <random>
#include <string_view>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace cllm::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

struct Server::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
};

struct Connection {
  explicit Connection(asio::io_context& io) : socket(io) {}
  tcp::socket socket;
};

std::string Request::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

std::string error_json(const std::string& message, const std::string& type, const std::string& code,
                       const std::string& param) {
  auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
  nlohmann::json e = {{"message", message}, {"type", type}, {"param", or_null(param)}, {"code", or_null(code)}};
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// The path of a request target: origin-form "/a%2Fb?q" or absolute-form "http://host/a?q" (RFC 9112
// 3.2), without the query, percent-decoded (RFC 3986 2.1: clients such as the OpenAI SDK escape a
// model id's "/"). ok = false for a malformed escape.
std::string request_path(const std::string& target, bool& ok) {
  std::string t = target.substr(0, target.find('?'));
  if (const size_t scheme = t.find("://"); scheme != std::string::npos && t[0] != '/') {
    const size_t slash = t.find('/', scheme + 3);
    t = slash == std::string::npos ? "/" : t.substr(slash);
  }
  std::string out;
  ok = true;
  const auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  };
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] != '%') {
      out += t[i];
      continue;
    }
    const int hi = i + 2 < t.size() ? hex(t[i + 1]) : -1, lo = i + 2 < t.size() ? hex(t[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      ok = false;
      return t;
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// True when a Transfer-Encoding value is the one coding this server implements: chunked.
bool only_chunked(std::string_view te) {
  const size_t a = te.find_first_not_of(" \t"), b = te.find_last_not_of(" \t");
  return a != std::string_view::npos && iequals(te.substr(a, b - a + 1), "chunked");
}

double steady_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The socket with a deadline on every read and write: Beast's sync reads and asio's writes block
// without limit, and SO_RCVTIMEO does not help (asio retries on EAGAIN), so each call first
// waits in poll() for at most the time left.
class DeadlineStream {
 public:
  explicit DeadlineStream(tcp::socket& s) : s_(s) {}
  void expires_after(double seconds) { deadline_ = steady_now() + seconds; }

  template <class Buffers>
  size_t read_some(const Buffers& b, beast::error_code& ec) {
    if (!wait(POLLIN, ec)) return 0;
    return s_.read_some(b, ec);
  }
  template <class Buffers>
  size_t write_some(const Buffers& b, beast::error_code& ec) {
    if (!wait(POLLOUT, ec)) return 0;
    return s_.write_some(b, ec);
  }
  // The throwing forms that the stream concepts ask for.
  template <class Buffers>
  size_t read_some(const Buffers& b) {
    return or_throw([&](beast::error_code& ec) { return read_some(b, ec); });
  }
  template <class Buffers>
  size_t write_some(const Buffers& b) {
    return or_throw([&](beast::error_code& ec) { return write_some(b, ec); });
  }
  // Waits for readable data (or EOF) until the deadline; false on timeout.
  bool wait_readable() {
    beast::error_code ec;
    return wait(POLLIN, ec);
  }

 private:
  template <class Op>
  static size_t or_throw(Op op) {
    beast::error_code ec;
    const size_t n = op(ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  bool wait(short events, beast::error_code& ec) {
    for (;;) {
      const double left = deadline_ - steady_now();
      if (left <= 0) {
        ec = beast::error::timeout;
        return false;
      }
      pollfd p{s_.native_handle(), events, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::min(left * 1000, 1e9)) + 1);
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) {
        ec = beast::error_code(errno, beast::system_category());
        return false;
      }
    }
  }
  tcp::socket& s_;
  double deadline_ = 0;
};

class SocketResponder final : public Responder {
 public:
  SocketResponder(tcp::socket& s, const ServerOptions& opts, unsigned version, bool keep_alive, const Request& req,
                  const Observer& observer)
      : s_(s), io_(s), opts_(opts), version_(version), keep_alive_(keep_alive), req_(req), observer_(observer) {}

  void send(int status, const std::string& content_type, const std::string& body, const Headers& extra) override {
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), version_};
    common_headers(res, content_type);
    for (const auto& [k, v] : extra) res.set(k, v);
    res.keep_alive(keep_alive_);
    res.body() = body;
    res.prepare_payload();
    set_status(status);
    beast::error_code ec;
    io_.expires_after(opts_.write_timeout_s);
    if (req_.method == "HEAD") {  // the GET answer's header, Content-Length included, and no body
      bhttp::response_serializer<bhttp::string_body> sr{res};
      bhttp::write_header(io_, sr, ec);
      bytes_ = 0;
    } else {
      bhttp::write(io_, res, ec);
      bytes_ = body.size();
    }
    ok(ec);
  }

  bool start_stream(const std::string& content_type) override {
    bhttp::response<bhttp::empty_body> res{bhttp::status::ok, version_};
    common_headers(res, content_type);
    res.set(bhttp::field::cache_control, "no-cache");
    // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
    if (version_ >= 11) {
      res.keep_alive(keep_alive_);
      res.chunked(true);
    } else {
      keep_alive_ = false;
      res.keep_alive(false);
    }
    bhttp::response_serializer<bhttp::empty_body> sr{res};
    status_ = 200;  // counted at the end: a stream the client leaves counts as abandoned, not 200
    beast::error_code ec;
    io_.expires_after(opts_.write_timeout_s);
    bhttp::write_header(io_, sr, ec);
    return ok(ec);
  }

  bool write_chunk(const std::string& data) override {
    if (failed_) return false;
    beast::error_code ec;
    io_.expires_after(opts_.write_timeout_s);
    if (version_ >= 11)
      asio::write(io_, bhttp::make_chunk(asio::buffer(data)), ec);
    else
      asio::write(io_, asio::buffer(data), ec);
    bytes_ += data.size();
    return ok(ec);
  }

  void end_stream() override {
    count();
    beast::error_code ec;
    io_.expires_after(opts_.write_timeout_s);
    if (!failed_ && version_ >= 11) asio::write(io_, bhttp::make_chunk_last(), ec);
    ok(ec);
  }

  bool client_gone() override {
    if (failed_) return true;
    pollfd p{s_.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLHUP | POLLERR)) != 0;
  }

  bool peer_finished_sending() override {
    pollfd p{s_.native_handle(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

  void abandon(int status) override {
    if (!counted_) status_ = 0;
    set_status(status);
    keep_alive_ = false;
  }
  // Counts a status not counted yet (a stream that ended without end_stream()).
  void count() {
    if (!status_ || counted_) return;
    counted_ = true;
    if (observer_.on_status) observer_.on_status(req_, status_);
  }

  int status() const { return status_; }
  size_t bytes() const { return bytes_; }
  bool keep_alive() const { return keep_alive_ && !failed_; }

 private:
  template <class Res>
  void common_headers(Res& res, const std::string& content_type) {
    res.set(bhttp::field::server, "cllm");
    res.set(bhttp::field::content_type, content_type);
    if (!req_.id.empty()) res.set("X-Request-Id", req_.id);
    // CORS, as vLLM answers by default: any origin may read the answers (a browser front end on
    // another port); credentials are not allowed, so cookies never ride along.
    if (!req_.header("origin").empty()) res.set(bhttp::field::access_control_allow_origin, "*");
  }
  void set_status(int status) {
    if (status_) return;
    status_ = status;
    count();
  }
  bool ok(const beast::error_code& ec) {
    if (ec) failed_ = true;
    return !failed_;
  }
  tcp::socket& s_;
  DeadlineStream io_;
  const ServerOptions& opts_;
  unsigned version_;
  bool keep_alive_;
  const Request& req_;
  const Observer& observer_;
  bool failed_ = false;
  int status_ = 0;
  bool counted_ = false;  // 0: nothing sent yet
  size_t bytes_ = 0;
};

std::string random_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}() ^
                                          static_cast<uint64_t>(std::hash<std::thread::id>{}(std::this_thread::get_id()))};
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

// A client's own X-Request-Id is echoed when it is a plain token; anything else gets a fresh one.
std::string request_id(const std::string& given) {
  if (given.empty() || given.size() > 128) return random_id();
  for (char c : given)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return random_id();
  return given;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

std::string new_id() { return random_id(); }

Server::Server(const ServerOptions& opts, Handler handler, Observer observer)
    : impl_(std::make_unique<Impl>()), opts_(opts), handler_(std::move(handler)), observer_(std::move(observer)) {
  beast::error_code ec;
  const auto addr = asio::ip::make_address(opts.host, ec);
  CLLM_CHECK(!ec, "--host '" << opts.host << "' is not an IP address: " << ec.message());
  const tcp::endpoint ep{addr, static_cast<unsigned short>(opts.port)};
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  CLLM_CHECK(!ec, "cannot listen on " << opts.host << ":" << opts.port << ": " << ec.message());
  port_ = a.local_endpoint().port();
}

Server::~Server() {
  stop();
  if (acceptor_.joinable()) acceptor_.join();
}

void Server::start() { acceptor_ = std::thread([this] { accept_loop(); }); }

void Server::stop() {
  if (stopping_.exchange(true)) return;
  // Unblocks accept(); shutdown() rather than close() because another thread is inside accept.
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
}

bool Server::join(double max_seconds) {
  stop();
  if (acceptor_.joinable()) acceptor_.join();
  std::unique_lock<std::mutex> lock(mu_);
  joining_ = true;
  for (const auto& [fd, since] : waiting_) ::shutdown(fd, SHUT_RDWR);
  return closed_.wait_for(lock, std::chrono::duration<double>(max_seconds), [&] { return open_ == 0; });
}

void Server::evict_longest_waiting() {
  auto oldest = waiting_.end();
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
    if (oldest == waiting_.end() || it->second < oldest->second) oldest = it;
  if (oldest == waiting_.end()) return;
  ::shutdown(oldest->first, SHUT_RDWR);  // its thread sees EOF, closes and leaves
  waiting_.erase(oldest);
}

void Server::accept_loop() {
  while (!stopping_) {
    auto conn = std::make_unique<Connection>(impl_->io);
    beast::error_code ec;
    impl_->acceptor.accept(conn->socket, ec);
    if (stopping_) break;
    if (ec) continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (open_ >= opts_.max_connections) evict_longest_waiting();
      // Evicted connections leave a moment later; past twice the cap every connection is busy
      // with a request, and the newcomer is refused.
      if (open_ >= 2 * opts_.max_connections) {
        const Request none;
        SocketResponder(conn->socket, opts_, 11, false, none, observer_)
            .send(503, "application/json", error_json("too many connections", "server_error"), {});
        if (observer_.on_done) observer_.on_done(none, 503, 0, 0);
        continue;
      }
      ++open_;
    }
    std::thread([this, c = std::move(conn)]() mutable { serve(std::move(c)); }).detach();
  }
}

// Closes a connection whose request the server refused before reading all of it (a body too large,
// or one it cannot frame): the write side first, then whatever the client still sends is read and
// dropped for a moment, so the client reads the answer instead of a reset (nginx's lingering
// close). Bounded in time and bytes.
void linger_close(tcp::socket& s, DeadlineStream& io) {
  beast::error_code ec;
  s.shutdown(tcp::socket::shutdown_send, ec);
  io.expires_after(2.0);
  char sink[16384];
  for (size_t dropped = 0; !ec && dropped < (64u << 20);) dropped += io.read_some(asio::buffer(sink), ec);
}

// RFC 9112 2.2: a server SHOULD ignore at least one empty line (CRLF) received before the
// request-line; some clients send one after a POST body. Drops up to kMaxEmptyLines of them from the
// front of buf, reading more while buf holds nothing else, so the parser sees the request-line first.
// More than that is no request: the parser then refuses it as malformed.
void skip_empty_lines(DeadlineStream& io, beast::flat_buffer& buf, beast::error_code& ec) {
  constexpr size_t kMaxEmptyLines = 4;  // 2 bytes each
  for (size_t dropped = 0; !ec && dropped < 2 * kMaxEmptyLines;) {
    if (buf.size() == 0) {
      buf.commit(io.read_some(buf.prepare(4096), ec));
      continue;
    }
    const char* p = static_cast<const char*>(buf.data().data());
    size_t n = 0;
    while (n < buf.size() && dropped + n < 2 * kMaxEmptyLines && (p[n] == '\r' || p[n] == '\n')) ++n;
    if (n == 0) return;
    buf.consume(n);
    dropped += n;
  }
}

// True when the first line in buf ends with a bare LF: HTTP/1.1 lines end with CRLF (RFC 9112 2.2),
// and the parser's own word for it ("bad version") would not tell a client why.
bool first_line_ends_bare_lf(const beast::flat_buffer& buf) {
  const std::string_view head(static_cast<const char*>(buf.data().data()), buf.size());
  const size_t lf = head.find('\n');
  return lf != std::string_view::npos && (lf == 0 || head[lf - 1] != '\r');
}

void Server::serve(std::unique_ptr<Connection> conn) {
  tcp::socket& s = conn->socket;
  const int fd = s.native_handle();
  DeadlineStream io(s);
  beast::flat_buffer buf;
  for (bool first = true;; first = false) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (joining_) break;
      waiting_[fd] = steady_now();
    }
    // A new connection gets the header timeout for its first byte, a kept-alive one the idle one.
    io.expires_after(first ? opts_.header_timeout_s : opts_.idle_timeout_s);
    if (buf.size() == 0 && !io.wait_readable()) break;  // idle past its timeout: close quietly
    const double t0 = steady_now();
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // checked once the header is in, so a 413 names its route
    parser.header_limit(64 * 1024);
    beast::error_code ec;
    io.expires_after(opts_.header_timeout_s);
    skip_empty_lines(io, buf, ec);
    if (!ec) bhttp::read_header(io, buf, parser, ec);
    {
      // Until its header is in, a connection may be evicted (a slow header is as idle as none).
      std::lock_guard<std::mutex> lock(mu_);
      if (!waiting_.erase(fd)) break;
    }
    Request req;
    if (parser.is_header_done()) {
      const auto& msg = parser.get();
      req.method = std::string(msg.method_string());
      req.path = request_path(std::string(msg.target()), req.path_ok);
      for (const auto& f : msg) {
        std::string name(f.name_string());
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        req.headers[name] = std::string(f.value());
      }
      req.id = request_id(req.header("x-request-id"));
    }
    // A header the server cannot frame a body by (RFC 9112 6.1-6.3, 3.2): answered and closed.
    int refuse = 0;
    std::string why;
    if (!ec) {
      const auto& h = parser.get();
      const std::string te(h[bhttp::field::transfer_encoding]);
      if (!te.empty() && !only_chunked(te)) {  // RFC 9112 6.1: a coding the server does not know is 501
        refuse = 501, why = "Transfer-Encoding '" + te + "' cannot be decoded here: the server takes chunked alone";
      } else if (!req.path_ok) {
        refuse = 400, why = "the request target's path has a malformed percent-escape";
      } else if (h.version() >= 11 && h.find(bhttp::field::host) == h.end()) {
        refuse = 400, why = "an HTTP/1.1 request needs a Host header";
      } else if (h.method() == bhttp::verb::post && !parser.content_length() && !parser.chunked()) {
        refuse = 411, why = "a POST needs a Content-Length (or a chunked body)";
      } else if (const std::string expect(h[bhttp::field::expect]); !expect.empty() && !iequals(expect, "100-continue")) {
        refuse = 417, why = "Expect '" + expect + "' cannot be met here: the server knows 100-continue alone";
      }
    }
    if (refuse) {
      SocketResponder r(s, opts_, 11, false, req, observer_);
      r.send(refuse, "application/json", error_json(why, "invalid_request_error"), {});
      if (observer_.on_done) observer_.on_done(req, refuse, r.bytes(), steady_now() - t0);
      linger_close(s, io);
      break;
    }
    if (!ec) {
      parser.body_limit(opts_.max_body);
      if (parser.content_length() && *parser.content_length() > opts_.max_body) ec = bhttp::error::body_limit;
    }
    if (!ec) {
      const auto& h = parser.get();
      // curl and others wait for this before sending a large body.
      if (h.version() >= 11 && iequals(std::string(h[bhttp::field::expect]), "100-continue") && !parser.is_done()) {
        static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        io.expires_after(opts_.write_timeout_s);
        asio::write(io, asio::buffer(kContinue), ec);
      }
      io.expires_after(opts_.body_timeout_s);
      if (!ec) bhttp::read(io, buf, parser, ec);
    }
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset) break;
    if (ec) {
      if (ec == asio::error::shut_down || ec == asio::error::operation_aborted || joining_) break;
      const bool too_big = ec == bhttp::error::body_limit;
      const bool header_too_big = ec == bhttp::error::header_limit;  // RFC 6585 5: 431
      const bool slow = ec == beast::error::timeout;
      const int status = too_big ? 413 : header_too_big ? 431 : slow ? 408 : 400;
      SocketResponder r(s, opts_, 11, false, req, observer_);
      r.send(status, "application/json",
             error_json(too_big          ? "request body exceeds " + std::to_string(opts_.max_body) + " bytes"
                        : header_too_big ? "request header fields exceed 64 KiB"
                        : slow           ? "the request did not arrive in time"
                        : !parser.is_header_done() && first_line_ends_bare_lf(buf)
                            ? std::string("malformed HTTP request: its lines must end with CRLF (\\r\\n), not a bare LF")
                            : "malformed HTTP request: " + ec.message(),
                        "invalid_request_error"),
             {});
      if (observer_.on_done) observer_.on_done(req, status, r.bytes(), steady_now() - t0);
      if (too_big) linger_close(s, io);
      break;
    }
    const auto& msg = parser.get();
    req.body = msg.body();
    SocketResponder r(s, opts_, msg.version(), msg.keep_alive() && !stopping_, req, observer_);
    try {
      handler_(req, r);
    } catch (const std::exception& e) {
      if (!r.status()) r.send(500, "application/json", error_json(e.what(), "server_error"), {});
    }
    if (!r.status()) r.send(500, "application/json", error_json("no response", "server_error"), {});
    r.count();
    if (observer_.on_done) observer_.on_done(req, r.status(), r.bytes(), steady_now() - t0);
    if (!r.keep_alive() || stopping_) break;
  }
  beast::error_code ec;
  s.shutdown(tcp::socket::shutdown_both, ec);
  s.close(ec);
  conn.reset();
  std::lock_guard<std::mutex> lock(mu_);
  --open_;
  closed_.notify_all();
}

}  // namespace cllm::http
