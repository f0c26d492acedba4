// The leaderboard: nodes ranked by penalized WES (desc), then raw WES (desc), then node id (asc),
// per model or for the fleet (node WES). Nodes whose data is stale, or whose latest window has no
// WES value (idle, no power reading, ...), are listed as unranked with the reason (stale flag or
// Wes.null_reason). BuildLeaderboard computes it from a snapshot (pure and thread-safe);
// FleetState::Leaderboard answers the same from its ranked index without the full sort.
#ifndef FLEETWES_AGGREGATOR_FLEET_LEADERBOARD_H_
#define FLEETWES_AGGREGATOR_FLEET_LEADERBOARD_H_

#include <cstddef>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "aggregator/fleet/fleet_state.h"
#include "fleetwes/v1/fleet.pb.h"

namespace fleetwes::aggregator {

inline constexpr size_t kLeaderboardDefaultLimit = 100;
inline constexpr size_t kLeaderboardMaxLimit = 1000;

// `model` empty: the fleet leaderboard. At most `limit` entries in each of entries and unranked.
// Nodes without a frame (or, per model, not serving `model`) do not appear.
v1::LeaderboardResponse BuildLeaderboard(const std::vector<NodeStatePtr>& nodes,
                                         absl::string_view model, absl::Time now,
                                         const StalenessPolicy& policy, size_t limit);

// Fills the columns of `node`'s entry on the leaderboard of `model` (empty: the fleet) from its
// latest data: everything but rank, previous_rank, rank_1h_ago and baseline_loss_pct. False
// (and `e` untouched) when the node has no frame or, per model, does not serve `model`.
bool FillLeaderboardEntry(const NodeState& node, absl::string_view model, absl::Time now,
                          const StalenessPolicy& policy, v1::LeaderboardEntry* e);

// The widest scope among `wes.power_scopes` (WALL > SOC > CPU_PACKAGE > GPU_BOARD > DRAM);
// UNSPECIFIED when there is none.
v1::PowerScope WidestPowerScope(const v1::Wes& wes);

// The ranking order: true if `a` ranks above `b`. Both must have a penalized value.
bool RanksAbove(const v1::Wes& a, absl::string_view a_node, const v1::Wes& b,
                absl::string_view b_node);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_LEADERBOARD_H_
