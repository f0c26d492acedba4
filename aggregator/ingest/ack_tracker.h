// Per-stream bookkeeping for cumulative acknowledgements (docs/protocol.md, "Acknowledgements").
// Frames of one stream carry strictly increasing seqs; each is "done" once committed, found to
// be a duplicate, or rejected for good. The cumulative ack is the highest seq of the longest
// prefix (in arrival order) of done frames, so Ack(seq) never covers a frame still in flight.
// Not thread-safe: the owning stream serialises access.
#ifndef FLEETWES_AGGREGATOR_INGEST_ACK_TRACKER_H_
#define FLEETWES_AGGREGATOR_INGEST_ACK_TRACKER_H_

#include <cstdint>
#include <deque>
#include <optional>

namespace fleetwes::aggregator {

class AckTracker {
 public:
  // Registers a frame. False (and nothing recorded) when `seq` is not above the last seq added:
  // such a frame cannot be tracked without breaking cumulative acks.
  bool Add(uint64_t seq, bool done);
  // Marks an in-flight frame done. False if `seq` is not in flight.
  bool MarkDone(uint64_t seq);
  // The new cumulative ack if the done prefix advanced past the last one returned.
  std::optional<uint64_t> TakeAck();

  // Frames added but not yet released by TakeAck (in flight or done behind one in flight).
  size_t pending() const { return entries_.size(); }
  // Frames added and not yet done.
  size_t in_flight() const { return in_flight_; }
  // The last seq added; 0 before the first.
  uint64_t last_seq() const { return last_seq_; }

 private:
  struct Entry {
    uint64_t seq;
    bool done;
  };
  std::deque<Entry> entries_;  // ascending seq
  size_t in_flight_ = 0;
  uint64_t last_seq_ = 0;
  uint64_t acked_ = 0;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_INGEST_ACK_TRACKER_H_
