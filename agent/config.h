// fleetwes-agent configuration: typed, parsed once from YAML (deploy/agent.example.yaml
// documents every key). Parsing is strict: unknown keys and out-of-range values are errors that
// name the key path and its line. Plain values; thread-compatible.
#ifndef FLEETWES_AGENT_CONFIG_H_
#define FLEETWES_AGENT_CONFIG_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/wes.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

// Ollama only: the opt-in transparent proxy (agent/ollama_proxy.h). Off without a `proxy:` key.
struct OllamaProxyConfig {
  bool enabled = false;  // true when the engine has a `proxy:` section
  // Default "127.0.0.1:11435"; "host:port" or "[v6addr]:port" to listen on (port 0: any).
  std::string listen = "127.0.0.1:11435";
  // Default 64 MiB; 1 KiB..4 GiB. Larger request bodies are answered 413.
  int64_t max_request_bytes = int64_t{64} << 20;
};

// Ollama only: the opt-in synthetic probe (agent/ollama_probe.h).
struct OllamaProbeConfig {
  bool enabled = false;  // default false
  // Default "": the first resident model of /api/ps (no probe while none is resident). A name
  // is probed even when it must be loaded first.
  std::string model;
  // Default 10m; 1m..24h. At most one probe per interval.
  absl::Duration interval = absl::Minutes(10);
  // Default "Reply with one word: ok"; 1..512 bytes.
  std::string prompt = "Reply with one word: ok";
  // Default 8; 1..128. num_predict of the probe request.
  int64_t max_tokens = 8;
};

// One inference engine the agent scrapes.
struct EngineConfig {
  // Required; unique among engines; 1..64 chars of [A-Za-z0-9._-]. Becomes EngineStatus.engine_id.
  std::string name;
  // Required: "llamacpp", "vllm", "sglang" or "ollama".
  v1::EngineKind kind = v1::ENGINE_KIND_LLAMACPP;
  // Default: the engine's own default port on loopback (DefaultEngineUrl: llamacpp 8080,
  // vllm 8000, sglang 30000, ollama 11434); http:// or https://, host, optional port, optional path
  // prefix that is prepended to every endpoint (e.g. behind a reverse proxy).
  std::string url = "http://127.0.0.1:8080";
  // Default 1s; 50ms..60s. Bounds one whole scrape of the engine (all its requests).
  absl::Duration timeout = absl::Seconds(1);
  // Not a config key: true for engines found by discovery (agent/discovery.h).
  bool discovered = false;
  // Keys `proxy:` and `probe:`, accepted for kind ollama only.
  OllamaProxyConfig proxy;
  OllamaProbeConfig probe;
};

struct HardwareConfig {
  // Default "/"; an absolute directory that prefixes /sys and /proc (tests point it at a fake
  // tree).
  std::string root = "/";
  // Default true: read NVIDIA GPUs through NVML when the library is present (a host without it
  // simply has no NVIDIA devices).
  bool nvml = true;
  // Default "": dlopen libnvidia-ml.so.1, then libnvidia-ml.so. A path overrides both.
  std::string nvml_library;
};

// The durable spool (agent/spool.h). On by default: unacknowledged frames wait on disk unless
// the config says `spool: {enabled: false}` (then in memory only, lost when the agent stops).
struct SpoolConfig {
  // Default true.
  bool enabled = true;
  // Default "/var/lib/fleetwes/spool"; an absolute directory, created when missing.
  std::string dir = "/var/lib/fleetwes/spool";
  // Default 256 MiB; kMinMaxBytes (4 KiB)..1 TiB. Oldest segments are evicted (and counted)
  // beyond it. Below 1 MiB the spool holds only a handful of frames: meant for tests.
  int64_t max_bytes = int64_t{256} << 20;
  static constexpr int64_t kMinMaxBytes = 4096;
  // Default 200ms; 1ms..500ms. Group fsync delay after the first unsynced frame (the most a
  // machine crash can lose).
  absl::Duration fsync_interval = absl::Milliseconds(200);
};

// The local HTTP surface (agent/local_http.h).
struct HttpConfig {
  // Default "127.0.0.1:7472"; "host:port" or "[v6addr]:port" to listen on; "" turns it off.
  std::string listen = "127.0.0.1:7472";
};

// Engine discovery on loopback (agent/discovery.h). Off by default.
struct DiscoveryConfig {
  bool enabled = false;  // default false
  // Default [8080, 8000, 30000, 11434]; 1..16 ports, each 1..65535, probed on 127.0.0.1.
  std::vector<int> ports = {8080, 8000, 30000, 11434};
  // Default 5m; 30s..24h. Probing is repeated at this period after the start.
  absl::Duration interval = absl::Minutes(5);
  // Default 300ms; 50ms..5s. Bounds each probe request.
  absl::Duration timeout = absl::Milliseconds(300);
};

struct AgentConfig {
  // Default: the host name. 1..128 chars of [A-Za-z0-9._:-].
  std::string node_id;
  // Default empty; at most 64 entries, keys 1..64 chars of [A-Za-z0-9._/-], values <= 128 chars.
  std::map<std::string, std::string> labels;
  // Default ["localhost:7470"]; "host:port" or "[v6addr]:port", tried in order on failure.
  std::vector<std::string> aggregators = {"localhost:7470"};
  // Default 2s; 0.5s..60s. The sampler's cadence (one frame per interval).
  absl::Duration interval = absl::Seconds(2);
  // Default 30s (or `interval` when that is longer); interval..10m. The slowest cadence while
  // the node is idle: the interval doubles up to it, so a frame still goes out at least this
  // often (docs/agent.md, "Cadence").
  absl::Duration max_interval = absl::Seconds(30);
  // Default 1.0; 1.0..3.0. Power usage effectiveness folded into every WES.
  double pue = 1.0;
  // Defaults 1.0 / 1.25 / 1.75 / 2.0; each 1.0..10, non-decreasing from normal to critical.
  ThermalPenalties thermal_penalties;
  // Default none. At most 64.
  std::vector<EngineConfig> engines;
  HardwareConfig hardware;
  SpoolConfig spool;
  HttpConfig http;
  DiscoveryConfig discovery;
  // Default "info"; one of trace, debug, info, warn, error, off.
  std::string log_level = "info";
};

// Parses and validates a config document. InvalidArgument naming the key path and line.
absl::StatusOr<AgentConfig> ParseConfig(std::string_view yaml_text);
// Same from a file; NotFound when the file does not exist.
absl::StatusOr<AgentConfig> LoadConfig(const std::string& path);

// The kinds the config accepts today, for messages ("llamacpp, vllm, sglang, ollama").
std::string SupportedEngineKinds();
// "http://127.0.0.1:<the engine's default port>".
std::string DefaultEngineUrl(v1::EngineKind kind);
// "llamacpp", "vllm", "ollama", "sglang" ("unspecified").
std::string EngineKindName(v1::EngineKind kind);

// Splits "http[s]://host[:port][/prefix]" into the client base ("http://host:port") and the
// path prefix without a trailing slash ("" or "/prefix"). InvalidArgument when malformed.
struct ParsedUrl {
  std::string base;
  std::string path_prefix;
};
absl::StatusOr<ParsedUrl> ParseEngineUrl(std::string_view url);
// Engines run on the node and the agent speaks plain HTTP to them: an engine URL with https://
// is rejected (engines[].url) with this message.
inline constexpr std::string_view kPlainHttpOnly =
    "https:// is not supported: the agent speaks plain HTTP to the engines on its node; use "
    "http://";

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_CONFIG_H_
