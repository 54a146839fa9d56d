#include "launch/http_server.h"

#include <poll.h>
#include <sys/socket.h>

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

class SocketResponder final : public Responder {
 public:
  SocketResponder(tcp::socket& s, bool keep_alive) : s_(s), keep_alive_(keep_alive) {}

  void send(int status, const std::string& content_type, const std::string& body, const Headers& extra) override {
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
    res.set(bhttp::field::server, "cllm");
    res.set(bhttp::field::content_type, content_type);
    for (const auto& [k, v] : extra) res.set(k, v);
    res.keep_alive(keep_alive_);
    res.body() = body;
    res.prepare_payload();
    beast::error_code ec;
    bhttp::write(s_, res, ec);
    if (ec) keep_alive_ = false;
    answered_ = true;
  }

  bool start_stream(const std::string& content_type) override {
    bhttp::response<bhttp::empty_body> res{bhttp::status::ok, 11};
    res.set(bhttp::field::server, "cllm");
    res.set(bhttp::field::content_type, content_type);
    res.set(bhttp::field::cache_control, "no-cache");
    res.keep_alive(keep_alive_);
    res.chunked(true);
    bhttp::response_serializer<bhttp::empty_body> sr{res};
    beast::error_code ec;
    bhttp::write_header(s_, sr, ec);
    answered_ = true;
    return ok(ec);
  }

  bool write_chunk(const std::string& data) override {
    if (failed_) return false;
    beast::error_code ec;
    asio::write(s_, bhttp::make_chunk(asio::buffer(data)), ec);
    return ok(ec);
  }

  void end_stream() override {
    beast::error_code ec;
    if (!failed_) asio::write(s_, bhttp::make_chunk_last(), ec);
    ok(ec);
  }

  bool client_gone() override {
    if (failed_) return true;
    pollfd p{s_.native_handle(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

  bool answered() const { return answered_; }
  bool keep_alive() const { return keep_alive_ && !failed_; }

 private:
  bool ok(const beast::error_code& ec) {
    if (ec) failed_ = true;
    return !failed_;
  }
  tcp::socket& s_;
  bool keep_alive_;
  bool failed_ = false;
  bool answered_ = false;
};

}  // namespace

Server::Server(const ServerOptions& opts, Handler handler)
    : impl_(std::make_unique<Impl>()), opts_(opts), handler_(std::move(handler)) {
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
  std::lock_guard<std::mutex> lock(mu_);
  for (int fd : idle_fds_) ::shutdown(fd, SHUT_RDWR);
}

void Server::join() {
  if (acceptor_.joinable()) acceptor_.join();
  std::unique_lock<std::mutex> lock(mu_);
  closed_.wait(lock, [&] { return open_ == 0; });
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
      if (open_ >= opts_.max_connections) {
        SocketResponder(conn->socket, false)
            .send(503, "application/json", error_json("too many connections", "server_error"), {});
        continue;
      }
      ++open_;
    }
    std::thread([this, c = std::move(conn)]() mutable { serve(std::move(c)); }).detach();
  }
}

void Server::serve(std::unique_ptr<Connection> conn) {
  tcp::socket& s = conn->socket;
  const int fd = s.native_handle();
  beast::flat_buffer buf;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
      idle_fds_.insert(fd);
    }
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(opts_.max_body);
    parser.header_limit(64 * 1024);
    beast::error_code ec;
    bhttp::read(s, buf, parser, ec);
    {
      std::lock_guard<std::mutex> lock(mu_);
      idle_fds_.erase(fd);
    }
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset) break;
    if (ec) {
      const bool too_big = ec == bhttp::error::body_limit;
      SocketResponder r(s, false);
      if (!stopping_ && ec != asio::error::shut_down && ec != asio::error::operation_aborted)
        r.send(too_big ? 413 : 400, "application/json",
               error_json(too_big ? "request body exceeds " + std::to_string(opts_.max_body) + " bytes"
                                  : "malformed HTTP request: " + ec.message(),
                          "invalid_request_error"),
               {});
      break;
    }
    const auto& msg = parser.get();
    Request req;
    req.method = std::string(msg.method_string());
    const std::string target(msg.target());
    req.path = target.substr(0, target.find('?'));
    for (const auto& f : msg) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req.headers[name] = std::string(f.value());
    }
    req.body = msg.body();
    SocketResponder r(s, msg.keep_alive() && !stopping_);
    try {
      handler_(req, r);
    } catch (const std::exception& e) {
      if (!r.answered()) r.send(500, "application/json", error_json(e.what(), "server_error"), {});
    }
    if (!r.answered()) r.send(500, "application/json", error_json("no response", "server_error"), {});
    if (!r.keep_alive()) break;
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
