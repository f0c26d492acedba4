#include "aggregator/store/partitions.h"

#include <exception>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "aggregator/store/pg_status.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

namespace {

// Serialises partition DDL across aggregators ("fleetwes" + 1).
constexpr long long kPartitionLockKey = 0x666c656574776574LL;

std::string DayStart(absl::CivilDay day) {
  return absl::StrFormat("%04d-%02d-%02d 00:00:00+00", day.year(), day.month(), day.day());
}

// Parses the "YYYYMMDD" suffix of "<table>_pYYYYMMDD".
bool ParseSuffix(absl::string_view name, absl::string_view table, absl::CivilDay* day) {
  const std::string prefix = absl::StrCat(table, "_p");
  if (name.size() != prefix.size() + 8 || !absl::StartsWith(name, prefix)) return false;
  absl::string_view digits = name.substr(prefix.size());
  int value = 0;
  if (!absl::SimpleAtoi(digits, &value) || value < 0) return false;
  const int y = value / 10000;
  const int m = (value / 100) % 100;
  const int d = value % 100;
  const absl::CivilDay parsed(y, m, d);
  if (parsed.year() != y || parsed.month() != m || parsed.day() != d) return false;
  *day = parsed;
  return true;
}

}  // namespace

int64_t RetentionDays(const RetentionConfig& retention, absl::string_view table) {
  if (table == "frames") return retention.frames_days;
  if (table == "model_samples") return retention.model_samples_days;
  if (table == "device_samples") return retention.device_samples_days;
  if (table == "events") return retention.events_days;
  return 0;
}

absl::CivilDay UtcDay(absl::Time t) { return absl::ToCivilDay(t, absl::UTCTimeZone()); }

std::string PartitionName(absl::string_view table, absl::CivilDay day) {
  return absl::StrFormat("%s_p%04d%02d%02d", table, day.year(), day.month(), day.day());
}

absl::CivilDay OldestKeptDay(const RetentionConfig& retention, absl::string_view table,
                             absl::Time now) {
  return UtcDay(now) - RetentionDays(retention, table) - 1;
}

absl::Time WriteCutoff(const RetentionConfig& retention, absl::string_view table, absl::Time now) {
  return now - absl::Hours(24 * RetentionDays(retention, table));
}

absl::StatusOr<int> CreateDayPartitions(pqxx::connection& conn, absl::string_view table,
                                        absl::CivilDay first, absl::CivilDay last) {
  int created = 0;
  try {
    pqxx::work tx(conn);
    tx.exec_params("SELECT pg_advisory_xact_lock($1)", kPartitionLockKey);
    for (absl::CivilDay day = first; day <= last; ++day) {
      const std::string name = PartitionName(table, day);
      const pqxx::row exists = tx.exec_params1("SELECT to_regclass($1) IS NOT NULL", name);
      if (exists[0].as<bool>()) continue;
      tx.exec(absl::StrCat("CREATE TABLE ", tx.quote_name(name), " PARTITION OF ",
                           tx.quote_name(std::string(table)), " FOR VALUES FROM (",
                           tx.quote(DayStart(day)), ") TO (", tx.quote(DayStart(day + 1)), ")"));
      ++created;
    }
    tx.commit();
  } catch (const std::exception& e) {
    return PgExceptionToStatus(absl::StrCat("create partitions of ", table), e);
  }
  return created;
}

absl::StatusOr<std::vector<DayPartition>> ListDayPartitions(pqxx::connection& conn) {
  std::vector<DayPartition> out;
  try {
    pqxx::read_transaction tx(conn);
    for (absl::string_view table : kPartitionedTables) {
      const pqxx::result rows = tx.exec_params(
          "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
          "WHERE i.inhparent = to_regclass($1) ORDER BY c.relname",
          std::string(table));
      for (const pqxx::row& row : rows) {
        DayPartition p;
        p.table = std::string(table);
        p.name = row[0].as<std::string>();
        if (ParseSuffix(p.name, table, &p.day)) out.push_back(std::move(p));
      }
    }
  } catch (const std::exception& e) {
    return PgExceptionToStatus("list partitions", e);
  }
  return out;
}

absl::StatusOr<MaintenanceResult> MaintainPartitions(pqxx::connection& conn,
                                                     const RetentionConfig& retention,
                                                     absl::Time now, absl::Duration lock_timeout) {
  MaintenanceResult result;
  const absl::CivilDay today = UtcDay(now);
  for (absl::string_view table : kPartitionedTables) {
    absl::StatusOr<int> created =
        CreateDayPartitions(conn, table, today, today + retention.days_ahead);
    if (!created.ok()) return created.status();
    result.created += *created;
  }
  absl::StatusOr<std::vector<DayPartition>> partitions = ListDayPartitions(conn);
  if (!partitions.ok()) return partitions.status();
  auto log = Logger("store");
  for (const DayPartition& p : *partitions) {
    if (p.day >= OldestKeptDay(retention, p.table, now)) continue;
    try {
      pqxx::work tx(conn);
      tx.exec(absl::StrCat("SET LOCAL lock_timeout = ", absl::ToInt64Milliseconds(lock_timeout)));
      tx.exec(absl::StrCat("DROP TABLE IF EXISTS ", tx.quote_name(p.name)));
      tx.commit();
      result.dropped.push_back(p.name);
      log->info("retention: dropped partition {} ({} days kept)", p.name,
                RetentionDays(retention, p.table));
    } catch (const std::exception& e) {
      absl::Status s = PgExceptionToStatus(absl::StrCat("drop partition ", p.name), e);
      if (!conn.is_open()) return s;
      log->warn("retention: {}; retrying at the next pass", std::string(s.message()));
    }
  }
  return result;
}

}  // namespace fleetwes::aggregator
