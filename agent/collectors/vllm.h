// Collector for vLLM's OpenAI server: GET /metrics (prefix "vllm:", labels model_name and, since
// V1, engine), GET /version once. Names differ across releases (V0 time_per_output_token_seconds
// and gpu_cache_usage_perc, V1 inter_token_latency_seconds and kv_cache_usage_perc, ...): the
// alias table in vllm.cc lists them; docs/agent.md explains each value.
// Not thread-safe: one Read() at a time.
#ifndef FLEETWES_AGENT_COLLECTORS_VLLM_H_
#define FLEETWES_AGENT_COLLECTORS_VLLM_H_

#include "agent/collectors/prom_engine.h"

namespace fleetwes::agent {
namespace vllm {

// The alias table (a constant built on each call).
PromEngineSpec Spec();

// ParsePromEngineMetrics with the vLLM alias table.
absl::StatusOr<std::vector<ModelReading>> ParseMetrics(std::string_view body,
                                                       DetectedNames* detected = nullptr);

}  // namespace vllm

class VllmCollector final : public PromEngineCollector {
 public:
  explicit VllmCollector(EngineConfig config)
      : PromEngineCollector(std::move(config), v1::ENGINE_KIND_VLLM, vllm::Spec()) {}
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_VLLM_H_
