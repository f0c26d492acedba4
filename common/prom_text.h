// Parser for the Prometheus text exposition format (version 0.0.4): # HELP / # TYPE, escaped
// label values, NaN and +Inf/-Inf/inf in any case, optional timestamps, _created samples, blank
// lines. Garbage is rejected with the line number; input size and counts are capped.
// Thread-safe (no shared state).
#ifndef FLEETWES_COMMON_PROM_TEXT_H_
#define FLEETWES_COMMON_PROM_TEXT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace fleetwes::prom {

enum class MetricType { kUntyped, kCounter, kGauge, kHistogram, kSummary };

using Labels = std::vector<std::pair<std::string, std::string>>;  // in exposition order

struct Sample {
  std::string name;  // full sample name, e.g. "vllm:ttft_seconds_bucket"
  Labels labels;
  double value = 0;
  std::optional<int64_t> timestamp_ms;

  // Value of label `key`, or nullptr.
  const std::string* Label(std::string_view key) const;
};

struct ParseLimits {
  size_t max_bytes = 8 << 20;
  size_t max_samples = 200'000;
  size_t max_labels_per_sample = 64;
  size_t max_line_bytes = 64 << 10;
};

struct Exposition {
  std::vector<Sample> samples;              // in input order
  std::map<std::string, MetricType> types;  // from # TYPE, by family name
  std::map<std::string, std::string> help;  // from # HELP, by family name

  // Samples named exactly `name`.
  std::vector<const Sample*> Find(std::string_view name) const;
  // Sum of the values of samples named `name` (all label sets); nullopt when there is none.
  std::optional<double> Sum(std::string_view name) const;
  bool Has(std::string_view name) const;
  // The type of the family a sample belongs to: `name` itself, or the family that `name` is a
  // child of (`_bucket`, `_sum`, `_count`, `_created` of a histogram; `_sum`, `_count`,
  // `_created` of a summary; `_total`, `_created` of a counter). kUntyped when no TYPE names it.
  MetricType TypeOf(std::string_view name) const;
};

// InvalidArgument with "line N: ..." for malformed input; ResourceExhausted past the limits.
absl::StatusOr<Exposition> Parse(std::string_view text, const ParseLimits& limits = {});

// A cumulative histogram: buckets sorted by upper bound, the last one +Inf.
struct Histogram {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count)
  double sum = 0;
  double count = 0;
};

// Collects `<name>_bucket`, `<name>_sum`, `<name>_count` for the samples whose labels include
// every pair of `match`, summing across the other label sets. nullopt when absent.
std::optional<Histogram> ExtractHistogram(const Exposition& e, std::string_view name,
                                          const Labels& match = {});

// b - a bucket by bucket (a window's delta); nullopt if the bounds differ or any count went
// down (a counter reset).
std::optional<Histogram> Delta(const Histogram& a, const Histogram& b);

// The q-quantile by linear interpolation within buckets, as Prometheus' histogram_quantile
// does. nullopt when count is 0, q is outside [0, 1], or the result would not be finite.
std::optional<double> Quantile(double q, const Histogram& h);

}  // namespace fleetwes::prom

#endif  // FLEETWES_COMMON_PROM_TEXT_H_
