// Checkpoints of rank histories and baselines without a database: the stored form round-trips,
// malformed stored tracks are refused with a reason, and a fleet state restored from its nodes
// plus its saved tracks serves the same leaderboards as the original.
#include "aggregator/store/track_store.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aggregator/fleet/baseline.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/ingest/recompute_wes.h"
#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::MakeHello;
using testing::ModelSpec;
using testing::T0;

FleetStateOptions Options() {
  FleetStateOptions o;
  o.baseline.min_samples = 3;
  return o;
}

void Apply(FleetState* state, const std::string& node, uint64_t seq, absl::Time t,
           const ModelSpec& spec) {
  v1::Frame f = MakeFrame(node, "boot-" + node, seq, t, spec, /*interval_s=*/60);
  RecomputeWes(ThermalPenalties{}, &f);
  state->ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), t);
}

// Two nodes over 66 minutes: edge-a leads for the first minutes, then heats up and falls behind
// edge-b, so both have a previous rank, a rank an hour ago and a baseline loss.
absl::Time Fill(FleetState* state) {
  for (const char* node : {"edge-a", "edge-b"}) {
    state->ApplyHello(MakeHello(node, std::string("boot-") + node, {{"site", "lab"}}), T0());
  }
  uint64_t seq = 0;
  absl::Time t = T0();
  for (int minute : {0, 1, 2, 3, 4, 5, 61, 62, 63, 64, 65}) {
    t = T0() + absl::Minutes(minute);
    ++seq;
    const bool hot = minute >= 61;
    Apply(state, "edge-a", seq, t,
          {.tokens_per_s = hot ? 50.0 : 100.0 + minute,
           .watts = 100,
           .state = hot ? v1::THERMAL_STATE_SERIOUS : v1::THERMAL_STATE_NORMAL});
    Apply(state, "edge-b", seq, t, {.tokens_per_s = 80, .watts = 100});
  }
  return t;
}

// What the server does at start: the nodes from their stored latest frames.
void RestoreNodes(const FleetState& from, FleetState* to) {
  for (const NodeStatePtr& n : from.Snapshot()) {
    NodeState copy;
    copy.node_id = n->node_id;
    copy.labels = n->labels;
    copy.agent_version = n->agent_version;
    copy.boot_id = n->boot_id;
    copy.interval_s = n->interval_s;
    copy.first_seen = n->first_seen;
    copy.last_seen = n->last_seen;
    copy.latest = n->latest;
    to->Restore(std::move(copy));
  }
}

bool SameBoard(const v1::LeaderboardResponse& a, const v1::LeaderboardResponse& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

TEST(TrackStoreTest, ARestoredStateServesTheSameLeaderboards) {
  FleetState original(Options());
  const absl::Time now = Fill(&original) + absl::Seconds(30);
  const v1::LeaderboardResponse fleet_before = original.Leaderboard("", now, 10);
  const v1::LeaderboardResponse model_before = original.Leaderboard("llama3-8b", now, 10);
  ASSERT_EQ(fleet_before.entries_size(), 2);
  const v1::LeaderboardEntry& b = fleet_before.entries(0);
  const v1::LeaderboardEntry& a = fleet_before.entries(1);
  ASSERT_EQ(a.node_id(), "edge-a");
  EXPECT_EQ(a.previous_rank(), 1u);
  EXPECT_EQ(a.rank_1h_ago(), 1u);
  EXPECT_EQ(b.rank_1h_ago(), 2u);
  // Baseline: the median of edge-a's normal samples, 102 tok/s over 100 W.
  EXPECT_NEAR(a.baseline_loss_pct(), (102.0 / 100 - 50.0 / 100 / 1.75) / (102.0 / 100) * 100,
              0.01 * 100);
  EXPECT_GT(model_before.entries(1).baseline_loss_pct(), 50);

  FleetState restarted(Options());
  RestoreNodes(original, &restarted);
  // The nodes alone rank alike but have lost their history.
  EXPECT_FALSE(SameBoard(restarted.Leaderboard("", now, 10), fleet_before));

  std::vector<FleetState::SavedTrack> saved;
  for (FleetState::SavedTrack& t : original.SaveTracks(original.NodeIds())) {
    std::string bytes;
    ASSERT_TRUE(EncodeTrack(t).SerializeToString(&bytes));
    v1::BoardTrack stored;
    ASSERT_TRUE(stored.ParseFromString(bytes));
    absl::StatusOr<FleetState::SavedTrack> decoded = DecodeTrack(stored);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    decoded->node_id = t.node_id;
    decoded->board = t.board;
    saved.push_back(*std::move(decoded));
  }
  EXPECT_EQ(saved.size(), 4u);  // two nodes, each on the fleet's and llama3-8b's leaderboard
  EXPECT_EQ(restarted.RestoreTracks(std::move(saved), now), 4u);
  EXPECT_TRUE(SameBoard(restarted.Leaderboard("", now, 10), fleet_before))
      << restarted.Leaderboard("", now, 10).DebugString() << "\nbefore:\n"
      << fleet_before.DebugString();
  EXPECT_TRUE(SameBoard(restarted.Leaderboard("llama3-8b", now, 10), model_before));
  EXPECT_EQ(restarted.BaselineOf("edge-a", "llama3-8b", now),
            original.BaselineOf("edge-a", "llama3-8b", now));
}

TEST(TrackStoreTest, TracksOfUnknownNodesOrBoardsAreSkipped) {
  FleetState state(Options());
  Fill(&state);
  FleetState::SavedTrack unknown_node;
  unknown_node.node_id = "gone-1";
  FleetState::SavedTrack unknown_board;
  unknown_board.node_id = "edge-a";
  unknown_board.board = "mistral-7b";
  std::vector<FleetState::SavedTrack> tracks;
  tracks.push_back(std::move(unknown_node));
  tracks.push_back(std::move(unknown_board));
  EXPECT_EQ(state.RestoreTracks(std::move(tracks), T0() + absl::Hours(2)), 0u);
}

TEST(TrackStoreTest, RestoringDropsPointsAfterNow) {
  FleetState original(Options());
  const absl::Time end = Fill(&original);
  FleetState restarted(Options());
  RestoreNodes(original, &restarted);
  // A clock stepped back to minute 3: the points after it are not history yet.
  const absl::Time early = T0() + absl::Minutes(3) + absl::Seconds(5);
  restarted.RestoreTracks(original.SaveTracks({"edge-a"}), early);
  std::vector<FleetState::SavedTrack> back = restarted.SaveTracks({"edge-a"});
  ASSERT_EQ(back.size(), 2u);
  for (const FleetState::SavedTrack& t : back) {
    ASSERT_EQ(t.points.size(), 4u) << t.board;  // minutes 0..3
    EXPECT_EQ(t.points.back().minute, absl::ToUnixSeconds(T0()) / 60 + 3);
  }
  EXPECT_GT(end, early);
}

v1::BoardTrack Valid() {
  FleetState::SavedTrack t;
  t.rank = 2;
  t.previous_rank = 1;
  t.points = {{100, 1}, {101, 1}, {105, 2}};
  t.last_rank_event = absl::FromUnixSeconds(6300);
  BaselineOptions o;
  t.baseline.Add(absl::FromUnixSeconds(6000), 1.5, o);
  t.baseline.Add(absl::FromUnixSeconds(6001), 1.6, o);
  t.baseline.Add(absl::FromUnixSeconds(9700), 1.4, o);
  return EncodeTrack(t);
}

TEST(TrackStoreTest, EncodingRoundTrips) {
  absl::StatusOr<FleetState::SavedTrack> t = DecodeTrack(Valid());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->rank, 2u);
  EXPECT_EQ(t->previous_rank, 1u);
  ASSERT_EQ(t->points.size(), 3u);
  EXPECT_EQ(t->points[2].minute, 105);
  EXPECT_EQ(t->points[2].rank, 2u);
  EXPECT_EQ(t->last_rank_event, absl::FromUnixSeconds(6300));
  EXPECT_EQ(t->baseline.samples(), 3u);
  EXPECT_EQ(t->baseline.slots().size(), 2u);
  BaselineOptions o;
  o.min_samples = 3;
  std::optional<double> median = t->baseline.Median(absl::FromUnixSeconds(9700), o);
  ASSERT_TRUE(median.has_value());
  EXPECT_DOUBLE_EQ(*median, 1.5);

  FleetState::SavedTrack empty;
  absl::StatusOr<FleetState::SavedTrack> none = DecodeTrack(EncodeTrack(empty));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->previous_rank.has_value());
  EXPECT_TRUE(none->points.empty());
  EXPECT_EQ(none->last_rank_event, absl::InfinitePast());
}

TEST(TrackStoreTest, MalformedTracksAreRefusedWithAReason) {
  struct Case {
    const char* name;
    void (*spoil)(v1::BoardTrack*);
    const char* reason;
  };
  const Case cases[] = {
      {"steps missing", [](v1::BoardTrack* t) { t->mutable_minute_steps()->RemoveLast(); },
       "minute steps"},
      {"zero step", [](v1::BoardTrack* t) { t->set_minute_steps(0, 0); }, "not increasing"},
      {"too many points",
       [](v1::BoardTrack* t) {
         for (int i = 0; i < 80; ++i) {
           t->add_minute_steps(1);
           t->add_ranks(1);
         }
       },
       "at most 72"},
      {"minute out of range", [](v1::BoardTrack* t) { t->set_first_minute(int64_t{1} << 50); },
       "first minute"},
      {"bins and counts differ",
       [](v1::BoardTrack* t) { t->mutable_baseline_slots(0)->add_bins(999); }, "differ in length"},
      {"NaN sum",
       [](v1::BoardTrack* t) {
         t->mutable_baseline_slots(0)->set_sums(0, std::numeric_limits<double>::quiet_NaN());
       },
       "bad sum"},
      {"zero count", [](v1::BoardTrack* t) { t->mutable_baseline_slots(0)->set_counts(0, 0); },
       "bad sum"},
      {"slots out of order", [](v1::BoardTrack* t) { t->mutable_baseline_slots(1)->set_index(0); },
       "out of order"},
      {"bins out of order",
       [](v1::BoardTrack* t) {
         v1::BaselineSlot* s = t->mutable_baseline_slots(0);
         s->add_bins(s->bins(0) - 5);
         s->add_counts(1);
         s->add_sums(1.0);
       },
       "bins out of order"},
      {"too many slots",
       [](v1::BoardTrack* t) {
         for (int i = 0; i < 30; ++i) {
           v1::BaselineSlot* s = t->add_baseline_slots();
           s->set_index(1000 + i);
           s->add_bins(1);
           s->add_counts(1);
           s->add_sums(1.01);
         }
       },
       "slots, at most"},
  };
  for (const Case& c : cases) {
    v1::BoardTrack t = Valid();
    c.spoil(&t);
    absl::StatusOr<FleetState::SavedTrack> decoded = DecodeTrack(t);
    ASSERT_FALSE(decoded.ok()) << c.name;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(decoded.status().message().find(c.reason), absl::string_view::npos)
        << c.name << ": " << decoded.status();
  }
}

}  // namespace
}  // namespace fleetwes::aggregator
