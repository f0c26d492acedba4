#include "agent/collectors/prom_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/prom_text.h"

namespace fleetwes::agent {
namespace {

constexpr std::string_view kModelLabel = "model_name";
constexpr size_t kMaxModels = 64;
constexpr size_t kMaxModelNameBytes = 256;

absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool Usable(double v) { return std::isfinite(v) && v >= 0; }

bool SampleOfModel(const prom::Sample& s, const std::string& model) {
  const std::string* m = s.Label(kModelLabel);
  if (model.empty()) return true;
  return m != nullptr && *m == model;
}

// The first alias the exposition has samples for (histograms: `<name>_count`); "" when none.
std::string Detect(const prom::Exposition& e, const Aliases& aliases, bool histogram = false) {
  for (std::string_view name : aliases) {
    if (e.Has(histogram ? absl::StrCat(Av(name), "_count") : std::string(name))) {
      return std::string(name);
    }
  }
  return "";
}

// Sum (or mean) over the model's samples named `name`; nullopt when none or any is unusable.
std::optional<double> Aggregate(const prom::Exposition& e, const std::string& name,
                                const std::string& model, bool mean, std::string_view reason = {}) {
  if (name.empty()) return std::nullopt;
  double total = 0;
  int n = 0;
  for (const prom::Sample* s : e.Find(name)) {
    if (!SampleOfModel(*s, model)) continue;
    if (!reason.empty()) {
      const std::string* r = s->Label("reason");
      if (r == nullptr || *r != reason) continue;
    }
    if (!Usable(s->value)) return std::nullopt;
    total += s->value;
    ++n;
  }
  if (n == 0) return std::nullopt;
  return mean ? total / n : total;
}

std::optional<prom::Histogram> Histogram(const prom::Exposition& e, const std::string& name,
                                         const std::string& model) {
  if (name.empty()) return std::nullopt;
  prom::Labels match;
  if (!model.empty()) match.emplace_back(std::string(kModelLabel), model);
  std::optional<prom::Histogram> h = prom::ExtractHistogram(e, name, match);
  if (!h.has_value() || h->buckets.empty() || !Usable(h->sum) || !Usable(h->count)) {
    return std::nullopt;
  }
  for (const auto& [le, count] : h->buckets) {
    if (std::isnan(le) || !Usable(count)) return std::nullopt;
  }
  return h;
}

std::string Basename(std::string_view path) {
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.find_last_of('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

}  // namespace

PromFamilyFilter::PromFamilyFilter(const PromEngineSpec& spec) {
  for (const Aliases* scalar :
       {&spec.decode_tokens, &spec.prefill_tokens, &spec.requests_running, &spec.requests_waiting,
        &spec.waiting_by_reason, &spec.kv_cache_usage, &spec.prefix_cache_queries,
        &spec.prefix_cache_hits, &spec.preemptions}) {
    for (std::string_view name : *scalar) names_.emplace_back(name);
  }
  for (const Aliases* histogram : {&spec.ttft, &spec.tpot, &spec.e2e, &spec.queue}) {
    for (std::string_view name : *histogram) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        names_.push_back(absl::StrCat(Av(name), suffix));
      }
    }
  }
  std::sort(names_.begin(), names_.end());
  names_.erase(std::unique(names_.begin(), names_.end()), names_.end());
}

bool PromFamilyFilter::Reads(std::string_view name) const {
  return std::binary_search(names_.begin(), names_.end(), name, std::less<>());
}

bool PromFamilyFilter::ReadsFamily(std::string_view name) const {
  // Names that start with `name` sort from its lower bound on.
  auto it = std::lower_bound(names_.begin(), names_.end(), name, std::less<>());
  return it != names_.end() && std::string_view(*it).substr(0, name.size()) == name;
}

bool PromFamilyFilter::Keep(std::string_view line) const {
  // The parser's own rules for where a name starts and ends (common/prom_text.cc).
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  auto name_start = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
  };
  auto skip_blanks = [&](std::string_view& s) {
    while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  };
  auto take_name = [&](std::string_view& s) -> std::string_view {
    if (s.empty() || !name_start(s.front())) return {};
    size_t n = 1;
    while (n < s.size() && (name_start(s[n]) || (s[n] >= '0' && s[n] <= '9'))) ++n;
    std::string_view name = s.substr(0, n);
    s.remove_prefix(n);
    return name;
  };
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  while (!line.empty() && blank(line.back())) line.remove_suffix(1);
  skip_blanks(line);
  if (line.empty()) return false;
  if (line.front() == '#') {
    line.remove_prefix(1);
    skip_blanks(line);
    size_t n = 0;
    while (n < line.size() && !blank(line[n])) ++n;
    const std::string_view keyword = line.substr(0, n);
    if (keyword != "HELP" && keyword != "TYPE") return false;  // a plain comment
    line.remove_prefix(n);
    skip_blanks(line);
    const std::string_view name = take_name(line);
    if (name.empty() || (!line.empty() && !blank(line.front()))) return true;  // the parser's error
    return ReadsFamily(name);
  }
  const std::string_view name = take_name(line);
  // Without a name, a value, or a blank or '{' after the name: the parser's error.
  if (name.empty() || line.empty() || (!blank(line.front()) && line.front() != '{')) return true;
  return Reads(name);
}

void PromFamilyFilter::Apply(std::string* text) const {
  std::string& s = *text;
  size_t out = 0;  // never past pos: lines only move towards the front
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find('\n', pos);
    const bool newline = end != std::string::npos;
    if (!newline) end = s.size();
    if (Keep(std::string_view(s).substr(pos, end - pos))) {
      if (out != pos) std::memmove(s.data() + out, s.data() + pos, end - pos);
      out += end - pos;
    }
    if (newline) s[out++] = '\n';
    pos = end + 1;
  }
  s.resize(out);
}

namespace {

// Filters `text` in place, parses what is kept and reads the spec's values from it.
absl::StatusOr<std::vector<ModelReading>> ParseKept(const PromEngineSpec& spec,
                                                    const PromFamilyFilter& filter,
                                                    std::string* text, DetectedNames* detected) {
  filter.Apply(text);
  absl::StatusOr<prom::Exposition> parsed = prom::Parse(*text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not Prometheus text (", parsed.status().message(), ")"));
  }
  return ReadPromEngineExposition(spec, *parsed, detected);
}

}  // namespace

absl::StatusOr<std::vector<ModelReading>> ParsePromEngineMetrics(const PromEngineSpec& spec,
                                                                 std::string_view body,
                                                                 DetectedNames* detected,
                                                                 const PromFamilyFilter* filter) {
  std::optional<PromFamilyFilter> own;
  if (filter == nullptr) filter = &own.emplace(spec);
  std::string text(body);
  return ParseKept(spec, *filter, &text, detected);
}

absl::StatusOr<std::vector<ModelReading>> ReadPromEngineExposition(const PromEngineSpec& spec,
                                                                   const prom::Exposition& e,
                                                                   DetectedNames* detected) {
  DetectedNames names;
  names.decode_tokens = Detect(e, spec.decode_tokens);
  if (names.decode_tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no ",
        absl::StrJoin(
            spec.decode_tokens, " or ",
            [](std::string* out, std::string_view n) { out->append(n.data(), n.size()); }),
        Av(spec.hint_no_tokens)));
  }
  names.prefill_tokens = Detect(e, spec.prefill_tokens);
  names.ttft = Detect(e, spec.ttft, /*histogram=*/true);
  names.tpot = Detect(e, spec.tpot, /*histogram=*/true);
  names.e2e = Detect(e, spec.e2e, /*histogram=*/true);
  names.queue = Detect(e, spec.queue, /*histogram=*/true);
  names.requests_running = Detect(e, spec.requests_running);
  names.requests_waiting = Detect(e, spec.requests_waiting);
  names.waiting_by_reason = Detect(e, spec.waiting_by_reason);
  names.kv_cache_usage = Detect(e, spec.kv_cache_usage);
  names.prefix_cache_queries = Detect(e, spec.prefix_cache_queries);
  names.prefix_cache_hits = Detect(e, spec.prefix_cache_hits);
  names.preemptions = Detect(e, spec.preemptions);

  // Models: the model_name values of the decode counter, in order.
  std::vector<std::string> models;
  for (const prom::Sample* s : e.Find(names.decode_tokens)) {
    const std::string* m = s->Label(kModelLabel);
    std::string model = m == nullptr ? "" : *m;
    if (model.size() > kMaxModelNameBytes) {
      return absl::InvalidArgumentError("model_name longer than 256 bytes");
    }
    bool seen = false;
    for (const std::string& x : models) seen = seen || x == model;
    if (!seen) models.push_back(std::move(model));
  }
  if (models.size() > kMaxModels) {
    return absl::InvalidArgumentError(absl::StrCat("more than ", kMaxModels, " models"));
  }
  // A mix of labelled and unlabelled series cannot be split per model.
  if (models.size() > 1) {
    for (const std::string& m : models) {
      if (m.empty()) return absl::InvalidArgumentError("series with and without model_name");
    }
  }

  std::vector<ModelReading> out;
  for (const std::string& model : models) {
    ModelReading r;
    r.model = model;
    r.decode_tokens_total = Aggregate(e, names.decode_tokens, model, false);
    if (!r.decode_tokens_total.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(names.decode_tokens, " of model \"", model, "\" is not a count"));
    }
    r.prefill_tokens_total = Aggregate(e, names.prefill_tokens, model, false);
    r.ttft_histogram = Histogram(e, names.ttft, model);
    r.tpot_histogram = Histogram(e, names.tpot, model);
    r.e2e_histogram = Histogram(e, names.e2e, model);
    r.queue_histogram = Histogram(e, names.queue, model);
    r.requests_running = Aggregate(e, names.requests_running, model, false);
    r.requests_waiting = Aggregate(e, names.requests_waiting, model, false);
    r.requests_waiting_capacity =
        Aggregate(e, names.waiting_by_reason, model, false, /*reason=*/"capacity");
    r.kv_cache_usage = Aggregate(e, names.kv_cache_usage, model, /*mean=*/true);
    if (r.kv_cache_usage.has_value() && *r.kv_cache_usage > 1.0) r.kv_cache_usage.reset();
    r.prefix_cache_queries_total = Aggregate(e, names.prefix_cache_queries, model, false);
    r.prefix_cache_hits_total = Aggregate(e, names.prefix_cache_hits, model, false);
    r.preemptions_total = Aggregate(e, names.preemptions, model, false);
    out.push_back(std::move(r));
  }
  if (detected != nullptr) *detected = std::move(names);
  return out;
}

PromEngineCollector::PromEngineCollector(EngineConfig config, v1::EngineKind kind,
                                         PromEngineSpec spec)
    : config_(std::move(config)),
      kind_(kind),
      spec_(std::move(spec)),
      filter_(spec_),
      http_(config_.url) {}

EngineReading PromEngineCollector::Unavailable(std::string reason) {
  ++failed_reads_;
  EngineReading r;
  r.available = false;
  r.unavailable_reason = std::move(reason);
  r.version = version_;
  return r;
}

EngineReading PromEngineCollector::Read() {
  RequestBudget budget(config_.timeout);
  absl::StatusOr<HttpResponse> metrics = http_.Get("/metrics", budget.Remaining());
  if (!metrics.ok()) {
    return Unavailable(absl::StrCat("GET /metrics: ", metrics.status().message()));
  }
  if (metrics->status != 200) {
    return Unavailable(absl::StrCat("GET /metrics: HTTP ", metrics->status,
                                    metrics->status == 404 ? Av(spec_.hint_metrics_404) : ""));
  }
  DetectedNames names;
  // The body is filtered where it lies: no copy of the exposition.
  absl::StatusOr<std::vector<ModelReading>> models =
      ParseKept(spec_, filter_, &metrics->body, &names);
  if (!models.ok()) return Unavailable(absl::StrCat("GET /metrics: ", models.status().message()));

  // Without a model_name label, the first model the server lists names the series.
  if (models->size() == 1 && (*models)[0].model.empty()) {
    absl::StatusOr<HttpResponse> list = http_.Get("/v1/models", budget.Remaining());
    std::string name;
    if (list.ok() && list->status == 200) {
      nlohmann::json j = nlohmann::json::parse(list->body, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
          j["data"][0].is_object() && j["data"][0].contains("id") &&
          j["data"][0]["id"].is_string()) {
        name = Basename(j["data"][0]["id"].get<std::string>()).substr(0, kMaxModelNameBytes);
      }
    }
    if (name.empty()) return Unavailable("model name unknown (no model_name label, no /v1/models)");
    (*models)[0].model = std::move(name);
  }

  if (version_.empty() && !spec_.version_path.empty() &&
      version_reads_++ % kVersionRetryReads == 0) {
    absl::StatusOr<HttpResponse> v = http_.Get(spec_.version_path, budget.Remaining());
    if (v.ok() && v->status == 200) {
      nlohmann::json j = nlohmann::json::parse(v->body, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("version") && j["version"].is_string()) {
        version_ = j["version"].get<std::string>().substr(0, 64);
      }
    }
  }

  detected_ = std::move(names);
  EngineReading reading;
  reading.available = true;
  reading.version = version_;
  reading.models = *std::move(models);
  return reading;
}

}  // namespace fleetwes::agent
