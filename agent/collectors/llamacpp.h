// Collector for llama.cpp's llama-server: /health, /metrics (needs --metrics), /props (model and
// slot count, falling back to /v1/models for the model), /slots (slot states; prompts are never
// kept). See docs/agent.md for what each value means and how windows are derived.
// Not thread-safe: one Read() at a time.
#ifndef FLEETWES_AGENT_COLLECTORS_LLAMACPP_H_
#define FLEETWES_AGENT_COLLECTORS_LLAMACPP_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/collectors/collector.h"
#include "agent/collectors/http_client.h"
#include "agent/config.h"

namespace fleetwes::agent {

// Parsers for llama-server bodies, exposed for tests. They never throw.
namespace llamacpp {

// Fills the counters and gauges of `out` from a /metrics body. InvalidArgument when the body is
// not Prometheus text or lacks llamacpp:tokens_predicted_total (the one metric a rate needs).
absl::Status ParseMetrics(std::string_view body, ModelReading* out);

struct Props {
  std::string model;  // basename of model_path
  std::optional<uint32_t> total_slots;
  std::string build;
};
// /props: InvalidArgument when not JSON or without model_path.
absl::StatusOr<Props> ParseProps(std::string_view body);
// /v1/models: the basename of the first model id.
absl::StatusOr<std::string> ParseModelsList(std::string_view body);
// /slots: id, id_task, is_processing of each slot; nothing else is read.
absl::StatusOr<std::vector<SlotReading>> ParseSlots(std::string_view body);

}  // namespace llamacpp

class LlamaCppCollector final : public EngineCollector {
 public:
  explicit LlamaCppCollector(EngineConfig config);

  const std::string& engine_id() const override { return config_.name; }
  v1::EngineKind kind() const override { return v1::ENGINE_KIND_LLAMACPP; }
  const std::string& endpoint() const override { return config_.url; }
  absl::Duration timeout() const override { return config_.timeout; }
  EngineReading Read() override;

  // Reads that ended unavailable (any reason), and optional endpoints that failed.
  uint64_t failed_reads() const { return failed_reads_.load(); }
  uint64_t optional_endpoint_errors() const { return optional_endpoint_errors_.load(); }

 private:
  EngineReading Unavailable(std::string reason);

  EngineConfig config_;
  HttpClient http_;
  std::atomic<uint64_t> failed_reads_{0};
  std::atomic<uint64_t> optional_endpoint_errors_{0};
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_LLAMACPP_H_
