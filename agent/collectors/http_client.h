// A small HTTP GET client for engine endpoints (agent/http underneath, plain HTTP only): one per
// engine, keeps its connection alive between requests, bounds every request by a timeout and
// every body by a size cap. Not thread-safe: one engine's reads run on one thread at a time.
#ifndef FLEETWES_AGENT_COLLECTORS_HTTP_CLIENT_H_
#define FLEETWES_AGENT_COLLECTORS_HTTP_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fleetwes::agent {

namespace http {
class Client;
}  // namespace http

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

// A time budget for a group of requests (one scrape of one engine), measured on a monotonic
// real-time clock: it bounds socket waits, never window lengths.
class RequestBudget {
 public:
  explicit RequestBudget(absl::Duration total);
  absl::Duration total() const { return total_; }
  // Time left; zero or negative once spent.
  absl::Duration Remaining() const;

 private:
  absl::Duration total_;
  int64_t start_ns_;
};

class HttpClient {
 public:
  static constexpr size_t kDefaultMaxBodyBytes = 4 << 20;

  // `url` is "http://host[:port][/prefix]" (validated by the config; a malformed or https://
  // URL makes every Get fail with InvalidArgument).
  explicit HttpClient(std::string_view url, size_t max_body_bytes = kDefaultMaxBodyBytes);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // GETs prefix + `path` and waits at most `timeout` in all (connect, send, wait, body). Any
  // HTTP status is a response. Errors carry a short message fit for an unavailable reason:
  // Unavailable ("connection refused", "cannot connect", "connection closed"),
  // DeadlineExceeded ("timed out after 1s"), ResourceExhausted ("response larger than 4 MiB").
  absl::StatusOr<HttpResponse> Get(std::string_view path, absl::Duration timeout);

 private:
  std::string base_;
  std::string prefix_;
  std::string url_error_;
  size_t max_body_bytes_;
  std::unique_ptr<http::Client> client_;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_HTTP_CLIENT_H_
