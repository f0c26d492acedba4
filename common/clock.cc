#include "common/clock.h"

namespace fleetwes {

namespace {

// absl::Now and a Notification: a stop wakes the waiter at once.
class SystemClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  bool WaitUntil(absl::Time deadline, absl::Notification* stop) override {
    if (stop == nullptr) {
      absl::SleepFor(deadline - absl::Now());
      return false;
    }
    return stop->WaitForNotificationWithDeadline(deadline);
  }
};

// How often a FakeClock waiter re-checks `stop`. absl::Notification cannot be awaited inside a
// mutex Condition, so a stop is noticed within this real interval; Advance/SetTime wake waiters
// at once because they change state guarded by the same mutex.
constexpr absl::Duration kStopPollInterval = absl::Milliseconds(5);

}  // namespace

Clock* RealClock() {
  static SystemClock* const clock = new SystemClock();  // stateless, never destroyed
  return clock;
}

FakeClock::FakeClock(absl::Time start) : now_(start) {}

absl::Time FakeClock::Now() const {
  absl::MutexLock lock(&mu_);
  return now_;
}

bool FakeClock::WaitUntil(absl::Time deadline, absl::Notification* stop) {
  absl::MutexLock lock(&mu_);
  ++waiters_;
  auto done = [this, deadline, stop]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return now_ >= deadline || (stop != nullptr && stop->HasBeenNotified());
  };
  if (stop == nullptr) {
    mu_.Await(absl::Condition(&done));
  } else {
    while (!mu_.AwaitWithTimeout(absl::Condition(&done), kStopPollInterval)) {
    }
  }
  --waiters_;
  return stop != nullptr && stop->HasBeenNotified();
}

void FakeClock::Advance(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  now_ += d;
}

void FakeClock::SetTime(absl::Time t) {
  absl::MutexLock lock(&mu_);
  now_ = t;
}

int FakeClock::waiters() const {
  absl::MutexLock lock(&mu_);
  return waiters_;
}

}  // namespace fleetwes
