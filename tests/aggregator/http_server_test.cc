#include "aggregator/http/http_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "aggregator/ingest/recompute_wes.h"
#include "tests/aggregator/test_frames.h"
#include "tests/support/promtool.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::T0;

class HttpServerTest : public ::testing::Test {
 protected:
  void AddNode(const std::string& node, testing::ModelSpec spec, absl::Time end) {
    v1::Frame f = MakeFrame(node, "boot", 1, end, spec);
    RecomputeWes(ThermalPenalties{}, &f);
    state_.ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), end);
  }

  FleetState state_;
  AggregatorMetrics metrics_;
  FakeClock clock_{T0() + absl::Seconds(1)};
};

TEST_F(HttpServerTest, MetricsIncludePerNodeGaugesForFreshNodes) {
  AddNode("studio-01", {.tokens_per_s = 89, .watts = 60}, T0());
  AddNode("idle-05", {.tokens_per_s = 0, .watts = 40}, T0());
  AddNode("old-06", {.tokens_per_s = 10, .watts = 10}, T0() - absl::Minutes(5));
  metrics_.frames_committed().Increment(3);
  const std::string text =
      RenderMetrics(*metrics_.registry(), state_.Snapshot(), clock_.Now(), StalenessPolicy{});
  EXPECT_TRUE(absl::StrContains(text, "fleetwes_ingest_frames_total{result=\"committed\"} 3"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "# TYPE fleetwes_node_wes_penalized gauge"));
  EXPECT_TRUE(absl::StrContains(text, "fleetwes_node_wes_penalized{node=\"studio-01\"} 1.48333"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "fleetwes_node_tokens_per_second{node=\"studio-01\"} 89"));
  // Idle: no WES series, but its tokens/s (0) and freshness are there.
  EXPECT_FALSE(absl::StrContains(text, "fleetwes_node_wes_raw{node=\"idle-05\"}"));
  EXPECT_TRUE(absl::StrContains(text, "fleetwes_node_tokens_per_second{node=\"idle-05\"} 0"));
  // Stale: flagged, no current values.
  EXPECT_TRUE(absl::StrContains(text, "fleetwes_node_stale{node=\"old-06\"} 1"));
  EXPECT_FALSE(absl::StrContains(text, "fleetwes_node_tokens_per_second{node=\"old-06\"}"));
  EXPECT_TRUE(absl::StrContains(text, "fleetwes_node_stale{node=\"studio-01\"} 0"));
}

TEST_F(HttpServerTest, ServesMetricsHealthzAnd404OnAnEphemeralPort) {
  AddNode("studio-01", {.tokens_per_s = 89, .watts = 60}, T0());
  HttpServer server(&state_, &metrics_, &clock_, StalenessPolicy{});
  ASSERT_TRUE(server.Start(ListenAddress{"127.0.0.1", 0, false}).ok());
  ASSERT_GT(server.port(), 0);
  httplib::Client client("127.0.0.1", server.port());
  client.set_connection_timeout(5);
  client.set_read_timeout(5);

  auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok");

  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_TRUE(absl::StartsWith(metrics->get_header_value("Content-Type"), "text/plain"));
  EXPECT_TRUE(absl::StrContains(metrics->body, "fleetwes_node_wes_penalized{node=\"studio-01\"}"));
  EXPECT_TRUE(absl::StrContains(metrics->body, "fleetwes_writer_queue_frames"));

  auto missing = client.Get("/api/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  server.Stop();
  server.Stop();  // idempotent
}

// `promtool check metrics` (Debian's prometheus package, installed by deploy/install-deps.sh)
// finds nothing to say about the exposition: names, units, help, types.
TEST_F(HttpServerTest, MetricsPassPromtoolLint) {
  AddNode("studio-01", {.tokens_per_s = 89, .watts = 60}, T0());
  AddNode("old-06", {.tokens_per_s = 10, .watts = 10}, T0() - absl::Minutes(5));
  metrics_.CountRejected(RejectReason::kWindow);
  metrics_.CountDbError(absl::UnavailableError("down"));
  metrics_.CountApiRequest("Router.Pick", absl::OkStatus());
  metrics_.writer_commit_seconds().Observe(0.01);
  const std::string text =
      RenderMetrics(*metrics_.registry(), state_.Snapshot(), clock_.Now(), StalenessPolicy{});
  const std::optional<std::string> findings = fleetwes::testing::PromtoolFindings(text);
  if (!findings.has_value()) GTEST_SKIP() << "promtool not installed (deploy/install-deps.sh)";
  EXPECT_EQ(*findings, "") << text;
}

// The JSON API over real HTTP, from the same fleet state the gRPC services read.
class JsonApiTest : public HttpServerTest {
 protected:
  void SetUp() override {
    AddNode("spare-04", {.tokens_per_s = 12, .watts = 95}, T0());
    AddNode("lab-03", {.tokens_per_s = 92, .watts = 220, .state = v1::THERMAL_STATE_SERIOUS}, T0());
    AddNode("devbox-02", {.tokens_per_s = 180, .watts = 340, .state = v1::THERMAL_STATE_FAIR},
            T0());
    AddNode("studio-01", {.tokens_per_s = 89, .watts = 60}, T0());
    server_ =
        std::make_unique<HttpServer>(&state_, &metrics_, &clock_, StalenessPolicy{}, &queries_);
    ASSERT_TRUE(server_->Start(ListenAddress{"127.0.0.1", 0, false}).ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_connection_timeout(5);
    client_->set_read_timeout(5);
  }

  // GET `path`: the status and the parsed body (which must be JSON).
  std::pair<int, nlohmann::json> Get(const std::string& path) {
    auto res = client_->Get(path);
    EXPECT_TRUE(res) << path;
    if (!res) return {0, nullptr};
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json") << path;
    nlohmann::json j = nlohmann::json::parse(res->body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << path << ": " << res->body;
    return {res->status, j};
  }

  FleetQueries queries_{&state_, nullptr, &clock_, StalenessPolicy{}};
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(JsonApiTest, LeaderboardNodesAndNode) {
  auto [status, board] = Get("/api/v1/leaderboard");
  ASSERT_EQ(status, 200);
  ASSERT_EQ(board["entries"].size(), 4u);
  EXPECT_EQ(board["entries"][0]["node_id"], "studio-01");
  EXPECT_EQ(board["entries"][0]["rank"], 1);
  EXPECT_EQ(board["entries"][3]["node_id"], "spare-04");
  EXPECT_DOUBLE_EQ(board["entries"][1]["wes"]["penalized"].get<double>(), 180.0 / 340.0 / 1.25);

  auto [limited_status, limited] = Get("/api/v1/leaderboard?model=llama3-8b&limit=2");
  ASSERT_EQ(limited_status, 200);
  ASSERT_EQ(limited["entries"].size(), 2u);
  EXPECT_EQ(limited["model"], "llama3-8b");

  auto [nodes_status, nodes] = Get("/api/v1/nodes");
  ASSERT_EQ(nodes_status, 200);
  EXPECT_EQ(nodes["nodes"].size(), 4u);

  auto [node_status, node] = Get("/api/v1/nodes/lab-03");
  ASSERT_EQ(node_status, 200);
  EXPECT_EQ(node["node"]["node_id"], "lab-03");
  EXPECT_EQ(node["node"]["thermal_state"], "THERMAL_STATE_SERIOUS");
}

TEST_F(JsonApiTest, RouteBestKeepsTheScriptedShapeWithOurFieldsBeside) {
  auto [status, route] = Get("/api/v1/route/best?model=llama3-8b");
  ASSERT_EQ(status, 200);
  EXPECT_EQ(route["default"], "efficiency");
  EXPECT_EQ(route["efficiency"]["node"], "studio-01");
  EXPECT_DOUBLE_EQ(route["efficiency"]["tok_s"].get<double>(), 89);
  EXPECT_DOUBLE_EQ(route["efficiency"]["wes"].get<double>(), 89.0 / 60.0);
  EXPECT_FALSE(route["efficiency"]["reason"].get<std::string>().empty());
  EXPECT_TRUE(route["latency"].contains("node"));
  EXPECT_TRUE(route["latency"].contains("tok_s"));
  // The full Router.Pick answer beside it.
  EXPECT_EQ(route["recommendation"]["node_id"], "studio-01");
  EXPECT_FALSE(route["candidates"].empty());

  auto [latency_status, latency] =
      Get("/api/v1/route/best?model=llama3-8b&objective=LATENCY&max_queue=5");
  ASSERT_EQ(latency_status, 200);
  EXPECT_EQ(latency["default"], "latency");
  EXPECT_EQ(latency["recommendation"]["node_id"], latency["latency"]["node_id"]);

  auto [one_status, one] = Get("/api/v1/route/best?model=llama3-8b&mode=one");
  ASSERT_EQ(one_status, 200);
  EXPECT_EQ(one["efficiency"]["node"], "studio-01");  // the scripted shape stays
  EXPECT_TRUE(
      absl::StartsWith(one["recommendation"]["reason"].get<std::string>(), "power of two choices"))
      << one.dump();
  EXPECT_FALSE(one.contains("candidates"));
}

TEST_F(JsonApiTest, BadQueriesGetAClearErrorAndTheRightStatus) {
  struct Case {
    std::string path;
    int status;
    std::string code;
    std::string mentions;
  };
  const Case cases[] = {
      {"/api/v1/route/best", 400, "INVALID_ARGUMENT", "model"},
      {"/api/v1/route/best?model=llama3-8b&objective=fast", 400, "INVALID_ARGUMENT", "objective"},
      {"/api/v1/route/best?model=llama3-8b&count=1000", 400, "INVALID_ARGUMENT", "count"},
      {"/api/v1/route/best?model=llama3-8b&mode=all", 400, "INVALID_ARGUMENT", "mode"},
      {"/api/v1/route/best?model=llama3-8b&max_ttft_s=nan", 400, "INVALID_ARGUMENT", "max_ttft_s"},
      {"/api/v1/route/best?model=no-such-model", 404, "NOT_FOUND", "no-such-model"},
      {"/api/v1/leaderboard?limit=ten", 400, "INVALID_ARGUMENT", "limit"},
      {"/api/v1/leaderboard?modle=x", 400, "INVALID_ARGUMENT", "modle"},
      {"/api/v1/leaderboard?model=a&model=b", 400, "INVALID_ARGUMENT", "repeated"},
      {"/api/v1/nodes/nobody", 404, "NOT_FOUND", "nobody"},
      {"/api/v1/nodes/bad%20id!", 400, "INVALID_ARGUMENT", "node id"},
      {"/api/v1/nothing", 404, "NOT_FOUND", "/api/v1/nothing"},
  };
  for (const Case& c : cases) {
    auto [status, body] = Get(c.path);
    EXPECT_EQ(status, c.status) << c.path;
    EXPECT_EQ(body["error"]["code"], c.code) << c.path;
    EXPECT_TRUE(absl::StrContains(body["error"]["message"].get<std::string>(), c.mentions))
        << c.path << ": " << body.dump();
  }
}

TEST_F(JsonApiTest, ReadyzAndOnlyGet) {
  auto ready = client_->Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  auto post = client_->Post("/api/v1/leaderboard", "{}", "application/json");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(post->get_header_value("Allow"), "GET");
}

TEST_F(HttpServerTest, ABusyPortIsUnavailable) {
  HttpServer first(&state_, &metrics_, &clock_, StalenessPolicy{});
  ASSERT_TRUE(first.Start(ListenAddress{"127.0.0.1", 0, false}).ok());
  HttpServer second(&state_, &metrics_, &clock_, StalenessPolicy{});
  absl::Status s = second.Start(ListenAddress{"127.0.0.1", first.port(), false});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace fleetwes::aggregator
