#include "aggregator/routing/router_service.h"

#include <utility>

#include "aggregator/routing/router.h"
#include "common/status.h"

namespace fleetwes::aggregator {

RouterService::RouterService(const FleetState* state, Clock* clock, StalenessPolicy policy,
                             AggregatorMetrics* metrics, CandidateSource candidates)
    : state_(state),
      clock_(clock),
      policy_(policy),
      metrics_(metrics),
      candidates_(candidates != nullptr ? std::move(candidates) : [state](absl::string_view model) {
        return CandidatesFor(*state, model);
      }) {}

grpc::Status RouterService::Pick(grpc::ServerContext*, const v1::PickRequest* request,
                                 v1::PickResponse* response) {
  absl::StatusOr<v1::PickResponse> result =
      aggregator::Pick(*request, candidates_(request->model()), clock_->Now(), policy_);
  metrics_->CountApiRequest("Router.Pick", result.status());
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace fleetwes::aggregator
