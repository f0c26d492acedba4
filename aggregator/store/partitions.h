// Day partitions of the sample tables (docs/schema.md, "Partitions and retention"). frames,
// model_samples and device_samples are partitioned by RANGE (window_end), events by RANGE (time),
// one partition per UTC
// day named <table>_pYYYYMMDD covering [day 00:00 UTC, next day 00:00 UTC). Partitions are
// created ahead of time by the maintenance pass and on demand by the writer (for replayed
// frames of earlier days), and dropped whole when their day has expired: no DELETE, no bloat.
// Functions take the caller's connection; thread-compatible.
#ifndef FLEETWES_AGGREGATOR_STORE_PARTITIONS_H_
#define FLEETWES_AGGREGATOR_STORE_PARTITIONS_H_

#include <array>
#include <cstdint>
#include <pqxx/connection>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "aggregator/config.h"

namespace fleetwes::aggregator {

inline constexpr std::array<absl::string_view, 4> kPartitionedTables = {"frames", "model_samples",
                                                                        "device_samples", "events"};

// Days `table` keeps under `retention` (0 for a table that is not partitioned).
int64_t RetentionDays(const RetentionConfig& retention, absl::string_view table);

// The UTC day of `t`.
absl::CivilDay UtcDay(absl::Time t);

// "frames_p20261124".
std::string PartitionName(absl::string_view table, absl::CivilDay day);

// The oldest day a partition of `table` may cover at `now`: partitions of earlier days are
// dropped. One day of slack beyond the retention, so a row accepted just before midnight still
// finds its partition when it is written just after.
absl::CivilDay OldestKeptDay(const RetentionConfig& retention, absl::string_view table,
                             absl::Time now);

// The earliest window_end a row of `table` may have to be written at `now` (now - days). Older
// rows are not written: their partition is expired or about to be.
absl::Time WriteCutoff(const RetentionConfig& retention, absl::string_view table, absl::Time now);

// Creates the partition of `table` for each day in [first, last] that does not exist yet, under
// a transaction-level advisory lock so concurrent aggregators do not race. Returns how many were
// created.
absl::StatusOr<int> CreateDayPartitions(pqxx::connection& conn, absl::string_view table,
                                        absl::CivilDay first, absl::CivilDay last);

struct DayPartition {
  std::string table;
  std::string name;
  absl::CivilDay day;
};

// Every day partition of the partitioned tables, by table then day. Partitions whose name does
// not follow the pattern are left out (and never dropped).
absl::StatusOr<std::vector<DayPartition>> ListDayPartitions(pqxx::connection& conn);

struct MaintenanceResult {
  int created = 0;
  std::vector<std::string> dropped;  // partition names
};

// One maintenance pass at `now`: creates today's partition and `days_ahead` more for every
// table, and drops partitions older than OldestKeptDay. A partition that cannot be dropped at once
// (a long query holds it) is left for the next pass: the drop waits at most `lock_timeout`.
absl::StatusOr<MaintenanceResult> MaintainPartitions(
    pqxx::connection& conn, const RetentionConfig& retention, absl::Time now,
    absl::Duration lock_timeout = absl::Seconds(2));

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_PARTITIONS_H_
