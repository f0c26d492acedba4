#include "aggregator/ingest/ack_tracker.h"

#include <algorithm>

namespace fleetwes::aggregator {

bool AckTracker::Add(uint64_t seq, bool done) {
  if (seq <= last_seq_) return false;
  last_seq_ = seq;
  entries_.push_back(Entry{seq, done});
  if (!done) ++in_flight_;
  return true;
}

bool AckTracker::MarkDone(uint64_t seq) {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), seq,
                             [](const Entry& e, uint64_t s) { return e.seq < s; });
  if (it == entries_.end() || it->seq != seq || it->done) return false;
  it->done = true;
  --in_flight_;
  return true;
}

std::optional<uint64_t> AckTracker::TakeAck() {
  uint64_t highest = acked_;
  while (!entries_.empty() && entries_.front().done) {
    highest = entries_.front().seq;
    entries_.pop_front();
  }
  if (highest <= acked_) return std::nullopt;
  acked_ = highest;
  return highest;
}

}  // namespace fleetwes::aggregator
