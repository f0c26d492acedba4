#include "aggregator/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <exception>
#include <pqxx/connection>
#include <utility>

#include "absl/strings/str_cat.h"
#include "aggregator/ingest/recompute_wes.h"
#include "aggregator/store/migrations.h"
#include "aggregator/store/partitions.h"
#include "aggregator/store/pg_status.h"
#include "aggregator/store/track_store.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

namespace {

WriterOptions WriterOptionsFrom(const AggregatorConfig& c) {
  WriterOptions o;
  o.max_batch_frames = static_cast<size_t>(c.writer.max_batch_frames);
  o.max_batch_delay = c.writer.max_batch_delay;
  o.queue_frames = static_cast<size_t>(c.writer.queue_frames);
  return o;
}

// One PgBatchStore (database connection) per writer connection.
std::vector<std::unique_ptr<PgBatchStore>> BatchStoresFrom(const AggregatorConfig& c,
                                                           Clock* clock) {
  std::vector<std::unique_ptr<PgBatchStore>> stores;
  for (int64_t i = 0; i < c.writer.connections; ++i) {
    stores.push_back(std::make_unique<PgBatchStore>(c.database_url, c.retention, clock,
                                                    c.writer.frames_copy == "staged"
                                                        ? PgBatchStore::Mode::kStaged
                                                        : PgBatchStore::Mode::kDirect));
  }
  return stores;
}

std::vector<BatchStore*> Pointers(const std::vector<std::unique_ptr<PgBatchStore>>& stores) {
  std::vector<BatchStore*> out;
  for (const auto& s : stores) out.push_back(s.get());
  return out;
}

StalenessPolicy PolicyFrom(const AggregatorConfig& c) {
  return StalenessPolicy{c.stale_after, c.stale_after_min};
}

FleetStateOptions FleetOptionsFrom(const AggregatorConfig& c, const StalenessPolicy& policy) {
  FleetStateOptions o;
  o.staleness = policy;
  o.rank_event_min_delta = static_cast<uint32_t>(c.leaderboard.rank_event_min_delta);
  o.rank_event_interval = c.leaderboard.rank_event_interval;
  o.thermal_event_interval = c.leaderboard.thermal_event_interval;
  o.baseline.window = c.leaderboard.baseline_window;
  o.baseline.min_samples = static_cast<uint32_t>(c.leaderboard.baseline_min_samples);
  return o;
}

}  // namespace

AggregatorServer::AggregatorServer(AggregatorConfig config, Clock* clock, ServerOptions options)
    : config_(std::move(config)),
      clock_(clock),
      options_(options),
      policy_(PolicyFrom(config_)),
      state_(FleetOptionsFrom(config_, policy_)),
      batch_stores_(BatchStoresFrom(config_, clock_)),
      reader_(config_.database_url),
      writer_(Pointers(batch_stores_), clock_, &metrics_, WriterOptionsFrom(config_)),
      events_(
          config_.database_url, config_.retention, clock_, &metrics_,
          EventHubOptions{.max_watchers = static_cast<size_t>(config_.leaderboard.max_watchers)}),
      queries_(&state_, &reader_, clock_, policy_),
      ingest_service_(&writer_, &state_, clock_, &metrics_,
                      IngestOptions{config_.max_frame_bytes, config_.thermal_penalties,
                                    absl::Hours(24 * config_.retention.frames_days)}),
      router_service_(
          &state_, clock_, policy_, &metrics_,
          RouterOptions{config_.router.table_refresh, static_cast<int>(config_.router.threads)}),
      fleet_service_(&queries_, &metrics_, &events_, clock_) {
  // Rank changes, thermal transitions and nodes going stale reach the events table and watchers.
  state_.SetEventSink(&events_);
}

AggregatorServer::~AggregatorServer() { Stop(); }

absl::Status AggregatorServer::PrepareDatabase() {
  try {
    pqxx::connection conn(config_.database_url);
    absl::StatusOr<int> applied = ApplyMigrations(conn);
    if (!applied.ok()) return applied.status();
    // Today's partitions (and the next days') exist before the first frame is written.
    absl::StatusOr<MaintenanceResult> maintained =
        MaintainPartitions(conn, config_.retention, clock_->Now());
    if (!maintained.ok()) return maintained.status();
  } catch (const std::exception& e) {
    return PgExceptionToStatus("connect", e);
  }
  absl::StatusOr<std::vector<StoredNode>> nodes = reader_.LoadNodes();
  if (!nodes.ok()) return nodes.status();
  for (StoredNode& stored : *nodes) {
    NodeState node;
    node.node_id = std::move(stored.node_id);
    node.labels = std::move(stored.labels);
    node.agent_version = std::move(stored.agent_version);
    node.boot_id = std::move(stored.boot_id);
    node.interval_s = stored.interval_s;
    node.first_seen = stored.first_seen;
    node.last_seen = stored.last_seen;
    if (stored.latest.has_value()) {
      // The penalty table may have changed since the frame was stored.
      RecomputeWes(config_.thermal_penalties, &*stored.latest);
      node.latest = std::make_shared<const v1::Frame>(*std::move(stored.latest));
    }
    state_.Restore(std::move(node));
  }
  absl::Status s = EnsurePgConnection(&checkpoint_conn_, config_.database_url);
  if (!s.ok()) return s;
  absl::StatusOr<RestoreResult> tracks = LoadCheckpoint(*checkpoint_conn_, &state_, clock_->Now());
  if (!tracks.ok()) {
    checkpoint_conn_.reset();
    return tracks.status();
  }
  metrics_.checkpoint_invalid_tracks().Increment(static_cast<double>(tracks->invalid));
  Logger("aggregator")
      ->info("fleet state rebuilt: {} nodes, {} of {} checkpointed tracks ({} malformed)",
             nodes->size(), tracks->restored, tracks->rows, tracks->invalid);
  return absl::OkStatus();
}

absl::Status AggregatorServer::Start(absl::Notification* stop) {
  auto log = Logger("aggregator");
  absl::StatusOr<ListenAddress> grpc_address = ParseListenAddress(config_.grpc_listen);
  if (!grpc_address.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("grpc_listen: ", grpc_address.status().message()));
  }
  absl::StatusOr<ListenAddress> http_address = ParseListenAddress(config_.http_listen);
  if (!http_address.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("http_listen: ", http_address.status().message()));
  }

  Backoff backoff(options_.startup_backoff);
  while (true) {
    absl::Status s = PrepareDatabase();
    if (s.ok()) break;
    metrics_.CountDbError(s);
    if (!IsTransientStoreError(s)) {
      // Not an outage: a refused migration, missing privileges. Retrying cannot help.
      log->error("database preparation failed: {}", std::string(s.message()));
      return s;
    }
    const absl::Duration delay = backoff.Next();
    log->warn("database not ready (attempt {}): {}; retrying in {}", backoff.attempts(),
              std::string(s.message()), absl::FormatDuration(delay));
    if (clock_->WaitFor(delay, stop)) {
      return absl::CancelledError("stopped while waiting for the database");
    }
  }
  log->info("database ready");
  writer_.Start();
  events_.Start();
  started_ = true;
  retention_thread_ = std::thread([this] { RunRetention(); });
  sweep_thread_ = std::thread([this] { RunSweep(); });
  checkpoint_thread_ = std::thread([this] { RunCheckpoints(); });

  if (absl::Status s = StartGrpc(); !s.ok()) return s;
  // Reflect grpc_listen ":0" and friends back with the real port.
  grpc_address->port = grpc_port_;
  log->info("gRPC listening on {}", grpc_address->ToString());

  http_ = std::make_unique<HttpServer>(&state_, &metrics_, clock_, policy_, &queries_);
  if (absl::Status s = http_->Start(*http_address); !s.ok()) return s;
  http_address->port = http_->port();
  log->info("HTTP listening on {} (/metrics, /healthz, /readyz, /api/v1/)",
            http_address->ToString());
  return absl::OkStatus();
}

absl::Status AggregatorServer::StartGrpc() {
  const ListenAddress address = *ParseListenAddress(config_.grpc_listen);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address.ToString(), grpc::InsecureServerCredentials(), &grpc_port_);
  builder.RegisterService(&ingest_service_);
  router_service_.Register(&builder);
  builder.RegisterService(&fleet_service_);
  // Frames above max_frame_bytes must reach validation (and get a Reject) rather than break
  // the stream in the transport.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::max<int64_t>(4 << 20, 2 * config_.max_frame_bytes)));
  // Keep long-lived agent streams alive through idle NATs, and tolerate agents' own pings.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  grpc_ = builder.BuildAndStart();
  if (grpc_ == nullptr || grpc_port_ == 0) {
    grpc_.reset();
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", address.ToString()));
  }
  router_service_.StartServing();
  return absl::OkStatus();
}

void AggregatorServer::RunRetention() {
  auto log = Logger("store");
  std::unique_ptr<pqxx::connection> conn;
  while (!clock_->WaitFor(config_.retention.check_interval, &retention_stop_)) {
    absl::Status s = EnsurePgConnection(&conn, config_.database_url);
    if (s.ok()) {
      absl::StatusOr<MaintenanceResult> result =
          MaintainPartitions(*conn, config_.retention, clock_->Now());
      if (result.ok()) {
        metrics_.partitions_dropped().Increment(static_cast<double>(result->dropped.size()));
        continue;
      }
      s = result.status();
      conn.reset();
    }
    metrics_.CountDbError(s);
    log->warn("partition maintenance failed: {}; retrying in {}", std::string(s.message()),
              absl::FormatDuration(config_.retention.check_interval));
  }
}

void AggregatorServer::RunCheckpoints() {
  while (!clock_->WaitFor(config_.leaderboard.checkpoint_interval, &retention_stop_)) {
    Checkpoint();
  }
}

bool AggregatorServer::Checkpoint() {
  absl::Status s = EnsurePgConnection(&checkpoint_conn_, config_.database_url);
  if (s.ok()) {
    const absl::Time start = absl::Now();
    absl::StatusOr<CheckpointResult> saved =
        SaveCheckpoint(*checkpoint_conn_, state_, clock_->Now());
    if (saved.ok()) {
      const absl::Duration took = absl::Now() - start;
      metrics_.checkpoint_last_success().Set(
          absl::ToDoubleSeconds(clock_->Now() - absl::UnixEpoch()));
      metrics_.checkpoint_duration().Set(absl::ToDoubleSeconds(took));
      metrics_.checkpoint_tracks().Set(static_cast<double>(saved->tracks));
      Logger("store")->debug("checkpoint: {} tracks, {} bytes in {}", saved->tracks, saved->bytes,
                             absl::FormatDuration(took));
      return true;
    }
    s = saved.status();
    checkpoint_conn_.reset();
  }
  metrics_.CountDbError(s);
  Logger("store")->warn("checkpoint of rank histories and baselines failed: {}",
                        std::string(s.message()));
  return false;
}

void AggregatorServer::RunSweep() {
  while (!clock_->WaitFor(options_.sweep_interval, &retention_stop_)) state_.Sweep(clock_->Now());
}

void AggregatorServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  auto log = Logger("aggregator");
  retention_stop_.Notify();
  if (retention_thread_.joinable()) retention_thread_.join();
  if (sweep_thread_.joinable()) sweep_thread_.join();
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
  // Open WatchLeaderboard streams end now rather than at the end of the grace period.
  events_.CloseWatchers();
  if (grpc_ != nullptr) {
    if (grpc::HealthCheckServiceInterface* health = grpc_->GetHealthCheckService()) {
      health->SetServingStatus(false);
    }
    grpc_->Shutdown(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(options_.shutdown_grace));
  }
  if (http_ != nullptr) http_->Stop();
  // After the streams are gone: write what is queued, complete every pending callback.
  writer_.Stop();
  if (grpc_ != nullptr) grpc_->Wait();
  router_service_.StopServing();  // after the server's Shutdown
  // Every committed frame is in the fleet state now: the last checkpoint misses none.
  if (started_) Checkpoint();
  events_.Stop();
  if (started_) log->info("stopped");
}

}  // namespace fleetwes::aggregator
