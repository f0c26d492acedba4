// The aggregator's Prometheus metrics: one registry, families registered once at construction,
// and handles for the hot paths (docs/api.md lists every metric). Per-node WES gauges are not
// here: they are rendered from the fleet state at scrape time (http/http_server.h).
// Thread-safe: prometheus-cpp metrics are atomic; the handles never change after construction.
#ifndef FLEETWES_AGGREGATOR_METRICS_H_
#define FLEETWES_AGGREGATOR_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "aggregator/ingest/validate.h"

namespace fleetwes::aggregator {

class AggregatorMetrics {
 public:
  AggregatorMetrics();
  AggregatorMetrics(const AggregatorMetrics&) = delete;
  AggregatorMetrics& operator=(const AggregatorMetrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // fleetwes_ingest_frames_total{result}
  prometheus::Counter& frames_committed() { return *frames_committed_; }
  prometheus::Counter& frames_duplicate() { return *frames_duplicate_; }
  prometheus::Counter& frames_rejected() { return *frames_rejected_; }
  // fleetwes_ingest_frames_rejected_total{reason}; also counts frames_rejected().
  void CountRejected(RejectReason reason);
  // fleetwes_ingest_frames_rejected_total{reason}.
  prometheus::Counter& rejected(RejectReason reason) { return *rejected_by_reason_.at(reason); }
  // fleetwes_ingest_streams: open Publish streams.
  prometheus::Gauge& streams() { return *streams_; }
  // fleetwes_ingest_streams_failed_total{reason="hello|protocol|unavailable"}
  prometheus::Counter& streams_refused_hello() { return *streams_refused_hello_; }
  prometheus::Counter& streams_refused_protocol() { return *streams_refused_protocol_; }
  prometheus::Counter& streams_ended_unavailable() { return *streams_ended_unavailable_; }

  // fleetwes_writer_queue_frames, fleetwes_writer_batch_frames, fleetwes_writer_commit_seconds
  prometheus::Gauge& writer_queue() { return *writer_queue_; }
  prometheus::Histogram& writer_batch_frames() { return *writer_batch_frames_; }
  prometheus::Histogram& writer_commit_seconds() { return *writer_commit_seconds_; }
  // fleetwes_store_partitions_dropped_total: expired day partitions dropped by retention.
  prometheus::Counter& partitions_dropped() { return *partitions_dropped_; }
  // fleetwes_db_errors_total{code}: failed database operations by status code.
  void CountDbError(const absl::Status& status);
  // Checkpoints of rank histories and baselines (aggregator/store/track_store.h):
  // fleetwes_checkpoint_last_success_timestamp_seconds, fleetwes_checkpoint_duration_seconds
  // (the last successful one), fleetwes_checkpoint_tracks (tracks it wrote) and
  // fleetwes_checkpoint_invalid_tracks_total (stored tracks skipped as malformed at start).
  prometheus::Gauge& checkpoint_last_success() { return *checkpoint_last_success_; }
  prometheus::Gauge& checkpoint_duration() { return *checkpoint_duration_; }
  prometheus::Gauge& checkpoint_tracks() { return *checkpoint_tracks_; }
  prometheus::Counter& checkpoint_invalid_tracks() { return *checkpoint_invalid_tracks_; }

  // fleetwes_events_published_total: events handed to the event hub.
  prometheus::Counter& events_published() { return *events_published_; }
  // fleetwes_events_stored_total: events committed to the events table.
  prometheus::Counter& events_stored() { return *events_stored_; }
  // fleetwes_events_dropped_total{reason="queue_full|invalid|expired|db_error|watcher_behind"}:
  // events not stored (or, for watcher_behind, not delivered to one watcher).
  prometheus::Counter& events_dropped(absl::string_view reason);
  // fleetwes_events_queue: events waiting for the database.
  prometheus::Gauge& events_queue() { return *events_queue_; }
  // fleetwes_leaderboard_watchers: open WatchLeaderboard streams.
  prometheus::Gauge& leaderboard_watchers() { return *leaderboard_watchers_; }

  // fleetwes_api_requests_total{method,code} for Router and Fleet calls ("Router.Pick").
  void CountApiRequest(absl::string_view service, const absl::Status& status);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* db_errors_family_;
  prometheus::Family<prometheus::Counter>* api_family_;
  prometheus::Counter* partitions_dropped_;
  prometheus::Gauge* checkpoint_last_success_;
  prometheus::Gauge* checkpoint_duration_;
  prometheus::Gauge* checkpoint_tracks_;
  prometheus::Counter* checkpoint_invalid_tracks_;
  prometheus::Counter* frames_committed_;
  prometheus::Counter* frames_duplicate_;
  prometheus::Counter* frames_rejected_;
  absl::flat_hash_map<RejectReason, prometheus::Counter*> rejected_by_reason_;
  prometheus::Gauge* streams_;
  prometheus::Counter* streams_refused_hello_;
  prometheus::Counter* streams_refused_protocol_;
  prometheus::Counter* streams_ended_unavailable_;
  prometheus::Gauge* writer_queue_;
  prometheus::Histogram* writer_batch_frames_;
  prometheus::Histogram* writer_commit_seconds_;
  prometheus::Counter* events_published_;
  prometheus::Counter* events_stored_;
  absl::flat_hash_map<std::string, prometheus::Counter*> events_dropped_;
  prometheus::Gauge* events_queue_;
  prometheus::Gauge* leaderboard_watchers_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_METRICS_H_
