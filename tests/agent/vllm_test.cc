#include "agent/collectors/vllm.h"

#include <string>

#include "agent/collectors/sglang.h"
#include "agent/window.h"
#include "common/clock.h"
#include "common/prom_text.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/replay_server.h"

namespace fleetwes::agent {
namespace {

using ::testing::HasSubstr;
using testing::PromSimOptions;
using testing::ReadFixture;
using testing::ReplayResponse;
using testing::ReplayServer;

constexpr char kOld[] = "vllm-0.4.3/metrics.txt";
constexpr char kNew[] = "vllm-0.29.0/metrics_after_load.txt";

TEST(VllmParseTest, OldNamesOfV0) {
  absl::StatusOr<std::string> body = ReadFixture(kOld);
  ASSERT_TRUE(body.ok()) << body.status();
  DetectedNames names;
  absl::StatusOr<std::vector<ModelReading>> r = vllm::ParseMetrics(*body, &names);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  const ModelReading& m = (*r)[0];
  EXPECT_EQ(m.model, "facebook/opt-125m");
  EXPECT_EQ(m.decode_tokens_total, 7);
  EXPECT_EQ(m.prefill_tokens_total, 5);
  EXPECT_EQ(m.requests_running, 0);
  EXPECT_EQ(m.kv_cache_usage, 0);
  EXPECT_EQ(m.preemptions_total, 0);
  EXPECT_FALSE(m.prefix_cache_queries_total.has_value());
  EXPECT_FALSE(m.requests_waiting_capacity.has_value());
  EXPECT_FALSE(m.queue_histogram.has_value());
  ASSERT_TRUE(m.tpot_histogram.has_value());
  EXPECT_EQ(m.tpot_histogram->count, 6);
  EXPECT_NEAR(m.tpot_histogram->sum, 0.19016313552856445, 1e-12);
  ASSERT_TRUE(m.ttft_histogram.has_value());
  EXPECT_EQ(m.ttft_histogram->count, 1);
  ASSERT_TRUE(m.e2e_histogram.has_value());
  EXPECT_EQ(names.tpot, "vllm:time_per_output_token_seconds");
  EXPECT_EQ(names.kv_cache_usage, "vllm:gpu_cache_usage_perc");
  EXPECT_EQ(names.queue, "");
}

TEST(VllmParseTest, NewNamesOfV1) {
  absl::StatusOr<std::string> body = ReadFixture(kNew);
  ASSERT_TRUE(body.ok()) << body.status();
  DetectedNames names;
  absl::StatusOr<std::vector<ModelReading>> r = vllm::ParseMetrics(*body, &names);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  const ModelReading& m = (*r)[0];
  EXPECT_EQ(m.model, "qwen2.5-1.5b");
  EXPECT_EQ(m.decode_tokens_total, 584);
  EXPECT_EQ(m.prefill_tokens_total, 530);
  EXPECT_EQ(m.prefix_cache_queries_total, 530);
  EXPECT_EQ(m.prefix_cache_hits_total, 432);
  EXPECT_EQ(m.requests_waiting_capacity, 0);
  EXPECT_EQ(m.kv_cache_usage, 0);
  ASSERT_TRUE(m.tpot_histogram.has_value());
  EXPECT_EQ(m.tpot_histogram->count, 574);
  ASSERT_TRUE(m.queue_histogram.has_value());
  EXPECT_EQ(m.queue_histogram->count, 10);
  EXPECT_EQ(names.tpot, "vllm:inter_token_latency_seconds");
  EXPECT_EQ(names.kv_cache_usage, "vllm:kv_cache_usage_perc");
  EXPECT_EQ(names.prefix_cache_hits, "vllm:prefix_cache_hits_total");
  EXPECT_EQ(names.waiting_by_reason, "vllm:num_requests_waiting_by_reason");
}

TEST(VllmParseTest, EngineLabelsAreSummedAndKvAveraged) {
  const std::string body = R"(# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 100
vllm:generation_tokens_total{engine="1",model_name="m"} 50
vllm:generation_tokens_total{engine="0",model_name="other"} 7
vllm:num_requests_running{engine="0",model_name="m"} 3
vllm:num_requests_running{engine="1",model_name="m"} 2
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 4
vllm:num_requests_waiting_by_reason{engine="1",model_name="m",reason="capacity"} 1
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="deferred"} 9
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 1
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.05
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 2
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.1",model_name="m"} 3
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="m"} 3
vllm:time_to_first_token_seconds_sum{engine="1",model_name="m"} 0.15
vllm:time_to_first_token_seconds_count{engine="1",model_name="m"} 3
)";
  absl::StatusOr<std::vector<ModelReading>> r = vllm::ParseMetrics(body);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  const ModelReading& m = (*r)[0];
  EXPECT_EQ(m.model, "m");
  EXPECT_EQ(m.decode_tokens_total, 150);
  EXPECT_EQ(m.requests_running, 5);
  EXPECT_DOUBLE_EQ(*m.kv_cache_usage, 0.375);
  EXPECT_EQ(m.requests_waiting_capacity, 5);
  ASSERT_TRUE(m.ttft_histogram.has_value());
  EXPECT_EQ(m.ttft_histogram->count, 5);
  EXPECT_DOUBLE_EQ(m.ttft_histogram->sum, 1.2);
  EXPECT_EQ((*r)[1].model, "other");
  EXPECT_EQ((*r)[1].decode_tokens_total, 7);
  EXPECT_FALSE((*r)[1].requests_running.has_value());  // absent, not 0
}

TEST(VllmParseTest, BadInputIsAnErrorOrAbsent) {
  EXPECT_FALSE(vllm::ParseMetrics("<html>oops</html>").ok());
  EXPECT_FALSE(vllm::ParseMetrics("").ok());
  absl::StatusOr<std::vector<ModelReading>> none =
      vllm::ParseMetrics("vllm:num_requests_running{model_name=\"m\"} 1\n");
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("vllm:generation_tokens_total"));
  EXPECT_FALSE(vllm::ParseMetrics("vllm:generation_tokens_total{model_name=\"m\"} NaN\n").ok());
  absl::StatusOr<std::vector<ModelReading>> nan = vllm::ParseMetrics(
      "vllm:generation_tokens_total{model_name=\"m\"} 5\n"
      "vllm:kv_cache_usage_perc{model_name=\"m\"} NaN\n"
      "vllm:num_requests_running{model_name=\"m\"} -1\n"
      "vllm:gpu_cache_usage_perc{model_name=\"m\"} 7\n");
  ASSERT_TRUE(nan.ok()) << nan.status();
  EXPECT_FALSE((*nan)[0].kv_cache_usage.has_value());
  EXPECT_FALSE((*nan)[0].requests_running.has_value());
}

class VllmCollectorTest : public ::testing::Test {
 protected:
  void Start(const PromSimOptions& options) {
    ASSERT_TRUE(server_.EnablePromEngine(options).ok());
    ASSERT_TRUE(server_.Start().ok());
  }
  EngineConfig Config() {
    EngineConfig c;
    c.name = "vllm";
    c.kind = v1::ENGINE_KIND_VLLM;
    c.url = server_.url();
    c.timeout = absl::Seconds(2);
    return c;
  }
  v1::ModelSample TwoReads(VllmCollector& c, absl::Duration dt) {
    EngineReading a = c.Read();
    clock_.Advance(dt);
    EngineReading b = c.Read();
    EXPECT_TRUE(a.available) << a.unavailable_reason;
    EXPECT_TRUE(b.available) << b.unavailable_reason;
    if (a.models.empty() || b.models.empty()) return {};
    return ModelWindow("vllm", v1::ENGINE_KIND_VLLM, &a.models[0], b.models[0], dt);
  }

  FakeClock clock_;
  ReplayServer server_{&clock_};
};

TEST_F(VllmCollectorTest, OldServerWindow) {
  PromSimOptions o;
  o.fixture = kOld;
  o.counter_rates = {{"vllm:generation_tokens_total", 50},
                     {"vllm:prompt_tokens_total", 120},
                     {"vllm:num_preemptions_total", 1}};
  o.histograms["vllm:time_per_output_token_seconds"] = {.per_s = 3, .value_s = 0.03};
  o.histograms["vllm:time_to_first_token_seconds"] = {.per_s = 1, .value_s = 0.2};
  Start(o);
  server_.SetRoute("/version", ReplayResponse{200, "application/json", R"({"version":"0.4.3"})"});
  VllmCollector c(Config());
  v1::ModelSample m = TwoReads(c, absl::Seconds(2));
  EXPECT_EQ(m.model(), "facebook/opt-125m");
  EXPECT_FALSE(m.counters_reset());
  EXPECT_EQ(m.decode_tokens(), 100u);
  EXPECT_DOUBLE_EQ(m.decode_tokens_per_s(), 50.0);
  EXPECT_DOUBLE_EQ(m.prefill_tokens_per_s(), 120.0);
  EXPECT_EQ(m.preemptions(), 2u);
  // 6 gaps of 30 ms, all in the (25 ms, 50 ms] bucket.
  EXPECT_EQ(m.tpot().count(), 6u);
  EXPECT_FALSE(m.tpot().estimate());
  EXPECT_NEAR(m.tpot().mean_s(), 0.03, 1e-9);
  EXPECT_NEAR(m.tpot().p50_s(), 0.0375, 1e-9);
  EXPECT_NEAR(m.tpot().p95_s(), 0.04875, 1e-9);
  EXPECT_EQ(m.ttft().count(), 2u);
  EXPECT_NEAR(m.ttft().mean_s(), 0.2, 1e-9);
  EXPECT_EQ(m.e2e().count(), 0u);  // no request finished in the window
  EXPECT_FALSE(m.has_prefix_cache_hit_rate());
  EXPECT_EQ(c.Read().version, "0.4.3");
  EXPECT_EQ(c.detected().tpot, "vllm:time_per_output_token_seconds");
}

TEST_F(VllmCollectorTest, VersionEndpointMissingIsNotAskedEveryRead) {
  PromSimOptions o;
  o.fixture = kOld;
  Start(o);
  VllmCollector c(Config());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(c.Read().available);
  EXPECT_EQ(server_.hits("/version"), 1);
  for (uint64_t i = 3; i < PromEngineCollector::kVersionRetryReads; ++i) c.Read();
  EXPECT_EQ(server_.hits("/version"), 1);
  server_.SetRoute("/version", ReplayResponse{200, "application/json", R"({"version":"0.4.3"})"});
  EXPECT_EQ(c.Read().version, "0.4.3");
  EXPECT_EQ(server_.hits("/version"), 2);
  EXPECT_EQ(c.Read().version, "0.4.3");
  EXPECT_EQ(server_.hits("/version"), 2);
}

TEST_F(VllmCollectorTest, NewServerWindow) {
  PromSimOptions o;
  o.fixture = kNew;
  o.counter_rates = {{"vllm:generation_tokens_total", 333},
                     {"vllm:prefix_cache_queries_total", 100},
                     {"vllm:prefix_cache_hits_total", 25}};
  o.histograms["vllm:inter_token_latency_seconds"] = {.per_s = 300, .value_s = 0.015};
  o.histograms["vllm:request_queue_time_seconds"] = {.per_s = 2, .value_s = 0.5};
  o.histograms["vllm:e2e_request_latency_seconds"] = {.per_s = 2, .value_s = 3};
  Start(o);
  VllmCollector c(Config());
  v1::ModelSample m = TwoReads(c, absl::Milliseconds(1500));
  EXPECT_EQ(m.model(), "qwen2.5-1.5b");
  EXPECT_EQ(m.decode_tokens(), 499u);  // floor(333 x 1.5)
  EXPECT_DOUBLE_EQ(m.decode_tokens_per_s(), 499 / 1.5);
  EXPECT_DOUBLE_EQ(m.prefix_cache_hit_rate(), 37.0 / 150.0);
  EXPECT_EQ(m.tpot().count(), 450u);
  EXPECT_NEAR(m.tpot().mean_s(), 0.015, 1e-9);
  EXPECT_EQ(m.queue().count(), 3u);
  EXPECT_NEAR(m.queue().mean_s(), 0.5, 1e-9);
  EXPECT_EQ(m.e2e().count(), 3u);
  EXPECT_NEAR(m.e2e().mean_s(), 3, 1e-9);
  EXPECT_EQ(m.requests_waiting_capacity(), 0u);
  EXPECT_TRUE(m.has_requests_waiting_capacity());
  EXPECT_EQ(m.ttft().count(), 0u);
  EXPECT_EQ(m.preemptions(), 0u);
}

TEST_F(VllmCollectorTest, RestartStartsANewBaseline) {
  PromSimOptions o;
  o.fixture = kNew;
  Start(o);
  VllmCollector c(Config());
  EngineReading a = c.Read();
  ASSERT_TRUE(a.available) << a.unavailable_reason;
  server_.SetRoute("/metrics", ReplayResponse{200, "text/plain",
                                              "vllm:generation_tokens_total{model_name=\""
                                              "qwen2.5-1.5b\"} 3\n"});
  clock_.Advance(absl::Seconds(2));
  EngineReading b = c.Read();
  ASSERT_TRUE(b.available) << b.unavailable_reason;
  v1::ModelSample m =
      ModelWindow("vllm", v1::ENGINE_KIND_VLLM, &a.models[0], b.models[0], absl::Seconds(2));
  EXPECT_TRUE(m.counters_reset());
  EXPECT_FALSE(m.has_decode_tokens_per_s());
  EXPECT_EQ(m.decode_tokens(), 0u);
}

TEST_F(VllmCollectorTest, ErrorsMakeItUnavailable) {
  ASSERT_TRUE(server_.Start().ok());
  VllmCollector c(Config());
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_EQ(r.unavailable_reason, "GET /metrics: HTTP 404");
  server_.SetRoute("/metrics", ReplayResponse{200, "text/plain", "{\"not\": \"prometheus\"}"});
  r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, HasSubstr("not Prometheus text"));
  server_.SetRoute("/metrics", ReplayResponse{200, "text/plain", "python_info 1\n"});
  r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, HasSubstr("--disable-log-stats"));
  EXPECT_EQ(c.failed_reads(), 3u);
}

TEST_F(VllmCollectorTest, ModelFromListWithoutLabel) {
  ASSERT_TRUE(server_.Start().ok());
  server_.SetRoute("/metrics",
                   ReplayResponse{200, "text/plain", "vllm:generation_tokens_total 9\n"});
  VllmCollector c(Config());
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, HasSubstr("model name unknown"));
  server_.SetRoute("/v1/models", ReplayResponse{200, "application/json",
                                                R"({"data":[{"id":"org/llama-3-8b"}]})"});
  r = c.Read();
  ASSERT_TRUE(r.available) << r.unavailable_reason;
  EXPECT_EQ(r.models[0].model, "llama-3-8b");
}

void ExpectSameHistogram(const std::optional<prom::Histogram>& want,
                         const std::optional<prom::Histogram>& got, const std::string& what) {
  ASSERT_EQ(want.has_value(), got.has_value()) << what;
  if (!want.has_value()) return;
  EXPECT_EQ(want->buckets, got->buckets) << what;
  EXPECT_EQ(want->sum, got->sum) << what;
  EXPECT_EQ(want->count, got->count) << what;
}

// The lines the filter keeps give exactly the readings of the whole exposition.
TEST(PromFamilyFilterTest, SameReadingsAsTheWholeExpositionOnRealCaptures) {
  struct Case {
    PromEngineSpec spec;
    const char* fixture;
  };
  const Case cases[] = {
      {vllm::Spec(), kOld},
      {vllm::Spec(), kNew},
      {sglang::Spec(), "sglang/metrics_docs_example_v0.4era.txt"},
      {sglang::Spec(), "sglang/metrics_v0.5.10.post1_datadog_trimmed.txt"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.fixture);
    absl::StatusOr<std::string> body = ReadFixture(c.fixture);
    ASSERT_TRUE(body.ok()) << body.status();
    absl::StatusOr<prom::Exposition> whole = prom::Parse(*body);
    ASSERT_TRUE(whole.ok()) << whole.status();
    DetectedNames want_names;
    absl::StatusOr<std::vector<ModelReading>> want =
        ReadPromEngineExposition(c.spec, *whole, &want_names);
    ASSERT_TRUE(want.ok()) << want.status();
    DetectedNames names;
    absl::StatusOr<std::vector<ModelReading>> got = ParsePromEngineMetrics(c.spec, *body, &names);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(want->size(), got->size());
    for (size_t i = 0; i < want->size(); ++i) {
      const ModelReading& w = (*want)[i];
      const ModelReading& g = (*got)[i];
      EXPECT_EQ(w.model, g.model);
      EXPECT_EQ(w.decode_tokens_total, g.decode_tokens_total);
      EXPECT_EQ(w.prefill_tokens_total, g.prefill_tokens_total);
      EXPECT_EQ(w.requests_running, g.requests_running);
      EXPECT_EQ(w.requests_waiting, g.requests_waiting);
      EXPECT_EQ(w.requests_waiting_capacity, g.requests_waiting_capacity);
      EXPECT_EQ(w.kv_cache_usage, g.kv_cache_usage);
      EXPECT_EQ(w.prefix_cache_queries_total, g.prefix_cache_queries_total);
      EXPECT_EQ(w.prefix_cache_hits_total, g.prefix_cache_hits_total);
      EXPECT_EQ(w.preemptions_total, g.preemptions_total);
      ExpectSameHistogram(w.ttft_histogram, g.ttft_histogram, "ttft");
      ExpectSameHistogram(w.tpot_histogram, g.tpot_histogram, "tpot");
      ExpectSameHistogram(w.e2e_histogram, g.e2e_histogram, "e2e");
      ExpectSameHistogram(w.queue_histogram, g.queue_histogram, "queue");
    }
    EXPECT_EQ(want_names.decode_tokens, names.decode_tokens);
    EXPECT_EQ(want_names.tpot, names.tpot);
    EXPECT_EQ(want_names.kv_cache_usage, names.kv_cache_usage);
    EXPECT_EQ(want_names.prefix_cache_hits, names.prefix_cache_hits);

    // Exactly the samples the spec reads are kept, and nothing else.
    const PromFamilyFilter filter(c.spec);
    std::string text = *body;
    filter.Apply(&text);
    absl::StatusOr<prom::Exposition> kept = prom::Parse(text);
    ASSERT_TRUE(kept.ok()) << kept.status();
    size_t read = 0;
    for (const prom::Sample& s : whole->samples) read += filter.Reads(s.name) ? 1 : 0;
    EXPECT_EQ(kept->samples.size(), read);
    for (const prom::Sample& s : kept->samples) EXPECT_TRUE(filter.Reads(s.name)) << s.name;
  }
}

TEST(PromFamilyFilterTest, KeepsTheLinesThatAreRead) {
  const PromFamilyFilter filter(vllm::Spec());
  std::string text =
      "# HELP vllm:generation_tokens_total Tokens.\n"
      "# TYPE vllm:generation_tokens_total counter\n"
      "vllm:generation_tokens_total{model_name=\"m\"} 5\n"
      "# HELP python_gc_objects_collected_total Objects.\n"
      "python_gc_objects_collected_total{generation=\"0\"} 1\r\n"
      "# a comment\n"
      "\n"
      "# TYPE vllm:time_to_first_token_seconds histogram\n"
      "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 2\n"
      "vllm:time_to_first_token_seconds_created{model_name=\"m\"} 1.7e9\n"
      "vllm:generation_tokens_total_extra 1";
  filter.Apply(&text);
  EXPECT_EQ(text,
            "# HELP vllm:generation_tokens_total Tokens.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            "vllm:generation_tokens_total{model_name=\"m\"} 5\n"
            "\n\n\n\n"
            "# TYPE vllm:time_to_first_token_seconds histogram\n"
            "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 2\n"
            "\n");
}

TEST(PromFamilyFilterTest, BadInputIsStillRejectedAtItsLine) {
  // A malformed line of a family that is read: the error names its line, as without the filter.
  absl::StatusOr<std::vector<ModelReading>> r = vllm::ParseMetrics(
      "# HELP other_metric Other.\n"
      "other_metric{a=\"b\"} 1\n"
      "vllm:generation_tokens_total{model_name=\"m\" 5\n");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("line 3"));
  // A line that is neither a sample nor a comment is kept, so the parser rejects it.
  r = vllm::ParseMetrics("vllm:generation_tokens_total{model_name=\"m\"} 5\n<html>\n");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("line 2"));
  EXPECT_FALSE(vllm::ParseMetrics("vllm:generation_tokens_total{model_name=\"m\"} 5\n"
                                  "other-metric 1\n")
                   .ok());
  EXPECT_FALSE(vllm::ParseMetrics("vllm:generation_tokens_total{model_name=\"m\"} 5\n"
                                  "other_metric\n")
                   .ok());
  // A bucket of a histogram that is read still needs its `le` (its TYPE line is kept).
  EXPECT_FALSE(vllm::ParseMetrics("vllm:generation_tokens_total{model_name=\"m\"} 5\n"
                                  "# TYPE vllm:time_to_first_token_seconds histogram\n"
                                  "vllm:time_to_first_token_seconds_bucket{model_name=\"m\"} 1\n")
                   .ok());
  // The lines of a family that is not read are checked for their name only.
  EXPECT_TRUE(vllm::ParseMetrics("vllm:generation_tokens_total{model_name=\"m\"} 5\n"
                                 "other_metric{a=\"b\" x\n")
                  .ok());
}

}  // namespace
}  // namespace fleetwes::agent
