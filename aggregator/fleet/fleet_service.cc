#include "aggregator/fleet/fleet_service.h"

#include <algorithm>
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
  if (!IsValidNodeId(r.node_id())) {
    return absl::InvalidArgumentError("node_id: must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  if (r.model().size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: longer than ", kMaxNameLength, " bytes"));
  }
  absl::StatusOr<std::optional<absl::Time>> start = RequestTime(r.has_start(), r.start(), "start");
  if (!start.ok()) return start.status();
  absl::StatusOr<std::optional<absl::Time>> end = RequestTime(r.has_end(), r.end(), "end");
  if (!end.ok()) return end.status();
  HistoryQuery q;
  q.node_id = r.node_id();
  q.model = r.model();
  q.end = end->has_value() ? **end : clock_->Now();
  q.start = start->has_value() ? **start : q.end - kHistoryDefaultSpan;
  if (q.start > q.end) return absl::InvalidArgumentError("start: after end");
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

FleetService::FleetService(const FleetQueries* queries, AggregatorMetrics* metrics)
    : queries_(queries), metrics_(metrics) {}

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

}  // namespace fleetwes::aggregator
