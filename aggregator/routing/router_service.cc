#include "aggregator/routing/router_service.h"

#include <grpcpp/support/message_allocator.h>

#include <utility>

#include "absl/random/random.h"
#include "aggregator/ingest/validate.h"
#include "aggregator/routing/router.h"
#include "common/status.h"
#include "google/protobuf/arena.h"

namespace fleetwes::aggregator {

// Request and response of one call on an arena whose first block is part of the holder, so a
// typical answer (a few candidates and exclusions) allocates once per call.
class RouterService::Allocator final
    : public grpc::MessageAllocator<v1::PickRequest, v1::PickResponse> {
 public:
  grpc::MessageHolder<v1::PickRequest, v1::PickResponse>* AllocateMessages() override {
    return new Holder;
  }

 private:
  static constexpr size_t kInitialBlock = 8 * 1024;

  class Holder final : public grpc::MessageHolder<v1::PickRequest, v1::PickResponse> {
   public:
    Holder() : arena_(block_, kInitialBlock) {
      set_request(google::protobuf::Arena::CreateMessage<v1::PickRequest>(&arena_));
      set_response(google::protobuf::Arena::CreateMessage<v1::PickResponse>(&arena_));
    }
    void Release() override { delete this; }

   private:
    alignas(16) char block_[kInitialBlock];
    google::protobuf::Arena arena_;
  };
};

RouterService::RouterService(const FleetState* state, Clock* clock, StalenessPolicy policy,
                             AggregatorMetrics* metrics, CandidateSource candidates)
    : state_(state),
      clock_(clock),
      policy_(policy),
      metrics_(metrics),
      candidates_(std::move(candidates)),
      allocator_(std::make_unique<Allocator>()) {
  SetMessageAllocatorFor_Pick(allocator_.get());
}

RouterService::~RouterService() = default;

std::shared_ptr<const RouteTable> RouterService::TableFor(const std::string& model) {
  std::shared_ptr<const ServingSet> set = state_->Serving(model);
  if (set->nodes.empty()) return std::make_shared<const RouteTable>();
  {
    absl::MutexLock lock(&mu_);
    auto it = tables_.find(model);
    if (it != tables_.end() && it->second->set == set) return it->second;
  }
  auto table = std::make_shared<const RouteTable>(BuildRouteTable(std::move(set), policy_));
  absl::MutexLock lock(&mu_);
  tables_[model] = table;
  return table;
}

grpc::Status RouterService::Answer(const v1::PickRequest& request, v1::PickResponse* response) {
  thread_local absl::BitGen gen;
  const absl::Time now = clock_->Now();
  absl::Status status;
  if (candidates_ != nullptr) {
    status =
        aggregator::Pick(request, BuildRouteTable(candidates_(request.model()), request.model()),
                         now, policy_, gen, response);
  } else if (request.model().empty() || request.model().size() > kMaxNameLength) {
    // Refused by Pick's validation; no table is looked up for it.
    status = aggregator::Pick(request, RouteTable(), now, policy_, gen, response);
  } else {
    status = aggregator::Pick(request, *TableFor(request.model()), now, policy_, gen, response);
  }
  metrics_->CountApiRequest("Router.Pick", status);
  if (!status.ok()) {
    response->Clear();
    return ToGrpcStatus(status);
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* RouterService::Pick(grpc::CallbackServerContext* context,
                                              const v1::PickRequest* request,
                                              v1::PickResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(Answer(*request, response));
  return reactor;
}

}  // namespace fleetwes::aggregator
