// Router.Pick over gRPC: the nodes serving the model (CandidatesFor) and the aggregator's clock
// handed to Pick (routing/router.h). Thread-safe.
#ifndef FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_
#define FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_

#include <functional>
#include <vector>

#include "absl/strings/string_view.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/metrics.h"
#include "common/clock.h"
#include "fleetwes/v1/router.grpc.pb.h"

namespace fleetwes::aggregator {

class RouterService final : public v1::Router::Service {
 public:
  // The nodes to pick from for a model; must be thread-safe.
  using CandidateSource = std::function<std::vector<NodeStatePtr>(absl::string_view model)>;

  // Pointers must outlive the service. `candidates` defaults to CandidatesFor(*state, model).
  RouterService(const FleetState* state, Clock* clock, StalenessPolicy policy,
                AggregatorMetrics* metrics, CandidateSource candidates = nullptr);

  grpc::Status Pick(grpc::ServerContext* context, const v1::PickRequest* request,
                    v1::PickResponse* response) override;

 private:
  const FleetState* const state_;
  Clock* const clock_;
  const StalenessPolicy policy_;
  AggregatorMetrics* const metrics_;
  const CandidateSource candidates_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_
