#include "aggregator/fleet/baseline.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace fleetwes::aggregator {

namespace {

const double kLogRatio = std::log(Baseline::kBinRatio);

int32_t BinOf(double raw) {
  const double b = std::floor(std::log(raw) / kLogRatio);
  // Doubles span about +-71,000 bins of 1 %; clamp anyway.
  return static_cast<int32_t>(std::clamp(b, -1e6, 1e6));
}

}  // namespace

int64_t Baseline::SlotIndex(absl::Time t, const BaselineOptions& options) {
  const int64_t width =
      std::max<int64_t>(1, absl::ToInt64Seconds(options.window) / static_cast<int64_t>(kSlots));
  const int64_t s = absl::ToUnixSeconds(t);
  return s / width - (s % width < 0 ? 1 : 0);
}

void Baseline::Add(absl::Time t, double raw, const BaselineOptions& options) {
  if (!std::isfinite(raw) || raw <= 0) return;
  const int64_t index = SlotIndex(t, options);
  if (!slots_.empty() && index <= slots_.back().index - kSlots) return;  // beyond the window
  // Drop slots that left the window ending at this sample's slot.
  std::erase_if(slots_, [&](const Slot& s) { return s.index <= index - kSlots; });
  auto slot =
      std::find_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.index >= index; });
  if (slot == slots_.end() || slot->index != index) {
    slot = slots_.insert(slot, Slot{index, 0, {}});
  }
  const int32_t bin = BinOf(raw);
  auto it = std::lower_bound(slot->bins.begin(), slot->bins.end(), bin,
                             [](const Bin& b, int32_t want) { return b.bin < want; });
  if (it == slot->bins.end() || it->bin != bin) {
    if (slot->bins.size() >= kMaxBinsPerSlot) {
      // Full: the nearest existing bin takes the sample.
      if (it == slot->bins.end() ||
          (it != slot->bins.begin() && bin - std::prev(it)->bin < it->bin - bin)) {
        --it;
      }
    } else {
      it = slot->bins.insert(it, Bin{bin, 0, 0});
    }
  }
  ++it->count;
  it->sum += raw;
  ++slot->count;
}

std::optional<double> Baseline::Median(absl::Time now, const BaselineOptions& options) const {
  const int64_t oldest = SlotIndex(now, options) - kSlots + 1;
  std::vector<Bin> merged;
  uint64_t total = 0;
  for (const Slot& s : slots_) {
    if (s.index < oldest) continue;
    merged.insert(merged.end(), s.bins.begin(), s.bins.end());
    total += s.count;
  }
  if (total == 0 || total < options.min_samples) return std::nullopt;
  std::sort(merged.begin(), merged.end(), [](const Bin& a, const Bin& b) { return a.bin < b.bin; });
  // The lower median: the ceil(total / 2)-th sample. Its bin may appear in several slots.
  const uint64_t target = (total + 1) / 2;
  uint64_t seen = 0;
  for (size_t i = 0; i < merged.size();) {
    uint64_t count = 0;
    double sum = 0;
    size_t j = i;
    for (; j < merged.size() && merged[j].bin == merged[i].bin; ++j) {
      count += merged[j].count;
      sum += merged[j].sum;
    }
    seen += count;
    if (seen >= target) return sum / static_cast<double>(count);
    i = j;
  }
  return std::nullopt;  // unreachable: counts sum to total
}

uint64_t Baseline::samples() const {
  uint64_t n = 0;
  for (const Slot& s : slots_) n += s.count;
  return n;
}

absl::StatusOr<Baseline> Baseline::FromSlots(std::vector<Slot> slots) {
  if (slots.size() > static_cast<size_t>(kSlots)) {
    return absl::InvalidArgumentError(
        absl::StrCat("baseline: ", slots.size(), " slots, at most ", kSlots));
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    if (i > 0 && s.index <= slots[i - 1].index) {
      return absl::InvalidArgumentError("baseline: slots out of order");
    }
    if (s.bins.empty() || s.bins.size() > kMaxBinsPerSlot) {
      return absl::InvalidArgumentError(absl::StrCat("baseline: slot ", s.index, " has ",
                                                     s.bins.size(), " bins, 1..", kMaxBinsPerSlot));
    }
    uint64_t count = 0;
    for (size_t j = 0; j < s.bins.size(); ++j) {
      const Bin& b = s.bins[j];
      if (j > 0 && b.bin <= s.bins[j - 1].bin) {
        return absl::InvalidArgumentError(
            absl::StrCat("baseline: slot ", s.index, ": bins out of order"));
      }
      if (b.count == 0 || !std::isfinite(b.sum) || b.sum <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("baseline: slot ", s.index, ", bin ", b.bin, ": empty or bad sum"));
      }
      count += b.count;
    }
    if (count != s.count) {
      return absl::InvalidArgumentError(
          absl::StrCat("baseline: slot ", s.index, " counts ", s.count, ", its bins ", count));
    }
  }
  Baseline b;
  b.slots_ = std::move(slots);
  return b;
}

}  // namespace fleetwes::aggregator
