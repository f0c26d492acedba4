#include "aggregator/http/http_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>

#include "absl/strings/match.h"
#include "aggregator/ingest/recompute_wes.h"
#include "tests/aggregator/test_frames.h"

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

TEST_F(HttpServerTest, ABusyPortIsUnavailable) {
  HttpServer first(&state_, &metrics_, &clock_, StalenessPolicy{});
  ASSERT_TRUE(first.Start(ListenAddress{"127.0.0.1", 0, false}).ok());
  HttpServer second(&state_, &metrics_, &clock_, StalenessPolicy{});
  absl::Status s = second.Start(ListenAddress{"127.0.0.1", first.port(), false});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace fleetwes::aggregator
