#include "aggregator/ingest/node_cardinality.h"

#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace fleetwes::aggregator {

namespace {

using KeySet = absl::flat_hash_map<uint64_t, absl::Time>;

// Forgets the keys of `set` last seen before `cutoff`.
void Expire(KeySet& set, absl::Time cutoff) {
  absl::erase_if(set, [cutoff](const auto& kv) { return kv.second < cutoff; });
}

// The index in `keys` of the first key that would push `set` above `cap` (after forgetting
// expired keys), or -1 when all of them fit.
int FirstOverCap(KeySet& set, absl::Span<const uint64_t> keys, size_t cap, absl::Time cutoff) {
  absl::flat_hash_set<uint64_t> fresh;
  bool expired = false;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (set.contains(keys[i]) || !fresh.insert(keys[i]).second) continue;
    if (set.size() + fresh.size() <= cap) continue;
    if (!expired) {
      Expire(set, cutoff);
      expired = true;
      if (set.size() + fresh.size() <= cap) continue;
    }
    return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

NodeCardinality::NodeCardinality(CardinalityLimits limits) : limits_(limits) {}

NodeCardinality::Shard& NodeCardinality::ShardOf(const std::string& node_id) const {
  return shards_[absl::Hash<std::string>{}(node_id) % kShards];
}

std::optional<Rejection> NodeCardinality::Admit(const v1::Frame& frame, absl::Time now) {
  // Inline for the usual handful: no allocation per frame.
  absl::InlinedVector<uint64_t, 8> model_keys;
  model_keys.reserve(frame.models_size());
  for (const v1::ModelSample& m : frame.models()) {
    model_keys.push_back(absl::Hash<std::pair<absl::string_view, absl::string_view>>{}(
        {absl::string_view(m.engine_id()), absl::string_view(m.model())}));
  }
  absl::InlinedVector<uint64_t, 8> device_keys;
  device_keys.reserve(frame.devices_size());
  for (const v1::Device& d : frame.devices()) {
    device_keys.push_back(absl::Hash<absl::string_view>{}(absl::string_view(d.id())));
  }
  const absl::Time cutoff = now - limits_.window;

  Shard& shard = ShardOf(frame.node_id());
  absl::MutexLock lock(&shard.mu);
  Node& node = shard.nodes[frame.node_id()];
  if (int i = FirstOverCap(node.models, model_keys, limits_.max_models_per_node, cutoff); i >= 0) {
    return Rejection{RejectReason::kCardinality, absl::StrCat("models[", i, "].model"),
                     absl::StrCat("the node already sent ", node.models.size(),
                                  " distinct models within ", absl::FormatDuration(limits_.window),
                                  ", at most ", limits_.max_models_per_node, " allowed")};
  }
  if (int i = FirstOverCap(node.devices, device_keys, limits_.max_devices_per_node, cutoff);
      i >= 0) {
    return Rejection{
        RejectReason::kCardinality, absl::StrCat("devices[", i, "].id"),
        absl::StrCat("the node already sent ", node.devices.size(), " distinct device ids within ",
                     absl::FormatDuration(limits_.window), ", at most ",
                     limits_.max_devices_per_node, " allowed")};
  }
  for (uint64_t k : model_keys) node.models[k] = now;
  for (uint64_t k : device_keys) node.devices[k] = now;
  return std::nullopt;
}

size_t NodeCardinality::models(const std::string& node_id) const {
  Shard& shard = ShardOf(node_id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.nodes.find(node_id);
  return it == shard.nodes.end() ? 0 : it->second.models.size();
}

size_t NodeCardinality::devices(const std::string& node_id) const {
  Shard& shard = ShardOf(node_id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.nodes.find(node_id);
  return it == shard.nodes.end() ? 0 : it->second.devices.size();
}

}  // namespace fleetwes::aggregator
