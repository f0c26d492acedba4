// Fuzz target for the Prometheus text parser: Parse, then every histogram it yields goes through
// ExtractHistogram, Delta and Quantile. Aborts when an invariant of those functions breaks.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "common/prom_text.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void Exercise(const fleetwes::prom::Exposition& e) {
  std::set<std::string> families;
  for (const fleetwes::prom::Sample& s : e.samples) {
    constexpr std::string_view kBucket = "_bucket";
    if (s.name.size() > kBucket.size() &&
        std::string_view(s.name).substr(s.name.size() - kBucket.size()) == kBucket) {
      families.insert(s.name.substr(0, s.name.size() - kBucket.size()));
    }
    (void)e.TypeOf(s.name);
  }
  for (const std::string& family : families) {
    fleetwes::prom::Labels match;
    if (!e.samples.empty() && !e.samples.front().labels.empty()) {
      match.push_back(e.samples.front().labels.front());
    }
    for (const fleetwes::prom::Labels& m : {fleetwes::prom::Labels{}, match}) {
      const std::optional<fleetwes::prom::Histogram> h =
          fleetwes::prom::ExtractHistogram(e, family, m);
      if (!h.has_value()) continue;
      Check(!h->buckets.empty());
      Check(h->buckets.back().first == std::numeric_limits<double>::infinity());
      for (size_t i = 1; i < h->buckets.size(); ++i) {
        Check(h->buckets[i - 1].first < h->buckets[i].first);
      }
      for (double q : {0.0, 0.5, 0.95, 1.0}) {
        const std::optional<double> v = fleetwes::prom::Quantile(q, *h);
        if (v.has_value()) Check(std::isfinite(*v));
      }
      const std::optional<fleetwes::prom::Histogram> d = fleetwes::prom::Delta(*h, *h);
      if (d.has_value()) {
        Check(d->buckets.size() == h->buckets.size());
        for (const auto& [le, count] : d->buckets) Check(count == 0);
      }
    }
  }
  (void)e.Sum("vllm:generation_tokens_total");
  (void)e.Has("llamacpp:tokens_predicted_total");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fleetwes::prom::ParseLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_samples = 10'000;
  const absl::StatusOr<fleetwes::prom::Exposition> e = fleetwes::prom::Parse(text, limits);
  if (!e.ok()) {
    Check(e.status().code() == absl::StatusCode::kInvalidArgument ||
          e.status().code() == absl::StatusCode::kResourceExhausted);
    return 0;
  }
  Check(e->samples.size() <= limits.max_samples);
  Exercise(*e);
  return 0;
}
