// The batched database writer: a bounded queue filled by ingest streams and one background
// thread per BatchStore (each its own database connection) that writes batches (bounded by frame
// count and by delay), one transaction per batch, and only then completes each frame's callback.
// With several stores the queue is split by node: all items of a node go through the same store,
// in order, so a node's frames commit in the order they were queued and each store sees every
// frame of its nodes. While the database is unreachable a batch is kept and retried with backoff:
// nothing is acknowledged, the queue fills, and ingest stops reading (gRPC flow control pushes
// back to the agents).
//
// Thread-safe: TrySubmit* may be called from any thread. Callbacks run on a writer thread (the
// one of the node's store, or the thread calling Stop) without any writer lock held; they must
// not block for long.
#ifndef FLEETWES_AGGREGATOR_STORE_WRITER_H_
#define FLEETWES_AGGREGATOR_STORE_WRITER_H_

#include <cstddef>
#include <deque>
#include <optional>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "aggregator/store/batch_store.h"
#include "common/backoff.h"
#include "common/clock.h"

namespace fleetwes::aggregator {

class AggregatorMetrics;

struct WriterOptions {
  size_t max_batch_frames = 500;
  absl::Duration max_batch_delay = absl::Milliseconds(50);
  size_t queue_frames = 20000;  // queued items (frames and node upserts) across all streams
  BackoffOptions backoff;       // between attempts while the database is failing
  // How long Stop() keeps trying to write what is queued while the database is failing.
  absl::Duration flush_timeout = absl::Seconds(5);
};

class Writer {
 public:
  enum class Outcome {
    kCommitted,  // inserted; the transaction committed
    kDuplicate,  // a frame with its key was already stored (committed earlier)
    kFailed,     // not stored; the status says why (Unavailable when the writer stopped first)
  };
  using FrameCallback = absl::AnyInvocable<void(Outcome, const absl::Status&) &&>;
  using ReadyCallback = absl::AnyInvocable<void() &&>;

  enum class SubmitResult {
    kAccepted,   // queued; the callback will run exactly once
    kQueueFull,  // not queued; `ready` will run once when there is room (or at Stop)
    kStopped,    // not queued; the writer is stopping or stopped; nothing will run
  };

  // `store`, `clock` and `metrics` must outlive the writer.
  Writer(BatchStore* store, Clock* clock, AggregatorMetrics* metrics, WriterOptions options);
  // One writer thread per store (at least one); each store is called from its thread only.
  Writer(std::vector<BatchStore*> stores, Clock* clock, AggregatorMetrics* metrics,
         WriterOptions options);
  ~Writer();  // Stop()s
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void Start();
  // Refuses new work, writes what is queued (giving up after flush_timeout while the database is
  // failing: those frames complete with kFailed), runs pending ready callbacks, joins. Idempotent.
  void Stop();

  // Queues a frame; on kQueueFull registers `ready` instead. `done` is consumed only when
  // accepted.
  SubmitResult TrySubmitFrame(FrameRecord& record, FrameCallback& done, ReadyCallback ready);
  // Queues a node upsert (from a Hello); same contract without a completion callback.
  SubmitResult TrySubmitNode(NodeRecord& record, ReadyCallback ready);

  size_t queued() const;

 private:
  struct Item {
    std::optional<NodeRecord> node;
    std::optional<FrameRecord> frame;
    FrameCallback done;
  };

  SubmitResult Enqueue(Item& item, ReadyCallback& ready);
  // The queue (and store) of the item's node.
  size_t ShardOf(const Item& item) const;
  void Run(size_t shard);
  // Waits for the next batch of `shard`; empty when stopping with nothing queued there.
  std::vector<Item> NextBatch(size_t shard);
  // Writes `batch` through `store` (retrying transient failures) and completes its callbacks.
  void WriteWithRetry(BatchStore* store, std::vector<Item>& batch);
  // One attempt at the items not completed yet; on a refusal for good, isolates the refused
  // items by bisection (they fail with the database's status, the others complete).
  absl::Status Attempt(BatchStore* store, std::vector<Item>& batch, std::vector<bool>* completed);
  // Writes batch[i] for i in `items` in one transaction (bisecting on a refusal for good).
  absl::Status AttemptSome(BatchStore* store, std::vector<Item>& batch,
                           absl::Span<const size_t> items, std::vector<bool>* completed);
  void Complete(Item& item, Outcome outcome, const absl::Status& status);
  void RunReadyCallbacks();

  const std::vector<BatchStore*> stores_;
  Clock* const clock_;
  AggregatorMetrics* const metrics_;
  const WriterOptions options_;

  mutable absl::Mutex mu_;
  std::vector<std::deque<Item>> queues_ ABSL_GUARDED_BY(mu_);  // one per store
  size_t queued_ ABSL_GUARDED_BY(mu_) = 0;                     // across the queues
  std::deque<ReadyCallback> ready_ ABSL_GUARDED_BY(mu_);       // oldest first
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time stop_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Notification stop_;  // wakes backoff waits
  std::vector<std::thread> threads_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_WRITER_H_
