#include "aggregator/ingest/ack_tracker.h"

#include <gtest/gtest.h>

namespace fleetwes::aggregator {
namespace {

TEST(AckTrackerTest, AcksTheHighestSeqOfTheDonePrefix) {
  AckTracker t;
  ASSERT_TRUE(t.Add(1, false));
  ASSERT_TRUE(t.Add(2, false));
  ASSERT_TRUE(t.Add(3, false));
  EXPECT_EQ(t.TakeAck(), std::nullopt);

  // 2 done but 1 in flight: nothing can be acknowledged yet.
  EXPECT_TRUE(t.MarkDone(2));
  EXPECT_EQ(t.TakeAck(), std::nullopt);

  EXPECT_TRUE(t.MarkDone(1));
  EXPECT_EQ(t.TakeAck(), 2u);
  EXPECT_EQ(t.TakeAck(), std::nullopt);  // nothing new
  EXPECT_EQ(t.in_flight(), 1u);

  EXPECT_TRUE(t.MarkDone(3));
  EXPECT_EQ(t.TakeAck(), 3u);
  EXPECT_EQ(t.pending(), 0u);
}

TEST(AckTrackerTest, RejectedFramesAreDoneAndCoveredByTheNextAck) {
  AckTracker t;
  t.Add(4, false);
  t.Add(5, /*done=*/true);  // rejected
  t.Add(6, false);
  EXPECT_EQ(t.TakeAck(), std::nullopt);
  t.MarkDone(4);
  EXPECT_EQ(t.TakeAck(), 5u);
  t.MarkDone(6);
  EXPECT_EQ(t.TakeAck(), 6u);
}

TEST(AckTrackerTest, RefusesSeqsThatDoNotIncrease) {
  AckTracker t;
  EXPECT_TRUE(t.Add(10, false));
  EXPECT_FALSE(t.Add(10, false));
  EXPECT_FALSE(t.Add(3, true));
  EXPECT_EQ(t.last_seq(), 10u);
  EXPECT_EQ(t.pending(), 1u);
}

TEST(AckTrackerTest, GapsAreCoveredCumulatively) {
  AckTracker t;
  t.Add(1, false);
  t.Add(7, false);  // 2..6 were evicted by the agent's spool
  t.MarkDone(7);
  t.MarkDone(1);
  EXPECT_EQ(t.TakeAck(), 7u);
}

TEST(AckTrackerTest, MarkDoneOfAnUnknownSeqIsRefused) {
  AckTracker t;
  t.Add(1, false);
  EXPECT_FALSE(t.MarkDone(2));
  EXPECT_TRUE(t.MarkDone(1));
  EXPECT_FALSE(t.MarkDone(1));  // already done
}

}  // namespace
}  // namespace fleetwes::aggregator
