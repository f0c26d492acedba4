// Per-node caps on the distinct model names and device ids the aggregator accepts, so that one
// node sending a new model name or device id in every frame (a bug, or a hostile peer) cannot
// grow the fleet state, the leaderboard and the sample tables without bound. Per frame the counts
// are capped by validation (docs/protocol.md, "Limits"); this caps them across the node's frames:
// a key counts while it was seen within `window`, so a node that legitimately changes models over
// days is never refused. Keys are tracked as 64-bit hashes (a few bytes per key). A frame that
// would push a node above a cap is refused whole and nothing of it is recorded.
// Thread-safe (sharded by node).
#ifndef FLEETWES_AGGREGATOR_INGEST_NODE_CARDINALITY_H_
#define FLEETWES_AGGREGATOR_INGEST_NODE_CARDINALITY_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aggregator/ingest/validate.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::aggregator {

struct CardinalityLimits {
  size_t max_models_per_node = 512;         // distinct (engine_id, model) pairs; >= kMaxModels
  size_t max_devices_per_node = 128;        // distinct device ids; >= kMaxDevices
  absl::Duration window = absl::Hours(24);  // a key unseen for this long no longer counts
};

class NodeCardinality {
 public:
  explicit NodeCardinality(CardinalityLimits limits = {});

  // Records the model and device keys of `frame` (of node frame.node_id()) as seen at `now`, or
  // refuses it (reason kCardinality, the first new key's field, e.g. "models[3].model") without
  // recording anything when a cap would be exceeded.
  std::optional<Rejection> Admit(const v1::Frame& frame, absl::Time now);

  // Distinct keys of `node_id` currently counted (for tests and metrics).
  size_t models(const std::string& node_id) const;
  size_t devices(const std::string& node_id) const;

 private:
  using KeySet = absl::flat_hash_map<uint64_t, absl::Time>;  // key hash -> last seen
  struct Node {
    KeySet models;
    KeySet devices;
  };
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, Node> nodes ABSL_GUARDED_BY(mu);
  };
  static constexpr size_t kShards = 16;

  Shard& ShardOf(const std::string& node_id) const;

  const CardinalityLimits limits_;
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_INGEST_NODE_CARDINALITY_H_
