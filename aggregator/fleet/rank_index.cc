#include "aggregator/fleet/rank_index.h"

namespace fleetwes::aggregator {

bool RankIndex::Above::operator()(const Entry& a, const Entry& b) const {
  if (a.penalized != b.penalized) return a.penalized > b.penalized;
  if (a.raw != b.raw) return a.raw > b.raw;
  return a.node_id < b.node_id;
}

size_t RankIndex::Upsert(absl::string_view node_id, double penalized, double raw) {
  auto it = values_.find(node_id);
  Entry e{penalized, raw, std::string(node_id)};
  if (it != values_.end()) {
    if (it->second.first == penalized && it->second.second == raw) {
      return tree_.order_of_key(e) + 1;
    }
    tree_.erase(Entry{it->second.first, it->second.second, e.node_id});
    it->second = {penalized, raw};
  } else {
    values_.emplace(e.node_id, std::make_pair(penalized, raw));
  }
  const size_t rank = tree_.order_of_key(e) + 1;
  tree_.insert(std::move(e));
  return rank;
}

size_t RankIndex::Remove(absl::string_view node_id) {
  auto it = values_.find(node_id);
  if (it == values_.end()) return 0;
  Entry e{it->second.first, it->second.second, std::string(node_id)};
  const size_t rank = tree_.order_of_key(e) + 1;
  tree_.erase(e);
  values_.erase(it);
  return rank;
}

size_t RankIndex::Rank(absl::string_view node_id) const {
  auto it = values_.find(node_id);
  if (it == values_.end()) return 0;
  return tree_.order_of_key(Entry{it->second.first, it->second.second, std::string(node_id)}) + 1;
}

}  // namespace fleetwes::aggregator
