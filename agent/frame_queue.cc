#include "agent/frame_queue.h"

#include <utility>

#include "common/logging.h"

namespace fleetwes::agent {

MemoryFrameQueue::MemoryFrameQueue(size_t max_frames, size_t max_bytes)
    : max_frames_(max_frames > 0 ? max_frames : 1), max_bytes_(max_bytes) {}

void MemoryFrameQueue::Push(v1::Frame frame) {
  const size_t bytes = frame.ByteSizeLong();
  uint64_t evicted_now = 0;
  uint64_t first_evicted = 0;
  {
    absl::MutexLock lock(&mu_);
    frames_.push_back(Entry{std::move(frame), bytes});
    bytes_ += bytes;
    while (frames_.size() > max_frames_ || (bytes_ > max_bytes_ && frames_.size() > 1)) {
      if (evicted_now == 0) first_evicted = frames_.front().frame.seq();
      bytes_ -= frames_.front().bytes;
      frames_.pop_front();
      ++evicted_;
      ++evicted_now;
    }
  }
  if (evicted_now > 0) {
    Logger("uplink")->warn("frame queue full: evicted {} unacknowledged frame(s) from seq {}",
                           evicted_now, first_evicted);
  }
}

std::vector<v1::Frame> MemoryFrameQueue::After(uint64_t after_seq, size_t max) const {
  std::vector<v1::Frame> out;
  absl::MutexLock lock(&mu_);
  for (const Entry& e : frames_) {
    if (out.size() >= max) break;
    if (e.frame.seq() > after_seq) out.push_back(e.frame);
  }
  return out;
}

void MemoryFrameQueue::AckUpTo(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  while (!frames_.empty() && frames_.front().frame.seq() <= seq) {
    bytes_ -= frames_.front().bytes;
    frames_.pop_front();
  }
}

size_t MemoryFrameQueue::size() const {
  absl::MutexLock lock(&mu_);
  return frames_.size();
}

uint64_t MemoryFrameQueue::evicted() const {
  absl::MutexLock lock(&mu_);
  return evicted_;
}

}  // namespace fleetwes::agent
