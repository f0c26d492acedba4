#include "aggregator/store/event_store.h"

#include <exception>
#include <pqxx/pqxx>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "aggregator/ingest/validate.h"
#include "aggregator/proto_time.h"
#include "aggregator/store/partitions.h"
#include "aggregator/store/pg_status.h"
#include "aggregator/store/sql_text.h"

namespace fleetwes::aggregator {

namespace {

bool ValidTimestamp(const google::protobuf::Timestamp& ts) {
  return ts.seconds() >= -62'135'596'800 && ts.seconds() <= 253'402'300'799 && ts.nanos() >= 0 &&
         ts.nanos() <= 999'999'999;
}

bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

constexpr char kQueryEvents[] = R"sql(
SELECT (extract(epoch FROM time) * 1000000)::bigint, node_id, model, kind, old_rank, new_rank,
       old_thermal_state, new_thermal_state, message
FROM events
WHERE time >= $1::timestamptz AND time <= $2::timestamptz
  AND ($3 = '' OR node_id = $3) AND ($4 = '' OR model = $4)
  AND ($5 = '{}' OR kind = ANY($5::smallint[]))
ORDER BY time DESC, id DESC
LIMIT $6
)sql";

}  // namespace

absl::Status ValidateEvent(const v1::Event& e) {
  if (!IsValidNodeId(e.node_id())) {
    return absl::InvalidArgumentError("node_id: must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  if (e.model().size() > kMaxNameLength || HasNul(e.model())) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: longer than ", kMaxNameLength, " bytes or contains NUL"));
  }
  if (e.kind() == v1::EVENT_KIND_UNSPECIFIED || !v1::EventKind_IsValid(e.kind())) {
    return absl::InvalidArgumentError(absl::StrCat("kind: unknown value ", e.kind()));
  }
  if (!v1::ThermalState_IsValid(e.old_thermal_state()) ||
      !v1::ThermalState_IsValid(e.new_thermal_state())) {
    return absl::InvalidArgumentError("thermal state: unknown value");
  }
  if (!e.has_time() || !ValidTimestamp(e.time())) {
    return absl::InvalidArgumentError("time: missing or not a valid timestamp");
  }
  if (e.message().size() > kMaxEventMessageLength || HasNul(e.message())) {
    return absl::InvalidArgumentError(
        absl::StrCat("message: longer than ", kMaxEventMessageLength, " bytes or contains NUL"));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> InsertEvents(pqxx::connection& conn, const std::vector<v1::Event>& events) {
  if (events.empty()) return 0;
  std::set<absl::CivilDay> days;
  for (const v1::Event& e : events) days.insert(UtcDay(FromProtoTime(e.time())));
  // Days are few (usually today's); each range is created under the partition lock if missing.
  for (absl::CivilDay day : days) {
    absl::StatusOr<int> created = CreateDayPartitions(conn, "events", day, day);
    if (!created.ok()) return created.status();
  }
  try {
    pqxx::work tx(conn);
    std::string sql =
        "INSERT INTO events (time, node_id, model, kind, old_rank, new_rank, old_thermal_state, "
        "new_thermal_state, message) VALUES ";
    bool first = true;
    for (const v1::Event& e : events) {
      absl::StrAppend(&sql, first ? "" : ", ", "(", sql::Timestamp(e.time()), ", ",
                      tx.quote(e.node_id()), ", ", tx.quote(e.model()), ", ", sql::Int(e.kind()),
                      ", ", sql::Int(e.old_rank()), ", ", sql::Int(e.new_rank()), ", ",
                      sql::Int(e.old_thermal_state()), ", ", sql::Int(e.new_thermal_state()), ", ",
                      tx.quote(e.message()), ")");
      first = false;
    }
    const pqxx::result r = tx.exec(sql);
    tx.commit();
    return static_cast<size_t>(r.affected_rows());
  } catch (const std::exception& e) {
    return PgExceptionToStatus("insert events", e);
  }
}

absl::StatusOr<std::vector<v1::Event>> QueryEvents(pqxx::connection& conn, const EventQuery& q) {
  std::vector<int> kinds;
  for (v1::EventKind k : q.kinds) kinds.push_back(static_cast<int>(k));
  const std::string kind_array = absl::StrCat("{", absl::StrJoin(kinds, ","), "}");
  try {
    pqxx::read_transaction tx(conn);
    const pqxx::result rows =
        tx.exec_params(kQueryEvents, sql::TimeParam(q.start), sql::TimeParam(q.end), q.node_id,
                       q.model, kind_array, static_cast<int64_t>(q.limit));
    std::vector<v1::Event> out;
    out.reserve(rows.size());
    for (const pqxx::row& row : rows) {
      v1::Event e;
      *e.mutable_time() = ToProtoTime(absl::FromUnixMicros(row[0].as<int64_t>()));
      e.set_node_id(row[1].as<std::string>());
      e.set_model(row[2].as<std::string>());
      const int kind = row[3].as<int>();
      e.set_kind(v1::EventKind_IsValid(kind) ? static_cast<v1::EventKind>(kind)
                                             : v1::EVENT_KIND_UNSPECIFIED);
      e.set_old_rank(static_cast<uint32_t>(std::max<int64_t>(0, row[4].as<int64_t>())));
      e.set_new_rank(static_cast<uint32_t>(std::max<int64_t>(0, row[5].as<int64_t>())));
      for (auto [col, set] : {std::pair{6, &v1::Event::set_old_thermal_state},
                              std::pair{7, &v1::Event::set_new_thermal_state}}) {
        const int state = row[col].as<int>();
        (e.*set)(v1::ThermalState_IsValid(state) ? static_cast<v1::ThermalState>(state)
                                                 : v1::THERMAL_STATE_UNSPECIFIED);
      }
      e.set_message(row[8].as<std::string>());
      out.push_back(std::move(e));
    }
    return out;
  } catch (const std::exception& e) {
    return PgExceptionToStatus("query events", e);
  }
}

}  // namespace fleetwes::aggregator
