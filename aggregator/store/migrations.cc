#include "aggregator/store/migrations.h"

#include <exception>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "aggregator/store/pg_status.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

namespace {

// Version 1: nodes, frames, model_samples, device_samples. Enum columns hold the proto enum
// numbers (fleetwes.v1); WES columns hold the aggregator's recomputed values.
constexpr absl::string_view kV1 = R"sql(
CREATE TABLE nodes (
  node_id        text PRIMARY KEY,
  labels         jsonb NOT NULL DEFAULT '{}'::jsonb,
  agent_version  text NOT NULL DEFAULT '',
  boot_id        text NOT NULL DEFAULT '',
  first_seen     timestamptz NOT NULL,
  last_seen      timestamptz NOT NULL,
  interval_s     double precision,
  hello          bytea
);

CREATE TABLE frames (
  node_id              text NOT NULL,
  boot_id              text NOT NULL,
  seq                  bigint NOT NULL,
  window_start         timestamptz NOT NULL,
  window_end           timestamptz NOT NULL,
  received_at          timestamptz NOT NULL,
  interval_s           double precision NOT NULL,
  decode_tokens_per_s  double precision NOT NULL,
  watts                double precision,
  pue                  double precision NOT NULL,
  wes_raw              double precision,
  wes_penalized        double precision,
  thermal_cost_pct     double precision,
  wes_null_reason      text,
  thermal_state        smallint NOT NULL,
  memory_pressure      boolean NOT NULL,
  swap_in_pages_per_s  double precision,
  swap_out_pages_per_s double precision,
  frame                bytea NOT NULL,
  PRIMARY KEY (node_id, boot_id, seq)
);
CREATE INDEX frames_node_id_window_end ON frames (node_id, window_end);

CREATE TABLE model_samples (
  node_id               text NOT NULL,
  boot_id               text NOT NULL,
  seq                   bigint NOT NULL,
  window_end            timestamptz NOT NULL,
  engine_id             text NOT NULL,
  engine                smallint NOT NULL,
  model                 text NOT NULL,
  decode_tokens_per_s   double precision,
  prefill_tokens_per_s  double precision,
  ttft_mean_s           double precision,
  ttft_p50_s            double precision,
  ttft_p95_s            double precision,
  ttft_count            bigint NOT NULL,
  ttft_estimate         boolean NOT NULL,
  tpot_mean_s           double precision,
  tpot_p50_s            double precision,
  tpot_p95_s            double precision,
  tpot_count            bigint NOT NULL,
  tpot_estimate         boolean NOT NULL,
  requests_running      integer,
  requests_waiting      integer,
  kv_cache_usage        double precision,
  watts_attributed      double precision,
  wes_tokens_per_s      double precision NOT NULL,
  wes_watts             double precision,
  wes_raw               double precision,
  wes_penalized         double precision,
  thermal_cost_pct      double precision,
  wes_null_reason       text,
  thermal_state         smallint NOT NULL
);
CREATE INDEX model_samples_node_id_window_end ON model_samples (node_id, window_end);
CREATE INDEX model_samples_model_window_end ON model_samples (model, window_end);

CREATE TABLE device_samples (
  node_id        text NOT NULL,
  boot_id        text NOT NULL,
  seq            bigint NOT NULL,
  window_end     timestamptz NOT NULL,
  device_id      text NOT NULL,
  kind           smallint NOT NULL,
  scope          smallint NOT NULL,
  power_w        double precision,
  energy_j       double precision,
  temperature_c  double precision,
  clock_mhz      double precision,
  clock_max_mhz  double precision,
  throttle_mask  bigint NOT NULL,
  thermal_state  smallint NOT NULL,
  power_capped   boolean NOT NULL
);
CREATE INDEX device_samples_node_id_window_end ON device_samples (node_id, window_end);
)sql";

// Version 2: frames, model_samples and device_samples become partitioned by window_end, one
// partition per UTC day named <table>_pYYYYMMDD (aggregator/store/partitions.h creates them ahead
// and drops expired ones). A partitioned table's unique key must contain the partition key, so
// frames' key becomes (node_id, boot_id, seq, window_end): a resent frame is byte-identical, so
// it still collides. Rows of version 1 are moved into day partitions covering their range.
constexpr absl::string_view kV2 = R"sql(
ALTER TABLE frames RENAME TO frames_v1;
ALTER TABLE frames_v1 RENAME CONSTRAINT frames_pkey TO frames_v1_pkey;
DROP INDEX frames_node_id_window_end;
ALTER TABLE model_samples RENAME TO model_samples_v1;
DROP INDEX model_samples_node_id_window_end;
DROP INDEX model_samples_model_window_end;
ALTER TABLE device_samples RENAME TO device_samples_v1;
DROP INDEX device_samples_node_id_window_end;

CREATE TABLE frames (LIKE frames_v1 INCLUDING DEFAULTS) PARTITION BY RANGE (window_end);
ALTER TABLE frames ADD PRIMARY KEY (node_id, boot_id, seq, window_end);
CREATE INDEX frames_node_id_window_end ON frames (node_id, window_end);
CREATE INDEX frames_window_end ON frames (window_end);

CREATE TABLE model_samples (LIKE model_samples_v1 INCLUDING DEFAULTS)
  PARTITION BY RANGE (window_end);
CREATE INDEX model_samples_node_id_window_end ON model_samples (node_id, window_end);
CREATE INDEX model_samples_model_window_end ON model_samples (model, window_end);

CREATE TABLE device_samples (LIKE device_samples_v1 INCLUDING DEFAULTS)
  PARTITION BY RANGE (window_end);
CREATE INDEX device_samples_node_id_window_end ON device_samples (node_id, window_end);

DO $$
DECLARE
  t text;
  first_day date;
  last_day date;
  d date;
BEGIN
  FOREACH t IN ARRAY ARRAY['frames', 'model_samples', 'device_samples'] LOOP
    EXECUTE format('SELECT min(window_end AT TIME ZONE ''UTC'')::date, '
                   'max(window_end AT TIME ZONE ''UTC'')::date FROM %I', t || '_v1')
      INTO first_day, last_day;
    IF first_day IS NOT NULL THEN
      d := first_day;
      WHILE d <= last_day LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       t || '_p' || to_char(d, 'YYYYMMDD'), t,
                       d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
        d := d + 1;
      END LOOP;
    END IF;
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', t, t || '_v1');
    EXECUTE format('DROP TABLE %I', t || '_v1');
  END LOOP;
END
$$;
)sql";

// Version 3: events (rank changes, thermal transitions, nodes going stale), partitioned by the
// UTC day of `time` like the sample tables. Ranks are 0 when unranked; kind and thermal states
// hold the proto enum numbers. `id` orders events of the same instant in detection order.
constexpr absl::string_view kV3 = R"sql(
CREATE TABLE events (
  id                 bigserial,
  time               timestamptz NOT NULL,
  node_id            text NOT NULL,
  model              text NOT NULL DEFAULT '',
  kind               smallint NOT NULL,
  old_rank           integer NOT NULL DEFAULT 0,
  new_rank           integer NOT NULL DEFAULT 0,
  old_thermal_state  smallint NOT NULL DEFAULT 0,
  new_thermal_state  smallint NOT NULL DEFAULT 0,
  message            text NOT NULL DEFAULT ''
) PARTITION BY RANGE (time);
CREATE INDEX events_node_id_time ON events (node_id, time);
CREATE INDEX events_time ON events (time);
)sql";

// Version 4: board_tracks, the fleet state's last checkpoint of rank histories and baselines
// (aggregator/store/track_store.h): one row per node and leaderboard ('' for the fleet), the
// track a serialized fleetwes.v1.BoardTrack. Rewritten whole by each checkpoint.
constexpr absl::string_view kV4 = R"sql(
CREATE TABLE board_tracks (
  node_id   text NOT NULL,
  board     text NOT NULL,
  track     bytea NOT NULL,
  saved_at  timestamptz NOT NULL,
  PRIMARY KEY (node_id, board)
);
)sql";

// Version 5: cheaper frame inserts, same queries served. The primary key's columns are reordered
// to (node_id, window_end, boot_id, seq): the same unique key, now also the index of a node's
// frames by time (history, the latest frame of a node at start), so frames_node_id_window_end
// goes. frames_window_end becomes a BRIN index: frames arrive in window_end order, so block
// ranges serve fleet-wide time filters at a fraction of a B-tree's insert cost
// (docs/benchmarks.md, "PostgreSQL's CPU per frame: indexes, last_seen"). The indexes of every
// existing partition are rebuilt, under the migration's lock.
constexpr absl::string_view kV5 = R"sql(
ALTER TABLE frames DROP CONSTRAINT frames_pkey;
ALTER TABLE frames ADD PRIMARY KEY (node_id, window_end, boot_id, seq);
DROP INDEX frames_node_id_window_end;
DROP INDEX frames_window_end;
CREATE INDEX frames_window_end ON frames USING brin (window_end);
)sql";

constexpr Migration kMigrations[] = {
    {1, "nodes, frames, model_samples, device_samples", kV1},
    {2, "frames, model_samples, device_samples partitioned by day", kV2},
    {3, "events partitioned by day", kV3},
    {4, "board_tracks checkpoints", kV4},
    {5, "frames keyed by (node_id, window_end, boot_id, seq), BRIN on window_end", kV5},
};

constexpr absl::string_view kCreateMigrationsTable = R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
  version     integer PRIMARY KEY,
  applied_at  timestamptz NOT NULL DEFAULT now()
)
)sql";

}  // namespace

absl::Span<const Migration> SchemaMigrations() { return kMigrations; }

absl::StatusOr<std::vector<int>> AppliedMigrations(pqxx::connection& conn) {
  try {
    pqxx::read_transaction tx(conn);
    const pqxx::row exists = tx.exec1("SELECT to_regclass('schema_migrations') IS NOT NULL");
    std::vector<int> versions;
    if (!exists[0].as<bool>()) return versions;
    for (const pqxx::row& row : tx.exec("SELECT version FROM schema_migrations ORDER BY version")) {
      versions.push_back(row[0].as<int>());
    }
    return versions;
  } catch (const std::exception& e) {
    return PgExceptionToStatus("read schema_migrations", e);
  }
}

absl::StatusOr<int> ApplyMigrations(pqxx::connection& conn,
                                    absl::Span<const Migration> migrations) {
  auto log = Logger("store");
  int applied = 0;
  int known_max = 0;
  for (const Migration& m : migrations) {
    known_max = m.version;
    try {
      pqxx::work tx(conn);
      tx.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
      tx.exec(std::string(kCreateMigrationsTable));
      const pqxx::result done =
          tx.exec_params("SELECT 1 FROM schema_migrations WHERE version = $1", m.version);
      if (!done.empty()) {
        tx.commit();
        continue;
      }
      tx.exec(std::string(m.sql));
      tx.exec_params("INSERT INTO schema_migrations (version) VALUES ($1)", m.version);
      tx.commit();
      ++applied;
      log->info("schema migration {} applied: {}", m.version, std::string(m.description));
    } catch (const std::exception& e) {
      return PgExceptionToStatus(absl::StrCat("schema migration ", m.version), e);
    }
  }
  absl::StatusOr<std::vector<int>> versions = AppliedMigrations(conn);
  if (!versions.ok()) return versions.status();
  if (!versions->empty() && versions->back() > known_max) {
    log->warn("database schema is at version {}, newer than this build's {}; continuing",
              versions->back(), known_max);
  }
  return applied;
}

}  // namespace fleetwes::aggregator
