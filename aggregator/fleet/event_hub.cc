#include "aggregator/fleet/event_hub.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "aggregator/proto_time.h"
#include "aggregator/store/event_store.h"
#include "aggregator/store/partitions.h"
#include "aggregator/store/pg_status.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

EventHub::Watcher::~Watcher() { hub_->Unsubscribe(this); }

bool EventHub::Watcher::Wait(absl::Duration timeout, bool for_events) {
  absl::MutexLock lock(&mu_);
  auto ready = [this, for_events]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || (for_events && (!buffer_.empty() || missed_ > 0));
  };
  return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
}

EventHub::Delivery EventHub::Watcher::Take() {
  absl::MutexLock lock(&mu_);
  Delivery d;
  d.events.assign(std::make_move_iterator(buffer_.begin()), std::make_move_iterator(buffer_.end()));
  buffer_.clear();
  d.missed = std::exchange(missed_, 0);
  d.closed = closed_;
  return d;
}

bool EventHub::Watcher::closed() {
  absl::MutexLock lock(&mu_);
  return closed_;
}

void EventHub::Watcher::Push(const v1::Event& e, AggregatorMetrics* metrics) {
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  if (buffer_.size() >= capacity_) {
    buffer_.pop_front();
    ++missed_;
    metrics->events_dropped("watcher_behind").Increment();
  }
  buffer_.push_back(e);
}

void EventHub::Watcher::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

EventHub::EventHub(std::string database_url, RetentionConfig retention, Clock* clock,
                   AggregatorMetrics* metrics, EventHubOptions options)
    : database_url_(std::move(database_url)),
      retention_(retention),
      clock_(clock),
      metrics_(metrics),
      options_(options) {}

EventHub::~EventHub() { Stop(); }

void EventHub::Start() {
  if (started_ || database_url_.empty()) return;
  started_ = true;
  writer_ = std::thread([this] { RunWriter(); });
}

void EventHub::CloseWatchers() {
  absl::MutexLock lock(&mu_);
  watchers_closed_ = true;
  for (Watcher* w : watchers_) w->Close();
}

void EventHub::Stop() {
  if (stopped_) return;
  stopped_ = true;
  CloseWatchers();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  stop_.Notify();
  if (writer_.joinable()) writer_.join();
}

void EventHub::Publish(std::vector<v1::Event> events) {
  auto log = Logger("events");
  absl::MutexLock lock(&mu_);
  for (v1::Event& e : events) {
    metrics_->events_published().Increment();
    if (absl::Status s = ValidateEvent(e); !s.ok()) {
      metrics_->events_dropped("invalid").Increment();
      log->warn("event of node {} dropped: {}", e.node_id().substr(0, 128),
                std::string(s.message()));
      continue;
    }
    for (Watcher* w : watchers_) {
      if (w->model_ == e.model()) w->Push(e, metrics_);
    }
    if (database_url_.empty() || stopping_) continue;
    if (queue_.size() >= options_.queue_events) {
      queue_.pop_front();
      metrics_->events_dropped("queue_full").Increment();
    }
    queue_.push_back(std::move(e));
  }
  metrics_->events_queue().Set(static_cast<double>(queue_.size()));
}

absl::StatusOr<std::unique_ptr<EventHub::Watcher>> EventHub::Watch(std::string model) {
  std::unique_ptr<Watcher> w(
      new Watcher(this, std::move(model), std::max<size_t>(1, options_.watcher_buffer_events)));
  absl::MutexLock lock(&mu_);
  if (watchers_.size() >= options_.max_watchers) {
    return absl::ResourceExhaustedError(
        absl::StrCat(watchers_.size(),
                     " leaderboard watches are open, the most this server allows "
                     "(leaderboard.max_watchers): close one, or poll Leaderboard instead"));
  }
  if (watchers_closed_) {
    w->Close();
  }
  watchers_.push_back(w.get());
  metrics_->leaderboard_watchers().Set(static_cast<double>(watchers_.size()));
  return w;
}

void EventHub::Unsubscribe(Watcher* w) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), w), watchers_.end());
  metrics_->leaderboard_watchers().Set(static_cast<double>(watchers_.size()));
}

size_t EventHub::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

size_t EventHub::watchers() const {
  absl::MutexLock lock(&mu_);
  return watchers_.size();
}

bool EventHub::WriteBatch(const std::vector<v1::Event>& batch) {
  auto log = Logger("events");
  const absl::Time cutoff = WriteCutoff(retention_, "events", clock_->Now());
  std::vector<v1::Event> fresh;
  fresh.reserve(batch.size());
  for (const v1::Event& e : batch) {
    if (FromProtoTime(e.time()) < cutoff) {
      metrics_->events_dropped("expired").Increment();
    } else {
      fresh.push_back(e);
    }
  }
  if (fresh.empty()) return true;
  absl::Status s = EnsurePgConnection(&conn_, database_url_);
  if (s.ok()) {
    absl::StatusOr<size_t> stored = InsertEvents(*conn_, fresh);
    if (stored.ok()) {
      metrics_->events_stored().Increment(static_cast<double>(*stored));
      return true;
    }
    s = stored.status();
    if (!conn_->is_open()) conn_.reset();
  }
  metrics_->CountDbError(s);
  if (IsTransientStoreError(s)) {
    conn_.reset();
    log->warn("storing {} events failed: {}; retrying", fresh.size(), std::string(s.message()));
    return false;
  }
  metrics_->events_dropped("db_error").Increment(static_cast<double>(fresh.size()));
  log->warn("storing {} events failed for good: {}; dropped", fresh.size(),
            std::string(s.message()));
  return true;
}

void EventHub::RunWriter() {
  Backoff backoff(options_.retry);
  while (true) {
    std::vector<v1::Event> batch;
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping with nothing left
      stopping = stopping_;
      const size_t n = std::min(queue_.size(), std::max<size_t>(1, options_.max_batch_events));
      batch.assign(std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(n)));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
      metrics_->events_queue().Set(static_cast<double>(queue_.size()));
    }
    bool done = WriteBatch(batch);
    while (!done) {
      // After Stop, one last attempt; then the batch is given up.
      if (stopping || clock_->WaitFor(backoff.Next(), &stop_)) {
        done = WriteBatch(batch);
        if (!done)
          metrics_->events_dropped("db_error").Increment(static_cast<double>(batch.size()));
        break;
      }
      done = WriteBatch(batch);
    }
    if (done) backoff.Reset();
  }
}

}  // namespace fleetwes::aggregator
