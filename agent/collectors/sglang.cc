#include "agent/collectors/sglang.h"

namespace fleetwes::agent::sglang {

PromEngineSpec Spec() {
  return PromEngineSpec{
      .display_name = "SGLang",
      .decode_tokens = {"sglang:generation_tokens_total"},
      .prefill_tokens = {"sglang:prompt_tokens_total"},
      .ttft = {"sglang:time_to_first_token_seconds"},
      .tpot = {"sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"},
      .e2e = {"sglang:e2e_request_latency_seconds"},
      .queue = {"sglang:queue_time_seconds"},
      .requests_running = {"sglang:num_running_reqs"},
      .requests_waiting = {"sglang:num_queue_reqs"},
      .waiting_by_reason = {},
      .kv_cache_usage = {"sglang:token_usage"},
      // Prompt tokens are the prefix-cache lookups; cached_tokens_total those served from it.
      .prefix_cache_queries = {"sglang:prompt_tokens_total"},
      .prefix_cache_hits = {"sglang:cached_tokens_total"},
      .preemptions = {},
      .hint_metrics_404 = " (SGLang runs without --enable-metrics)",
      .hint_no_tokens = "",
      .version_path = "",
  };
}

absl::StatusOr<std::vector<ModelReading>> ParseMetrics(std::string_view body,
                                                       DetectedNames* detected) {
  return ParsePromEngineMetrics(Spec(), body, detected);
}

}  // namespace fleetwes::agent::sglang
