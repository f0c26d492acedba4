#include "agent/collectors/llamacpp.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/prom_text.h"

namespace fleetwes::agent {
namespace llamacpp {
namespace {

using nlohmann::json;

std::string Basename(std::string_view path) {
  while (!path.empty() && (path.back() == '/' || path.back() == '\\')) path.remove_suffix(1);
  size_t slash = path.find_last_of("/\\");
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

// nullopt for absent metrics; absent also when the engine printed a value no counter or gauge
// can have (NaN, infinite, negative), so it is never mistaken for a reading.
std::optional<double> Metric(const prom::Exposition& e, std::string_view name) {
  std::optional<double> v = e.Sum(name);
  if (!v.has_value() || !std::isfinite(*v) || *v < 0) return std::nullopt;
  return v;
}

std::optional<json> ParseJson(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

}  // namespace

absl::Status ParseMetrics(std::string_view body, ModelReading* out) {
  absl::StatusOr<prom::Exposition> e = prom::Parse(body);
  if (!e.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not Prometheus text (", e.status().message(), ")"));
  }
  std::optional<double> decode = e->Sum("llamacpp:tokens_predicted_total");
  if (!decode.has_value()) {
    return absl::InvalidArgumentError("no llamacpp:tokens_predicted_total");
  }
  if (!std::isfinite(*decode) || *decode < 0) {
    return absl::InvalidArgumentError(absl::StrCat("llamacpp:tokens_predicted_total is ", *decode));
  }
  out->decode_tokens_total = decode;
  out->prefill_tokens_total = Metric(*e, "llamacpp:prompt_tokens_total");
  out->decode_seconds_total = Metric(*e, "llamacpp:tokens_predicted_seconds_total");
  out->prefill_seconds_total = Metric(*e, "llamacpp:prompt_seconds_total");
  out->requests_running = Metric(*e, "llamacpp:requests_processing");
  out->requests_waiting = Metric(*e, "llamacpp:requests_deferred");
  out->kv_cache_usage = Metric(*e, "llamacpp:kv_cache_usage_ratio");
  if (out->kv_cache_usage.has_value() && *out->kv_cache_usage > 1.0) {
    out->kv_cache_usage.reset();
  }
  return absl::OkStatus();
}

absl::StatusOr<Props> ParseProps(std::string_view body) {
  std::optional<json> j = ParseJson(body);
  if (!j.has_value() || !j->is_object()) return absl::InvalidArgumentError("not a JSON object");
  Props props;
  auto path = j->find("model_path");
  if (path == j->end() || !path->is_string() || path->get_ref<const std::string&>().empty()) {
    return absl::InvalidArgumentError("no model_path");
  }
  props.model = Basename(path->get_ref<const std::string&>());
  if (props.model.empty()) return absl::InvalidArgumentError("empty model_path");
  auto slots = j->find("total_slots");
  if (slots != j->end() && slots->is_number_unsigned()) {
    uint64_t n = slots->get<uint64_t>();
    if (n > 0 && n <= 65536) props.total_slots = static_cast<uint32_t>(n);
  }
  auto build = j->find("build_info");
  if (build != j->end() && build->is_string()) {
    props.build = build->get<std::string>().substr(0, 64);
  }
  return props;
}

absl::StatusOr<std::string> ParseModelsList(std::string_view body) {
  std::optional<json> j = ParseJson(body);
  if (!j.has_value() || !j->is_object()) return absl::InvalidArgumentError("not a JSON object");
  auto data = j->find("data");
  if (data == j->end() || !data->is_array() || data->empty() || !(*data)[0].is_object()) {
    return absl::InvalidArgumentError("no models listed");
  }
  auto id = (*data)[0].find("id");
  if (id == (*data)[0].end() || !id->is_string()) {
    return absl::InvalidArgumentError("model without id");
  }
  std::string model = Basename(id->get_ref<const std::string&>());
  if (model.empty()) return absl::InvalidArgumentError("empty model id");
  return model;
}

absl::StatusOr<std::vector<SlotReading>> ParseSlots(std::string_view body) {
  std::optional<json> j = ParseJson(body);
  if (!j.has_value() || !j->is_array()) return absl::InvalidArgumentError("not a JSON array");
  if (j->size() > 65536) return absl::InvalidArgumentError("too many slots");
  std::vector<SlotReading> slots;
  slots.reserve(j->size());
  for (const json& s : *j) {
    if (!s.is_object()) return absl::InvalidArgumentError("slot is not an object");
    SlotReading slot;
    auto id = s.find("id");
    if (id == s.end() || !id->is_number_integer()) {
      return absl::InvalidArgumentError("slot without id");
    }
    slot.id = id->get<int64_t>();
    auto task = s.find("id_task");
    if (task != s.end() && task->is_number_integer()) slot.task_id = task->get<int64_t>();
    auto processing = s.find("is_processing");
    if (processing != s.end() && processing->is_boolean())
      slot.processing = processing->get<bool>();
    slots.push_back(slot);
  }
  return slots;
}

}  // namespace llamacpp

LlamaCppCollector::LlamaCppCollector(EngineConfig config)
    : config_(std::move(config)), http_(config_.url) {}

EngineReading LlamaCppCollector::Unavailable(std::string reason) {
  ++failed_reads_;
  EngineReading r;
  r.available = false;
  r.unavailable_reason = std::move(reason);
  return r;
}

EngineReading LlamaCppCollector::Read() {
  RequestBudget budget(config_.timeout);
  auto get = [&](std::string_view path) { return http_.Get(path, budget.Remaining()); };

  // Health first: a loading server answers 503 and has nothing else worth reading.
  absl::StatusOr<HttpResponse> health = get("/health");
  if (!health.ok()) return Unavailable(absl::StrCat("GET /health: ", health.status().message()));
  if (health->status == 503) return Unavailable("loading model");
  if (health->status != 200) {
    return Unavailable(absl::StrCat("GET /health: HTTP ", health->status));
  }

  absl::StatusOr<HttpResponse> metrics = get("/metrics");
  if (!metrics.ok()) {
    return Unavailable(absl::StrCat("GET /metrics: ", metrics.status().message()));
  }
  if (metrics->status == 501) {
    return Unavailable("GET /metrics: HTTP 501 (llama-server runs without --metrics)");
  }
  if (metrics->status != 200) {
    return Unavailable(absl::StrCat("GET /metrics: HTTP ", metrics->status));
  }
  ModelReading model;
  if (absl::Status s = llamacpp::ParseMetrics(metrics->body, &model); !s.ok()) {
    return Unavailable(absl::StrCat("GET /metrics: ", s.message()));
  }

  EngineReading reading;
  absl::StatusOr<HttpResponse> props = get("/props");
  std::string props_error;
  if (props.ok() && props->status == 200) {
    absl::StatusOr<llamacpp::Props> parsed = llamacpp::ParseProps(props->body);
    if (parsed.ok()) {
      model.model = parsed->model;
      model.slots_total = parsed->total_slots;
      reading.version = parsed->build;
    } else {
      props_error = absl::StrCat("GET /props: ", parsed.status().message());
    }
  } else {
    props_error = absl::StrCat("GET /props: ", props.ok() ? absl::StrCat("HTTP ", props->status)
                                                          : props.status().message());
  }
  if (model.model.empty()) {
    ++optional_endpoint_errors_;
    absl::StatusOr<HttpResponse> models = get("/v1/models");
    if (!models.ok() || models->status != 200) {
      return Unavailable(absl::StrCat(
          "model name unknown (", props_error, "; GET /v1/models: ",
          models.ok() ? absl::StrCat("HTTP ", models->status) : models.status().message(), ")"));
    }
    absl::StatusOr<std::string> name = llamacpp::ParseModelsList(models->body);
    if (!name.ok()) {
      return Unavailable(absl::StrCat("model name unknown (", props_error,
                                      "; GET /v1/models: ", name.status().message(), ")"));
    }
    model.model = *name;
  }

  // Slots are optional (llama-server --no-slots answers 501); only states are read.
  absl::StatusOr<HttpResponse> slots = get("/slots");
  if (slots.ok() && slots->status == 200) {
    absl::StatusOr<std::vector<SlotReading>> parsed = llamacpp::ParseSlots(slots->body);
    if (parsed.ok()) {
      model.slots = *std::move(parsed);
      if (!model.slots_total.has_value() && !model.slots.empty()) {
        model.slots_total = static_cast<uint32_t>(model.slots.size());
      }
    } else {
      ++optional_endpoint_errors_;
    }
  } else {
    ++optional_endpoint_errors_;
  }

  reading.available = true;
  reading.models.push_back(std::move(model));
  return reading;
}

}  // namespace fleetwes::agent
