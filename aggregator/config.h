// fleetwes-aggregator configuration: a typed struct read once from YAML (strict: unknown keys and
// out-of-range values are errors naming the key path and line), then overridden by the
// environment. The file is optional; defaults plus FLEETWES_DATABASE_URL make a working setup.
// Plain data; not synchronised.
#ifndef FLEETWES_AGGREGATOR_CONFIG_H_
#define FLEETWES_AGGREGATOR_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/wes.h"

namespace fleetwes::aggregator {

// The batched database writer.
struct WriterConfig {
  // Most frames in one transaction. Default 500; 1..100000.
  int64_t max_batch_frames = 500;
  // Longest a frame waits for its batch to fill before the batch is written. Default 50ms;
  // 0..10s (0: write whatever is queued at once).
  absl::Duration max_batch_delay = absl::Milliseconds(50);
  // Frames queued for the writer across all streams; when full, ingest stops reading (gRPC flow
  // control pushes back to agents). Default 20000; >= max_batch_frames, <= 10000000.
  int64_t queue_frames = 20000;
  // How frame rows are written: "direct" (default: look up the batch's stored keys, COPY the new
  // frames straight into `frames`) or "staged" (COPY into a temporary table, then INSERT ...
  // ON CONFLICT DO NOTHING). Both skip replayed frames; docs/benchmarks.md compares them.
  std::string frames_copy = "direct";
  // Database connections the writer writes through, each with its own thread; a node's items
  // always go through the same one (store/writer.h). Default 2; 1..16.
  int64_t connections = 2;
};

// How long rows are kept. Sample tables are partitioned by UTC day of window_end; a day's partition
// is dropped whole once the day is older than its table's retention plus one day of slack, so a
// row lives at least `*_days` and less than `*_days + 1`. Frames whose window ends before the
// frames retention are refused at ingest (reason "expired"). The events table is partitioned the
// same way by the UTC day of the event's time.
struct RetentionConfig {
  // Days to keep each table. Defaults 30 / 30 / 14 / 30; each 1..3650.
  int64_t frames_days = 30;
  int64_t model_samples_days = 30;
  int64_t device_samples_days = 14;
  int64_t events_days = 30;
  // Period of the maintenance pass (create partitions ahead, drop expired ones). Default 1h;
  // 1s..24h.
  absl::Duration check_interval = absl::Hours(1);
  // Day partitions created ahead of today. Default 2; 1..30.
  int64_t days_ahead = 2;
};

// Leaderboard events and baselines (docs/api.md, "Leaderboard"; docs/wes.md, "Baseline loss").
struct LeaderboardConfig {
  // A rank-change event needs a move of at least this many places. Default 1; 1..1000000.
  int64_t rank_event_min_delta = 1;
  // At most one rank-change event per node and leaderboard per this interval. Default 60s;
  // 0..24h (0: no limit).
  absl::Duration rank_event_interval = absl::Seconds(60);
  // Thermal-change events: a worse state is reported at once, a better one at most once per this
  // interval per node and leaderboard (docs/api.md). Default 30s; 0..24h (0: every change).
  absl::Duration thermal_event_interval = absl::Seconds(30);
  // The span of the baseline median. Default 24h; 1h..30 days.
  absl::Duration baseline_window = absl::Hours(24);
  // Fewest eligible samples in the window for a baseline. Default 30; 1..10000000.
  int64_t baseline_min_samples = 30;
  // Period of the checkpoint of rank histories and baselines to PostgreSQL (also written at a
  // clean stop). A crash loses at most this much of them. Default 5m; 10s..24h.
  absl::Duration checkpoint_interval = absl::Minutes(5);
  // Most Fleet.WatchLeaderboard streams open at once (each holds a server thread); more are
  // refused with RESOURCE_EXHAUSTED. Default 64; 1..10000.
  int64_t max_watchers = 64;
};

// Router.Pick (docs/api.md, "Router").
struct RouterConfig {
  // Period of the route table refresh: a change to a model's nodes reaches Pick within it (plus
  // the time one refresh takes). Default 500ms; 0..10s (0: a call rebuilds its model's table
  // when the nodes changed).
  absl::Duration table_refresh = absl::Milliseconds(500);
  // Threads answering Pick, each on its own gRPC completion queue, inline (no hand-off to
  // another thread). Default 1; 0..64 (0: answered on gRPC's own callback threads instead).
  int64_t threads = 1;
};

struct AggregatorConfig {
  // gRPC listen address "host:port" (Ingest, Router, Fleet, health, reflection). Port 0 picks a
  // free port (logged, and available from the server). Default "0.0.0.0:7470".
  std::string grpc_listen = "0.0.0.0:7470";
  // HTTP listen address for /metrics and /healthz. Default "0.0.0.0:7471".
  std::string http_listen = "0.0.0.0:7471";
  // libpq connection URL (database.url). Required: from the file or FLEETWES_DATABASE_URL, which
  // overrides the file.
  std::string database_url;
  WriterConfig writer;
  RetentionConfig retention;
  // A node (or node/model) is stale when its latest data is older than stale_after times the
  // node's sampling interval, and never sooner than stale_after_min. Defaults 3.0 and 10s;
  // stale_after in [1, 1000], stale_after_min in [1s, 1h].
  double stale_after = 3.0;
  absl::Duration stale_after_min = absl::Seconds(10);
  // The fleet's thermal penalty table; every WES served by this aggregator is recomputed with
  // it. Each >= 1 and non-decreasing from normal to critical. Defaults 1.0/1.25/1.75/2.0.
  ThermalPenalties thermal_penalties;
  LeaderboardConfig leaderboard;
  RouterConfig router;
  // Largest serialized frame accepted. Default 65536; 1024..4194304.
  int64_t max_frame_bytes = 65536;
  // trace|debug|info|warn|error|off. Default info.
  std::string log_level = "info";
};

// The environment variable that overrides database.url.
inline constexpr char kDatabaseUrlEnv[] = "FLEETWES_DATABASE_URL";

// Parses YAML text (an empty document gives the defaults). InvalidArgument naming the key path,
// the line and the reason for any unknown key, wrong type or out-of-range value.
absl::StatusOr<AggregatorConfig> ParseConfig(absl::string_view yaml_text);

// Loads `path` (empty: no file, defaults), applies `database_url_env` (the value of
// FLEETWES_DATABASE_URL, if set) and checks that a database URL is configured.
absl::StatusOr<AggregatorConfig> LoadConfig(const std::string& path,
                                            std::optional<std::string> database_url_env);

// A parsed "host:port" listen address. Host may be empty (all interfaces), a name, an IPv4
// address or a bracketed IPv6 address; port 0..65535.
struct ListenAddress {
  std::string host;  // without brackets; "0.0.0.0" when empty in the input
  int port = 0;
  bool ipv6 = false;
  // "host:port" with brackets around IPv6 hosts, as gRPC expects.
  std::string ToString() const;
};
absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view s);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_CONFIG_H_
