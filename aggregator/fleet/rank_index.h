// RankIndex: the nodes of one leaderboard in ranking order (penalized WES desc, raw WES desc,
// node id asc: RanksAbove). Values must be finite. Not synchronised: the owner (FleetState) locks.
//
// Layout, a sorted list of sorted blocks: the order is cut into blocks of compact items (the two
// values and the index of the node's Entry, 24 bytes), each block a contiguous array, with the
// blocks' last items and a Fenwick tree of their sizes alongside. Finding a position is a binary
// search over the blocks' last items, then one within the block; a rank is the number of items
// in the blocks before (from the Fenwick tree), plus the position. A block that grows past
// kMaxBlock items is split in two; one that shrinks below kMinBlock is merged into a neighbour
// (and split again if the result is too large), so that every block but a lone one holds
// kMinBlock..kMaxBlock items.
//
// Costs with n nodes: Move, Remove and Rank take one hash lookup and O(log n) comparisons and
// additions, Move and Remove a memmove of at most kMaxBlock items (3 KB) too. A split or merge
// rebuilds the block arrays and the Fenwick tree in O(n / kMinBlock); a split leaves halves
// kMinBlock items from either bound and a merge (followed by at most one split) a block at least
// kMinBlock - 1 above the lower one, so there are at most about two per kMinBlock changes to a
// block. ForEach is O(1) per entry. At 100,000 nodes (about 1,000 blocks) an update measures
// under 1 us (docs/benchmarks.md, bench/leaderboard).
#ifndef FLEETWES_AGGREGATOR_FLEET_RANK_INDEX_H_
#define FLEETWES_AGGREGATOR_FLEET_RANK_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace fleetwes::aggregator {

// The ranking order, the one definition every ranked view uses: true if a node with penalized
// WES `a_penalized`, raw WES `a_raw` and id `a_node` ranks above `b` (penalized desc, raw desc,
// node id asc).
inline bool RanksAbove(double a_penalized, double a_raw, absl::string_view a_node,
                       double b_penalized, double b_raw, absl::string_view b_node) {
  if (a_penalized != b_penalized) return a_penalized > b_penalized;
  if (a_raw != b_raw) return a_raw > b_raw;
  return a_node < b_node;
}

class RankIndex {
 public:
  struct Entry {
    double penalized = 0;
    double raw = 0;
    std::string node_id;
  };

  // Most and fewest items per block (the fewest but for a lone block).
  static constexpr size_t kMaxBlock = 128;
  static constexpr size_t kMinBlock = 32;

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
  bool Contains(absl::string_view node_id) const { return entry_of_.contains(node_id); }
  size_t size() const { return entry_of_.size(); }

  // Calls fn(const Entry&) for the entries in rank order, from the top, while it returns true.
  // The entries stay valid until the index is next changed.
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (const std::vector<Item>& block : blocks_) {
      for (const Item& item : block) {
        if (!fn(entries_[item.entry])) return;
      }
    }
  }

  // The number of blocks (for tests of the block bounds).
  size_t blocks() const { return blocks_.size(); }

 private:
  // One node's place in the order: its values and the index of its Entry in entries_.
  struct Item {
    double penalized;
    double raw;
    uint32_t entry;
  };
  // What is looked for: values and node id.
  struct Key {
    double penalized;
    double raw;
    absl::string_view node_id;
  };

  // Whether item ranks above key, and the reverse.
  bool Above(const Item& item, const Key& key) const;
  bool Above(const Key& key, const Item& item) const;
  // The block where key is or would go: the first whose last item does not rank above it, or
  // the last block. Precondition: at least one block.
  size_t BlockOf(const Key& key) const;
  // The number of items in blocks before `block`.
  size_t ItemsBefore(size_t block) const;
  // Adds delta to the count of `block`'s items.
  void AddCount(size_t block, int delta);
  // counts_ from the blocks, after blocks were added or taken out.
  void RebuildCounts();
  // Files key under entry `entry`; returns its rank.
  size_t Insert(const Key& key, uint32_t entry);
  // Takes out the item of key, which must be in the index; returns the rank it had.
  size_t Erase(const Key& key);
  // Splits `block` in two halves.
  void Split(size_t block);
  // Merges `block`, when below kMinBlock items, with a neighbour, splitting again when too large.
  void Rebalance(size_t block);
  void EraseBlock(size_t block);

  // The order: blocks_[i] sorted, every item of blocks_[i] above every item of blocks_[i + 1];
  // no block empty. last_[i] is blocks_[i].back(). counts_ is a Fenwick tree of the blocks'
  // sizes (counts_[i] the sum of the sizes of blocks i - (i & -i) .. i - 1), for ItemsBefore.
  std::vector<std::vector<Item>> blocks_;
  std::vector<Item> last_;
  std::vector<uint32_t> counts_;
  // Each node's entry (node id and current values); free_ lists the unused ones.
  std::vector<Entry> entries_;
  std::vector<uint32_t> free_;
  absl::flat_hash_map<std::string, uint32_t> entry_of_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_RANK_INDEX_H_
