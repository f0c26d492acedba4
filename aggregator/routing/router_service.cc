#include "aggregator/routing/router_service.h"

#include <grpcpp/support/message_allocator.h>

#include <chrono>
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
                             AggregatorMetrics* metrics, RouterOptions options,
                             CandidateSource candidates)
    : state_(state),
      clock_(clock),
      policy_(policy),
      metrics_(metrics),
      options_(options),
      candidates_(std::move(candidates)),
      allocator_(std::make_unique<Allocator>()),
      tables_(std::make_shared<const Tables>()) {
  SetMessageAllocatorFor_Pick(allocator_.get());
  if (options_.table_refresh > absl::ZeroDuration() && candidates_ == nullptr) {
    refresh_thread_ = std::thread([this] { RunRefresh(); });
  }
}

RouterService::~RouterService() {
  stop_.Notify();
  if (refresh_thread_.joinable()) refresh_thread_.join();
}

void RouterService::RunRefresh() {
  while (!clock_->WaitFor(options_.table_refresh, &stop_)) Refresh();
}

void RouterService::Publish(
    const std::vector<std::pair<std::string, std::shared_ptr<const RouteTable>>>& add) {
  absl::MutexLock lock(&publish_mu_);
  auto next = std::make_shared<Tables>(*tables_.load(std::memory_order_acquire));
  for (const auto& [model, table] : add) {
    if (table == nullptr) {
      next->erase(model);
    } else {
      (*next)[model] = table;
    }
  }
  tables_.store(std::move(next), std::memory_order_release);
}

size_t RouterService::Refresh() {
  absl::MutexLock refresh_lock(&refresh_mu_);
  const auto start = std::chrono::steady_clock::now();
  // Built outside publish_mu_: a first call for a new model publishes meanwhile without waiting.
  const std::shared_ptr<const Tables> current = tables_.load(std::memory_order_acquire);
  std::vector<std::pair<std::string, std::shared_ptr<const RouteTable>>> rebuilt;
  for (const auto& [model, table] : *current) {
    std::shared_ptr<const ServingSet> set = state_->Serving(model);
    if (set == table->set) continue;
    if (set->nodes.empty()) {
      rebuilt.emplace_back(model, nullptr);
      continue;
    }
    auto fresh =
        std::make_shared<const RouteTable>(BuildRouteTable(std::move(set), policy_, table.get()));
    PrepareRouteTable(*fresh);
    rebuilt.emplace_back(model, std::move(fresh));
  }
  if (!rebuilt.empty()) Publish(rebuilt);
  refresh_ns_.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                  std::chrono::steady_clock::now() - start)
                                                  .count()),
                        std::memory_order_acq_rel);
  refreshes_.fetch_add(1, std::memory_order_acq_rel);
  return rebuilt.size();
}

std::shared_ptr<const RouteTable> RouterService::TableFor(const std::string& model) {
  const std::shared_ptr<const Tables> tables = tables_.load(std::memory_order_acquire);
  auto it = tables->find(model);
  const RouteTable* previous = nullptr;
  if (it != tables->end()) {
    if (options_.table_refresh > absl::ZeroDuration()) return it->second;
    previous = it->second.get();
  }
  std::shared_ptr<const ServingSet> set = state_->Serving(model);
  if (previous != nullptr && previous->set == set) return it->second;
  if (set->nodes.empty()) return std::make_shared<const RouteTable>();
  auto table =
      std::make_shared<const RouteTable>(BuildRouteTable(std::move(set), policy_, previous));
  Publish({{model, table}});
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
