#include "aggregator/ingest/validate.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace fleetwes::aggregator {

namespace {

constexpr double kMaxRate = 1e7;         // tokens/s, pages/s
constexpr double kMaxWatts = 1e6;        // one node, or one device
constexpr double kMaxEnergyJ = 1e10;     // energy within one window
constexpr double kMaxLatencyS = 86'400;  // one day
constexpr double kMaxClockMhz = 1e6;
constexpr double kMinTemperatureC = -100;
constexpr double kMaxTemperatureC = 300;
constexpr double kMaxPue = 10;
constexpr double kMaxPenalty = 100;
constexpr double kMaxWes = 1e9;  // tokens per joule; far above any real device
// Windows end after this instant (2020-01-01T00:00:00Z); earlier clocks are broken clocks.
constexpr int64_t kMinWindowUnixSeconds = 1'577'836'800;
// google.protobuf.Timestamp's valid range: 0001-01-01 .. 9999-12-31.
constexpr int64_t kMinTimestampSeconds = -62'135'596'800;
constexpr int64_t kMaxTimestampSeconds = 253'402'300'799;

bool HasControlCharacter(absl::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool IsLabelKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '/' || c == '-';
}

// Collects the first problem found; every check is a no-op once one has failed, so callers can
// run a sequence of checks and look at the result once.
class Checker {
 public:
  bool failed() const { return rejection_.has_value(); }
  std::optional<Rejection> Take() { return std::move(rejection_); }

  void Fail(RejectReason reason, std::string field, std::string message) {
    if (!rejection_) rejection_ = Rejection{reason, std::move(field), std::move(message)};
  }

  // A double that must be finite and within [lo, hi].
  void Number(const std::string& prefix, absl::string_view name, double v, double lo, double hi) {
    if (failed()) return;
    if (!std::isfinite(v)) {
      Fail(RejectReason::kNonFinite, Path(prefix, name), absl::StrCat("must be finite, got ", v));
    } else if (v < lo || v > hi) {
      Fail(RejectReason::kOutOfRange, Path(prefix, name),
           absl::StrFormat("must be in [%g, %g], got %g", lo, hi, v));
    }
  }
  void OptionalNumber(const std::string& prefix, absl::string_view name, bool has, double v,
                      double lo, double hi) {
    if (has) Number(prefix, name, v, lo, hi);
  }

  void String(const std::string& prefix, absl::string_view name, absl::string_view s,
              size_t max_length, bool required) {
    if (failed()) return;
    if (required && s.empty()) {
      Fail(RejectReason::kString, Path(prefix, name), "must not be empty");
    } else if (s.size() > max_length) {
      Fail(RejectReason::kString, Path(prefix, name),
           absl::StrCat("longer than ", max_length, " bytes (", s.size(), ")"));
    } else if (HasControlCharacter(s)) {
      Fail(RejectReason::kString, Path(prefix, name), "contains control characters");
    }
  }

  void Enum(const std::string& prefix, absl::string_view name, int value, bool (*valid)(int)) {
    if (failed()) return;
    if (!valid(value)) {
      Fail(RejectReason::kEnum, Path(prefix, name), absl::StrCat("unknown enum value ", value));
    }
  }

  void Count(const std::string& prefix, absl::string_view name, int count, int max) {
    if (failed()) return;
    if (count > max) {
      Fail(RejectReason::kTooMany, Path(prefix, name),
           absl::StrCat("has ", count, " entries, at most ", max, " allowed"));
    }
  }

  static std::string Path(const std::string& prefix, absl::string_view name) {
    return absl::StrCat(prefix, name);
  }

 private:
  std::optional<Rejection> rejection_;
};

void CheckPue(Checker& c, const std::string& prefix, absl::string_view name, double pue) {
  // 0 means "not set" (the aggregator then uses 1.0); otherwise a physical PUE.
  if (pue == 0) return;
  c.Number(prefix, name, pue, 1.0, kMaxPue);
}

void CheckWes(Checker& c, const std::string& p, const v1::Wes& w) {
  c.OptionalNumber(p, "raw", w.has_raw(), w.raw(), 0, kMaxWes);
  c.OptionalNumber(p, "penalized", w.has_penalized(), w.penalized(), 0, kMaxWes);
  c.OptionalNumber(p, "thermal_cost_pct", w.has_thermal_cost_pct(), w.thermal_cost_pct(), 0, 100);
  c.Enum(p, "null_reason", w.null_reason(), v1::WesNullReason_IsValid);
  c.Number(p, "tokens_per_s", w.tokens_per_s(), 0, kMaxRate);
  c.OptionalNumber(p, "watts", w.has_watts(), w.watts(), 0, kMaxWatts);
  CheckPue(c, p, "pue", w.pue());
  c.Number(p, "thermal_penalty", w.thermal_penalty(), 0, kMaxPenalty);
  c.Enum(p, "thermal_state", w.thermal_state(), v1::ThermalState_IsValid);
  c.Count(p, "power_scopes", w.power_scopes_size(), kMaxPowerScopes);
  for (int i = 0; i < w.power_scopes_size() && !c.failed(); ++i) {
    c.Enum(p, absl::StrCat("power_scopes[", i, "]"), w.power_scopes(i), v1::PowerScope_IsValid);
  }
}

void CheckLatency(Checker& c, const std::string& p, const v1::LatencySummary& l) {
  c.OptionalNumber(p, "mean_s", l.has_mean_s(), l.mean_s(), 0, kMaxLatencyS);
  c.OptionalNumber(p, "p50_s", l.has_p50_s(), l.p50_s(), 0, kMaxLatencyS);
  c.OptionalNumber(p, "p95_s", l.has_p95_s(), l.p95_s(), 0, kMaxLatencyS);
}

void CheckDevice(Checker& c, const std::string& p, const v1::Device& d) {
  c.String(p, "id", d.id(), kMaxIdLength, /*required=*/true);
  c.Enum(p, "kind", d.kind(), v1::DeviceKind_IsValid);
  c.String(p, "name", d.name(), kMaxNameLength, false);
  c.Enum(p, "power_scope", d.power_scope(), v1::PowerScope_IsValid);
  c.OptionalNumber(p, "power_w", d.has_power_w(), d.power_w(), 0, kMaxWatts);
  c.OptionalNumber(p, "energy_j", d.has_energy_j(), d.energy_j(), 0, kMaxEnergyJ);
  c.OptionalNumber(p, "temperature_c", d.has_temperature_c(), d.temperature_c(), kMinTemperatureC,
                   kMaxTemperatureC);
  c.OptionalNumber(p, "clock_mhz", d.has_clock_mhz(), d.clock_mhz(), 0, kMaxClockMhz);
  c.OptionalNumber(p, "clock_max_mhz", d.has_clock_max_mhz(), d.clock_max_mhz(), 0, kMaxClockMhz);
  c.Enum(p, "thermal_state", d.thermal_state(), v1::ThermalState_IsValid);
  c.String(p, "unavailable_reason", d.unavailable_reason(), kMaxTextLength, false);
  if (!c.failed() &&
      d.throttle_mask() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    c.Fail(RejectReason::kOutOfRange, Checker::Path(p, "throttle_mask"), "above 2^63-1");
  }
}

void CheckEngine(Checker& c, const std::string& p, const v1::EngineStatus& e) {
  c.String(p, "engine_id", e.engine_id(), kMaxIdLength, /*required=*/true);
  c.Enum(p, "kind", e.kind(), v1::EngineKind_IsValid);
  c.String(p, "endpoint", e.endpoint(), kMaxTextLength, false);
  c.String(p, "unavailable_reason", e.unavailable_reason(), kMaxTextLength, false);
  c.String(p, "version", e.version(), kMaxIdLength, false);
}

void CheckModel(Checker& c, const std::string& p, const v1::ModelSample& m) {
  c.String(p, "engine_id", m.engine_id(), kMaxIdLength, /*required=*/true);
  c.Enum(p, "engine", m.engine(), v1::EngineKind_IsValid);
  c.String(p, "model", m.model(), kMaxNameLength, /*required=*/true);
  c.OptionalNumber(p, "decode_tokens_per_s", m.has_decode_tokens_per_s(), m.decode_tokens_per_s(),
                   0, kMaxRate);
  c.OptionalNumber(p, "prefill_tokens_per_s", m.has_prefill_tokens_per_s(),
                   m.prefill_tokens_per_s(), 0, kMaxRate);
  constexpr uint64_t kMaxInt64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (!c.failed() && m.decode_tokens() > kMaxInt64) {
    c.Fail(RejectReason::kOutOfRange, Checker::Path(p, "decode_tokens"), "above 2^63-1");
  }
  if (!c.failed() && m.prefill_tokens() > kMaxInt64) {
    c.Fail(RejectReason::kOutOfRange, Checker::Path(p, "prefill_tokens"), "above 2^63-1");
  }
  CheckLatency(c, p + "ttft.", m.ttft());
  CheckLatency(c, p + "tpot.", m.tpot());
  if (!c.failed() && (m.ttft().count() > kMaxInt64 || m.tpot().count() > kMaxInt64)) {
    c.Fail(RejectReason::kOutOfRange,
           Checker::Path(p, m.ttft().count() > kMaxInt64 ? "ttft.count" : "tpot.count"),
           "above 2^63-1");
  }
  c.OptionalNumber(p, "kv_cache_usage", m.has_kv_cache_usage(), m.kv_cache_usage(), 0, 1);
  c.OptionalNumber(p, "watts_attributed", m.has_watts_attributed(), m.watts_attributed(), 0,
                   kMaxWatts);
  if (!c.failed() && m.has_requests_running() &&
      m.requests_running() > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    c.Fail(RejectReason::kOutOfRange, Checker::Path(p, "requests_running"), "above 2^31-1");
  }
  if (!c.failed() && m.has_requests_waiting() &&
      m.requests_waiting() > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    c.Fail(RejectReason::kOutOfRange, Checker::Path(p, "requests_waiting"), "above 2^31-1");
  }
  CheckWes(c, p + "wes.", m.wes());
}

void CheckSystem(Checker& c, const v1::SystemSample& s) {
  const std::string p = "system.";
  c.OptionalNumber(p, "swap_in_pages_per_s", s.has_swap_in_pages_per_s(), s.swap_in_pages_per_s(),
                   0, kMaxRate);
  c.OptionalNumber(p, "swap_out_pages_per_s", s.has_swap_out_pages_per_s(),
                   s.swap_out_pages_per_s(), 0, kMaxRate);
  c.OptionalNumber(p, "memory_pressure_some_avg10", s.has_memory_pressure_some_avg10(),
                   s.memory_pressure_some_avg10(), 0, 100);
}

// Checks a Timestamp field and converts it; nullopt after a failure.
std::optional<absl::Time> CheckTimestamp(Checker& c, absl::string_view name, bool has,
                                         const google::protobuf::Timestamp& ts) {
  if (c.failed()) return std::nullopt;
  if (!has) {
    c.Fail(RejectReason::kWindow, std::string(name), "missing");
    return std::nullopt;
  }
  if (ts.seconds() < kMinTimestampSeconds || ts.seconds() > kMaxTimestampSeconds ||
      ts.nanos() < 0 || ts.nanos() > 999'999'999) {
    c.Fail(RejectReason::kWindow, std::string(name), "not a valid timestamp");
    return std::nullopt;
  }
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

}  // namespace

absl::string_view RejectReasonName(RejectReason r) {
  switch (r) {
    case RejectReason::kKeyMismatch:
      return "key_mismatch";
    case RejectReason::kSeq:
      return "seq";
    case RejectReason::kWindow:
      return "window";
    case RejectReason::kTooLarge:
      return "too_large";
    case RejectReason::kTooMany:
      return "too_many";
    case RejectReason::kString:
      return "string";
    case RejectReason::kNonFinite:
      return "non_finite";
    case RejectReason::kOutOfRange:
      return "out_of_range";
    case RejectReason::kEnum:
      return "enum";
    case RejectReason::kStore:
      return "store";
    case RejectReason::kExpired:
      return "expired";
    case RejectReason::kClockSkew:
      return "clock_skew";
    case RejectReason::kCardinality:
      return "cardinality";
  }
  return "unknown";
}

bool IsValidNodeId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::Status ValidateHello(const v1::Hello& hello) {
  if (!IsValidNodeId(hello.node_id())) {
    return absl::InvalidArgumentError(
        "hello.node_id: must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  if (!IsValidNodeId(hello.boot_id())) {
    return absl::InvalidArgumentError(
        "hello.boot_id: must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  Checker c;
  c.String("hello.", "agent_version", hello.agent_version(), kMaxIdLength, false);
  if (!c.failed() && hello.labels_size() > kMaxLabels) {
    c.Fail(RejectReason::kTooMany, "hello.labels",
           absl::StrCat("has ", hello.labels_size(), " labels, at most ", kMaxLabels, " allowed"));
  }
  size_t label_bytes = 0;
  for (const auto& [key, value] : hello.labels()) label_bytes += key.size() + value.size();
  if (!c.failed() && label_bytes > kMaxLabelBytes) {
    c.Fail(RejectReason::kTooMany, "hello.labels",
           absl::StrCat("keys and values total ", label_bytes, " bytes, at most ", kMaxLabelBytes,
                        " allowed"));
  }
  for (const auto& [key, value] : hello.labels()) {
    if (c.failed()) break;
    bool key_ok = !key.empty() && key.size() <= kMaxLabelKeyLength;
    for (char ch : key) key_ok = key_ok && IsLabelKeyChar(ch);
    if (!key_ok) {
      c.Fail(RejectReason::kString, "hello.labels",
             absl::StrCat("key \"", absl::CEscape(key.substr(0, kMaxLabelKeyLength)),
                          "\" must be 1..128 characters of [A-Za-z0-9_./-]"));
      break;
    }
    c.String(absl::StrCat("hello.labels[\"", key, "\"]"), "", value, kMaxNameLength, false);
  }
  c.Count("hello.", "devices", hello.devices_size(), kMaxDevices);
  for (int i = 0; i < hello.devices_size() && !c.failed(); ++i) {
    CheckDevice(c, absl::StrCat("hello.devices[", i, "]."), hello.devices(i));
  }
  c.Count("hello.", "engines", hello.engines_size(), kMaxEngines);
  for (int i = 0; i < hello.engines_size() && !c.failed(); ++i) {
    CheckEngine(c, absl::StrCat("hello.engines[", i, "]."), hello.engines(i));
  }
  if (!c.failed() && hello.interval_s() != 0) {
    c.Number("hello.", "interval_s", hello.interval_s(), 1e-3, kMaxIntervalS);
  }
  if (std::optional<Rejection> r = c.Take()) {
    return absl::InvalidArgumentError(absl::StrCat(r->field, ": ", r->message));
  }
  return absl::OkStatus();
}

std::optional<Rejection> ValidateFrame(const v1::Frame& f, const FrameContext& ctx) {
  Checker c;
  if (ctx.serialized_bytes > static_cast<size_t>(ctx.max_frame_bytes)) {
    c.Fail(RejectReason::kTooLarge, "frame",
           absl::StrCat("serialized frame is ", ctx.serialized_bytes, " bytes, at most ",
                        ctx.max_frame_bytes, " allowed"));
    return c.Take();
  }
  if (f.node_id() != ctx.node_id) {
    c.Fail(RejectReason::kKeyMismatch, "node_id",
           absl::StrCat("\"", absl::CEscape(f.node_id().substr(0, kMaxIdLength)),
                        "\" differs from the stream's hello (\"", ctx.node_id, "\")"));
    return c.Take();
  }
  if (f.boot_id() != ctx.boot_id) {
    c.Fail(RejectReason::kKeyMismatch, "boot_id",
           absl::StrCat("\"", absl::CEscape(f.boot_id().substr(0, kMaxIdLength)),
                        "\" differs from the stream's hello (\"", ctx.boot_id, "\")"));
    return c.Take();
  }
  if (f.seq() == 0 || f.seq() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    c.Fail(RejectReason::kSeq, "seq", absl::StrCat("must be in [1, 2^63-1], got ", f.seq()));
    return c.Take();
  }

  const std::optional<absl::Time> start =
      CheckTimestamp(c, "window_start", f.has_window_start(), f.window_start());
  const std::optional<absl::Time> end =
      CheckTimestamp(c, "window_end", f.has_window_end(), f.window_end());
  if (start && end) {
    if (*end <= *start) {
      c.Fail(RejectReason::kWindow, "window_end", "must be after window_start");
    } else if (*end - *start > kMaxWindow) {
      c.Fail(RejectReason::kWindow, "window_end",
             absl::StrCat("window of ", absl::FormatDuration(*end - *start), " is longer than ",
                          absl::FormatDuration(kMaxWindow)));
    } else if (*end > ctx.now + kMaxClockSkew) {
      c.Fail(RejectReason::kClockSkew, "window_end",
             absl::StrCat("is ", absl::FormatDuration(*end - ctx.now),
                          " in the future of the aggregator's clock"));
    } else if (*end < absl::FromUnixSeconds(kMinWindowUnixSeconds)) {
      c.Fail(RejectReason::kClockSkew, "window_end", "is before 2020-01-01");
    } else if (*end < ctx.oldest_window_end) {
      c.Fail(RejectReason::kExpired, "window_end",
             absl::StrCat("is ", absl::FormatDuration(ctx.now - *end),
                          " old, beyond the aggregator's frames retention"));
    }
  }
  c.Number("", "interval_s", f.interval_s(), 1e-3, kMaxIntervalS);
  CheckPue(c, "", "pue", f.pue());
  c.Enum("", "thermal_state", f.thermal_state(), v1::ThermalState_IsValid);

  c.Count("", "devices", f.devices_size(), kMaxDevices);
  for (int i = 0; i < f.devices_size() && !c.failed(); ++i) {
    CheckDevice(c, absl::StrCat("devices[", i, "]."), f.devices(i));
  }
  c.Count("", "engines", f.engines_size(), kMaxEngines);
  for (int i = 0; i < f.engines_size() && !c.failed(); ++i) {
    CheckEngine(c, absl::StrCat("engines[", i, "]."), f.engines(i));
  }
  c.Count("", "models", f.models_size(), kMaxModels);
  for (int i = 0; i < f.models_size() && !c.failed(); ++i) {
    CheckModel(c, absl::StrCat("models[", i, "]."), f.models(i));
  }
  CheckSystem(c, f.system());
  CheckWes(c, "node_wes.", f.node_wes());
  return c.Take();
}

}  // namespace fleetwes::aggregator
