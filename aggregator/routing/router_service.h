// Router.Pick over gRPC: the nodes serving the model and the aggregator's clock handed to Pick
// (routing/router.h). Each model's route table is built from the fleet state's serving set
// (FleetState::Serving) off the call path: a refresh thread rebuilds, every
// RouterOptions::table_refresh, the tables of the models whose serving set changed since their
// table was built, prepares them (PrepareRouteTable) and publishes them. A call reads the
// published tables with one atomic load and never builds one, except the first call for a model
// the service has no table of yet. A change to a model's nodes (a frame, a Hello's labels) is
// therefore answered from within table_refresh (plus the time a refresh takes); staleness and
// data age are still judged at the call's time. With table_refresh 0 there is no thread and a
// call whose model's set changed rebuilds the table itself (every call sees the latest state).
// An async service served by RouterOptions::threads completion-queue threads of its own: each
// call is answered inline on the thread that takes it off its queue, its request on a per-call
// arena, with no hand-off to another thread (a callback service's handlers run on gRPC's
// executor threads, one more wake-up per call; docs/benchmarks.md). The method is raw on these
// threads: the request is parsed here and the answer written as wire bytes (PickSerialized), the
// candidates' fixed parts serialized once per route table instead of copied and serialized on
// every call; the client reads the same PickResponse. Thread-safe; a call
// that finds its model's table published takes no lock (neither the service's nor the fleet
// state's).
//
// With RouterOptions::threads 0 the Pick method is a callback service instead, its handlers run
// on gRPC's threads. Serving: Register(&builder) before builder.BuildAndStart(), StartServing()
// once the server is started, StopServing() after the server's Shutdown() (the destructor does it
// too), from one thread; the service must outlive the server.
#ifndef FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_
#define FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_

#include <grpcpp/server_builder.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/metrics.h"
#include "aggregator/routing/router.h"
#include "common/clock.h"
#include "fleetwes/v1/router.grpc.pb.h"

namespace fleetwes::aggregator {

struct RouterOptions {
  // Period of the table refresh, and so how long a change to a model's nodes may go unseen by
  // Pick (docs/api.md). Default 500ms; 0: no refresh thread, calls rebuild changed tables.
  absl::Duration table_refresh = absl::Milliseconds(500);
  // Completion-queue threads answering Pick over gRPC (docs/api.md). Default 1; 0..64 (0: a
  // callback service instead, answered on gRPC's own threads).
  int threads = 1;
};

class RouterService final : public v1::Router::WithRawMethod_Pick<v1::Router::Service> {
 public:
  // The nodes to pick from for a model; must be thread-safe.
  using CandidateSource = std::function<std::vector<NodeStatePtr>(absl::string_view model)>;

  // Pointers must outlive the service; the refresh thread (when options.table_refresh > 0)
  // waits on `clock` and runs until destruction. `candidates`, when given, replaces the fleet
  // state's serving sets (and the table cache) as the source of a model's nodes.
  RouterService(const FleetState* state, Clock* clock, StalenessPolicy policy,
                AggregatorMetrics* metrics, RouterOptions options = {},
                CandidateSource candidates = nullptr);
  ~RouterService() override;

  // Registers the service on `builder` with options.threads completion queues. Once, before
  // builder->BuildAndStart().
  void Register(grpc::ServerBuilder* builder);
  // Starts the threads (after BuildAndStart). Once.
  void StartServing();
  // Shuts the queues down and joins the threads once the queues are drained; call after the
  // server's Shutdown() (calls still unanswered then are dropped, and so cancelled). Idempotent.
  void StopServing();

  // What Pick answers, without the transport (counted in the metrics as a call).
  grpc::Status Answer(const v1::PickRequest& request, v1::PickResponse* response);
  // The same answer as PickResponse's wire bytes (PickSerialized; `response` replaced, unspecified
  // on an error): what the completion-queue threads send. Counted as a call.
  grpc::Status AnswerSerialized(const v1::PickRequest& request, std::string* response);

  // Rebuilds and publishes the tables of the models whose serving set changed (what the refresh
  // thread does every table_refresh); returns how many were rebuilt. Thread-safe; concurrent
  // refreshes run one after the other.
  size_t Refresh();
  // Refresh passes completed so far (by the thread or by Refresh()), and the steady (real)
  // time they took together, in nanoseconds.
  uint64_t refreshes() const { return refreshes_.load(std::memory_order_acquire); }
  uint64_t refresh_ns() const { return refresh_ns_.load(std::memory_order_acquire); }

 private:
  class Call;
  class Callback;  // the callback service of threads 0
  // One completion queue and the thread that drains it. `mu` orders the thread's uses of the
  // queue before its shutdown.
  struct Queue {
    std::unique_ptr<grpc::ServerCompletionQueue> cq;
    absl::Mutex mu;
    bool shut_down ABSL_GUARDED_BY(mu) = false;
    std::thread thread;
  };
  // Model name -> its published table; copied on write, never changed once published.
  using Tables = absl::flat_hash_map<std::string, std::shared_ptr<const RouteTable>>;

  // The table to answer `model` from: the published one (with table_refresh 0, only while its
  // set is current); else built now and published.
  std::shared_ptr<const RouteTable> TableFor(const std::string& model);
  // The table to answer `request` from (an empty one for a model name Pick refuses); `hold`
  // keeps it alive for the call.
  const RouteTable& TableForCall(const v1::PickRequest& request,
                                 std::shared_ptr<const RouteTable>* hold);
  // Publishes `add` (model -> table) over the current tables; null tables remove their model.
  void Publish(const std::vector<std::pair<std::string, std::shared_ptr<const RouteTable>>>& add);
  void RunRefresh();
  // A queue's thread: takes each event off the queue and handles it inline.
  void Serve(Queue* queue);

  const FleetState* const state_;
  Clock* const clock_;
  const StalenessPolicy policy_;
  AggregatorMetrics* const metrics_;
  const RouterOptions options_;
  const CandidateSource candidates_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::unique_ptr<Callback> callback_;

  // Models seen in requests that some node serves; bounded by the models in the fleet. Readers
  // load the pointer; writers (Publish) copy, change and store it under publish_mu_.
  std::atomic<std::shared_ptr<const Tables>> tables_;
  absl::Mutex publish_mu_;
  absl::Mutex refresh_mu_;  // one Refresh at a time
  std::atomic<uint64_t> refresh_ns_{0};
  std::atomic<uint64_t> refreshes_{0};
  absl::Notification stop_;
  std::thread refresh_thread_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_ROUTING_ROUTER_SERVICE_H_
