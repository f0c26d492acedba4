#include "agent/config.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/yaml_config.h"

namespace fleetwes::agent {
namespace {

using config::MapReader;

constexpr size_t kMaxNodeIdLength = 128;
constexpr size_t kMaxLabels = 64;
constexpr size_t kMaxLabelKeyLength = 64;
constexpr size_t kMaxLabelValueLength = 128;
constexpr size_t kMaxEngines = 64;
constexpr size_t kMaxEngineNameLength = 64;
constexpr size_t kMaxAggregators = 16;

bool AllCharsIn(absl::string_view s, absl::string_view extra) {
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        extra.find(c) == absl::string_view::npos) {
      return false;
    }
  }
  return true;
}

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "";
  return buf;
}

// "host:port" or "[v6]:port" with a port in 1..65535.
bool ValidHostPort(absl::string_view s) {
  size_t colon;
  if (absl::StartsWith(s, "[")) {
    size_t close = s.find(']');
    if (close == absl::string_view::npos || close == 1 || close + 1 >= s.size() ||
        s[close + 1] != ':') {
      return false;
    }
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    if (colon == absl::string_view::npos || colon == 0) return false;
    absl::string_view host = s.substr(0, colon);
    if (host.find(':') != absl::string_view::npos || !AllCharsIn(host, ".-_")) return false;
  }
  absl::string_view port = s.substr(colon + 1);
  int value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  return ec == std::errc() && ptr == port.data() + port.size() && value >= 1 && value <= 65535;
}

absl::Status ParsePenalties(MapReader& root, ThermalPenalties* out) {
  auto child = root.Child("thermal_penalties");
  if (!child.ok()) return child.status();
  if (!child->has_value()) return absl::OkStatus();
  MapReader& r = **child;
  struct Field {
    const char* key;
    double* value;
  };
  const Field fields[] = {{"normal", &out->normal},
                          {"fair", &out->fair},
                          {"serious", &out->serious},
                          {"critical", &out->critical}};
  double previous = 1.0;
  for (const Field& f : fields) {
    if (absl::Status s = r.Read(f.key, f.value); !s.ok()) return s;
    if (!std::isfinite(*f.value) || *f.value < 1.0 || *f.value > 10.0) {
      return r.Error(f.key, absl::StrCat("must be between 1.0 and 10.0, got ", *f.value));
    }
    if (*f.value < previous) {
      return r.Error(f.key, absl::StrCat("must not be below the penalty of a milder state (",
                                         previous, "), got ", *f.value));
    }
    previous = *f.value;
  }
  return r.Finish();
}

// `proxy:` and `probe:` of an engine; only kind ollama has them.
absl::Status ParseOllamaKeys(MapReader& r, EngineConfig* out) {
  for (const char* key : {"proxy", "probe"}) {
    if (r.Has(key) && out->kind != v1::ENGINE_KIND_OLLAMA) {
      return r.Error(key, "is only accepted for kind ollama");
    }
  }
  auto proxy = r.Child("proxy");
  if (!proxy.ok()) return proxy.status();
  if (proxy->has_value()) {
    MapReader& p = **proxy;
    OllamaProxyConfig& c = out->proxy;
    c.enabled = true;
    if (absl::Status s = p.Read("listen", &c.listen); !s.ok()) return s;
    // Port 0 (any free port) is allowed here, unlike for aggregators.
    const std::string check = absl::EndsWith(c.listen, ":0")
                                  ? absl::StrCat(c.listen.substr(0, c.listen.size() - 1), "1")
                                  : c.listen;
    if (!ValidHostPort(check)) {
      return p.Error("listen", absl::StrCat("is not host:port (e.g. \"127.0.0.1:11435\"), got \"",
                                            c.listen, "\""));
    }
    if (absl::Status s = p.Read("max_request_bytes", &c.max_request_bytes); !s.ok()) return s;
    if (c.max_request_bytes < 1024 || c.max_request_bytes > (int64_t{4} << 30)) {
      return p.Error("max_request_bytes", "must be 1 KiB..4 GiB (1024..4294967296)");
    }
    if (absl::Status s = p.Finish(); !s.ok()) return s;
  }
  auto probe = r.Child("probe");
  if (!probe.ok()) return probe.status();
  if (probe->has_value()) {
    MapReader& p = **probe;
    OllamaProbeConfig& c = out->probe;
    if (absl::Status s = p.Read("enabled", &c.enabled); !s.ok()) return s;
    if (absl::Status s = p.Read("model", &c.model); !s.ok()) return s;
    if (c.model.size() > 256) return p.Error("model", "is longer than 256 characters");
    if (absl::Status s = p.ReadDuration("interval", &c.interval); !s.ok()) return s;
    if (c.interval < absl::Minutes(1) || c.interval > absl::Hours(24)) {
      return p.Error("interval", absl::StrCat("must be between 1m and 24h, got ",
                                              absl::FormatDuration(c.interval)));
    }
    if (absl::Status s = p.Read("prompt", &c.prompt); !s.ok()) return s;
    if (c.prompt.empty() || c.prompt.size() > 512) {
      return p.Error("prompt", "must be 1..512 bytes");
    }
    if (absl::Status s = p.Read("max_tokens", &c.max_tokens); !s.ok()) return s;
    if (c.max_tokens < 1 || c.max_tokens > 128) return p.Error("max_tokens", "must be 1..128");
    if (absl::Status s = p.Finish(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ParseEngine(MapReader& r, std::set<std::string>* names, EngineConfig* out) {
  if (!r.Has("name")) return r.Error("name", "is required");
  if (absl::Status s = r.Read("name", &out->name); !s.ok()) return s;
  if (out->name.empty() || out->name.size() > kMaxEngineNameLength ||
      !AllCharsIn(out->name, "._-")) {
    return r.Error("name", absl::StrCat("must be 1..", kMaxEngineNameLength,
                                        " characters of [A-Za-z0-9._-], got \"", out->name, "\""));
  }
  if (!names->insert(out->name).second) {
    return r.Error("name", absl::StrCat("duplicate engine name \"", out->name, "\""));
  }
  if (!r.Has("kind")) {
    return r.Error("kind", absl::StrCat("is required; supported: ", SupportedEngineKinds()));
  }
  std::string kind;
  if (absl::Status s = r.Read("kind", &kind); !s.ok()) return s;
  if (kind == "llamacpp") {
    out->kind = v1::ENGINE_KIND_LLAMACPP;
  } else if (kind == "vllm") {
    out->kind = v1::ENGINE_KIND_VLLM;
  } else if (kind == "sglang") {
    out->kind = v1::ENGINE_KIND_SGLANG;
  } else if (kind == "ollama") {
    out->kind = v1::ENGINE_KIND_OLLAMA;
  } else {
    return r.Error("kind", absl::StrCat("unknown engine kind \"", kind,
                                        "\"; supported: ", SupportedEngineKinds()));
  }
  out->url = DefaultEngineUrl(out->kind);
  if (absl::Status s = r.Read("url", &out->url); !s.ok()) return s;
  if (auto parsed = ParseEngineUrl(out->url); !parsed.ok()) {
    return r.Error("url", std::string(parsed.status().message()));
  }
  if (absl::StartsWith(out->url, "https://")) return r.Error("url", std::string(kPlainHttpOnly));
  if (absl::Status s = r.ReadDuration("timeout", &out->timeout); !s.ok()) return s;
  if (out->timeout < absl::Milliseconds(50) || out->timeout > absl::Seconds(60)) {
    return r.Error("timeout", absl::StrCat("must be between 50ms and 60s, got ",
                                           absl::FormatDuration(out->timeout)));
  }
  if (absl::Status s = ParseOllamaKeys(r, out); !s.ok()) return s;
  return r.Finish();
}

absl::Status ParseHttpAndDiscovery(MapReader& r, AgentConfig* cfg) {
  auto http = r.Child("http");
  if (!http.ok()) return http.status();
  if (http->has_value()) {
    MapReader& h = **http;
    if (absl::Status s = h.Read("listen", &cfg->http.listen); !s.ok()) return s;
    if (!cfg->http.listen.empty() && !ValidHostPort(cfg->http.listen)) {
      return h.Error("listen", absl::StrCat("\"", cfg->http.listen,
                                            "\" is not host:port (e.g. \"127.0.0.1:7472\"); \"\" "
                                            "turns the local HTTP off"));
    }
    if (absl::Status s = h.Finish(); !s.ok()) return s;
  }
  auto discovery = r.Child("discovery");
  if (!discovery.ok()) return discovery.status();
  if (discovery->has_value()) {
    MapReader& d = **discovery;
    DiscoveryConfig& out = cfg->discovery;
    if (absl::Status s = d.Read("enabled", &out.enabled); !s.ok()) return s;
    if (d.Has("ports")) {
      std::vector<std::string> ports;
      if (absl::Status s = d.Read("ports", &ports); !s.ok()) return s;
      if (ports.empty() || ports.size() > 16) return d.Error("ports", "needs 1..16 ports");
      out.ports.clear();
      for (const std::string& p : ports) {
        int value = 0;
        auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
        if (ec != std::errc() || ptr != p.data() + p.size() || value < 1 || value > 65535) {
          return d.Error("ports", absl::StrCat("\"", p, "\" is not a port (1..65535)"));
        }
        out.ports.push_back(value);
      }
    }
    if (absl::Status s = d.ReadDuration("interval", &out.interval); !s.ok()) return s;
    if (out.interval < absl::Seconds(30) || out.interval > absl::Hours(24)) {
      return d.Error("interval", absl::StrCat("must be between 30s and 24h, got ",
                                              absl::FormatDuration(out.interval)));
    }
    if (absl::Status s = d.ReadDuration("timeout", &out.timeout); !s.ok()) return s;
    if (out.timeout < absl::Milliseconds(50) || out.timeout > absl::Seconds(5)) {
      return d.Error("timeout", absl::StrCat("must be between 50ms and 5s, got ",
                                             absl::FormatDuration(out.timeout)));
    }
    if (absl::Status s = d.Finish(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<AgentConfig> ParseRoot(YAML::Node node) {
  AgentConfig cfg;
  MapReader r(std::move(node), "");

  cfg.node_id = Hostname();
  bool node_id_given = r.Has("node_id");
  if (absl::Status s = r.Read("node_id", &cfg.node_id); !s.ok()) return s;
  if (cfg.node_id.empty() || cfg.node_id.size() > kMaxNodeIdLength ||
      !AllCharsIn(cfg.node_id, "._:-")) {
    return r.Error("node_id",
                   absl::StrCat(node_id_given ? "" : "(default: the host name) ", "must be 1..",
                                kMaxNodeIdLength, " characters of [A-Za-z0-9._:-], got \"",
                                cfg.node_id, "\""));
  }

  if (absl::Status s = r.Read("labels", &cfg.labels); !s.ok()) return s;
  if (cfg.labels.size() > kMaxLabels) {
    return r.Error("labels",
                   absl::StrCat("at most ", kMaxLabels, " labels, got ", cfg.labels.size()));
  }
  for (const auto& [key, value] : cfg.labels) {
    if (key.empty() || key.size() > kMaxLabelKeyLength || !AllCharsIn(key, "._/-")) {
      return r.Error("labels", absl::StrCat("label key \"", key, "\" must be 1..",
                                            kMaxLabelKeyLength, " characters of [A-Za-z0-9._/-]"));
    }
    if (value.size() > kMaxLabelValueLength) {
      return r.Error("labels", absl::StrCat("value of label \"", key, "\" is longer than ",
                                            kMaxLabelValueLength, " characters"));
    }
  }

  if (absl::Status s = r.Read("aggregators", &cfg.aggregators); !s.ok()) return s;
  if (cfg.aggregators.empty() || cfg.aggregators.size() > kMaxAggregators) {
    return r.Error("aggregators", absl::StrCat("needs 1..", kMaxAggregators, " addresses"));
  }
  for (size_t i = 0; i < cfg.aggregators.size(); ++i) {
    if (!ValidHostPort(cfg.aggregators[i])) {
      return r.Error("aggregators",
                     absl::StrCat("entry ", i, " \"", cfg.aggregators[i],
                                  "\" is not host:port (e.g. \"agg-1.example:7470\")"));
    }
  }

  if (absl::Status s = r.ReadDuration("interval", &cfg.interval); !s.ok()) return s;
  if (cfg.interval < absl::Milliseconds(500) || cfg.interval > absl::Seconds(60)) {
    return r.Error("interval", absl::StrCat("must be between 0.5s and 60s, got ",
                                            absl::FormatDuration(cfg.interval)));
  }
  const bool max_interval_given = r.Has("max_interval");
  if (absl::Status s = r.ReadDuration("max_interval", &cfg.max_interval); !s.ok()) return s;
  if (!max_interval_given) cfg.max_interval = std::max(cfg.max_interval, cfg.interval);
  if (cfg.max_interval < cfg.interval || cfg.max_interval > absl::Minutes(10)) {
    return r.Error("max_interval",
                   absl::StrCat("must be between interval (", absl::FormatDuration(cfg.interval),
                                ") and 10m, got ", absl::FormatDuration(cfg.max_interval)));
  }

  if (absl::Status s = r.Read("pue", &cfg.pue); !s.ok()) return s;
  if (!std::isfinite(cfg.pue) || cfg.pue < 1.0 || cfg.pue > 3.0) {
    return r.Error("pue", absl::StrCat("must be between 1.0 and 3.0, got ", cfg.pue));
  }

  if (absl::Status s = ParsePenalties(r, &cfg.thermal_penalties); !s.ok()) return s;

  auto engines = r.ChildList("engines");
  if (!engines.ok()) return engines.status();
  if (engines->size() > kMaxEngines) {
    return r.Error("engines", absl::StrCat("at most ", kMaxEngines, " engines"));
  }
  std::set<std::string> names;
  for (MapReader& e : *engines) {
    EngineConfig engine;
    if (absl::Status s = ParseEngine(e, &names, &engine); !s.ok()) return s;
    cfg.engines.push_back(std::move(engine));
  }

  auto hardware = r.Child("hardware");
  if (!hardware.ok()) return hardware.status();
  if (hardware->has_value()) {
    MapReader& h = **hardware;
    if (absl::Status s = h.Read("root", &cfg.hardware.root); !s.ok()) return s;
    if (!absl::StartsWith(cfg.hardware.root, "/")) {
      return h.Error(
          "root", absl::StrCat("must be an absolute directory, got \"", cfg.hardware.root, "\""));
    }
    if (absl::Status s = h.Read("nvml", &cfg.hardware.nvml); !s.ok()) return s;
    if (absl::Status s = h.Read("nvml_library", &cfg.hardware.nvml_library); !s.ok()) return s;
    if (cfg.hardware.nvml_library.size() > 4096) {
      return h.Error("nvml_library", "is longer than 4096 characters");
    }
    if (absl::Status s = h.Finish(); !s.ok()) return s;
  }

  auto spool = r.Child("spool");
  if (!spool.ok()) return spool.status();
  if (spool->has_value()) {
    MapReader& sp = **spool;
    if (absl::Status s = sp.Read("enabled", &cfg.spool.enabled); !s.ok()) return s;
    if (absl::Status s = sp.Read("dir", &cfg.spool.dir); !s.ok()) return s;
    if (!absl::StartsWith(cfg.spool.dir, "/")) {
      return sp.Error("dir",
                      absl::StrCat("must be an absolute directory, got \"", cfg.spool.dir, "\""));
    }
    if (absl::Status s = sp.Read("max_bytes", &cfg.spool.max_bytes); !s.ok()) return s;
    if (cfg.spool.max_bytes < SpoolConfig::kMinMaxBytes ||
        cfg.spool.max_bytes > (int64_t{1} << 40)) {
      return sp.Error("max_bytes", absl::StrCat("must be 4 KiB..1 TiB (", SpoolConfig::kMinMaxBytes,
                                                "..1099511627776), got ", cfg.spool.max_bytes));
    }
    if (absl::Status s = sp.ReadDuration("fsync_interval", &cfg.spool.fsync_interval); !s.ok()) {
      return s;
    }
    if (cfg.spool.fsync_interval < absl::Milliseconds(1) ||
        cfg.spool.fsync_interval > absl::Milliseconds(500)) {
      return sp.Error("fsync_interval", "must be 1ms..500ms");
    }
    if (absl::Status s = sp.Finish(); !s.ok()) return s;
  }

  if (absl::Status s = ParseHttpAndDiscovery(r, &cfg); !s.ok()) return s;

  if (absl::Status s = r.ReadEnum("log_level", {"trace", "debug", "info", "warn", "error", "off"},
                                  &cfg.log_level);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  return cfg;
}

}  // namespace

std::string SupportedEngineKinds() { return "llamacpp, vllm, sglang, ollama"; }

std::string DefaultEngineUrl(v1::EngineKind kind) {
  switch (kind) {
    case v1::ENGINE_KIND_VLLM:
      return "http://127.0.0.1:8000";
    case v1::ENGINE_KIND_SGLANG:
      return "http://127.0.0.1:30000";
    case v1::ENGINE_KIND_OLLAMA:
      return "http://127.0.0.1:11434";
    default:
      return "http://127.0.0.1:8080";
  }
}

std::string EngineKindName(v1::EngineKind kind) {
  switch (kind) {
    case v1::ENGINE_KIND_VLLM:
      return "vllm";
    case v1::ENGINE_KIND_LLAMACPP:
      return "llamacpp";
    case v1::ENGINE_KIND_OLLAMA:
      return "ollama";
    case v1::ENGINE_KIND_SGLANG:
      return "sglang";
    default:
      return "unspecified";
  }
}

absl::StatusOr<ParsedUrl> ParseEngineUrl(std::string_view url_in) {
  absl::string_view url(url_in.data(), url_in.size());
  absl::string_view rest;
  absl::string_view scheme;
  if (absl::StartsWith(url, "http://")) {
    scheme = "http://";
  } else if (absl::StartsWith(url, "https://")) {
    scheme = "https://";
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("must start with http:// or https://, got \"", url, "\""));
  }
  rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  absl::string_view path = slash == absl::string_view::npos ? "" : rest.substr(slash);
  while (absl::EndsWith(path, "/")) path.remove_suffix(1);
  if (authority.empty() || authority.find('@') != absl::string_view::npos ||
      path.find_first_of("?#") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected http[s]://host[:port][/prefix], got \"", url, "\""));
  }
  bool valid;
  if (absl::StartsWith(authority, "[")) {
    valid = authority.find("]:") != absl::string_view::npos
                ? ValidHostPort(authority)
                : authority.size() > 2 && absl::EndsWith(authority, "]") &&
                      AllCharsIn(authority.substr(1, authority.size() - 2), ":.");
  } else {
    valid = authority.find(':') != absl::string_view::npos ? ValidHostPort(authority)
                                                           : AllCharsIn(authority, ".-_");
  }
  if (!valid) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected http[s]://host[:port][/prefix], got \"", url, "\""));
  }
  return ParsedUrl{absl::StrCat(scheme, authority), std::string(path)};
}

absl::StatusOr<AgentConfig> ParseConfig(std::string_view yaml_text) {
  auto node = config::LoadString(yaml_text);
  if (!node.ok()) return node.status();
  return ParseRoot(*std::move(node));
}

absl::StatusOr<AgentConfig> LoadConfig(const std::string& path) {
  auto node = config::LoadFile(path);
  if (!node.ok()) return node.status();
  return ParseRoot(*std::move(node));
}

}  // namespace fleetwes::agent
