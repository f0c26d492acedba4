// Fuzz target for the llama-server body parsers (agent/collectors/llamacpp.*): every input goes
// through the /metrics, /props, /v1/models and /slots parsers. Aborts when a result breaks its
// contract (finite non-negative values, KV use at most 1, non-empty names, bounded slots).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "agent/collectors/llamacpp.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckValue(const std::optional<double>& v) {
  if (v.has_value()) Check(std::isfinite(*v) && *v >= 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace llamacpp = fleetwes::agent::llamacpp;
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  fleetwes::agent::ModelReading m;
  if (llamacpp::ParseMetrics(body, &m).ok()) {
    Check(m.decode_tokens_total.has_value());
    for (const auto& v :
         {m.decode_tokens_total, m.prefill_tokens_total, m.decode_seconds_total,
          m.prefill_seconds_total, m.requests_running, m.requests_waiting, m.kv_cache_usage}) {
      CheckValue(v);
    }
    if (m.kv_cache_usage.has_value()) Check(*m.kv_cache_usage <= 1.0);
  }

  absl::StatusOr<llamacpp::Props> props = llamacpp::ParseProps(body);
  if (props.ok()) {
    Check(!props->model.empty());
    Check(props->model.find('/') == std::string::npos);
    if (props->total_slots.has_value()) {
      Check(*props->total_slots > 0 && *props->total_slots <= 65536);
    }
    Check(props->build.size() <= 64);
  }

  absl::StatusOr<std::string> model = llamacpp::ParseModelsList(body);
  if (model.ok()) Check(!model->empty());

  absl::StatusOr<std::vector<fleetwes::agent::SlotReading>> slots = llamacpp::ParseSlots(body);
  if (slots.ok()) Check(slots->size() <= 65536);
  return 0;
}
