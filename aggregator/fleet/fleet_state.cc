#include "aggregator/fleet/fleet_state.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "aggregator/fleet/leaderboard.h"
#include "aggregator/proto_time.h"
#include "common/wes.h"

namespace fleetwes::aggregator {

namespace {

// How often a (node, leaderboard)'s cached baseline median is recomputed at most.
constexpr absl::Duration kBaselineRefresh = absl::Minutes(1);
// rank_1h_ago takes the latest history point at or before an hour ago, if it is at most this
// much older.
constexpr int64_t kRankAgoToleranceMinutes = 10;

int64_t MinuteOf(absl::Time t) {
  const int64_t s = absl::ToUnixSeconds(t);
  return s / 60 - (s % 60 < 0 ? 1 : 0);
}

std::string BoardName(const std::string& board_key) {
  return board_key.empty() ? std::string("the fleet") : board_key;
}

std::string RankName(uint32_t rank) {
  return rank == 0 ? std::string("unranked") : absl::StrCat("#", rank);
}

bool HasRankableValue(const v1::Wes& wes) {
  return wes.has_penalized() && wes.has_raw() && std::isfinite(wes.penalized()) &&
         std::isfinite(wes.raw());
}

v1::Event MakeEvent(absl::Time t, const std::string& node_id, const std::string& model,
                    v1::EventKind kind) {
  v1::Event e;
  *e.mutable_time() = ToProtoTime(t);
  e.set_node_id(node_id);
  e.set_model(model);
  e.set_kind(kind);
  return e;
}

v1::Event RankEvent(absl::Time t, const std::string& node_id, const std::string& board_key,
                    uint32_t old_rank, uint32_t new_rank) {
  v1::Event e = MakeEvent(t, node_id, board_key, v1::EVENT_KIND_RANK_CHANGE);
  e.set_old_rank(old_rank);
  e.set_new_rank(new_rank);
  e.set_message(absl::StrCat(node_id, " ", RankName(old_rank), " -> ", RankName(new_rank), " on ",
                             BoardName(board_key)));
  return e;
}

v1::Event StaleEvent(absl::Time t, const std::string& node_id, const std::string& board_key,
                     uint32_t old_rank) {
  v1::Event e = MakeEvent(t, node_id, board_key, v1::EVENT_KIND_STALE);
  e.set_old_rank(old_rank);
  e.set_new_rank(0);
  e.set_message(
      absl::StrCat(node_id, " went stale on ", BoardName(board_key),
                   old_rank == 0 ? std::string() : absl::StrCat(" (was #", old_rank, ")")));
  return e;
}

v1::Event ThermalEvent(absl::Time t, const std::string& node_id, const std::string& model,
                       v1::ThermalState from, v1::ThermalState to) {
  v1::Event e = MakeEvent(t, node_id, model, v1::EVENT_KIND_THERMAL_CHANGE);
  e.set_old_thermal_state(from);
  e.set_new_thermal_state(to);
  e.set_message(absl::StrCat(node_id, model.empty() ? std::string() : absl::StrCat(" ", model),
                             " thermal ", std::string(ThermalStateName(from)), " -> ",
                             std::string(ThermalStateName(to))));
  return e;
}

}  // namespace

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
  PutNodeLocked(std::move(next));
}

FleetState::FleetState(FleetStateOptions options) : options_(std::move(options)) {}

void FleetState::ApplyFrame(std::shared_ptr<const v1::Frame> frame, absl::Time received_at) {
  std::vector<v1::Event> events;
  {
    absl::MutexLock lock(&mu_);
    ApplyFrameLocked(std::move(frame), received_at, /*emit=*/true, &events);
  }
  Publish(std::move(events));
}

void FleetState::ApplyFrameLocked(std::shared_ptr<const v1::Frame> frame, absl::Time received_at,
                                  bool emit, std::vector<v1::Event>* events) {
  const absl::Time window_end = FromProtoTime(frame->window_end());
  auto it = nodes_.find(frame->node_id());
  const NodeStatePtr prev = it == nodes_.end() ? nullptr : it->second;
  auto next = prev == nullptr ? std::make_shared<NodeState>() : std::make_shared<NodeState>(*prev);
  if (prev == nullptr) {
    next->node_id = frame->node_id();
    next->boot_id = frame->boot_id();
    next->first_seen = received_at;
  }
  next->last_seen = std::max(next->last_seen, received_at);
  if (next->latest == nullptr || window_end >= next->window_end) {
    const std::string& node_id = next->node_id;
    const bool pressure = frame->system().memory_pressure();
    const absl::Time expiry = window_end + options_.staleness.Threshold(frame->interval_s());
    // The same frame again (a duplicate delivery) must not count twice in baselines.
    const bool repeat = prev != nullptr && prev->latest != nullptr &&
                        prev->latest->boot_id() == frame->boot_id() &&
                        prev->latest->seq() == frame->seq();
    // The representative sample per model: highest decode tokens/s within this frame, samples
    // of the synthetic probe only when the model has no other.
    std::map<std::string, const v1::ModelSample*> best;
    for (const v1::ModelSample& m : frame->models()) {
      const v1::ModelSample*& slot = best[m.model()];
      if (slot == nullptr || (slot->synthetic() && !m.synthetic()) ||
          (slot->synthetic() == m.synthetic() &&
           m.decode_tokens_per_s() > slot->decode_tokens_per_s())) {
        slot = &m;
      }
    }
    NoteThermal(node_id, "", frame->thermal_state(), received_at, emit, events);
    UpdateBoard("", node_id, frame->node_wes(), expiry,
                !repeat && frame->thermal_state() == v1::THERMAL_STATE_NORMAL && !pressure,
                received_at, emit, events);
    for (const auto& [model, sample] : best) {
      ModelState& ms = next->models[model];
      NoteThermal(node_id, model, sample->wes().thermal_state(), received_at, emit, events);
      ms.sample = *sample;
      ms.window_end = window_end;
      ms.interval_s = frame->interval_s();
      ms.node_thermal_state = frame->thermal_state();
      ms.memory_pressure = pressure;
      if (sample->wes().has_penalized()) {
        ms.last_wes = sample->wes();
        ms.last_wes_window_end = window_end;
      }
      UpdateBoard(model, node_id, sample->wes(), expiry,
                  !repeat && sample->wes().thermal_state() == v1::THERMAL_STATE_NORMAL &&
                      !pressure && !sample->synthetic(),
                  received_at, emit, events);
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
  PutNodeLocked(std::move(next));
}

void FleetState::PutNodeLocked(NodeStatePtr next) {
  for (const auto& [model, unused] : next->models) {
    if (auto bit = boards_.find(model); bit != boards_.end()) bit->second.serving.reset();
  }
  const std::string& id = next->node_id;
  nodes_[id] = std::move(next);
}

void FleetState::UpdateBoard(const std::string& board_key, const std::string& node_id,
                             const v1::Wes& wes, absl::Time expiry, bool baseline_eligible,
                             absl::Time now, bool emit, std::vector<v1::Event>* events) {
  Board& b = boards_[board_key];
  Track& t = tracks_[node_id][board_key];
  const bool rankable = expiry >= now && HasRankableValue(wes);
  uint32_t old_rank = 0;
  uint32_t new_rank = 0;
  if (rankable) {
    const auto [before, after] = b.ranked.Move(node_id, wes.penalized(), wes.raw());
    old_rank = static_cast<uint32_t>(before);
    new_rank = static_cast<uint32_t>(after);
  } else {
    old_rank = static_cast<uint32_t>(b.ranked.Remove(node_id));
  }
  if (auto v = b.valueless.find(node_id); v != b.valueless.end()) b.valueless.erase(v);
  if (auto v = b.swept.find(node_id); v != b.swept.end()) b.swept.erase(v);
  if (auto e = b.expiry_of.find(node_id); e != b.expiry_of.end()) {
    b.expiry.erase(std::make_pair(e->second, node_id));
    b.expiry_of.erase(e);
  }
  if (expiry < now) {
    // Stale on arrival (a late replay that is still the node's latest window).
    b.swept.insert(node_id);
    if (emit && old_rank != 0) events->push_back(StaleEvent(now, node_id, board_key, old_rank));
  } else {
    b.expiry.emplace(expiry, node_id);
    b.expiry_of.emplace(node_id, expiry);
    if (!rankable) b.valueless.insert(node_id);
    if (emit && old_rank != new_rank) {
      const uint32_t delta =
          (old_rank == 0 || new_rank == 0)
              ? std::numeric_limits<uint32_t>::max()
              : (old_rank > new_rank ? old_rank - new_rank : new_rank - old_rank);
      if (delta >= options_.rank_event_min_delta &&
          (options_.rank_event_interval <= absl::ZeroDuration() ||
           now - t.last_rank_event >= options_.rank_event_interval)) {
        events->push_back(RankEvent(now, node_id, board_key, old_rank, new_rank));
        t.last_rank_event = now;
      }
    }
  }
  RecordRank(&t, new_rank, now);
  if (baseline_eligible && wes.has_raw()) t.baseline.Add(now, wes.raw(), options_.baseline);
  if (!t.baseline_raw.has_value() || now - t.baseline_computed >= kBaselineRefresh) {
    t.baseline_raw = t.baseline.Median(now, options_.baseline);
    t.baseline_computed = now;
  }
}

void FleetState::NoteThermal(const std::string& node_id, const std::string& board_key,
                             v1::ThermalState state, absl::Time now, bool emit,
                             std::vector<v1::Event>* events) {
  if (state == v1::THERMAL_STATE_UNSPECIFIED) return;  // unknown says nothing
  Track& t = tracks_[node_id][board_key];
  if (t.reported_thermal == v1::THERMAL_STATE_UNSPECIFIED) {
    t.reported_thermal = state;  // first seen: no change yet
    return;
  }
  if (state == t.reported_thermal) return;
  const absl::Duration interval = options_.thermal_event_interval;
  if (state < t.reported_thermal && interval > absl::ZeroDuration() &&
      now - t.last_thermal_event < interval) {
    return;  // an improvement inside the interval: reported by a later frame if it lasts
  }
  if (emit) events->push_back(ThermalEvent(now, node_id, board_key, t.reported_thermal, state));
  t.reported_thermal = state;
  t.last_thermal_event = now;
}

void FleetState::RecordRank(Track* t, uint32_t rank, absl::Time now) {
  if (rank != t->rank) {
    t->previous_rank = t->rank > 0 ? std::optional<uint32_t>(t->rank) : std::nullopt;
    t->rank = rank;
  }
  const int64_t minute = MinuteOf(now);
  if (!t->points.empty() && t->points.back().minute == minute) {
    t->points.back().rank = rank;
  } else if (t->points.empty() || minute > t->points.back().minute) {
    t->points.push_back(RankPoint{minute, rank});
    if (t->points.size() > kRankHistoryPoints) t->points.erase(t->points.begin());
  }
}

std::optional<uint32_t> FleetState::RankAgo(const Track& t, absl::Time now) {
  const int64_t target = MinuteOf(now) - 60;
  for (auto p = t.points.rbegin(); p != t.points.rend(); ++p) {
    if (p->minute > target) continue;
    if (p->minute < target - kRankAgoToleranceMinutes || p->rank == 0) return std::nullopt;
    return p->rank;
  }
  return std::nullopt;
}

void FleetState::Restore(NodeState node) {
  std::shared_ptr<const v1::Frame> frame = std::move(node.latest);
  node.latest = nullptr;
  node.models.clear();
  const absl::Time received = node.last_seen;
  const std::string node_id = node.node_id;
  std::vector<v1::Event> unused;
  absl::MutexLock lock(&mu_);
  PutNodeLocked(std::make_shared<NodeState>(std::move(node)));
  if (frame != nullptr) ApplyFrameLocked(std::move(frame), received, /*emit=*/false, &unused);
}

std::vector<std::string> FleetState::NodeIds() const {
  std::vector<std::string> ids;
  absl::ReaderMutexLock lock(&mu_);
  ids.reserve(nodes_.size());
  for (const auto& [id, unused] : nodes_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<FleetState::SavedTrack> FleetState::SaveTracks(
    const std::vector<std::string>& node_ids) const {
  std::vector<SavedTrack> out;
  absl::ReaderMutexLock lock(&mu_);
  for (const std::string& node_id : node_ids) {
    auto tn = tracks_.find(node_id);
    if (tn == tracks_.end()) continue;
    for (const auto& [board_key, t] : tn->second) {
      SavedTrack& saved = out.emplace_back();
      saved.node_id = node_id;
      saved.board = board_key;
      saved.rank = t.rank;
      saved.previous_rank = t.previous_rank;
      saved.points = t.points;
      saved.last_rank_event = t.last_rank_event;
      saved.baseline = t.baseline;
    }
  }
  return out;
}

size_t FleetState::RestoreTracks(std::vector<SavedTrack> tracks, absl::Time now) {
  const int64_t now_minute = MinuteOf(now);
  size_t restored = 0;
  absl::MutexLock lock(&mu_);
  for (SavedTrack& saved : tracks) {
    auto tn = tracks_.find(saved.node_id);
    if (tn == tracks_.end()) continue;
    auto tb = tn->second.find(saved.board);
    if (tb == tn->second.end()) continue;
    // The saved track replaces the one Restore() began: its single point holds the rank the node
    // had when it was re-filed, which depends on the order nodes were restored in.
    Track& t = tb->second;
    t.rank = saved.rank;
    t.previous_rank = saved.previous_rank;
    t.points.clear();
    for (const RankPoint& p : saved.points) {
      if (p.minute > now_minute) break;
      if (!t.points.empty() && p.minute <= t.points.back().minute) continue;
      t.points.push_back(p);
    }
    if (t.points.size() > kRankHistoryPoints) {
      t.points.erase(t.points.begin(), t.points.end() - kRankHistoryPoints);
    }
    t.last_rank_event = saved.last_rank_event;
    t.baseline = std::move(saved.baseline);
    t.baseline_raw = t.baseline.Median(now, options_.baseline);
    t.baseline_computed = now;
    ++restored;
  }
  return restored;
}

size_t FleetState::Sweep(absl::Time now) {
  std::vector<v1::Event> events;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [board_key, b] : boards_) {
      while (!b.expiry.empty() && b.expiry.begin()->first < now) {
        std::string node_id = std::move(b.expiry.extract(b.expiry.begin()).value().second);
        b.expiry_of.erase(node_id);
        const uint32_t old_rank = static_cast<uint32_t>(b.ranked.Remove(node_id));
        if (auto v = b.valueless.find(node_id); v != b.valueless.end()) b.valueless.erase(v);
        RecordRank(&tracks_[node_id][board_key], 0, now);
        events.push_back(StaleEvent(now, node_id, board_key, old_rank));
        b.swept.insert(std::move(node_id));
      }
    }
  }
  const size_t swept = events.size();
  Publish(std::move(events));
  return swept;
}

void FleetState::Publish(std::vector<v1::Event> events) {
  if (events.empty()) return;
  EventSink* sink = sink_.load(std::memory_order_acquire);
  if (sink != nullptr) sink->Publish(std::move(events));
}

FleetState::Listed FleetState::ListedLocked(const std::string& node_id,
                                            const std::string& board_key, uint32_t rank,
                                            absl::Time now) const {
  Listed l;
  l.rank = rank;
  if (auto n = nodes_.find(node_id); n != nodes_.end()) l.node = n->second;
  auto tn = tracks_.find(node_id);
  if (tn == tracks_.end()) return l;
  auto tb = tn->second.find(board_key);
  if (tb == tn->second.end()) return l;
  const Track& t = tb->second;
  l.previous_rank = t.previous_rank;
  l.rank_1h_ago = RankAgo(t, now);
  l.baseline_raw = t.baseline_raw;
  return l;
}

v1::LeaderboardResponse FleetState::Leaderboard(absl::string_view model, absl::Time now,
                                                size_t limit) const {
  const std::string board_key(model);
  std::vector<Listed> ranked;
  std::vector<Listed> unranked;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto bit = boards_.find(board_key);
    if (bit != boards_.end()) {
      const Board& b = bit->second;
      // Gone stale since the last sweep: skipped here, listed as stale.
      std::vector<absl::string_view> gone;
      for (auto e = b.expiry.begin(); e != b.expiry.end() && e->first < now; ++e) {
        gone.push_back(e->second);
      }
      const absl::flat_hash_set<absl::string_view> gone_set(gone.begin(), gone.end());
      ranked.reserve(std::min(limit, b.ranked.size()));
      uint32_t rank = 0;
      b.ranked.ForEach([&](const RankIndex::Entry& e) {
        if (ranked.size() >= limit) return false;
        if (!gone_set.contains(e.node_id)) {
          ranked.push_back(ListedLocked(e.node_id, board_key, ++rank, now));
        }
        return true;
      });
      for (const std::string& id : b.valueless) {
        if (unranked.size() >= limit) break;
        if (!gone_set.contains(id)) unranked.push_back(ListedLocked(id, board_key, 0, now));
      }
      // Then the stale ones by node id: swept and gone merged.
      std::sort(gone.begin(), gone.end());
      auto s = b.swept.begin();
      auto g = gone.begin();
      while (unranked.size() < limit && (s != b.swept.end() || g != gone.end())) {
        if (g == gone.end() || (s != b.swept.end() && absl::string_view(*s) < *g)) {
          unranked.push_back(ListedLocked(*s++, board_key, 0, now));
        } else {
          unranked.push_back(ListedLocked(std::string(*g++), board_key, 0, now));
        }
      }
    }
  }
  v1::LeaderboardResponse out;
  out.set_model(board_key);
  auto fill = [&](const Listed& l, v1::LeaderboardEntry* e) {
    if (l.node == nullptr || !FillLeaderboardEntry(*l.node, model, now, options_.staleness, e)) {
      return false;
    }
    if (l.rank > 0) e->set_rank(l.rank);
    if (l.previous_rank.has_value()) e->set_previous_rank(*l.previous_rank);
    if (l.rank_1h_ago.has_value()) e->set_rank_1h_ago(*l.rank_1h_ago);
    if (l.baseline_raw.has_value() && e->wes().has_penalized()) {
      if (std::optional<double> loss = BaselineLossPct(*l.baseline_raw, e->wes().penalized())) {
        e->set_baseline_loss_pct(*loss);
      }
    }
    return true;
  };
  for (const Listed& l : ranked) {
    if (!fill(l, out.add_entries())) out.mutable_entries()->RemoveLast();
  }
  for (const Listed& l : unranked) {
    if (!fill(l, out.add_unranked())) out.mutable_unranked()->RemoveLast();
  }
  *out.mutable_as_of() = ToProtoTime(now);
  return out;
}

uint32_t FleetState::RankOf(absl::string_view node_id, absl::string_view model) const {
  absl::ReaderMutexLock lock(&mu_);
  auto bit = boards_.find(model);
  return bit == boards_.end() ? 0 : static_cast<uint32_t>(bit->second.ranked.Rank(node_id));
}

std::optional<double> FleetState::BaselineOf(absl::string_view node_id, absl::string_view model,
                                             absl::Time now) const {
  absl::ReaderMutexLock lock(&mu_);
  auto tn = tracks_.find(node_id);
  if (tn == tracks_.end()) return std::nullopt;
  auto tb = tn->second.find(model);
  if (tb == tn->second.end()) return std::nullopt;
  return tb->second.baseline.Median(now, options_.baseline);
}

std::vector<NodeStatePtr> FleetState::ServingModel(absl::string_view model) const {
  return Serving(model)->nodes;
}

std::shared_ptr<const ServingSet> FleetState::Serving(absl::string_view model) const {
  {
    absl::ReaderMutexLock lock(&mu_);
    auto bit = boards_.find(model);
    if (bit == boards_.end()) return std::make_shared<const ServingSet>();
    if (bit->second.serving != nullptr) return bit->second.serving;
  }
  absl::MutexLock lock(&mu_);
  auto bit = boards_.find(model);
  if (bit == boards_.end()) return std::make_shared<const ServingSet>();
  const Board& b = bit->second;
  if (b.serving != nullptr) return b.serving;  // built by another reader meanwhile
  auto set = std::make_shared<ServingSet>();
  set->nodes.reserve(b.ranked.size() + b.valueless.size() + b.swept.size());
  auto add = [&](const std::string& id) {
    if (auto n = nodes_.find(id); n != nodes_.end()) set->nodes.push_back(n->second);
  };
  b.ranked.ForEach([&](const RankIndex::Entry& e) {
    add(e.node_id);
    return true;
  });
  for (const std::string& id : b.valueless) add(id);
  for (const std::string& id : b.swept) add(id);
  std::sort(set->nodes.begin(), set->nodes.end(),
            [](const NodeStatePtr& x, const NodeStatePtr& y) { return x->node_id < y->node_id; });
  const std::string key(model);
  std::erase_if(set->nodes, [&key](const NodeStatePtr& n) { return !n->models.contains(key); });
  set->models.reserve(set->nodes.size());
  for (const NodeStatePtr& n : set->nodes) set->models.push_back(&n->models.find(key)->second);
  b.serving = set;
  return set;
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
