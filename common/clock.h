// Time as a seam: logic asks a Clock for the time and waits through it, so tests drive time
// with FakeClock instead of sleeping.
#ifndef FLEETWES_COMMON_CLOCK_H_
#define FLEETWES_COMMON_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace fleetwes {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time (used for window boundaries and timestamps).
  virtual absl::Time Now() const = 0;
  // Blocks until `deadline` or until `stop` is notified; returns true if `stop` was notified.
  virtual bool WaitUntil(absl::Time deadline, absl::Notification* stop) = 0;
  bool WaitFor(absl::Duration d, absl::Notification* stop) { return WaitUntil(Now() + d, stop); }
};

// The process clock. Returns a shared instance; it has no state.
Clock* RealClock();

// A clock that moves only when told. WaitUntil blocks until Advance/SetTime reaches the
// deadline (or stop is notified), so tests can drive background loops deterministically.
// Advance/SetTime wake waiters at once; a stop is noticed within a few milliseconds of real
// time (absl::Notification cannot be awaited under the clock's mutex, so waiters poll it).
class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'767'225'600));  // 2026-01-01
  absl::Time Now() const override;
  bool WaitUntil(absl::Time deadline, absl::Notification* stop) override;
  void Advance(absl::Duration d);
  void SetTime(absl::Time t);
  // Number of threads currently blocked in WaitUntil (lets a test wait for a loop to park).
  int waiters() const;

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  int waiters_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fleetwes

#endif  // FLEETWES_COMMON_CLOCK_H_
