// BatchStore on PostgreSQL with libpqxx: multi-row INSERTs in one transaction, frames first with
// ON CONFLICT DO NOTHING RETURNING their key, then model and device rows for the new frames only.
// Owns one connection, opened lazily and reopened after a connection error.
// Thread-compatible: one caller at a time (the writer thread).
#ifndef FLEETWES_AGGREGATOR_STORE_PG_BATCH_STORE_H_
#define FLEETWES_AGGREGATOR_STORE_PG_BATCH_STORE_H_

#include <memory>
#include <pqxx/connection>
#include <string>

#include "aggregator/store/batch_store.h"

namespace fleetwes::aggregator {

class PgBatchStore : public BatchStore {
 public:
  explicit PgBatchStore(std::string url);
  ~PgBatchStore() override;

  absl::StatusOr<std::vector<bool>> WriteBatch(
      absl::Span<const NodeRecord> nodes, absl::Span<const FrameRecord* const> frames) override;

 private:
  absl::Status EnsureConnected();

  std::string url_;
  std::unique_ptr<pqxx::connection> conn_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_PG_BATCH_STORE_H_
