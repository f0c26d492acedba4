// The event hub without a database: watchers get their leaderboard's events, a slow watcher's
// buffer drops the oldest and counts what it missed, closing ends watchers.
#include "aggregator/fleet/event_hub.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aggregator/proto_time.h"
#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

v1::Event Rank(const std::string& node, const std::string& model, uint32_t new_rank) {
  v1::Event e;
  *e.mutable_time() = ToProtoTime(testing::T0());
  e.set_node_id(node);
  e.set_model(model);
  e.set_kind(v1::EVENT_KIND_RANK_CHANGE);
  e.set_new_rank(new_rank);
  return e;
}

TEST(EventHubTest, WatchersGetTheirBoardsEventsAndASlowOneIsToldWhatItMissed) {
  FakeClock clock;
  AggregatorMetrics metrics;
  EventHubOptions options;
  options.watcher_buffer_events = 2;
  EventHub hub("", RetentionConfig{}, &clock, &metrics, options);
  std::unique_ptr<EventHub::Watcher> fleet = *hub.Watch("");
  std::unique_ptr<EventHub::Watcher> llama = *hub.Watch("llama3");
  EXPECT_EQ(hub.watchers(), 2u);
  EXPECT_FALSE(fleet->Wait(absl::ZeroDuration()));

  hub.Publish({Rank("a", "", 1), Rank("b", "", 2), Rank("c", "", 3), Rank("a", "llama3", 1)});
  EXPECT_TRUE(fleet->Wait(absl::ZeroDuration()));
  EventHub::Delivery d = fleet->Take();
  ASSERT_EQ(d.events.size(), 2u);  // the oldest was dropped
  EXPECT_EQ(d.events[0].node_id(), "b");
  EXPECT_EQ(d.events[1].node_id(), "c");
  EXPECT_EQ(d.missed, 1u);
  EXPECT_FALSE(d.closed);
  EXPECT_EQ(metrics.events_dropped("watcher_behind").Value(), 1);
  d = llama->Take();
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_EQ(d.events[0].new_rank(), 1u);
  EXPECT_EQ(metrics.events_published().Value(), 4);
  EXPECT_EQ(hub.queued(), 0u);  // no database: nothing queued

  // Invalid events go nowhere.
  hub.Publish({Rank("bad node", "", 1)});
  EXPECT_TRUE(fleet->Take().events.empty());
  EXPECT_EQ(metrics.events_dropped("invalid").Value(), 1);

  hub.CloseWatchers();
  EXPECT_TRUE(fleet->Wait(absl::ZeroDuration(), /*for_events=*/false));
  EXPECT_TRUE(fleet->closed());
  EXPECT_TRUE((*hub.Watch(""))->closed());  // new watchers are closed at once
  llama.reset();
  EXPECT_EQ(hub.watchers(), 1u);
}

TEST(EventHubTest, WatchersBeyondTheLimitAreRefusedUntilOneLeaves) {
  FakeClock clock;
  AggregatorMetrics metrics;
  EventHub hub("", RetentionConfig{}, &clock, &metrics, EventHubOptions{.max_watchers = 2});
  absl::StatusOr<std::unique_ptr<EventHub::Watcher>> a = hub.Watch("");
  absl::StatusOr<std::unique_ptr<EventHub::Watcher>> b = hub.Watch("llama3");
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<std::unique_ptr<EventHub::Watcher>> c = hub.Watch("");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), ::testing::HasSubstr("leaderboard.max_watchers"));
  EXPECT_EQ(hub.watchers(), 2u);
  EXPECT_EQ(metrics.leaderboard_watchers().Value(), 2);
  a->reset();
  c = hub.Watch("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(hub.watchers(), 2u);
}

TEST(EventHubTest, AFullQueueDropsTheOldestWithoutBlocking) {
  FakeClock clock;
  AggregatorMetrics metrics;
  EventHubOptions options;
  options.queue_events = 3;
  // A database URL but no Start(): events wait in the queue.
  EventHub hub("postgresql://127.0.0.1:1/none", RetentionConfig{}, &clock, &metrics, options);
  hub.Publish(
      {Rank("a", "", 1), Rank("b", "", 2), Rank("c", "", 3), Rank("d", "", 4), Rank("e", "", 5)});
  EXPECT_EQ(hub.queued(), 3u);
  EXPECT_EQ(metrics.events_dropped("queue_full").Value(), 2);
  EXPECT_EQ(metrics.events_queue().Value(), 3);
}

}  // namespace
}  // namespace fleetwes::aggregator
