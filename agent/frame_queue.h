// Frames waiting for the aggregator's acknowledgement. FrameQueue is the seam between the
// sampler (producer) and the uplink (consumer): today an in-memory bounded queue, later a
// segmented on-disk spool with the same contract. Implementations are thread-safe.
#ifndef FLEETWES_AGENT_FRAME_QUEUE_H_
#define FLEETWES_AGENT_FRAME_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

class FrameQueue {
 public:
  virtual ~FrameQueue() = default;
  // Appends a frame. Frames are pushed in increasing seq order (one boot). When the queue is
  // over its bound, the oldest frames are evicted and counted.
  virtual void Push(v1::Frame frame) = 0;
  // Up to `max` frames with seq > `after_seq`, oldest first (copies).
  virtual std::vector<v1::Frame> After(uint64_t after_seq, size_t max) const = 0;
  // Removes every frame with seq <= `seq` (a cumulative acknowledgement).
  virtual void AckUpTo(uint64_t seq) = 0;
  virtual size_t size() const = 0;
  // Frames evicted unacknowledged since start.
  virtual uint64_t evicted() const = 0;
};

// Bounded by frame count and by serialized bytes; evicts oldest first.
class MemoryFrameQueue final : public FrameQueue {
 public:
  static constexpr size_t kDefaultMaxFrames = 3600;  // 2 h at the default 2 s interval
  static constexpr size_t kDefaultMaxBytes = 16 << 20;
  explicit MemoryFrameQueue(size_t max_frames = kDefaultMaxFrames,
                            size_t max_bytes = kDefaultMaxBytes);

  void Push(v1::Frame frame) override;
  std::vector<v1::Frame> After(uint64_t after_seq, size_t max) const override;
  void AckUpTo(uint64_t seq) override;
  size_t size() const override;
  uint64_t evicted() const override;

 private:
  struct Entry {
    v1::Frame frame;
    size_t bytes;
  };
  const size_t max_frames_;
  const size_t max_bytes_;
  mutable absl::Mutex mu_;
  std::deque<Entry> frames_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evicted_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_FRAME_QUEUE_H_
