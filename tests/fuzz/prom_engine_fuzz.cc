// Fuzz target for the Prometheus-exposing engine parsers (agent/collectors/prom_engine.*): the
// same body goes through the vLLM and the SGLang alias tables. Aborts when a reading breaks the
// contract of ParsePromEngineMetrics: only finite, non-negative values, a KV use of at most 1,
// histograms with ascending bounds ending at +Inf, counts that never decrease.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string_view>

#include "agent/collectors/prom_engine.h"
#include "agent/collectors/sglang.h"
#include "agent/collectors/vllm.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckValue(const std::optional<double>& v) {
  if (v.has_value()) Check(std::isfinite(*v) && *v >= 0);
}

void CheckHistogram(const std::optional<fleetwes::prom::Histogram>& h) {
  if (!h.has_value()) return;
  Check(!h->buckets.empty());
  Check(h->buckets.back().first == std::numeric_limits<double>::infinity());
  for (size_t i = 1; i < h->buckets.size(); ++i) {
    Check(h->buckets[i - 1].first < h->buckets[i].first);
  }
}

void CheckReadings(const absl::StatusOr<std::vector<fleetwes::agent::ModelReading>>& readings) {
  if (!readings.ok()) {
    Check(readings.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  Check(!readings->empty());
  for (const fleetwes::agent::ModelReading& m : *readings) {
    Check(m.decode_tokens_total.has_value());
    for (const auto& v : {m.decode_tokens_total, m.prefill_tokens_total, m.decode_seconds_total,
                          m.prefill_seconds_total, m.requests_running, m.requests_waiting,
                          m.kv_cache_usage, m.prefix_cache_queries_total, m.prefix_cache_hits_total,
                          m.preemptions_total, m.requests_waiting_capacity}) {
      CheckValue(v);
    }
    if (m.kv_cache_usage.has_value()) Check(*m.kv_cache_usage <= 1.0);
    for (const auto& h : {m.ttft_histogram, m.tpot_histogram, m.e2e_histogram, m.queue_histogram}) {
      CheckHistogram(h);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  fleetwes::agent::DetectedNames detected;
  CheckReadings(fleetwes::agent::vllm::ParseMetrics(body, &detected));
  CheckReadings(fleetwes::agent::sglang::ParseMetrics(body, &detected));
  return 0;
}
