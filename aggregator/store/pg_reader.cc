#include "aggregator/store/pg_reader.h"

#include <algorithm>
#include <exception>
#include <nlohmann/json.hpp>
#include <pqxx/binarystring>
#include <pqxx/pqxx>
#include <utility>

#include "aggregator/proto_time.h"
#include "aggregator/store/pg_status.h"
#include "aggregator/store/sql_text.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

namespace {

absl::Time FromMicros(int64_t us) { return absl::FromUnixMicros(us); }

constexpr char kNodeHistory[] = R"sql(
SELECT t, tokens_per_s, watts, wes_raw, wes_penalized, thermal_state FROM (
  SELECT (extract(epoch FROM window_end) * 1000000)::bigint AS t, decode_tokens_per_s AS tokens_per_s,
         watts, wes_raw, wes_penalized, thermal_state
  FROM frames
  WHERE node_id = $1 AND window_end >= $2::timestamptz AND window_end <= $3::timestamptz
  ORDER BY window_end DESC LIMIT $4
) p ORDER BY t ASC
)sql";

constexpr char kModelHistory[] = R"sql(
SELECT t, tokens_per_s, watts, wes_raw, wes_penalized, thermal_state FROM (
  SELECT (extract(epoch FROM window_end) * 1000000)::bigint AS t, wes_tokens_per_s AS tokens_per_s,
         wes_watts AS watts, wes_raw, wes_penalized, thermal_state
  FROM model_samples
  WHERE node_id = $1 AND model = $5 AND window_end >= $2::timestamptz
        AND window_end <= $3::timestamptz
  ORDER BY window_end DESC LIMIT $4
) p ORDER BY t ASC
)sql";

constexpr char kLoadNodes[] = R"sql(
SELECT n.node_id, n.labels::text, n.agent_version, n.boot_id, COALESCE(n.interval_s, 0),
       (extract(epoch FROM n.first_seen) * 1000000)::bigint,
       (extract(epoch FROM n.last_seen) * 1000000)::bigint,
       f.frame
FROM nodes n
LEFT JOIN LATERAL (
  SELECT frame FROM frames WHERE frames.node_id = n.node_id
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
    const pqxx::result rows =
        q.model.empty() ? tx.exec_params(kNodeHistory, q.node_id, start, end, limit)
                        : tx.exec_params(kModelHistory, q.node_id, start, end, limit, q.model);
    std::vector<v1::HistoryPoint> points;
    points.reserve(rows.size());
    for (const pqxx::row& row : rows) {
      v1::HistoryPoint p;
      *p.mutable_time() = ToProtoTime(FromMicros(row[0].as<int64_t>()));
      p.set_tokens_per_s(row[1].is_null() ? 0.0 : row[1].as<double>());
      if (!row[2].is_null()) p.set_watts(row[2].as<double>());
      if (!row[3].is_null()) p.set_wes_raw(row[3].as<double>());
      if (!row[4].is_null()) p.set_wes_penalized(row[4].as<double>());
      const int state = row[5].as<int>();
      p.set_thermal_state(v1::ThermalState_IsValid(state) ? static_cast<v1::ThermalState>(state)
                                                          : v1::THERMAL_STATE_UNSPECIFIED);
      points.push_back(std::move(p));
    }
    return points;
  } catch (const std::exception& e) {
    return Failed("history", e);
  }
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
