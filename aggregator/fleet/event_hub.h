// The aggregator's EventSink: events published by the fleet state go (a) to a bounded queue that
// a background thread writes to the events table in batches, and (b) to every live watcher
// (Fleet.WatchLeaderboard) through a bounded per-watcher buffer. Publish never blocks on either:
// a full queue drops its oldest events (fleetwes_events_dropped_total{reason="queue_full"}), a
// full watcher buffer drops its oldest events and remembers how many it missed
// (reason="watcher_behind"). Invalid events are dropped before both (reason="invalid").
// Thread-safe; Start/Stop from one thread.
#ifndef FLEETWES_AGGREGATOR_FLEET_EVENT_HUB_H_
#define FLEETWES_AGGREGATOR_FLEET_EVENT_HUB_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <pqxx/connection>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "aggregator/config.h"
#include "aggregator/fleet/events.h"
#include "aggregator/metrics.h"
#include "common/backoff.h"
#include "common/clock.h"

namespace fleetwes::aggregator {

struct EventHubOptions {
  // Events waiting for the database; when full the oldest are dropped.
  size_t queue_events = 10000;
  // Most events in one insert.
  size_t max_batch_events = 500;
  // Events buffered per watcher between two reads; when full the oldest are dropped.
  size_t watcher_buffer_events = 1000;
  // Most live watchers (each holds a server thread); Watch() refuses more.
  size_t max_watchers = 64;
  // Between attempts after a transient database error.
  BackoffOptions retry;
};

class EventHub final : public EventSink {
 public:
  // What a watcher has received since its previous Take().
  struct Delivery {
    std::vector<v1::Event> events;  // in publish order
    uint64_t missed = 0;            // events dropped from this watcher's full buffer
    bool closed = false;            // the hub shut down: no more events will come
  };

  // One subscriber to the events of one leaderboard. Destroying it unsubscribes. Thread-safe.
  class Watcher {
   public:
    ~Watcher();
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;
    // Blocks up to `timeout` (real time) until the hub closes the watcher or, when
    // `for_events`, until events are buffered (or some were missed); true if that happened.
    bool Wait(absl::Duration timeout, bool for_events = true);
    // Takes the buffered events and the missed count, leaving the buffer empty.
    Delivery Take();
    // True once the hub closed this watcher.
    bool closed();

   private:
    friend class EventHub;
    Watcher(EventHub* hub, std::string model, size_t capacity)
        : hub_(hub), model_(std::move(model)), capacity_(capacity) {}
    void Push(const v1::Event& e, AggregatorMetrics* metrics);
    void Close();

    EventHub* const hub_;
    const std::string model_;
    const size_t capacity_;
    absl::Mutex mu_;
    std::deque<v1::Event> buffer_ ABSL_GUARDED_BY(mu_);
    uint64_t missed_ ABSL_GUARDED_BY(mu_) = 0;
    bool closed_ ABSL_GUARDED_BY(mu_) = false;
  };

  // `database_url` empty: events are not stored, only handed to watchers. Pointers must outlive
  // the hub.
  EventHub(std::string database_url, RetentionConfig retention, Clock* clock,
           AggregatorMetrics* metrics, EventHubOptions options = {});
  ~EventHub() override;  // Stop()s
  EventHub(const EventHub&) = delete;
  EventHub& operator=(const EventHub&) = delete;

  // Starts the database writer thread (no-op without a database URL).
  void Start();
  // Closes every watcher (their streams end), then writes what is queued (one attempt) and joins
  // the writer. Events published afterwards are dropped (reason "queue_full"). Idempotent.
  void Stop();
  // Closes every watcher and refuses new ones (closed at once); publishing still stores.
  void CloseWatchers();

  void Publish(std::vector<v1::Event> events) override;

  // Subscribes to the events whose model is `model` (empty: the fleet leaderboard's).
  // RESOURCE_EXHAUSTED when max_watchers are live already.
  absl::StatusOr<std::unique_ptr<Watcher>> Watch(std::string model);

  // Events waiting for the database, and live watchers (for tests and metrics).
  size_t queued() const;
  size_t watchers() const;

 private:
  void Unsubscribe(Watcher* w);
  void RunWriter();
  // Writes `batch`; true when it is done with (stored or dropped for good).
  bool WriteBatch(const std::vector<v1::Event>& batch);

  const std::string database_url_;
  const RetentionConfig retention_;
  Clock* const clock_;
  AggregatorMetrics* const metrics_;
  const EventHubOptions options_;

  mutable absl::Mutex mu_;
  std::deque<v1::Event> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
  bool watchers_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  absl::Notification stop_;                 // interrupts the writer's retry wait
  std::unique_ptr<pqxx::connection> conn_;  // writer thread only
  std::thread writer_;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_EVENT_HUB_H_
