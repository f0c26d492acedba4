// Collector for Ollama (REST on port 11434, no /metrics): GET /api/version once, GET /api/ps for
// the resident models (name, VRAM bytes, partial CPU offload). Ollama keeps no token counters,
// so a model's counters and latency histograms come from OllamaTraffic: the opt-in proxy
// (agent/ollama_proxy.h) fills one with the real traffic, the opt-in synthetic probe fills
// another whose models are reported apart, marked synthetic. Without them a model is reported
// with its residency only. See docs/agent.md.
#ifndef FLEETWES_AGENT_COLLECTORS_OLLAMA_H_
#define FLEETWES_AGENT_COLLECTORS_OLLAMA_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/collectors/collector.h"
#include "agent/collectors/http_client.h"
#include "agent/collectors/ollama_json.h"
#include "agent/config.h"
#include "common/prom_text.h"

namespace fleetwes::agent {

// Cumulative traffic of one model as metered from generate/chat responses.
struct OllamaModelTraffic {
  double decode_tokens = 0;    // Σ eval_count
  double prefill_tokens = 0;   // Σ prompt_eval_count
  double decode_seconds = 0;   // Σ eval_duration
  double prefill_seconds = 0;  // Σ prompt_eval_duration
  uint64_t requests = 0;       // responses that ended with a final object
  uint64_t running = 0;        // requests in flight now
  prom::Histogram ttft;        // request start → first chunk with output (streamed responses)
  prom::Histogram tpot;        // eval_duration / eval_count per request
  prom::Histogram e2e;         // total_duration per request
};

// Per-model cumulative counters and histograms of the generate/chat requests that went through
// one meter (the proxy, or the probe). Model names are normalised (NormalizeModel).
// Thread-safe.
class OllamaTraffic {
 public:
  OllamaTraffic();
  // A model's traffic before its first request: zero counters, empty histograms.
  static OllamaModelTraffic Zero();

  // A request for `model` (as the client named it; may be "") started.
  void Begin(const std::string& model);
  // It ended. The final object's timings are credited to its model (the request's when the
  // object names none); `start` and outcome.first_output give the TTFT. Responses without a
  // final object (client gone, upstream failure, HTTP error) count as failed.
  void End(const std::string& model, const ollama::ResponseOutcome& outcome, absl::Time start);

  std::map<std::string, OllamaModelTraffic> Snapshot() const;
  uint64_t in_flight() const;
  uint64_t completed() const;
  uint64_t failed() const;

 private:
  mutable absl::Mutex mu_;
  const OllamaModelTraffic empty_;  // histograms with the bucket layout, all zero
  std::map<std::string, OllamaModelTraffic> models_ ABSL_GUARDED_BY(mu_);
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
};

// Reads one Ollama server. Not thread-safe: one Read() at a time. Never throws.
class OllamaCollector final : public EngineCollector {
 public:
  // `traffic` (the proxy's) and `synthetic` (the probe's) may be null and must outlive the
  // collector.
  OllamaCollector(EngineConfig config, const OllamaTraffic* traffic = nullptr,
                  const OllamaTraffic* synthetic = nullptr);
  ~OllamaCollector() override;

  const std::string& engine_id() const override { return config_.name; }
  v1::EngineKind kind() const override { return v1::ENGINE_KIND_OLLAMA; }
  const std::string& endpoint() const override { return config_.url; }
  absl::Duration timeout() const override { return config_.timeout; }
  // One ModelReading per model of /api/ps (vram_bytes = size_vram, cpu_offload when
  // size_vram < size) with the proxy's counters when there is a proxy; then one synthetic
  // ModelReading per resident model the probe has measured.
  EngineReading Read() override;

  // Services the collector keeps alive (the proxy and the probe); destroyed, and so stopped,
  // before the traffic they write.
  void Own(std::shared_ptr<void> service) { owned_.push_back(std::move(service)); }

  uint64_t failed_reads() const { return failed_reads_.load(); }

 private:
  EngineReading Unavailable(std::string reason);

  EngineConfig config_;
  const OllamaTraffic* traffic_;
  const OllamaTraffic* synthetic_;
  HttpClient http_;
  std::string version_;
  std::atomic<uint64_t> failed_reads_{0};
  std::vector<std::shared_ptr<void>> owned_;
};

// Sets the counters, gauges and histograms of `out` from one model's traffic.
void FillFromTraffic(const OllamaModelTraffic& t, ModelReading* out);

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_OLLAMA_H_
