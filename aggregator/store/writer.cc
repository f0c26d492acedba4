#include "aggregator/store/writer.h"

#include <algorithm>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "aggregator/metrics.h"
#include "aggregator/store/pg_status.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

Writer::Writer(BatchStore* store, Clock* clock, AggregatorMetrics* metrics, WriterOptions options)
    : Writer(std::vector<BatchStore*>{store}, clock, metrics, std::move(options)) {}

Writer::Writer(std::vector<BatchStore*> stores, Clock* clock, AggregatorMetrics* metrics,
               WriterOptions options)
    : stores_(std::move(stores)),
      clock_(clock),
      metrics_(metrics),
      options_(std::move(options)),
      queues_(stores_.size()) {}

Writer::~Writer() { Stop(); }

void Writer::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  for (size_t shard = 0; shard < stores_.size(); ++shard) {
    threads_.emplace_back([this, shard] { Run(shard); });
  }
}

void Writer::Stop() {
  bool join = false;
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      stopping_ = true;
      stop_deadline_ = clock_->Now() + options_.flush_timeout;
    }
    join = started_;
  }
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (join) {
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  } else {
    // Never started: nothing can be written; fail what was queued.
    std::vector<std::deque<Item>> left(stores_.size());
    {
      absl::MutexLock lock(&mu_);
      left.swap(queues_);
      queues_.resize(stores_.size());
      queued_ = 0;
    }
    for (std::deque<Item>& queue : left) {
      for (Item& item : queue) {
        Complete(item, Outcome::kFailed, absl::UnavailableError("writer stopped"));
      }
    }
  }
  RunReadyCallbacks();
}

size_t Writer::ShardOf(const Item& item) const {
  if (stores_.size() == 1) return 0;
  const std::string& node = item.node ? item.node->node_id : item.frame->frame->node_id();
  return absl::Hash<absl::string_view>{}(absl::string_view(node)) % stores_.size();
}

Writer::SubmitResult Writer::Enqueue(Item& item, ReadyCallback& ready) {
  const size_t shard = ShardOf(item);
  absl::MutexLock lock(&mu_);
  if (stopping_) return SubmitResult::kStopped;
  if (queued_ >= options_.queue_frames) {
    ready_.push_back(std::move(ready));
    return SubmitResult::kQueueFull;
  }
  queues_[shard].push_back(std::move(item));
  ++queued_;
  metrics_->writer_queue().Set(static_cast<double>(queued_));
  return SubmitResult::kAccepted;
}

Writer::SubmitResult Writer::TrySubmitFrame(FrameRecord& record, FrameCallback& done,
                                            ReadyCallback ready) {
  Item item;
  item.frame = std::move(record);
  item.done = std::move(done);
  SubmitResult result = Enqueue(item, ready);
  if (result != SubmitResult::kAccepted) {  // hand the work back to the caller
    record = std::move(*item.frame);
    done = std::move(item.done);
  }
  return result;
}

Writer::SubmitResult Writer::TrySubmitNode(NodeRecord& record, ReadyCallback ready) {
  Item item;
  item.node = std::move(record);
  SubmitResult result = Enqueue(item, ready);
  if (result != SubmitResult::kAccepted) record = std::move(*item.node);
  return result;
}

size_t Writer::queued() const {
  absl::MutexLock lock(&mu_);
  return queued_;
}

void Writer::Run(size_t shard) {
  while (true) {
    std::vector<Item> batch = NextBatch(shard);
    if (batch.empty()) break;
    RunReadyCallbacks();  // taking the batch made room
    WriteWithRetry(stores_[shard], batch);
    RunReadyCallbacks();
  }
}

std::vector<Writer::Item> Writer::NextBatch(size_t shard) {
  absl::MutexLock lock(&mu_);
  std::deque<Item>& queue = queues_[shard];
  auto has_work = [this, &queue]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue.empty() || stopping_; };
  mu_.Await(absl::Condition(&has_work));
  if (queue.empty()) return {};
  // Let the batch fill up to max_batch_frames or until max_batch_delay has passed.
  auto full = [this, &queue]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue.size() >= options_.max_batch_frames || stopping_;
  };
  if (options_.max_batch_delay > absl::ZeroDuration()) {
    mu_.AwaitWithTimeout(absl::Condition(&full), options_.max_batch_delay);
  }
  const size_t n = std::min(queue.size(), options_.max_batch_frames);
  std::vector<Item> batch;
  batch.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    batch.push_back(std::move(queue.front()));
    queue.pop_front();
  }
  queued_ -= n;
  metrics_->writer_queue().Set(static_cast<double>(queued_));
  return batch;
}

void Writer::WriteWithRetry(BatchStore* store, std::vector<Item>& batch) {
  auto log = Logger("store");
  Backoff backoff(options_.backoff);
  std::vector<bool> completed(batch.size(), false);
  while (true) {
    const absl::Status s = Attempt(store, batch, &completed);
    if (s.ok()) {
      if (backoff.attempts() > 0) {
        log->info("database writes resumed after {} failed attempts", backoff.attempts());
      }
      return;
    }
    absl::Time deadline;
    {
      absl::MutexLock lock(&mu_);
      deadline = stopping_ ? stop_deadline_ : absl::InfiniteFuture();
    }
    const absl::Time now = clock_->Now();
    const absl::Duration delay = backoff.Next();
    if (now >= deadline) {
      log->error("giving up on {} queued items at shutdown: {}", batch.size(),
                 std::string(s.message()));
      for (size_t i = 0; i < batch.size(); ++i) {
        if (!completed[i]) Complete(batch[i], Outcome::kFailed, s);
      }
      return;
    }
    log->warn("database write failed (attempt {}), retrying in {}: {}", backoff.attempts(),
              absl::FormatDuration(delay), std::string(s.message()));
    if (deadline == absl::InfiniteFuture()) {
      clock_->WaitUntil(now + delay, &stop_);  // a stop cuts the wait short
    } else {
      clock_->WaitUntil(std::min(now + delay, deadline), nullptr);
    }
  }
}

absl::Status Writer::Attempt(BatchStore* store, std::vector<Item>& batch,
                             std::vector<bool>* completed) {
  std::vector<size_t> pending;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!(*completed)[i]) pending.push_back(i);
  }
  return AttemptSome(store, batch, pending, completed);
}

absl::Status Writer::AttemptSome(BatchStore* store, std::vector<Item>& batch,
                                 absl::Span<const size_t> items, std::vector<bool>* completed) {
  std::vector<NodeRecord> nodes;
  std::vector<const FrameRecord*> frames;
  std::vector<size_t> frame_index;
  for (size_t i : items) {
    if (batch[i].node) nodes.push_back(*batch[i].node);
    if (batch[i].frame) {
      frames.push_back(&*batch[i].frame);
      frame_index.push_back(i);
    }
  }
  if (nodes.empty() && frames.empty()) return absl::OkStatus();

  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<bool>> inserted = store->WriteBatch(nodes, frames);
  if (inserted.ok()) {
    metrics_->writer_commit_seconds().Observe(absl::ToDoubleSeconds(absl::Now() - start));
    metrics_->writer_batch_frames().Observe(static_cast<double>(frames.size()));
    for (size_t i : items) {
      if (!batch[i].frame) (*completed)[i] = true;  // node upserts
    }
    for (size_t k = 0; k < frame_index.size(); ++k) {
      const size_t i = frame_index[k];
      Complete(batch[i], (*inserted)[k] ? Outcome::kCommitted : Outcome::kDuplicate,
               absl::OkStatus());
      (*completed)[i] = true;
    }
    return absl::OkStatus();
  }
  metrics_->CountDbError(inserted.status());
  if (IsTransientStoreError(inserted.status())) return inserted.status();

  // Refused for good. A single item is the culprit: it fails with the database's status.
  auto log = Logger("store");
  if (items.size() == 1) {
    Item& item = batch[items[0]];
    if (item.frame) {
      const v1::Frame& f = *item.frame->frame;
      log->error("database refused frame {}/{}/{}: {}", f.node_id(), f.boot_id(), f.seq(),
                 std::string(inserted.status().message()));
    } else {
      log->error("database refused node upsert for {}: {}", item.node->node_id,
                 std::string(inserted.status().message()));
    }
    Complete(item, Outcome::kFailed, inserted.status());
    (*completed)[items[0]] = true;
    return absl::OkStatus();
  }
  // Otherwise bisect: each half is written in its own transaction, so the good items commit and
  // k refused items among n cost about 2 k log2(n) transactions instead of n.
  if (items.size() == batch.size()) {
    log->warn("database refused a batch of {} items ({}); isolating the refused ones", items.size(),
              std::string(inserted.status().message()));
  }
  const size_t half = items.size() / 2;
  if (absl::Status s = AttemptSome(store, batch, items.subspan(0, half), completed); !s.ok()) {
    return s;  // transient: the caller retries what is not completed
  }
  return AttemptSome(store, batch, items.subspan(half), completed);
}

void Writer::Complete(Item& item, Outcome outcome, const absl::Status& status) {
  if (item.done) {
    FrameCallback done = std::move(item.done);
    item.done = nullptr;
    std::move(done)(outcome, status);
  }
}

void Writer::RunReadyCallbacks() {
  // Wake only as many waiting streams as there is room for (each parks one item): waking all of
  // them after every batch made thousands of streams retry and park again under overload. The
  // woken ones submit from within their callback, so repeat while room and waiters remain.
  while (true) {
    std::vector<ReadyCallback> ready;
    {
      absl::MutexLock lock(&mu_);
      if (ready_.empty()) return;
      size_t n = ready_.size();
      if (!stopping_) {
        if (queued_ >= options_.queue_frames) return;
        n = std::min(n, options_.queue_frames - queued_);
      }
      ready.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        ready.push_back(std::move(ready_.front()));
        ready_.pop_front();
      }
    }
    for (ReadyCallback& cb : ready) std::move(cb)();
  }
}

}  // namespace fleetwes::aggregator
