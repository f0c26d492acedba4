// The aggregator's HTTP endpoint (cpp-httplib): GET /metrics (Prometheus text format: the
// registry's families plus per-node gauges rendered from the fleet state at scrape time),
// GET /healthz ("ok": the process serves), GET /readyz ("ready": the fleet state is rebuilt and
// the server takes traffic), the JSON API under /api/v1/ (http/json_api.h), 404 for anything
// else; methods other than GET get 405. Start/Stop are called from one thread; requests
// are served on httplib's worker threads.
#ifndef FLEETWES_AGGREGATOR_HTTP_HTTP_SERVER_H_
#define FLEETWES_AGGREGATOR_HTTP_HTTP_SERVER_H_

#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "aggregator/config.h"
#include "aggregator/fleet/fleet_service.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/http/json_api.h"
#include "aggregator/metrics.h"
#include "common/clock.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace fleetwes::aggregator {

// The /metrics body: `registry`'s families, then fleetwes_node_wes_penalized,
// fleetwes_node_wes_raw and fleetwes_node_tokens_per_second {node} for every node with fresh
// data (a series is absent while its value is null), and fleetwes_node_stale {node}.
std::string RenderMetrics(const prometheus::Registry& registry,
                          const std::vector<NodeStatePtr>& nodes, absl::Time now,
                          const StalenessPolicy& policy);

class HttpServer {
 public:
  // Pointers must outlive the server.
  // `queries` may be null: the /api/v1/ routes then answer 404.
  HttpServer(const FleetState* state, AggregatorMetrics* metrics, Clock* clock,
             StalenessPolicy policy, const FleetQueries* queries = nullptr);
  ~HttpServer();  // Stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds `address` (port 0: any free port) and serves on a background thread.
  // Unavailable if the address cannot be bound.
  absl::Status Start(const ListenAddress& address);
  // The bound port (after Start).
  int port() const { return port_; }
  // Stops accepting and joins. Idempotent.
  void Stop();

 private:
  const FleetState* const state_;
  AggregatorMetrics* const metrics_;
  Clock* const clock_;
  const StalenessPolicy policy_;
  std::unique_ptr<JsonApi> api_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_HTTP_HTTP_SERVER_H_
