#include "aggregator/fleet/fleet_state.h"

#include <algorithm>
#include <utility>

#include "aggregator/proto_time.h"

namespace fleetwes::aggregator {

absl::Duration StalenessPolicy::Threshold(double interval_s) const {
  if (!(interval_s > 0)) return min;
  return std::max(min, absl::Seconds(multiple * interval_s));
}

absl::Duration AgeOf(absl::Time window_end, absl::Time now) {
  return std::max(absl::ZeroDuration(), now - window_end);
}

absl::Duration NodeState::DataAge(absl::Time now) const {
  if (latest == nullptr) return absl::InfiniteDuration();
  return AgeOf(window_end, now);
}

bool NodeState::Stale(absl::Time now, const StalenessPolicy& policy) const {
  return DataAge(now) > policy.Threshold(interval_s);
}

void FleetState::ApplyHello(const v1::Hello& hello, absl::Time received_at) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(hello.node_id());
  auto next =
      it == nodes_.end() ? std::make_shared<NodeState>() : std::make_shared<NodeState>(*it->second);
  if (it == nodes_.end()) {
    next->node_id = hello.node_id();
    next->first_seen = received_at;
  }
  next->last_seen = std::max(next->last_seen, received_at);
  next->evicted_frames = hello.evicted_frames();
  std::vector<PendingHello>& pending = pending_[hello.node_id()];
  std::erase_if(pending, [&](const PendingHello& p) { return p.boot_id == hello.boot_id(); });
  if (next->latest != nullptr && hello.boot_id() != next->boot_id) {
    // Newer or older than the current boot: its frames will tell.
    if (pending.size() >= kMaxPendingBoots) pending.erase(pending.begin());
    pending.push_back(PendingHello{
        hello.boot_id(),
        std::map<std::string, std::string>(hello.labels().begin(), hello.labels().end()),
        hello.agent_version()});
  } else {
    next->labels = std::map<std::string, std::string>(hello.labels().begin(), hello.labels().end());
    next->agent_version = hello.agent_version();
    next->boot_id = hello.boot_id();
    if (next->latest == nullptr && hello.interval_s() > 0) next->interval_s = hello.interval_s();
  }
  if (pending.empty()) pending_.erase(hello.node_id());
  nodes_[hello.node_id()] = std::move(next);
}

void FleetState::ApplyFrame(std::shared_ptr<const v1::Frame> frame, absl::Time received_at) {
  const absl::Time window_end = FromProtoTime(frame->window_end());
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(frame->node_id());
  auto next =
      it == nodes_.end() ? std::make_shared<NodeState>() : std::make_shared<NodeState>(*it->second);
  if (it == nodes_.end()) {
    next->node_id = frame->node_id();
    next->boot_id = frame->boot_id();
    next->first_seen = received_at;
  }
  next->last_seen = std::max(next->last_seen, received_at);
  if (next->latest == nullptr || window_end >= next->window_end) {
    // The representative sample per model: highest decode tokens/s within this frame.
    std::map<std::string, const v1::ModelSample*> best;
    for (const v1::ModelSample& m : frame->models()) {
      const v1::ModelSample*& slot = best[m.model()];
      if (slot == nullptr || m.decode_tokens_per_s() > slot->decode_tokens_per_s()) slot = &m;
    }
    for (const auto& [model, sample] : best) {
      ModelState& ms = next->models[model];
      ms.sample = *sample;
      ms.window_end = window_end;
      ms.interval_s = frame->interval_s();
      ms.node_thermal_state = frame->thermal_state();
      ms.memory_pressure = frame->system().memory_pressure();
      if (sample->wes().has_penalized()) {
        ms.last_wes = sample->wes();
        ms.last_wes_window_end = window_end;
      }
    }
    if (frame->boot_id() != next->boot_id) {
      // A newer boot: the identity its Hello brought takes over.
      auto pit = pending_.find(next->node_id);
      if (pit != pending_.end()) {
        std::vector<PendingHello>& pending = pit->second;
        for (auto p = pending.begin(); p != pending.end(); ++p) {
          if (p->boot_id != frame->boot_id()) continue;
          next->labels = std::move(p->labels);
          next->agent_version = std::move(p->agent_version);
          pending.erase(p);
          break;
        }
        if (pending.empty()) pending_.erase(pit);
      }
    }
    next->boot_id = frame->boot_id();
    next->interval_s = frame->interval_s();
    next->window_end = window_end;
    next->latest = std::move(frame);
  }
  nodes_[next->node_id] = std::move(next);
}

void FleetState::Restore(NodeState node) {
  std::shared_ptr<const v1::Frame> frame = std::move(node.latest);
  node.latest = nullptr;
  node.models.clear();
  const absl::Time received = node.last_seen;
  const std::string node_id = node.node_id;
  {
    absl::MutexLock lock(&mu_);
    nodes_[node_id] = std::make_shared<NodeState>(std::move(node));
  }
  if (frame != nullptr) ApplyFrame(std::move(frame), received);
}

std::vector<NodeStatePtr> FleetState::Snapshot() const {
  std::vector<NodeStatePtr> out;
  {
    absl::MutexLock lock(&mu_);
    out.reserve(nodes_.size());
    for (const auto& [id, node] : nodes_) out.push_back(node);
  }
  std::sort(out.begin(), out.end(),
            [](const NodeStatePtr& a, const NodeStatePtr& b) { return a->node_id < b->node_id; });
  return out;
}

NodeStatePtr FleetState::Get(absl::string_view node_id) const {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  return it == nodes_.end() ? nullptr : it->second;
}

size_t FleetState::size() const {
  absl::MutexLock lock(&mu_);
  return nodes_.size();
}

}  // namespace fleetwes::aggregator
