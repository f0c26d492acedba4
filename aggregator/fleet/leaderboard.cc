#include "aggregator/fleet/leaderboard.h"

#include <algorithm>

#include "aggregator/fleet/rank_index.h"
#include "aggregator/proto_time.h"

namespace fleetwes::aggregator {

bool RanksAbove(const v1::Wes& a, absl::string_view a_node, const v1::Wes& b,
                absl::string_view b_node) {
  return RanksAbove(a.penalized(), a.raw(), a_node, b.penalized(), b.raw(), b_node);
}

namespace {

void FillCommon(const NodeState& node, absl::Duration age, bool stale, v1::LeaderboardEntry* e) {
  e->set_node_id(node.node_id);
  e->mutable_labels()->insert(node.labels.begin(), node.labels.end());
  e->set_data_age_s(absl::ToDoubleSeconds(age));
  e->set_stale(stale);
}

int ScopeWidth(int scope) {
  switch (scope) {
    case v1::POWER_SCOPE_WALL:
      return 5;
    case v1::POWER_SCOPE_SOC:
      return 4;
    case v1::POWER_SCOPE_CPU_PACKAGE:
      return 3;
    case v1::POWER_SCOPE_GPU_BOARD:
      return 2;
    case v1::POWER_SCOPE_DRAM:
      return 1;
    default:
      return 0;
  }
}

}  // namespace

v1::PowerScope WidestPowerScope(const v1::Wes& wes) {
  v1::PowerScope widest = v1::POWER_SCOPE_UNSPECIFIED;
  for (int scope : wes.power_scopes()) {
    if (ScopeWidth(scope) > ScopeWidth(widest)) widest = static_cast<v1::PowerScope>(scope);
  }
  return widest;
}

bool FillLeaderboardEntry(const NodeState& node, absl::string_view model, absl::Time now,
                          const StalenessPolicy& policy, v1::LeaderboardEntry* e) {
  if (node.latest == nullptr) return false;
  if (model.empty()) {
    const v1::Frame& f = *node.latest;
    const absl::Duration age = AgeOf(node.window_end, now);
    FillCommon(node, age, age > policy.Threshold(node.interval_s), e);
    *e->mutable_wes() = f.node_wes();
    e->set_thermal_state(f.thermal_state());
    e->set_tokens_per_s(f.node_wes().tokens_per_s());
    e->set_memory_pressure(f.system().memory_pressure());
  } else {
    auto it = node.models.find(std::string(model));
    if (it == node.models.end()) return false;
    const ModelState& ms = it->second;
    const v1::ModelSample& m = ms.sample;
    const absl::Duration age = AgeOf(ms.window_end, now);
    FillCommon(node, age, age > policy.Threshold(ms.interval_s), e);
    e->set_model(std::string(model));
    *e->mutable_wes() = m.wes();
    e->set_thermal_state(m.wes().thermal_state());
    e->set_tokens_per_s(m.has_decode_tokens_per_s() ? m.decode_tokens_per_s()
                                                    : m.wes().tokens_per_s());
    if (m.ttft().has_p95_s()) e->set_ttft_p95_s(m.ttft().p95_s());
    if (m.tpot().has_p95_s()) e->set_tpot_p95_s(m.tpot().p95_s());
    if (m.has_requests_waiting()) e->set_queue(m.requests_waiting());
    if (m.has_kv_cache_usage()) e->set_kv_cache_usage(m.kv_cache_usage());
    e->set_memory_pressure(ms.memory_pressure);
  }
  e->set_power_scope(WidestPowerScope(e->wes()));
  return true;
}

v1::LeaderboardResponse BuildLeaderboard(const std::vector<NodeStatePtr>& nodes,
                                         absl::string_view model, absl::Time now,
                                         const StalenessPolicy& policy, size_t limit) {
  std::vector<v1::LeaderboardEntry> ranked;
  std::vector<v1::LeaderboardEntry> unranked;
  for (const NodeStatePtr& node : nodes) {
    v1::LeaderboardEntry e;
    if (!FillLeaderboardEntry(*node, model, now, policy, &e)) continue;
    if (e.stale() || !e.wes().has_penalized()) {
      unranked.push_back(std::move(e));
    } else {
      ranked.push_back(std::move(e));
    }
  }
  std::sort(ranked.begin(), ranked.end(),
            [](const v1::LeaderboardEntry& a, const v1::LeaderboardEntry& b) {
              return RanksAbove(a.wes(), a.node_id(), b.wes(), b.node_id());
            });
  // Unranked: fresh ones first (idle, no power), then stale; by node id within each.
  std::stable_sort(unranked.begin(), unranked.end(),
                   [](const v1::LeaderboardEntry& a, const v1::LeaderboardEntry& b) {
                     return !a.stale() && b.stale();
                   });

  v1::LeaderboardResponse out;
  out.set_model(std::string(model));
  for (size_t i = 0; i < ranked.size() && i < limit; ++i) {
    ranked[i].set_rank(static_cast<uint32_t>(i + 1));
    *out.add_entries() = std::move(ranked[i]);
  }
  for (size_t i = 0; i < unranked.size() && i < limit; ++i) {
    *out.add_unranked() = std::move(unranked[i]);
  }
  *out.mutable_as_of() = ToProtoTime(now);
  return out;
}

}  // namespace fleetwes::aggregator
