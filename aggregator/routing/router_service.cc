#include "aggregator/routing/router_service.h"

#include <utility>

#include "absl/random/random.h"
#include "aggregator/ingest/validate.h"
#include "aggregator/routing/router.h"
#include "common/status.h"

namespace fleetwes::aggregator {

RouterService::RouterService(const FleetState* state, Clock* clock, StalenessPolicy policy,
                             AggregatorMetrics* metrics, CandidateSource candidates)
    : state_(state),
      clock_(clock),
      policy_(policy),
      metrics_(metrics),
      candidates_(std::move(candidates)) {}

std::shared_ptr<const RouteTable> RouterService::TableFor(const std::string& model) {
  std::shared_ptr<const ServingSet> set = state_->Serving(model);
  if (set->nodes.empty()) return std::make_shared<const RouteTable>();
  {
    absl::MutexLock lock(&mu_);
    auto it = tables_.find(model);
    if (it != tables_.end() && it->second->set == set) return it->second;
  }
  auto table = std::make_shared<const RouteTable>(BuildRouteTable(std::move(set)));
  absl::MutexLock lock(&mu_);
  tables_[model] = table;
  return table;
}

grpc::Status RouterService::Pick(grpc::ServerContext*, const v1::PickRequest* request,
                                 v1::PickResponse* response) {
  thread_local absl::BitGen gen;
  const absl::Time now = clock_->Now();
  absl::StatusOr<v1::PickResponse> result;
  if (candidates_ != nullptr) {
    result = aggregator::Pick(*request, candidates_(request->model()), now, policy_, gen);
  } else if (request->model().empty() || request->model().size() > kMaxNameLength) {
    // Refused by Pick's validation; no table is looked up for it.
    result = aggregator::Pick(*request, std::vector<NodeStatePtr>(), now, policy_, gen);
  } else {
    result = aggregator::Pick(*request, *TableFor(request->model()), now, policy_, gen);
  }
  metrics_->CountApiRequest("Router.Pick", result.status());
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace fleetwes::aggregator
