#include "agent/discovery.h"

#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/collectors/http_client.h"
#include "common/logging.h"

namespace fleetwes::agent {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxProbeBodyBytes = 1 << 20;

// The JSON object of a 200 answer, or nullopt.
std::optional<json> JsonObject(const absl::StatusOr<HttpResponse>& r) {
  if (!r.ok() || r->status != 200) return std::nullopt;
  json j = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

bool HasString(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() && !it->get_ref<const std::string&>().empty();
}

// A metric name with this prefix at the start of a line (sample or # TYPE / # HELP comment).
bool HasMetricPrefix(const std::string& body, absl::string_view prefix) {
  size_t pos = 0;
  while ((pos = body.find(prefix.data(), pos, prefix.size())) != std::string::npos) {
    if (pos == 0 || body[pos - 1] == '\n' || body[pos - 1] == ' ') return true;
    pos += prefix.size();
  }
  return false;
}

// "host:port" of a configured engine URL, with loopback names folded together and the
// scheme's default port filled in; "" when the URL does not parse.
std::string Endpoint(const std::string& url) {
  absl::StatusOr<ParsedUrl> parsed = ParseEngineUrl(url);
  if (!parsed.ok()) return "";
  absl::string_view base = parsed->base;
  const bool https = absl::StartsWith(base, "https://");
  base.remove_prefix(https ? 8 : 7);
  std::string host;
  std::string port = https ? "443" : "80";
  if (absl::StartsWith(base, "[")) {
    const size_t close = base.find(']');
    host = std::string(base.substr(1, close - 1));
    if (close + 1 < base.size()) port = std::string(base.substr(close + 2));
  } else {
    const size_t colon = base.rfind(':');
    host = std::string(base.substr(0, colon));
    if (colon != absl::string_view::npos) port = std::string(base.substr(colon + 1));
  }
  host = absl::AsciiStrToLower(host);
  if (host == "localhost" || host == "::1" || absl::StartsWith(host, "127.") || host == "0.0.0.0") {
    host = "loopback";
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace

std::optional<v1::EngineKind> IdentifyEngine(const std::string& url, absl::Duration timeout) {
  HttpClient http(url, kMaxProbeBodyBytes);
  absl::StatusOr<HttpResponse> metrics = http.Get("/metrics", timeout);
  if (!metrics.ok() && absl::IsUnavailable(metrics.status()) &&
      absl::StrContains(metrics.status().message(), "refused")) {
    return std::nullopt;  // nothing listens
  }
  if (metrics.ok() && metrics->status == 200) {
    if (HasMetricPrefix(metrics->body, "vllm:")) return v1::ENGINE_KIND_VLLM;
    if (HasMetricPrefix(metrics->body, "sglang:")) return v1::ENGINE_KIND_SGLANG;
    if (HasMetricPrefix(metrics->body, "llamacpp:")) return v1::ENGINE_KIND_LLAMACPP;
  }
  if (std::optional<json> j = JsonObject(http.Get("/api/version", timeout));
      j.has_value() && HasString(*j, "version")) {
    return v1::ENGINE_KIND_OLLAMA;
  }
  if (std::optional<json> j = JsonObject(http.Get("/get_model_info", timeout));
      j.has_value() && HasString(*j, "model_path")) {
    return v1::ENGINE_KIND_SGLANG;
  }
  if (std::optional<json> j = JsonObject(http.Get("/props", timeout));
      j.has_value() && (HasString(*j, "model_path") || j->contains("total_slots"))) {
    return v1::ENGINE_KIND_LLAMACPP;
  }
  if (std::optional<json> j = JsonObject(http.Get("/version", timeout));
      j.has_value() && HasString(*j, "version")) {
    return v1::ENGINE_KIND_VLLM;
  }
  return std::nullopt;
}

std::vector<EngineConfig> DiscoverEngines(const DiscoveryConfig& options,
                                          const std::vector<EngineConfig>& configured,
                                          const absl::Notification* stop) {
  auto log = Logger("discovery");
  std::set<std::string> known;
  std::set<std::string> names;
  for (const EngineConfig& e : configured) {
    known.insert(Endpoint(e.url));
    names.insert(e.name);
  }
  std::vector<EngineConfig> found;
  for (int port : options.ports) {
    if (stop != nullptr && stop->HasBeenNotified()) break;
    const std::string url = absl::StrCat("http://127.0.0.1:", port);
    if (known.count(Endpoint(url)) > 0) continue;
    std::optional<v1::EngineKind> kind = IdentifyEngine(url, options.timeout);
    if (!kind.has_value()) {
      log->debug("127.0.0.1:{}: no engine identified", port);
      continue;
    }
    EngineConfig e;
    e.name = absl::StrCat(EngineKindName(*kind), "-", port);
    e.kind = *kind;
    e.url = url;
    e.discovered = true;
    if (!names.insert(e.name).second) {
      log->warn("{} found at {}, but an engine of that name is configured; skipped", e.name, url);
      continue;
    }
    known.insert(Endpoint(url));
    log->info("discovered {} at {}", EngineKindName(*kind), url);
    found.push_back(std::move(e));
  }
  return found;
}

}  // namespace fleetwes::agent
