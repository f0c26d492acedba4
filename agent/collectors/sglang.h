// Collector for SGLang (started with --enable-metrics): GET /metrics, prefix "sglang:", labels
// model_name and tp_rank (aggregated). The alias table in sglang.cc covers older builds
// (time_per_output_token_seconds) and newer ones (inter_token_latency_seconds,
// queue_time_seconds, cached_tokens_total). Not thread-safe: one Read() at a time.
#ifndef FLEETWES_AGENT_COLLECTORS_SGLANG_H_
#define FLEETWES_AGENT_COLLECTORS_SGLANG_H_

#include "agent/collectors/prom_engine.h"

namespace fleetwes::agent {
namespace sglang {

// The alias table (a constant built on each call).
PromEngineSpec Spec();

// ParsePromEngineMetrics with the SGLang alias table.
absl::StatusOr<std::vector<ModelReading>> ParseMetrics(std::string_view body,
                                                       DetectedNames* detected = nullptr);

}  // namespace sglang

class SglangCollector final : public PromEngineCollector {
 public:
  explicit SglangCollector(EngineConfig config)
      : PromEngineCollector(std::move(config), v1::ENGINE_KIND_SGLANG, sglang::Spec()) {}
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_SGLANG_H_
