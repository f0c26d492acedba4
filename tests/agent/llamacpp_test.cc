#include "agent/collectors/llamacpp.h"

#include <string>

#include "absl/time/clock.h"
#include "agent/collectors/http_client.h"
#include "agent/window.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/replay_server.h"

namespace fleetwes::agent {
namespace {

using ::testing::HasSubstr;
using testing::LlamaCppSimOptions;
using testing::ReadFixture;
using testing::ReplayResponse;
using testing::ReplayServer;
using ::testing::StartsWith;

class LlamaCppCollectorTest : public ::testing::Test {
 protected:
  void StartServer(const LlamaCppSimOptions& options = {}) {
    ASSERT_TRUE(server_.EnableLlamaCpp(options).ok());
    ASSERT_TRUE(server_.Start().ok());
    ASSERT_GT(server_.port(), 0);
  }
  EngineConfig Config(absl::Duration timeout = absl::Seconds(2)) {
    EngineConfig c;
    c.name = "llama";
    c.url = server_.url();
    c.timeout = timeout;
    return c;
  }
  // The model sample for the window between two readings of the same collector.
  static v1::ModelSample Window(const EngineReading& a, const EngineReading& b, absl::Duration dt) {
    EXPECT_TRUE(a.available) << a.unavailable_reason;
    EXPECT_TRUE(b.available) << b.unavailable_reason;
    if (a.models.empty() || b.models.empty()) return {};
    return ModelWindow("llama", v1::ENGINE_KIND_LLAMACPP, &a.models[0], b.models[0], dt);
  }

  FakeClock clock_;
  ReplayServer server_{&clock_};
};

TEST_F(LlamaCppCollectorTest, ReadsTheCapturedServer) {
  StartServer();
  LlamaCppCollector c(Config());
  EngineReading r = c.Read();
  ASSERT_TRUE(r.available) << r.unavailable_reason;
  EXPECT_EQ(r.version, "b4748-c392e5094");
  ASSERT_EQ(r.models.size(), 1u);
  const ModelReading& m = r.models[0];
  EXPECT_EQ(m.model, "tiny.gguf");
  EXPECT_EQ(m.decode_tokens_total, 15056);
  EXPECT_EQ(m.prefill_tokens_total, 164);
  EXPECT_DOUBLE_EQ(*m.decode_seconds_total, 7.608);
  EXPECT_DOUBLE_EQ(*m.prefill_seconds_total, 0.048);
  EXPECT_EQ(m.requests_running, 2);
  EXPECT_EQ(m.requests_waiting, 0);
  EXPECT_DOUBLE_EQ(*m.kv_cache_usage, 0.981445);
  EXPECT_EQ(m.slots_total, 2u);
  ASSERT_EQ(m.slots.size(), 2u);
  EXPECT_TRUE(m.slots[0].processing);
  EXPECT_EQ(m.slots[0].task_id, 1164);
  EXPECT_EQ(c.failed_reads(), 0u);
}

TEST_F(LlamaCppCollectorTest, DecodeRateIsTokensDeltaOverWindowExactly) {
  LlamaCppSimOptions sim;
  sim.tokens_per_s = 123;
  sim.prompt_tokens_per_s = 40;
  sim.seconds_per_token = 0.025;
  sim.prompt_seconds_per_token = 0.001;
  sim.requests_per_s = 1;
  StartServer(sim);
  LlamaCppCollector c(Config());
  EngineReading a = c.Read();
  clock_.Advance(absl::Milliseconds(1500));
  EngineReading b = c.Read();
  v1::ModelSample m = Window(a, b, absl::Milliseconds(1500));

  const double delta = *b.models[0].decode_tokens_total - *a.models[0].decode_tokens_total;
  EXPECT_EQ(delta, 184);  // floor(123 × 1.5)
  EXPECT_EQ(m.decode_tokens(), 184u);
  ASSERT_TRUE(m.has_decode_tokens_per_s());
  EXPECT_EQ(m.decode_tokens_per_s(), delta / 1.5);
  EXPECT_EQ(m.prefill_tokens(), 60u);
  EXPECT_EQ(m.prefill_tokens_per_s(), 60 / 1.5);
  EXPECT_FALSE(m.counters_reset());

  // TPOT: generation seconds per generated token.
  EXPECT_TRUE(m.tpot().estimate());
  EXPECT_EQ(m.tpot().count(), 184u);
  EXPECT_NEAR(m.tpot().mean_s(), 0.025, 1e-12);
  // TTFT: one request started (slot 0's task changed), 60 prompt tokens × 1 ms.
  EXPECT_TRUE(m.ttft().estimate());
  EXPECT_EQ(m.ttft().count(), 1u);
  EXPECT_NEAR(m.ttft().mean_s(), 0.060, 1e-12);
  EXPECT_FALSE(m.ttft().has_p95_s());
}

TEST_F(LlamaCppCollectorTest, IdleWindowHasZeroRateNotAbsent) {
  LlamaCppSimOptions sim;
  sim.tokens_per_s = 0;
  sim.prompt_tokens_per_s = 0;
  sim.requests_per_s = 0;
  StartServer(sim);
  LlamaCppCollector c(Config());
  EngineReading a = c.Read();
  clock_.Advance(absl::Seconds(2));
  EngineReading b = c.Read();
  v1::ModelSample m = Window(a, b, absl::Seconds(2));
  ASSERT_TRUE(m.has_decode_tokens_per_s());
  EXPECT_EQ(m.decode_tokens_per_s(), 0);
  EXPECT_FALSE(m.has_tpot());
  EXPECT_FALSE(m.has_ttft());
  EXPECT_EQ(m.slots_idle(), 2u);
  EXPECT_EQ(m.requests_running(), 0u);
}

TEST_F(LlamaCppCollectorTest, MetricsWithoutFlagIsUnavailableWithReason) {
  StartServer();
  server_.SetMetricsEnabled(false);
  LlamaCppCollector c(Config());
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_EQ(r.unavailable_reason, "GET /metrics: HTTP 501 (llama-server runs without --metrics)");
  EXPECT_TRUE(r.models.empty());
  EXPECT_EQ(c.failed_reads(), 1u);
}

TEST_F(LlamaCppCollectorTest, LoadingModelIsUnavailable) {
  StartServer();
  server_.SetLoading(true);
  LlamaCppCollector c(Config());
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_EQ(r.unavailable_reason, "loading model");
  server_.SetLoading(false);
  EXPECT_TRUE(c.Read().available);
}

TEST_F(LlamaCppCollectorTest, GarbageMetricsIsUnavailable) {
  StartServer();
  server_.SetRoute("/metrics", ReplayResponse{200, "text/html", "<html>{{ not metrics"});
  LlamaCppCollector c(Config());
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, StartsWith("GET /metrics: not Prometheus text"));
}

TEST_F(LlamaCppCollectorTest, MetricsWithoutTokenCounterIsUnavailable) {
  StartServer();
  server_.SetRoute("/metrics",
                   ReplayResponse{200, "text/plain", "llamacpp:requests_processing 1\n"});
  LlamaCppCollector c(Config());
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_EQ(r.unavailable_reason, "GET /metrics: no llamacpp:tokens_predicted_total");
}

TEST_F(LlamaCppCollectorTest, OtherHttpErrorsAreReported) {
  StartServer();
  server_.SetRoute("/health", ReplayResponse{500, "text/plain", "boom"});
  LlamaCppCollector c(Config());
  EXPECT_EQ(c.Read().unavailable_reason, "GET /health: HTTP 500");
  server_.ClearRoute("/health");
  server_.SetRoute("/metrics", ReplayResponse{404, "text/plain", "nope"});
  EXPECT_EQ(c.Read().unavailable_reason, "GET /metrics: HTTP 404");
}

TEST_F(LlamaCppCollectorTest, NewerBuildWithoutKvGaugeLeavesItAbsent) {
  StartServer();
  absl::StatusOr<std::string> metrics = ReadFixture("llamacpp-b6283/metrics.txt");
  ASSERT_TRUE(metrics.ok());
  server_.SetRoute("/metrics", ReplayResponse{200, "text/plain", *metrics});
  LlamaCppCollector c(Config());
  EngineReading r = c.Read();
  ASSERT_TRUE(r.available) << r.unavailable_reason;
  EXPECT_FALSE(r.models[0].kv_cache_usage.has_value());
  EXPECT_TRUE(r.models[0].decode_tokens_total.has_value());
}

TEST_F(LlamaCppCollectorTest, ModelFromV1ModelsWhenPropsFails) {
  StartServer();
  server_.SetRoute("/props", ReplayResponse{200, "application/json", "{not json"});
  LlamaCppCollector c(Config());
  EngineReading r = c.Read();
  ASSERT_TRUE(r.available) << r.unavailable_reason;
  EXPECT_EQ(r.models[0].model, "tiny.gguf");
  EXPECT_EQ(r.models[0].slots_total, 2u);  // from /slots

  server_.SetRoute("/v1/models", ReplayResponse{200, "application/json", R"({"data":[]})"});
  r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, StartsWith("model name unknown (GET /props: not a JSON"));
}

TEST_F(LlamaCppCollectorTest, MissingSlotsEndpointIsNotFatal) {
  StartServer();
  server_.SetRoute("/slots", ReplayResponse{501, "application/json", R"({"error":{}})"});
  LlamaCppCollector c(Config());
  EngineReading r = c.Read();
  ASSERT_TRUE(r.available);
  EXPECT_TRUE(r.models[0].slots.empty());
  EXPECT_EQ(r.models[0].slots_total, 2u);  // from /props
  EXPECT_EQ(c.optional_endpoint_errors(), 1u);
}

TEST_F(LlamaCppCollectorTest, CounterResetMarksWindowAndStartsNewBaseline) {
  StartServer();
  LlamaCppCollector c(Config());
  EngineReading a = c.Read();
  clock_.Advance(absl::Seconds(2));
  server_.RestartEngine();
  clock_.Advance(absl::Seconds(1));
  EngineReading b = c.Read();
  ASSERT_LT(*b.models[0].decode_tokens_total, *a.models[0].decode_tokens_total);
  v1::ModelSample reset = Window(a, b, absl::Seconds(3));
  EXPECT_TRUE(reset.counters_reset());
  EXPECT_FALSE(reset.has_decode_tokens_per_s());
  EXPECT_FALSE(reset.has_prefill_tokens_per_s());
  EXPECT_EQ(reset.decode_tokens(), 0u);
  EXPECT_FALSE(reset.has_tpot());

  clock_.Advance(absl::Seconds(2));
  EngineReading d = c.Read();
  v1::ModelSample after = Window(b, d, absl::Seconds(2));
  EXPECT_FALSE(after.counters_reset());
  EXPECT_EQ(after.decode_tokens_per_s(), 100);
}

TEST_F(LlamaCppCollectorTest, HungEngineTimesOutFast) {
  StartServer();
  server_.SetHang("/metrics", true);
  LlamaCppCollector c(Config(absl::Milliseconds(300)));
  const absl::Time start = absl::Now();
  EngineReading r = c.Read();
  const absl::Duration took = absl::Now() - start;
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, HasSubstr("GET /metrics: timed out"));
  EXPECT_LT(took, absl::Milliseconds(1500));
  server_.SetHang("/metrics", false);
  EXPECT_TRUE(c.Read().available);
}

TEST_F(LlamaCppCollectorTest, ConnectionRefused) {
  StartServer();
  const std::string url = server_.url();
  server_.Stop();
  EngineConfig cfg = Config();
  cfg.url = url;
  LlamaCppCollector c(cfg);
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_EQ(r.unavailable_reason, "GET /health: connection refused");
}

TEST_F(LlamaCppCollectorTest, PathPrefixIsPrepended) {
  StartServer();
  server_.SetRoute("/llm/health", ReplayResponse{200, "application/json", R"({"status":"ok"})"});
  HttpClient http(server_.url() + "/llm/");
  absl::StatusOr<HttpResponse> r = http.Get("/health", absl::Seconds(1));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(server_.hits("/llm/health"), 1);
}

TEST_F(LlamaCppCollectorTest, BodySizeIsCapped) {
  StartServer();
  server_.SetRoute("/big", ReplayResponse{200, "text/plain", std::string(64 << 10, 'x')});
  HttpClient http(server_.url(), /*max_body_bytes=*/1 << 10);
  absl::StatusOr<HttpResponse> r = http.Get("/big", absl::Seconds(1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(r.status().message(), "response larger than 1 KiB");
}

TEST(LlamaCppParseTest, Fixtures) {
  ModelReading m;
  absl::StatusOr<std::string> busy = ReadFixture("llamacpp-b4748/metrics_busy.txt");
  ASSERT_TRUE(busy.ok());
  ASSERT_TRUE(llamacpp::ParseMetrics(*busy, &m).ok());
  EXPECT_EQ(m.decode_tokens_total, 2056);
  EXPECT_DOUBLE_EQ(*m.kv_cache_usage, 0.0703125);

  ModelReading fresh;
  absl::StatusOr<std::string> zeros = ReadFixture("llamacpp-b10452/metrics_idle.txt");
  ASSERT_TRUE(zeros.ok());
  ASSERT_TRUE(llamacpp::ParseMetrics(*zeros, &fresh).ok());
  EXPECT_EQ(fresh.decode_tokens_total, 0);
  EXPECT_FALSE(fresh.kv_cache_usage.has_value());

  ModelReading recent;
  absl::StatusOr<std::string> history = ReadFixture("llamacpp-recent/metrics_busy_history.txt");
  ASSERT_TRUE(history.ok());
  ASSERT_TRUE(llamacpp::ParseMetrics(*history, &recent).ok());
  EXPECT_EQ(recent.decode_tokens_total, 275273);

  absl::StatusOr<std::string> slots = ReadFixture("llamacpp-recent/slots_prefill.json");
  ASSERT_TRUE(slots.ok());
  absl::StatusOr<std::vector<SlotReading>> parsed = llamacpp::ParseSlots(*slots);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 1u);
  EXPECT_EQ((*parsed)[0].task_id, 506);
  EXPECT_TRUE((*parsed)[0].processing);

  EXPECT_FALSE(llamacpp::ParseSlots("{}").ok());
  EXPECT_FALSE(llamacpp::ParseSlots("[1,2]").ok());
  EXPECT_FALSE(llamacpp::ParseProps("[]").ok());
  EXPECT_FALSE(llamacpp::ParseProps(R"({"model_path": 3})").ok());
  EXPECT_EQ(*llamacpp::ParseModelsList(R"({"data":[{"id":"/m/a.gguf"}]})"), "a.gguf");

  ModelReading nan;
  EXPECT_FALSE(llamacpp::ParseMetrics("llamacpp:tokens_predicted_total NaN\n", &nan).ok());
  ModelReading negative_gauge;
  ASSERT_TRUE(
      llamacpp::ParseMetrics("llamacpp:tokens_predicted_total 5\nllamacpp:kv_cache_usage_ratio -1\n"
                             "llamacpp:requests_processing +Inf\n",
                             &negative_gauge)
          .ok());
  EXPECT_FALSE(negative_gauge.kv_cache_usage.has_value());
  EXPECT_FALSE(negative_gauge.requests_running.has_value());
}

}  // namespace
}  // namespace fleetwes::agent
