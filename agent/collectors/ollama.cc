#include "agent/collectors/ollama.h"

#include <cmath>
#include <initializer_list>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fleetwes::agent {
namespace {

// Bucket bounds (seconds) of the traffic histograms; +Inf is appended.
constexpr std::initializer_list<double> kTtftBounds = {0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                       2.5,   5,    10,  20,   40,  80};
constexpr std::initializer_list<double> kTpotBounds = {0.0025, 0.005, 0.01, 0.015, 0.02, 0.03,
                                                       0.05,   0.075, 0.1,  0.2,   0.5,  1};
constexpr std::initializer_list<double> kE2eBounds = {0.25, 0.5, 1,  2.5, 5,   10,
                                                      20,   40,  80, 160, 320, 640};

prom::Histogram EmptyHistogram(std::initializer_list<double> bounds) {
  prom::Histogram h;
  for (double le : bounds) h.buckets.emplace_back(le, 0);
  h.buckets.emplace_back(std::numeric_limits<double>::infinity(), 0);
  return h;
}

void Observe(double v, prom::Histogram* h) {
  if (!std::isfinite(v) || v < 0) return;
  for (auto& [le, count] : h->buckets) {
    if (v <= le) ++count;
  }
  h->sum += v;
  ++h->count;
}

OllamaModelTraffic EmptyTraffic() {
  OllamaModelTraffic t;
  t.ttft = EmptyHistogram(kTtftBounds);
  t.tpot = EmptyHistogram(kTpotBounds);
  t.e2e = EmptyHistogram(kE2eBounds);
  return t;
}

}  // namespace

OllamaTraffic::OllamaTraffic() : empty_(EmptyTraffic()) {}

OllamaModelTraffic OllamaTraffic::Zero() { return EmptyTraffic(); }

void OllamaTraffic::Begin(const std::string& model) {
  absl::MutexLock lock(&mu_);
  ++in_flight_;
  if (model.empty()) return;
  auto [it, inserted] = models_.try_emplace(ollama::NormalizeModel(model), empty_);
  ++it->second.running;
}

void OllamaTraffic::End(const std::string& model, const ollama::ResponseOutcome& outcome,
                        absl::Time start) {
  absl::MutexLock lock(&mu_);
  if (in_flight_ > 0) --in_flight_;
  if (!model.empty()) {
    auto it = models_.find(ollama::NormalizeModel(model));
    if (it != models_.end() && it->second.running > 0) --it->second.running;
  }
  if (!outcome.final.has_value() || outcome.error) {
    ++failed_;
    return;
  }
  ++completed_;
  const ollama::FinalObject& f = *outcome.final;
  const std::string name = ollama::NormalizeModel(f.model.empty() ? model : f.model);
  if (name.empty()) return;
  OllamaModelTraffic& t = models_.try_emplace(name, empty_).first->second;
  ++t.requests;
  if (f.eval_count) t.decode_tokens += static_cast<double>(*f.eval_count);
  if (f.prompt_eval_count) t.prefill_tokens += static_cast<double>(*f.prompt_eval_count);
  if (f.eval_duration_ns) t.decode_seconds += static_cast<double>(*f.eval_duration_ns) / 1e9;
  if (f.prompt_eval_duration_ns) {
    t.prefill_seconds += static_cast<double>(*f.prompt_eval_duration_ns) / 1e9;
  }
  if (f.eval_count && *f.eval_count > 0 && f.eval_duration_ns) {
    Observe(static_cast<double>(*f.eval_duration_ns) / 1e9 / static_cast<double>(*f.eval_count),
            &t.tpot);
  }
  if (f.total_duration_ns) Observe(static_cast<double>(*f.total_duration_ns) / 1e9, &t.e2e);
  if (outcome.first_output.has_value() && *outcome.first_output >= start) {
    Observe(absl::ToDoubleSeconds(*outcome.first_output - start), &t.ttft);
  }
}

std::map<std::string, OllamaModelTraffic> OllamaTraffic::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return models_;
}

uint64_t OllamaTraffic::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

uint64_t OllamaTraffic::completed() const {
  absl::MutexLock lock(&mu_);
  return completed_;
}

uint64_t OllamaTraffic::failed() const {
  absl::MutexLock lock(&mu_);
  return failed_;
}

void FillFromTraffic(const OllamaModelTraffic& t, ModelReading* out) {
  out->decode_tokens_total = t.decode_tokens;
  out->prefill_tokens_total = t.prefill_tokens;
  out->decode_seconds_total = t.decode_seconds;
  out->prefill_seconds_total = t.prefill_seconds;
  out->requests_running = static_cast<double>(t.running);
  out->ttft_histogram = t.ttft;
  out->tpot_histogram = t.tpot;
  out->e2e_histogram = t.e2e;
}

OllamaCollector::OllamaCollector(EngineConfig config, const OllamaTraffic* traffic,
                                 const OllamaTraffic* synthetic)
    : config_(std::move(config)), traffic_(traffic), synthetic_(synthetic), http_(config_.url) {}

OllamaCollector::~OllamaCollector() {
  // Stop the services (in reverse order of adoption) before anything they point to.
  while (!owned_.empty()) owned_.pop_back();
}

EngineReading OllamaCollector::Unavailable(std::string reason) {
  ++failed_reads_;
  EngineReading r;
  r.available = false;
  r.unavailable_reason = std::move(reason);
  return r;
}

EngineReading OllamaCollector::Read() {
  RequestBudget budget(config_.timeout);
  if (version_.empty()) {
    absl::StatusOr<HttpResponse> v = http_.Get("/api/version", budget.Remaining());
    if (!v.ok()) return Unavailable(absl::StrCat("GET /api/version: ", v.status().message()));
    if (v->status != 200) return Unavailable(absl::StrCat("GET /api/version: HTTP ", v->status));
    absl::StatusOr<std::string> parsed = ollama::ParseVersion(v->body);
    if (!parsed.ok()) {
      return Unavailable(absl::StrCat("GET /api/version: ", parsed.status().message()));
    }
    version_ = *std::move(parsed);
  }
  absl::StatusOr<HttpResponse> ps = http_.Get("/api/ps", budget.Remaining());
  if (!ps.ok()) return Unavailable(absl::StrCat("GET /api/ps: ", ps.status().message()));
  if (ps->status != 200) return Unavailable(absl::StrCat("GET /api/ps: HTTP ", ps->status));
  absl::StatusOr<std::vector<ollama::PsModel>> models = ollama::ParsePs(ps->body);
  if (!models.ok()) return Unavailable(absl::StrCat("GET /api/ps: ", models.status().message()));

  std::map<std::string, OllamaModelTraffic> real;
  std::map<std::string, OllamaModelTraffic> probe;
  if (traffic_ != nullptr) real = traffic_->Snapshot();
  if (synthetic_ != nullptr) probe = synthetic_->Snapshot();

  EngineReading reading;
  reading.available = true;
  reading.version = version_;
  for (const ollama::PsModel& p : *models) {
    ModelReading& m = reading.models.emplace_back();
    m.model = p.name;
    if (p.size_vram.has_value()) m.vram_bytes = *p.size_vram;
    m.cpu_offload = p.cpu_offload();
    if (traffic_ == nullptr) continue;
    auto it = real.find(ollama::NormalizeModel(p.name));
    if (it != real.end()) {
      FillFromTraffic(it->second, &m);
    } else {
      // Resident but no request seen yet: counters start at 0 so the first request is counted.
      FillFromTraffic(OllamaTraffic::Zero(), &m);
    }
  }
  for (const ollama::PsModel& p : *models) {
    auto it = probe.find(ollama::NormalizeModel(p.name));
    if (it == probe.end()) continue;
    ModelReading& m = reading.models.emplace_back();
    m.model = p.name;
    m.synthetic = true;
    if (p.size_vram.has_value()) m.vram_bytes = *p.size_vram;
    m.cpu_offload = p.cpu_offload();
    FillFromTraffic(it->second, &m);
  }
  return reading;
}

}  // namespace fleetwes::agent
