// Fleet state: the latest known data per node and per (node, model), fed by ingest after each
// commit (and rebuilt from PostgreSQL at start).
//
// Boots: a node has one current boot, the one whose frames have the latest window_end. An agent
// that restarts replays the frames an earlier boot left in its spool on a separate stream whose
// Hello carries that earlier boot id, so a Hello for another boot than the current one says
// nothing by itself about which boot is newer. Such a Hello is held back (per node, a few boots)
// and applied (labels, agent version, boot id) only when a frame of its boot becomes
// the node's latest frame. A replayed earlier boot therefore never regresses the current boot,
// labels or latest data; its frames are stored all the same. Window ends come from the agent's
// clock: a clock stepped back across a restart could keep the old boot current until the new
// boot's frames pass its last window end. Readers take a snapshot: a consistent copy of
// the per-node entries, each immutable once published, so ranking and routing never block
// ingest for longer than the copy of a vector of pointers.
// Thread-safe (absl::Mutex).
#ifndef FLEETWES_AGGREGATOR_FLEET_FLEET_STATE_H_
#define FLEETWES_AGGREGATOR_FLEET_FLEET_STATE_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fleetwes/v1/ingest.pb.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::aggregator {

// When data counts as stale: older than `multiple` x the node's sampling interval, and never
// sooner than `min` (docs/api.md).
struct StalenessPolicy {
  double multiple = 3.0;
  absl::Duration min = absl::Seconds(10);

  // The age beyond which data sampled every `interval_s` seconds is stale (min when unknown).
  absl::Duration Threshold(double interval_s) const;
};

// The latest sample of one model on one node.
struct ModelState {
  v1::ModelSample sample;  // WES recomputed by the aggregator
  absl::Time window_end;
  double interval_s = 0;
  v1::ThermalState node_thermal_state = v1::THERMAL_STATE_UNSPECIFIED;
  bool memory_pressure = false;
  // The most recent sample of this model that had a WES value, and when its window ended.
  // Lets routing score a node that is idle now by what it delivered when busy.
  std::optional<v1::Wes> last_wes;
  absl::Time last_wes_window_end;
};

struct NodeState {
  std::string node_id;
  std::map<std::string, std::string> labels;  // from the latest Hello
  std::string agent_version;
  std::string boot_id;    // the current boot (see above)
  double interval_s = 0;  // from the latest frame, else the Hello (0: unknown)
  // From the latest Hello of any boot: frames the node's spool dropped unacknowledged, ever.
  uint64_t evicted_frames = 0;
  absl::Time first_seen;
  absl::Time last_seen;                      // last Hello or frame received
  std::shared_ptr<const v1::Frame> latest;   // latest frame by window end; null before the first
  absl::Time window_end;                     // of `latest`
  std::map<std::string, ModelState> models;  // by model name

  // now - window_end of the latest frame, never negative; infinite without a frame.
  absl::Duration DataAge(absl::Time now) const;
  bool Stale(absl::Time now, const StalenessPolicy& policy) const;
};

using NodeStatePtr = std::shared_ptr<const NodeState>;

// Age of data whose window ended at `window_end`, never negative.
absl::Duration AgeOf(absl::Time window_end, absl::Time now);

class FleetState {
 public:
  FleetState() = default;
  FleetState(const FleetState&) = delete;
  FleetState& operator=(const FleetState&) = delete;

  // Records a node's identity and labels from its Hello; a Hello of another boot than the
  // current one of a node with frames is held back until that boot's frames are the latest.
  void ApplyHello(const v1::Hello& hello, absl::Time received_at);
  // Records a committed frame (WES already recomputed). Frames older than the node's latest
  // (replays, earlier boots) update nothing but last_seen. Within one frame, when several samples
  // carry the same model (several engines), the one with the highest decode tokens/s represents it.
  void ApplyFrame(std::shared_ptr<const v1::Frame> frame, absl::Time received_at);
  // Restores a node from the store at start (labels, version, first seen, latest frame).
  void Restore(NodeState node);

  // Every node, sorted by node id.
  std::vector<NodeStatePtr> Snapshot() const;
  // One node; null if unknown.
  NodeStatePtr Get(absl::string_view node_id) const;
  size_t size() const;

  // Held-back Hellos kept per node; the oldest received is dropped beyond it.
  static constexpr size_t kMaxPendingBoots = 4;

 private:
  // What a held-back Hello sets once its boot is current.
  struct PendingHello {
    std::string boot_id;
    std::map<std::string, std::string> labels;
    std::string agent_version;
  };

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, NodeStatePtr> nodes_ ABSL_GUARDED_BY(mu_);
  // By node, oldest received first.
  absl::flat_hash_map<std::string, std::vector<PendingHello>> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_FLEET_STATE_H_
