#include "common/backoff.h"

#include "gtest/gtest.h"

namespace fleetwes {
namespace {

BackoffOptions Options() {
  BackoffOptions o;
  o.initial = absl::Milliseconds(100);
  o.max = absl::Seconds(5);
  o.multiplier = 2.0;
  o.jitter = 0.2;
  return o;
}

TEST(BackoffTest, DelaysStayWithinJitterBounds) {
  Backoff b(Options(), 42);
  absl::Duration base = absl::Milliseconds(100);
  for (int i = 0; i < 12; ++i) {
    const absl::Duration d = b.Next();
    const absl::Duration capped = std::min(base, absl::Seconds(5));
    EXPECT_GE(d, capped * 0.8) << "attempt " << i;
    EXPECT_LE(d, std::min(capped * 1.2, absl::Seconds(5))) << "attempt " << i;
    base *= 2;
  }
  EXPECT_EQ(b.attempts(), 12);
}

TEST(BackoffTest, GrowsExponentiallyWithoutJitter) {
  BackoffOptions o = Options();
  o.jitter = 0;
  Backoff b(o, 1);
  EXPECT_EQ(b.Next(), absl::Milliseconds(100));
  EXPECT_EQ(b.Next(), absl::Milliseconds(200));
  EXPECT_EQ(b.Next(), absl::Milliseconds(400));
  EXPECT_EQ(b.Next(), absl::Milliseconds(800));
}

TEST(BackoffTest, CappedAtMax) {
  BackoffOptions o = Options();
  o.max = absl::Milliseconds(300);
  Backoff b(o, 7);
  for (int i = 0; i < 100; ++i) EXPECT_LE(b.Next(), absl::Milliseconds(300));
  // Once at the cap, jitter only goes down from it.
  EXPECT_GE(b.Next(), absl::Milliseconds(240));
}

TEST(BackoffTest, ResetStartsOver) {
  BackoffOptions o = Options();
  o.jitter = 0;
  Backoff b(o, 3);
  for (int i = 0; i < 5; ++i) b.Next();
  EXPECT_EQ(b.attempts(), 5);
  b.Reset();
  EXPECT_EQ(b.attempts(), 0);
  EXPECT_EQ(b.Next(), absl::Milliseconds(100));
}

TEST(BackoffTest, SameSeedSameDelays) {
  Backoff a(Options(), 12345);
  Backoff b(Options(), 12345);
  Backoff c(Options(), 54321);
  bool any_difference = false;
  for (int i = 0; i < 10; ++i) {
    const absl::Duration da = a.Next();
    EXPECT_EQ(da, b.Next());
    if (da != c.Next()) any_difference = true;
  }
  EXPECT_TRUE(any_difference);
}

TEST(BackoffTest, JitterSpreadsDelays) {
  Backoff b(Options(), 99);
  absl::Duration lo = absl::InfiniteDuration();
  absl::Duration hi = absl::ZeroDuration();
  for (int i = 0; i < 200; ++i) {
    b.Reset();
    const absl::Duration d = b.Next();
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_LT(lo, absl::Milliseconds(90));
  EXPECT_GT(hi, absl::Milliseconds(110));
}

TEST(BackoffTest, NonsenseOptionsAreSanitised) {
  BackoffOptions o;
  o.initial = absl::ZeroDuration();
  o.max = -absl::Seconds(1);
  o.multiplier = 0.5;
  o.jitter = 7;
  Backoff b(o, 5);
  for (int i = 0; i < 10; ++i) {
    const absl::Duration d = b.Next();
    EXPECT_GE(d, absl::ZeroDuration());
    EXPECT_LE(d, absl::Milliseconds(1));
  }
}

TEST(BackoffTest, RandomSeedStillBounded) {
  Backoff b(Options());
  const absl::Duration d = b.Next();
  EXPECT_GE(d, absl::Milliseconds(80));
  EXPECT_LE(d, absl::Milliseconds(120));
}

}  // namespace
}  // namespace fleetwes
