#include "agent/discovery.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/replay_server.h"

namespace fleetwes::agent {
namespace {

using ::fleetwes::testing::ReadFixture;
using ::fleetwes::testing::ReplayResponse;
using ::fleetwes::testing::ReplayServer;

constexpr absl::Duration kTimeout = absl::Seconds(2);

// A loopback port nobody listens on.
int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

ReplayResponse Json(const std::string& fixture) {
  absl::StatusOr<std::string> body = ReadFixture(fixture);
  EXPECT_TRUE(body.ok()) << body.status();
  return ReplayResponse{200, "application/json", body.value_or("")};
}

std::unique_ptr<ReplayServer> PromEngine(const std::string& fixture) {
  auto s = std::make_unique<ReplayServer>();
  EXPECT_TRUE(s->Start().ok());
  fleetwes::testing::PromSimOptions o;
  o.fixture = fixture;
  EXPECT_TRUE(s->EnablePromEngine(o).ok());
  return s;
}

TEST(IdentifyEngineTest, FromCapturedAnswers) {
  ReplayServer llama;
  ASSERT_TRUE(llama.Start().ok());
  ASSERT_TRUE(llama.EnableLlamaCpp().ok());
  EXPECT_EQ(IdentifyEngine(llama.url(), kTimeout), v1::ENGINE_KIND_LLAMACPP);

  auto vllm_old = PromEngine("vllm-0.4.3/metrics.txt");
  EXPECT_EQ(IdentifyEngine(vllm_old->url(), kTimeout), v1::ENGINE_KIND_VLLM);
  auto vllm_new = PromEngine("vllm-0.29.0/metrics_after_load.txt");
  EXPECT_EQ(IdentifyEngine(vllm_new->url(), kTimeout), v1::ENGINE_KIND_VLLM);
  auto sglang = PromEngine("sglang/metrics_v0.5.10.post1_datadog_trimmed.txt");
  EXPECT_EQ(IdentifyEngine(sglang->url(), kTimeout), v1::ENGINE_KIND_SGLANG);

  ReplayServer ollama;
  ASSERT_TRUE(ollama.Start().ok());
  ollama.SetRoute("/api/version", Json("ollama-0.11.6/version.json"));
  ollama.SetRoute("/api/tags", Json("ollama-0.11.6/tags.json"));
  EXPECT_EQ(IdentifyEngine(ollama.url(), kTimeout), v1::ENGINE_KIND_OLLAMA);
}

TEST(IdentifyEngineTest, WithoutMetrics) {
  // llama-server started without --metrics: /metrics is 501, /props tells.
  ReplayServer llama;
  ASSERT_TRUE(llama.Start().ok());
  ASSERT_TRUE(llama.EnableLlamaCpp().ok());
  llama.SetMetricsEnabled(false);
  EXPECT_EQ(IdentifyEngine(llama.url(), kTimeout), v1::ENGINE_KIND_LLAMACPP);

  ReplayServer sglang;
  ASSERT_TRUE(sglang.Start().ok());
  sglang.SetRoute("/get_model_info", {200, "application/json",
                                      R"({"model_path": "Qwen/Qwen2-7B", "is_generation": true})"});
  EXPECT_EQ(IdentifyEngine(sglang.url(), kTimeout), v1::ENGINE_KIND_SGLANG);

  ReplayServer vllm;
  ASSERT_TRUE(vllm.Start().ok());
  vllm.SetRoute("/version", {200, "application/json", R"({"version": "0.4.3"})"});
  EXPECT_EQ(IdentifyEngine(vllm.url(), kTimeout), v1::ENGINE_KIND_VLLM);
}

TEST(IdentifyEngineTest, UnknownServerAndClosedPort) {
  ReplayServer web;
  ASSERT_TRUE(web.Start().ok());
  web.SetRoute("/metrics", {200, "text/plain",
                            "# TYPE http_requests_total counter\n"
                            "http_requests_total 5\n"});
  web.SetRoute("/version", {200, "text/html", "<html>1.0</html>"});
  EXPECT_EQ(IdentifyEngine(web.url(), kTimeout), std::nullopt);
  EXPECT_EQ(IdentifyEngine(absl::StrCat("http://127.0.0.1:", ClosedPort()), kTimeout),
            std::nullopt);
}

TEST(DiscoverEnginesTest, AddsWhatIsNotConfigured) {
  ReplayServer llama;
  ASSERT_TRUE(llama.Start().ok());
  ASSERT_TRUE(llama.EnableLlamaCpp().ok());
  auto vllm = PromEngine("vllm-0.4.3/metrics.txt");
  ReplayServer ollama;
  ASSERT_TRUE(ollama.Start().ok());
  ollama.SetRoute("/api/version", Json("ollama-0.11.6/version.json"));
  const int closed = ClosedPort();

  DiscoveryConfig d;
  d.enabled = true;
  d.ports = {llama.port(), vllm->port(), ollama.port(), closed};
  d.timeout = kTimeout;
  EngineConfig configured;
  configured.name = "main";
  configured.kind = v1::ENGINE_KIND_LLAMACPP;
  configured.url = absl::StrCat("http://localhost:", llama.port(), "/");  // same host:port
  std::vector<EngineConfig> found = DiscoverEngines(d, {configured});
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].name, absl::StrCat("vllm-", vllm->port()));
  EXPECT_EQ(found[0].kind, v1::ENGINE_KIND_VLLM);
  EXPECT_EQ(found[0].url, vllm->url());
  EXPECT_TRUE(found[0].discovered);
  EXPECT_EQ(found[1].name, absl::StrCat("ollama-", ollama.port()));
  EXPECT_EQ(found[1].kind, v1::ENGINE_KIND_OLLAMA);
  EXPECT_EQ(llama.hits("/metrics"), 0);  // a configured endpoint is not probed
}

TEST(DiscoverEnginesTest, DiscoveredKindWithoutCollectorIsSkipped) {
  AgentConfig config;
  EngineConfig llama;
  llama.name = "llamacpp-8080";
  llama.kind = v1::ENGINE_KIND_LLAMACPP;
  llama.discovered = true;
  EngineConfig ollama;
  ollama.name = "ollama-11434";
  ollama.kind = v1::ENGINE_KIND_OLLAMA;
  ollama.url = "http://127.0.0.1:11434";
  ollama.discovered = true;
  config.engines = {llama, ollama};
  std::vector<std::unique_ptr<EngineCollector>> collectors = MakeEngineCollectors(config);
  // Ollama gets a collector once one exists for its kind; until then only llama.cpp is read.
  ASSERT_GE(collectors.size(), 1u);
  EXPECT_EQ(collectors[0]->engine_id(), "llamacpp-8080");
}

}  // namespace
}  // namespace fleetwes::agent
