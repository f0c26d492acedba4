#include "aggregator/metrics.h"

#include <string>

#include "absl/status/status.h"

namespace fleetwes::aggregator {

namespace {

std::string CodeName(absl::StatusCode code) {
  std::string name = absl::StatusCodeToString(code);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace

AggregatorMetrics::AggregatorMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  auto& frames = prometheus::BuildCounter()
                     .Name("fleetwes_ingest_frames_total")
                     .Help("Frames received on Ingest.Publish, by outcome")
                     .Register(*registry_);
  frames_committed_ = &frames.Add({{"result", "committed"}});
  frames_duplicate_ = &frames.Add({{"result", "duplicate"}});
  frames_rejected_ = &frames.Add({{"result", "rejected"}});

  auto& rejected = prometheus::BuildCounter()
                       .Name("fleetwes_ingest_frames_rejected_total")
                       .Help("Frames refused for good, by reason")
                       .Register(*registry_);
  for (RejectReason r : kAllRejectReasons) {
    rejected_by_reason_[r] = &rejected.Add({{"reason", std::string(RejectReasonName(r))}});
  }

  streams_ = &prometheus::BuildGauge()
                  .Name("fleetwes_ingest_streams")
                  .Help("Open Ingest.Publish streams")
                  .Register(*registry_)
                  .Add({});
  auto& refused = prometheus::BuildCounter()
                      .Name("fleetwes_ingest_streams_failed_total")
                      .Help("Publish streams ended with an error status, by reason")
                      .Register(*registry_);
  streams_refused_hello_ = &refused.Add({{"reason", "hello"}});
  streams_refused_protocol_ = &refused.Add({{"reason", "protocol"}});
  streams_ended_unavailable_ = &refused.Add({{"reason", "unavailable"}});

  writer_queue_ = &prometheus::BuildGauge()
                       .Name("fleetwes_writer_queue_frames")
                       .Help("Items (frames and node upserts) waiting for the database writer")
                       .Register(*registry_)
                       .Add({});
  writer_batch_frames_ = &prometheus::BuildHistogram()
                              .Name("fleetwes_writer_batch_frames")
                              .Help("Frames per committed write batch")
                              .Register(*registry_)
                              .Add({}, prometheus::Histogram::BucketBoundaries{
                                           1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000});
  writer_commit_seconds_ =
      &prometheus::BuildHistogram()
           .Name("fleetwes_writer_commit_seconds")
           .Help("Time to write and commit one batch")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                            0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  partitions_dropped_ = &prometheus::BuildCounter()
                             .Name("fleetwes_store_partitions_dropped_total")
                             .Help("Day partitions dropped by the retention pass")
                             .Register(*registry_)
                             .Add({});
  checkpoint_last_success_ =
      &prometheus::BuildGauge()
           .Name("fleetwes_checkpoint_last_success_timestamp_seconds")
           .Help("When the last checkpoint of rank histories and baselines was committed")
           .Register(*registry_)
           .Add({});
  checkpoint_duration_ = &prometheus::BuildGauge()
                              .Name("fleetwes_checkpoint_duration_seconds")
                              .Help("How long the last successful checkpoint took")
                              .Register(*registry_)
                              .Add({});
  checkpoint_tracks_ = &prometheus::BuildGauge()
                            .Name("fleetwes_checkpoint_tracks")
                            .Help("Node and leaderboard tracks in the last checkpoint")
                            .Register(*registry_)
                            .Add({});
  checkpoint_invalid_tracks_ = &prometheus::BuildCounter()
                                    .Name("fleetwes_checkpoint_invalid_tracks_total")
                                    .Help("Checkpointed tracks skipped at start as malformed")
                                    .Register(*registry_)
                                    .Add({});
  db_errors_family_ = &prometheus::BuildCounter()
                           .Name("fleetwes_db_errors_total")
                           .Help("Failed database operations, by status code")
                           .Register(*registry_);
  for (absl::StatusCode code :
       {absl::StatusCode::kUnavailable, absl::StatusCode::kUnknown, absl::StatusCode::kInternal,
        absl::StatusCode::kInvalidArgument, absl::StatusCode::kResourceExhausted,
        absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kAborted}) {
    db_errors_family_->Add({{"code", CodeName(code)}});
  }
  events_published_ = &prometheus::BuildCounter()
                           .Name("fleetwes_events_published_total")
                           .Help("Fleet events handed to the event hub")
                           .Register(*registry_)
                           .Add({});
  events_stored_ = &prometheus::BuildCounter()
                        .Name("fleetwes_events_stored_total")
                        .Help("Fleet events committed to the events table")
                        .Register(*registry_)
                        .Add({});
  auto& dropped = prometheus::BuildCounter()
                      .Name("fleetwes_events_dropped_total")
                      .Help("Fleet events not stored, or not delivered to a watcher, by reason")
                      .Register(*registry_);
  for (const char* reason : {"queue_full", "invalid", "expired", "db_error", "watcher_behind"}) {
    events_dropped_[reason] = &dropped.Add({{"reason", reason}});
  }
  events_queue_ = &prometheus::BuildGauge()
                       .Name("fleetwes_events_queue")
                       .Help("Fleet events waiting for the database")
                       .Register(*registry_)
                       .Add({});
  leaderboard_watchers_ = &prometheus::BuildGauge()
                               .Name("fleetwes_leaderboard_watchers")
                               .Help("Open Fleet.WatchLeaderboard streams")
                               .Register(*registry_)
                               .Add({});
  api_family_ = &prometheus::BuildCounter()
                     .Name("fleetwes_api_requests_total")
                     .Help("Router and Fleet calls, by service method and status code")
                     .Register(*registry_);
}

void AggregatorMetrics::CountRejected(RejectReason reason) {
  frames_rejected_->Increment();
  rejected_by_reason_.at(reason)->Increment();
}

prometheus::Counter& AggregatorMetrics::events_dropped(absl::string_view reason) {
  return *events_dropped_.at(std::string(reason));
}

void AggregatorMetrics::CountDbError(const absl::Status& status) {
  // Family::Add returns the existing series for known labels; codes are a small fixed set.
  db_errors_family_->Add({{"code", CodeName(status.code())}}).Increment();
}

void AggregatorMetrics::CountApiRequest(absl::string_view service, const absl::Status& status) {
  api_family_->Add({{"method", std::string(service)}, {"code", CodeName(status.code())}})
      .Increment();
}

}  // namespace fleetwes::aggregator
