// Baseline: the median raw WES of one (node, leaderboard) over a sliding window (docs/wes.md,
// "Baseline loss"), in bounded memory.
//
// The window is cut into kSlots time slots (window / kSlots each, 1 h for 24 h); each slot keeps
// a sparse log histogram of the samples it received, bins 1 % wide (bin b holds
// [1.01^b, 1.01^(b+1))) with the count and the sum of the values in each. The median is found in
// the merged histograms (the bin holding the lower median) and reported as the mean of that bin's
// values: within 1 % of the exact lower median of the samples in the slots, and exact when the
// values in that bin are equal. The window is honoured to one slot: the slots kept cover the last
// window minus at most one slot. A slot holds at most kMaxBinsPerSlot bins; beyond that (values
// spread over more than a factor 1.01^256 ~ 12.8 within one slot) a new value is counted in the
// nearest existing bin, and the 0.5 % bound no longer holds for that slot. Memory: at most kSlots x
// kMaxBinsPerSlot x 16 bytes (96 KiB); a steady node uses a few bins per slot. Not synchronised.
#ifndef FLEETWES_AGGREGATOR_FLEET_BASELINE_H_
#define FLEETWES_AGGREGATOR_FLEET_BASELINE_H_

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fleetwes::aggregator {

struct BaselineOptions {
  // The span the median covers. Default 24h; > 0.
  absl::Duration window = absl::Hours(24);
  // Fewest samples in the window for a baseline to exist. Default 30 (a minute at 2 s).
  uint32_t min_samples = 30;
};

class Baseline {
 public:
  static constexpr int kSlots = 24;
  static constexpr size_t kMaxBinsPerSlot = 256;
  // Relative width of a bin.
  static constexpr double kBinRatio = 1.01;

  // Counts a sample taken at `t`. Ignored unless raw is finite and > 0. Samples older than the
  // window (relative to the newest slot) are ignored.
  void Add(absl::Time t, double raw, const BaselineOptions& options);
  // The median over the window ending at `now`; nullopt below options.min_samples.
  std::optional<double> Median(absl::Time now, const BaselineOptions& options) const;
  // Samples in the slots kept (some may have left the window by `now`).
  uint64_t samples() const;

  // The state, for checkpoints (aggregator/store/track_store.h).
  struct Bin {
    int32_t bin = 0;
    uint32_t count = 0;
    double sum = 0;
  };
  struct Slot {
    int64_t index = 0;  // slot number since the Unix epoch
    uint64_t count = 0;
    std::vector<Bin> bins;  // by bin
  };
  const std::vector<Slot>& slots() const { return slots_; }
  // A baseline from slots() of another, validated as data from outside: at most kSlots slots in
  // increasing index order, each with 1..kMaxBinsPerSlot bins in increasing bin order, bin counts
  // > 0 adding up to the slot's count, sums finite and > 0. InvalidArgument naming the first
  // violation otherwise.
  static absl::StatusOr<Baseline> FromSlots(std::vector<Slot> slots);

 private:
  static int64_t SlotIndex(absl::Time t, const BaselineOptions& options);

  std::vector<Slot> slots_;  // oldest first, at most kSlots
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_BASELINE_H_
