#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "aggregator/fleet/fleet_state.h"
#include "aggregator/fleet/leaderboard.h"
#include "aggregator/ingest/recompute_wes.h"
#include "common/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::MakeHello;
using testing::ModelSpec;
using testing::T0;

class FleetTest : public ::testing::Test {
 protected:
  void Add(const std::string& node, ModelSpec spec, absl::Time window_end = T0(),
           uint64_t seq = 1) {
    state_.ApplyHello(MakeHello(node, "boot-" + node, {{"site", "lab"}}), window_end);
    v1::Frame f = MakeFrame(node, "boot-" + node, seq, window_end, spec);
    RecomputeWes(ThermalPenalties{}, &f);
    state_.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), window_end);
  }

  // The four-node fleet of docs/wes.md.
  void AddFourNodes() {
    Add("spare-04", {.tokens_per_s = 12, .watts = 95});
    Add("lab-03", {.tokens_per_s = 92, .watts = 220, .state = v1::THERMAL_STATE_SERIOUS});
    Add("devbox-02", {.tokens_per_s = 180, .watts = 340, .state = v1::THERMAL_STATE_FAIR});
    Add("studio-01", {.tokens_per_s = 89, .watts = 60});
  }

  // The snapshot leaderboard, checked against the fleet state's ranked index.
  v1::LeaderboardResponse Board(absl::string_view model = "", size_t limit = 100) {
    v1::LeaderboardResponse want =
        BuildLeaderboard(state_.Snapshot(), model, clock_.Now(), policy_, limit);
    v1::LeaderboardResponse got = state_.Leaderboard(model, clock_.Now(), limit);
    for (auto* list : {got.mutable_entries(), got.mutable_unranked()}) {
      for (v1::LeaderboardEntry& e : *list) {
        e.clear_previous_rank();
        e.clear_rank_1h_ago();
        e.clear_baseline_loss_pct();
      }
    }
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, want))
        << got.DebugString() << "\nwant:\n"
        << want.DebugString();
    return want;
  }

  FakeClock clock_{T0() + absl::Seconds(1)};
  StalenessPolicy policy_;  // 3 x interval, at least 10 s
  FleetState state_;
};

std::vector<std::string> Order(const v1::LeaderboardResponse& r) {
  std::vector<std::string> out;
  for (const v1::LeaderboardEntry& e : r.entries()) out.push_back(e.node_id());
  return out;
}

TEST_F(FleetTest, FourNodeFleetRanksAsDocumented) {
  AddFourNodes();
  const v1::LeaderboardResponse r = Board();
  EXPECT_EQ(Order(r), (std::vector<std::string>{"studio-01", "devbox-02", "lab-03", "spare-04"}));
  ASSERT_EQ(r.entries_size(), 4);
  EXPECT_EQ(r.unranked_size(), 0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r.entries(i).rank(), static_cast<uint32_t>(i + 1));
  // Full precision, recomputed by the aggregator (the agent's 12345 is gone).
  EXPECT_DOUBLE_EQ(r.entries(0).wes().penalized(), 89.0 / 60.0);
  EXPECT_DOUBLE_EQ(r.entries(1).wes().raw(), 180.0 / 340.0);
  EXPECT_DOUBLE_EQ(r.entries(1).wes().penalized(), 180.0 / (340.0 * 1.25));
  EXPECT_NEAR(r.entries(1).wes().thermal_cost_pct(), 20.0, 1e-9);
  EXPECT_DOUBLE_EQ(r.entries(2).wes().penalized(), 92.0 / (220.0 * 1.75));
  EXPECT_NEAR(r.entries(2).wes().thermal_cost_pct(), 42.857142857142854, 1e-9);
  EXPECT_DOUBLE_EQ(r.entries(3).wes().penalized(), 12.0 / 95.0);
  EXPECT_EQ(r.entries(2).thermal_state(), v1::THERMAL_STATE_SERIOUS);
  EXPECT_EQ(r.entries(0).labels().at("site"), "lab");
  EXPECT_DOUBLE_EQ(r.entries(0).tokens_per_s(), 89);
  EXPECT_DOUBLE_EQ(r.entries(0).data_age_s(), 1.0);
  EXPECT_FALSE(r.entries(0).stale());

  // The per-model board ranks the same way and carries the latency columns.
  const v1::LeaderboardResponse m = Board("llama3-8b");
  EXPECT_EQ(Order(m), (std::vector<std::string>{"studio-01", "devbox-02", "lab-03", "spare-04"}));
  EXPECT_EQ(m.entries(0).model(), "llama3-8b");
  EXPECT_DOUBLE_EQ(m.entries(0).ttft_p95_s(), 0.25);
  EXPECT_EQ(m.entries(0).queue(), 0u);
  EXPECT_DOUBLE_EQ(m.entries(0).kv_cache_usage(), 0.3);
}

TEST_F(FleetTest, TiesBreakOnRawWesThenNodeId) {
  // Same penalized WES (1.0); b has the higher raw WES (Fair penalty), a and c tie entirely.
  Add("node-c", {.tokens_per_s = 100, .watts = 100});
  Add("node-b", {.tokens_per_s = 125, .watts = 100, .state = v1::THERMAL_STATE_FAIR});
  Add("node-a", {.tokens_per_s = 100, .watts = 100});
  EXPECT_EQ(Order(Board()), (std::vector<std::string>{"node-b", "node-a", "node-c"}));
}

TEST_F(FleetTest, IdleAndPowerlessNodesAreUnrankedWithTheirReason) {
  AddFourNodes();
  Add("idle-05", {.tokens_per_s = 0, .watts = 40});
  Add("nopower-06", {.tokens_per_s = 50, .watts = std::nullopt});
  const v1::LeaderboardResponse r = Board();
  EXPECT_EQ(r.entries_size(), 4);
  ASSERT_EQ(r.unranked_size(), 2);
  EXPECT_EQ(r.unranked(0).node_id(), "idle-05");
  EXPECT_EQ(r.unranked(0).wes().null_reason(), v1::WES_NULL_REASON_IDLE);
  EXPECT_FALSE(r.unranked(0).wes().has_penalized());
  EXPECT_FALSE(r.unranked(0).stale());
  EXPECT_EQ(r.unranked(1).node_id(), "nopower-06");
  EXPECT_EQ(r.unranked(1).wes().null_reason(), v1::WES_NULL_REASON_NO_POWER_READING);
}

TEST_F(FleetTest, StaleNodesLeaveTheRanking) {
  AddFourNodes();
  // A replayed older frame does not replace a newer one: studio-01 stays fresh and first.
  Add("studio-01", {.tokens_per_s = 89, .watts = 60}, T0() - absl::Seconds(20), 1);
  EXPECT_EQ(Order(Board()).front(), "studio-01");

  // A node whose latest window ended 20 s ago is stale: beyond max(3 x 2 s, 10 s).
  Add("old-05", {.tokens_per_s = 500, .watts = 10}, T0() - absl::Seconds(20));
  v1::LeaderboardResponse r = Board();
  EXPECT_EQ(r.entries_size(), 4);
  ASSERT_EQ(r.unranked_size(), 1);
  EXPECT_EQ(r.unranked(0).node_id(), "old-05");
  EXPECT_TRUE(r.unranked(0).stale());
  EXPECT_DOUBLE_EQ(r.unranked(0).data_age_s(), 21.0);
  EXPECT_TRUE(r.unranked(0).wes().has_penalized());  // stale, not valueless

  // Time passes: 9 s after the windows ended the four are fresh, at 11 s they are stale too.
  clock_.SetTime(T0() + absl::Seconds(9));
  EXPECT_EQ(Board().entries_size(), 4);
  clock_.Advance(absl::Seconds(2));
  r = Board();
  EXPECT_EQ(r.entries_size(), 0);
  ASSERT_EQ(r.unranked_size(), 5);
  for (const v1::LeaderboardEntry& e : r.unranked()) EXPECT_TRUE(e.stale()) << e.node_id();
  EXPECT_DOUBLE_EQ(r.unranked(0).data_age_s(), 11.0);
  EXPECT_TRUE(state_.Get("studio-01")->Stale(clock_.Now(), policy_));
}

TEST_F(FleetTest, StalenessScalesWithTheNodesInterval) {
  StalenessPolicy policy{3.0, absl::Seconds(10)};
  EXPECT_EQ(policy.Threshold(2), absl::Seconds(10));
  EXPECT_EQ(policy.Threshold(10), absl::Seconds(30));
  EXPECT_EQ(policy.Threshold(0), absl::Seconds(10));
}

TEST_F(FleetTest, LimitAppliesToEachList) {
  AddFourNodes();
  const v1::LeaderboardResponse r = Board("", 2);
  EXPECT_EQ(Order(r), (std::vector<std::string>{"studio-01", "devbox-02"}));
}

TEST_F(FleetTest, PerModelBoardListsOnlyNodesServingTheModel) {
  AddFourNodes();
  v1::Frame f = MakeFrame("lab-03", "boot-lab-03", 2, T0(),
                          {.tokens_per_s = 92, .watts = 220, .state = v1::THERMAL_STATE_SERIOUS});
  testing::AddModel(
      &f,
      {.model = "qwen2-7b", .tokens_per_s = 40, .watts = 100, .state = v1::THERMAL_STATE_SERIOUS});
  RecomputeWes(ThermalPenalties{}, &f);
  state_.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), T0());
  const v1::LeaderboardResponse r = Board("qwen2-7b");
  EXPECT_EQ(Order(r), std::vector<std::string>{"lab-03"});
  // Model WES with the aggregator's Serious penalty.
  EXPECT_DOUBLE_EQ(r.entries(0).wes().penalized(), 40.0 / (100.0 * 1.75));
  EXPECT_EQ(Board("unknown-model").entries_size(), 0);
}

TEST(FleetStateTest, SnapshotsAreConsistentCopies) {
  FleetState state;
  v1::Frame f = MakeFrame("n1", "b", 1, T0());
  state.ApplyFrame(std::make_shared<const v1::Frame>(f), T0());
  std::vector<NodeStatePtr> before = state.Snapshot();
  f.set_seq(2);
  *f.mutable_window_end() = ToProtoTime(T0() + absl::Seconds(2));
  state.ApplyFrame(std::make_shared<const v1::Frame>(f), T0() + absl::Seconds(2));
  EXPECT_EQ(before[0]->latest->seq(), 1u);  // the old snapshot is untouched
  EXPECT_EQ(state.Get("n1")->latest->seq(), 2u);
  EXPECT_EQ(state.Get("unknown"), nullptr);
}

TEST(FleetStateTest, RemembersTheLastMeasuredWesOfAModel) {
  FleetState state;
  v1::Frame busy = MakeFrame("n1", "b", 1, T0(), {.tokens_per_s = 100, .watts = 50});
  RecomputeWes(ThermalPenalties{}, &busy);
  state.ApplyFrame(std::make_shared<const v1::Frame>(busy), T0());
  v1::Frame idle = MakeFrame("n1", "b", 2, T0() + absl::Seconds(2), {.tokens_per_s = 0});
  RecomputeWes(ThermalPenalties{}, &idle);
  state.ApplyFrame(std::make_shared<const v1::Frame>(idle), T0() + absl::Seconds(2));
  const ModelState& ms = state.Get("n1")->models.at("llama3-8b");
  EXPECT_FALSE(ms.sample.wes().has_penalized());
  ASSERT_TRUE(ms.last_wes.has_value());
  EXPECT_DOUBLE_EQ(ms.last_wes->penalized(), 2.0);
  EXPECT_EQ(ms.last_wes_window_end, T0());
}

// An agent restarted (boot "new") and replays what boot "old" left in its spool on a second
// stream: the older boot's Hello and frames, arriving in any order around the new boot's, never
// become the node's current state.
TEST(FleetStateTest, AReplayedOlderBootDoesNotRegressTheCurrentOne) {
  FleetState state;
  auto frame = [](const std::string& boot, uint64_t seq, absl::Time end, double tps) {
    v1::Frame f = MakeFrame("n1", boot, seq, end, {.tokens_per_s = tps});
    RecomputeWes(ThermalPenalties{}, &f);
    return std::make_shared<const v1::Frame>(std::move(f));
  };
  v1::Hello old_hello = MakeHello("n1", "old", {{"site", "old-site"}});
  old_hello.set_agent_version("0.1.0");
  v1::Hello new_hello = MakeHello("n1", "new", {{"site", "new-site"}});
  new_hello.set_agent_version("0.2.0");
  new_hello.set_evicted_frames(3);

  // Boot "old" ran until T0 + 10 s.
  state.ApplyHello(old_hello, T0());
  state.ApplyFrame(frame("old", 5, T0() + absl::Seconds(10), 10), T0() + absl::Seconds(10));
  // The restarted agent says Hello for "new": held back until its frames are the latest.
  state.ApplyHello(new_hello, T0() + absl::Seconds(20));
  EXPECT_EQ(state.Get("n1")->boot_id, "old");
  EXPECT_EQ(state.Get("n1")->labels.at("site"), "old-site");
  EXPECT_EQ(state.Get("n1")->evicted_frames, 3u);
  state.ApplyFrame(frame("new", 1, T0() + absl::Seconds(22), 50), T0() + absl::Seconds(22));
  NodeStatePtr n = state.Get("n1");
  EXPECT_EQ(n->boot_id, "new");
  EXPECT_EQ(n->labels.at("site"), "new-site");
  EXPECT_EQ(n->agent_version, "0.2.0");
  EXPECT_EQ(n->latest->seq(), 1u);

  // The replay stream of "old": its Hello and its frames (older window ends) change nothing
  // but last_seen.
  v1::Hello replay = old_hello;
  replay.set_evicted_frames(4);
  state.ApplyHello(replay, T0() + absl::Seconds(23));
  state.ApplyFrame(frame("old", 6, T0() + absl::Seconds(11), 10), T0() + absl::Seconds(24));
  state.ApplyFrame(frame("old", 7, T0() + absl::Seconds(12), 10), T0() + absl::Seconds(25));
  n = state.Get("n1");
  EXPECT_EQ(n->boot_id, "new");
  EXPECT_EQ(n->labels.at("site"), "new-site");
  EXPECT_EQ(n->agent_version, "0.2.0");
  EXPECT_EQ(n->latest->boot_id(), "new");
  EXPECT_EQ(n->window_end, T0() + absl::Seconds(22));
  EXPECT_DOUBLE_EQ(n->models.at("llama3-8b").sample.decode_tokens_per_s(), 50);
  EXPECT_EQ(n->last_seen, T0() + absl::Seconds(25));
  EXPECT_EQ(n->evicted_frames, 4u);  // the spool's count, whichever stream reports it

  // The new boot goes on.
  state.ApplyFrame(frame("new", 2, T0() + absl::Seconds(24), 60), T0() + absl::Seconds(26));
  EXPECT_EQ(state.Get("n1")->latest->seq(), 2u);
  EXPECT_EQ(state.Get("n1")->boot_id, "new");
}

// The replay stream may also win the race: its Hello before the new boot's.
TEST(FleetStateTest, OlderBootHelloFirstThenNewerBootTakesOverWithItsFrames) {
  FleetState state;
  state.ApplyHello(MakeHello("n1", "old", {{"site", "a"}}), T0());
  state.ApplyFrame(std::make_shared<const v1::Frame>(MakeFrame("n1", "old", 3, T0())), T0());
  state.ApplyHello(MakeHello("n1", "old", {{"site", "a"}}), T0() + absl::Seconds(5));
  state.ApplyHello(MakeHello("n1", "new", {{"site", "b"}}), T0() + absl::Seconds(5));
  state.ApplyFrame(
      std::make_shared<const v1::Frame>(MakeFrame("n1", "old", 4, T0() + absl::Seconds(1))),
      T0() + absl::Seconds(6));
  EXPECT_EQ(state.Get("n1")->boot_id, "old");  // still the latest frames
  EXPECT_EQ(state.Get("n1")->latest->seq(), 4u);
  state.ApplyFrame(
      std::make_shared<const v1::Frame>(MakeFrame("n1", "new", 1, T0() + absl::Seconds(7))),
      T0() + absl::Seconds(7));
  EXPECT_EQ(state.Get("n1")->boot_id, "new");
  EXPECT_EQ(state.Get("n1")->labels.at("site"), "b");
  // A node's first Hello applies at once, whatever boot.
  state.ApplyHello(MakeHello("n2", "x", {{"site", "c"}}), T0());
  EXPECT_EQ(state.Get("n2")->boot_id, "x");
  EXPECT_EQ(state.Get("n2")->labels.at("site"), "c");
}

}  // namespace
}  // namespace fleetwes::aggregator
