// Shared collector for engines that expose Prometheus metrics labelled by model (vLLM, SGLang).
// Each engine gives a PromEngineSpec: for every value the agent reads, the metric names it has
// had across releases, in order of preference. The first name the server exposes is used (and
// reported by DetectedNames); a value with no exposed name stays absent, never 0.
// Series are grouped by their `model_name` label; every other label (vLLM `engine`, SGLang
// `tp_rank`, ...) is aggregated: counters, histograms and request gauges are summed, the KV
// cache usage is averaged. See docs/agent.md.
#ifndef FLEETWES_AGENT_COLLECTORS_PROM_ENGINE_H_
#define FLEETWES_AGENT_COLLECTORS_PROM_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/collectors/collector.h"
#include "agent/collectors/http_client.h"
#include "agent/config.h"
#include "common/prom_text.h"

namespace fleetwes::agent {

// Metric names of one value across releases, preferred (newest) first. Histograms are named
// by family (without _bucket/_sum/_count).
using Aliases = std::vector<std::string_view>;

struct PromEngineSpec {
  std::string_view display_name;  // "vLLM"
  Aliases decode_tokens;          // counter; required: without it the engine is unavailable
  Aliases prefill_tokens;         // counter
  Aliases ttft;                   // histogram
  Aliases tpot;                   // histogram (inter-token latency)
  Aliases e2e;                    // histogram
  Aliases queue;                  // histogram
  Aliases requests_running;       // gauge
  Aliases requests_waiting;       // gauge
  Aliases waiting_by_reason;      // gauge with label reason; only reason="capacity" is read
  Aliases kv_cache_usage;         // gauge, fraction 0..1
  Aliases prefix_cache_queries;   // counter (tokens)
  Aliases prefix_cache_hits;      // counter (tokens)
  Aliases preemptions;            // counter
  // Appended to the unavailable reason when /metrics answers 404 (e.g. metrics not enabled).
  std::string_view hint_metrics_404;
  // Appended when the decode token counter is missing from a valid exposition.
  std::string_view hint_no_tokens;
  // JSON endpoint with a "version" string, read until it answers once; empty: none.
  std::string_view version_path;
};

// The name used for each value in the last parse; empty when the server exposes none.
struct DetectedNames {
  std::string decode_tokens, prefill_tokens, ttft, tpot, e2e, queue, requests_running,
      requests_waiting, waiting_by_reason, kv_cache_usage, prefix_cache_queries, prefix_cache_hits,
      preemptions;
};

// The lines of an exposition that a spec reads: the samples of its aliases (histograms: their
// `_bucket`, `_sum` and `_count`) and the # HELP / # TYPE lines of their families. Every other
// line is blanked before parsing (left as an empty line, so that parse errors name the same line
// numbers), which spares the parser their labels and values: a vLLM exposition has some 420
// samples, of which the agent reads about 100. A blanked sample line has been checked only for a
// metric name followed by a blank or '{' and more; a line that does not start like that or like
// a comment is kept, so the parser rejects it as before. Thread-safe (immutable).
class PromFamilyFilter {
 public:
  explicit PromFamilyFilter(const PromEngineSpec& spec);
  // Blanks, in place, every line of `text` the spec does not read.
  void Apply(std::string* text) const;
  // Whether samples named `name` are read.
  bool Reads(std::string_view name) const;

 private:
  bool Keep(std::string_view line) const;
  // Whether `name` is the family (or the name) of a sample that is read.
  bool ReadsFamily(std::string_view name) const;
  std::vector<std::string> names_;  // sorted
};

// One ModelReading per distinct `model_name` of the decode token counter, in exposition order
// (model "" when the counter has no model_name label). InvalidArgument when the body is not
// Prometheus text or lacks every decode token alias. Values that are NaN, infinite or negative
// are treated as absent. Parses only the lines PromFamilyFilter keeps (`filter`: the spec's,
// built once by the caller; null: built for this call). Never throws.
absl::StatusOr<std::vector<ModelReading>> ParsePromEngineMetrics(
    const PromEngineSpec& spec, std::string_view body, DetectedNames* detected = nullptr,
    const PromFamilyFilter* filter = nullptr);

// The same from an exposition already parsed (all of it, or the lines the filter kept).
absl::StatusOr<std::vector<ModelReading>> ReadPromEngineExposition(
    const PromEngineSpec& spec, const prom::Exposition& e, DetectedNames* detected = nullptr);

// Reads GET /metrics (and /v1/models when the metrics name no model; the version endpoint until
// it answers once, then never again; while it does not, at most every kVersionRetryReads reads).
// Not thread-safe: one Read() at a time. Never throws.
class PromEngineCollector : public EngineCollector {
 public:
  // A server without the version endpoint (a proxy, an old build) is not asked every window.
  static constexpr uint64_t kVersionRetryReads = 150;

  PromEngineCollector(EngineConfig config, v1::EngineKind kind, PromEngineSpec spec);

  const std::string& engine_id() const override { return config_.name; }
  v1::EngineKind kind() const override { return kind_; }
  const std::string& endpoint() const override { return config_.url; }
  absl::Duration timeout() const override { return config_.timeout; }
  EngineReading Read() override;

  uint64_t failed_reads() const { return failed_reads_.load(); }
  // Names detected by the last successful read.
  const DetectedNames& detected() const { return detected_; }

 private:
  EngineReading Unavailable(std::string reason);

  EngineConfig config_;
  const v1::EngineKind kind_;
  const PromEngineSpec spec_;
  const PromFamilyFilter filter_;
  HttpClient http_;
  std::string version_;
  uint64_t version_reads_ = 0;  // successful /metrics reads while version_ is unknown
  DetectedNames detected_;
  std::atomic<uint64_t> failed_reads_{0};
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_PROM_ENGINE_H_
