// The durable spool: a FrameQueue kept in segmented, append-only files under one directory, so
// frames survive agent restarts and long aggregator outages.
//
// Layout of the directory:
//   seg-<20 digits>.log   segments, oldest (lowest number) first
//   acks                  acknowledged position per boot + the eviction total (atomic replace)
//   *.corrupt             quarantined segments, never read again (kept for inspection)
// Anything else in the directory is ignored (and logged once at open).
//
// A segment starts with a header: magic "FWSPOOL\n", u32 format version, u32 node id length,
// the node id, u32 CRC32 of everything before it. Then one record per frame: u32 payload length,
// u32 CRC32 of the payload, the serialized v1::Frame. Integers are little endian.
//
// Durability: records are written with write(2) at Push (so they survive an agent crash at once)
// and fdatasync'ed in groups by a background thread `fsync_interval` (<= 500 ms) after the first
// unsynced append, and at shutdown, so a machine crash loses at most that interval. The thread
// sleeps without a timer while nothing is unsynced. The ack position is written atomically
// (tmp + rename) lazily: the first advance after open at the next group fsync, later ones at a
// group fsync at least `ack_interval` after the previous write (an eviction count change at
// once), and always by Flush() and at shutdown. A stale position only causes a resend, which the
// aggregator treats as a no-op.
//
// Bound: when the segments exceed `max_bytes`, whole segments are evicted oldest first; their
// unacknowledged frames are counted in evicted() (persisted across restarts) and logged.
// A segment is deleted when every frame in it is acknowledged.
//
// Open: every segment is scanned. A torn tail record (an incomplete or damaged last record) is
// skipped and counted. A segment with a bad header, another node's id, or damage before its
// last record is renamed to *.corrupt (logged, counted); the good records before the damage are
// kept in a fresh copy of the segment. Unacknowledged frames are replayed oldest first: those of
// the current boot through the FrameQueue interface, those of earlier boots through
// PendingBoots()/AfterInBoot()/AckInBoot() (or a BootView), with their own boot id.
// No file content can crash the spool; new frames always go to a new segment.
//
// Thread-safe.
#ifndef FLEETWES_AGENT_SPOOL_H_
#define FLEETWES_AGENT_SPOOL_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/frame_queue.h"
#include "common/clock.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

struct SpoolOptions {
  std::string dir;      // created (with parents) when missing
  std::string node_id;  // segments of another node are quarantined
  std::string boot_id;  // the boot whose frames Push() receives
  uint64_t max_bytes = uint64_t{256} << 20;
  // A segment is closed and a new one started beyond this size. 0: max_bytes / 8, at least
  // 64 KiB (and never above max_bytes / 2), so eviction drops at most about an eighth.
  uint64_t segment_bytes = 0;
  // Group fsync delay after the first unsynced append; clamped to 1 ms..500 ms.
  absl::Duration fsync_interval = absl::Milliseconds(200);
  // Least time between two background writes of the ack file when only acks advanced.
  absl::Duration ack_interval = absl::Seconds(30);
};

struct SpoolStats {
  uint64_t appended = 0;         // frames written since open
  uint64_t evicted = 0;          // frames evicted unacknowledged, ever (persisted)
  uint64_t segments = 0;         // live segment files
  uint64_t bytes = 0;            // bytes in live segment files
  uint64_t pending = 0;          // unacknowledged frames, all boots
  uint64_t replayed = 0;         // unacknowledged frames found at open
  uint64_t torn_tails = 0;       // torn tail records skipped at open
  uint64_t quarantined = 0;      // segments renamed to *.corrupt at open
  uint64_t ignored_files = 0;    // unrelated files found in the directory at open
  uint64_t syncs = 0;            // group fsyncs that wrote something
  uint64_t ack_writes = 0;       // ack file writes since open
  uint64_t unsynced = 0;         // frames appended since the last fsync
  uint64_t write_errors = 0;     // failed appends (the frame is dropped and counted evicted)
  uint64_t rejected_pushes = 0;  // frames of another node/boot or with a seq not increasing
  uint64_t ignored_acks = 0;     // acks for unknown boots, duplicated or out of order
  uint64_t clamped_acks = 0;     // acks beyond the highest pushed seq (clamped to it)
};

class Spool final : public FrameQueue {
 public:
  static constexpr uint32_t kFormatVersion = 1;
  static constexpr uint32_t kMaxRecordBytes = 16 << 20;
  static constexpr absl::Duration kMaxFsyncInterval = absl::Milliseconds(500);

  // Creates the directory if needed, scans it (see above) and starts the group fsync thread,
  // which waits on `clock` (which must outlive the spool). Errors only when the directory cannot be
  // created, listed or written; damaged files never make Open fail.
  static absl::StatusOr<std::unique_ptr<Spool>> Open(SpoolOptions options, Clock* clock);
  ~Spool() override;  // stops the fsync thread, then Flush()
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // FrameQueue, for the current boot (options.boot_id).
  void Push(v1::Frame frame) override;
  std::vector<v1::Frame> After(uint64_t after_seq, size_t max) const override;
  void AckUpTo(uint64_t seq) override;
  size_t size() const override;  // unacknowledged frames, all boots
  uint64_t evicted() const override;

  // Earlier boots with unacknowledged frames, oldest first.
  std::vector<std::string> PendingBoots() const;
  // Up to `max` unacknowledged frames of `boot_id` with seq > after_seq, oldest first.
  std::vector<v1::Frame> AfterInBoot(const std::string& boot_id, uint64_t after_seq,
                                     size_t max) const;
  // Cumulative ack for `boot_id`. Unknown boots, duplicated and lower acks are ignored (counted);
  // an ack beyond the highest seq spooled for the boot is clamped to it (counted).
  void AckInBoot(const std::string& boot_id, uint64_t seq);
  // Unacknowledged frames of `boot_id`.
  size_t PendingInBoot(const std::string& boot_id) const;

  // Makes every appended frame and the ack position durable now (also called at shutdown).
  void Flush() { Sync(/*all=*/true); }

  SpoolStats stats() const;
  const std::string& dir() const { return options_.dir; }

 private:
  struct Record {
    std::string boot_id;
    uint64_t seq;
    uint64_t offset;  // of the payload in the segment file
    uint32_t length;
  };
  struct Segment {
    uint64_t number;
    std::string path;
    int fd = -1;
    uint64_t bytes = 0;
    std::deque<Record> records;  // per boot in increasing seq
    // Records of more than one boot. A segment of one boot (every segment this run writes) has
    // its records in increasing seq, so lookups in it are binary searches, not scans.
    bool mixed = false;
  };

  Spool(SpoolOptions options, Clock* clock);
  void Scan() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoadAcks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScanSegment(uint64_t number, const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StartSegment() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SealActive() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictOverBound() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DeleteAckedSegments() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropSegment(Segment& segment) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Append(Segment& s, Record r);
  uint64_t AckedSeq(const std::string& boot_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first record of a one-boot segment above `seq`.
  static std::deque<Record>::const_iterator FirstAbove(const Segment& s, uint64_t seq);
  bool IsAcked(const Record& r) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t PendingIn(const Segment& s) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<v1::Frame> Collect(const std::string& boot_id, uint64_t after_seq, size_t max) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Ack(const std::string& boot_id, uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string AckFileText() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Something the fsync thread must make durable within fsync_interval.
  bool SyncDue() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Syncs data and the directory; writes the ack file when `all` or when it is due (see above).
  void Sync(bool all);
  void TimerLoop();

  const SpoolOptions options_;
  Clock* const clock_;
  absl::Notification stop_;
  std::thread timer_;
  absl::Mutex flush_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // one Flush at a time

  mutable absl::Mutex mu_;
  std::deque<Segment> segments_ ABSL_GUARDED_BY(mu_);  // oldest first; back() is active
  uint64_t next_segment_ ABSL_GUARDED_BY(mu_) = 1;
  bool active_ok_ ABSL_GUARDED_BY(mu_) = false;                   // back() accepts appends
  std::map<std::string, uint64_t> acked_ ABSL_GUARDED_BY(mu_);    // boot -> acked seq
  std::map<std::string, uint64_t> highest_ ABSL_GUARDED_BY(mu_);  // boot -> highest spooled
  std::vector<int> to_sync_ ABSL_GUARDED_BY(mu_);                 // dup'ed fds of sealed segments
  bool acks_dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool acks_urgent_ ABSL_GUARDED_BY(mu_) = false;                  // the eviction count changed
  std::optional<absl::Time> acks_written_ ABSL_GUARDED_BY(mu_);    // last ack file write
  std::optional<absl::Time> unsynced_since_ ABSL_GUARDED_BY(mu_);  // first unsynced append
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool dir_dirty_ ABSL_GUARDED_BY(mu_) = false;
  SpoolStats stats_ ABSL_GUARDED_BY(mu_);
};

// The FrameQueue of one earlier boot kept in a spool, for an uplink that replays it under that
// boot's id. Push() is refused (counted by the spool). Thread-safe; `spool` must outlive it.
class SpoolBootView final : public FrameQueue {
 public:
  SpoolBootView(Spool* spool, std::string boot_id) : spool_(spool), boot_id_(std::move(boot_id)) {}
  void Push(v1::Frame frame) override;
  std::vector<v1::Frame> After(uint64_t after_seq, size_t max) const override {
    return spool_->AfterInBoot(boot_id_, after_seq, max);
  }
  void AckUpTo(uint64_t seq) override { spool_->AckInBoot(boot_id_, seq); }
  size_t size() const override { return spool_->PendingInBoot(boot_id_); }
  uint64_t evicted() const override { return spool_->evicted(); }
  const std::string& boot_id() const { return boot_id_; }

 private:
  Spool* const spool_;
  const std::string boot_id_;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_SPOOL_H_
