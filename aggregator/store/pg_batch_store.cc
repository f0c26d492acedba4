#include "aggregator/store/pg_batch_store.h"

#include <libpq-fe.h>

#include <algorithm>
#include <exception>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <string_view>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "aggregator/proto_time.h"
#include "aggregator/store/partitions.h"
#include "aggregator/store/pg_status.h"
#include "aggregator/store/sql_text.h"
#include "common/wes.h"

namespace fleetwes::aggregator {

namespace {

// Rows per INSERT statement (nodes) and keys per stored-keys lookup: large enough to amortise
// round trips, small enough to keep each statement's text a few megabytes at most.
constexpr size_t kChildRowsPerStatement = 1000;

using FrameKey = std::tuple<std::string, std::string, int64_t>;

// Executes "<head> VALUES <rows...> <tail>" in chunks of `per_statement` rows; returns the
// concatenated results.
std::vector<pqxx::result> ExecChunked(pqxx::work& tx, absl::string_view head,
                                      const std::vector<std::string>& rows, size_t per_statement,
                                      absl::string_view tail) {
  std::vector<pqxx::result> results;
  for (size_t begin = 0; begin < rows.size(); begin += per_statement) {
    const size_t end = std::min(rows.size(), begin + per_statement);
    std::string statement = absl::StrCat(head, " VALUES ");
    for (size_t i = begin; i < end; ++i) {
      if (i != begin) statement += ",";
      statement += rows[i];
    }
    absl::StrAppend(&statement, " ", tail);
    results.push_back(tx.exec(statement));
  }
  return results;
}

std::string NodeRow(pqxx::work& tx, const NodeRecord& n) {
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : n.labels) labels[k] = v;
  return absl::StrCat(
      "(", tx.quote(n.node_id), ",", tx.quote(labels.dump()), "::jsonb,", tx.quote(n.agent_version),
      ",", tx.quote(n.boot_id), ",", sql::Time(n.seen_at), ",", sql::Time(n.seen_at), ",",
      n.interval_s > 0 ? sql::Double(n.interval_s) : "NULL", ",",
      tx.quote_raw(reinterpret_cast<const unsigned char*>(n.hello.data()), n.hello.size()), ")");
}

constexpr absl::string_view kInsertNodes =
    "INSERT INTO nodes (node_id, labels, agent_version, boot_id, first_seen, last_seen, "
    "interval_s, hello)";
constexpr absl::string_view kUpsertNodesTail =
    "ON CONFLICT (node_id) DO UPDATE SET labels = EXCLUDED.labels, "
    "agent_version = EXCLUDED.agent_version, boot_id = EXCLUDED.boot_id, "
    "last_seen = GREATEST(nodes.last_seen, EXCLUDED.last_seen), "
    "interval_s = COALESCE(EXCLUDED.interval_s, nodes.interval_s), hello = EXCLUDED.hello";
constexpr absl::string_view kTouchNodes = "INSERT INTO nodes (node_id, first_seen, last_seen)";
constexpr absl::string_view kTouchNodesTail =
    "ON CONFLICT (node_id) DO UPDATE SET last_seen = GREATEST(nodes.last_seen, "
    "EXCLUDED.last_seen)";
// Column lists in the order the *Binary builders write them.
const std::vector<std::string>& FrameColumns() {
  static const auto* const columns = new std::vector<std::string>{"node_id",
                                                                  "boot_id",
                                                                  "seq",
                                                                  "window_start",
                                                                  "window_end",
                                                                  "received_at",
                                                                  "interval_s",
                                                                  "decode_tokens_per_s",
                                                                  "watts",
                                                                  "pue",
                                                                  "wes_raw",
                                                                  "wes_penalized",
                                                                  "thermal_cost_pct",
                                                                  "wes_null_reason",
                                                                  "thermal_state",
                                                                  "memory_pressure",
                                                                  "swap_in_pages_per_s",
                                                                  "swap_out_pages_per_s",
                                                                  "frame"};
  return *columns;
}
const std::vector<std::string>& ModelColumns() {
  static const auto* const columns = new std::vector<std::string>{"node_id",
                                                                  "boot_id",
                                                                  "seq",
                                                                  "window_end",
                                                                  "engine_id",
                                                                  "engine",
                                                                  "model",
                                                                  "decode_tokens_per_s",
                                                                  "prefill_tokens_per_s",
                                                                  "ttft_mean_s",
                                                                  "ttft_p50_s",
                                                                  "ttft_p95_s",
                                                                  "ttft_count",
                                                                  "ttft_estimate",
                                                                  "tpot_mean_s",
                                                                  "tpot_p50_s",
                                                                  "tpot_p95_s",
                                                                  "tpot_count",
                                                                  "tpot_estimate",
                                                                  "requests_running",
                                                                  "requests_waiting",
                                                                  "kv_cache_usage",
                                                                  "watts_attributed",
                                                                  "wes_tokens_per_s",
                                                                  "wes_watts",
                                                                  "wes_raw",
                                                                  "wes_penalized",
                                                                  "thermal_cost_pct",
                                                                  "wes_null_reason",
                                                                  "thermal_state"};
  return *columns;
}
const std::vector<std::string>& DeviceColumns() {
  static const auto* const columns = new std::vector<std::string>{
      "node_id",   "boot_id",       "seq",           "window_end",    "device_id",
      "kind",      "scope",         "power_w",       "energy_j",      "temperature_c",
      "clock_mhz", "clock_max_mhz", "throttle_mask", "thermal_state", "power_capped"};
  return *columns;
}

// Per connection: a temporary table shaped like frames that COPY fills and INSERT ... SELECT
// drains (COPY itself cannot skip duplicates). Emptied at every commit.
constexpr absl::string_view kCreateStage =
    "CREATE TEMPORARY TABLE IF NOT EXISTS fleetwes_stage_frames "
    "(LIKE frames INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";
constexpr absl::string_view kDrainStage =
    "INSERT INTO frames SELECT * FROM fleetwes_stage_frames "
    "ON CONFLICT (node_id, boot_id, seq, window_end) DO NOTHING RETURNING node_id, boot_id, seq";

// The keys among frames[offered[begin..end)] already in `frames`: (node_id, boot_id, seq) rows.
// The window bounds of those frames let PostgreSQL look only at the partitions of their days.
std::string StoredKeysQuery(pqxx::work& tx, absl::Span<const FrameRecord* const> frames,
                            const std::vector<size_t>& offered, size_t begin, size_t end_index) {
  absl::Time lo = absl::InfiniteFuture();
  absl::Time hi = absl::InfinitePast();
  std::string q = "SELECT f.node_id, f.boot_id, f.seq FROM frames f JOIN (VALUES ";
  for (size_t k = begin; k < end_index; ++k) {
    const v1::Frame& f = *frames[offered[k]]->frame;
    const absl::Time end = FromProtoTime(f.window_end());
    lo = std::min(lo, end);
    hi = std::max(hi, end);
    absl::StrAppend(&q, k == begin ? "(" : ",(", tx.quote(f.node_id()), ",", tx.quote(f.boot_id()),
                    ",", static_cast<int64_t>(f.seq()), "::bigint,", sql::Time(end), ")");
  }
  absl::StrAppend(&q,
                  ") AS k (node_id, boot_id, seq, window_end) "
                  "USING (node_id, boot_id, seq, window_end) WHERE f.window_end BETWEEN ",
                  sql::Time(lo), " AND ", sql::Time(hi));
  return q;
}

// libpqxx 6 writes COPY data as text only and keeps the connection's PGconn private. An explicit
// template instantiation may name a private member: Expose<> hands out the pointer to
// connection_base::m_conn through the friend RawConnMember(), for PQputCopyData below.
struct RawConnTag {
  using type = pqxx::internal::pq::PGconn* pqxx::connection_base::*;
};
template <typename Tag, typename Tag::type kMember>
struct Expose {
  friend typename Tag::type RawConnMember(Tag) { return kMember; }
};
RawConnTag::type RawConnMember(RawConnTag);
template struct Expose<RawConnTag, &pqxx::connection_base::m_conn>;

// Throws what libpqxx throws for a failed statement with this SQLSTATE (pg_status.h maps it).
[[noreturn]] void ThrowCopyError(PGconn* pg, const std::string& message, const std::string& state,
                                 const std::string& query) {
  if (PQstatus(pg) == CONNECTION_BAD) throw pqxx::broken_connection(message);
  if (state == "23505") throw pqxx::unique_violation(message, query, state.c_str());
  if (absl::StartsWith(state, "23")) {
    throw pqxx::integrity_constraint_violation(message, query, state.c_str());
  }
  if (absl::StartsWith(state, "22")) throw pqxx::data_exception(message, query, state.c_str());
  throw pqxx::sql_error(message, query, state.empty() ? nullptr : state.c_str());
}

// COPY `data` (sql::BinaryCopy) into `table` (`columns`) within `tx`.
void CopyBinary(pqxx::work& tx, pqxx::connection& conn, const std::string& table,
                const std::vector<std::string>& columns, const std::string& data) {
  const std::string query = absl::StrCat("COPY ", table, " (", absl::StrJoin(columns, ","),
                                         ") FROM STDIN (FORMAT binary)");
  tx.exec(query);  // the server now waits for COPY data
  PGconn* const pg = conn.*RawConnMember(RawConnTag{});
  // One CopyData message per MiB keeps the server's message buffer small.
  constexpr size_t kChunk = 1 << 20;
  for (size_t at = 0; at < data.size(); at += kChunk) {
    const size_t n = std::min(kChunk, data.size() - at);
    if (PQputCopyData(pg, data.data() + at, static_cast<int>(n)) != 1) {
      throw pqxx::broken_connection(PQerrorMessage(pg));
    }
  }
  if (PQputCopyEnd(pg, nullptr) != 1) throw pqxx::broken_connection(PQerrorMessage(pg));
  std::string message;
  std::string state;
  while (PGresult* r = PQgetResult(pg)) {
    if (PQresultStatus(r) != PGRES_COMMAND_OK && message.empty()) {
      message = PQresultErrorMessage(r);
      const char* code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      state = code != nullptr ? code : "";
      if (message.empty()) message = "COPY failed";
    }
    PQclear(r);
  }
  if (message.empty() && PQstatus(pg) == CONNECTION_BAD) message = PQerrorMessage(pg);
  if (!message.empty()) ThrowCopyError(pg, message, state, query);
}

// The WES null reason column: NULL when the WES has a value.
sql::BinaryCopy& NullReason(sql::BinaryCopy& out, const v1::Wes& w) {
  if (w.has_raw()) return out.Null();
  const std::string_view reason = WesNullReasonName(w.null_reason());
  return out.Text(absl::string_view(reason.data(), reason.size()));
}

void FrameBinary(sql::BinaryCopy& out, const FrameRecord& r) {
  const v1::Frame& f = *r.frame;
  const v1::Wes& w = f.node_wes();
  const v1::SystemSample& s = f.system();
  out.Row(19)
      .Text(f.node_id())
      .Text(f.boot_id())
      .Int64(static_cast<int64_t>(f.seq()))
      .Timestamp(f.window_start())
      .Timestamp(f.window_end())
      .Time(r.received_at)
      .Double(f.interval_s())
      .Double(w.tokens_per_s())
      .OptionalDouble(w.has_watts(), w.watts())
      .Double(w.pue())
      .OptionalDouble(w.has_raw(), w.raw())
      .OptionalDouble(w.has_penalized(), w.penalized())
      .OptionalDouble(w.has_thermal_cost_pct(), w.thermal_cost_pct());
  NullReason(out, w)
      .Int16(f.thermal_state())
      .Bool(s.memory_pressure())
      .OptionalDouble(s.has_swap_in_pages_per_s(), s.swap_in_pages_per_s())
      .OptionalDouble(s.has_swap_out_pages_per_s(), s.swap_out_pages_per_s())
      .Bytes(r.serialized);
}

void BinaryLatency(sql::BinaryCopy& out, const v1::LatencySummary& l) {
  out.OptionalDouble(l.has_mean_s(), l.mean_s())
      .OptionalDouble(l.has_p50_s(), l.p50_s())
      .OptionalDouble(l.has_p95_s(), l.p95_s())
      .Int64(static_cast<int64_t>(l.count()))
      .Bool(l.estimate());
}

void BinaryChildKey(sql::BinaryCopy& out, const v1::Frame& f, int16_t fields) {
  out.Row(fields)
      .Text(f.node_id())
      .Text(f.boot_id())
      .Int64(static_cast<int64_t>(f.seq()))
      .Timestamp(f.window_end());
}

void ModelBinary(sql::BinaryCopy& out, const v1::Frame& f, const v1::ModelSample& m) {
  const v1::Wes& w = m.wes();
  BinaryChildKey(out, f, 30);
  out.Text(m.engine_id())
      .Int16(m.engine())
      .Text(m.model())
      .OptionalDouble(m.has_decode_tokens_per_s(), m.decode_tokens_per_s())
      .OptionalDouble(m.has_prefill_tokens_per_s(), m.prefill_tokens_per_s());
  BinaryLatency(out, m.ttft());
  BinaryLatency(out, m.tpot());
  out.OptionalInt32(m.has_requests_running(), m.requests_running())
      .OptionalInt32(m.has_requests_waiting(), m.requests_waiting())
      .OptionalDouble(m.has_kv_cache_usage(), m.kv_cache_usage())
      .OptionalDouble(m.has_watts_attributed(), m.watts_attributed())
      .Double(w.tokens_per_s())
      .OptionalDouble(w.has_watts(), w.watts())
      .OptionalDouble(w.has_raw(), w.raw())
      .OptionalDouble(w.has_penalized(), w.penalized())
      .OptionalDouble(w.has_thermal_cost_pct(), w.thermal_cost_pct());
  NullReason(out, w).Int16(w.thermal_state());
}

void DeviceBinary(sql::BinaryCopy& out, const v1::Frame& f, const v1::Device& d) {
  BinaryChildKey(out, f, 15);
  out.Text(d.id())
      .Int16(d.kind())
      .Int16(d.power_scope())
      .OptionalDouble(d.has_power_w(), d.power_w())
      .OptionalDouble(d.has_energy_j(), d.energy_j())
      .OptionalDouble(d.has_temperature_c(), d.temperature_c())
      .OptionalDouble(d.has_clock_mhz(), d.clock_mhz())
      .OptionalDouble(d.has_clock_max_mhz(), d.clock_max_mhz())
      .Int64(static_cast<int64_t>(d.throttle_mask()))
      .Int16(d.thermal_state())
      .Bool(d.power_capped());
}

// The rows of one COPY in binary format.
class CopyRows {
 public:
  void AddFrame(const FrameRecord& r) { FrameBinary(binary_, r); }
  void AddModel(const v1::Frame& f, const v1::ModelSample& m) { ModelBinary(binary_, f, m); }
  void AddDevice(const v1::Frame& f, const v1::Device& d) { DeviceBinary(binary_, f, d); }
  // OK, or why a value cannot be written (a value out of its column's range).
  absl::Status status() const { return binary_.status(); }

  // COPYs the rows into `table` within `tx` (nothing when there are none).
  void Copy(pqxx::work& tx, pqxx::connection& conn, const std::string& table,
            const std::vector<std::string>& columns) {
    if (binary_.rows() > 0) CopyBinary(tx, conn, table, columns, binary_.Finish());
  }

 private:
  sql::BinaryCopy binary_;
};

}  // namespace

PgBatchStore::PgBatchStore(std::string url, RetentionConfig retention, Clock* clock, Mode mode)
    : url_(std::move(url)), retention_(retention), clock_(clock), mode_(mode) {}

PgBatchStore::~PgBatchStore() = default;

absl::Status PgBatchStore::EnsureConnected() { return EnsurePgConnection(&conn_, url_); }

absl::Status PgBatchStore::EnsurePartitions(absl::string_view table,
                                            const std::set<absl::CivilDay>& days) {
  for (absl::CivilDay day : days) {
    std::pair<std::string, absl::CivilDay> key{std::string(table), day};
    if (known_partitions_.count(key) != 0) continue;
    absl::StatusOr<int> created = CreateDayPartitions(*conn_, table, day, day);
    if (!created.ok()) return created.status();
    known_partitions_.insert(std::move(key));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<bool>> PgBatchStore::WriteBatch(
    absl::Span<const NodeRecord> nodes, absl::Span<const FrameRecord* const> frames) {
  absl::StatusOr<std::vector<bool>> result = WriteOnce(nodes, frames, mode_);
  // A day partition this store believed in is gone (dropped by hand, or by another aggregator's
  // retention with a different setting): the cache was cleared, so one more try recreates it.
  if (!result.ok() && absl::StrContains(result.status().message(), "no partition of relation")) {
    result = WriteOnce(nodes, frames, mode_);
  }
  // Another writer stored one of these frames between the check and the COPY: the staged path
  // skips it.
  if (!result.ok() && result.status().code() == absl::StatusCode::kAlreadyExists) {
    result = WriteOnce(nodes, frames, Mode::kStaged);
  }
  return result;
}

absl::StatusOr<std::vector<bool>> PgBatchStore::WriteOnce(
    absl::Span<const NodeRecord> nodes, absl::Span<const FrameRecord* const> frames, Mode mode) {
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  std::vector<bool> inserted(frames.size(), false);

  // Which rows go to which day partitions; child rows past their table's retention are dropped.
  const absl::Time now = clock_ != nullptr ? clock_->Now() : absl::InfiniteFuture();
  const absl::Time model_cutoff =
      clock_ != nullptr ? WriteCutoff(retention_, "model_samples", now) : absl::InfinitePast();
  const absl::Time device_cutoff =
      clock_ != nullptr ? WriteCutoff(retention_, "device_samples", now) : absl::InfinitePast();
  std::set<absl::CivilDay> frame_days;
  std::set<absl::CivilDay> model_days;
  std::set<absl::CivilDay> device_days;
  for (const FrameRecord* r : frames) {
    const absl::Time end = FromProtoTime(r->frame->window_end());
    const absl::CivilDay day = UtcDay(end);
    frame_days.insert(day);
    if (r->frame->models_size() > 0 && end >= model_cutoff) model_days.insert(day);
    if (r->frame->devices_size() > 0 && end >= device_cutoff) device_days.insert(day);
  }
  if (absl::Status s = EnsurePartitions("frames", frame_days); !s.ok()) return s;
  if (absl::Status s = EnsurePartitions("model_samples", model_days); !s.ok()) return s;
  if (absl::Status s = EnsurePartitions("device_samples", device_days); !s.ok()) return s;

  try {
    if (mode == Mode::kStaged && stage_backend_pid_ != conn_->backendpid()) {
      pqxx::nontransaction ddl(*conn_);
      ddl.exec(std::string(kCreateStage));
      stage_backend_pid_ = conn_->backendpid();
    }
    pqxx::work tx(*conn_);
    std::vector<std::pair<absl::string_view, absl::Time>> touched;  // recorded after the commit

    // Nodes announced in this batch; the last Hello of a node wins (one row per statement).
    if (!nodes.empty()) {
      absl::flat_hash_map<absl::string_view, size_t> last;
      for (size_t i = 0; i < nodes.size(); ++i) last[nodes[i].node_id] = i;
      std::vector<std::string> rows;
      for (size_t i = 0; i < nodes.size(); ++i) {
        if (last[nodes[i].node_id] == i) rows.push_back(NodeRow(tx, nodes[i]));
      }
      ExecChunked(tx, kInsertNodes, rows, kChildRowsPerStatement, kUpsertNodesTail);
    }

    if (!frames.empty()) {
      // Frames: the first occurrence of each key in the batch is offered to the database.
      std::map<FrameKey, size_t> first;
      std::vector<size_t> offered;
      for (size_t i = 0; i < frames.size(); ++i) {
        const v1::Frame& f = *frames[i]->frame;
        FrameKey key{f.node_id(), f.boot_id(), static_cast<int64_t>(f.seq())};
        if (!first.emplace(std::move(key), i).second) continue;
        offered.push_back(i);
      }
      CopyRows frame_rows;
      if (mode == Mode::kStaged) {
        for (size_t i : offered) frame_rows.AddFrame(*frames[i]);
        if (absl::Status s = frame_rows.status(); !s.ok()) return s;
        frame_rows.Copy(tx, *conn_, "fleetwes_stage_frames", FrameColumns());
        for (const pqxx::row& row : tx.exec(std::string(kDrainStage))) {
          auto it = first.find(
              FrameKey{row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<int64_t>()});
          if (it != first.end()) inserted[it->second] = true;
        }
      } else {
        // Which keys are stored already (replays), among the frames that may be; the others are
        // COPYed straight into frames.
        std::vector<size_t> lookup;
        for (size_t i : offered) {
          const v1::Frame& f = *frames[i]->frame;
          auto it = stored_seq_.find(f.node_id());
          if (it == stored_seq_.end() || it->second.boot_id != f.boot_id() ||
              static_cast<int64_t>(f.seq()) <= it->second.seq) {
            lookup.push_back(i);
          }
        }
        for (size_t begin = 0; begin < lookup.size(); begin += kChildRowsPerStatement) {
          const size_t end = std::min(lookup.size(), begin + kChildRowsPerStatement);
          for (const pqxx::row& row : tx.exec(StoredKeysQuery(tx, frames, lookup, begin, end))) {
            first.erase(
                FrameKey{row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<int64_t>()});
          }
        }
        for (size_t i : offered) {
          const v1::Frame& f = *frames[i]->frame;
          if (!first.contains(FrameKey{f.node_id(), f.boot_id(), static_cast<int64_t>(f.seq())})) {
            continue;
          }
          inserted[i] = true;
          frame_rows.AddFrame(*frames[i]);
        }
        if (absl::Status s = frame_rows.status(); !s.ok()) return s;
        frame_rows.Copy(tx, *conn_, "frames", FrameColumns());
      }

      // Model and device rows of the frames inserted now (never for duplicates).
      CopyRows model_rows;
      CopyRows device_rows;
      for (size_t i = 0; i < frames.size(); ++i) {
        if (!inserted[i]) continue;
        const v1::Frame& f = *frames[i]->frame;
        const absl::Time end = FromProtoTime(f.window_end());
        if (end >= model_cutoff) {
          for (const v1::ModelSample& m : f.models()) model_rows.AddModel(f, m);
        }
        if (end >= device_cutoff) {
          for (const v1::Device& d : f.devices()) device_rows.AddDevice(f, d);
        }
      }
      if (absl::Status s = model_rows.status(); !s.ok()) return s;
      if (absl::Status s = device_rows.status(); !s.ok()) return s;
      model_rows.Copy(tx, *conn_, "model_samples", ModelColumns());
      device_rows.Copy(tx, *conn_, "device_samples", DeviceColumns());

      // nodes.last_seen: updating the row of every node on every frame cost about a quarter of
      // the database's time per frame. A node's last receive time is the greater of last_seen
      // and the received_at of its newest frame, so last_seen is written only when the batch's
      // newest inserted frame of the node does not carry the batch's latest receive time (first
      // frame through this store, a replay, a duplicate), or kLastSeenStep after the last write.
      struct Seen {
        absl::Time received = absl::InfinitePast();         // latest receive time in the batch
        absl::Time newest_end = absl::InfinitePast();       // latest window_end inserted now
        absl::Time newest_received = absl::InfinitePast();  // its receive time (ties: earliest)
      };
      absl::flat_hash_map<absl::string_view, Seen> seen;
      for (size_t i = 0; i < frames.size(); ++i) {
        const FrameRecord& r = *frames[i];
        Seen& node = seen[r.frame->node_id()];
        node.received = std::max(node.received, r.received_at);
        if (!inserted[i]) continue;
        const absl::Time end = FromProtoTime(r.frame->window_end());
        if (end > node.newest_end) {
          node.newest_end = end;
          node.newest_received = r.received_at;
        } else if (end == node.newest_end) {
          node.newest_received = std::min(node.newest_received, r.received_at);
        }
      }
      std::vector<std::string> touch_rows;
      for (const auto& [node_id, node] : seen) {
        auto stored = stored_seq_.find(node_id);
        const bool newest_carries_it = stored != stored_seq_.end() &&
                                       node.newest_end > stored->second.newest_end &&
                                       node.newest_received >= node.received;
        auto written = last_seen_written_.find(node_id);
        const bool step_due =
            written == last_seen_written_.end() || node.received >= written->second + kLastSeenStep;
        if (newest_carries_it && !step_due) continue;
        const absl::Time t = node.received;
        touch_rows.push_back(absl::StrCat("(", tx.quote(std::string(node_id)), ",", sql::Time(t),
                                          ",", sql::Time(t), ")"));
        touched.emplace_back(node_id, t);
      }
      ExecChunked(tx, kTouchNodes, touch_rows, kChildRowsPerStatement, kTouchNodesTail);
    }
    tx.commit();
    for (const auto& [node_id, t] : touched) {
      absl::Time& written = last_seen_written_[node_id];
      written = std::max(written, t);
    }
    // Every frame of the batch is stored now (inserted or found).
    for (const FrameRecord* r : frames) {
      const v1::Frame& f = *r->frame;
      StoredSeq& stored = stored_seq_[f.node_id()];
      stored.newest_end = std::max(stored.newest_end, FromProtoTime(f.window_end()));
      if (stored.boot_id != f.boot_id()) {
        stored.boot_id = f.boot_id();
        stored.seq = static_cast<int64_t>(f.seq());
      } else {
        stored.seq = std::max(stored.seq, static_cast<int64_t>(f.seq()));
      }
    }
  } catch (const std::exception& e) {
    absl::Status s = PgExceptionToStatus("write batch", e);
    // A partition may have been dropped behind this store's back: check again next time.
    known_partitions_.clear();
    if (conn_ != nullptr && !conn_->is_open()) {
      conn_.reset();
      if (s.code() != absl::StatusCode::kUnknown) {
        s = absl::UnavailableError(s.message());
      }
    }
    return s;
  }
  return inserted;
}

}  // namespace fleetwes::aggregator
