// Router.Pick over gRPC: the nodes serving the model (CandidatesFor) and the aggregator's clock
// handed to Pick (routing/router.h). Thread-safe.
#ifndef FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_
#define FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_

#include "aggregator/fleet/fleet_state.h"
#include "aggregator/metrics.h"
#include "common/clock.h"
#include "fleetwes/v1/router.grpc.pb.h"

namespace fleetwes::aggregator {

class RouterService final : public v1::Router::Service {
 public:
  // Pointers must outlive the service.
  RouterService(const FleetState* state, Clock* clock, StalenessPolicy policy,
                AggregatorMetrics* metrics);

  grpc::Status Pick(grpc::ServerContext* context, const v1::PickRequest* request,
                    v1::PickResponse* response) override;

 private:
  const FleetState* const state_;
  Clock* const clock_;
  const StalenessPolicy policy_;
  AggregatorMetrics* const metrics_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_
