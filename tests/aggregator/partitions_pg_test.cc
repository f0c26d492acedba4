// Day partitions and retention on a real PostgreSQL: the upgrade from schema version 1, the
// maintenance pass (created ahead, expired dropped), on-demand partitions for replayed frames and
// the retention cut-off of the batch store.
#include <gtest/gtest.h>

#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "aggregator/ingest/recompute_wes.h"
#include "aggregator/store/migrations.h"
#include "aggregator/store/partitions.h"
#include "aggregator/store/pg_batch_store.h"
#include "common/clock.h"
#include "tests/aggregator/test_frames.h"
#include "tests/support/pg_test_db.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::T0;  // 2026-01-01 00:00:00 UTC

int64_t Count(pqxx::connection& c, const std::string& sql) {
  pqxx::read_transaction tx(c);
  return tx.exec1(sql)[0].as<int64_t>();
}

std::vector<std::string> Names(const std::vector<DayPartition>& partitions,
                               const std::string& table) {
  std::vector<std::string> out;
  for (const DayPartition& p : partitions) {
    if (p.table == table) out.push_back(p.name);
  }
  return out;
}

class PartitionsPgTest : public fleetwes::testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    conn_ = std::make_unique<pqxx::connection>(db().url());
  }

  static FrameRecord Record(v1::Frame f) {
    RecomputeWes(ThermalPenalties{}, &f);
    auto frame = std::make_shared<const v1::Frame>(std::move(f));
    return FrameRecord{frame, frame->SerializeAsString(), FromProtoTime(frame->window_end())};
  }

  std::unique_ptr<pqxx::connection> conn_;
};

TEST(PartitionNamesTest, NamesDaysAndCutoffs) {
  EXPECT_EQ(PartitionName("frames", absl::CivilDay(2026, 11, 4)), "frames_p20261104");
  EXPECT_EQ(UtcDay(T0() - absl::Seconds(1)), absl::CivilDay(2025, 12, 31));
  RetentionConfig r;
  r.frames_days = 30;
  r.device_samples_days = 7;
  // Today minus the retention minus one day of slack.
  EXPECT_EQ(OldestKeptDay(r, "frames", T0()), absl::CivilDay(2025, 12, 1));
  EXPECT_EQ(OldestKeptDay(r, "device_samples", T0() + absl::Hours(13)),
            absl::CivilDay(2025, 12, 24));
  EXPECT_EQ(WriteCutoff(r, "device_samples", T0()), T0() - absl::Hours(24 * 7));
}

TEST_F(PartitionsPgTest, UpgradesAVersionOneDatabaseKeepingItsRows) {
  // A database as the previous schema version left it, with rows on two days.
  absl::StatusOr<int> v1 = ApplyMigrations(*conn_, SchemaMigrations().subspan(0, 1));
  ASSERT_TRUE(v1.ok()) << v1.status();
  {
    pqxx::work tx(*conn_);
    tx.exec(
        "INSERT INTO frames (node_id, boot_id, seq, window_start, window_end, received_at, "
        "interval_s, decode_tokens_per_s, watts, pue, thermal_state, memory_pressure, frame) "
        "VALUES ('n1', 'b1', 1, '2025-12-30 23:59:58+00', '2025-12-31 00:00:00+00', now(), 2, "
        "30, 20, 1, 1, false, '\\x00'), "
        "('n1', 'b1', 2, '2026-01-01 10:00:00+00', '2026-01-01 10:00:02+00', now(), 2, 31, 20, "
        "1, 1, false, '\\x00')");
    tx.exec(
        "INSERT INTO model_samples (node_id, boot_id, seq, window_end, engine_id, engine, model, "
        "ttft_count, ttft_estimate, tpot_count, tpot_estimate, wes_tokens_per_s, thermal_state) "
        "VALUES ('n1', 'b1', 2, '2026-01-01 10:00:02+00', 'e', 2, 'm', 0, false, 0, false, 31, 1)");
    tx.exec(
        "INSERT INTO device_samples (node_id, boot_id, seq, window_end, device_id, kind, scope, "
        "throttle_mask, thermal_state, power_capped) VALUES "
        "('n1', 'b1', 1, '2025-12-31 00:00:00+00', 'gpu0', 1, 1, 0, 1, false)");
    tx.commit();
  }

  absl::StatusOr<int> upgraded = ApplyMigrations(*conn_);
  ASSERT_TRUE(upgraded.ok()) << upgraded.status();
  EXPECT_EQ(*upgraded, static_cast<int>(SchemaMigrations().size()) - 1);

  EXPECT_EQ(Count(*conn_,
                  "SELECT count(*) FROM pg_class WHERE relname = 'frames' AND "
                  "relkind = 'p'"),
            1);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM frames"), 2);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM frames_p20251231 WHERE seq = 1"), 1);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM frames_p20260101 WHERE seq = 2"), 1);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM model_samples_p20260101"), 1);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM device_samples_p20251231"), 1);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_v1'"), 0);
  EXPECT_EQ(Count(*conn_, "SELECT round(sum(decode_tokens_per_s))::bigint FROM frames"), 61);

  // The key still refuses a replay of a stored frame.
  pqxx::work tx(*conn_);
  const pqxx::result r = tx.exec(
      "INSERT INTO frames (node_id, boot_id, seq, window_start, window_end, received_at, "
      "interval_s, decode_tokens_per_s, pue, thermal_state, memory_pressure, frame) VALUES "
      "('n1', 'b1', 2, '2026-01-01 10:00:00+00', '2026-01-01 10:00:02+00', now(), 2, 31, 1, 1, "
      "false, '\\x00') ON CONFLICT (node_id, boot_id, seq, window_end) DO NOTHING RETURNING seq");
  EXPECT_EQ(r.size(), 0u);
}

TEST_F(PartitionsPgTest, MaintenanceCreatesAheadAndDropsExpiredDays) {
  ASSERT_TRUE(ApplyMigrations(*conn_).ok());
  RetentionConfig retention;
  retention.frames_days = 3;
  retention.model_samples_days = 3;
  retention.device_samples_days = 1;
  retention.days_ahead = 2;
  // Old days, as a long-running aggregator would have them; one row in the oldest.
  for (absl::string_view table : kPartitionedTables) {
    ASSERT_TRUE(CreateDayPartitions(*conn_, table, absl::CivilDay(2025, 12, 20),
                                    absl::CivilDay(2025, 12, 31))
                    .ok());
  }
  {
    pqxx::work tx(*conn_);
    tx.exec(
        "INSERT INTO frames (node_id, boot_id, seq, window_start, window_end, received_at, "
        "interval_s, decode_tokens_per_s, pue, thermal_state, memory_pressure, frame) VALUES "
        "('n1', 'b1', 1, '2025-12-20 11:59:58+00', '2025-12-20 12:00:00+00', now(), 2, 3, 1, 1, "
        "false, '\\x00'), ('n1', 'b1', 2, '2025-12-30 11:59:58+00', '2025-12-30 12:00:00+00', "
        "now(), 2, 3, 1, 1, false, '\\x00')");
    tx.commit();
  }

  const absl::Time now = T0() + absl::Hours(6);  // 2026-01-01 06:00 UTC
  absl::StatusOr<MaintenanceResult> result = MaintainPartitions(*conn_, retention, now);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->created, 3 * 4);  // today and two days ahead, four tables

  absl::StatusOr<std::vector<DayPartition>> left = ListDayPartitions(*conn_);
  ASSERT_TRUE(left.ok()) << left.status();
  // frames keep 3 days plus one of slack: 2025-12-28 onwards.
  EXPECT_EQ(Names(*left, "frames"),
            (std::vector<std::string>{"frames_p20251228", "frames_p20251229", "frames_p20251230",
                                      "frames_p20251231", "frames_p20260101", "frames_p20260102",
                                      "frames_p20260103"}));
  EXPECT_EQ(Names(*left, "device_samples"),
            (std::vector<std::string>{"device_samples_p20251230", "device_samples_p20251231",
                                      "device_samples_p20260101", "device_samples_p20260102",
                                      "device_samples_p20260103"}));
  EXPECT_EQ(result->dropped.size(), 8u + 8u + 10u);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM frames"), 1);  // the 2025-12-30 row

  // A second pass the same day has nothing to do.
  absl::StatusOr<MaintenanceResult> again = MaintainPartitions(*conn_, retention, now);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->created, 0);
  EXPECT_TRUE(again->dropped.empty());
}

TEST_F(PartitionsPgTest, BatchStoreCreatesPartitionsForReplayedDaysAndCutsExpiredChildRows) {
  ASSERT_TRUE(ApplyMigrations(*conn_).ok());
  RetentionConfig retention;
  retention.frames_days = 30;
  retention.model_samples_days = 30;
  retention.device_samples_days = 2;
  FakeClock clock(T0());
  PgBatchStore store(db().url(), retention, &clock);

  // A frame from five days ago (an agent replaying its spool) and one from now.
  std::vector<FrameRecord> records;
  records.push_back(Record(MakeFrame("n1", "b1", 1, T0() - absl::Hours(24 * 5),
                                     {.model = "m", .tokens_per_s = 30, .watts = 20})));
  records.push_back(
      Record(MakeFrame("n1", "b1", 2, T0() + absl::Minutes(1), {.model = "m", .watts = 20})));
  std::vector<const FrameRecord*> ptrs = {&records[0], &records[1]};
  absl::StatusOr<std::vector<bool>> written = store.WriteBatch({}, ptrs);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, (std::vector<bool>{true, true}));

  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM frames_p20251227"), 1);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM frames_p20260101"), 1);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM model_samples WHERE seq = 1"),
            records[0].frame->models_size());
  // Device rows are kept two days: the five-day-old frame's are not written, nor is their day's
  // partition created.
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM device_samples WHERE seq = 1"), 0);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM device_samples WHERE seq = 2"), 1);
  EXPECT_EQ(Count(*conn_,
                  "SELECT count(*) FROM pg_class WHERE relname = "
                  "'device_samples_p20251227'"),
            0);

  // A partition dropped behind the store's back is recreated, and the batch still lands.
  {
    pqxx::work tx(*conn_);
    tx.exec("DROP TABLE frames_p20260101");
    tx.commit();
  }
  records.push_back(Record(MakeFrame("n1", "b1", 3, T0() + absl::Minutes(2))));
  std::vector<const FrameRecord*> third = {&records[2]};
  absl::StatusOr<std::vector<bool>> retried = store.WriteBatch({}, third);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(*retried, std::vector<bool>{true});
}

}  // namespace
}  // namespace fleetwes::aggregator
