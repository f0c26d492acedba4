// Router.Pick over gRPC: the nodes serving the model and the aggregator's clock handed to Pick
// (routing/router.h). The model's route table is built from the fleet state's serving set
// (FleetState::Serving) and kept until that set changes, so calls between two changes to the
// model's nodes share one table (and what Pick builds on it on first use: orders, prebuilt
// candidates). A callback service: each call is answered on the gRPC thread that received it,
// its request and response on a per-call arena. Thread-safe.
#ifndef FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_
#define FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/metrics.h"
#include "aggregator/routing/router.h"
#include "common/clock.h"
#include "fleetwes/v1/router.grpc.pb.h"

namespace fleetwes::aggregator {

class RouterService final : public v1::Router::CallbackService {
 public:
  // The nodes to pick from for a model; must be thread-safe.
  using CandidateSource = std::function<std::vector<NodeStatePtr>(absl::string_view model)>;

  // Pointers must outlive the service. `candidates`, when given, replaces the fleet state's
  // serving sets (and the table cache) as the source of a model's nodes.
  RouterService(const FleetState* state, Clock* clock, StalenessPolicy policy,
                AggregatorMetrics* metrics, CandidateSource candidates = nullptr);
  ~RouterService() override;

  grpc::ServerUnaryReactor* Pick(grpc::CallbackServerContext* context,
                                 const v1::PickRequest* request,
                                 v1::PickResponse* response) override;

  // What Pick answers, without the transport (counted in the metrics as a call).
  grpc::Status Answer(const v1::PickRequest& request, v1::PickResponse* response);

 private:
  class Allocator;

  const FleetState* const state_;
  Clock* const clock_;
  const StalenessPolicy policy_;
  AggregatorMetrics* const metrics_;
  // The table of a model's current serving set; rebuilt when the set changed.
  std::shared_ptr<const RouteTable> TableFor(const std::string& model);

  const CandidateSource candidates_;
  std::unique_ptr<Allocator> allocator_;  // per-call arenas
  // Models seen in requests that some node serves; bounded by the models in the fleet.
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const RouteTable>> tables_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_
