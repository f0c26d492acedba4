#include "aggregator/routing/router_service.h"

#include <grpcpp/server_context.h>
#include <grpcpp/support/async_unary_call.h>
#include <grpcpp/support/message_allocator.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/random/random.h"
#include "aggregator/ingest/validate.h"
#include "aggregator/routing/router.h"
#include "common/status.h"
#include "google/protobuf/arena.h"

namespace fleetwes::aggregator {

namespace {

// Pick calls each queue keeps requested from the server.
constexpr int kRequestedCallsPerQueue = 8;

}  // namespace

// One Pick call on one queue: requested from the server (raw: the request as received),
// answered, finished. Its request is parsed onto an arena whose first block is part of the call;
// the answer is written as wire bytes into a per-thread buffer and sent as one slice. Used by its
// queue's thread only.
class RouterService::Call {
 public:
  // Requests the next Pick call on `queue` (whose mu is held, and which is not shut down).
  static void Request(RouterService* service, Queue* queue) { new Call(service, queue); }

  // The event of the pending operation: the call arrived (answered and finished here), or it
  // finished (done). `ok` false: the call will not go on (the server is shutting down).
  void Proceed(bool ok) ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_->mu) {
    if (!ok || finished_) {
      delete this;
      return;
    }
    // The next call can arrive while this one is answered.
    Request(service_, queue_);
    finished_ = true;
    grpc::Slice bytes;
    if (!request_bytes_.DumpToSingleSlice(&bytes).ok() ||
        !request_->ParseFromArray(bytes.begin(), static_cast<int>(bytes.size()))) {
      const grpc::Status refused(grpc::StatusCode::INVALID_ARGUMENT,
                                 "request: not a fleetwes.v1.PickRequest");
      service_->metrics_->CountApiRequest("Router.Pick", FromGrpcStatus(refused));
      responder_.FinishWithError(refused, this);
      return;
    }
    thread_local std::string answer;
    const grpc::Status status = service_->AnswerSerialized(*request_, &answer);
    if (!status.ok()) {
      responder_.FinishWithError(status, this);
      return;
    }
    grpc::Slice slice(answer);  // a copy of a few KB
    response_ = grpc::ByteBuffer(&slice, 1);
    responder_.Finish(response_, grpc::Status::OK, this);
  }

 private:
  static constexpr size_t kInitialBlock = 2 * 1024;

  Call(RouterService* service, Queue* queue)
      : service_(service), queue_(queue), arena_(block_, kInitialBlock), responder_(&context_) {
    request_ = google::protobuf::Arena::CreateMessage<v1::PickRequest>(&arena_);
    service_->RequestPick(&context_, &request_bytes_, &responder_, queue_->cq.get(),
                          queue_->cq.get(), this);
  }

  RouterService* const service_;
  Queue* const queue_;
  alignas(16) char block_[kInitialBlock];
  google::protobuf::Arena arena_;
  grpc::ServerContext context_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> responder_;
  grpc::ByteBuffer request_bytes_;
  grpc::ByteBuffer response_;
  v1::PickRequest* request_ = nullptr;
  bool finished_ = false;
};

// Pick as a callback service (RouterOptions::threads 0): each call answered in its handler, its
// request and response on an arena whose first block is part of the per-call holder.
class RouterService::Callback final : public v1::Router::CallbackService {
 public:
  explicit Callback(RouterService* service) : service_(service) {
    SetMessageAllocatorFor_Pick(&allocator_);
  }

  grpc::ServerUnaryReactor* Pick(grpc::CallbackServerContext* context,
                                 const v1::PickRequest* request,
                                 v1::PickResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(service_->Answer(*request, response));
    return reactor;
  }

 private:
  class Allocator final : public grpc::MessageAllocator<v1::PickRequest, v1::PickResponse> {
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

  RouterService* const service_;
  Allocator allocator_;
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
      tables_(std::make_shared<const Tables>()) {
  if (options_.table_refresh > absl::ZeroDuration() && candidates_ == nullptr) {
    refresh_thread_ = std::thread([this] { RunRefresh(); });
  }
}

RouterService::~RouterService() {
  StopServing();
  stop_.Notify();
  if (refresh_thread_.joinable()) refresh_thread_.join();
}

void RouterService::Register(grpc::ServerBuilder* builder) {
  if (options_.threads <= 0) {
    callback_ = std::make_unique<Callback>(this);
    builder->RegisterService(callback_.get());
    return;
  }
  builder->RegisterService(this);
  for (int i = 0; i < options_.threads; ++i) {
    auto queue = std::make_unique<Queue>();
    queue->cq = builder->AddCompletionQueue();
    queues_.push_back(std::move(queue));
  }
}

void RouterService::StartServing() {
  for (const std::unique_ptr<Queue>& queue : queues_) {
    {
      absl::MutexLock lock(&queue->mu);
      // A few calls requested per queue: calls arriving together are matched at once.
      for (int i = 0; i < kRequestedCallsPerQueue; ++i) Call::Request(this, queue.get());
    }
    queue->thread = std::thread([this, q = queue.get()] { Serve(q); });
  }
}

void RouterService::StopServing() {
  for (const std::unique_ptr<Queue>& queue : queues_) {
    absl::MutexLock lock(&queue->mu);
    if (queue->shut_down) continue;
    queue->shut_down = true;
    queue->cq->Shutdown();
  }
  for (const std::unique_ptr<Queue>& queue : queues_) {
    if (queue->thread.joinable()) queue->thread.join();
  }
  // Without a thread (never started), the queues still need draining before they go.
  for (const std::unique_ptr<Queue>& queue : queues_) {
    void* tag;
    bool ok;
    while (queue->cq->Next(&tag, &ok)) delete static_cast<Call*>(tag);
  }
}

void RouterService::Serve(Queue* queue) {
  void* tag;
  bool ok;
  while (queue->cq->Next(&tag, &ok)) {
    absl::MutexLock lock(&queue->mu);
    auto* call = static_cast<Call*>(tag);
    if (queue->shut_down) {
      delete call;  // dropped: nothing more may be started on the queue
    } else {
      call->Proceed(ok);
    }
  }
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

const RouteTable& RouterService::TableForCall(const v1::PickRequest& request,
                                              std::shared_ptr<const RouteTable>* hold) {
  if (candidates_ != nullptr) {
    *hold = std::make_shared<const RouteTable>(
        BuildRouteTable(candidates_(request.model()), request.model()));
    return **hold;
  }
  if (request.model().empty() || request.model().size() > kMaxNameLength) {
    // Refused by Pick's validation; no table is looked up for it.
    static const RouteTable* const kEmpty = new RouteTable();
    return *kEmpty;
  }
  *hold = TableFor(request.model());
  return **hold;
}

grpc::Status RouterService::AnswerSerialized(const v1::PickRequest& request,
                                             std::string* response) {
  thread_local absl::BitGen gen;
  const absl::Time now = clock_->Now();
  std::shared_ptr<const RouteTable> hold;
  const absl::Status status =
      PickSerialized(request, TableForCall(request, &hold), now, policy_, gen, response);
  metrics_->CountApiRequest("Router.Pick", status);
  return status.ok() ? grpc::Status::OK : ToGrpcStatus(status);
}

grpc::Status RouterService::Answer(const v1::PickRequest& request, v1::PickResponse* response) {
  thread_local absl::BitGen gen;
  const absl::Time now = clock_->Now();
  std::shared_ptr<const RouteTable> hold;
  const absl::Status status =
      aggregator::Pick(request, TableForCall(request, &hold), now, policy_, gen, response);
  metrics_->CountApiRequest("Router.Pick", status);
  if (!status.ok()) {
    response->Clear();
    return ToGrpcStatus(status);
  }
  return grpc::Status::OK;
}

}  // namespace fleetwes::aggregator
