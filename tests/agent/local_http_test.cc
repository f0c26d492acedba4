#include "agent/local_http.h"

#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/promtool.h"

namespace fleetwes::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::Frame MakeFrame(uint64_t seq, bool two_models) {
  v1::Frame f;
  f.set_node_id("edge-1");
  f.set_boot_id("boot-1");
  f.set_seq(seq);
  f.mutable_window_end()->set_seconds(1'767'225'602);
  v1::ModelSample* m = f.add_models();
  m->set_engine_id("vllm-a");
  m->set_model("llama-3-8b");
  m->set_decode_tokens_per_s(512.5);
  m->mutable_ttft()->set_p95_s(0.25);
  m->mutable_tpot()->set_p95_s(0.02);
  m->set_kv_cache_usage(0.4);
  m->set_requests_running(3);
  m->set_requests_waiting(1);
  m->mutable_wes()->set_raw(2.5);
  m->mutable_wes()->set_penalized(2.0);
  if (two_models) {
    v1::ModelSample* m2 = f.add_models();
    m2->set_engine_id("llama-b");
    m2->set_model("qwen-7b");
    m2->set_decode_tokens_per_s(40);
    m2->set_kv_cache_usage(-1);  // bad value from outside: never emitted
  }
  v1::Device* d = f.add_devices();
  d->set_id("gpu0");
  d->set_name("NVIDIA L4");
  d->set_power_w(70.5);
  d->set_temperature_c(61);
  d->set_thermal_state(v1::THERMAL_STATE_FAIR);
  d->set_clock_mhz(1500);
  d->set_clock_max_mhz(2040);
  v1::EngineStatus* e = f.add_engines();
  e->set_engine_id("vllm-a");
  e->set_kind(v1::ENGINE_KIND_VLLM);
  e->set_available(true);
  f.mutable_node_wes()->set_raw(2.4);
  f.mutable_node_wes()->set_penalized(1.9);
  f.mutable_node_wes()->set_tokens_per_s(552.5);
  f.set_thermal_state(v1::THERMAL_STATE_FAIR);
  f.mutable_system()->set_memory_pressure(true);
  f.mutable_system()->set_memory_pressure_some_avg10(12.5);
  return f;
}

class LocalHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    uplink_.connected = false;
    uplink_.address = "agg-1:7470";
    uplink_.state = "backoff";
    uplink_.reason = "refused";
    uplink_.last_error = "agg-1:7470: UNAVAILABLE: Connection refused";
    uplink_.frames_sent = 9;
    uplink_.acked_seq = 7;
    uplink_.rejects = 1;
    uplink_.failures_by_reason = {{"refused", 4}};
    LocalHttpOptions o;
    o.port = 0;
    o.node_id = "edge-1";
    o.boot_id = "boot-1";
    o.interval = absl::Seconds(2);
    o.spool_enabled = true;
    o.spool_dir = "/var/lib/fleetwes/spool";
    LocalHttpSources s;
    s.uplink = [this] { return uplink_; };
    s.queue = [] { return QueueDepth{.frames = 5, .bytes = 4096, .evicted = 2}; };
    s.engine_reads = [] { return std::vector<EngineReadCounters>{{"vllm-a", 3, 1}}; };
    s.engines = [] {
      v1::EngineStatus e;
      e.set_engine_id("vllm-a");
      e.set_kind(v1::ENGINE_KIND_VLLM);
      e.set_available(false);
      e.set_unavailable_reason("GET /metrics: connection refused");
      return std::vector<v1::EngineStatus>{e};
    };
    s.ollama_proxies = [this] { return proxies_; };
    http_ = std::make_unique<LocalHttp>(o, s, &clock_);
    ASSERT_TRUE(http_->Start().ok());
    ASSERT_GT(http_->port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", http_->port());
    client_->set_read_timeout(5, 0);
  }

  // What the agent's Ollama proxies report; none unless a test sets them.
  void SetProxy() {
    OllamaProxyStats p;
    p.requests = 12;
    p.upstream_unreachable = 2;
    p.upstream_cut = 1;
    p.upstream_errors = 3;
    p.client_aborts = 4;
    p.meter_errors = 5;
    p.rejected_too_large = 6;
    p.in_flight = 7;
    p.request_bytes = 1000;
    p.response_bytes = 250000;
    p.queued_bytes = 8192;
    proxies_ = {{"ollama-a", p}};
  }

  FakeClock clock_;
  UplinkStats uplink_;
  std::vector<OllamaProxyRegistry::Entry> proxies_;
  std::unique_ptr<LocalHttp> http_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(LocalHttpTest, HealthzFollowsTheSampler) {
  auto r = client_->Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);  // still within the first intervals
  EXPECT_EQ(r->body, "ok\n");

  clock_.Advance(absl::Seconds(7));  // 3 intervals of 2s passed without a frame
  r = client_->Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_THAT(r->body, HasSubstr("no frame since the start 7s"));

  http_->PublishFrame(MakeFrame(1, false));
  r = client_->Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  clock_.Advance(absl::Seconds(6));
  EXPECT_TRUE(http_->CheckHealth().ok);
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_FALSE(http_->CheckHealth().ok);
  EXPECT_THAT(http_->CheckHealth().message, HasSubstr("no frame for 6.001s"));
}

TEST_F(LocalHttpTest, OnlyGet) {
  for (const char* path : {"/healthz", "/metrics", "/status"}) {
    auto r = client_->Post(path, "x", "text/plain");
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 405) << path;
    EXPECT_EQ(r->get_header_value("Allow"), "GET, HEAD");
    auto d = client_->Delete(path);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->status, 405);
  }
  auto head = client_->Head("/healthz");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  auto r = client_->Get("/nope");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
}

TEST_F(LocalHttpTest, MetricsHaveOwnCountersAndTheLastFrame) {
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("version=0.0.4"));
  // Before any frame: own metrics only.
  EXPECT_THAT(r->body, HasSubstr("fleetwes_agent_frames_produced_total 0"));
  EXPECT_THAT(r->body, Not(HasSubstr("fleetwes_agent_model_")));

  http_->PublishFrame(MakeFrame(1, true));
  r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  const std::string& b = r->body;
  for (const char* line : {
           "# TYPE fleetwes_agent_frames_produced_total counter",
           "fleetwes_agent_frames_produced_total 1",
           "fleetwes_agent_frames_sent_total 9",
           "fleetwes_agent_frames_acked_total 7",
           "fleetwes_agent_frames_rejected_total 1",
           "fleetwes_agent_uplink_connected 0",
           "fleetwes_agent_uplink_stream_failures_total{reason=\"refused\"} 4",
           "fleetwes_agent_uplink_stream_failures_total{reason=\"resolution\"} 0",
           "fleetwes_agent_spool_frames 5",
           "fleetwes_agent_spool_bytes 4096",
           "fleetwes_agent_spool_evicted_frames_total 2",
           "fleetwes_agent_engine_reads_failed_total{engine=\"vllm-a\"} 3",
           "fleetwes_agent_engine_reads_given_up_total{engine=\"vllm-a\"} 1",
           "fleetwes_agent_process_start_time_seconds 1767225600",
           "fleetwes_agent_model_decode_tokens_per_second{engine=\"vllm-a\",model=\"llama-3-8b\"} "
           "512.5",
           "fleetwes_agent_model_decode_tokens_per_second{engine=\"llama-b\",model=\"qwen-7b\"} 40",
           "fleetwes_agent_model_ttft_p95_seconds{engine=\"vllm-a\",model=\"llama-3-8b\"} 0.25",
           "fleetwes_agent_model_tpot_p95_seconds{engine=\"vllm-a\",model=\"llama-3-8b\"} 0.02",
           "fleetwes_agent_model_kv_cache_usage_ratio{engine=\"vllm-a\",model=\"llama-3-8b\"} 0.4",
           "fleetwes_agent_model_requests_running{engine=\"vllm-a\",model=\"llama-3-8b\"} 3",
           "fleetwes_agent_model_requests_waiting{engine=\"vllm-a\",model=\"llama-3-8b\"} 1",
           "fleetwes_agent_model_wes_raw{engine=\"vllm-a\",model=\"llama-3-8b\"} 2.5",
           "fleetwes_agent_model_wes_penalized{engine=\"vllm-a\",model=\"llama-3-8b\"} 2",
           "fleetwes_agent_engine_up{engine=\"vllm-a\",kind=\"vllm\"} 1",
           "fleetwes_agent_device_power_watts{device=\"gpu0\",name=\"NVIDIA L4\"} 70.5",
           "fleetwes_agent_device_temperature_celsius{device=\"gpu0\",name=\"NVIDIA L4\"} 61",
           "fleetwes_agent_device_thermal_state{device=\"gpu0\",name=\"NVIDIA L4\"} 2",
           "fleetwes_agent_device_clock_hertz{device=\"gpu0\",name=\"NVIDIA L4\"} 1500000000",
           "fleetwes_agent_device_clock_max_hertz{device=\"gpu0\",name=\"NVIDIA L4\"} 2040000000",
           "fleetwes_agent_node_wes_raw 2.4",
           "fleetwes_agent_node_wes_penalized 1.9",
           "fleetwes_agent_node_thermal_state 2",
           "fleetwes_agent_memory_pressure 1",
           "fleetwes_agent_memory_pressure_some_avg10_ratio 0.125",
           "fleetwes_agent_last_frame_seq 1",
       }) {
    EXPECT_THAT(b, HasSubstr(absl::StrCat(line, "\n"))) << line;
  }
  EXPECT_THAT(b, Not(HasSubstr("kv_cache_usage_ratio{engine=\"llama-b\"")));  // negative input

  // The next frame no longer lists qwen-7b: its series disappear.
  http_->PublishFrame(MakeFrame(2, false));
  r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->body, Not(HasSubstr("qwen-7b")));
  EXPECT_THAT(r->body, HasSubstr("fleetwes_agent_frames_produced_total 2\n"));
  EXPECT_THAT(r->body, HasSubstr("fleetwes_agent_last_frame_seq 2\n"));
}

TEST_F(LocalHttpTest, MetricsHaveTheOllamaProxyCounters) {
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->body, Not(HasSubstr("fleetwes_agent_ollama_proxy_")));  // no proxy: no family

  SetProxy();
  r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  for (const char* line : {
           "# TYPE fleetwes_agent_ollama_proxy_requests_total counter",
           "fleetwes_agent_ollama_proxy_requests_total{engine=\"ollama-a\"} 12",
           "# TYPE fleetwes_agent_ollama_proxy_requests_in_flight gauge",
           "fleetwes_agent_ollama_proxy_requests_in_flight{engine=\"ollama-a\"} 7",
           "fleetwes_agent_ollama_proxy_rejected_too_large_total{engine=\"ollama-a\"} 6",
           "fleetwes_agent_ollama_proxy_upstream_failures_total{engine=\"ollama-a\","
           "stage=\"before_response\"} 2",
           "fleetwes_agent_ollama_proxy_upstream_failures_total{engine=\"ollama-a\","
           "stage=\"during_response\"} 1",
           "fleetwes_agent_ollama_proxy_errors_total{engine=\"ollama-a\",kind=\"client_abort\"} 4",
           "fleetwes_agent_ollama_proxy_errors_total{engine=\"ollama-a\","
           "kind=\"bad_response_line\"} 5",
           "fleetwes_agent_ollama_proxy_bytes_total{engine=\"ollama-a\",direction=\"request\"} "
           "1000",
           "fleetwes_agent_ollama_proxy_bytes_total{engine=\"ollama-a\",direction=\"response\"} "
           "250000",
           "fleetwes_agent_ollama_proxy_queued_bytes{engine=\"ollama-a\"} 8192",
       }) {
    EXPECT_THAT(r->body, HasSubstr(absl::StrCat(line, "\n"))) << line;
  }
}

// `promtool check metrics` has nothing to say about the agent's exposition.
TEST_F(LocalHttpTest, MetricsPassPromtoolLint) {
  SetProxy();
  http_->PublishFrame(MakeFrame(1, true));
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  const std::optional<std::string> findings = fleetwes::testing::PromtoolFindings(r->body);
  if (!findings.has_value()) GTEST_SKIP() << "promtool not installed (deploy/install-deps.sh)";
  EXPECT_EQ(*findings, "") << r->body;
}

TEST_F(LocalHttpTest, StatusIsJson) {
  http_->PublishFrame(MakeFrame(3, false));
  clock_.Advance(absl::Seconds(1));
  auto r = client_->Get("/status");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const nlohmann::json j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["node_id"], "edge-1");
  EXPECT_EQ(j["boot_id"], "boot-1");
  EXPECT_EQ(j["uptime_s"], 1.0);
  EXPECT_EQ(j["last_frame_age_s"], 1.0);
  EXPECT_EQ(j["healthy"], true);
  EXPECT_EQ(j["last_frame"]["seq"], "3");  // uint64 in proto JSON is a string
  EXPECT_EQ(j["last_frame"]["models"][0]["decode_tokens_per_s"], 512.5);
  EXPECT_EQ(j["uplink"]["connected"], false);
  EXPECT_EQ(j["uplink"]["address"], "agg-1:7470");
  EXPECT_EQ(j["uplink"]["state"], "backoff");
  EXPECT_EQ(j["uplink"]["reason"], "refused");
  EXPECT_EQ(j["uplink"]["acked_seq"], 7);
  EXPECT_EQ(j["uplink"]["failures_by_reason"]["refused"], 4);
  EXPECT_EQ(j["spool"]["enabled"], true);
  EXPECT_EQ(j["spool"]["dir"], "/var/lib/fleetwes/spool");
  EXPECT_EQ(j["spool"]["depth_frames"], 5);
  EXPECT_EQ(j["spool"]["depth_bytes"], 4096);
  EXPECT_EQ(j["spool"]["evicted_frames"], 2);
  ASSERT_EQ(j["engines"].size(), 1u);
  EXPECT_EQ(j["engines"][0]["engine_id"], "vllm-a");
  EXPECT_EQ(j["engines"][0]["kind"], "ENGINE_KIND_VLLM");
  EXPECT_EQ(j["engines"][0]["unavailable_reason"], "GET /metrics: connection refused");
  EXPECT_EQ(j["engines"][0]["reads_failed"], 3);
}

TEST_F(LocalHttpTest, BindFailureNamesTheAddress) {
  LocalHttpOptions o;
  o.port = http_->port();  // taken by the fixture's server
  LocalHttp second(o, {}, &clock_);
  absl::Status s = second.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("127.0.0.1:", http_->port())));
}

TEST(ParseListenAddressTest, Forms) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(ParseListenAddress("127.0.0.1:7472", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7472);
  ASSERT_TRUE(ParseListenAddress("[::1]:9100", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 9100);
  EXPECT_FALSE(ParseListenAddress("localhost", &host, &port).ok());
  EXPECT_FALSE(ParseListenAddress("a:0", &host, &port).ok());
  EXPECT_FALSE(ParseListenAddress("a:b:1", &host, &port).ok());
  EXPECT_FALSE(ParseListenAddress("[::1]", &host, &port).ok());
}

}  // namespace
}  // namespace fleetwes::agent
