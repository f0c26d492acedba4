// Exponential backoff with full jitter for reconnects and retries. Not thread-safe.
#ifndef FLEETWES_COMMON_BACKOFF_H_
#define FLEETWES_COMMON_BACKOFF_H_

#include <cstdint>

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace fleetwes {

struct BackoffOptions {
  absl::Duration initial = absl::Milliseconds(200);
  absl::Duration max = absl::Seconds(30);
  double multiplier = 2.0;
  // Each delay is drawn uniformly from [d*(1-jitter), d*(1+jitter)], capped at max.
  double jitter = 0.2;
};

class Backoff {
 public:
  explicit Backoff(BackoffOptions options = {}, uint64_t seed = 0);  // seed 0: random
  // The delay before the next attempt; grows with each call until Reset().
  absl::Duration Next();
  void Reset();
  int attempts() const { return attempts_; }

 private:
  BackoffOptions options_;  // sanitised: initial > 0, max >= initial, multiplier >= 1
  absl::Duration current_;  // the un-jittered delay of the next attempt
  int attempts_ = 0;
  uint64_t seed_;   // the seed in use (drawn at random when 0 was passed)
  uint64_t state_;  // SplitMix64 state
};

}  // namespace fleetwes

#endif  // FLEETWES_COMMON_BACKOFF_H_
