#include "agent/http/http.h"

// Beast's string_view is std::string_view here (this is the only file that includes Beast).
#define BOOST_BEAST_USE_STD_STRING_VIEW 1

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <list>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace fleetwes::agent::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
// Socket waits are real time by nature.
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr size_t kHeaderLimit = 64 << 10;
constexpr size_t kReadChunk = 16 << 10;
// Beast reads into a flat_buffer at most its free capacity (at least 512 bytes) per receive, so
// the client's buffer is reserved once with the connection: a 51 KB exposition then takes a few
// receives instead of a hundred (each one a recvfrom and an epoll_wait).
constexpr size_t kClientBuffer = kReadChunk;

// The end of a wait of `d` from now, never after `end`.
SteadyClock::time_point Until(absl::Duration d, SteadyClock::time_point end) {
  if (d == absl::InfiniteDuration()) return end;
  const auto now = SteadyClock::now();
  const int64_t us = absl::ToInt64Microseconds(std::max(d, absl::ZeroDuration()));
  if (end - now <= std::chrono::microseconds(us)) return end;
  return now + std::chrono::microseconds(us);
}

struct Outcome {
  beast::error_code ec;
  size_t bytes = 0;
};
void SetBytes(Outcome* o, size_t n) { o->bytes = n; }
template <typename T>
void SetBytes(Outcome*, const T&) {}

// Runs the asynchronous operation on `socket` that `start` begins (given its completion
// handler) to its end on this thread; at `deadline` the socket is closed and the operation ends
// with beast::error::timeout. The wait is epoll's own timeout: no timer is armed per operation.
// Other threads only post to `ioc` (Cancel).
template <typename Start>
Outcome Run(net::io_context& ioc, tcp::socket& socket, SteadyClock::time_point deadline,
            Start&& start) {
  std::optional<Outcome> out;
  start([&out](beast::error_code ec, auto&&... rest) {
    out.emplace();
    out->ec = ec;
    (SetBytes(&*out, rest), ...);
  });
  ioc.restart();
  bool timed_out = false;
  while (!out.has_value()) {
    const size_t ran =
        deadline == SteadyClock::time_point::max() ? ioc.run_one() : ioc.run_one_until(deadline);
    if (ran > 0) continue;
    if (out.has_value() || ioc.stopped()) break;
    timed_out = true;
    beast::error_code ignored;
    socket.close(ignored);  // the operation completes with operation_aborted
    while (!out.has_value() && ioc.run_one() > 0) {
    }
  }
  if (!out.has_value()) return Outcome{net::error::operation_aborted, 0};
  if (timed_out) out->ec = beast::error::timeout;
  return *out;
}

Headers ToHeaders(const bhttp::fields& fields) {
  Headers out;
  for (const auto& f : fields)
    out.emplace_back(std::string(f.name_string()), std::string(f.value()));
  return out;
}

// "http://host[:port]" into host (brackets removed), port and authority.
bool ParseBase(std::string_view base_in, std::string* host, std::string* port,
               std::string* authority) {
  absl::string_view base(base_in.data(), base_in.size());
  if (!absl::ConsumePrefix(&base, "http://") || base.empty()) return false;
  *authority = std::string(base);
  *port = "80";
  std::string h(base);
  if (h.front() == '[') {
    const size_t close = h.find(']');
    if (close == std::string::npos) return false;
    if (close + 1 < h.size()) {
      if (h[close + 1] != ':') return false;
      *port = h.substr(close + 2);
    }
    h = h.substr(1, close - 1);
  } else if (const size_t colon = h.rfind(':'); colon != std::string::npos) {
    *port = h.substr(colon + 1);
    h = h.substr(0, colon);
  }
  int p = 0;
  if (h.empty() || !absl::SimpleAtoi(*port, &p) || p <= 0 || p > 65535) return false;
  *host = h;
  return true;
}

bool IsTimeout(const beast::error_code& ec) { return ec == beast::error::timeout; }

}  // namespace

std::string_view FindHeader(const Headers& headers, std::string_view name) {
  for (const auto& [n, v] : headers) {
    if (absl::EqualsIgnoreCase(n, absl::string_view(name.data(), name.size()))) return v;
  }
  return {};
}

// --- client --------------------------------------------------------------------------------------

struct Client::Impl {
  explicit Impl(Options o) : options(o) { buffer.reserve(kClientBuffer); }
  const Options options;
  std::string host;
  std::string port;
  std::string authority;
  std::string base_error;
  net::io_context ioc{1};
  tcp::socket socket{ioc};
  SteadyClock::time_point deadline;  // of the next operation
  beast::flat_buffer buffer;
  bool open = false;
  std::atomic<bool> cancelled{false};

  void Close() {
    beast::error_code ec;
    socket.shutdown(tcp::socket::shutdown_both, ec);
    socket.close(ec);
    buffer.clear();
    open = false;
  }
  Result Failed(Error error, const beast::error_code& ec, std::string what) {
    Close();
    if (cancelled.load()) return {Error::kCanceled, 0, "canceled"};
    if (IsTimeout(ec) && error != Error::kConnectTimeout && error != Error::kConnect) {
      return {Error::kTimeout, 0, "timed out"};
    }
    if (IsTimeout(ec)) return {Error::kConnectTimeout, 0, "connect timed out"};
    if (ec == bhttp::error::body_limit) return {Error::kTooLarge, 0, "response too large"};
    int sys = ec.category() == boost::system::system_category() ? ec.value() : 0;
    return {error, sys, ec ? absl::StrCat(what, ": ", ec.message()) : what};
  }
};

Client::Client(std::string_view base, Options options) : impl_(std::make_unique<Impl>(options)) {
  if (!ParseBase(base, &impl_->host, &impl_->port, &impl_->authority)) {
    impl_->base_error =
        absl::StrCat("not an http://host[:port] address: \"", std::string(base), "\"");
  }
}

Client::~Client() = default;

void Client::Cancel() {
  Impl* m = impl_.get();
  m->cancelled = true;
  net::post(m->ioc, [m] {
    beast::error_code ec;
    m->socket.shutdown(tcp::socket::shutdown_both, ec);
    m->socket.close(ec);
  });
}

Result Client::Send(const Request& request, const Timeouts& timeouts, const OnHeaders& on_headers,
                    const OnBody& on_body) {
  Impl& m = *impl_;
  if (!m.base_error.empty()) return {Error::kConnect, 0, m.base_error};
  if (m.cancelled.load()) return {Error::kCanceled, 0, "canceled"};
  const SteadyClock::time_point end = Until(timeouts.total, SteadyClock::time_point::max());

  bhttp::request<bhttp::span_body<const char>> req;
  req.version(11);
  const bhttp::verb verb = bhttp::string_to_verb(request.method);
  if (verb == bhttp::verb::unknown) {
    req.method_string(request.method);
  } else {
    req.method(verb);
  }
  req.target(request.target.empty() ? "/" : request.target);
  req.set(bhttp::field::host, m.authority);
  for (const auto& [name, value] : request.headers) req.insert(name, value);
  req.body() = beast::span<const char>(request.body.data(), request.body.size());
  if (!request.body.empty() || verb == bhttp::verb::post || verb == bhttp::verb::put ||
      verb == bhttp::verb::patch) {
    req.prepare_payload();
  }
  req.keep_alive(m.options.keep_alive);

  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  for (int attempt = 0;; ++attempt) {
    const bool reused = m.open;
    if (!m.open) {
      tcp::resolver resolver(m.ioc);
      beast::error_code ec;
      auto endpoints = resolver.resolve(m.host, m.port, tcp::resolver::numeric_service, ec);
      if (ec) {
        return {Error::kConnect, EHOSTUNREACH,
                absl::StrCat("cannot resolve ", m.host, ": ", ec.message())};
      }
      m.deadline = Until(timeouts.connect, end);
      Outcome c = Run(m.ioc, m.socket, m.deadline,
                      [&](auto handler) { net::async_connect(m.socket, endpoints, handler); });
      if (c.ec) {
        return m.Failed(IsTimeout(c.ec) ? Error::kConnectTimeout : Error::kConnect, c.ec,
                        absl::StrCat("cannot connect to ", m.authority));
      }
      m.socket.set_option(tcp::no_delay(true), ec);
      m.open = true;
    }
    m.deadline = Until(timeouts.idle, end);
    Outcome w = Run(m.ioc, m.socket, m.deadline,
                    [&](auto handler) { bhttp::async_write(m.socket, req, handler); });
    if (w.ec) {
      if (reused && attempt == 0 && !m.cancelled.load() && !IsTimeout(w.ec)) {
        m.Close();
        continue;
      }
      return m.Failed(Error::kWrite, w.ec, "connection closed while sending the request");
    }
    parser.emplace();
    parser->header_limit(kHeaderLimit);
    // Never boost::none: Beast 1.74 compares a Content-Length with an empty limit as larger.
    parser->body_limit(static_cast<uint64_t>(m.options.max_body_bytes));
    if (verb == bhttp::verb::head) parser->skip(true);
    m.deadline = Until(timeouts.idle, end);
    Outcome h = Run(m.ioc, m.socket, m.deadline, [&](auto handler) {
      bhttp::async_read_header(m.socket, m.buffer, *parser, handler);
    });
    if (h.ec) {
      const bool closed = h.ec == bhttp::error::end_of_stream || h.ec == net::error::eof ||
                          h.ec == net::error::connection_reset;
      if (reused && attempt == 0 && closed && !m.cancelled.load()) {
        m.Close();
        continue;
      }
      return m.Failed(Error::kRead, h.ec, "connection closed before a complete response");
    }
    break;
  }

  if (on_headers && !on_headers(parser->get().result_int(), ToHeaders(parser->get().base()))) {
    m.Close();
    return {Error::kCanceled, 0, "canceled"};
  }
  char buf[kReadChunk];
  while (!parser->is_done()) {
    parser->get().body().data = buf;
    parser->get().body().size = sizeof(buf);
    m.deadline = Until(timeouts.idle, end);
    // read_some: each piece goes on as soon as it arrives (a streamed response's lines).
    Outcome r = Run(m.ioc, m.socket, m.deadline, [&](auto handler) {
      bhttp::async_read_some(m.socket, m.buffer, *parser, handler);
    });
    if (r.ec == bhttp::error::need_buffer) r.ec = {};
    const size_t n = sizeof(buf) - parser->get().body().size;
    if (n > 0 && on_body && !on_body(buf, n)) {
      m.Close();
      return {Error::kCanceled, 0, "canceled"};
    }
    if (r.ec) return m.Failed(Error::kRead, r.ec, "connection closed before a complete response");
  }
  if (!m.options.keep_alive || !parser->get().keep_alive()) m.Close();
  return {};
}

// --- server --------------------------------------------------------------------------------------

struct Server::Impl {
  ServerOptions options;
  Handler handler;
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::thread thread;
  int port = 0;
  std::atomic<bool> stopping{false};
  absl::Mutex mu;
  std::list<std::unique_ptr<Connection>> connections ABSL_GUARDED_BY(mu);

  void Accept();
  void Reap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
};

// One accepted connection, served on its own thread with its own io_context.
class Connection {
 public:
  explicit Connection(Server::Impl* server) : server_(server) {}

  void Serve();
  // Closes the socket from any thread: the connection's wait in progress ends.
  void Cancel() {
    net::post(ioc_, [this] {
      beast::error_code ec;
      if (socket_.has_value()) {
        socket_->shutdown(tcp::socket::shutdown_both, ec);
        socket_->close(ec);
      }
    });
  }

  template <typename Message>
  bool WriteMessage(Message& message, bool header_only) {
    deadline_ = Until(server_->options.write_timeout, SteadyClock::time_point::max());
    if (header_only) {
      bhttp::serializer<false, typename Message::body_type, typename Message::fields_type> sr(
          message);
      return !Run(ioc_, *socket_, deadline_, [&](auto handler) {
                bhttp::async_write_header(*socket_, sr, handler);
              }).ec;
    }
    return !Run(ioc_, *socket_, deadline_, [&](auto handler) {
              bhttp::async_write(*socket_, message, handler);
            }).ec;
  }
  template <typename Buffers>
  bool WriteBuffers(const Buffers& buffers) {
    deadline_ = Until(server_->options.write_timeout, SteadyClock::time_point::max());
    return !Run(ioc_, *socket_, deadline_, [&](auto handler) {
              net::async_write(*socket_, buffers, handler);
            }).ec;
  }

  net::io_context ioc_{1};
  std::optional<tcp::socket> socket_;
  SteadyClock::time_point deadline_;  // of the next operation
  std::thread thread_;
  std::atomic<bool> done_{false};

 private:
  void TooLarge();
  Server::Impl* const server_;
  beast::flat_buffer buffer_;
};

void Connection::TooLarge() {
  if (server_->options.on_too_large) server_->options.on_too_large();
  Responder r(this, /*head=*/false, /*keep_alive=*/false);
  r.Send(413, "text/plain", "request body too large\n");
  // Read (and drop) what the client still sends for a moment, so that closing with unread data
  // does not reset the connection before the client read the answer.
  beast::error_code ec;
  socket_->shutdown(tcp::socket::shutdown_send, ec);
  char sink[4096];
  size_t drained = 0;
  const auto end = SteadyClock::now() + std::chrono::seconds(1);
  while (drained < (size_t{1} << 20)) {
    deadline_ = end;
    Outcome o = Run(ioc_, *socket_, deadline_, [&](auto handler) {
      socket_->async_read_some(net::buffer(sink, sizeof(sink)), handler);
    });
    if (o.ec) break;
    drained += o.bytes;
  }
}

void Connection::Serve() {
  const ServerOptions& o = server_->options;
  beast::error_code ignored;
  socket_->set_option(tcp::no_delay(true), ignored);
  bool first = true;
  while (!server_->stopping.load()) {
    if (buffer_.size() == 0) {
      // Idle: the first request gets the read timeout, later ones the keep-alive timeout.
      deadline_ =
          Until(first ? o.read_timeout : o.keep_alive_timeout, SteadyClock::time_point::max());
      Outcome r = Run(ioc_, *socket_, deadline_, [&](auto handler) {
        socket_->async_read_some(buffer_.prepare(4096), handler);
      });
      if (r.ec) break;
      buffer_.commit(r.bytes);
    }
    first = false;
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(static_cast<uint64_t>(o.max_body_bytes));
    deadline_ = Until(o.read_timeout, SteadyClock::time_point::max());
    Outcome h = Run(ioc_, *socket_, deadline_, [&](auto handler) {
      bhttp::async_read_header(*socket_, buffer_, parser, handler);
    });
    if (h.ec == bhttp::error::body_limit) {
      TooLarge();
      break;
    }
    if (h.ec) {
      if (h.ec.category() == bhttp::make_error_code(bhttp::error::end_of_stream).category() &&
          h.ec != bhttp::error::end_of_stream) {
        Responder r(this, false, false);
        r.Send(400, "text/plain", "bad request\n");
      }
      break;
    }
    if (!parser.is_done()) {
      if (absl::EqualsIgnoreCase(std::string(parser.get()[bhttp::field::expect]), "100-continue")) {
        static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (!WriteBuffers(net::buffer(kContinue, sizeof(kContinue) - 1))) break;
      }
      Outcome b = Run(ioc_, *socket_, deadline_,
                      [&](auto handler) { bhttp::async_read(*socket_, buffer_, parser, handler); });
      if (b.ec == bhttp::error::body_limit) {
        TooLarge();
        break;
      }
      if (b.ec) break;
    }
    auto& message = parser.get();
    ServerRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    request.path = request.target.substr(0, request.target.find('?'));
    request.headers = ToHeaders(message.base());
    request.body = std::move(message.body());
    Responder response(this, request.method == "HEAD", message.keep_alive());
    server_->handler(request, response);
    if (!response.started_) response.Send(500, "text/plain", "no response\n");
    if (!response.complete_ || !response.keep_alive_) break;
  }
  socket_->shutdown(tcp::socket::shutdown_both, ignored);
  socket_->close(ignored);
}

void Responder::Send(int status, std::string_view content_type, std::string body,
                     const Headers& extra) {
  if (started_) return;
  started_ = true;
  bhttp::response<bhttp::string_body> res;
  res.version(11);
  res.result(static_cast<unsigned>(status));
  res.set(bhttp::field::content_type, content_type);
  for (const auto& [name, value] : extra) res.insert(name, value);
  res.body() = std::move(body);
  res.prepare_payload();
  res.keep_alive(keep_alive_);
  complete_ = connection_->WriteMessage(res, head_);
  failed_ = !complete_;
}

bool Responder::Start(int status, const Headers& headers, std::optional<uint64_t> length) {
  if (started_) return false;
  started_ = true;
  bhttp::response<bhttp::empty_body> res;
  res.version(11);
  res.result(static_cast<unsigned>(status));
  for (const auto& [name, value] : headers) res.insert(name, value);
  if (length.has_value()) {
    res.content_length(*length);
  } else if (!head_) {
    res.chunked(true);
    chunked_ = true;
  }
  res.keep_alive(keep_alive_);
  failed_ = !connection_->WriteMessage(res, /*header_only=*/true);
  return !failed_;
}

bool Responder::Write(std::string_view data) {
  if (!started_ || failed_ || complete_) return false;
  if (head_ || data.empty()) return true;
  const net::const_buffer buffer(data.data(), data.size());
  failed_ = chunked_ ? !connection_->WriteBuffers(bhttp::make_chunk(buffer))
                     : !connection_->WriteBuffers(buffer);
  return !failed_;
}

bool Responder::Finish() {
  if (!started_ || failed_) return false;
  if (complete_) return true;
  if (chunked_ && !head_) failed_ = !connection_->WriteBuffers(bhttp::make_chunk_last());
  complete_ = !failed_;
  return complete_;
}

void Server::Impl::Reap() {
  for (auto it = connections.begin(); it != connections.end();) {
    if ((*it)->done_.load()) {
      (*it)->thread_.join();
      it = connections.erase(it);
    } else {
      ++it;
    }
  }
}

void Server::Impl::Accept() {
  auto connection = std::make_unique<Connection>(this);
  net::io_context& target = connection->ioc_;
  acceptor.async_accept(target, [this, connection = std::move(connection)](
                                    beast::error_code ec, tcp::socket socket) mutable {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    absl::MutexLock lock(&mu);
    if (stopping.load()) return;
    Reap();
    if (!ec && connections.size() < options.max_connections) {
      Connection* c = connection.get();
      c->socket_.emplace(std::move(socket));
      c->thread_ = std::thread([c] {
        c->Serve();
        c->done_ = true;
      });
      connections.push_back(std::move(connection));
    }
    Accept();
  });
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options, Handler handler) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->handler = std::move(handler);
  const std::string& host = impl->options.host;
  const std::string address =
      absl::StrCat(absl::StrContains(host, ':') ? "[" + host + "]" : host, ":", impl->options.port);
  beast::error_code ec;
  tcp::resolver resolver(impl->ioc);
  auto endpoints = resolver.resolve(host, std::to_string(impl->options.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", ec.message()));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  tcp::acceptor& acceptor = impl->acceptor;
  // Only SO_REUSEADDR, never SO_REUSEPORT: a second agent must not share the port silently.
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (!ec) impl->port = acceptor.local_endpoint(ec).port();
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", ec.message()));
  }
  Impl* raw = impl.get();
  raw->Accept();
  raw->thread = std::thread([raw] { raw->ioc.run(); });
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::~Server() { Stop(); }

int Server::port() const { return impl_->port; }

void Server::Stop() {
  Impl& m = *impl_;
  {
    absl::MutexLock lock(&m.mu);
    m.stopping = true;
  }
  net::post(m.ioc, [&m] {
    beast::error_code ec;
    m.acceptor.close(ec);
  });
  if (m.thread.joinable()) m.thread.join();
  std::list<std::unique_ptr<Connection>> connections;
  {
    absl::MutexLock lock(&m.mu);
    connections = std::move(m.connections);
  }
  for (const auto& c : connections) c->Cancel();
  for (const auto& c : connections) c->thread_.join();
}

}  // namespace fleetwes::agent::http
