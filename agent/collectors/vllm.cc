#include "agent/collectors/vllm.h"

namespace fleetwes::agent::vllm {

PromEngineSpec Spec() {
  return PromEngineSpec{
      .display_name = "vLLM",
      .decode_tokens = {"vllm:generation_tokens_total"},
      .prefill_tokens = {"vllm:prompt_tokens_total"},
      .ttft = {"vllm:time_to_first_token_seconds"},
      // 0.11 renamed the per-token histogram.
      .tpot = {"vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"},
      .e2e = {"vllm:e2e_request_latency_seconds"},
      .queue = {"vllm:request_queue_time_seconds"},
      .requests_running = {"vllm:num_requests_running"},
      .requests_waiting = {"vllm:num_requests_waiting"},
      .waiting_by_reason = {"vllm:num_requests_waiting_by_reason"},
      // 0.9 renamed the KV usage gauge (both are fractions 0..1).
      .kv_cache_usage = {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"},
      // Early V1 builds prefixed the prefix-cache counters with gpu_.
      .prefix_cache_queries = {"vllm:prefix_cache_queries_total",
                               "vllm:gpu_prefix_cache_queries_total"},
      .prefix_cache_hits = {"vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"},
      .preemptions = {"vllm:num_preemptions_total"},
      .hint_metrics_404 = "",
      .hint_no_tokens = " (vLLM runs with --disable-log-stats?)",
      .version_path = "/version",
  };
}

absl::StatusOr<std::vector<ModelReading>> ParseMetrics(std::string_view body,
                                                       DetectedNames* detected) {
  return ParsePromEngineMetrics(Spec(), body, detected);
}

}  // namespace fleetwes::agent::vllm
