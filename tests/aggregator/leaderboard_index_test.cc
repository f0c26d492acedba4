// The ranked leaderboard index of the fleet state: ranking rules, staleness and sweep, rank
// history, baselines, events, synthetic samples, ServingModel.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "aggregator/fleet/baseline.h"
#include "aggregator/fleet/events.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/fleet/leaderboard.h"
#include "aggregator/fleet/rank_index.h"
#include "aggregator/ingest/recompute_wes.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::AddModel;
using testing::MakeFrame;
using testing::ModelSpec;
using testing::T0;

// Collects published events; checks that the fleet state's lock is not held while publishing
// (a read from inside Publish would deadlock otherwise).
class RecordingSink : public EventSink {
 public:
  void Publish(std::vector<v1::Event> events) override {
    if (state != nullptr) state->RankOf("probe", "");
    absl::MutexLock lock(&mu_);
    for (v1::Event& e : events) events_.push_back(std::move(e));
  }
  std::vector<v1::Event> Take() {
    absl::MutexLock lock(&mu_);
    return std::exchange(events_, {});
  }
  std::vector<v1::Event> Take(v1::EventKind kind) {
    std::vector<v1::Event> out;
    for (v1::Event& e : Take()) {
      if (e.kind() == kind) out.push_back(std::move(e));
    }
    return out;
  }
  const FleetState* state = nullptr;

 private:
  absl::Mutex mu_;
  std::vector<v1::Event> events_ ABSL_GUARDED_BY(mu_);
};

std::shared_ptr<const v1::Frame> Frame(const std::string& node, uint64_t seq, absl::Time end,
                                       const ModelSpec& spec = {}, bool pressure = false) {
  v1::Frame f = MakeFrame(node, "boot-" + node, seq, end, spec);
  f.mutable_system()->set_memory_pressure(pressure);
  RecomputeWes(ThermalPenalties{}, &f);
  return std::make_shared<const v1::Frame>(std::move(f));
}

std::vector<std::string> Order(const v1::LeaderboardResponse& r) {
  std::vector<std::string> out;
  for (const v1::LeaderboardEntry& e : r.entries()) out.push_back(e.node_id());
  return out;
}

std::vector<std::string> Unranked(const v1::LeaderboardResponse& r) {
  std::vector<std::string> out;
  for (const v1::LeaderboardEntry& e : r.unranked()) out.push_back(e.node_id());
  return out;
}

TEST(RankIndexTest, OrdersByPenalizedThenRawThenNodeId) {
  RankIndex index;
  EXPECT_EQ(index.Upsert("c", 1.0, 1.0), 1u);
  EXPECT_EQ(index.Upsert("a", 1.0, 1.0), 1u);   // ties: node id
  EXPECT_EQ(index.Upsert("b", 1.0, 1.25), 1u);  // same penalized, higher raw
  EXPECT_EQ(index.Upsert("d", 2.0, 2.0), 1u);
  EXPECT_EQ(index.Rank("d"), 1u);
  EXPECT_EQ(index.Rank("b"), 2u);
  EXPECT_EQ(index.Rank("a"), 3u);
  EXPECT_EQ(index.Rank("c"), 4u);
  EXPECT_EQ(index.Rank("zz"), 0u);
  EXPECT_EQ(index.Upsert("d", 0.5, 0.5), 4u);  // moves down
  EXPECT_EQ(index.Upsert("d", 0.5, 0.5), 4u);  // unchanged
  EXPECT_EQ(index.size(), 4u);
  EXPECT_EQ(index.Remove("b"), 1u);
  EXPECT_EQ(index.Remove("b"), 0u);
  std::vector<std::string> order;
  index.ForEach([&](const RankIndex::Entry& e) {
    order.push_back(e.node_id);
    return true;
  });
  EXPECT_EQ(order, (std::vector<std::string>{"a", "c", "d"}));
}

TEST(RankIndexTest, MatchesAFullSortUnderRandomUpdates) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> value(0.1, 3.0);
  RankIndex index;
  std::map<std::string, std::pair<double, double>> truth;
  for (int i = 0; i < 3000; ++i) {
    const std::string id = absl::StrCat("n", rng() % 200);
    if (rng() % 10 == 0) {
      index.Remove(id);
      truth.erase(id);
      continue;
    }
    // Coarse values so that ties happen.
    const double p = std::round(value(rng) * 4) / 4;
    const double r = p * (rng() % 2 == 0 ? 1.0 : 1.25);
    index.Upsert(id, p, r);
    truth[id] = {p, r};
  }
  std::vector<std::string> expected;
  for (const auto& [id, v] : truth) expected.push_back(id);
  std::sort(expected.begin(), expected.end(), [&](const std::string& a, const std::string& b) {
    v1::Wes wa, wb;
    wa.set_penalized(truth[a].first);
    wa.set_raw(truth[a].second);
    wb.set_penalized(truth[b].first);
    wb.set_raw(truth[b].second);
    return RanksAbove(wa, a, wb, b);
  });
  ASSERT_EQ(index.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(index.Rank(expected[i]), i + 1);
}

// A plain reference for RankIndex: the same order in a std::set, ranks by counting.
class ReferenceIndex {
 public:
  using Key = std::tuple<double, double, std::string>;
  std::pair<size_t, size_t> Move(const std::string& id, double p, double r) {
    const size_t before = Rank(id);
    if (auto it = values_.find(id); it != values_.end()) {
      order_.erase(Key{it->second.first, it->second.second, id});
    }
    values_[id] = {p, r};
    order_.insert(Key{p, r, id});
    return {before, Rank(id)};
  }
  size_t Remove(const std::string& id) {
    const size_t rank = Rank(id);
    if (auto it = values_.find(id); it != values_.end()) {
      order_.erase(Key{it->second.first, it->second.second, id});
      values_.erase(it);
    }
    return rank;
  }
  size_t Rank(const std::string& id) const {
    auto it = values_.find(id);
    if (it == values_.end()) return 0;
    const auto at = order_.find(Key{it->second.first, it->second.second, id});
    return static_cast<size_t>(std::distance(order_.begin(), at)) + 1;
  }
  std::vector<Key> Top(size_t n) const {
    std::vector<Key> out;
    for (const Key& k : order_) {
      if (out.size() == n) break;
      out.push_back(k);
    }
    return out;
  }
  size_t size() const { return values_.size(); }

 private:
  struct Above {
    bool operator()(const Key& a, const Key& b) const {
      if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
      if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) > std::get<1>(b);
      return std::get<2>(a) < std::get<2>(b);
    }
  };
  std::set<Key, Above> order_;
  std::map<std::string, std::pair<double, double>> values_;
};

std::vector<ReferenceIndex::Key> Top(const RankIndex& index, size_t n) {
  std::vector<ReferenceIndex::Key> out;
  index.ForEach([&](const RankIndex::Entry& e) {
    if (out.size() == n) return false;
    out.emplace_back(e.penalized, e.raw, e.node_id);
    return true;
  });
  return out;
}

// Every operation's answer equals the reference's, while the index grows past several block
// splits, shrinks through merges down to empty and grows again; values are coarse so that many
// nodes tie on both and are ordered by node id.
TEST(RankIndexTest, MatchesAReferenceThroughBlockSplitsAndMerges) {
  std::mt19937 rng(42);
  RankIndex index;
  ReferenceIndex ref;
  const size_t kIds = 8 * RankIndex::kMaxBlock;
  auto id_of = [](size_t i) { return absl::StrCat(i % 3 == 0 ? "edge-" : "n", i); };
  auto value = [&] { return static_cast<double>(rng() % 16) / 4; };
  size_t max_blocks = 0;
  // Phases: grow (mostly inserts), churn, shrink (mostly removes), grow again.
  for (int remove_pct : {5, 30, 95, 20}) {
    for (int step = 0; step < 4000; ++step) {
      const std::string id = id_of(rng() % kIds);
      const int op = static_cast<int>(rng() % 100);
      if (op < remove_pct) {
        ASSERT_EQ(index.Remove(id), ref.Remove(id)) << id;
      } else {
        const double p = value();
        const double r = rng() % 2 == 0 ? p : value();
        ASSERT_EQ(index.Move(id, p, r), ref.Move(id, p, r)) << id << " " << p << " " << r;
      }
      ASSERT_EQ(index.size(), ref.size());
      // Every block but a lone one holds kMinBlock..kMaxBlock items.
      ASSERT_LE(index.blocks(), std::max<size_t>(1, index.size() / RankIndex::kMinBlock));
      ASSERT_GE(index.blocks() * RankIndex::kMaxBlock, index.size());
      max_blocks = std::max(max_blocks, index.blocks());
      if (step % 97 == 0) {
        const std::string probe = id_of(rng() % kIds);
        ASSERT_EQ(index.Rank(probe), ref.Rank(probe)) << probe;
        ASSERT_EQ(index.Contains(probe), ref.Rank(probe) != 0);
        const size_t n = rng() % 700;
        ASSERT_EQ(Top(index, n), ref.Top(n));
      }
    }
    // The whole order, and every node's rank.
    const std::vector<ReferenceIndex::Key> all = ref.Top(ref.size());
    ASSERT_EQ(Top(index, all.size() + 1), all);
    for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(index.Rank(std::get<2>(all[i])), i + 1);
  }
  EXPECT_GE(max_blocks, 3u);
}

// Exactly at the block bounds: kMaxBlock items fill one block, one more splits it; removing
// below kMinBlock merges; the index empties and refills. Inserted at the end, at the front and
// in the middle, as a fleet whose nodes arrive in order would.
TEST(RankIndexTest, KeepsItsOrderAtTheBlockBounds) {
  for (int where : {0, 1, 2}) {
    RankIndex index;
    ReferenceIndex ref;
    auto value = [&](size_t i) -> double {
      if (where == 0) return -static_cast<double>(i);  // each below the others: appended
      if (where == 1) return static_cast<double>(i);   // each above the others: at the front
      return static_cast<double>(i % 2 == 0 ? i : 2 * RankIndex::kMaxBlock - i);
    };
    for (size_t i = 0; i < RankIndex::kMaxBlock; ++i) {
      const std::string id = absl::StrFormat("n%05d", i);
      ASSERT_EQ(index.Move(id, value(i), 1), ref.Move(id, value(i), 1));
    }
    EXPECT_EQ(index.blocks(), 1u);
    ASSERT_EQ(index.Move("extra", 0.5, 1), ref.Move("extra", 0.5, 1));
    EXPECT_EQ(index.blocks(), 2u);
    ASSERT_EQ(Top(index, 10'000), ref.Top(10'000));
    // Removing from the front until the first block is short merges it with the second.
    while (index.size() > 1) {
      const std::string id = std::get<2>(ref.Top(1)[0]);
      ASSERT_EQ(index.Remove(id), 1u);
      ref.Remove(id);
      ASSERT_EQ(index.Rank("extra"), ref.Rank("extra"));
      if (index.size() < 2 * RankIndex::kMinBlock) ASSERT_EQ(index.blocks(), 1u);
    }
    const std::string last = std::get<2>(ref.Top(1)[0]);
    ASSERT_EQ(index.Remove(last), 1u);
    EXPECT_EQ(index.size(), 0u);
    EXPECT_EQ(index.blocks(), 0u);
    EXPECT_EQ(index.Rank(last), 0u);
    EXPECT_FALSE(index.Contains(last));
    EXPECT_EQ(index.Move("again", 1, 1), (std::pair<size_t, size_t>{0, 1}));
    EXPECT_EQ(index.Move("again", 2, 1), (std::pair<size_t, size_t>{1, 1}));
    EXPECT_EQ(Top(index, 5), (std::vector<ReferenceIndex::Key>{{2.0, 1.0, "again"}}));
  }
}

class IndexTest : public ::testing::Test {
 protected:
  IndexTest() {
    sink_.state = &state_;
    state_.SetEventSink(&sink_);
  }

  void Add(const std::string& node, const ModelSpec& spec, absl::Time end, bool pressure = false) {
    state_.ApplyFrame(Frame(node, ++seq_[node], end, spec, pressure), end);
  }
  void AddFourNodes(absl::Time end = T0()) {
    Add("spare-04", {.tokens_per_s = 12, .watts = 95}, end);
    Add("lab-03", {.tokens_per_s = 92, .watts = 220, .state = v1::THERMAL_STATE_SERIOUS}, end);
    Add("devbox-02", {.tokens_per_s = 180, .watts = 340, .state = v1::THERMAL_STATE_FAIR}, end);
    Add("studio-01", {.tokens_per_s = 89, .watts = 60}, end);
  }
  v1::LeaderboardResponse Board(absl::string_view model, absl::Time now, size_t limit = 100) {
    return state_.Leaderboard(model, now, limit);
  }

  std::map<std::string, uint64_t> seq_;
  FleetState state_{FleetStateOptions{.rank_event_interval = absl::Seconds(60),
                                      .baseline = {.window = absl::Hours(24), .min_samples = 3}}};
  RecordingSink sink_;
};

TEST_F(IndexTest, FourNodeFleetRanksExactlyOnEveryBoard) {
  AddFourNodes();
  for (absl::string_view model : {"", "llama3-8b"}) {
    const v1::LeaderboardResponse r = Board(model, T0() + absl::Seconds(1));
    EXPECT_EQ(Order(r), (std::vector<std::string>{"studio-01", "devbox-02", "lab-03", "spare-04"}));
    for (int i = 0; i < r.entries_size(); ++i) {
      EXPECT_EQ(r.entries(i).rank(), static_cast<uint32_t>(i + 1));
      EXPECT_EQ(r.entries(i).power_scope(), v1::POWER_SCOPE_GPU_BOARD);
    }
    EXPECT_DOUBLE_EQ(r.entries(0).wes().penalized(), 89.0 / 60.0);
    EXPECT_DOUBLE_EQ(r.entries(2).wes().penalized(), 92.0 / (220.0 * 1.75));
    EXPECT_EQ(state_.RankOf("lab-03", model), 3u);
  }
}

// The index answers exactly what the full sort over a snapshot answers, through random updates,
// idle nodes, stale nodes (swept or not yet) and limits.
TEST_F(IndexTest, AgreesWithTheSnapshotLeaderboard) {
  std::mt19937 rng(11);
  absl::Time now = T0();
  for (int step = 0; step < 400; ++step) {
    now += absl::Milliseconds(250);
    const std::string node = absl::StrCat("node-", rng() % 60);
    ModelSpec spec{.tokens_per_s = static_cast<double>(rng() % 5 == 0 ? 0 : 10 + rng() % 90),
                   .watts = static_cast<double>(20 + rng() % 4 * 10),
                   .state = static_cast<v1::ThermalState>(1 + rng() % 4)};
    if (rng() % 3 == 0) spec.model = "qwen2-7b";
    // Some frames end in the past (stale on arrival or soon).
    const absl::Time end = now - absl::Seconds(rng() % 10 == 0 ? 12 : 0);
    state_.ApplyFrame(Frame(node, ++seq_[node], end, spec), now);
    if (step % 37 == 0) state_.Sweep(now);
    if (step % 20 != 0) continue;
    for (absl::string_view model : {"", "llama3-8b", "qwen2-7b"}) {
      for (size_t limit : {5u, 100u}) {
        v1::LeaderboardResponse got = Board(model, now, limit);
        for (auto* list : {got.mutable_entries(), got.mutable_unranked()}) {
          for (v1::LeaderboardEntry& e : *list) {
            e.clear_previous_rank();
            e.clear_rank_1h_ago();
            e.clear_baseline_loss_pct();
          }
        }
        const v1::LeaderboardResponse want =
            BuildLeaderboard(state_.Snapshot(), model, now, state_.options().staleness, limit);
        EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, want))
            << "step " << step << " model " << model << "\ngot:\n"
            << got.DebugString() << "\nwant:\n"
            << want.DebugString();
      }
    }
  }
}

TEST_F(IndexTest, StaleNodesAreSkippedAtOnceAndSweptWithAnEvent) {
  AddFourNodes();
  Add("later-05", {.tokens_per_s = 10, .watts = 100}, T0() + absl::Seconds(20));
  sink_.Take();
  // 11 s after T0 the four are stale (10 s minimum); not swept yet, readers skip them.
  const absl::Time now = T0() + absl::Seconds(21);
  v1::LeaderboardResponse r = Board("", now);
  EXPECT_EQ(Order(r), std::vector<std::string>{"later-05"});
  EXPECT_EQ(r.entries(0).rank(), 1u);
  EXPECT_EQ(Unranked(r),
            (std::vector<std::string>{"devbox-02", "lab-03", "spare-04", "studio-01"}));
  for (const v1::LeaderboardEntry& e : r.unranked()) EXPECT_TRUE(e.stale());
  EXPECT_EQ(state_.RankOf("studio-01", ""), 1u);  // still in the index

  // Two boards (fleet, llama3-8b) x four nodes leave.
  EXPECT_EQ(state_.Sweep(now), 8u);
  EXPECT_EQ(state_.RankOf("studio-01", ""), 0u);
  EXPECT_EQ(state_.RankOf("later-05", ""), 1u);
  std::vector<v1::Event> stale = sink_.Take(v1::EVENT_KIND_STALE);
  ASSERT_EQ(stale.size(), 8u);
  auto studio = std::find_if(stale.begin(), stale.end(), [](const v1::Event& e) {
    return e.node_id() == "studio-01" && e.model().empty();
  });
  ASSERT_NE(studio, stale.end());
  EXPECT_EQ(studio->old_rank(), 1u);
  EXPECT_EQ(studio->new_rank(), 0u);
  EXPECT_EQ(studio->message(), "studio-01 went stale on the fleet (was #1)");
  EXPECT_EQ(Order(Board("", now)), Order(r));  // the same answer once swept
  EXPECT_EQ(Unranked(Board("", now)), Unranked(r));
  EXPECT_EQ(state_.Sweep(now), 0u);  // nothing more

  // A fresh frame brings a node back, with a rank event (a minute after its last one).
  const absl::Time later = now + absl::Seconds(60);
  Add("studio-01", {.tokens_per_s = 89, .watts = 60}, later);
  EXPECT_EQ(Order(Board("", later)), std::vector<std::string>{"studio-01"});
  std::vector<v1::Event> back = sink_.Take(v1::EVENT_KIND_RANK_CHANGE);
  ASSERT_EQ(back.size(), 2u);  // fleet and llama3-8b
  EXPECT_EQ(back[0].message(), "studio-01 unranked -> #1 on the fleet");
  EXPECT_EQ(back[0].old_rank(), 0u);
  EXPECT_EQ(back[0].new_rank(), 1u);
}

TEST_F(IndexTest, RankChangeEventsAreTheMoversOwnAndRateLimited) {
  AddFourNodes();
  // Entering the ranking was each node's first event; the next may come a minute later.
  EXPECT_EQ(sink_.Take(v1::EVENT_KIND_RANK_CHANGE).size(), 8u);
  absl::Time t = T0() + absl::Seconds(60);
  // spare-04 jumps from #4 to #1; the three it passes are shifted, not events.
  Add("spare-04", {.tokens_per_s = 200, .watts = 95}, t);
  std::vector<v1::Event> ev = sink_.Take(v1::EVENT_KIND_RANK_CHANGE);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].node_id(), "spare-04");
  EXPECT_EQ(ev[0].model(), "");
  EXPECT_EQ(ev[0].old_rank(), 4u);
  EXPECT_EQ(ev[0].new_rank(), 1u);
  EXPECT_EQ(ev[0].message(), "spare-04 #4 -> #1 on the fleet");
  EXPECT_EQ(ev[1].message(), "spare-04 #4 -> #1 on llama3-8b");
  EXPECT_EQ(ev[1].model(), "llama3-8b");
  EXPECT_EQ(state_.RankOf("studio-01", ""), 2u);
  // The shifted nodes' next frames, at their new ranks, are not events either.
  Add("studio-01", {.tokens_per_s = 89, .watts = 60}, t);
  EXPECT_TRUE(sink_.Take(v1::EVENT_KIND_RANK_CHANGE).empty());

  // Falling back within the minute: rate-limited, no event; after it, the next move is one.
  t += absl::Seconds(10);
  Add("spare-04", {.tokens_per_s = 12, .watts = 95}, t);
  EXPECT_TRUE(sink_.Take(v1::EVENT_KIND_RANK_CHANGE).empty());
  EXPECT_EQ(state_.RankOf("spare-04", ""), 4u);
  t += absl::Seconds(60);
  Add("spare-04", {.tokens_per_s = 100, .watts = 95}, t);
  ev = sink_.Take(v1::EVENT_KIND_RANK_CHANGE);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].message(), "spare-04 #4 -> #2 on the fleet");
  EXPECT_EQ(ev[0].time().seconds(), absl::ToUnixSeconds(t));
}

TEST_F(IndexTest, RankMovesBelowTheMinimumDeltaAreNotEvents) {
  FleetState state(
      FleetStateOptions{.rank_event_min_delta = 2, .rank_event_interval = absl::ZeroDuration()});
  RecordingSink sink;
  state.SetEventSink(&sink);
  for (int i = 0; i < 4; ++i) {
    state.ApplyFrame(Frame(absl::StrCat("n", i), 1, T0(), {.tokens_per_s = 10.0 + i}), T0());
  }
  sink.Take();
  state.ApplyFrame(Frame("n0", 2, T0(), {.tokens_per_s = 11.5}), T0());  // #4 -> #3
  EXPECT_TRUE(sink.Take(v1::EVENT_KIND_RANK_CHANGE).empty());
  state.ApplyFrame(Frame("n1", 2, T0(), {.tokens_per_s = 20}), T0());  // #4 -> #1
  EXPECT_EQ(sink.Take(v1::EVENT_KIND_RANK_CHANGE).size(), 2u);
}

TEST_F(IndexTest, ThermalChangesOfNodesAndModelsAreEvents) {
  Add("edge-7", {.tokens_per_s = 50, .watts = 60}, T0());
  EXPECT_TRUE(sink_.Take(v1::EVENT_KIND_THERMAL_CHANGE).empty());  // first frame: no change
  Add("edge-7", {.tokens_per_s = 50, .watts = 60, .state = v1::THERMAL_STATE_SERIOUS},
      T0() + absl::Seconds(2));
  std::vector<v1::Event> ev = sink_.Take(v1::EVENT_KIND_THERMAL_CHANGE);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].model(), "");
  EXPECT_EQ(ev[0].old_thermal_state(), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(ev[0].new_thermal_state(), v1::THERMAL_STATE_SERIOUS);
  EXPECT_EQ(ev[0].message(), "edge-7 thermal normal -> serious");
  EXPECT_EQ(ev[1].model(), "llama3-8b");
  EXPECT_EQ(ev[1].message(), "edge-7 llama3-8b thermal normal -> serious");
  Add("edge-7", {.tokens_per_s = 50, .watts = 60, .state = v1::THERMAL_STATE_SERIOUS},
      T0() + absl::Seconds(4));
  EXPECT_TRUE(sink_.Take(v1::EVENT_KIND_THERMAL_CHANGE).empty());
}

TEST_F(IndexTest, ThermalFlappingIsCoalescedAndTheLastingStateStillReported) {
  // Default thermal_event_interval: 30 s. Frames every 2 s alternate normal and fair.
  absl::Time t = T0();
  Add("edge-7", {.tokens_per_s = 50, .watts = 60}, t);
  std::vector<std::string> seen;
  for (int i = 1; i <= 20; ++i) {
    t += absl::Seconds(2);
    Add("edge-7",
        {.tokens_per_s = 50,
         .watts = 60,
         .state = i % 2 == 1 ? v1::THERMAL_STATE_FAIR : v1::THERMAL_STATE_NORMAL},
        t);
    for (const v1::Event& e : sink_.Take(v1::EVENT_KIND_THERMAL_CHANGE)) {
      if (e.model().empty())
        seen.push_back(
            absl::StrCat(e.time().seconds() - absl::ToUnixSeconds(T0()), " ", e.message()));
    }
  }
  // Worse at 2 s: at once. Better again: held back until 30 s after that report (32 s); worse
  // again at 34 s: at once; better again at 36 and 40 s: held back.
  EXPECT_EQ(seen, (std::vector<std::string>{"2 edge-7 thermal normal -> fair",
                                            "32 edge-7 thermal fair -> normal",
                                            "34 edge-7 thermal normal -> fair"}));
  // A jump to critical is never held back, nor is a state that stays.
  t += absl::Seconds(2);
  Add("edge-7", {.tokens_per_s = 50, .watts = 60, .state = v1::THERMAL_STATE_CRITICAL}, t);
  std::vector<v1::Event> ev = sink_.Take(v1::EVENT_KIND_THERMAL_CHANGE);
  ASSERT_EQ(ev.size(), 2u);  // the node and its model
  EXPECT_EQ(ev[0].old_thermal_state(), v1::THERMAL_STATE_FAIR);
  EXPECT_EQ(ev[0].new_thermal_state(), v1::THERMAL_STATE_CRITICAL);
  t += absl::Seconds(2);
  Add("edge-7", {.tokens_per_s = 50, .watts = 60}, t);  // cooled down, inside the interval
  EXPECT_TRUE(sink_.Take(v1::EVENT_KIND_THERMAL_CHANGE).empty());
  t += absl::Seconds(30);
  Add("edge-7", {.tokens_per_s = 50, .watts = 60}, t);  // still normal: now reported
  ev = sink_.Take(v1::EVENT_KIND_THERMAL_CHANGE);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].message(), "edge-7 thermal critical -> normal");
}

TEST_F(IndexTest, RankHistoryKeepsThePreviousRankAndTheRankAnHourAgo) {
  // a leads b; both report every 2 s for 70 minutes; at minute 65 b overtakes a.
  absl::Time t = T0();
  for (int i = 0; i < 70 * 30; ++i, t += absl::Seconds(2)) {
    const bool overtaken = t >= T0() + absl::Minutes(65);
    Add("a", {.tokens_per_s = 100, .watts = 50}, t);
    Add("b", {.tokens_per_s = overtaken ? 300.0 : 50.0, .watts = 50}, t);
  }
  const absl::Time now = t - absl::Seconds(2);
  v1::LeaderboardResponse r = Board("", now);
  ASSERT_EQ(Order(r), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(r.entries(0).previous_rank(), 2u);
  EXPECT_EQ(r.entries(0).rank_1h_ago(), 2u);  // 69 minutes in: an hour ago b was #2
  EXPECT_EQ(r.entries(1).previous_rank(), 1u);
  EXPECT_EQ(r.entries(1).rank_1h_ago(), 1u);

  // A node without an hour of history has no rank an hour ago, and no previous rank.
  Add("c", {.tokens_per_s = 10, .watts = 50}, now);
  r = Board("", now);
  ASSERT_EQ(r.entries(2).node_id(), "c");
  EXPECT_FALSE(r.entries(2).has_rank_1h_ago());
  EXPECT_FALSE(r.entries(2).has_previous_rank());
}

TEST_F(IndexTest, BaselineLossFollowsTheDocumentedVector) {
  // A node normally at 108.9 tok/s on 0.6 W (raw 181.5), now Fair at 94.1 tok/s on 0.9 W
  // (penalized 83.644...): it loses 53.9 % of its potential.
  absl::Time t = T0();
  for (int i = 0; i < 10; ++i, t += absl::Seconds(2)) {
    Add("m4", {.tokens_per_s = 108.9, .watts = 0.6}, t);
  }
  // Samples under memory pressure or in another state never enter the baseline.
  Add("m4", {.tokens_per_s = 500, .watts = 0.6}, t, /*pressure=*/true);
  t += absl::Seconds(2);
  Add("m4", {.tokens_per_s = 94.1, .watts = 0.9, .state = v1::THERMAL_STATE_FAIR}, t);
  ASSERT_TRUE(state_.BaselineOf("m4", "llama3-8b", t).has_value());
  EXPECT_NEAR(*state_.BaselineOf("m4", "llama3-8b", t), 181.5, 1e-9);
  const v1::LeaderboardResponse r = Board("llama3-8b", t);
  ASSERT_EQ(r.entries_size(), 1);
  EXPECT_NEAR(r.entries(0).wes().penalized(), 83.6444, 1e-4);
  ASSERT_TRUE(r.entries(0).has_baseline_loss_pct());
  EXPECT_NEAR(r.entries(0).baseline_loss_pct(), (181.5 - 94.1 / 0.9 / 1.25) / 181.5 * 100, 1e-9);
  EXPECT_EQ(absl::StrFormat("%.1f", r.entries(0).baseline_loss_pct()), "53.9");
  // The fleet board has the node-level baseline.
  EXPECT_TRUE(Board("", t).entries(0).has_baseline_loss_pct());
}

TEST_F(IndexTest, NoBaselineBelowTheMinimumSampleCountOrFromSwappingSamples) {
  Add("n", {.tokens_per_s = 100, .watts = 50}, T0());
  // A duplicate delivery of the same frame counts once.
  state_.ApplyFrame(Frame("n", 1, T0(), {.tokens_per_s = 100, .watts = 50}), T0());
  Add("n", {.tokens_per_s = 100, .watts = 50}, T0() + absl::Seconds(2));
  for (int i = 2; i < 10; ++i) {
    Add("n", {.tokens_per_s = 100, .watts = 50}, T0() + absl::Seconds(2 * i), true);
  }
  EXPECT_FALSE(state_.BaselineOf("n", "llama3-8b", T0() + absl::Seconds(20)).has_value());
  EXPECT_FALSE(Board("llama3-8b", T0() + absl::Seconds(20)).entries(0).has_baseline_loss_pct());
  Add("n", {.tokens_per_s = 100, .watts = 50}, T0() + absl::Seconds(22));
  EXPECT_NEAR(*state_.BaselineOf("n", "llama3-8b", T0() + absl::Seconds(22)), 2.0, 1e-12);
  // 25 h later the samples have left the window.
  EXPECT_FALSE(state_.BaselineOf("n", "llama3-8b", T0() + absl::Hours(25)).has_value());
}

TEST(BaselineTest, MedianIsWithinOnePercentOfTheExactOne) {
  std::mt19937 rng(3);
  std::lognormal_distribution<double> wes(0.0, 0.3);
  Baseline b;
  const BaselineOptions options;
  std::vector<double> values;
  absl::Time t = T0();
  for (int i = 0; i < 45'000; ++i, t += absl::Seconds(2)) {  // 25 h
    const double v = wes(rng);
    b.Add(t, v, options);
    values.push_back(v);
  }
  // The window is 24 h to one slot: the first hour's samples have left it.
  const absl::Time now = t - absl::Seconds(2);
  const int64_t slot_seconds = 3600;
  const int64_t oldest = (absl::ToUnixSeconds(now) / slot_seconds - 23) * slot_seconds;
  std::vector<double> kept;
  for (size_t i = 0; i < values.size(); ++i) {
    if (absl::ToUnixSeconds(T0()) + 2 * static_cast<int64_t>(i) >= oldest) {
      kept.push_back(values[i]);
    }
  }
  std::sort(kept.begin(), kept.end());
  const double exact = kept[(kept.size() + 1) / 2 - 1];
  const std::optional<double> median = b.Median(now, options);
  ASSERT_TRUE(median.has_value());
  EXPECT_NEAR(*median / exact, 1.0, 0.01);
  EXPECT_LT(b.samples(), 45'000u);  // the first hour is gone
  EXPECT_GE(b.samples(), kept.size());
  // Invalid samples are ignored.
  Baseline empty;
  empty.Add(T0(), std::nan(""), options);
  empty.Add(T0(), -1, options);
  empty.Add(T0(), 0, options);
  EXPECT_EQ(empty.samples(), 0u);
  EXPECT_FALSE(empty.Median(T0(), {.min_samples = 0}).has_value());
}

TEST_F(IndexTest, SyntheticSamplesRankOnlyWhenTheModelHasNoOther) {
  v1::Frame f = MakeFrame("n1", "boot-n1", 1, T0(), {.tokens_per_s = 40, .watts = 50});
  // The probe's sample reports more tokens/s, but the engine's real traffic represents it.
  v1::ModelSample* probe = AddModel(&f, {.tokens_per_s = 400, .watts = 50});
  probe->set_synthetic(true);
  v1::ModelSample* only = AddModel(&f, {.model = "phi3", .tokens_per_s = 30, .watts = 50});
  only->set_synthetic(true);
  RecomputeWes(ThermalPenalties{}, &f);
  state_.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), T0());
  const NodeStatePtr n = state_.Get("n1");
  EXPECT_DOUBLE_EQ(n->models.at("llama3-8b").sample.decode_tokens_per_s(), 40);
  EXPECT_FALSE(n->models.at("llama3-8b").sample.synthetic());
  EXPECT_TRUE(n->models.at("phi3").sample.synthetic());
  const v1::LeaderboardResponse r = Board("llama3-8b", T0());
  ASSERT_EQ(r.entries_size(), 1);
  EXPECT_DOUBLE_EQ(r.entries(0).tokens_per_s(), 40);
  EXPECT_EQ(Board("phi3", T0()).entries_size(), 1);
}

TEST_F(IndexTest, ServingModelListsTheNodesWithASampleOfIt) {
  AddFourNodes();
  Add("qwen-05", {.model = "qwen2-7b", .tokens_per_s = 10, .watts = 50}, T0());
  Add("idle-06", {.model = "qwen2-7b", .tokens_per_s = 0, .watts = 50}, T0());
  auto ids = [](const std::vector<NodeStatePtr>& nodes) {
    std::vector<std::string> out;
    for (const NodeStatePtr& n : nodes) out.push_back(n->node_id);
    return out;
  };
  EXPECT_EQ(ids(state_.ServingModel("qwen2-7b")), (std::vector<std::string>{"idle-06", "qwen-05"}));
  EXPECT_EQ(ids(state_.ServingModel("llama3-8b")),
            (std::vector<std::string>{"devbox-02", "lab-03", "spare-04", "studio-01"}));
  EXPECT_TRUE(state_.ServingModel("unknown").empty());
  // Stale ones stay listed (callers apply their own freshness rules).
  state_.Sweep(T0() + absl::Minutes(1));
  EXPECT_EQ(ids(state_.ServingModel("qwen2-7b")), (std::vector<std::string>{"idle-06", "qwen-05"}));
  EXPECT_EQ(state_.ServingModel("qwen2-7b")[1]->models.at("qwen2-7b").sample.decode_tokens_per_s(),
            10);
}

TEST_F(IndexTest, RestoredNodesRankWithoutEvents) {
  NodeState node;
  node.node_id = "restored-1";
  node.last_seen = T0();
  node.latest = Frame("restored-1", 9, T0(), {.tokens_per_s = 50, .watts = 50});
  state_.Restore(std::move(node));
  EXPECT_TRUE(sink_.Take().empty());
  EXPECT_EQ(state_.RankOf("restored-1", ""), 1u);
  EXPECT_EQ(state_.RankOf("restored-1", "llama3-8b"), 1u);
}

}  // namespace
}  // namespace fleetwes::aggregator
