// Reads from PostgreSQL for operators and for start-up: node history from frames/model_samples
// and the latest stored state of every node (to rebuild the fleet state). Owns one connection,
// opened lazily and reopened after a connection error; queries are serialised on it.
// Thread-safe.
#ifndef FLEETWES_AGGREGATOR_STORE_PG_READER_H_
#define FLEETWES_AGGREGATOR_STORE_PG_READER_H_

#include <map>
#include <memory>
#include <optional>
#include <pqxx/connection>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aggregator/store/event_store.h"
#include "fleetwes/v1/fleet.pb.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::aggregator {

struct HistoryQuery {
  std::string node_id;
  std::string model;  // empty: node-level values from frames
  absl::Time start;
  absl::Time end;
  size_t limit = 1000;
  // Zero: every sample. Else one point per step-wide bucket (aligned on the Unix epoch, the
  // point's time is the bucket's start): values averaged, thermal state the worst in the bucket.
  absl::Duration step = absl::ZeroDuration();
};

struct ProfileQuery {
  std::string node_id;
  std::string model;  // required here; see BusiestModel
  absl::Time start;
  absl::Time end;
  size_t limit = 1000;
  absl::Duration step = absl::ZeroDuration();  // as in HistoryQuery; memory pressure: any
};

// A node as stored: identity from `nodes`, plus its latest frame (by window end) if any.
struct StoredNode {
  std::string node_id;
  std::map<std::string, std::string> labels;
  std::string agent_version;
  std::string boot_id;
  double interval_s = 0;
  absl::Time first_seen;
  absl::Time last_seen;
  std::optional<v1::Frame> latest;
};

class PgReader {
 public:
  explicit PgReader(std::string url);
  ~PgReader();

  // Points with window_end in [start, end]: the latest `limit` of them, oldest first.
  // Errors: the mapped database error (Unavailable when unreachable).
  absl::StatusOr<std::vector<v1::HistoryPoint>> History(const HistoryQuery& q);

  // One node's model samples of `q.model` in [start, end] with the memory pressure of their
  // frame: the latest `limit` points (or buckets), oldest first.
  absl::StatusOr<std::vector<v1::ProfilePoint>> Profile(const ProfileQuery& q);

  // The model with the most samples of `node_id` in [start, end] (ties: the first by name);
  // empty when the node has none.
  absl::StatusOr<std::string> BusiestModel(const std::string& node_id, absl::Time start,
                                           absl::Time end);

  // Stored events (aggregator/store/event_store.h).
  absl::StatusOr<std::vector<v1::Event>> Events(const EventQuery& q);

  // Every node with its latest frame. A stored frame that no longer parses is skipped (logged).
  absl::StatusOr<std::vector<StoredNode>> LoadNodes();

 private:
  absl::Status EnsureConnected() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Failed(absl::string_view what, const std::exception& e)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string url_;
  absl::Mutex mu_;
  std::unique_ptr<pqxx::connection> conn_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_PG_READER_H_
