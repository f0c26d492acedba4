#include "common/wes.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/str_format.h"

namespace fleetwes {

double ThermalPenalties::For(v1::ThermalState state) const {
  switch (state) {
    case v1::THERMAL_STATE_FAIR:
      return fair;
    case v1::THERMAL_STATE_SERIOUS:
      return serious;
    case v1::THERMAL_STATE_CRITICAL:
      return critical;
    case v1::THERMAL_STATE_NORMAL:
    default:
      return normal;
  }
}

namespace {

bool OptionalFinite(const std::optional<double>& v) { return !v.has_value() || std::isfinite(*v); }

// Non-finite values, and values outside the domain of the formula (negative tokens/s, a PUE or
// penalty that is not positive), make the inputs unusable: no value is better than a wrong one.
bool InputsUsable(const WesInputs& in, double penalty) {
  if (!OptionalFinite(in.tokens_per_s) || !OptionalFinite(in.watts)) return false;
  if (!std::isfinite(in.pue) || in.pue <= 0) return false;
  if (!std::isfinite(penalty) || penalty <= 0) return false;
  if (in.tokens_per_s.has_value() && *in.tokens_per_s < 0) return false;
  return true;
}

v1::Wes NullWes(v1::Wes wes, v1::WesNullReason reason) {
  wes.clear_raw();
  wes.clear_penalized();
  wes.clear_thermal_cost_pct();
  wes.set_null_reason(reason);
  return wes;
}

}  // namespace

v1::Wes ComputeWes(const WesInputs& in, const ThermalPenalties& penalties) {
  const double penalty = penalties.For(in.thermal_state);
  v1::Wes wes;
  if (in.tokens_per_s.has_value() && std::isfinite(*in.tokens_per_s)) {
    wes.set_tokens_per_s(*in.tokens_per_s);
  }
  if (in.watts.has_value() && std::isfinite(*in.watts)) wes.set_watts(*in.watts);
  wes.set_pue(std::isfinite(in.pue) ? in.pue : 0.0);
  wes.set_thermal_penalty(std::isfinite(penalty) ? penalty : 0.0);
  wes.set_thermal_state(in.thermal_state);
  for (v1::PowerScope scope : in.power_scopes) wes.add_power_scopes(scope);

  if (!InputsUsable(in, penalty))
    return NullWes(std::move(wes), v1::WES_NULL_REASON_NON_FINITE_INPUT);
  if (!in.tokens_per_s.has_value() || *in.tokens_per_s == 0) {
    return NullWes(std::move(wes), v1::WES_NULL_REASON_IDLE);
  }
  if (!in.watts.has_value()) return NullWes(std::move(wes), v1::WES_NULL_REASON_NO_POWER_READING);
  if (*in.watts <= 0) return NullWes(std::move(wes), v1::WES_NULL_REASON_NON_POSITIVE_WATTS);

  const double tokens = *in.tokens_per_s;
  const double raw = tokens / (*in.watts * in.pue);
  const double penalized = tokens / (*in.watts * in.pue * penalty);
  // Tiny watts can overflow the quotient; an infinite score is not a score.
  if (!std::isfinite(raw) || !std::isfinite(penalized) || raw <= 0) {
    return NullWes(std::move(wes), v1::WES_NULL_REASON_NON_FINITE_INPUT);
  }
  const double cost = (raw - penalized) / raw * 100.0;
  wes.set_raw(raw);
  wes.set_penalized(penalized);
  wes.set_thermal_cost_pct(cost);
  wes.set_null_reason(v1::WES_NULL_REASON_UNSPECIFIED);
  return wes;
}

std::optional<double> BaselineLossPct(double baseline_raw, double penalized) {
  if (!std::isfinite(baseline_raw) || !std::isfinite(penalized) || baseline_raw <= 0) {
    return std::nullopt;
  }
  return (baseline_raw - penalized) / baseline_raw * 100.0;
}

std::string FormatWes(double value) {
  if (!std::isfinite(value)) return "n/a";
  const double magnitude = std::fabs(value);
  int decimals = magnitude >= 100 ? 0 : magnitude >= 1 ? 1 : 2;
  std::string out = absl::StrFormat("%.*f", decimals, value);
  // Rounding may carry a value into the next band (99.96 -> "100.0", 0.996 -> "1.00"): format
  // it as a value of that band.
  if (decimals > 0) {
    const double shown = std::fabs(std::strtod(out.c_str(), nullptr));
    const int band = shown >= 100 ? 0 : shown >= 1 ? 1 : 2;
    if (band < decimals) out = absl::StrFormat("%.*f", band, value);
  }
  if (out == "-0" || out == "-0.0" || out == "-0.00") out.erase(0, 1);
  return out;
}

std::string_view ThermalStateName(v1::ThermalState state) {
  switch (state) {
    case v1::THERMAL_STATE_NORMAL:
      return "normal";
    case v1::THERMAL_STATE_FAIR:
      return "fair";
    case v1::THERMAL_STATE_SERIOUS:
      return "serious";
    case v1::THERMAL_STATE_CRITICAL:
      return "critical";
    default:
      return "unknown";
  }
}

std::string_view PowerScopeName(v1::PowerScope scope) {
  switch (scope) {
    case v1::POWER_SCOPE_GPU_BOARD:
      return "gpu_board";
    case v1::POWER_SCOPE_CPU_PACKAGE:
      return "cpu_package";
    case v1::POWER_SCOPE_SOC:
      return "soc";
    case v1::POWER_SCOPE_DRAM:
      return "dram";
    case v1::POWER_SCOPE_WALL:
      return "wall";
    default:
      return "unspecified";
  }
}

std::string_view WesNullReasonName(v1::WesNullReason reason) {
  switch (reason) {
    case v1::WES_NULL_REASON_IDLE:
      return "idle";
    case v1::WES_NULL_REASON_NO_POWER_READING:
      return "no_power_reading";
    case v1::WES_NULL_REASON_NON_POSITIVE_WATTS:
      return "non_positive_watts";
    case v1::WES_NULL_REASON_NON_FINITE_INPUT:
      return "non_finite_input";
    default:
      return "";
  }
}

v1::ThermalState WorstThermalState(v1::ThermalState a, v1::ThermalState b) {
  const bool a_known = v1::ThermalState_IsValid(a) && a != v1::THERMAL_STATE_UNSPECIFIED;
  const bool b_known = v1::ThermalState_IsValid(b) && b != v1::THERMAL_STATE_UNSPECIFIED;
  if (!a_known) return b_known ? b : v1::THERMAL_STATE_UNSPECIFIED;
  if (!b_known) return a;
  return a >= b ? a : b;
}

}  // namespace fleetwes
