// Fleet (docs/api.md): the leaderboard, the node list, one node with its latest frame, history,
// profiles and events from PostgreSQL, and the leaderboard as a stream. Leaderboard, ListNodes
// and GetNode answer from the in-memory fleet state; History, Profile and Events query the
// database; WatchLeaderboard follows the fleet state and the event hub. Served with the
// synchronous API (database calls block; a watch holds one server thread). Thread-safe.
#ifndef FLEETWES_AGGREGATOR_FLEET_FLEET_SERVICE_H_
#define FLEETWES_AGGREGATOR_FLEET_FLEET_SERVICE_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "aggregator/fleet/event_hub.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/metrics.h"
#include "aggregator/store/pg_reader.h"
#include "common/clock.h"
#include "fleetwes/v1/fleet.grpc.pb.h"

namespace fleetwes::aggregator {

inline constexpr size_t kHistoryDefaultLimit = 1000;
inline constexpr size_t kHistoryMaxLimit = 10000;
inline constexpr absl::Duration kHistoryDefaultSpan = absl::Hours(1);
// History, Profile and Events: the longest [start, end] range, and the bounds of a non-zero step.
inline constexpr absl::Duration kMaxQuerySpan = absl::Hours(24 * 31);
inline constexpr absl::Duration kMinStep = absl::Seconds(1);
inline constexpr absl::Duration kMaxStep = absl::Hours(24);
inline constexpr size_t kProfileDefaultLimit = 1000;
inline constexpr size_t kProfileMaxLimit = 10000;
inline constexpr absl::Duration kProfileDefaultSpan = absl::Hours(1);
inline constexpr size_t kEventsDefaultLimit = 100;
inline constexpr size_t kEventsMaxLimit = 1000;
inline constexpr absl::Duration kEventsDefaultSpan = absl::Hours(24);
// WatchLeaderboard: at most one update per kWatchMinInterval (by the server's clock); the stream
// notices a cancelled call or a shutdown within kWatchPollInterval of real time.
inline constexpr absl::Duration kWatchMinInterval = absl::Seconds(1);
inline constexpr absl::Duration kWatchPollInterval = absl::Milliseconds(100);

// The calls as plain functions over the state, for the gRPC service and for tests.
class FleetQueries {
 public:
  // `reader` may be null: History then answers UNAVAILABLE. Pointers must outlive this.
  FleetQueries(const FleetState* state, PgReader* reader, Clock* clock, StalenessPolicy policy);

  absl::StatusOr<v1::LeaderboardResponse> Leaderboard(const v1::LeaderboardRequest& r) const;
  absl::StatusOr<v1::ListNodesResponse> ListNodes(const v1::ListNodesRequest& r) const;
  absl::StatusOr<v1::GetNodeResponse> GetNode(const v1::GetNodeRequest& r) const;
  absl::StatusOr<v1::HistoryResponse> History(const v1::HistoryRequest& r) const;
  // NOT_FOUND when `model` is empty and the node has no model samples in the range.
  absl::StatusOr<v1::ProfileResponse> Profile(const v1::ProfileRequest& r) const;
  absl::StatusOr<v1::EventsResponse> Events(const v1::EventsRequest& r) const;

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
  // `hub` may be null: WatchLeaderboard then answers UNAVAILABLE. `clock` dates the watch's
  // updates. Pointers must outlive the service.
  FleetService(const FleetQueries* queries, AggregatorMetrics* metrics, EventHub* hub = nullptr,
               Clock* clock = nullptr);

  grpc::Status Leaderboard(grpc::ServerContext* context, const v1::LeaderboardRequest* request,
                           v1::LeaderboardResponse* response) override;
  grpc::Status ListNodes(grpc::ServerContext* context, const v1::ListNodesRequest* request,
                         v1::ListNodesResponse* response) override;
  grpc::Status GetNode(grpc::ServerContext* context, const v1::GetNodeRequest* request,
                       v1::GetNodeResponse* response) override;
  grpc::Status History(grpc::ServerContext* context, const v1::HistoryRequest* request,
                       v1::HistoryResponse* response) override;
  grpc::Status Profile(grpc::ServerContext* context, const v1::ProfileRequest* request,
                       v1::ProfileResponse* response) override;
  grpc::Status Events(grpc::ServerContext* context, const v1::EventsRequest* request,
                      v1::EventsResponse* response) override;
  // The leaderboard now, then an update whenever the board (ignoring data ages) changed or
  // events of the board arrived, at most one per kWatchMinInterval. Ends OK when the hub closes
  // (server shutdown), CANCELLED when the client goes away, ABORTED when the client read so
  // slowly that events were dropped from its buffer.
  grpc::Status WatchLeaderboard(grpc::ServerContext* context,
                                const v1::WatchLeaderboardRequest* request,
                                grpc::ServerWriter<v1::LeaderboardUpdate>* writer) override;

 private:
  const FleetQueries* const queries_;
  AggregatorMetrics* const metrics_;
  EventHub* const hub_;
  Clock* const clock_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_FLEET_SERVICE_H_
