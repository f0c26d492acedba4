#include "aggregator/fleet/rank_index.h"

namespace fleetwes::aggregator {

bool RankIndex::Above::operator()(const Entry& a, const Entry& b) const {
  if (a.penalized != b.penalized) return a.penalized > b.penalized;
  if (a.raw != b.raw) return a.raw > b.raw;
  return a.node_id < b.node_id;
}

std::pair<size_t, size_t> RankIndex::Move(absl::string_view node_id, double penalized, double raw) {
  auto it = values_.find(node_id);
  size_t before = 0;
  if (it != values_.end()) {
    Entry old{it->second.first, it->second.second, it->first};
    before = tree_.order_of_key(old) + 1;
    if (old.penalized == penalized && old.raw == raw) return {before, before};
    tree_.erase(old);
    it->second = {penalized, raw};
  } else {
    it = values_.emplace(std::string(node_id), std::make_pair(penalized, raw)).first;
  }
  Entry e{penalized, raw, it->first};
  const size_t after = tree_.order_of_key(e) + 1;
  tree_.insert(std::move(e));
  return {before, after};
}

size_t RankIndex::Remove(absl::string_view node_id) {
  auto it = values_.find(node_id);
  if (it == values_.end()) return 0;
  const Entry e{it->second.first, it->second.second, it->first};
  const size_t rank = tree_.order_of_key(e) + 1;
  tree_.erase(e);
  values_.erase(it);
  return rank;
}

size_t RankIndex::Rank(absl::string_view node_id) const {
  auto it = values_.find(node_id);
  if (it == values_.end()) return 0;
  return tree_.order_of_key(Entry{it->second.first, it->second.second, it->first}) + 1;
}

}  // namespace fleetwes::aggregator
