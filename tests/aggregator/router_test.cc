#include "aggregator/routing/router.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "aggregator/ingest/recompute_wes.h"
#include "aggregator/metrics.h"
#include "aggregator/routing/router_service.h"
#include "common/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::MakeHello;
using testing::ModelSpec;
using testing::T0;

class RouterTest : public ::testing::Test {
 protected:
  void Add(const std::string& node, ModelSpec spec, absl::Time window_end = T0(),
           std::map<std::string, std::string> labels = {{"zone", "a"}}) {
    state_.ApplyHello(MakeHello(node, "boot", labels), window_end);
    v1::Frame f = MakeFrame(node, "boot", 1, window_end, spec);
    RecomputeWes(ThermalPenalties{}, &f);
    state_.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), window_end);
  }

  void AddFourNodes() {
    Add("spare-04", {.tokens_per_s = 12, .watts = 95});
    Add("lab-03", {.tokens_per_s = 92, .watts = 220, .state = v1::THERMAL_STATE_SERIOUS});
    Add("devbox-02", {.tokens_per_s = 180, .watts = 340, .state = v1::THERMAL_STATE_FAIR});
    Add("studio-01", {.tokens_per_s = 89, .watts = 60});
  }

  absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& r) {
    return aggregator::Pick(r, CandidatesFor(state_, r.model()), now_, StalenessPolicy{}, gen_);
  }

  static v1::PickRequest Request(v1::Objective objective = v1::OBJECTIVE_EFFICIENCY) {
    v1::PickRequest r;
    r.set_model("llama3-8b");
    r.set_objective(objective);
    return r;
  }

  std::string ExclusionOf(const v1::PickResponse& r, const std::string& node) {
    for (const v1::Exclusion& e : r.excluded()) {
      if (e.node_id() == node) return e.reason();
    }
    return "";
  }

  absl::Time now_ = T0() + absl::Seconds(1);
  FleetState state_;
  std::mt19937_64 gen_{20260101};
};

TEST_F(RouterTest, EfficiencyPicksTheBestPenalizedWes) {
  AddFourNodes();
  absl::StatusOr<v1::PickResponse> r = Pick(Request());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->objective(), v1::OBJECTIVE_EFFICIENCY);
  EXPECT_EQ(r->efficiency().node_id(), "studio-01");
  EXPECT_EQ(r->recommendation().node_id(), "studio-01");
  ASSERT_EQ(r->candidates_size(), 4);
  EXPECT_EQ(r->candidates(1).node_id(), "devbox-02");
  EXPECT_EQ(r->candidates(3).node_id(), "spare-04");
  EXPECT_DOUBLE_EQ(r->candidates(0).score(), 89.0 / 60.0);
  double total = 0;
  for (const v1::Candidate& c : r->candidates()) {
    total += c.weight();
    EXPECT_FALSE(c.reason().empty());
  }
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_GT(r->candidates(0).weight(), r->candidates(1).weight());
  EXPECT_DOUBLE_EQ(r->data_age_s(), 1.0);
  EXPECT_EQ(r->excluded_size(), 0);
}

TEST_F(RouterTest, UnspecifiedObjectiveMeansEfficiency) {
  AddFourNodes();
  absl::StatusOr<v1::PickResponse> r = Pick(Request(v1::OBJECTIVE_UNSPECIFIED));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->objective(), v1::OBJECTIVE_EFFICIENCY);
  EXPECT_EQ(r->recommendation().node_id(), "studio-01");
}

TEST_F(RouterTest, LatencyPicksTheLowestPredictedLatency) {
  Add("fast", {.tokens_per_s = 400, .watts = 400, .ttft_p95_s = 0.1, .waiting = 0});
  Add("queued", {.tokens_per_s = 400, .watts = 100, .ttft_p95_s = 0.1, .waiting = 30});
  Add("slow", {.tokens_per_s = 20, .watts = 30, .ttft_p95_s = 2.0, .waiting = 0});
  absl::StatusOr<v1::PickResponse> r = Pick(Request(v1::OBJECTIVE_LATENCY));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->latency().node_id(), "fast");
  EXPECT_EQ(r->recommendation().node_id(), "fast");
  EXPECT_EQ(r->efficiency().node_id(), "queued");  // 4 tok/J
  // The score is 1 / (1 + predicted latency).
  const ModelState& fast = state_.Get("fast")->models.at("llama3-8b");
  EXPECT_DOUBLE_EQ(r->candidates(0).score(), 1.0 / (1.0 + PredictedLatencyS(fast)));
}

TEST_F(RouterTest, PredictedLatencyFollowsTheDocumentedFormula) {
  ModelState ms;
  ms.sample.set_decode_tokens_per_s(100);
  ms.sample.set_requests_running(4);
  ms.sample.set_requests_waiting(3);
  ms.sample.mutable_ttft()->set_p95_s(0.5);
  // L = T + W * max(T, 0.05) + 128 * running / tok/s = 0.5 + 1.5 + 5.12
  EXPECT_DOUBLE_EQ(PredictedLatencyS(ms), 0.5 + 3 * 0.5 + 128 * 4 / 100.0);
  ms.sample.mutable_tpot()->set_mean_s(0.02);  // a measured TPOT wins over throughput
  EXPECT_DOUBLE_EQ(PredictedLatencyS(ms), 0.5 + 1.5 + 128 * 0.02);
  ModelState idle;
  idle.sample.set_decode_tokens_per_s(0);
  idle.sample.set_requests_running(0);
  idle.sample.set_requests_waiting(0);
  idle.last_wes.emplace();
  idle.last_wes->set_tokens_per_s(64);
  EXPECT_DOUBLE_EQ(PredictedLatencyS(idle), 128 / 64.0);
}

TEST_F(RouterTest, BalancedMixesEfficiencyAndLatency) {
  Add("efficient-slow", {.tokens_per_s = 100, .watts = 20, .ttft_p95_s = 3.0, .waiting = 4});
  Add("balanced", {.tokens_per_s = 200, .watts = 80, .ttft_p95_s = 0.2, .waiting = 0});
  absl::StatusOr<v1::PickResponse> r = Pick(Request(v1::OBJECTIVE_BALANCED));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->efficiency().node_id(), "efficient-slow");
  EXPECT_EQ(r->latency().node_id(), "balanced");
  EXPECT_EQ(r->recommendation().node_id(), "balanced");
  for (const v1::Candidate& c : r->candidates()) {
    EXPECT_GT(c.score(), 0);
    EXPECT_LE(c.score(), 1.0);
  }
}

TEST_F(RouterTest, EachConstraintExcludesWithAReason) {
  Add("ok", {.tokens_per_s = 100, .watts = 100});
  Add("old", {.tokens_per_s = 100, .watts = 100}, T0() - absl::Seconds(8));
  Add("stale", {.tokens_per_s = 100, .watts = 100}, T0() - absl::Seconds(60));
  Add("hot", {.tokens_per_s = 100, .watts = 100, .state = v1::THERMAL_STATE_SERIOUS});
  Add("slow-ttft", {.tokens_per_s = 100, .watts = 100, .ttft_p95_s = 4.0});
  Add("busy", {.tokens_per_s = 100, .watts = 100, .waiting = 12});
  Add("full-kv", {.tokens_per_s = 100, .watts = 100, .kv_cache_usage = 0.95});
  Add("zone-b", {.tokens_per_s = 100, .watts = 100}, T0(), {{"zone", "b"}});
  Add("banned", {.tokens_per_s = 100, .watts = 100});
  Add("other-model", {.model = "qwen2-7b", .tokens_per_s = 100, .watts = 100});

  v1::PickRequest req = Request();
  v1::Constraints* c = req.mutable_constraints();
  c->set_max_ttft_s(1.0);
  c->set_max_queue(8);
  c->set_min_kv_headroom(0.2);
  c->set_max_thermal_state(v1::THERMAL_STATE_FAIR);
  (*c->mutable_required_labels())["zone"] = "a";
  c->add_excluded_nodes("banned");
  c->set_max_data_age_s(5);
  absl::StatusOr<v1::PickResponse> r = Pick(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->candidates_size(), 1);
  EXPECT_EQ(r->candidates(0).node_id(), "ok");
  EXPECT_DOUBLE_EQ(r->candidates(0).weight(), 1.0);
  EXPECT_EQ(ExclusionOf(*r, "old"), "data 9 s old (max 5 s)");
  EXPECT_TRUE(absl::StartsWith(ExclusionOf(*r, "stale"), "stale: data 61 s old"))
      << ExclusionOf(*r, "stale");
  EXPECT_EQ(ExclusionOf(*r, "hot"), "thermal state serious above fair");
  EXPECT_EQ(ExclusionOf(*r, "slow-ttft"), "TTFT p95 4 s above 1 s");
  EXPECT_EQ(ExclusionOf(*r, "busy"), "queue 12 above 8");
  EXPECT_EQ(ExclusionOf(*r, "full-kv"), "KV headroom 0.05 below 0.20");
  EXPECT_EQ(ExclusionOf(*r, "zone-b"), "label zone=\"b\" (want \"a\")");
  EXPECT_EQ(ExclusionOf(*r, "banned"), "excluded by request");
  EXPECT_EQ(ExclusionOf(*r, "other-model"), "");  // only nodes serving the model are listed
  EXPECT_EQ(r->excluded_size(), 8);
}

TEST_F(RouterTest, MissingMeasurementsFailTheirConstraint) {
  Add("no-queue", {.tokens_per_s = 100, .watts = 100, .waiting = std::nullopt});
  Add("no-kv", {.tokens_per_s = 100, .watts = 100, .kv_cache_usage = std::nullopt});
  Add("busy-no-ttft", {.tokens_per_s = 100, .watts = 100, .ttft_p95_s = std::nullopt});
  Add("idle-no-ttft", {.tokens_per_s = 0, .watts = 30, .ttft_p95_s = std::nullopt, .running = 0});
  v1::PickRequest req = Request();
  req.mutable_constraints()->set_max_ttft_s(1.0);
  absl::StatusOr<v1::PickResponse> r = Pick(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ExclusionOf(*r, "busy-no-ttft"), "TTFT p95 not measured while busy");
  EXPECT_EQ(ExclusionOf(*r, "idle-no-ttft"), "");  // an idle window measures no TTFT

  req.mutable_constraints()->set_max_queue(4);
  req.mutable_constraints()->set_min_kv_headroom(0.1);
  r = Pick(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ExclusionOf(*r, "no-queue"), "queue not reported");
  EXPECT_EQ(ExclusionOf(*r, "no-kv"), "KV cache use not reported");
}

TEST_F(RouterTest, AnIdleNodeIsScoredByItsLastMeasuredWes) {
  Add("busy", {.tokens_per_s = 100, .watts = 100});
  // "was-busy" delivered 3 tok/J, then went idle.
  Add("was-busy", {.tokens_per_s = 300, .watts = 100}, T0() - absl::Seconds(2));
  v1::Frame idle =
      MakeFrame("was-busy", "boot", 2, T0(), {.tokens_per_s = 0, .watts = 30, .running = 0});
  RecomputeWes(ThermalPenalties{}, &idle);
  state_.ApplyFrame(std::make_shared<const v1::Frame>(std::move(idle)), T0());
  absl::StatusOr<v1::PickResponse> r = Pick(Request());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->recommendation().node_id(), "was-busy");
  EXPECT_DOUBLE_EQ(r->recommendation().wes_penalized(), 3.0);
  EXPECT_TRUE(absl::StrContains(r->recommendation().reason(), "idle now"))
      << r->recommendation().reason();
}

TEST_F(RouterTest, NothingQualifiesIsNotFoundWithTheReasons) {
  Add("edge-7", {.tokens_per_s = 100, .watts = 100}, T0() - absl::Seconds(11));
  Add("lab-03", {.tokens_per_s = 100, .watts = 100, .state = v1::THERMAL_STATE_CRITICAL});
  v1::PickRequest req = Request();
  req.mutable_constraints()->set_max_thermal_state(v1::THERMAL_STATE_SERIOUS);
  absl::StatusOr<v1::PickResponse> r = Pick(req);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "edge-7: stale: data 12 s old"))
      << r.status().message();
  EXPECT_TRUE(
      absl::StrContains(r.status().message(), "lab-03: thermal state critical above serious"))
      << r.status().message();

  req.set_model("nobody-serves-this");
  r = Pick(req);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no node serves model"));
}

TEST_F(RouterTest, BadRequestsAreInvalidArgument) {
  AddFourNodes();
  v1::PickRequest req;
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = Request();
  req.set_objective(static_cast<v1::Objective>(17));
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = Request();
  req.mutable_constraints()->set_min_kv_headroom(1.5);
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = Request();
  req.mutable_constraints()->set_max_ttft_s(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RouterTest, CountDefaultsToFiveAndIsCappedAt100) {
  for (int i = 0; i < 120; ++i) {
    Add("node-" + std::to_string(1000 + i), {.tokens_per_s = 10.0 + i, .watts = 100});
  }
  v1::PickRequest req = Request();
  absl::StatusOr<v1::PickResponse> r = Pick(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->candidates_size(), 5);
  EXPECT_EQ(r->candidates(0).node_id(), "node-1119");
  req.set_count(1000);
  r = Pick(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->candidates_size(), 100);
  double total = 0;
  for (const v1::Candidate& c : r->candidates()) total += c.weight();
  EXPECT_NEAR(total, 1.0, 1e-9);
}

TEST_F(RouterTest, CandidatesForListsOnlyTheNodesServingTheModel) {
  Add("b", {.model = "llama3-8b"});
  Add("a", {.model = "llama3-8b"});
  Add("c", {.model = "qwen2-7b"});
  std::vector<NodeStatePtr> nodes = CandidatesFor(state_, "llama3-8b");
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0]->node_id, "a");
  EXPECT_EQ(nodes[1]->node_id, "b");
  EXPECT_TRUE(CandidatesFor(state_, "mistral-7b").empty());
}

TEST_F(RouterTest, ServingSetIsSharedUntilOneOfTheModelsNodesChanges) {
  Add("a", {.model = "llama3-8b"});
  Add("b", {.model = "qwen2-7b"});
  std::shared_ptr<const ServingSet> llama = state_.Serving("llama3-8b");
  std::shared_ptr<const ServingSet> qwen = state_.Serving("qwen2-7b");
  ASSERT_EQ(llama->nodes.size(), 1u);
  ASSERT_EQ(llama->models.size(), 1u);
  EXPECT_EQ(llama->models[0], &llama->nodes[0]->models.at("llama3-8b"));
  EXPECT_EQ(state_.Serving("llama3-8b"), llama);
  EXPECT_TRUE(state_.Serving("mistral-7b")->nodes.empty());

  // A frame of a node serving another model leaves this model's set alone.
  Add("b", {.model = "qwen2-7b", .tokens_per_s = 70}, T0() + absl::Seconds(1));
  EXPECT_EQ(state_.Serving("llama3-8b"), llama);
  ASSERT_NE(state_.Serving("qwen2-7b"), qwen);
  EXPECT_EQ(state_.Serving("qwen2-7b")->models[0]->sample.decode_tokens_per_s(), 70);

  // New labels from a Hello reach the set.
  state_.ApplyHello(MakeHello("a", "boot", {{"zone", "b"}}), T0());
  std::shared_ptr<const ServingSet> relabelled = state_.Serving("llama3-8b");
  ASSERT_NE(relabelled, llama);
  EXPECT_EQ(relabelled->nodes[0]->labels.at("zone"), "b");
}

TEST_F(RouterTest, TheServiceAnswersFromTheLatestStateAndAsPickDoes) {
  FakeClock clock(now_);
  AggregatorMetrics metrics;
  // The refresh thread waits on the FakeClock, which does not move until the end: tables change
  // only by Refresh() until then.
  RouterService service(&state_, &clock, StalenessPolicy{}, &metrics);
  Add("a", {.tokens_per_s = 50, .watts = 100});
  Add("b", {.tokens_per_s = 40, .watts = 100});
  v1::PickRequest req = Request();
  v1::PickResponse resp;
  ASSERT_TRUE(service.Answer(req, &resp).ok());
  EXPECT_EQ(resp.efficiency().node_id(), "a");
  EXPECT_EQ(resp.candidates_size(), 2);
  absl::StatusOr<v1::PickResponse> direct = Pick(req);
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(resp.SerializeAsString(), direct->SerializeAsString());

  // b gets better: the call does not rebuild the table, the next refresh does.
  Add("b", {.tokens_per_s = 90, .watts = 100}, T0() + absl::Milliseconds(500));
  ASSERT_TRUE(service.Answer(req, &resp).ok());
  EXPECT_EQ(resp.efficiency().node_id(), "a");
  EXPECT_EQ(service.Refresh(), 1u);
  ASSERT_TRUE(service.Answer(req, &resp).ok());
  EXPECT_EQ(resp.efficiency().node_id(), "b");
  EXPECT_DOUBLE_EQ(resp.efficiency().wes_penalized(), 0.9);
  direct = Pick(req);
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(resp.SerializeAsString(), direct->SerializeAsString());
  EXPECT_EQ(service.Refresh(), 0u);  // nothing changed since

  // Labels a Hello changes count from the next refresh on.
  req.mutable_constraints()->mutable_required_labels()->insert({"zone", "b"});
  EXPECT_EQ(service.Answer(req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  state_.ApplyHello(MakeHello("a", "boot", {{"zone", "b"}}), T0());
  EXPECT_EQ(service.Refresh(), 1u);
  ASSERT_TRUE(service.Answer(req, &resp).ok());
  EXPECT_EQ(resp.recommendation().node_id(), "a");

  // Staleness is judged at the call's time, whatever the table's age.
  clock.SetTime(T0() + absl::Seconds(30));
  req.clear_constraints();
  EXPECT_EQ(service.Answer(req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);

  // Bad and unknown models are answered without a table.
  req.set_model("");
  EXPECT_EQ(service.Answer(req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_model("mistral-7b");
  EXPECT_EQ(service.Answer(req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Polls `done` until it holds or 10 s of real time pass.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// The refresh thread publishes a change within table_refresh: not before the clock gets there.
// A service with `table_refresh` over nodes "a" (the most efficient) and "b", after one call
// answered from the table built for it.
class RouterServiceTest : public RouterTest {
 protected:
  void StartService(absl::Duration table_refresh) {
    service_ = std::make_unique<RouterService>(&state_, &clock_, StalenessPolicy{}, &metrics_,
                                               RouterOptions{.table_refresh = table_refresh});
    Add("a", {.tokens_per_s = 50, .watts = 100});
    Add("b", {.tokens_per_s = 40, .watts = 100});
    ASSERT_TRUE(service_->Answer(req_, &resp_).ok());
    EXPECT_EQ(resp_.efficiency().node_id(), "a");
  }

  FakeClock clock_{T0() + absl::Seconds(1)};
  AggregatorMetrics metrics_;
  std::unique_ptr<RouterService> service_;
  v1::PickRequest req_ = Request();
  v1::PickResponse resp_;
};

TEST_F(RouterServiceTest, TheRefreshThreadPublishesAChangeWithinTheRefreshInterval) {
  StartService(absl::Milliseconds(100));
  ASSERT_TRUE(Eventually([&] { return clock_.waiters() == 1; }));  // the thread is parked

  Add("b", {.tokens_per_s = 90, .watts = 100}, T0() + absl::Milliseconds(500));
  clock_.Advance(absl::Milliseconds(99));
  ASSERT_TRUE(Eventually([&] { return clock_.waiters() == 1; }));
  EXPECT_EQ(service_->refreshes(), 0u);
  ASSERT_TRUE(service_->Answer(req_, &resp_).ok());
  EXPECT_EQ(resp_.efficiency().node_id(), "a");

  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(Eventually([&] { return service_->refreshes() >= 1; }));
  ASSERT_TRUE(service_->Answer(req_, &resp_).ok());
  EXPECT_EQ(resp_.efficiency().node_id(), "b");
}

// With table_refresh 0 there is no thread: the next call sees a change.
TEST_F(RouterServiceTest, WithoutRefreshTheNextCallSeesAChange) {
  StartService(absl::ZeroDuration());
  Add("b", {.tokens_per_s = 90, .watts = 100});
  ASSERT_TRUE(service_->Answer(req_, &resp_).ok());
  EXPECT_EQ(resp_.efficiency().node_id(), "b");
  EXPECT_EQ(clock_.waiters(), 0);
}

// The service on a real server on loopback, as AggregatorServer runs it, with GetParam()
// threads (0: the callback service).
class RouterServerTest : public RouterTest, public ::testing::WithParamInterface<int> {
 protected:
  void SetUp() override {
    for (int n = 0; n < 30; ++n) {
      Add(absl::StrCat("node-", n), {.tokens_per_s = 10.0 + n, .watts = 100});
    }
    service_ = std::make_unique<RouterService>(&state_, &clock_, StalenessPolicy{}, &metrics_,
                                               RouterOptions{.threads = GetParam()});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    service_->Register(&builder);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    service_->StartServing();
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  }

  void TearDown() override { StopServer(); }

  void StopServer() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    service_->StopServing();
    server_->Wait();
    server_.reset();
  }

  FakeClock clock_{T0() + absl::Seconds(1)};
  AggregatorMetrics metrics_;
  std::unique_ptr<RouterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_P(RouterServerTest, ManyConcurrentPicksAreAnsweredAsInProcess) {
  v1::PickRequest req = Request();
  req.set_count(3);
  v1::PickResponse expected;
  ASSERT_TRUE(service_->Answer(req, &expected).ok());
  ASSERT_EQ(expected.candidates_size(), 3);
  v1::PickRequest bad = Request();
  bad.set_model("");
  constexpr int kThreads = 8;
  constexpr int kCalls = 40;
  std::vector<int> ok(kThreads, 0);
  std::vector<int> invalid(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::Router::NewStub(channel_);
      for (int i = 0; i < kCalls; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::PickResponse resp;
        const bool good = i % 10 != 9;
        const grpc::Status s = stub->Pick(&ctx, good ? req : bad, &resp);
        if (good && s.ok() && google::protobuf::util::MessageDifferencer::Equals(resp, expected)) {
          ++ok[t];
        }
        if (!good && s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) ++invalid[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(ok[t], kCalls - kCalls / 10) << "thread " << t;
    EXPECT_EQ(invalid[t], kCalls / 10) << "thread " << t;
  }
}

// Calls in flight at shutdown end (answered or cancelled), and the threads join.
TEST_P(RouterServerTest, StopsCleanlyWithCallsInFlight) {
  v1::PickRequest req = Request();
  grpc::CompletionQueue cq;
  auto stub = v1::Router::NewStub(channel_);
  struct Pending {
    grpc::ClientContext ctx;
    v1::PickResponse resp;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::PickResponse>> rpc;
  };
  constexpr int kCalls = 200;
  std::vector<Pending> calls(kCalls);
  for (Pending& p : calls) {
    p.ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    p.rpc = stub->AsyncPick(&p.ctx, req, &cq);
    p.rpc->Finish(&p.resp, &p.status, &p);
  }
  StopServer();
  for (int i = 0; i < kCalls; ++i) {
    void* tag;
    bool ok;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    const Pending& p = *static_cast<Pending*>(tag);
    if (p.status.ok()) {
      EXPECT_EQ(p.resp.candidates_size(), 5);
    } else {
      EXPECT_TRUE(p.status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                  p.status.error_code() == grpc::StatusCode::CANCELLED)
          << p.status.error_code() << " " << p.status.error_message();
    }
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  EXPECT_FALSE(cq.Next(&tag, &ok));
  // A new call after the stop fails rather than hangs.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::PickResponse resp;
  EXPECT_FALSE(stub->Pick(&ctx, req, &resp).ok());
}

// Bytes that are no PickRequest are refused as a bad request, and counted.
TEST_P(RouterServerTest, AnUnparsableRequestIsInvalidArgument) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  // Field 1 (model) announced 100 bytes long, 3 present.
  grpc::Slice slice(std::string("\x0a\x64abc"));
  const grpc::ByteBuffer request(&slice, 1);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> rpc =
      stub.PrepareUnaryCall(&ctx, "/fleetwes.v1.Router/Pick", request, &cq);
  rpc->StartCall();
  grpc::ByteBuffer reply;
  grpc::Status status;
  rpc->Finish(&reply, &status, nullptr);
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_FALSE(status.ok());
  if (GetParam() > 0) {  // the raw method of the router's own threads
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  }
  cq.Shutdown();
}

INSTANTIATE_TEST_SUITE_P(Threads, RouterServerTest, ::testing::Values(0, 1, 2));

// WES 1.00, 0.90, 0.85, 0.50 tok/J: the band is score >= 0.8, so the last one gets no weight.
TEST_F(RouterTest, WeightsSpreadOverTheBandAndSumToOne) {
  Add("n1", {.tokens_per_s = 100, .watts = 100});
  Add("n2", {.tokens_per_s = 90, .watts = 100});
  Add("n3", {.tokens_per_s = 85, .watts = 100});
  Add("n4", {.tokens_per_s = 50, .watts = 100});
  absl::StatusOr<v1::PickResponse> r = Pick(Request());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->candidates_size(), 4);
  const double band = 1.0 + 0.9 + 0.85;
  EXPECT_NEAR(r->candidates(0).weight(), 1.0 / band, 1e-12);
  EXPECT_NEAR(r->candidates(1).weight(), 0.9 / band, 1e-12);
  EXPECT_NEAR(r->candidates(2).weight(), 0.85 / band, 1e-12);
  EXPECT_EQ(r->candidates(3).node_id(), "n4");
  EXPECT_EQ(r->candidates(3).weight(), 0.0);
  double total = 0;
  for (const v1::Candidate& c : r->candidates()) total += c.weight();
  EXPECT_NEAR(total, 1.0, 1e-12);
}

TEST_F(RouterTest, NoScoreAnywhereMeansEqualWeights) {
  // Idle and never measured: efficiency scores are all 0.
  Add("idle-1", {.tokens_per_s = 0, .watts = 30, .ttft_p95_s = std::nullopt, .running = 0});
  Add("idle-2", {.tokens_per_s = 0, .watts = 30, .ttft_p95_s = std::nullopt, .running = 0});
  absl::StatusOr<v1::PickResponse> r = Pick(Request());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->candidates_size(), 2);
  EXPECT_DOUBLE_EQ(r->candidates(0).weight(), 0.5);
  EXPECT_DOUBLE_EQ(r->candidates(1).weight(), 0.5);
  EXPECT_FALSE(r->has_efficiency());
}

class PickOneTest : public RouterTest {
 protected:
  // Band: WES 1.00, 0.95, 0.90, 0.85 (by weight). Out of the band: 0.50. Disqualified although
  // better: "banned" (excluded by request, 2.0) and "hot" (thermal ceiling, 1.9).
  void SetUp() override {
    Add("a", {.tokens_per_s = 100, .watts = 100});
    Add("b", {.tokens_per_s = 95, .watts = 100});
    Add("c", {.tokens_per_s = 90, .watts = 100});
    Add("d", {.tokens_per_s = 85, .watts = 100});
    Add("low", {.tokens_per_s = 50, .watts = 100});
    Add("banned", {.tokens_per_s = 200, .watts = 100});
    Add("hot", {.tokens_per_s = 380, .watts = 100, .state = v1::THERMAL_STATE_CRITICAL});
  }

  static v1::PickRequest OneRequest() {
    v1::PickRequest r = Request();
    r.set_mode(v1::PICK_MODE_ONE);
    r.mutable_constraints()->add_excluded_nodes("banned");
    r.mutable_constraints()->set_max_thermal_state(v1::THERMAL_STATE_SERIOUS);
    return r;
  }
};

TEST_F(PickOneTest, ReturnsOneNodeWithAReason) {
  absl::StatusOr<v1::PickResponse> r = Pick(OneRequest());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->candidates_size(), 0);
  EXPECT_EQ(r->excluded_size(), 0);
  EXPECT_TRUE(absl::StartsWith(r->recommendation().reason(), "power of two choices: drew "))
      << r->recommendation().reason();
  EXPECT_TRUE(absl::StrContains(r->recommendation().reason(), "among 4 candidates within 80%"))
      << r->recommendation().reason();
  EXPECT_GT(r->recommendation().weight(), 0);
  EXPECT_LE(r->recommendation().weight(), 1);
  EXPECT_EQ(r->efficiency().node_id(), "a");
}

TEST_F(PickOneTest, SameSeedSamePicks) {
  std::vector<std::string> first;
  for (int i = 0; i < 20; ++i) first.push_back(Pick(OneRequest())->recommendation().node_id());
  gen_.seed(20260101);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Pick(OneRequest())->recommendation().node_id(), first[i]) << i;
  }
}

// Two draws by weight w (with replacement), the better kept: node i (best first) wins with
// probability w_i^2 + 2 w_i x (sum of the weights below it). 1,000 picks against that
// distribution: chi-square with 3 degrees of freedom below 16.27 (p = 0.001).
TEST_F(PickOneTest, ThousandPicksFollowPowerOfTwoChoicesByWeight) {
  const std::vector<std::string> band = {"a", "b", "c", "d"};
  const std::vector<double> scores = {1.0, 0.95, 0.90, 0.85};
  const double sum = std::accumulate(scores.begin(), scores.end(), 0.0);
  std::vector<double> expected;
  for (size_t i = 0; i < band.size(); ++i) {
    const double w = scores[i] / sum;
    double below = 0;
    for (size_t j = i + 1; j < band.size(); ++j) below += scores[j] / sum;
    expected.push_back(w * w + 2 * w * below);
  }
  EXPECT_NEAR(std::accumulate(expected.begin(), expected.end(), 0.0), 1.0, 1e-12);

  constexpr int kPicks = 1000;
  std::map<std::string, int> counts;
  for (int i = 0; i < kPicks; ++i) {
    absl::StatusOr<v1::PickResponse> r = Pick(OneRequest());
    ASSERT_TRUE(r.ok()) << r.status();
    ++counts[r->recommendation().node_id()];
  }
  EXPECT_EQ(counts.count("banned"), 0u);
  EXPECT_EQ(counts.count("hot"), 0u);
  EXPECT_EQ(counts.count("low"), 0u);
  double chi2 = 0;
  for (size_t i = 0; i < band.size(); ++i) {
    const double e = expected[i] * kPicks;
    const double o = counts[band[i]];
    chi2 += (o - e) * (o - e) / e;
  }
  EXPECT_LT(chi2, 16.27) << "a=" << counts["a"] << " b=" << counts["b"] << " c=" << counts["c"]
                         << " d=" << counts["d"];
  // The load spreads: the best node takes about half of it (expected 0.47), the fourth some
  // (expected 0.053).
  EXPECT_LT(counts["a"], 560);
  EXPECT_GT(counts["d"], 25);
}

TEST_F(PickOneTest, NeverReturnsADisqualifiedNode) {
  v1::PickRequest req = OneRequest();
  for (const char* node : {"a", "b", "c"}) req.mutable_constraints()->add_excluded_nodes(node);
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<v1::PickResponse> r = Pick(req);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->recommendation().node_id(), "d");  // the band is d alone now (low < 0.8 x d)
    EXPECT_DOUBLE_EQ(r->recommendation().weight(), 1.0);
  }
  req.mutable_constraints()->add_excluded_nodes("d");
  req.mutable_constraints()->add_excluded_nodes("low");
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kNotFound);
}

// tok/s alone picks "wide" (queue of 20), TTFT alone picks "thin" (10 tok/s); the predicted
// latency weighs the three and picks "steady".
TEST_F(RouterTest, LatencyWeighsTtftQueueAndThroughput) {
  Add("wide", {.tokens_per_s = 600, .watts = 300, .ttft_p95_s = 0.5, .waiting = 20, .running = 2});
  Add("thin", {.tokens_per_s = 10, .watts = 30, .ttft_p95_s = 0.1, .waiting = 0, .running = 2});
  Add("steady", {.tokens_per_s = 150, .watts = 150, .ttft_p95_s = 0.3, .waiting = 1, .running = 2});
  absl::StatusOr<v1::PickResponse> r = Pick(Request(v1::OBJECTIVE_LATENCY));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->latency().node_id(), "steady");
  EXPECT_EQ(r->recommendation().node_id(), "steady");
  // wide: 0.5 + 20 x 0.5 + 128 x 2/600; thin: 0.1 + 128 x 2/10; steady: 0.3 + 0.3 + 128 x 2/150.
  auto latency = [&](const char* node) {
    return PredictedLatencyS(state_.Get(node)->models.at("llama3-8b"));
  };
  EXPECT_DOUBLE_EQ(latency("wide"), 0.5 + 10 + 128 * 2 / 600.0);
  EXPECT_DOUBLE_EQ(latency("thin"), 0.1 + 128 * 2 / 10.0);
  EXPECT_DOUBLE_EQ(latency("steady"), 0.6 + 128 * 2 / 150.0);
  ASSERT_EQ(r->candidates_size(), 3);
  EXPECT_EQ(r->candidates(1).node_id(), "wide");
  EXPECT_EQ(r->candidates(2).node_id(), "thin");
}

// Each constraint alone excludes exactly the node built to fail it.
TEST_F(RouterTest, EachConstraintAloneExcludesItsNode) {
  Add("ok", {.tokens_per_s = 100, .watts = 100});
  Add("old", {.tokens_per_s = 100, .watts = 100}, T0() - absl::Seconds(8));
  Add("hot", {.tokens_per_s = 100, .watts = 100, .state = v1::THERMAL_STATE_SERIOUS});
  Add("slow-ttft", {.tokens_per_s = 100, .watts = 100, .ttft_p95_s = 4.0});
  Add("busy", {.tokens_per_s = 100, .watts = 100, .waiting = 12});
  Add("full-kv", {.tokens_per_s = 100, .watts = 100, .kv_cache_usage = 0.95});
  Add("zone-b", {.tokens_per_s = 100, .watts = 100}, T0(), {{"zone", "b"}});
  Add("unlabelled", {.tokens_per_s = 100, .watts = 100}, T0(), {});
  struct Case {
    const char* name;
    void (*set)(v1::Constraints*);
    std::map<std::string, std::string> excluded;
  };
  const Case cases[] = {
      {"max_ttft_s",
       [](v1::Constraints* c) { c->set_max_ttft_s(1.0); },
       {{"slow-ttft", "TTFT p95 4 s above 1 s"}}},
      {"max_queue",
       [](v1::Constraints* c) { c->set_max_queue(8); },
       {{"busy", "queue 12 above 8"}}},
      {"min_kv_headroom",
       [](v1::Constraints* c) { c->set_min_kv_headroom(0.2); },
       {{"full-kv", "KV headroom 0.05 below 0.20"}}},
      {"max_thermal_state",
       [](v1::Constraints* c) { c->set_max_thermal_state(v1::THERMAL_STATE_FAIR); },
       {{"hot", "thermal state serious above fair"}}},
      {"required_labels",
       [](v1::Constraints* c) { (*c->mutable_required_labels())["zone"] = "a"; },
       {{"zone-b", "label zone=\"b\" (want \"a\")"},
        {"unlabelled", "label zone missing (want \"a\")"}}},
      {"excluded_nodes",
       [](v1::Constraints* c) { c->add_excluded_nodes("ok"); },
       {{"ok", "excluded by request"}}},
      {"max_data_age_s",
       [](v1::Constraints* c) { c->set_max_data_age_s(5); },
       {{"old", "data 9 s old (max 5 s)"}}},
  };
  for (const Case& tc : cases) {
    SCOPED_TRACE(tc.name);
    for (v1::PickMode mode : {v1::PICK_MODE_RANKED, v1::PICK_MODE_ONE}) {
      v1::PickRequest req = Request();
      req.set_mode(mode);
      req.set_count(100);
      tc.set(req.mutable_constraints());
      for (int i = 0; i < 20; ++i) {
        absl::StatusOr<v1::PickResponse> r = Pick(req);
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_EQ(tc.excluded.count(r->recommendation().node_id()), 0u);
        if (mode == v1::PICK_MODE_ONE) continue;
        std::map<std::string, std::string> excluded;
        for (const v1::Exclusion& e : r->excluded()) excluded[e.node_id()] = e.reason();
        EXPECT_EQ(excluded, tc.excluded);
        EXPECT_EQ(r->candidates_size(), 8 - static_cast<int>(tc.excluded.size()));
        for (const v1::Candidate& c : r->candidates()) {
          EXPECT_EQ(tc.excluded.count(c.node_id()), 0u) << c.node_id();
        }
        break;  // RANKED is deterministic
      }
    }
  }
}

TEST_F(RouterTest, EmptyConstraintsKeepEveryFreshNode) {
  AddFourNodes();
  Add("stale", {.tokens_per_s = 300, .watts = 100}, T0() - absl::Seconds(60));
  v1::PickRequest req = Request();
  req.mutable_constraints();  // present but empty
  absl::StatusOr<v1::PickResponse> r = Pick(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->candidates_size(), 4);
  ASSERT_EQ(r->excluded_size(), 1);
  EXPECT_EQ(r->excluded(0).node_id(), "stale");
}

TEST_F(RouterTest, ContradictoryConstraintsAreNotFoundWithReasons) {
  AddFourNodes();
  // An empty queue and a full KV headroom: no busy node meets both.
  v1::PickRequest req = Request();
  req.mutable_constraints()->set_max_queue(0);
  req.mutable_constraints()->set_min_kv_headroom(1.0);
  absl::StatusOr<v1::PickResponse> r = Pick(req);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "studio-01: KV headroom 0.70 below 1.00"))
      << r.status().message();
  // Every node excluded by name.
  req = Request(v1::OBJECTIVE_LATENCY);
  req.set_mode(v1::PICK_MODE_ONE);
  for (const char* n : {"spare-04", "lab-03", "devbox-02", "studio-01"}) {
    req.mutable_constraints()->add_excluded_nodes(n);
  }
  r = Pick(req);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "lab-03: excluded by request"))
      << r.status().message();
}

TEST_F(RouterTest, UnknownModelIsNotFound) {
  AddFourNodes();
  v1::PickRequest req = Request();
  req.set_model("mistral-7b");
  absl::StatusOr<v1::PickResponse> r = Pick(req);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "no node serves model \"mistral-7b\"");
  req.set_mode(v1::PICK_MODE_ONE);
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RouterTest, NanNegativeAndOutOfRangeConstraintsAreInvalidArgument) {
  AddFourNodes();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  using Setter = void (v1::Constraints::*)(double);
  const std::pair<Setter, const char*> fields[] = {
      {&v1::Constraints::set_max_ttft_s, "constraints.max_ttft_s"},
      {&v1::Constraints::set_min_kv_headroom, "constraints.min_kv_headroom"},
      {&v1::Constraints::set_max_data_age_s, "constraints.max_data_age_s"},
  };
  for (const auto& [set, name] : fields) {
    for (double bad : {nan, -nan, -1.0, -1e-9, inf, -inf}) {
      SCOPED_TRACE(absl::StrCat(name, " = ", bad));
      v1::PickRequest req = Request();
      (req.mutable_constraints()->*set)(bad);
      absl::StatusOr<v1::PickResponse> r = Pick(req);
      ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StartsWith(r.status().message(), name)) << r.status().message();
    }
  }
  v1::PickRequest req = Request();
  req.set_mode(static_cast<v1::PickMode>(9));
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = Request();
  req.mutable_constraints()->set_max_thermal_state(static_cast<v1::ThermalState>(99));
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = Request();
  for (int i = 0; i <= kPickMaxExcludedNodes; ++i) {
    req.mutable_constraints()->add_excluded_nodes(absl::StrCat("n", i));
  }
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = Request();
  for (int i = 0; i <= kPickMaxRequiredLabels; ++i) {
    (*req.mutable_constraints()->mutable_required_labels())[absl::StrCat("k", i)] = "v";
  }
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = Request();
  req.set_model(std::string(300, 'm'));
  EXPECT_EQ(Pick(req).status().code(), absl::StatusCode::kInvalidArgument);
}

// The table the service keeps (orders, expiry order, prebuilt candidates) answers exactly as the
// plain scan over the node list does: random fleets (score ties, idle and stale nodes, nodes
// without the model) and random requests (every objective and mode, counts, each constraint),
// over one table as time passes, whether the table was prepared ahead or not.
TEST(RouteTableTest, OrderedTableAnswersAsThePlainScan) {
  std::mt19937_64 rnd(20260102);
  auto pick = [&](auto... options) {
    const std::vector<int> v = {options...};
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rnd)];
  };
  auto chance = [&](double p) { return std::uniform_real_distribution<>(0, 1)(rnd) < p; };
  const StalenessPolicy policy;
  int compared = 0;
  int ok_answers = 0;
  for (int fleet = 0; fleet < 30; ++fleet) {
    FleetState state;
    const int nodes = pick(1, 3, 8, 25, 60);
    for (int n = 0; n < nodes; ++n) {
      const std::string id = absl::StrCat("n-", pick(0, 1, 2, 3, 4, 5, 6, 7, 8, 9), "-", n);
      state.ApplyHello(MakeHello(id, "boot", {{"zone", chance(0.5) ? "a" : "b"}, {"tier", "gpu"}}),
                       T0());
      ModelSpec spec;
      spec.model = chance(0.9) ? "llama3-8b" : "qwen2-7b";
      spec.tokens_per_s = pick(0, 40, 80, 80, 120, 300);  // ties on purpose
      spec.watts = pick(40, 80, 100);
      spec.state = static_cast<v1::ThermalState>(pick(1, 1, 2, 3, 4));
      spec.ttft_p95_s = chance(0.8) ? std::optional<double>(pick(1, 2, 5) * 0.1) : std::nullopt;
      spec.waiting = chance(0.8) ? std::optional<uint32_t>(pick(0, 1, 4)) : std::nullopt;
      spec.running = spec.tokens_per_s > 0 ? pick(1, 2, 8) : 0;
      spec.kv_cache_usage = chance(0.8) ? std::optional<double>(pick(1, 5, 9) * 0.1) : std::nullopt;
      // Data 0 to 24 s old at T0 (stale after 10 s at 2 s intervals); some idle now after a
      // busy window.
      const absl::Time end = T0() - absl::Seconds(pick(0, 1, 2, 5, 9, 10, 11, 24));
      if (spec.tokens_per_s == 0 && chance(0.5)) {
        ModelSpec busy = spec;
        busy.tokens_per_s = 100;
        busy.running = 1;
        v1::Frame f = MakeFrame(id, "boot", 1, end - absl::Seconds(2), busy);
        RecomputeWes(ThermalPenalties{}, &f);
        state.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), end);
      }
      v1::Frame f = MakeFrame(id, "boot", 2, end, spec);
      RecomputeWes(ThermalPenalties{}, &f);
      state.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), end);
    }
    const RouteTable table = BuildRouteTable(state.Serving("llama3-8b"), policy);
    ASSERT_TRUE(table.ordered);
    // Half the tables prepared ahead, as the service's refresh does; the others built lazily.
    if (fleet % 2 == 0) PrepareRouteTable(table);
    const std::vector<NodeStatePtr> list = CandidatesFor(state, "llama3-8b");
    for (int q = 0; q < 40; ++q) {
      v1::PickRequest r;
      r.set_model("llama3-8b");
      r.set_objective(static_cast<v1::Objective>(pick(0, 1, 2, 3)));
      r.set_mode(static_cast<v1::PickMode>(pick(0, 1, 2)));
      r.set_count(pick(0, 1, 2, 5, 200));
      v1::Constraints* c = r.mutable_constraints();
      if (chance(0.5)) {  // half the requests unconstrained
        if (chance(0.3)) c->add_excluded_nodes(list.empty() ? "x" : list[q % list.size()]->node_id);
        if (chance(0.3)) (*c->mutable_required_labels())["zone"] = "a";
        if (chance(0.3)) c->set_max_thermal_state(v1::THERMAL_STATE_FAIR);
        if (chance(0.3)) c->set_min_kv_headroom(0.4);
        if (chance(0.3)) c->set_max_queue(pick(0, 1));
        if (chance(0.3)) c->set_max_ttft_s(0.3);
        if (chance(0.3)) c->set_max_data_age_s(pick(1, 6));
      }
      const absl::Time now = T0() + absl::Seconds(pick(-30, 0, 1, 3, 8, 30));
      std::mt19937_64 gen_plain(q);
      std::mt19937_64 gen_table(q);
      std::mt19937_64 gen_wire(q);
      absl::StatusOr<v1::PickResponse> plain = Pick(r, list, now, policy, gen_plain);
      absl::StatusOr<v1::PickResponse> ordered = Pick(r, table, now, policy, gen_table);
      // What the service sends: the same message once parsed.
      std::string wire;
      const absl::Status wire_status = PickSerialized(r, table, now, policy, gen_wire, &wire);
      ASSERT_EQ(plain.status(), ordered.status()) << r.DebugString();
      ASSERT_EQ(plain.status(), wire_status) << r.DebugString();
      ++compared;
      if (!plain.ok()) continue;
      ++ok_answers;
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*plain, *ordered))
          << r.DebugString() << "\nplain:\n"
          << plain->DebugString() << "\nordered:\n"
          << ordered->DebugString();
      v1::PickResponse parsed;
      ASSERT_TRUE(parsed.ParseFromString(wire)) << r.DebugString();
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*plain, parsed))
          << r.DebugString() << "\nplain:\n"
          << plain->DebugString() << "\nfrom the wire bytes:\n"
          << parsed.DebugString();
    }
  }
  EXPECT_EQ(compared, 30 * 40);
  EXPECT_GT(ok_answers, 300);  // the comparison covers answers, not only errors
}

// A table built under another staleness policy than the call's is scanned plainly.
TEST(RouteTableTest, AnotherPolicyThanTheTablesIsScannedPlainly) {
  FleetState state;
  for (int age : {1, 12, 25}) {
    const std::string id = absl::StrCat("node-", age);
    state.ApplyHello(MakeHello(id, "boot", {}), T0());
    v1::Frame f = MakeFrame(id, "boot", 1, T0() - absl::Seconds(age), {});
    RecomputeWes(ThermalPenalties{}, &f);
    state.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), T0());
  }
  const RouteTable table = BuildRouteTable(state.Serving("llama3-8b"), StalenessPolicy{});
  v1::PickRequest r;
  r.set_model("llama3-8b");
  std::mt19937_64 gen(1);
  absl::StatusOr<v1::PickResponse> as_built = Pick(r, table, T0(), StalenessPolicy{}, gen);
  ASSERT_TRUE(as_built.ok());
  EXPECT_EQ(as_built->candidates_size(), 1);
  StalenessPolicy lenient;
  lenient.min = absl::Seconds(20);
  absl::StatusOr<v1::PickResponse> other = Pick(r, table, T0(), lenient, gen);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->candidates_size(), 2);
  ASSERT_EQ(other->excluded_size(), 1);
  EXPECT_EQ(other->excluded(0).node_id(), "node-25");
}

// A table built on the previous one (rows of unchanged nodes copied) has the rows a fresh build
// has, and answers alike, after frames changed some nodes, added one and left the others.
TEST(RouteTableTest, ATableBuiltOnThePreviousOneEqualsAFreshBuild) {
  FleetState state;
  auto apply = [&](const std::string& id, uint64_t seq, double tokens_per_s, absl::Time end) {
    state.ApplyHello(MakeHello(id, "boot", {{"zone", "a"}}), end);
    v1::Frame f = MakeFrame(id, "boot", seq, end, {.tokens_per_s = tokens_per_s, .watts = 100});
    RecomputeWes(ThermalPenalties{}, &f);
    state.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), end);
  };
  for (int n = 0; n < 30; ++n) apply(absl::StrCat("node-", 10 + n), 1, 10.0 + n * 3, T0());
  const RouteTable first = BuildRouteTable(state.Serving("llama3-8b"), StalenessPolicy{});
  for (int n : {0, 7, 29}) apply(absl::StrCat("node-", 10 + n), 2, 200.0 - n, T0());
  apply("node-05", 1, 150, T0());  // sorts before every other node
  apply("node-25b", 1, 60, T0());  // between two
  const RouteTable rebuilt = BuildRouteTable(state.Serving("llama3-8b"), StalenessPolicy{}, &first);
  const RouteTable fresh = BuildRouteTable(state.Serving("llama3-8b"), StalenessPolicy{});
  ASSERT_EQ(rebuilt.rows.size(), 32u);
  ASSERT_EQ(fresh.rows.size(), rebuilt.rows.size());
  int copied = 0;
  for (size_t i = 0; i < fresh.rows.size(); ++i) {
    const RouteRow& a = rebuilt.rows[i];
    const RouteRow& b = fresh.rows[i];
    EXPECT_EQ(a.node, b.node);
    EXPECT_EQ(a.model, b.model);
    EXPECT_EQ(a.wes, b.wes) << a.node->node_id;
    EXPECT_EQ(a.latency_s, b.latency_s);
    EXPECT_EQ(a.window_end, b.window_end);
    EXPECT_EQ(rebuilt.stale_at[i], fresh.stale_at[i]);
    for (const RouteRow& old : first.rows) copied += old.node == a.node ? 1 : 0;
  }
  EXPECT_EQ(copied, 27);  // 30 nodes, 3 changed
  v1::PickRequest r;
  r.set_model("llama3-8b");
  r.set_count(10);
  std::mt19937_64 g1(1);
  std::mt19937_64 g2(1);
  absl::StatusOr<v1::PickResponse> x = Pick(r, rebuilt, T0(), StalenessPolicy{}, g1);
  absl::StatusOr<v1::PickResponse> y = Pick(r, fresh, T0(), StalenessPolicy{}, g2);
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*x, *y));
  EXPECT_EQ(x->recommendation().node_id(), "node-10");  // 200 tok/s now
}

// Calls sharing a fresh table build its orders and prebuilt candidates once, whichever thread
// comes first, and all answer as the plain scan.
TEST(RouteTableTest, ConcurrentCallsOnAFreshTableAnswerAlike) {
  FleetState state;
  for (int n = 0; n < 40; ++n) {
    const std::string id = absl::StrCat("node-", n);
    state.ApplyHello(MakeHello(id, "boot", {{"zone", n % 2 == 0 ? "a" : "b"}}), T0());
    const absl::Time end = T0() - absl::Seconds(n % 7 == 0 ? 30 : 1);
    v1::Frame f = MakeFrame(id, "boot", 1, end,
                            {.tokens_per_s = 10.0 + (n * 37) % 90, .watts = 50.0 + n % 5});
    RecomputeWes(ThermalPenalties{}, &f);
    state.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), end);
  }
  v1::PickRequest r;
  r.set_model("llama3-8b");
  r.set_count(8);
  std::mt19937_64 gen(1);
  absl::StatusOr<v1::PickResponse> plain =
      Pick(r, CandidatesFor(state, "llama3-8b"), T0(), StalenessPolicy{}, gen);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_EQ(plain->excluded_size(), 6);
  for (int round = 0; round < 5; ++round) {
    const RouteTable table = BuildRouteTable(state.Serving("llama3-8b"), StalenessPolicy{});
    std::vector<v1::PickResponse> answers(4);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < answers.size(); ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 g(t);
        absl::StatusOr<v1::PickResponse> a = Pick(r, table, T0(), StalenessPolicy{}, g);
        if (a.ok()) answers[t] = *std::move(a);
      });
    }
    for (std::thread& t : threads) t.join();
    for (const v1::PickResponse& a : answers) {
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(a, *plain)) << a.DebugString();
    }
  }
}

}  // namespace
}  // namespace fleetwes::aggregator
