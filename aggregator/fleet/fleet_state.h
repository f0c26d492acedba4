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
//
// Leaderboards (docs/api.md, "Leaderboard"): the state keeps one ranked index per model and one
// for the fleet (node WES), moved in O(log n) by each frame that becomes a node's latest.
// Leaderboard() copies the top `limit` node pointers under the lock (O(log n + limit), plus the
// nodes gone stale since the last Sweep) and builds the answer outside it. A node whose data is
// stale (StalenessPolicy) is skipped by readers at once and leaves the index at the next
// Sweep(now), which emits an EVENT_KIND_STALE event; it is listed as unranked and stale.
// Per (node, leaderboard) the state also keeps the rank history (previous rank, a point per
// minute for the last 72 minutes) and the baseline raw WES (baseline.h). Both survive a restart
// through checkpoints: SaveTracks() copies them out, RestoreTracks() puts them back after the
// nodes are restored (aggregator/store/track_store.h stores them in PostgreSQL).
//
// Events (events.h): rank changes a node's own frame causes on a leaderboard (old -> new rank;
// nodes merely shifted by it are not events), thermal-state changes of a node and of each of its
// models, and nodes going stale (Sweep). Rank-change and thermal-change events are rate-limited
// per (node, leaderboard), see FleetStateOptions. They are published to the EventSink after the
// lock is released. Restore() emits none. Thread-safe (absl::Mutex).
#ifndef FLEETWES_AGGREGATOR_FLEET_FLEET_STATE_H_
#define FLEETWES_AGGREGATOR_FLEET_FLEET_STATE_H_

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aggregator/fleet/baseline.h"
#include "aggregator/fleet/events.h"
#include "aggregator/fleet/rank_index.h"
#include "fleetwes/v1/fleet.pb.h"
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

struct FleetStateOptions {
  StalenessPolicy staleness;
  // A rank-change event is emitted when a node's own frame moves it by at least this many places
  // (entering or leaving the ranking always qualifies). Default 1; >= 1.
  uint32_t rank_event_min_delta = 1;
  // At most one rank-change event per (node, leaderboard) per this interval; changes inside it
  // are not reported (the next qualifying change after it is). Default 60s; 0: no limit.
  absl::Duration rank_event_interval = absl::Seconds(60);
  // Thermal-change events: a change to a worse state than the one last reported is reported at
  // once; a change to a better one only when this long has passed since the last report (a
  // later frame reports it if it lasts, from the state last reported). Flapping therefore costs
  // at most a few events per interval, and the state last reported is never left wrong for
  // longer than the interval plus a frame. Default 30s; 0: every change is reported.
  absl::Duration thermal_event_interval = absl::Seconds(30);
  BaselineOptions baseline;
};

// The latest sample of one model on one node.
struct ModelState {
  // The sample that represents the model in the latest frame with it (FleetState::ApplyFrame);
  // WES recomputed by the aggregator.
  v1::ModelSample sample;
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

// The nodes serving one model at one moment, sorted by node id, with each node's state of that
// model. Immutable once published; `nodes` keeps every pointed-to state alive.
struct ServingSet {
  std::vector<NodeStatePtr> nodes;
  std::vector<const ModelState*> models;  // models[i] is nodes[i]'s state of the model
};

// Age of data whose window ended at `window_end`, never negative.
absl::Duration AgeOf(absl::Time window_end, absl::Time now);

class FleetState {
 public:
  explicit FleetState(FleetStateOptions options = {});
  FleetState(const FleetState&) = delete;
  FleetState& operator=(const FleetState&) = delete;

  // Records a node's identity and labels from its Hello; a Hello of another boot than the
  // current one of a node with frames is held back until that boot's frames are the latest.
  void ApplyHello(const v1::Hello& hello, absl::Time received_at);
  // Records a committed frame (WES already recomputed). Frames older than the node's latest
  // (replays, earlier boots) update nothing but last_seen. Within one frame, when several samples
  // carry the same model (several engines), the one with the highest decode tokens/s represents
  // it, synthetic (probe) samples only when no other sample of the model exists. A frame that
  // becomes the latest moves the node on the fleet leaderboard and on each of its models',
  // records rank history and baselines at `received_at`, and publishes the events it causes.
  void ApplyFrame(std::shared_ptr<const v1::Frame> frame, absl::Time received_at);
  // Restores a node from the store at start (labels, version, first seen, latest frame).
  void Restore(NodeState node);

  // Where events go; null (the default): nowhere. Set before frames arrive; `sink` must
  // outlive this.
  void SetEventSink(EventSink* sink) { sink_.store(sink, std::memory_order_release); }

  // Takes nodes whose data went stale by `now` out of the ranked indexes (listed as unranked and
  // stale from then on), records it in their rank history and publishes an EVENT_KIND_STALE
  // event per node and leaderboard. Returns how many (node, leaderboard) pairs left. Call it
  // periodically (the server does, every second); readers skip stale nodes in between.
  size_t Sweep(absl::Time now);

  // The leaderboard (leaderboard.h for the rules) for `model` (empty: the fleet), from the
  // ranked index: the same answer as BuildLeaderboard over a Snapshot(), plus previous_rank,
  // rank_1h_ago and baseline_loss_pct. `limit` applies to entries and unranked separately.
  v1::LeaderboardResponse Leaderboard(absl::string_view model, absl::Time now, size_t limit) const;
  // A node's rank on a leaderboard in the index (stale nodes count until swept); 0: unranked.
  uint32_t RankOf(absl::string_view node_id, absl::string_view model) const;
  // The baseline raw WES of (node, model) (model empty: node WES) at `now`; nullopt until enough
  // eligible samples.
  std::optional<double> BaselineOf(absl::string_view node_id, absl::string_view model,
                                   absl::Time now) const;

  // Every node, sorted by node id.
  std::vector<NodeStatePtr> Snapshot() const;
  // The nodes with a sample of `model` (the ones its leaderboard lists, stale ones included),
  // sorted by node id.
  std::vector<NodeStatePtr> ServingModel(absl::string_view model) const;
  // The same as a shared immutable set. Built on the first call after a change to one of the
  // model's nodes and then shared by every caller until the next change, so repeated reads
  // (routing) cost one pointer copy; never null.
  std::shared_ptr<const ServingSet> Serving(absl::string_view model) const;
  // One node; null if unknown.
  NodeStatePtr Get(absl::string_view node_id) const;
  size_t size() const;

  // One minute of a rank history.
  struct RankPoint {
    int64_t minute = 0;  // since the Unix epoch
    uint32_t rank = 0;   // 0: unranked
  };
  // One (node, leaderboard)'s rank history, rank-event limit and baseline, as checkpointed.
  struct SavedTrack {
    std::string node_id;
    std::string board;  // the model; empty: the fleet leaderboard
    uint32_t rank = 0;  // as last recorded; 0: unranked
    std::optional<uint32_t> previous_rank;
    std::vector<RankPoint> points;  // oldest first, minutes increasing
    absl::Time last_rank_event = absl::InfinitePast();
    Baseline baseline;
  };
  // Every node id, sorted.
  std::vector<std::string> NodeIds() const;
  // The tracks of these nodes (unknown ids have none). Takes the lock once, shared; callers
  // saving a large fleet pass a few hundred ids at a time so ingest is never held up for long.
  std::vector<SavedTrack> SaveTracks(const std::vector<std::string>& node_ids) const;
  // Puts saved tracks back after Restore() of the nodes (a track of an unknown node or of a
  // leaderboard the node is not on is skipped). The rank a node has now in the rebuilt index
  // stays; when it differs from the saved rank, the saved rank becomes the previous rank.
  // Points after `now`'s minute, or beyond kRankHistoryPoints, are dropped. Returns how many
  // tracks were restored. Emits no events.
  size_t RestoreTracks(std::vector<SavedTrack> tracks, absl::Time now);

  // Held-back Hellos kept per node; the oldest received is dropped beyond it.
  static constexpr size_t kMaxPendingBoots = 4;
  // Rank history points kept per (node, leaderboard), one per minute.
  static constexpr size_t kRankHistoryPoints = 72;

  const FleetStateOptions& options() const { return options_; }

 private:
  // One leaderboard's members. A node is in exactly one of ranked (fresh or not yet swept, with a
  // value), valueless (fresh or not yet swept, without a value) and swept (stale).
  struct Board {
    RankIndex ranked;
    std::set<std::string, std::less<>> valueless;
    std::set<std::string, std::less<>> swept;
    // When each unswept member's data goes stale: (window end + threshold, node id).
    std::set<std::pair<absl::Time, std::string>, std::less<>> expiry;
    absl::flat_hash_map<std::string, absl::Time> expiry_of;  // unswept members
    // Serving()'s answer, until a member node's state changes (null: build on the next call).
    mutable std::shared_ptr<const ServingSet> serving;
  };
  // One node on one leaderboard: rank history, event rate limit, baseline.
  struct Track {
    uint32_t rank = 0;  // as last recorded
    std::optional<uint32_t> previous_rank;
    std::vector<RankPoint> points;  // oldest first, at most kRankHistoryPoints
    absl::Time last_rank_event = absl::InfinitePast();
    Baseline baseline;
    std::optional<double> baseline_raw;  // cached median
    absl::Time baseline_computed = absl::InfinitePast();
    // Thermal-change events (the node's on the fleet's track, a model's on its own): the state
    // last reported (or first seen), and when it was reported.
    v1::ThermalState reported_thermal = v1::THERMAL_STATE_UNSPECIFIED;
    absl::Time last_thermal_event = absl::InfinitePast();
  };
  // What a reader copies under the lock per listed entry.
  struct Listed {
    NodeStatePtr node;
    uint32_t rank = 0;
    std::optional<uint32_t> previous_rank;
    std::optional<uint32_t> rank_1h_ago;
    std::optional<double> baseline_raw;
  };

  void ApplyFrameLocked(std::shared_ptr<const v1::Frame> frame, absl::Time received_at, bool emit,
                        std::vector<v1::Event>* events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Files `node_id` on `board_key` with `wes` and data expiring at `expiry`; records history,
  // baseline (when `baseline_eligible`) and, when `emit`, a rank-change event.
  void UpdateBoard(const std::string& board_key, const std::string& node_id, const v1::Wes& wes,
                   absl::Time expiry, bool baseline_eligible, absl::Time now, bool emit,
                   std::vector<v1::Event>* events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordRank(Track* track, uint32_t rank, absl::Time now);
  // Compares a node's (board_key empty) or a model's thermal state with the one last reported
  // and, when FleetStateOptions::thermal_event_interval allows, reports the change.
  void NoteThermal(const std::string& node_id, const std::string& board_key, v1::ThermalState state,
                   absl::Time now, bool emit, std::vector<v1::Event>* events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static std::optional<uint32_t> RankAgo(const Track& track, absl::Time now);
  Listed ListedLocked(const std::string& node_id, const std::string& board_key, uint32_t rank,
                      absl::Time now) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Publish(std::vector<v1::Event> events);
  // Stores a node's new state and drops the cached serving sets of the models it serves.
  void PutNodeLocked(NodeStatePtr next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FleetStateOptions options_;
  std::atomic<EventSink*> sink_{nullptr};

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
  // By model; "" is the fleet leaderboard.
  absl::flat_hash_map<std::string, Board> boards_ ABSL_GUARDED_BY(mu_);
  // By node, then by leaderboard.
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, Track>> tracks_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_FLEET_STATE_H_
