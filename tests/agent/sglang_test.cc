#include "agent/collectors/sglang.h"

#include <string>

#include "agent/window.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/replay_server.h"

namespace fleetwes::agent {
namespace {

using ::testing::HasSubstr;
using testing::PromSimOptions;
using testing::ReadFixture;
using testing::ReplayServer;

constexpr char kOld[] = "sglang/metrics_docs_example_v0.4era.txt";
constexpr char kNew[] = "sglang/metrics_v0.5.10.post1_datadog_trimmed.txt";

TEST(SglangParseTest, OlderDocsExample) {
  absl::StatusOr<std::string> body = ReadFixture(kOld);
  ASSERT_TRUE(body.ok()) << body.status();
  DetectedNames names;
  absl::StatusOr<std::vector<ModelReading>> r = sglang::ParseMetrics(*body, &names);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  const ModelReading& m = (*r)[0];
  EXPECT_EQ(m.model, "meta-llama/Llama-3.1-8B-Instruct");
  EXPECT_EQ(m.decode_tokens_total, 7557572);
  EXPECT_EQ(m.prefill_tokens_total, 8128902);
  EXPECT_EQ(m.requests_running, 162);
  EXPECT_EQ(m.requests_waiting, 2826);
  EXPECT_DOUBLE_EQ(*m.kv_cache_usage, 0.28);
  ASSERT_TRUE(m.tpot_histogram.has_value());
  EXPECT_EQ(m.tpot_histogram->count, 7400757);
  EXPECT_EQ(m.ttft_histogram->count, 11008);
  EXPECT_FALSE(m.prefix_cache_hits_total.has_value());
  EXPECT_FALSE(m.queue_histogram.has_value());
  EXPECT_EQ(names.tpot, "sglang:time_per_output_token_seconds");
}

TEST(SglangParseTest, NewerNamesWithTpRank) {
  absl::StatusOr<std::string> body = ReadFixture(kNew);
  ASSERT_TRUE(body.ok()) << body.status();
  DetectedNames names;
  absl::StatusOr<std::vector<ModelReading>> r = sglang::ParseMetrics(*body, &names);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  const ModelReading& m = (*r)[0];
  EXPECT_EQ(m.model, "facebook/opt-125m");
  EXPECT_EQ(m.decode_tokens_total, 32);
  EXPECT_DOUBLE_EQ(*m.kv_cache_usage, 0.25);
  EXPECT_EQ(m.prefix_cache_queries_total, 5);
  EXPECT_EQ(m.prefix_cache_hits_total, 1);
  ASSERT_TRUE(m.tpot_histogram.has_value());
  EXPECT_EQ(m.tpot_histogram->count, 31);
  ASSERT_TRUE(m.queue_histogram.has_value());
  EXPECT_EQ(names.tpot, "sglang:inter_token_latency_seconds");
  EXPECT_EQ(names.queue, "sglang:queue_time_seconds");
}

class SglangCollectorTest : public ::testing::Test {
 protected:
  EngineConfig Config() {
    EngineConfig c;
    c.name = "sg";
    c.kind = v1::ENGINE_KIND_SGLANG;
    c.url = server_.url();
    c.timeout = absl::Seconds(2);
    return c;
  }
  FakeClock clock_;
  ReplayServer server_{&clock_};
};

TEST_F(SglangCollectorTest, WindowFromAdvancingCapture) {
  PromSimOptions o;
  o.fixture = kOld;
  o.counter_rates = {{"sglang:generation_tokens_total", 1000}, {"sglang:prompt_tokens_total", 400}};
  o.histograms["sglang:time_per_output_token_seconds"] = {.per_s = 1000, .value_s = 0.012};
  o.histograms["sglang:time_to_first_token_seconds"] = {.per_s = 4, .value_s = 0.35};
  ASSERT_TRUE(server_.EnablePromEngine(o).ok());
  ASSERT_TRUE(server_.Start().ok());
  SglangCollector c(Config());
  EngineReading a = c.Read();
  clock_.Advance(absl::Seconds(2));
  EngineReading b = c.Read();
  ASSERT_TRUE(a.available) << a.unavailable_reason;
  ASSERT_TRUE(b.available) << b.unavailable_reason;
  v1::ModelSample m =
      ModelWindow("sg", v1::ENGINE_KIND_SGLANG, &a.models[0], b.models[0], absl::Seconds(2));
  EXPECT_EQ(m.engine(), v1::ENGINE_KIND_SGLANG);
  EXPECT_EQ(m.decode_tokens(), 2000u);
  EXPECT_DOUBLE_EQ(m.decode_tokens_per_s(), 1000.0);
  EXPECT_DOUBLE_EQ(m.prefill_tokens_per_s(), 400.0);
  EXPECT_EQ(m.tpot().count(), 2000u);
  EXPECT_NEAR(m.tpot().mean_s(), 0.012, 1e-9);
  // All in the (10 ms, 15 ms] bucket: the median interpolates to its middle.
  EXPECT_NEAR(m.tpot().p50_s(), 0.0125, 1e-9);
  EXPECT_EQ(m.ttft().count(), 8u);
  EXPECT_NEAR(m.ttft().mean_s(), 0.35, 1e-9);
  EXPECT_EQ(m.requests_waiting(), 2826u);
  EXPECT_FALSE(m.has_prefix_cache_hit_rate());  // this build has no cached_tokens_total
}

TEST_F(SglangCollectorTest, WithoutMetricsFlag) {
  ASSERT_TRUE(server_.Start().ok());
  SglangCollector c(Config());
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, HasSubstr("--enable-metrics"));
}

}  // namespace
}  // namespace fleetwes::agent
