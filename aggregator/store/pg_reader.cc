#include "aggregator/store/pg_reader.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <nlohmann/json.hpp>
#include <pqxx/binarystring>
#include <pqxx/pqxx>
#include <utility>

#include "absl/strings/str_cat.h"
#include "aggregator/proto_time.h"
#include "aggregator/store/pg_status.h"
#include "aggregator/store/sql_text.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

namespace {

absl::Time FromMicros(int64_t us) { return absl::FromUnixMicros(us); }

// The time bucket of `column`: the column itself, or its date_bin of `step` (a validated,
// positive duration inlined as microseconds).
std::string Bucket(absl::string_view column, absl::Duration step) {
  if (step <= absl::ZeroDuration()) return std::string(column);
  return absl::StrCat("date_bin('", absl::ToInt64Microseconds(step), " microseconds'::interval, ",
                      column, ", TIMESTAMPTZ '1970-01-01 00:00:00+00')");
}

// $1 node, $2 start, $3 end, $4 limit[, $5 model]. One row per bucket (per sample without a
// step), the latest `limit` of them, oldest first.
std::string HistorySql(bool by_model, absl::Duration step) {
  const char* const table = by_model ? "model_samples" : "frames";
  const char* const tokens = by_model ? "wes_tokens_per_s" : "decode_tokens_per_s";
  const char* const watts = by_model ? "wes_watts" : "watts";
  return absl::StrCat(
      "SELECT (extract(epoch FROM b) * 1000000)::bigint, tps, watts, wr, wp, ts FROM (SELECT ",
      Bucket("window_end", step), " AS b, avg(", tokens, ") AS tps, avg(", watts,
      ") AS watts, avg(wes_raw) AS wr, avg(wes_penalized) AS wp, max(thermal_state) AS ts FROM ",
      table,
      " WHERE node_id = $1 AND window_end >= $2::timestamptz AND window_end <= $3::timestamptz",
      by_model ? " AND model = $5" : "", " GROUP BY b ORDER BY b DESC LIMIT $4) p ORDER BY b ASC");
}

// $1 node, $2 start, $3 end, $4 limit, $5 model.
std::string ProfileSql(absl::Duration step) {
  return absl::StrCat(
      "SELECT (extract(epoch FROM b) * 1000000)::bigint, tps, ttft, tpot, kv, queue, ts, watts, "
      "wr, wp, mem FROM (SELECT ",
      Bucket("m.window_end", step),
      " AS b, avg(m.wes_tokens_per_s) AS tps, avg(m.ttft_p95_s) AS ttft, avg(m.tpot_p95_s) AS "
      "tpot, avg(m.kv_cache_usage) AS kv, round(avg(m.requests_waiting))::bigint AS queue, "
      "max(m.thermal_state) AS ts, avg(m.wes_watts) AS watts, avg(m.wes_raw) AS wr, "
      "avg(m.wes_penalized) AS wp, COALESCE(bool_or(f.memory_pressure), false) AS mem "
      "FROM model_samples m LEFT JOIN frames f ON f.node_id = m.node_id AND f.boot_id = m.boot_id "
      "AND f.seq = m.seq AND f.window_end = m.window_end "
      "WHERE m.node_id = $1 AND m.model = $5 AND m.window_end >= $2::timestamptz "
      "AND m.window_end <= $3::timestamptz GROUP BY b ORDER BY b DESC LIMIT $4) p ORDER BY b ASC");
}

constexpr char kBusiestModel[] = R"sql(
SELECT model FROM model_samples
WHERE node_id = $1 AND window_end >= $2::timestamptz AND window_end <= $3::timestamptz
GROUP BY model ORDER BY count(*) DESC, model ASC LIMIT 1
)sql";

v1::ThermalState ThermalAt(const pqxx::field& f) {
  const int state = f.is_null() ? 0 : f.as<int>();
  return v1::ThermalState_IsValid(state) ? static_cast<v1::ThermalState>(state)
                                         : v1::THERMAL_STATE_UNSPECIFIED;
}

// A finite, non-negative value or nothing (averages of validated columns; guards the output).
std::optional<double> Value(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  const double v = f.as<double>();
  if (!std::isfinite(v) || v < 0) return std::nullopt;
  return v;
}

// The last receive time is the greater of nodes.last_seen and the latest frame's received_at: the
// writer leaves last_seen behind while the newest frame carries it (pg_batch_store.h).
constexpr char kLoadNodes[] = R"sql(
SELECT n.node_id, n.labels::text, n.agent_version, n.boot_id, COALESCE(n.interval_s, 0),
       (extract(epoch FROM n.first_seen) * 1000000)::bigint,
       (extract(epoch FROM GREATEST(n.last_seen, f.received_at)) * 1000000)::bigint,
       f.frame
FROM nodes n
LEFT JOIN LATERAL (
  SELECT frame, received_at FROM frames WHERE frames.node_id = n.node_id
  ORDER BY window_end DESC LIMIT 1
) f ON true
ORDER BY n.node_id
)sql";

}  // namespace

PgReader::PgReader(std::string url) : url_(std::move(url)) {}

PgReader::~PgReader() = default;

absl::Status PgReader::EnsureConnected() { return EnsurePgConnection(&conn_, url_); }

absl::Status PgReader::Failed(absl::string_view what, const std::exception& e) {
  absl::Status s = PgExceptionToStatus(what, e);
  if (conn_ != nullptr && !conn_->is_open()) {
    conn_.reset();
    s = absl::UnavailableError(s.message());
  }
  return s;
}

absl::StatusOr<std::vector<v1::HistoryPoint>> PgReader::History(const HistoryQuery& q) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  try {
    pqxx::read_transaction tx(*conn_);
    const std::string start = sql::TimeParam(q.start);
    const std::string end = sql::TimeParam(q.end);
    const int64_t limit = static_cast<int64_t>(q.limit);
    const std::string sql = HistorySql(!q.model.empty(), q.step);
    const pqxx::result rows = q.model.empty()
                                  ? tx.exec_params(sql, q.node_id, start, end, limit)
                                  : tx.exec_params(sql, q.node_id, start, end, limit, q.model);
    std::vector<v1::HistoryPoint> points;
    points.reserve(rows.size());
    for (const pqxx::row& row : rows) {
      v1::HistoryPoint p;
      *p.mutable_time() = ToProtoTime(FromMicros(row[0].as<int64_t>()));
      p.set_tokens_per_s(Value(row[1]).value_or(0.0));
      if (auto v = Value(row[2])) p.set_watts(*v);
      if (auto v = Value(row[3])) p.set_wes_raw(*v);
      if (auto v = Value(row[4])) p.set_wes_penalized(*v);
      p.set_thermal_state(ThermalAt(row[5]));
      points.push_back(std::move(p));
    }
    return points;
  } catch (const std::exception& e) {
    return Failed("history", e);
  }
}

absl::StatusOr<std::vector<v1::ProfilePoint>> PgReader::Profile(const ProfileQuery& q) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  try {
    pqxx::read_transaction tx(*conn_);
    const pqxx::result rows =
        tx.exec_params(ProfileSql(q.step), q.node_id, sql::TimeParam(q.start),
                       sql::TimeParam(q.end), static_cast<int64_t>(q.limit), q.model);
    std::vector<v1::ProfilePoint> points;
    points.reserve(rows.size());
    for (const pqxx::row& row : rows) {
      v1::ProfilePoint p;
      *p.mutable_time() = ToProtoTime(FromMicros(row[0].as<int64_t>()));
      p.set_tokens_per_s(Value(row[1]).value_or(0.0));
      if (auto v = Value(row[2])) p.set_ttft_p95_s(*v);
      if (auto v = Value(row[3])) p.set_tpot_p95_s(*v);
      if (auto v = Value(row[4])) p.set_kv_cache_usage(*v);
      if (auto v = Value(row[5]); v.has_value() && *v <= 4294967295.0) {
        p.set_queue(static_cast<uint32_t>(*v));
      }
      p.set_thermal_state(ThermalAt(row[6]));
      if (auto v = Value(row[7])) p.set_watts(*v);
      if (auto v = Value(row[8])) p.set_wes_raw(*v);
      if (auto v = Value(row[9])) p.set_wes_penalized(*v);
      p.set_memory_pressure(row[10].as<bool>());
      points.push_back(std::move(p));
    }
    return points;
  } catch (const std::exception& e) {
    return Failed("profile", e);
  }
}

absl::StatusOr<std::string> PgReader::BusiestModel(const std::string& node_id, absl::Time start,
                                                   absl::Time end) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  try {
    pqxx::read_transaction tx(*conn_);
    const pqxx::result rows =
        tx.exec_params(kBusiestModel, node_id, sql::TimeParam(start), sql::TimeParam(end));
    return rows.empty() ? std::string() : rows[0][0].as<std::string>();
  } catch (const std::exception& e) {
    return Failed("busiest model", e);
  }
}

absl::StatusOr<std::vector<v1::Event>> PgReader::Events(const EventQuery& q) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  absl::StatusOr<std::vector<v1::Event>> events = QueryEvents(*conn_, q);
  if (!events.ok() && conn_ != nullptr && !conn_->is_open()) {
    conn_.reset();
    return absl::UnavailableError(events.status().message());
  }
  return events;
}

absl::StatusOr<std::vector<StoredNode>> PgReader::LoadNodes() {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  auto log = Logger("store");
  try {
    pqxx::read_transaction tx(*conn_);
    std::vector<StoredNode> nodes;
    for (const pqxx::row& row : tx.exec(kLoadNodes)) {
      StoredNode n;
      n.node_id = row[0].as<std::string>();
      const nlohmann::json labels =
          nlohmann::json::parse(row[1].as<std::string>(), nullptr, /*allow_exceptions=*/false);
      if (labels.is_object()) {
        for (const auto& [k, v] : labels.items()) {
          if (v.is_string()) n.labels[k] = v.get<std::string>();
        }
      }
      n.agent_version = row[2].as<std::string>();
      n.boot_id = row[3].as<std::string>();
      n.interval_s = row[4].as<double>();
      n.first_seen = FromMicros(row[5].as<int64_t>());
      n.last_seen = FromMicros(row[6].as<int64_t>());
      if (!row[7].is_null()) {
        const pqxx::binarystring bytes(row[7]);
        v1::Frame frame;
        if (frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
          n.latest = std::move(frame);
        } else {
          log->warn("stored latest frame of node {} does not parse; skipped", n.node_id);
        }
      }
      nodes.push_back(std::move(n));
    }
    return nodes;
  } catch (const std::exception& e) {
    return Failed("load nodes", e);
  }
}

}  // namespace fleetwes::aggregator
