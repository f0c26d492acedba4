#include "common/clock.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace fleetwes {
namespace {

// Polls until `pred` holds or a generous real deadline passes.
template <typename Pred>
bool Eventually(Pred pred) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return pred();
}

TEST(FakeClockTest, StartsAtGivenTimeAndAdvances) {
  const absl::Time start = absl::FromUnixSeconds(1000);
  FakeClock clock(start);
  EXPECT_EQ(clock.Now(), start);
  clock.Advance(absl::Seconds(2));
  EXPECT_EQ(clock.Now(), start + absl::Seconds(2));
  clock.SetTime(start + absl::Hours(1));
  EXPECT_EQ(clock.Now(), start + absl::Hours(1));
}

TEST(FakeClockTest, DefaultStart) {
  FakeClock clock;
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(1'767'225'600));
}

TEST(FakeClockTest, WaitUntilPastDeadlineReturnsAtOnce) {
  FakeClock clock;
  absl::Notification stop;
  EXPECT_FALSE(clock.WaitUntil(clock.Now() - absl::Seconds(1), &stop));
  EXPECT_FALSE(clock.WaitFor(absl::ZeroDuration(), nullptr));
  EXPECT_EQ(clock.waiters(), 0);
}

TEST(FakeClockTest, WaiterWakesAfterAdvance) {
  FakeClock clock;
  absl::Notification stop;
  std::atomic<int> result{-1};
  std::thread waiter([&] { result = clock.WaitFor(absl::Seconds(2), &stop) ? 1 : 0; });
  ASSERT_TRUE(Eventually([&] { return clock.waiters() == 1; }));
  clock.Advance(absl::Seconds(1));
  // Still short of the deadline: the waiter stays parked.
  EXPECT_EQ(clock.waiters(), 1);
  EXPECT_EQ(result.load(), -1);
  clock.Advance(absl::Seconds(1));
  waiter.join();
  EXPECT_EQ(result.load(), 0);
  EXPECT_EQ(clock.waiters(), 0);
}

TEST(FakeClockTest, WaiterWithoutStopWakesAfterSetTime) {
  FakeClock clock;
  const absl::Time deadline = clock.Now() + absl::Minutes(5);
  std::atomic<bool> stopped{true};
  std::thread waiter([&] { stopped = clock.WaitUntil(deadline, nullptr); });
  ASSERT_TRUE(Eventually([&] { return clock.waiters() == 1; }));
  clock.SetTime(deadline);
  waiter.join();
  EXPECT_FALSE(stopped.load());
}

TEST(FakeClockTest, WaiterWakesOnStop) {
  FakeClock clock;
  absl::Notification stop;
  std::atomic<int> result{-1};
  std::thread waiter([&] { result = clock.WaitFor(absl::Hours(1), &stop) ? 1 : 0; });
  ASSERT_TRUE(Eventually([&] { return clock.waiters() == 1; }));
  stop.Notify();
  waiter.join();
  EXPECT_EQ(result.load(), 1);
  EXPECT_EQ(clock.waiters(), 0);
}

TEST(FakeClockTest, ManyWaitersWakeInDeadlineOrder) {
  FakeClock clock;
  const absl::Time t0 = clock.Now();
  std::atomic<int> woken{0};
  std::thread a([&] {
    clock.WaitUntil(t0 + absl::Seconds(1), nullptr);
    ++woken;
  });
  std::thread b([&] {
    clock.WaitUntil(t0 + absl::Seconds(3), nullptr);
    ++woken;
  });
  ASSERT_TRUE(Eventually([&] { return clock.waiters() == 2; }));
  clock.Advance(absl::Seconds(2));
  a.join();
  EXPECT_EQ(woken.load(), 1);
  EXPECT_EQ(clock.waiters(), 1);
  clock.Advance(absl::Seconds(1));
  b.join();
  EXPECT_EQ(woken.load(), 2);
}

TEST(RealClockTest, NowIsCurrentTime) {
  const absl::Time before = absl::Now();
  const absl::Time now = RealClock()->Now();
  EXPECT_GE(now, before);
  EXPECT_LE(now, absl::Now());
  EXPECT_EQ(RealClock(), RealClock());
}

TEST(RealClockTest, StopWakesAWaiter) {
  absl::Notification stop;
  std::atomic<int> result{-1};
  std::thread waiter([&] { result = RealClock()->WaitFor(absl::Hours(1), &stop) ? 1 : 0; });
  stop.Notify();
  waiter.join();
  EXPECT_EQ(result.load(), 1);
}

TEST(RealClockTest, DeadlineReturnsFalse) {
  absl::Notification stop;
  EXPECT_FALSE(RealClock()->WaitFor(absl::Milliseconds(1), &stop));
  EXPECT_FALSE(RealClock()->WaitUntil(absl::InfinitePast(), nullptr));
}

}  // namespace
}  // namespace fleetwes
