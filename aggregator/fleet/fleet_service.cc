#include "aggregator/fleet/fleet_service.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "aggregator/fleet/leaderboard.h"
#include "aggregator/ingest/validate.h"
#include "aggregator/proto_time.h"
#include "common/logging.h"
#include "common/status.h"

namespace fleetwes::aggregator {

namespace {

// Validates a Timestamp from a request; nullopt when unset.
absl::StatusOr<std::optional<absl::Time>> RequestTime(bool has,
                                                      const google::protobuf::Timestamp& ts,
                                                      absl::string_view field) {
  if (!has) return std::optional<absl::Time>();
  if (ts.seconds() < -62'135'596'800 || ts.seconds() > 253'402'300'799 || ts.nanos() < 0 ||
      ts.nanos() > 999'999'999) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": not a valid timestamp"));
  }
  return std::optional<absl::Time>(FromProtoTime(ts));
}

// Validates a Duration step: zero (every sample) or within [kMinStep, kMaxStep].
absl::StatusOr<absl::Duration> RequestStep(bool has, const google::protobuf::Duration& d) {
  if (!has) return absl::ZeroDuration();
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999'999'999 ||
      d.seconds() > absl::ToInt64Seconds(kMaxStep)) {
    return absl::InvalidArgumentError(absl::StrCat("step: must be 0 or between ",
                                                   absl::FormatDuration(kMinStep), " and ",
                                                   absl::FormatDuration(kMaxStep)));
  }
  const absl::Duration step = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  if (step != absl::ZeroDuration() && (step < kMinStep || step > kMaxStep)) {
    return absl::InvalidArgumentError(absl::StrCat("step: must be 0 or between ",
                                                   absl::FormatDuration(kMinStep), " and ",
                                                   absl::FormatDuration(kMaxStep)));
  }
  return step;
}

struct TimeRange {
  absl::Time start;
  absl::Time end;
};

// [start, end] of a request: end defaults to now, start to end - default_span; start after end
// or a range longer than kMaxQuerySpan is INVALID_ARGUMENT.
absl::StatusOr<TimeRange> RequestRange(bool has_start, const google::protobuf::Timestamp& start,
                                       bool has_end, const google::protobuf::Timestamp& end,
                                       absl::Time now, absl::Duration default_span) {
  absl::StatusOr<std::optional<absl::Time>> s = RequestTime(has_start, start, "start");
  if (!s.ok()) return s.status();
  absl::StatusOr<std::optional<absl::Time>> e = RequestTime(has_end, end, "end");
  if (!e.ok()) return e.status();
  TimeRange r;
  r.end = e->has_value() ? **e : now;
  r.start = s->has_value() ? **s : r.end - default_span;
  if (r.start > r.end) return absl::InvalidArgumentError("start: after end");
  if (r.end - r.start > kMaxQuerySpan) {
    return absl::InvalidArgumentError(absl::StrCat("start..end: longer than the maximum of ",
                                                   absl::ToInt64Hours(kMaxQuerySpan) / 24,
                                                   " days"));
  }
  return r;
}

absl::Status CheckNodeAndModel(const std::string& node_id, const std::string& model) {
  if (!IsValidNodeId(node_id)) {
    return absl::InvalidArgumentError("node_id: must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  if (model.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: longer than ", kMaxNameLength, " bytes"));
  }
  return absl::OkStatus();
}

// The board as a watcher sees it: without the instant it was built and the data ages, which
// change at every call.
v1::LeaderboardResponse Comparable(v1::LeaderboardResponse board) {
  board.clear_as_of();
  for (v1::LeaderboardEntry& e : *board.mutable_entries()) e.clear_data_age_s();
  for (v1::LeaderboardEntry& e : *board.mutable_unranked()) e.clear_data_age_s();
  return board;
}

template <typename Response>
grpc::Status Answer(AggregatorMetrics* metrics, absl::string_view method,
                    absl::StatusOr<Response> result, Response* response) {
  metrics->CountApiRequest(method, result.status());
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace

FleetQueries::FleetQueries(const FleetState* state, PgReader* reader, Clock* clock,
                           StalenessPolicy policy)
    : state_(state), reader_(reader), clock_(clock), policy_(policy) {}

absl::StatusOr<v1::LeaderboardResponse> FleetQueries::Leaderboard(
    const v1::LeaderboardRequest& r) const {
  if (r.model().size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: longer than ", kMaxNameLength, " bytes"));
  }
  const size_t limit =
      r.limit() == 0 ? kLeaderboardDefaultLimit : std::min<size_t>(r.limit(), kLeaderboardMaxLimit);
  return state_->Leaderboard(r.model(), clock_->Now(), limit);
}

v1::NodeSummary FleetQueries::Summary(const NodeState& node, absl::Time now) const {
  v1::NodeSummary s;
  s.set_node_id(node.node_id);
  s.mutable_labels()->insert(node.labels.begin(), node.labels.end());
  s.set_agent_version(node.agent_version);
  *s.mutable_last_seen() = ToProtoTime(node.last_seen);
  s.set_stale(node.Stale(now, policy_));
  if (node.latest != nullptr) {
    s.set_last_seq(node.latest->seq());
    std::set<std::string> models;
    for (const v1::ModelSample& m : node.latest->models()) models.insert(m.model());
    for (const std::string& m : models) s.add_models(m);
    s.set_thermal_state(node.latest->thermal_state());
    *s.mutable_node_wes() = node.latest->node_wes();
  }
  return s;
}

absl::StatusOr<v1::ListNodesResponse> FleetQueries::ListNodes(const v1::ListNodesRequest&) const {
  const absl::Time now = clock_->Now();
  v1::ListNodesResponse out;
  for (const NodeStatePtr& node : state_->Snapshot()) *out.add_nodes() = Summary(*node, now);
  return out;
}

absl::StatusOr<v1::GetNodeResponse> FleetQueries::GetNode(const v1::GetNodeRequest& r) const {
  if (!IsValidNodeId(r.node_id())) {
    return absl::InvalidArgumentError("node_id: must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  NodeStatePtr node = state_->Get(r.node_id());
  if (node == nullptr) {
    return absl::NotFoundError(absl::StrCat("node \"", r.node_id(), "\" is not known"));
  }
  v1::GetNodeResponse out;
  *out.mutable_node() = Summary(*node, clock_->Now());
  if (node->latest != nullptr) *out.mutable_latest_frame() = *node->latest;
  return out;
}

absl::StatusOr<v1::HistoryResponse> FleetQueries::History(const v1::HistoryRequest& r) const {
  if (absl::Status s = CheckNodeAndModel(r.node_id(), r.model()); !s.ok()) return s;
  absl::StatusOr<TimeRange> range = RequestRange(r.has_start(), r.start(), r.has_end(), r.end(),
                                                 clock_->Now(), kHistoryDefaultSpan);
  if (!range.ok()) return range.status();
  absl::StatusOr<absl::Duration> step = RequestStep(r.has_step(), r.step());
  if (!step.ok()) return step.status();
  HistoryQuery q;
  q.node_id = r.node_id();
  q.model = r.model();
  q.start = range->start;
  q.end = range->end;
  q.step = *step;
  q.limit = r.limit() == 0 ? kHistoryDefaultLimit : std::min<size_t>(r.limit(), kHistoryMaxLimit);
  if (reader_ == nullptr) return absl::UnavailableError("history: no database configured");
  absl::StatusOr<std::vector<v1::HistoryPoint>> points = reader_->History(q);
  if (!points.ok()) {
    Logger("fleet")->warn("history query for {} failed: {}", q.node_id,
                          std::string(points.status().message()));
    return points.status();
  }
  v1::HistoryResponse out;
  for (v1::HistoryPoint& p : *points) *out.add_points() = std::move(p);
  return out;
}

absl::StatusOr<v1::ProfileResponse> FleetQueries::Profile(const v1::ProfileRequest& r) const {
  if (absl::Status s = CheckNodeAndModel(r.node_id(), r.model()); !s.ok()) return s;
  absl::StatusOr<TimeRange> range = RequestRange(r.has_start(), r.start(), r.has_end(), r.end(),
                                                 clock_->Now(), kProfileDefaultSpan);
  if (!range.ok()) return range.status();
  absl::StatusOr<absl::Duration> step = RequestStep(r.has_step(), r.step());
  if (!step.ok()) return step.status();
  if (reader_ == nullptr) return absl::UnavailableError("profile: no database configured");
  ProfileQuery q;
  q.node_id = r.node_id();
  q.model = r.model();
  q.start = range->start;
  q.end = range->end;
  q.step = *step;
  q.limit = r.limit() == 0 ? kProfileDefaultLimit : std::min<size_t>(r.limit(), kProfileMaxLimit);
  auto log = Logger("fleet");
  if (q.model.empty()) {
    absl::StatusOr<std::string> model = reader_->BusiestModel(q.node_id, q.start, q.end);
    if (!model.ok()) {
      log->warn("profile query for {} failed: {}", q.node_id,
                std::string(model.status().message()));
      return model.status();
    }
    if (model->empty()) {
      return absl::NotFoundError(
          absl::StrCat("node \"", q.node_id, "\" has no model samples between ",
                       absl::FormatTime(absl::RFC3339_sec, q.start, absl::UTCTimeZone()), " and ",
                       absl::FormatTime(absl::RFC3339_sec, q.end, absl::UTCTimeZone())));
    }
    q.model = *std::move(model);
  }
  absl::StatusOr<std::vector<v1::ProfilePoint>> points = reader_->Profile(q);
  if (!points.ok()) {
    log->warn("profile query for {} failed: {}", q.node_id, std::string(points.status().message()));
    return points.status();
  }
  v1::ProfileResponse out;
  out.set_node_id(q.node_id);
  out.set_model(q.model);
  for (v1::ProfilePoint& p : *points) *out.add_points() = std::move(p);
  return out;
}

absl::StatusOr<v1::EventsResponse> FleetQueries::Events(const v1::EventsRequest& r) const {
  if (!r.node_id().empty() && !IsValidNodeId(r.node_id())) {
    return absl::InvalidArgumentError("node_id: must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  if (r.model().size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: longer than ", kMaxNameLength, " bytes"));
  }
  EventQuery q;
  for (int kind : r.kinds()) {
    if (kind == v1::EVENT_KIND_UNSPECIFIED || !v1::EventKind_IsValid(kind)) {
      return absl::InvalidArgumentError(absl::StrCat("kinds: unknown event kind ", kind));
    }
    q.kinds.push_back(static_cast<v1::EventKind>(kind));
  }
  absl::StatusOr<TimeRange> range = RequestRange(r.has_start(), r.start(), r.has_end(), r.end(),
                                                 clock_->Now(), kEventsDefaultSpan);
  if (!range.ok()) return range.status();
  q.node_id = r.node_id();
  q.model = r.model();
  q.start = range->start;
  q.end = range->end;
  q.limit = r.limit() == 0 ? kEventsDefaultLimit : std::min<size_t>(r.limit(), kEventsMaxLimit);
  if (reader_ == nullptr) return absl::UnavailableError("events: no database configured");
  absl::StatusOr<std::vector<v1::Event>> events = reader_->Events(q);
  if (!events.ok()) {
    Logger("fleet")->warn("events query failed: {}", std::string(events.status().message()));
    return events.status();
  }
  v1::EventsResponse out;
  for (v1::Event& e : *events) *out.add_events() = std::move(e);
  return out;
}

FleetService::FleetService(const FleetQueries* queries, AggregatorMetrics* metrics, EventHub* hub,
                           Clock* clock)
    : queries_(queries), metrics_(metrics), hub_(hub), clock_(clock) {}

grpc::Status FleetService::Leaderboard(grpc::ServerContext*, const v1::LeaderboardRequest* request,
                                       v1::LeaderboardResponse* response) {
  return Answer(metrics_, "Fleet.Leaderboard", queries_->Leaderboard(*request), response);
}

grpc::Status FleetService::ListNodes(grpc::ServerContext*, const v1::ListNodesRequest* request,
                                     v1::ListNodesResponse* response) {
  return Answer(metrics_, "Fleet.ListNodes", queries_->ListNodes(*request), response);
}

grpc::Status FleetService::GetNode(grpc::ServerContext*, const v1::GetNodeRequest* request,
                                   v1::GetNodeResponse* response) {
  return Answer(metrics_, "Fleet.GetNode", queries_->GetNode(*request), response);
}

grpc::Status FleetService::History(grpc::ServerContext*, const v1::HistoryRequest* request,
                                   v1::HistoryResponse* response) {
  return Answer(metrics_, "Fleet.History", queries_->History(*request), response);
}

grpc::Status FleetService::Profile(grpc::ServerContext*, const v1::ProfileRequest* request,
                                   v1::ProfileResponse* response) {
  return Answer(metrics_, "Fleet.Profile", queries_->Profile(*request), response);
}

grpc::Status FleetService::Events(grpc::ServerContext*, const v1::EventsRequest* request,
                                  v1::EventsResponse* response) {
  return Answer(metrics_, "Fleet.Events", queries_->Events(*request), response);
}

grpc::Status FleetService::WatchLeaderboard(grpc::ServerContext* context,
                                            const v1::WatchLeaderboardRequest* request,
                                            grpc::ServerWriter<v1::LeaderboardUpdate>* writer) {
  constexpr absl::string_view kMethod = "Fleet.WatchLeaderboard";
  if (hub_ == nullptr || clock_ == nullptr) {
    absl::Status s = absl::UnavailableError("watching is not available on this server");
    metrics_->CountApiRequest(kMethod, s);
    return ToGrpcStatus(s);
  }
  v1::LeaderboardRequest board_request;
  board_request.set_model(request->model());
  board_request.set_limit(request->limit());
  // Subscribed before the first board is built: no event between the two is lost.
  absl::StatusOr<std::unique_ptr<EventHub::Watcher>> subscribed = hub_->Watch(request->model());
  if (!subscribed.ok()) {
    metrics_->CountApiRequest(kMethod, subscribed.status());
    return ToGrpcStatus(subscribed.status());
  }
  std::unique_ptr<EventHub::Watcher> watcher = *std::move(subscribed);
  // Updates are spaced from when a board was built, not from when its write returned.
  absl::Time last_sent = clock_->Now();
  absl::StatusOr<v1::LeaderboardResponse> board = queries_->Leaderboard(board_request);
  metrics_->CountApiRequest(kMethod, board.status());
  if (!board.ok()) return ToGrpcStatus(board.status());
  v1::LeaderboardUpdate first;
  *first.mutable_leaderboard() = *board;
  if (!writer->Write(first)) return grpc::Status::CANCELLED;
  v1::LeaderboardResponse last = Comparable(*std::move(board));

  while (true) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    // Inside the coalescing interval only a shutdown wakes the stream early.
    const bool due = clock_->Now() >= last_sent + kWatchMinInterval;
    watcher->Wait(kWatchPollInterval, /*for_events=*/due);
    if (watcher->closed()) return grpc::Status::OK;
    const absl::Time now = clock_->Now();
    if (now < last_sent + kWatchMinInterval) continue;
    board = queries_->Leaderboard(board_request);
    if (!board.ok()) return ToGrpcStatus(board.status());
    v1::LeaderboardResponse comparable = Comparable(*board);
    EventHub::Delivery delivery = watcher->Take();
    if (delivery.missed > 0) {
      return grpc::Status(grpc::StatusCode::ABORTED,
                          absl::StrCat(delivery.missed,
                                       " events were dropped because this watch read too slowly; "
                                       "watch again"));
    }
    if (delivery.events.empty() &&
        google::protobuf::util::MessageDifferencer::Equals(comparable, last)) {
      continue;
    }
    v1::LeaderboardUpdate update;
    *update.mutable_leaderboard() = *std::move(board);
    for (v1::Event& e : delivery.events) *update.add_events() = std::move(e);
    if (!writer->Write(update)) return grpc::Status::CANCELLED;
    last = std::move(comparable);
    last_sent = now;
  }
}

}  // namespace fleetwes::aggregator
