// BatchStore on PostgreSQL with libpqxx, one transaction per batch: the frames not stored yet are
// COPYed into `frames` (Mode), then the model and device rows of the new frames only are COPYed
// straight into their tables (binary COPY through libpq; docs/benchmarks.md compares it with text
// COPY through libpqxx); node upserts are multi-row INSERTs. nodes.last_seen is written for a
// frame only when the node's newest stored frame (by window_end) would not carry its received
// time (the node's first frame through this store, a replay, a duplicate), and otherwise in steps
// of kLastSeenStep: the greater of nodes.last_seen and the received_at of the node's newest frame
// is its last receive time (PgReader::LoadNodes). The sample tables are partitioned by day
// (store/partitions.h): before a batch, the partitions of the days it touches are created when this
// store has not seen them yet; model and device rows older than their table's retention are not
// written (frames that old are refused at ingest). Owns one connection, opened lazily and reopened
// after a connection error. Thread-compatible: one caller at a time (the writer thread).
#ifndef FLEETWES_AGGREGATOR_STORE_PG_BATCH_STORE_H_
#define FLEETWES_AGGREGATOR_STORE_PG_BATCH_STORE_H_

#include <memory>
#include <pqxx/connection>
#include <set>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "aggregator/config.h"
#include "aggregator/store/batch_store.h"
#include "common/clock.h"

namespace fleetwes::aggregator {

class PgBatchStore : public BatchStore {
 public:
  // nodes.last_seen alone trails the latest frame received by less than this (a Hello always
  // writes it); with the received_at of the node's newest frame it is exact.
  static constexpr absl::Duration kLastSeenStep = absl::Seconds(60);

  // How frame rows reach `frames`.
  enum class Mode {
    // COPY the frames straight into `frames`. Only the frames that may be stored already are
    // looked up first (SELECT of their keys): those of a node whose boot this store has not
    // written yet, or with a seq not above the highest this store committed or found for that
    // boot (replays). The others, a node's next frames in order, are not looked up: the primary
    // key refuses any that another writer stored after all, and a unique violation retries the
    // batch kStaged.
    kDirect,
    // COPY into a temporary staging table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING.
    kStaged,
  };

  // `clock` (may be null: no retention cut-off) must outlive the store.
  explicit PgBatchStore(std::string url, RetentionConfig retention = {}, Clock* clock = nullptr,
                        Mode mode = Mode::kDirect);
  ~PgBatchStore() override;

  absl::StatusOr<std::vector<bool>> WriteBatch(
      absl::Span<const NodeRecord> nodes, absl::Span<const FrameRecord* const> frames) override;

 private:
  absl::Status EnsureConnected();
  absl::StatusOr<std::vector<bool>> WriteOnce(absl::Span<const NodeRecord> nodes,
                                              absl::Span<const FrameRecord* const> frames,
                                              Mode mode);
  // Creates the missing day partitions of `table` for `days` (cached once seen).
  absl::Status EnsurePartitions(absl::string_view table, const std::set<absl::CivilDay>& days);

  std::string url_;
  const RetentionConfig retention_;
  Clock* const clock_;
  const Mode mode_;
  // (table, day) partitions known to exist; cleared after a failed batch.
  std::set<std::pair<std::string, absl::CivilDay>> known_partitions_;
  // nodes.last_seen as this store last committed it, per node: it is written again at the latest
  // once a frame was received kLastSeenStep later.
  absl::flat_hash_map<std::string, absl::Time> last_seen_written_;
  // Per node: the boot and the highest seq of it this store committed or found stored (kDirect
  // looks up only frames not above it). One entry per node: a new boot replaces it. newest_end:
  // the latest window_end of the node's frames (any boot) this store committed or found stored;
  // a frame inserted after it with the batch's latest received time needs no last_seen write.
  struct StoredSeq {
    std::string boot_id;
    int64_t seq = 0;
    absl::Time newest_end = absl::InfinitePast();
  };
  absl::flat_hash_map<std::string, StoredSeq> stored_seq_;
  std::unique_ptr<pqxx::connection> conn_;
  // The server process (session) in which the staging table was created: it is per session.
  int stage_backend_pid_ = 0;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_PG_BATCH_STORE_H_
