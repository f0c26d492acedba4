#include "agent/config.h"

#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::agent {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string HostName() {
  char buf[256] = {};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

// The error message of parsing `yaml`; fails the test when it parses.
std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<AgentConfig> c = ParseConfig(yaml);
  EXPECT_FALSE(c.ok()) << "parsed unexpectedly:\n" << yaml;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(ConfigTest, EmptyDocumentGivesDefaults) {
  absl::StatusOr<AgentConfig> c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node_id, HostName());
  EXPECT_TRUE(c->labels.empty());
  EXPECT_THAT(c->aggregators, ::testing::ElementsAre("localhost:7470"));
  EXPECT_EQ(c->interval, absl::Seconds(2));
  EXPECT_EQ(c->max_interval, absl::Seconds(30));
  EXPECT_EQ(c->pue, 1.0);
  EXPECT_EQ(c->thermal_penalties.normal, 1.0);
  EXPECT_EQ(c->thermal_penalties.fair, 1.25);
  EXPECT_EQ(c->thermal_penalties.serious, 1.75);
  EXPECT_EQ(c->thermal_penalties.critical, 2.0);
  EXPECT_TRUE(c->engines.empty());
  EXPECT_EQ(c->hardware.root, "/");
  EXPECT_EQ(c->log_level, "info");
}

TEST(ConfigTest, MaxInterval) {
  absl::StatusOr<AgentConfig> c = ParseConfig("interval: 1s\nmax_interval: 2m\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_interval, absl::Minutes(2));
  c = ParseConfig("interval: 45s\n");  // the default never undercuts the interval
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_interval, absl::Seconds(45));
  EXPECT_THAT(ParseConfig("interval: 5s\nmax_interval: 4s\n").status().message(),
              AllOf(HasSubstr("max_interval"), HasSubstr("line 2"), HasSubstr("interval (5s)")));
  EXPECT_FALSE(ParseConfig("max_interval: 11m\n").ok());
}

TEST(ConfigTest, FullDocument) {
  absl::StatusOr<AgentConfig> c = ParseConfig(R"(
node_id: edge-7.lab
labels: {site: berlin, rack: r12}
aggregators: ["agg-1:7470", "10.0.0.2:7470", "[::1]:9000"]
interval: 500ms
pue: 1.4
thermal_penalties: {normal: 1.0, fair: 1.5, serious: 2, critical: 3}
engines:
  - name: llama-a
    kind: llamacpp
  - name: llama-b
    kind: llamacpp
    url: http://10.1.2.3:8081/llm/
    timeout: 250ms
hardware:
  root: /tmp/fake
log_level: debug
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node_id, "edge-7.lab");
  EXPECT_EQ(c->labels.at("site"), "berlin");
  EXPECT_EQ(c->labels.at("rack"), "r12");
  EXPECT_THAT(c->aggregators, ::testing::ElementsAre("agg-1:7470", "10.0.0.2:7470", "[::1]:9000"));
  EXPECT_EQ(c->interval, absl::Milliseconds(500));
  EXPECT_DOUBLE_EQ(c->pue, 1.4);
  EXPECT_EQ(c->thermal_penalties.fair, 1.5);
  EXPECT_EQ(c->thermal_penalties.critical, 3.0);
  ASSERT_EQ(c->engines.size(), 2u);
  EXPECT_EQ(c->engines[0].name, "llama-a");
  EXPECT_EQ(c->engines[0].kind, v1::ENGINE_KIND_LLAMACPP);
  EXPECT_EQ(c->engines[0].url, "http://127.0.0.1:8080");
  EXPECT_EQ(c->engines[0].timeout, absl::Seconds(1));
  EXPECT_EQ(c->engines[1].url, "http://10.1.2.3:8081/llm/");
  EXPECT_EQ(c->engines[1].timeout, absl::Milliseconds(250));
  EXPECT_EQ(c->hardware.root, "/tmp/fake");
  EXPECT_EQ(c->log_level, "debug");
}

TEST(ConfigTest, UnknownKeysNameTheirPathAndLine) {
  EXPECT_THAT(ErrorOf("node_id: a\nintervall: 2s\n"),
              AllOf(HasSubstr("intervall"), HasSubstr("line 2"), HasSubstr("interval")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n    kind: llamacpp\n    timout: 1s\n"),
              AllOf(HasSubstr("timout"), HasSubstr("engines[0]"), HasSubstr("line 4")));
  EXPECT_THAT(ErrorOf("hardware:\n  rooot: /x\n"),
              AllOf(HasSubstr("rooot"), HasSubstr("hardware"), HasSubstr("line 2")));
  EXPECT_THAT(ErrorOf("thermal_penalties:\n  normal: 1\n  hot: 2\n"),
              AllOf(HasSubstr("hot"), HasSubstr("thermal_penalties"), HasSubstr("line 3")));
}

TEST(ConfigTest, VllmAndSglangWithTheirDefaultPorts) {
  absl::StatusOr<AgentConfig> c = ParseConfig(
      "engines:\n  - name: v\n    kind: vllm\n  - name: s\n    kind: sglang\n"
      "  - name: l\n    kind: llamacpp\n  - name: w\n    kind: vllm\n    url: http://h:9\n");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->engines.size(), 4u);
  EXPECT_EQ(c->engines[0].kind, v1::ENGINE_KIND_VLLM);
  EXPECT_EQ(c->engines[0].url, "http://127.0.0.1:8000");
  EXPECT_EQ(c->engines[1].kind, v1::ENGINE_KIND_SGLANG);
  EXPECT_EQ(c->engines[1].url, "http://127.0.0.1:30000");
  EXPECT_EQ(c->engines[2].url, "http://127.0.0.1:8080");
  EXPECT_EQ(c->engines[3].url, "http://h:9");
}

TEST(ConfigTest, EngineKinds) {
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n    kind: tgi\n"),
              HasSubstr("llamacpp, vllm, sglang, ollama"));
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n    kind: tgi\n"),
              AllOf(HasSubstr("unknown engine kind"), HasSubstr("llamacpp"), HasSubstr("line 3")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n"),
              AllOf(HasSubstr("engines[0].kind"), HasSubstr("required")));
}

TEST(ConfigTest, OllamaDefaultsProxyAndProbe) {
  auto c = ParseConfig("engines:\n  - name: o\n    kind: ollama\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->engines[0].kind, v1::ENGINE_KIND_OLLAMA);
  EXPECT_EQ(c->engines[0].url, "http://127.0.0.1:11434");
  EXPECT_FALSE(c->engines[0].proxy.enabled);
  EXPECT_FALSE(c->engines[0].probe.enabled);
  EXPECT_EQ(c->engines[0].probe.interval, absl::Minutes(10));

  c = ParseConfig(
      "engines:\n  - name: o\n    kind: ollama\n    proxy: {}\n"
      "    probe: {enabled: true, model: \"llama3.2:1b\", interval: 2m, max_tokens: 4}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->engines[0].proxy.enabled);
  EXPECT_EQ(c->engines[0].proxy.listen, "127.0.0.1:11435");
  EXPECT_EQ(c->engines[0].proxy.max_request_bytes, int64_t{64} << 20);
  EXPECT_TRUE(c->engines[0].probe.enabled);
  EXPECT_EQ(c->engines[0].probe.model, "llama3.2:1b");
  EXPECT_EQ(c->engines[0].probe.interval, absl::Minutes(2));
  EXPECT_EQ(c->engines[0].probe.max_tokens, 4);

  EXPECT_THAT(ErrorOf("engines:\n  - name: v\n    kind: vllm\n    proxy: {}\n"),
              AllOf(HasSubstr("engines[0].proxy"), HasSubstr("only accepted for kind ollama")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: o\n    kind: ollama\n    proxy: {listen: nope}\n"),
              AllOf(HasSubstr("engines[0].proxy.listen"), HasSubstr("host:port")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: o\n    kind: ollama\n    probe: {interval: 30s}\n"),
              AllOf(HasSubstr("engines[0].probe.interval"), HasSubstr("between 1m and 24h")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: o\n    kind: ollama\n    probe: {color: red}\n"),
              HasSubstr("color"));
}

TEST(ConfigTest, EngineNames) {
  EXPECT_THAT(ErrorOf("engines:\n  - kind: llamacpp\n"),
              AllOf(HasSubstr("engines[0].name"), HasSubstr("required"), HasSubstr("line 2")));
  EXPECT_THAT(
      ErrorOf("engines:\n  - name: a\n    kind: llamacpp\n  - name: a\n    kind: llamacpp\n"),
      AllOf(HasSubstr("engines[1].name"), HasSubstr("duplicate"), HasSubstr("line 4")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: 'a b'\n    kind: llamacpp\n"),
              AllOf(HasSubstr("engines[0].name"), HasSubstr("line 2")));
}

TEST(ConfigTest, EngineUrlAndTimeout) {
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n    kind: llamacpp\n    url: ftp://x\n"),
              AllOf(HasSubstr("engines[0].url"), HasSubstr("line 4"), HasSubstr("http://")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n    kind: llamacpp\n    url: http://h:99999\n"),
              HasSubstr("engines[0].url"));
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n    kind: vllm\n    url: https://h:8000\n"),
              AllOf(HasSubstr("engines[0].url"), HasSubstr("https:// is not supported"),
                    HasSubstr("plain HTTP")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n    kind: llamacpp\n    timeout: 10ms\n"),
              AllOf(HasSubstr("engines[0].timeout"), HasSubstr("line 4"), HasSubstr("50ms")));
  EXPECT_THAT(ErrorOf("engines:\n  - name: a\n    kind: llamacpp\n    timeout: soon\n"),
              AllOf(HasSubstr("engines[0].timeout"), HasSubstr("line 4")));
}

TEST(ConfigTest, RangesNameKeyAndLine) {
  EXPECT_THAT(ErrorOf("node_id: a\ninterval: 100ms\n"),
              AllOf(HasSubstr("interval"), HasSubstr("line 2"), HasSubstr("0.5s")));
  EXPECT_THAT(ErrorOf("interval: 61s\n"), AllOf(HasSubstr("interval"), HasSubstr("line 1")));
  EXPECT_THAT(ErrorOf("\npue: 0.9\n"),
              AllOf(HasSubstr("pue"), HasSubstr("line 2"), HasSubstr("1.0 and 3.0")));
  EXPECT_THAT(ErrorOf("pue: .nan\n"), HasSubstr("pue"));
  EXPECT_THAT(ErrorOf("pue: fast\n"), AllOf(HasSubstr("pue"), HasSubstr("line 1")));
  EXPECT_THAT(ErrorOf("thermal_penalties:\n  fair: 0.5\n"),
              AllOf(HasSubstr("thermal_penalties.fair"), HasSubstr("line 2")));
  EXPECT_THAT(ErrorOf("thermal_penalties:\n  serious: 1.1\n"),
              AllOf(HasSubstr("thermal_penalties.serious"), HasSubstr("milder")));
  EXPECT_THAT(ErrorOf("log_level: loud\n"),
              AllOf(HasSubstr("log_level"), HasSubstr("line 1"), HasSubstr("debug")));
  EXPECT_THAT(ErrorOf("hardware:\n  root: relative/dir\n"),
              AllOf(HasSubstr("hardware.root"), HasSubstr("line 2"), HasSubstr("absolute")));
}

TEST(ConfigTest, IdentityAndAddresses) {
  EXPECT_THAT(ErrorOf("node_id: 'bad id'\n"), AllOf(HasSubstr("node_id"), HasSubstr("line 1")));
  EXPECT_THAT(ErrorOf(absl::StrCat("node_id: ", std::string(129, 'n'), "\n")),
              HasSubstr("node_id"));
  EXPECT_THAT(ErrorOf("\naggregators: [\"nohostport\"]\n"),
              AllOf(HasSubstr("aggregators"), HasSubstr("line 2"), HasSubstr("host:port")));
  EXPECT_THAT(ErrorOf("aggregators: []\n"), HasSubstr("aggregators"));
  EXPECT_THAT(ErrorOf("aggregators: \"a:1\"\n"), HasSubstr("aggregators"));
  EXPECT_THAT(ErrorOf("labels: {'bad key': x}\n"), AllOf(HasSubstr("labels"), HasSubstr("line 1")));
  EXPECT_THAT(ErrorOf("labels: [a, b]\n"), AllOf(HasSubstr("labels"), HasSubstr("line 1")));
}

TEST(ConfigTest, SyntaxErrorHasALine) {
  EXPECT_THAT(ErrorOf("node_id: a\nengines: [\n"), HasSubstr("line"));
}

TEST(ConfigTest, ParseEngineUrl) {
  absl::StatusOr<ParsedUrl> u = ParseEngineUrl("http://127.0.0.1:8080");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->base, "http://127.0.0.1:8080");
  EXPECT_EQ(u->path_prefix, "");
  u = ParseEngineUrl("https://llm.example/prefix/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->base, "https://llm.example");
  EXPECT_EQ(u->path_prefix, "/prefix");
  u = ParseEngineUrl("http://[::1]:8080");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->base, "http://[::1]:8080");
  EXPECT_FALSE(ParseEngineUrl("http://").ok());
  EXPECT_FALSE(ParseEngineUrl("http://user@host").ok());
  EXPECT_FALSE(ParseEngineUrl("http://host:0").ok());
  EXPECT_FALSE(ParseEngineUrl("http://host/x?y").ok());
  EXPECT_FALSE(ParseEngineUrl("http://[").ok());
  EXPECT_FALSE(ParseEngineUrl("127.0.0.1:8080").ok());
}

TEST(ConfigTest, LoadConfigMissingFile) {
  absl::StatusOr<AgentConfig> c = LoadConfig("/nonexistent/dir/agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

TEST(ConfigTest, HttpAndDiscoveryDefaults) {
  absl::StatusOr<AgentConfig> c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->http.listen, "127.0.0.1:7472");
  EXPECT_FALSE(c->discovery.enabled);
  EXPECT_THAT(c->discovery.ports, ::testing::ElementsAre(8080, 8000, 30000, 11434));
  EXPECT_EQ(c->discovery.interval, absl::Minutes(5));
}

TEST(ConfigTest, HttpAndDiscoveryKeys) {
  absl::StatusOr<AgentConfig> c = ParseConfig(R"(
http: {listen: "[::1]:9100"}
discovery: {enabled: true, ports: [8000, 11434], interval: 10m, timeout: 200ms}
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->http.listen, "[::1]:9100");
  EXPECT_TRUE(c->discovery.enabled);
  EXPECT_THAT(c->discovery.ports, ::testing::ElementsAre(8000, 11434));
  EXPECT_EQ(c->discovery.interval, absl::Minutes(10));
  EXPECT_EQ(c->discovery.timeout, absl::Milliseconds(200));

  absl::StatusOr<AgentConfig> off = ParseConfig("http: {listen: \"\"}\n");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->http.listen, "");
}

TEST(ConfigTest, BadHttpAndDiscoveryKeysNameTheKey) {
  EXPECT_THAT(ErrorOf("http: {listen: \"localhost\"}\n"),
              AllOf(HasSubstr("http.listen"), HasSubstr("host:port")));
  EXPECT_THAT(ErrorOf("http: {listen: \"127.0.0.1:70000\"}\n"), HasSubstr("http.listen"));
  EXPECT_THAT(ErrorOf("http: {port: 1}\n"), HasSubstr("port"));
  EXPECT_THAT(ErrorOf("discovery: {ports: [0]}\n"), HasSubstr("discovery.ports"));
  EXPECT_THAT(ErrorOf("discovery: {ports: [http]}\n"), HasSubstr("discovery.ports"));
  EXPECT_THAT(ErrorOf("discovery: {interval: 1s}\n"), HasSubstr("discovery.interval"));
}

TEST(ConfigTest, SpoolIsOnByDefault) {
  absl::StatusOr<AgentConfig> c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->spool.enabled);
  EXPECT_EQ(c->spool.dir, "/var/lib/fleetwes/spool");
  EXPECT_EQ(c->spool.max_bytes, int64_t{256} << 20);
  EXPECT_EQ(c->spool.fsync_interval, absl::Milliseconds(200));

  c = ParseConfig("spool: {dir: /tmp/s1}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->spool.enabled);
  EXPECT_EQ(c->spool.dir, "/tmp/s1");
}

TEST(ConfigTest, SpoolCanBeTurnedOff) {
  absl::StatusOr<AgentConfig> c = ParseConfig("spool: {enabled: false}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->spool.enabled);
}

TEST(ConfigTest, SpoolKeys) {
  absl::StatusOr<AgentConfig> c = ParseConfig(
      "spool:\n  enabled: true\n  dir: /data/spool\n  max_bytes: 4096\n"
      "  fsync_interval: 500ms\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->spool.enabled);
  EXPECT_EQ(c->spool.dir, "/data/spool");
  EXPECT_EQ(c->spool.max_bytes, 4096);
  EXPECT_EQ(c->spool.fsync_interval, absl::Milliseconds(500));
}

TEST(ConfigTest, BadSpoolValues) {
  EXPECT_THAT(ErrorOf("spool: {dir: \"\"}\n"),
              AllOf(HasSubstr("spool.dir"), HasSubstr("absolute directory")));
  EXPECT_THAT(ErrorOf("spool: {dir: relative/spool}\n"),
              AllOf(HasSubstr("spool.dir"), HasSubstr("relative/spool")));
  EXPECT_THAT(ErrorOf("spool: {max_bytes: 4095}\n"),
              AllOf(HasSubstr("spool.max_bytes"), HasSubstr("4095")));
  EXPECT_THAT(ErrorOf("spool: {max_bytes: 1099511627777}\n"), HasSubstr("spool.max_bytes"));
  EXPECT_THAT(ErrorOf("spool: {fsync_interval: 501ms}\n"), HasSubstr("spool.fsync_interval"));
  EXPECT_THAT(ErrorOf("spool: {enabled: maybe}\n"), HasSubstr("spool.enabled"));
  EXPECT_THAT(ErrorOf("spool: {size: 1}\n"), HasSubstr("size"));
}

}  // namespace
}  // namespace fleetwes::agent
