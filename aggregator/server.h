// The fleetwes-aggregator process, wired: migrations, fleet state rebuilt from the database, the
// batched writer, the event hub, the gRPC server (Ingest, Router, Fleet, health checking,
// reflection) and the HTTP server. main() parses flags and config and runs one of these; tests run
// one in-process against a test database with ports ":0". Start/Stop from one thread; the accessors
// are thread-safe.
#ifndef FLEETWES_AGGREGATOR_SERVER_H_
#define FLEETWES_AGGREGATOR_SERVER_H_

#include <grpcpp/server.h>

#include <memory>
#include <pqxx/connection>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "aggregator/config.h"
#include "aggregator/fleet/event_hub.h"
#include "aggregator/fleet/fleet_service.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/http/http_server.h"
#include "aggregator/ingest/ingest_service.h"
#include "aggregator/metrics.h"
#include "aggregator/routing/router_service.h"
#include "aggregator/store/pg_batch_store.h"
#include "aggregator/store/pg_reader.h"
#include "aggregator/store/writer.h"
#include "common/backoff.h"
#include "common/clock.h"

namespace fleetwes::aggregator {

struct ServerOptions {
  // Between attempts to reach the database at start.
  BackoffOptions startup_backoff;
  // How long in-flight calls get to finish at Stop before they are cancelled.
  absl::Duration shutdown_grace = absl::Seconds(1);
  // Period of FleetState::Sweep (stale nodes leave the ranked indexes).
  absl::Duration sweep_interval = absl::Seconds(1);
};

class AggregatorServer {
 public:
  // `clock` must outlive the server.
  AggregatorServer(AggregatorConfig config, Clock* clock, ServerOptions options = {});
  ~AggregatorServer();  // Stop()s
  AggregatorServer(const AggregatorServer&) = delete;
  AggregatorServer& operator=(const AggregatorServer&) = delete;

  // Prepares the database (migrations, then the fleet state rebuilt from the latest rows and the
  // last checkpoint of rank histories and baselines),
  // retrying with backoff and logging each failed attempt until it succeeds or `stop` is
  // notified (then Cancelled). Then starts the writer and both servers. InvalidArgument for a
  // bad listen address, Unavailable when a port cannot be bound.
  absl::Status Start(absl::Notification* stop);
  // Stops serving (health goes NOT_SERVING, calls get shutdown_grace, streams are cancelled),
  // then flushes the writer and writes a last checkpoint. Idempotent.
  void Stop();

  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }
  FleetState& state() { return state_; }
  // Where fleet events go: stored and streamed to watchers.
  EventHub& events() { return events_; }
  AggregatorMetrics& metrics() { return metrics_; }

 private:
  absl::Status PrepareDatabase();
  absl::Status StartGrpc();
  // The retention thread: a partition maintenance pass every retention.check_interval.
  void RunRetention();
  // The sweep thread: FleetState::Sweep every options_.sweep_interval.
  void RunSweep();
  // The checkpoint thread: Checkpoint() every leaderboard.checkpoint_interval.
  void RunCheckpoints();
  // Saves rank histories and baselines (track_store.h); false (logged, counted) on failure.
  bool Checkpoint();

  const AggregatorConfig config_;
  Clock* const clock_;
  const ServerOptions options_;
  const StalenessPolicy policy_;

  AggregatorMetrics metrics_;
  FleetState state_;
  std::vector<std::unique_ptr<PgBatchStore>> batch_stores_;  // writer.connections
  PgReader reader_;
  Writer writer_;
  EventHub events_;
  FleetQueries queries_;
  IngestService ingest_service_;
  RouterService router_service_;
  FleetService fleet_service_;
  std::unique_ptr<grpc::Server> grpc_;
  std::unique_ptr<HttpServer> http_;
  int grpc_port_ = 0;
  bool started_ = false;
  absl::Notification retention_stop_;  // stops the retention and the sweep threads
  std::thread retention_thread_;
  std::thread sweep_thread_;
  std::thread checkpoint_thread_;
  // Used at start (loading the checkpoint), by the checkpoint thread, then by Stop.
  std::unique_ptr<pqxx::connection> checkpoint_conn_;
  bool stopped_ = false;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_SERVER_H_
