// RankIndex: the nodes of one leaderboard in ranking order (penalized WES desc, raw WES desc,
// node id asc: RanksAbove), as an order-statistic tree, so that moving a node and asking a
// node's rank are O(log n) and the top N are read in O(log n + N). Values must be finite.
// Not synchronised: the owner (FleetState) locks.
#ifndef FLEETWES_AGGREGATOR_FLEET_RANK_INDEX_H_
#define FLEETWES_AGGREGATOR_FLEET_RANK_INDEX_H_

#include <cstddef>
#include <ext/pb_ds/assoc_container.hpp>
#include <ext/pb_ds/tree_policy.hpp>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace fleetwes::aggregator {

class RankIndex {
 public:
  struct Entry {
    double penalized = 0;
    double raw = 0;
    std::string node_id;
  };

  // Inserts `node_id` or moves it to its new values. Returns its rank afterwards (1-based).
  // Precondition: both values finite.
  size_t Upsert(absl::string_view node_id, double penalized, double raw) {
    return Move(node_id, penalized, raw).second;
  }
  // Upsert, returning (rank before, 0 when absent; rank after).
  std::pair<size_t, size_t> Move(absl::string_view node_id, double penalized, double raw);
  // Removes `node_id`; returns the rank it had, 0 when it was not in the index.
  size_t Remove(absl::string_view node_id);
  // The rank of `node_id` (1-based), 0 when it is not in the index.
  size_t Rank(absl::string_view node_id) const;
  bool Contains(absl::string_view node_id) const { return values_.contains(node_id); }
  size_t size() const { return values_.size(); }

  // Calls fn(const Entry&) for the entries in rank order, from the top, while it returns true.
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (auto it = tree_.begin(); it != tree_.end(); ++it) {
      if (!fn(*it)) return;
    }
  }

 private:
  struct Above {
    bool operator()(const Entry& a, const Entry& b) const;
  };
  using Tree = __gnu_pbds::tree<Entry, __gnu_pbds::null_type, Above, __gnu_pbds::rb_tree_tag,
                                __gnu_pbds::tree_order_statistics_node_update>;

  Tree tree_;
  // By node id: the values the node is filed under in tree_.
  absl::flat_hash_map<std::string, std::pair<double, double>> values_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_RANK_INDEX_H_
