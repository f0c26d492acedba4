// The opt-in transparent proxy in front of an Ollama server. Clients that talk to the proxy's
// port get exactly what the engine answers: every method and path is forwarded unchanged
// (status, headers minus hop-by-hop ones, body byte for byte), streamed responses chunk by chunk
// as they arrive. For POST /api/generate and /api/chat it reads each NDJSON line only to find
// the final object (done:true) and credits its timings to an OllamaTraffic; TTFT is measured
// here, from the request's arrival to the first chunk that carries output. Prompt and output
// text is never stored.
//
// Memory stays bounded: request bodies above max_request_bytes are answered 413; between the
// upstream read (one thread per request) and the client write (the connection's thread, see
// agent/http) sits a queue of at most queue_bytes, so a slow client slows the upstream read instead
// of growing a buffer. An upstream failure before the response starts becomes a 502 with a short
// JSON error; after it started, the client's connection is closed (a truncated response, as the
// engine left it). Thread-safe.
#ifndef FLEETWES_AGENT_OLLAMA_PROXY_H_
#define FLEETWES_AGENT_OLLAMA_PROXY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/collectors/ollama.h"
#include "common/clock.h"

namespace fleetwes::agent {

namespace http {
class Server;
struct ServerRequest;
class Responder;
}  // namespace http

struct OllamaProxyOptions {
  std::string listen = "127.0.0.1:11435";  // host:port; port 0 picks a free one (see port())
  std::string upstream_url;                // the engine, e.g. "http://127.0.0.1:11434"
  size_t max_request_bytes = size_t{64} << 20;
  size_t queue_bytes = size_t{256} << 10;  // per request, between upstream and client
  absl::Duration connect_timeout = absl::Seconds(5);
  // Longest silence of the upstream within a response (a cold model load sends nothing for a
  // while) and of a client that does not read.
  absl::Duration idle_timeout = absl::Minutes(10);
};

struct OllamaProxyStats {
  uint64_t requests = 0;              // requests forwarded upstream
  uint64_t upstream_errors = 0;       // upstream_unreachable + upstream_cut
  uint64_t upstream_unreachable = 0;  // failed before the response started: answered 502
  uint64_t upstream_cut = 0;          // cut short by the upstream after the response started
  uint64_t client_aborts = 0;         // the client went away before the response ended
  uint64_t meter_errors = 0;          // generate/chat lines that were not valid objects
  uint64_t rejected_too_large = 0;    // request bodies above max_request_bytes: answered 413
  uint64_t in_flight = 0;             // requests being served now
  uint64_t request_bytes = 0;         // request body bytes forwarded upstream
  uint64_t response_bytes = 0;        // response body bytes handed to clients
  uint64_t queued_bytes = 0;          // bytes waiting for clients now
  uint64_t max_queued_bytes = 0;      // the most one request ever had waiting
};

class OllamaProxy {
 public:
  // Binds `options.listen` and serves on background threads. InvalidArgument for a malformed
  // listen address or upstream URL, Unavailable when the address cannot be bound. `clock`
  // (not owned) times requests.
  static absl::StatusOr<std::unique_ptr<OllamaProxy>> Start(OllamaProxyOptions options,
                                                            Clock* clock);
  ~OllamaProxy();  // Stop()
  OllamaProxy(const OllamaProxy&) = delete;
  OllamaProxy& operator=(const OllamaProxy&) = delete;

  // Cuts open exchanges, stops serving and joins every thread. Idempotent.
  void Stop();

  int port() const { return port_; }
  const OllamaTraffic& traffic() const { return traffic_; }
  OllamaProxyStats stats() const;

 private:
  struct Exchange;
  OllamaProxy(OllamaProxyOptions options, Clock* clock);
  void Serve(const http::ServerRequest& req, http::Responder& res);
  void Upstream(std::shared_ptr<Exchange> x);
  void ReapFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const OllamaProxyOptions options_;
  Clock* const clock_;
  std::string upstream_base_;
  std::string upstream_prefix_;
  OllamaTraffic traffic_;
  std::unique_ptr<http::Server> server_;
  int port_ = 0;

  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> upstream_unreachable_{0};
  std::atomic<uint64_t> upstream_cut_{0};
  std::atomic<uint64_t> rejected_too_large_{0};
  std::atomic<uint64_t> in_flight_{0};
  std::atomic<uint64_t> request_bytes_{0};
  std::atomic<uint64_t> response_bytes_{0};
  std::atomic<uint64_t> client_aborts_{0};
  std::atomic<uint64_t> meter_errors_{0};
  std::atomic<uint64_t> queued_bytes_{0};
  std::atomic<uint64_t> max_queued_bytes_{0};

  mutable absl::Mutex mu_;  // before any Exchange::mu
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::list<std::shared_ptr<Exchange>> active_ ABSL_GUARDED_BY(mu_);
};

// The proxies of one agent, for its /metrics. Thread-safe; a proxy that was destroyed is left
// out.
class OllamaProxyRegistry {
 public:
  struct Entry {
    std::string engine;
    OllamaProxyStats stats;
  };
  void Add(std::string engine, std::weak_ptr<const OllamaProxy> proxy);
  // Every live proxy's counters, in the order they were added.
  std::vector<Entry> Stats() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<std::string, std::weak_ptr<const OllamaProxy>>> proxies_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_OLLAMA_PROXY_H_
