#include "agent/ollama_probe.h"

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/http/http.h"
#include "common/logging.h"

namespace fleetwes::agent {
namespace {

// Resident models and their keep-alive deadlines; nullopt when /api/ps cannot be read.
std::optional<std::map<std::string, std::string>> Resident(HttpClient& http,
                                                           std::vector<std::string>* order) {
  absl::StatusOr<HttpResponse> r = http.Get("/api/ps", absl::Seconds(5));
  if (!r.ok() || r->status != 200) return std::nullopt;
  absl::StatusOr<std::vector<ollama::PsModel>> models = ollama::ParsePs(r->body);
  if (!models.ok()) return std::nullopt;
  std::map<std::string, std::string> out;
  for (const ollama::PsModel& m : *models) {
    out[m.name] = m.expires_at;
    if (order != nullptr) order->push_back(m.name);
  }
  return out;
}

}  // namespace

OllamaProbe::OllamaProbe(OllamaProbeOptions options, const OllamaTraffic* proxy, Clock* clock)
    : options_(std::move(options)), proxy_(proxy), clock_(clock), http_(options_.engine_url) {}

OllamaProbe::~OllamaProbe() { Stop(); }

void OllamaProbe::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void OllamaProbe::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void OllamaProbe::Loop() {
  absl::Time next = clock_->Now() + options_.config.interval;
  absl::Time last_probe = absl::InfinitePast();
  while (!clock_->WaitUntil(next, &stop_)) {
    const Result r = RunOnce();
    const absl::Time now = clock_->Now();
    if (r == Result::kProbed) last_probe = now;
    next = r == Result::kBusy
               ? std::max(now + options_.busy_retry, last_probe + options_.config.interval)
               : now + options_.config.interval;
  }
}

OllamaProbe::Result OllamaProbe::RunOnce() {
  auto busy = [this] {
    if (proxy_ == nullptr || proxy_->in_flight() == 0) return false;
    ++skipped_busy_;
    return true;
  };
  if (busy()) return Result::kBusy;
  std::vector<std::string> order;
  std::optional<std::map<std::string, std::string>> before = Resident(http_, nullptr);
  if (!before.has_value()) {
    ++failures_;
    return Result::kFailed;
  }
  if (clock_->WaitFor(options_.settle, &stop_)) return Result::kFailed;
  if (busy()) return Result::kBusy;
  std::optional<std::map<std::string, std::string>> after = Resident(http_, &order);
  if (!after.has_value()) {
    ++failures_;
    return Result::kFailed;
  }
  for (const auto& [name, expires] : *after) {
    auto it = before->find(name);
    if (it != before->end() && it->second != expires) {
      ++skipped_busy_;
      return Result::kBusy;
    }
  }
  std::string model = options_.config.model;
  if (model.empty()) {
    if (order.empty()) return Result::kNoModel;
    model = order.front();
  }

  absl::StatusOr<ParsedUrl> url = ParseEngineUrl(options_.engine_url);
  if (!url.ok()) {
    ++failures_;
    return Result::kFailed;
  }
  if (!absl::StartsWith(url->base, "http://")) {
    ++failures_;
    return Result::kFailed;
  }
  http::Client::Options client_options;
  client_options.keep_alive = false;
  http::Client client(url->base, client_options);
  http::Timeouts timeouts;
  timeouts.connect = absl::Seconds(5);
  timeouts.idle = options_.request_timeout;
  const nlohmann::json body = {{"model", model},
                               {"prompt", options_.config.prompt},
                               {"stream", true},
                               {"options", {{"num_predict", options_.config.max_tokens}}}};
  http::Request req;
  req.method = "POST";
  req.target = url->path_prefix + "/api/generate";
  req.headers.emplace_back("Accept-Encoding", "identity");
  req.headers.emplace_back("Content-Type", "application/json");
  req.body = body.dump();
  std::optional<ollama::ResponseMeter> meter;
  int status = 0;
  auto on_headers = [&meter, &status](int s, const http::Headers&) {
    status = s;
    if (s == 200) meter.emplace(/*ndjson=*/true);
    return true;
  };
  auto on_body = [this, &meter](const char* data, size_t n) {
    if (meter.has_value()) meter->Feed(std::string_view(data, n), clock_->Now());
    return !stop_.HasBeenNotified();
  };
  const absl::Time start = clock_->Now();
  traffic_.Begin(model);
  const http::Result result = client.Send(req, timeouts, on_headers, on_body);
  const bool ok = result.ok();
  ollama::ResponseOutcome outcome;
  if (meter.has_value()) outcome = meter->Finish(clock_->Now());
  if (!ok) outcome.final.reset();
  traffic_.End(model, outcome, start);
  if (!outcome.final.has_value()) {
    ++failures_;
    Logger("agent")->warn("ollama probe of {} at {} failed: {}", model, options_.engine_url,
                          ok ? absl::StrCat("HTTP ", status) : result.message);
    return Result::kFailed;
  }
  ++probes_;
  return Result::kProbed;
}

}  // namespace fleetwes::agent
