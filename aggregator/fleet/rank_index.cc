#include "aggregator/fleet/rank_index.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>

namespace fleetwes::aggregator {

bool RankIndex::Above(const Item& item, const Key& key) const {
  return RanksAbove(item.penalized, item.raw, entries_[item.entry].node_id, key.penalized, key.raw,
                    key.node_id);
}

bool RankIndex::Above(const Key& key, const Item& item) const {
  return RanksAbove(key.penalized, key.raw, key.node_id, item.penalized, item.raw,
                    entries_[item.entry].node_id);
}

size_t RankIndex::BlockOf(const Key& key) const {
  const auto it = std::partition_point(last_.begin(), last_.end() - 1,
                                       [&](const Item& last) { return Above(last, key); });
  return static_cast<size_t>(it - last_.begin());
}

size_t RankIndex::ItemsBefore(size_t block) const {
  size_t sum = 0;
  for (size_t i = block; i > 0; i &= i - 1) sum += counts_[i];
  return sum;
}

void RankIndex::AddCount(size_t block, int delta) {
  for (size_t i = block + 1; i < counts_.size(); i += i & (~i + 1)) {
    counts_[i] = static_cast<uint32_t>(static_cast<int64_t>(counts_[i]) + delta);
  }
}

void RankIndex::RebuildCounts() {
  const size_t n = blocks_.size();
  counts_.assign(n + 1, 0);
  for (size_t i = 1; i <= n; ++i) {
    counts_[i] += static_cast<uint32_t>(blocks_[i - 1].size());
    const size_t parent = i + (i & (~i + 1));
    if (parent <= n) counts_[parent] += counts_[i];
  }
}

size_t RankIndex::Insert(const Key& key, uint32_t entry) {
  const Item item{key.penalized, key.raw, entry};
  if (blocks_.empty()) {
    blocks_.push_back({item});
    last_.push_back(item);
    RebuildCounts();
    return 1;
  }
  const size_t b = BlockOf(key);
  std::vector<Item>& block = blocks_[b];
  const auto pos = std::partition_point(block.begin(), block.end(),
                                        [&](const Item& i) { return Above(i, key); });
  const size_t index = static_cast<size_t>(pos - block.begin());
  block.insert(pos, item);
  AddCount(b, 1);
  if (index + 1 == block.size()) last_[b] = item;
  const size_t rank = ItemsBefore(b) + index + 1;
  if (block.size() > kMaxBlock) Split(b);
  return rank;
}

size_t RankIndex::Erase(const Key& key) {
  const size_t b = BlockOf(key);
  std::vector<Item>& block = blocks_[b];
  const auto pos = std::partition_point(block.begin(), block.end(),
                                        [&](const Item& i) { return Above(i, key); });
  // The index's invariant: the key is filed exactly here.
  if (pos == block.end() || Above(key, *pos)) std::abort();
  const size_t index = static_cast<size_t>(pos - block.begin());
  const size_t rank = ItemsBefore(b) + index + 1;
  block.erase(pos);
  AddCount(b, -1);
  if (block.empty()) {
    EraseBlock(b);
  } else {
    if (index == block.size()) last_[b] = block.back();
    Rebalance(b);
  }
  return rank;
}

void RankIndex::Split(size_t b) {
  std::vector<Item>& block = blocks_[b];
  const auto half = block.begin() + static_cast<ptrdiff_t>(block.size() / 2);
  std::vector<Item> upper(half, block.end());
  block.erase(half, block.end());
  const Item upper_last = upper.back();
  last_[b] = block.back();
  blocks_.insert(blocks_.begin() + static_cast<ptrdiff_t>(b) + 1, std::move(upper));
  last_.insert(last_.begin() + static_cast<ptrdiff_t>(b) + 1, upper_last);
  RebuildCounts();
}

void RankIndex::Rebalance(size_t b) {
  if (blocks_[b].size() >= kMinBlock || blocks_.size() < 2) return;
  // Merge blocks lo and lo + 1, with b one of them.
  const size_t lo = b + 1 < blocks_.size() ? b : b - 1;
  std::vector<Item>& into = blocks_[lo];
  const std::vector<Item>& from = blocks_[lo + 1];
  into.insert(into.end(), from.begin(), from.end());
  last_[lo] = into.back();
  EraseBlock(lo + 1);
  if (blocks_[lo].size() > kMaxBlock) Split(lo);
}

void RankIndex::EraseBlock(size_t b) {
  const auto at = static_cast<ptrdiff_t>(b);
  blocks_.erase(blocks_.begin() + at);
  last_.erase(last_.begin() + at);
  RebuildCounts();
}

std::pair<size_t, size_t> RankIndex::Move(absl::string_view node_id, double penalized, double raw) {
  size_t before = 0;
  uint32_t entry;
  if (auto it = entry_of_.find(node_id); it != entry_of_.end()) {
    entry = it->second;
    Entry& e = entries_[entry];
    if (e.penalized == penalized && e.raw == raw) {
      before = Rank(node_id);
      return {before, before};
    }
    before = Erase(Key{e.penalized, e.raw, e.node_id});
    e.penalized = penalized;
    e.raw = raw;
  } else {
    if (free_.empty()) {
      entry = static_cast<uint32_t>(entries_.size());
      entries_.push_back(Entry{penalized, raw, std::string(node_id)});
    } else {
      entry = free_.back();
      free_.pop_back();
      entries_[entry] = Entry{penalized, raw, std::string(node_id)};
    }
    entry_of_.emplace(std::string(node_id), entry);
  }
  const Entry& e = entries_[entry];
  return {before, Insert(Key{e.penalized, e.raw, e.node_id}, entry)};
}

size_t RankIndex::Remove(absl::string_view node_id) {
  auto it = entry_of_.find(node_id);
  if (it == entry_of_.end()) return 0;
  const uint32_t entry = it->second;
  Entry& e = entries_[entry];
  const size_t rank = Erase(Key{e.penalized, e.raw, e.node_id});
  entry_of_.erase(it);
  e = Entry{};
  free_.push_back(entry);
  return rank;
}

size_t RankIndex::Rank(absl::string_view node_id) const {
  auto it = entry_of_.find(node_id);
  if (it == entry_of_.end()) return 0;
  const Entry& e = entries_[it->second];
  const Key key{e.penalized, e.raw, e.node_id};
  const size_t b = BlockOf(key);
  const std::vector<Item>& block = blocks_[b];
  const auto pos = std::partition_point(block.begin(), block.end(),
                                        [&](const Item& i) { return Above(i, key); });
  return ItemsBefore(b) + static_cast<size_t>(pos - block.begin()) + 1;
}

}  // namespace fleetwes::aggregator
