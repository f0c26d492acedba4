// The agent's plain HTTP/1.1 (Boost.Beast underneath, no TLS): a blocking client that streams a
// response through callbacks, and a small server with one thread per open connection. Every
// wait on a socket is bounded by a timeout; bodies are bounded by caps. This is the only
// translation unit that includes Beast: the engine client, the local HTTP surface, the Ollama
// proxy and probe use this interface.
#ifndef FLEETWES_AGENT_HTTP_HTTP_H_
#define FLEETWES_AGENT_HTTP_HTTP_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fleetwes::agent::http {

// Header fields in the order received; names keep their case.
using Headers = std::vector<std::pair<std::string, std::string>>;

// The value of the first field named `name` (case-insensitive); "" when absent.
std::string_view FindHeader(const Headers& headers, std::string_view name);

struct Timeouts {
  absl::Duration connect = absl::Seconds(5);
  // Longest wait for one read or write on the connection.
  absl::Duration idle = absl::Seconds(30);
  // Bounds the whole exchange (connect, send, headers, body).
  absl::Duration total = absl::InfiniteDuration();
};

struct Request {
  std::string method = "GET";
  std::string target;  // path and query, e.g. "/api/ps"
  Headers headers;     // Host and Content-Length are set by the client
  std::string body;
};

enum class Error {
  kNone,
  kConnect,         // resolving or connecting failed; sys_errno tells why when known
  kConnectTimeout,  // connect did not finish in time
  kTimeout,         // a read or write waited too long, or the total budget ran out
  kWrite,           // the connection failed while sending the request
  kRead,            // the connection failed or closed before the response was complete
  kTooLarge,        // the response body exceeds max_body_bytes
  kCanceled,        // a callback returned false, or Cancel()
};

struct Result {
  Error error = Error::kNone;
  int sys_errno = 0;    // for kConnect: ECONNREFUSED, EHOSTUNREACH, ...; 0 when unknown
  std::string message;  // short, for logs; "" on success
  bool ok() const { return error == Error::kNone; }
};

// Called once with the response's status and header fields; false abandons the response.
using OnHeaders = std::function<bool(int status, const Headers& headers)>;
// Called with each piece of the (de-chunked) body as it arrives; false abandons the response.
using OnBody = std::function<bool(const char* data, size_t size)>;

// One connection to one server ("http://host[:port]"), reused between requests when both sides
// keep it alive; a reused connection the server closed meanwhile is reopened once. Send() is
// not thread-safe (one request at a time); Cancel() may be called from any thread.
class Client {
 public:
  struct Options {
    bool keep_alive = true;
    size_t max_body_bytes = std::numeric_limits<size_t>::max();
  };
  // `base` is "http://host[:port]"; anything else makes every Send fail with kConnect.
  Client(std::string_view base, Options options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends `request` and streams the response to the callbacks (either may be empty). A
  // response to HEAD has no body.
  Result Send(const Request& request, const Timeouts& timeouts, const OnHeaders& on_headers,
              const OnBody& on_body);
  // Ends a Send in progress and every later one with kCanceled. Thread-safe.
  void Cancel();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ServerRequest {
  std::string method;
  std::string target;  // as received: path and query
  std::string path;    // target without the query
  Headers headers;
  std::string body;
};

class Connection;

// The answer to one ServerRequest: either Send() once, or Start(), Write() any number of times
// and Finish(). A response left unfinished closes the connection (the client sees a truncated
// response). Bodies of responses to HEAD are not sent. Used on the handler's thread only.
class Responder {
 public:
  void Send(int status, std::string_view content_type, std::string body, const Headers& extra = {});
  // Sends the status line and `headers` (Content-Type among them): with Content-Length
  // `length`, or chunked when absent. False when the client is gone.
  bool Start(int status, const Headers& headers, std::optional<uint64_t> length);
  // False when the client is gone or did not read for the write timeout.
  bool Write(std::string_view data);
  bool Finish();
  bool started() const { return started_; }

 private:
  friend class Connection;
  Responder(Connection* connection, bool head, bool keep_alive)
      : connection_(connection), head_(head), keep_alive_(keep_alive) {}
  Connection* const connection_;
  const bool head_;
  const bool keep_alive_;
  bool started_ = false;
  bool chunked_ = false;
  bool complete_ = false;
  bool failed_ = false;
};

using Handler = std::function<void(const ServerRequest& request, Responder& response)>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port; Server::port() tells which
  size_t max_body_bytes = size_t{1} << 20;
  // Answered 413 without calling the handler; called on the connection's thread.
  std::function<void()> on_too_large;
  absl::Duration read_timeout = absl::Seconds(60);  // to receive a whole request
  absl::Duration write_timeout = absl::Seconds(60);
  absl::Duration keep_alive_timeout = absl::Seconds(5);  // idle between requests
  size_t max_connections = 64;                           // more are closed at once
};

// Accepts on one thread and serves each connection on its own thread (its requests one after
// the other), calling `handler` there. Thread-safe.
class Server {
 public:
  // Unavailable when the address cannot be bound (in use, not local, no permission).
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options, Handler handler);
  ~Server();  // Stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const;
  // Stops accepting, closes every connection (handlers blocked in a Write return false) and
  // joins all threads. A handler waiting on something else must be released by its owner
  // first. Idempotent.
  void Stop();

 private:
  friend class Connection;
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetwes::agent::http

#endif  // FLEETWES_AGENT_HTTP_HTTP_H_
