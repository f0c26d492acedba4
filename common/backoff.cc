#include "common/backoff.h"

#include <algorithm>
#include <cmath>

namespace fleetwes {

namespace {

// SplitMix64: a small, well-mixed generator; the same seed gives the same delays everywhere.
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [0, 1).
double UnitInterval(uint64_t& state) {
  return static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53;
}

BackoffOptions Sanitize(BackoffOptions o) {
  if (o.initial <= absl::ZeroDuration()) o.initial = absl::Milliseconds(1);
  if (o.max < o.initial) o.max = o.initial;
  if (!std::isfinite(o.multiplier) || o.multiplier < 1.0) o.multiplier = 1.0;
  if (!std::isfinite(o.jitter) || o.jitter < 0) o.jitter = 0;
  if (o.jitter > 1) o.jitter = 1;
  return o;
}

}  // namespace

Backoff::Backoff(BackoffOptions options, uint64_t seed)
    : options_(Sanitize(options)), current_(options_.initial) {
  if (seed == 0) {
    absl::BitGen gen;
    seed = absl::Uniform<uint64_t>(gen);
  }
  seed_ = seed;
  state_ = seed;
}

absl::Duration Backoff::Next() {
  const absl::Duration base = std::min(current_, options_.max);
  const double factor = 1.0 + options_.jitter * (2.0 * UnitInterval(state_) - 1.0);
  absl::Duration delay = std::min(base * factor, options_.max);
  if (delay < absl::ZeroDuration()) delay = absl::ZeroDuration();
  ++attempts_;
  if (current_ < options_.max) current_ = std::min(current_ * options_.multiplier, options_.max);
  return delay;
}

void Backoff::Reset() {
  current_ = options_.initial;
  attempts_ = 0;
}

}  // namespace fleetwes
