// Fleet (docs/api.md): the leaderboard, the node list, one node with its latest frame, and
// history from PostgreSQL. Leaderboard, ListNodes and GetNode answer from the in-memory fleet
// state; History queries the database. Served with the synchronous API (History blocks on the
// database). Thread-safe.
#ifndef FLEETWES_AGGREGATOR_FLEET_FLEET_SERVICE_H_
#define FLEETWES_AGGREGATOR_FLEET_FLEET_SERVICE_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/metrics.h"
#include "aggregator/store/pg_reader.h"
#include "common/clock.h"
#include "fleetwes/v1/fleet.grpc.pb.h"

namespace fleetwes::aggregator {

inline constexpr size_t kHistoryDefaultLimit = 1000;
inline constexpr size_t kHistoryMaxLimit = 10000;
inline constexpr absl::Duration kHistoryDefaultSpan = absl::Hours(1);

// The calls as plain functions over the state, for the gRPC service and for tests.
class FleetQueries {
 public:
  // `reader` may be null: History then answers UNAVAILABLE. Pointers must outlive this.
  FleetQueries(const FleetState* state, PgReader* reader, Clock* clock, StalenessPolicy policy);

  absl::StatusOr<v1::LeaderboardResponse> Leaderboard(const v1::LeaderboardRequest& r) const;
  absl::StatusOr<v1::ListNodesResponse> ListNodes(const v1::ListNodesRequest& r) const;
  absl::StatusOr<v1::GetNodeResponse> GetNode(const v1::GetNodeRequest& r) const;
  absl::StatusOr<v1::HistoryResponse> History(const v1::HistoryRequest& r) const;

  const StalenessPolicy& policy() const { return policy_; }

 private:
  v1::NodeSummary Summary(const NodeState& node, absl::Time now) const;

  const FleetState* const state_;
  PgReader* const reader_;
  Clock* const clock_;
  const StalenessPolicy policy_;
};

class FleetService final : public v1::Fleet::Service {
 public:
  FleetService(const FleetQueries* queries, AggregatorMetrics* metrics);

  grpc::Status Leaderboard(grpc::ServerContext* context, const v1::LeaderboardRequest* request,
                           v1::LeaderboardResponse* response) override;
  grpc::Status ListNodes(grpc::ServerContext* context, const v1::ListNodesRequest* request,
                         v1::ListNodesResponse* response) override;
  grpc::Status GetNode(grpc::ServerContext* context, const v1::GetNodeRequest* request,
                       v1::GetNodeResponse* response) override;
  grpc::Status History(grpc::ServerContext* context, const v1::HistoryRequest* request,
                       v1::HistoryResponse* response) override;

 private:
  const FleetQueries* const queries_;
  AggregatorMetrics* const metrics_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_FLEET_SERVICE_H_
