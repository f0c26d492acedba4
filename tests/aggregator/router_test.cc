#include "aggregator/routing/router.h"

#include <gtest/gtest.h>

#include <memory>
#include <numeric>
#include <string>

#include "absl/strings/match.h"
#include "aggregator/ingest/recompute_wes.h"
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
    return aggregator::Pick(r, state_.Snapshot(), now_, StalenessPolicy{});
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
  EXPECT_EQ(ExclusionOf(*r, "other-model"), "does not serve llama3-8b");
  EXPECT_EQ(r->excluded_size(), 9);
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

}  // namespace
}  // namespace fleetwes::aggregator
