// What the writer persists, and the seam between the writer and PostgreSQL: one batch of node
// upserts and frames written in one transaction. PgBatchStore implements it; tests fake it to
// drive outages and refusals.
#ifndef FLEETWES_AGGREGATOR_STORE_BATCH_STORE_H_
#define FLEETWES_AGGREGATOR_STORE_BATCH_STORE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::aggregator {

// A node announced by a Hello: upserted into `nodes`.
struct NodeRecord {
  std::string node_id;
  std::string boot_id;
  std::string agent_version;
  std::map<std::string, std::string> labels;
  double interval_s = 0;  // 0: not announced
  std::string hello;      // the serialized Hello
  absl::Time seen_at;     // when the Hello arrived
};

// A validated frame whose WES values were recomputed by the aggregator.
struct FrameRecord {
  std::shared_ptr<const v1::Frame> frame;
  std::string serialized;  // `*frame` serialized: the stored bytes
  absl::Time received_at;
};

class BatchStore {
 public:
  virtual ~BatchStore() = default;

  // Upserts `nodes` and inserts the frames whose key (node_id, boot_id, seq) is not stored yet,
  // with their model and device rows, in ONE transaction. On success returns one flag per frame:
  // true if it was inserted by this call, false if a frame with its key already existed (a
  // duplicate; a key repeated within the batch counts once). Errors:
  //   Unavailable/ResourceExhausted/DeadlineExceeded/Aborted: nothing committed, try again later;
  //   Unknown: the commit's outcome is unknown (trying again is safe: keys deduplicate);
  //   anything else: the batch was refused and nothing committed.
  // Called from one thread at a time.
  virtual absl::StatusOr<std::vector<bool>> WriteBatch(
      absl::Span<const NodeRecord> nodes, absl::Span<const FrameRecord* const> frames) = 0;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_BATCH_STORE_H_
