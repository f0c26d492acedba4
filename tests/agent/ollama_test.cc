#include "agent/collectors/ollama.h"

#include <string>

#include "agent/collectors/ollama_json.h"
#include "agent/ollama_probe.h"
#include "agent/ollama_proxy.h"
#include "agent/sampler.h"
#include "agent/window.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/replay_server.h"

namespace fleetwes::agent {
namespace {

using ::testing::HasSubstr;
using testing::OllamaSimOptions;
using testing::ReadFixture;
using testing::ReplayResponse;
using testing::ReplayServer;

std::string Fixture(const std::string& name) {
  absl::StatusOr<std::string> text = ReadFixture(name);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

// The final object of a capture, read with the meter one byte at a time.
ollama::ResponseOutcome MeterBytewise(const std::string& body, bool ndjson) {
  ollama::ResponseMeter meter(ndjson);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (size_t i = 0; i < body.size(); ++i) {
    meter.Feed(std::string_view(body).substr(i, 1), t0 + absl::Milliseconds(i));
  }
  return meter.Finish(t0 + absl::Seconds(100));
}

TEST(OllamaParseTest, VersionAndPs) {
  absl::StatusOr<std::string> v = ollama::ParseVersion(Fixture("ollama-0.11.6/version.json"));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, "0.11.6");

  auto one = ollama::ParsePs(Fixture("ollama-0.34/ps.json"));
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].name, "llama3.2:1b");
  EXPECT_EQ((*one)[0].size, 1514584145u);
  EXPECT_EQ((*one)[0].size_vram, 1514584145u);
  EXPECT_EQ((*one)[0].quantization_level, "Q8_0");
  EXPECT_EQ((*one)[0].expires_at, "2026-09-26T13:36:53.4650789-04:00");
  EXPECT_FALSE((*one)[0].cpu_offload());

  auto offload = ollama::ParsePs(Fixture("ollama-0.11.6/ps_partial_offload.json"));
  ASSERT_TRUE(offload.ok()) << offload.status();
  ASSERT_EQ(offload->size(), 1u);
  EXPECT_EQ((*offload)[0].name, "mistral:7b");
  EXPECT_EQ((*offload)[0].size_vram, 7206864896u);
  EXPECT_TRUE((*offload)[0].cpu_offload());

  auto two = ollama::ParsePs(Fixture("ollama-0.11.6/ps_two_models_full_gpu.json"));
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1].name, "smollm2:1.7b");
  EXPECT_FALSE((*two)[1].cpu_offload());

  auto empty = ollama::ParsePs(R"({"models":[]})");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(OllamaParseTest, BadBodiesAreErrors) {
  for (const char* body :
       {"", "<html>", "[]", R"({"models":{}})", R"({"models":[{"size":1}]})",
        R"({"models":[{"name":"a","size":-1}]})", R"({"models":[{"name":"a","size_vram":1.5}]})",
        R"({"models":[{"name":"a","size":"big"}]})", R"({"mod)", R"({})"}) {
    EXPECT_FALSE(ollama::ParsePs(body).ok()) << body;
  }
  const std::string ps = Fixture("ollama-0.34/ps.json");
  EXPECT_FALSE(ollama::ParsePs(ps.substr(0, ps.size() / 2)).ok());
  EXPECT_FALSE(ollama::ParseVersion(R"({"version":""})").ok());
  EXPECT_FALSE(ollama::ParseVersion(R"({"version":3})").ok());
  EXPECT_FALSE(ollama::ParseChunk(R"({"done":"yes"})").ok());
  EXPECT_FALSE(ollama::ParseChunk(R"({"done":true,"eval_count":-3})").ok());
  EXPECT_FALSE(ollama::ParseChunk("nope").ok());
}

TEST(OllamaParseTest, NormalizeModel) {
  EXPECT_EQ(ollama::NormalizeModel("llama3.2"), "llama3.2:latest");
  EXPECT_EQ(ollama::NormalizeModel("llama3.2:1b"), "llama3.2:1b");
  EXPECT_EQ(ollama::NormalizeModel("hf.co/org/m-GGUF:IQ4_XS"), "hf.co/org/m-GGUF:IQ4_XS");
  EXPECT_EQ(ollama::NormalizeModel("localhost:5000/m"), "localhost:5000/m:latest");
  EXPECT_EQ(ollama::NormalizeModel(""), "");
}

TEST(OllamaMeterTest, WarmStreamFinalObject) {
  ollama::ResponseOutcome o =
      MeterBytewise(Fixture("ollama-0.11.6/generate_stream_warm.ndjson"), true);
  ASSERT_TRUE(o.final.has_value());
  EXPECT_EQ(o.parse_errors, 0u);
  EXPECT_EQ(o.final->model, "dolphin3:8b");
  EXPECT_EQ(o.final->done_reason, "stop");
  EXPECT_EQ(o.final->eval_count, 9u);
  EXPECT_EQ(o.final->eval_duration_ns, 217847900u);
  EXPECT_EQ(o.final->prompt_eval_count, 30u);
  EXPECT_EQ(o.final->prompt_eval_duration_ns, 2556900u);
  EXPECT_EQ(o.final->load_duration_ns, 51316000u);
  EXPECT_EQ(o.final->total_duration_ns, 272196300u);
  // The first line (response "C") is complete when its newline arrives (byte i at t0 + i ms).
  const size_t newline = Fixture("ollama-0.11.6/generate_stream_warm.ndjson").find('\n');
  ASSERT_TRUE(o.first_output.has_value());
  EXPECT_EQ(*o.first_output, absl::FromUnixSeconds(1000) + absl::Milliseconds(newline));
}

TEST(OllamaMeterTest, ChatStreamAndNonStreamBody) {
  ollama::ResponseOutcome chat = MeterBytewise(Fixture("ollama-0.34/chat_stream.ndjson"), true);
  ASSERT_TRUE(chat.final.has_value());
  EXPECT_EQ(chat.final->eval_count, 3u);
  EXPECT_EQ(chat.final->eval_duration_ns, 173639000u);
  EXPECT_EQ(chat.final->prompt_eval_count, 29u);
  EXPECT_TRUE(chat.first_output.has_value());

  // Pretty printed over many lines: read as one JSON body.
  ollama::ResponseOutcome single =
      MeterBytewise(Fixture("ollama-0.11.6/generate_nonstream.json"), false);
  ASSERT_TRUE(single.final.has_value());
  EXPECT_EQ(single.final->model, "granite3.3:2b");
  EXPECT_EQ(single.final->eval_count, 11u);
  EXPECT_EQ(single.final->total_duration_ns, 1203194400u);

  // An unload answer is final but carries no timings.
  ollama::ResponseOutcome unload = MeterBytewise(Fixture("ollama-0.34/generate_unload.json"), true);
  ASSERT_TRUE(unload.final.has_value());
  EXPECT_EQ(unload.final->done_reason, "unload");
  EXPECT_FALSE(unload.final->eval_count.has_value());
  EXPECT_FALSE(unload.first_output.has_value());
}

TEST(OllamaMeterTest, TruncatedGarbageAndOversizedLines) {
  const std::string warm = Fixture("ollama-0.11.6/generate_stream_warm.ndjson");
  ollama::ResponseOutcome cut = MeterBytewise(warm.substr(0, warm.size() - 40), true);
  EXPECT_FALSE(cut.final.has_value());
  EXPECT_EQ(cut.parse_errors, 1u);

  ollama::ResponseMeter meter(true, /*max_object_bytes=*/64);
  const absl::Time t = absl::FromUnixSeconds(1);
  meter.Feed(std::string(200, 'x'), t);
  meter.Feed("\n{garbage}\n", t);
  meter.Feed(R"({"error":"model not found"})", t);
  ollama::ResponseOutcome o = meter.Finish(t);
  EXPECT_EQ(o.oversized, 1u);
  EXPECT_EQ(o.parse_errors, 1u);
  EXPECT_TRUE(o.error);
  EXPECT_FALSE(o.final.has_value());
}

TEST(OllamaTrafficTest, CountersAndHistogramsFromFinalObjects) {
  OllamaTraffic traffic;
  const absl::Time t0 = absl::FromUnixSeconds(5000);
  traffic.Begin("dolphin3:8b");
  EXPECT_EQ(traffic.in_flight(), 1u);
  EXPECT_EQ(traffic.Snapshot()["dolphin3:8b"].running, 1u);
  ollama::ResponseOutcome o =
      MeterBytewise(Fixture("ollama-0.11.6/generate_stream_warm.ndjson"), true);
  o.first_output = t0 + absl::Milliseconds(60);
  traffic.End("dolphin3:8b", o, t0);
  EXPECT_EQ(traffic.in_flight(), 0u);
  EXPECT_EQ(traffic.completed(), 1u);

  // A request that never got its final object (cut stream) is a failure, not a 0-token request.
  traffic.Begin("dolphin3");
  traffic.End("dolphin3", ollama::ResponseOutcome{}, t0);
  EXPECT_EQ(traffic.failed(), 1u);

  const auto snap = traffic.Snapshot();
  const OllamaModelTraffic& t = snap.at("dolphin3:8b");
  EXPECT_EQ(t.running, 0u);
  EXPECT_EQ(t.requests, 1u);
  EXPECT_DOUBLE_EQ(t.decode_tokens, 9);
  EXPECT_DOUBLE_EQ(t.prefill_tokens, 30);
  EXPECT_DOUBLE_EQ(t.decode_seconds, 0.2178479);
  EXPECT_DOUBLE_EQ(t.prefill_seconds, 0.0025569);
  EXPECT_EQ(t.tpot.count, 1);
  EXPECT_DOUBLE_EQ(t.tpot.sum, 0.2178479 / 9);
  EXPECT_EQ(t.ttft.count, 1);
  EXPECT_DOUBLE_EQ(t.ttft.sum, 0.06);
  EXPECT_EQ(t.e2e.count, 1);
  EXPECT_DOUBLE_EQ(t.e2e.sum, 0.2721963);
}

EngineConfig Config(const std::string& url, absl::Duration timeout = absl::Seconds(1)) {
  EngineConfig c;
  c.name = "ollama-1";
  c.kind = v1::ENGINE_KIND_OLLAMA;
  c.url = url;
  c.timeout = timeout;
  return c;
}

TEST(OllamaCollectorTest, ResidencyFromCaptures) {
  ReplayServer server;
  ASSERT_TRUE(server.EnableOllama().ok());
  ASSERT_TRUE(server.Start().ok());
  OllamaCollector c(Config(server.url()));
  EXPECT_EQ(c.kind(), v1::ENGINE_KIND_OLLAMA);
  EngineReading r = c.Read();
  ASSERT_TRUE(r.available) << r.unavailable_reason;
  EXPECT_EQ(r.version, "0.11.6");
  ASSERT_EQ(r.models.size(), 1u);
  EXPECT_EQ(r.models[0].model, "llama3.2:1b");
  EXPECT_EQ(r.models[0].vram_bytes, 1514584145u);
  EXPECT_FALSE(r.models[0].cpu_offload);
  // Without a proxy there is no throughput: counters stay absent, never 0.
  EXPECT_FALSE(r.models[0].decode_tokens_total.has_value());
  EXPECT_FALSE(r.models[0].ttft_histogram.has_value());

  server.SetRoute("/api/ps",
                  {200, "application/json", Fixture("ollama-0.11.6/ps_partial_offload.json")});
  r = c.Read();
  ASSERT_TRUE(r.available) << r.unavailable_reason;
  ASSERT_EQ(r.models.size(), 1u);
  EXPECT_TRUE(r.models[0].cpu_offload);
  EXPECT_EQ(r.models[0].vram_bytes, 7206864896u);
  v1::ModelSample s = ModelWindow(c.engine_id(), c.kind(), nullptr, r.models[0], absl::Seconds(2));
  EXPECT_TRUE(s.cpu_offload());
  EXPECT_FALSE(s.synthetic());
  EXPECT_EQ(s.vram_bytes(), 7206864896u);
  // The version is read once.
  EXPECT_EQ(server.hits("/api/version"), 1);
}

TEST(OllamaCollectorTest, FailuresAreUnavailableWithAReason) {
  ReplayServer server;
  ASSERT_TRUE(server.EnableOllama().ok());
  ASSERT_TRUE(server.Start().ok());
  // A generous timeout where the answer arrives (a loaded machine may take a while to move the
  // 5 MiB body), a short one for the engine that hangs.
  OllamaCollector c(Config(server.url(), absl::Seconds(20)));
  OllamaCollector quick(Config(server.url(), absl::Milliseconds(300)));

  server.SetRoute("/api/version", {500, "text/plain", "boom"});
  EngineReading r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, HasSubstr("GET /api/version: HTTP 500"));
  server.ClearRoute("/api/version");

  struct Case {
    ReplayResponse response;
    const char* reason;
  };
  const std::string ps = Fixture("ollama-0.34/ps.json");
  const Case cases[] = {
      {{200, "text/html", "<html>hello</html>"}, "not a JSON object"},
      {{200, "application/json", ps.substr(0, 120)}, "not a JSON object"},
      {{503, "text/plain", "busy"}, "HTTP 503"},
      {{200, "application/json", std::string(5 << 20, ' ')}, "larger than 4 MiB"},
      {{200, "application/json", R"({"models":[{"name":"m","size":-5}]})"}, "size is negative"},
  };
  for (const Case& k : cases) {
    server.SetRoute("/api/ps", k.response);
    r = c.Read();
    EXPECT_FALSE(r.available);
    EXPECT_THAT(r.unavailable_reason, AllOf(HasSubstr("GET /api/ps"), HasSubstr(k.reason)));
  }
  server.ClearRoute("/api/ps");

  server.SetHang("/api/ps", true);
  r = quick.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, HasSubstr("timed out"));
  server.SetHang("/api/ps", false);
  EXPECT_EQ(c.failed_reads(), 6u);
  EXPECT_EQ(quick.failed_reads(), 1u);

  r = c.Read();
  EXPECT_TRUE(r.available) << r.unavailable_reason;

  server.Stop();
  r = c.Read();
  EXPECT_FALSE(r.available);
  EXPECT_THAT(r.unavailable_reason, HasSubstr("connection refused"));
}

TEST(OllamaCollectorTest, TrafficBecomesWindowsAndSyntheticStaysApart) {
  ReplayServer server;
  ASSERT_TRUE(server.EnableOllama().ok());
  ASSERT_TRUE(server.Start().ok());
  OllamaTraffic real;
  OllamaTraffic probe;
  OllamaCollector c(Config(server.url()), &real, &probe);

  EngineReading before = c.Read();
  ASSERT_TRUE(before.available) << before.unavailable_reason;
  ASSERT_EQ(before.models.size(), 1u);  // no probe yet: no synthetic reading
  EXPECT_EQ(before.models[0].decode_tokens_total, 0);

  const absl::Time t0 = absl::FromUnixSeconds(100);
  ollama::ResponseOutcome chat = MeterBytewise(Fixture("ollama-0.34/chat_stream.ndjson"), true);
  chat.first_output = t0 + absl::Milliseconds(250);
  for (int i = 0; i < 2; ++i) {
    real.Begin("llama3.2:1b");
    real.End("llama3.2:1b", chat, t0);
  }
  probe.Begin("llama3.2:1b");
  probe.End("llama3.2:1b", chat, t0);

  EngineReading after = c.Read();
  ASSERT_TRUE(after.available);
  ASSERT_EQ(after.models.size(), 2u);
  EXPECT_FALSE(after.models[0].synthetic);
  EXPECT_TRUE(after.models[1].synthetic);
  EXPECT_EQ(after.models[1].model, "llama3.2:1b");
  EXPECT_EQ(after.models[1].decode_tokens_total, 3);

  v1::ModelSample s =
      ModelWindow(c.engine_id(), c.kind(), &before.models[0], after.models[0], absl::Seconds(2));
  EXPECT_FALSE(s.counters_reset());
  EXPECT_EQ(s.decode_tokens(), 6u);
  EXPECT_DOUBLE_EQ(s.decode_tokens_per_s(), 3);
  EXPECT_EQ(s.prefill_tokens(), 58u);
  EXPECT_EQ(s.tpot().count(), 2u);
  EXPECT_FALSE(s.tpot().estimate());
  EXPECT_NEAR(s.tpot().mean_s(), 0.173639 / 3, 1e-12);
  EXPECT_EQ(s.ttft().count(), 2u);
  EXPECT_NEAR(s.ttft().mean_s(), 0.25, 1e-12);
  EXPECT_TRUE(s.ttft().has_p95_s());
  EXPECT_EQ(s.e2e().count(), 2u);
  EXPECT_NEAR(s.e2e().mean_s(), 30.2586093, 1e-9);

  // The synthetic reading only has synthetic baselines (none yet): gauges only.
  v1::ModelSample syn =
      ModelWindow(c.engine_id(), c.kind(), nullptr, after.models[1], absl::Seconds(2));
  EXPECT_TRUE(syn.synthetic());
  EXPECT_FALSE(syn.has_decode_tokens_per_s());
}

class NoHardware final : public HardwareCollector {
 public:
  HardwareReading Read() override { return {}; }
};

// Through the sampler: the real and the synthetic sample of one model each find their own
// baseline, so neither is mistaken for a counter reset of the other.
TEST(OllamaSamplerTest, RealAndSyntheticSamplesAreWindowedApart) {
  FakeClock clock;
  ReplayServer server(&clock);
  ASSERT_TRUE(server.EnableOllama().ok());
  ASSERT_TRUE(server.Start().ok());
  OllamaTraffic real;
  OllamaTraffic probe;
  const ollama::ResponseOutcome chat =
      MeterBytewise(Fixture("ollama-0.34/chat_stream.ndjson"), true);
  for (int i = 0; i < 10; ++i) {
    real.Begin("llama3.2:1b");
    real.End("llama3.2:1b", chat, clock.Now());
  }
  probe.Begin("llama3.2:1b");
  probe.End("llama3.2:1b", chat, clock.Now());

  std::vector<std::unique_ptr<EngineCollector>> engines;
  engines.push_back(std::make_unique<OllamaCollector>(Config(server.url()), &real, &probe));
  SamplerOptions options;
  options.node_id = "n";
  options.boot_id = "b";
  Sampler sampler(options, std::move(engines), std::make_unique<NoHardware>(), &clock);
  EXPECT_FALSE(sampler.Tick().has_value());

  real.Begin("llama3.2:1b");
  real.End("llama3.2:1b", chat, clock.Now());
  probe.Begin("llama3.2:1b");
  probe.End("llama3.2:1b", chat, clock.Now());
  clock.Advance(absl::Seconds(2));
  std::optional<v1::Frame> f = sampler.Tick();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->models_size(), 2);
  const v1::ModelSample& r = f->models(0);
  const v1::ModelSample& s = f->models(1);
  EXPECT_FALSE(r.synthetic());
  EXPECT_FALSE(r.counters_reset());
  EXPECT_EQ(r.decode_tokens(), 3u);
  EXPECT_DOUBLE_EQ(r.decode_tokens_per_s(), 1.5);
  EXPECT_EQ(r.tpot().count(), 1u);
  EXPECT_TRUE(s.synthetic());
  EXPECT_FALSE(s.counters_reset());
  EXPECT_EQ(s.decode_tokens(), 3u);
  EXPECT_EQ(s.model(), "llama3.2:1b");
  EXPECT_EQ(f->engines(0).version(), "0.11.6");
}

TEST(OllamaProbeTest, ProbesAResidentModelAndSkipsWhenBusy) {
  FakeClock clock;
  ReplayServer server(&clock);
  ASSERT_TRUE(server.EnableOllama().ok());
  ASSERT_TRUE(server.Start().ok());
  OllamaTraffic proxy_traffic;
  OllamaProbeOptions options;
  options.engine_url = server.url();
  options.settle = absl::ZeroDuration();
  OllamaProbe probe(options, &proxy_traffic, &clock);

  proxy_traffic.Begin("llama3.2:1b");  // a real request in flight
  EXPECT_EQ(probe.RunOnce(), OllamaProbe::Result::kBusy);
  EXPECT_EQ(server.hits("/api/generate"), 0);
  EXPECT_EQ(probe.skipped_busy(), 1u);
  proxy_traffic.End("llama3.2:1b", {}, clock.Now());

  EXPECT_EQ(probe.RunOnce(), OllamaProbe::Result::kProbed);
  EXPECT_EQ(server.hits("/api/generate"), 1);
  EXPECT_THAT(server.last_ollama_request(),
              AllOf(HasSubstr(R"("model":"llama3.2:1b")"), HasSubstr(R"("num_predict":8)")));
  auto snap = probe.traffic().Snapshot();
  ASSERT_EQ(snap.count("llama3.2:1b"), 1u);
  EXPECT_DOUBLE_EQ(snap["llama3.2:1b"].decode_tokens, 9);
  EXPECT_EQ(snap["llama3.2:1b"].ttft.count, 1);

  // The collector reports the probe's figures as a separate, synthetic model sample.
  EngineConfig config;
  config.name = "o";
  config.kind = v1::ENGINE_KIND_OLLAMA;
  config.url = server.url();
  OllamaCollector collector(config, &proxy_traffic, &probe.traffic());
  EngineReading r = collector.Read();
  ASSERT_EQ(r.models.size(), 2u);
  EXPECT_FALSE(r.models[0].synthetic);
  EXPECT_EQ(r.models[0].decode_tokens_total, 0);
  EXPECT_TRUE(r.models[1].synthetic);
  EXPECT_EQ(r.models[1].decode_tokens_total, 9);
  // Real traffic is untouched.
  EXPECT_EQ(proxy_traffic.completed(), 0u);

  server.SetRoute("/api/ps", {200, "application/json", R"({"models":[]})"});
  EXPECT_EQ(probe.RunOnce(), OllamaProbe::Result::kNoModel);
  EXPECT_EQ(probe.probes(), 1u);
}

}  // namespace
}  // namespace fleetwes::agent
