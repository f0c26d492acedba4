// The agent's local HTTP surface (agent/http), for the node's own operators and a Prometheus
// that scrapes nodes directly:
//   GET /healthz  200 "ok" while the sampler produces frames, else 503 with the reason
//   GET /metrics  Prometheus text: the agent's own counters (Ollama proxies included) and the
//                 latest frame's values
//   GET /status   JSON: identity, last frame, uplink, spool, engines
// Other methods on these paths get 405. docs/agent.md lists every metric.
// The sampler loop hands each frame to PublishFrame(); requests read the last one and call the
// sources (LocalHttpSources) on the server's threads. Thread-safe.
#ifndef FLEETWES_AGENT_LOCAL_HTTP_H_
#define FLEETWES_AGENT_LOCAL_HTTP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/ollama_proxy.h"
#include "agent/sampler.h"
#include "agent/uplink.h"
#include "common/clock.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

namespace http {
class Server;
struct ServerRequest;
class Responder;
}  // namespace http

struct LocalHttpOptions {
  std::string host = "127.0.0.1";
  int port = 7472;  // 0: any free port (tests); port() tells the real one after Start()
  std::string node_id;
  std::string boot_id;
  absl::Duration interval = absl::Seconds(2);  // the sampler's; /healthz allows 3 of them
  bool spool_enabled = false;
  std::string spool_dir;
};

// Depth of the frames waiting for acknowledgement (the spool, or the in-memory queue).
struct QueueDepth {
  uint64_t frames = 0;
  std::optional<uint64_t> bytes;  // absent for the in-memory queue
  uint64_t evicted = 0;           // frames dropped unacknowledged, ever
};

// Read on every request, from the server's threads: each must be thread-safe. Unset ones are
// reported as absent.
struct LocalHttpSources {
  std::function<UplinkStats()> uplink;
  std::function<QueueDepth()> queue;
  std::function<std::vector<EngineReadCounters>()> engine_reads;
  // The configured engines with their last status (Sampler::Hello().engines()).
  std::function<std::vector<v1::EngineStatus>()> engines;
  // The counters of the engines' Ollama proxies (OllamaProxyRegistry::Stats()).
  std::function<std::vector<OllamaProxyRegistry::Entry>()> ollama_proxies;
};

class LocalHttp {
 public:
  // `clock` must outlive the server; the process start time is clock->Now() here.
  LocalHttp(LocalHttpOptions options, LocalHttpSources sources, Clock* clock);
  ~LocalHttp();  // Stop()
  LocalHttp(const LocalHttp&) = delete;
  LocalHttp& operator=(const LocalHttp&) = delete;

  // Binds host:port and serves on a background thread (and one thread per open connection).
  // Unavailable naming the address when the bind fails (in use, no such address, no permission).
  absl::Status Start();
  void Stop();
  int port() const { return port_; }

  // Records the sampler's latest frame (copied; a short critical section).
  void PublishFrame(const v1::Frame& frame);

  // The bodies the routes serve, for tests and the handlers.
  struct Health {
    bool ok = false;
    std::string message;  // "ok" or the reason
  };
  Health CheckHealth() const;
  std::string RenderMetrics() const;
  std::string RenderStatus() const;

 private:
  const LocalHttpOptions options_;
  const LocalHttpSources sources_;
  Clock* const clock_;
  const absl::Time started_;
  void Handle(const http::ServerRequest& request, http::Responder& response);

  std::unique_ptr<http::Server> server_;
  int port_ = 0;

  mutable absl::Mutex mu_;
  std::shared_ptr<const v1::Frame> last_frame_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Time> last_frame_at_ ABSL_GUARDED_BY(mu_);
  uint64_t frames_produced_ ABSL_GUARDED_BY(mu_) = 0;
};

// Splits "host:port" or "[v6]:port" (port 1..65535). InvalidArgument otherwise.
absl::Status ParseListenAddress(const std::string& address, std::string* host, int* port);

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_LOCAL_HTTP_H_
