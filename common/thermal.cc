#include "common/thermal.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace fleetwes::thermal {

namespace {

// Margin below a threshold at which a device is reported as approaching it.
constexpr double kMarginC = 5.0;

// A reading that can be compared: present and finite.
std::optional<double> Usable(const std::optional<double>& v) {
  if (!v.has_value() || !std::isfinite(*v)) return std::nullopt;
  return v;
}

// A threshold that can be compared: present, finite and positive (drivers report 0 or a
// negative value for a threshold they do not implement).
std::optional<double> UsableThreshold(const std::optional<double>& v) {
  if (!v.has_value() || !std::isfinite(*v) || *v <= 0) return std::nullopt;
  return v;
}

// Debian's Abseil has its own string_view type; bridge from std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool Is(absl::string_view value, absl::string_view name) {
  return absl::EqualsIgnoreCase(value, name);
}

}  // namespace

v1::ThermalState NvidiaState(const NvidiaReading& r) {
  const uint64_t mask = r.clocks_event_mask;
  const std::optional<double> temp = Usable(r.temperature_c);
  const std::optional<double> slowdown = UsableThreshold(r.slowdown_threshold_c);
  const std::optional<double> gpu_max = UsableThreshold(r.gpu_max_threshold_c);

  if ((mask & (kNvHwThermalSlowdown | kNvHwPowerBrakeSlowdown)) != 0) {
    return v1::THERMAL_STATE_CRITICAL;
  }
  if (temp && slowdown && *temp >= *slowdown) return v1::THERMAL_STATE_CRITICAL;

  if ((mask & kNvSwThermalSlowdown) != 0) return v1::THERMAL_STATE_SERIOUS;
  if ((mask & kNvHwSlowdown) != 0 && r.hw_slowdown_in_previous_read) {
    return v1::THERMAL_STATE_SERIOUS;
  }
  if (temp && gpu_max && *temp >= *gpu_max) return v1::THERMAL_STATE_SERIOUS;

  if (temp && gpu_max && *temp >= *gpu_max - kMarginC) return v1::THERMAL_STATE_FAIR;
  if (temp && slowdown && *temp >= *slowdown - kMarginC) return v1::THERMAL_STATE_FAIR;
  return v1::THERMAL_STATE_NORMAL;
}

std::optional<TripType> ParseTripType(std::string_view text) {
  const absl::string_view s = absl::StripAsciiWhitespace(Av(text));
  if (Is(s, "active")) return TripType::kActive;
  if (Is(s, "passive")) return TripType::kPassive;
  if (Is(s, "hot")) return TripType::kHot;
  if (Is(s, "critical")) return TripType::kCritical;
  return std::nullopt;
}

v1::ThermalState CpuState(const CpuReading& r) {
  const std::optional<double> temp = Usable(r.temperature_c);
  v1::ThermalState state = v1::THERMAL_STATE_NORMAL;
  auto raise = [&state](v1::ThermalState s) {
    if (s > state) state = s;
  };
  if (r.throttle_counters_increased) raise(v1::THERMAL_STATE_SERIOUS);
  if (!temp) return state;
  for (const TripPoint& trip : r.trips) {
    const std::optional<double> at = UsableThreshold(trip.temperature_c);
    if (!at) continue;
    switch (trip.type) {
      case TripType::kHot:
      case TripType::kCritical:
        if (*temp >= *at - kMarginC) raise(v1::THERMAL_STATE_CRITICAL);
        break;
      case TripType::kPassive:
        if (*temp >= *at) {
          raise(v1::THERMAL_STATE_SERIOUS);
        } else if (*temp >= *at - kMarginC) {
          raise(v1::THERMAL_STATE_FAIR);
        }
        break;
      case TripType::kActive:  // fan control, not throttling
        break;
    }
  }
  return state;
}

v1::ThermalState AmdState(const AmdReading& r) {
  const std::optional<double> temp = Usable(r.temperature_c);
  if (!temp) return v1::THERMAL_STATE_NORMAL;
  const std::optional<double> emergency = UsableThreshold(r.emergency_c);
  const std::optional<double> crit = UsableThreshold(r.crit_c);
  if (emergency && *temp >= *emergency) return v1::THERMAL_STATE_CRITICAL;
  if (crit && *temp >= *crit) return v1::THERMAL_STATE_SERIOUS;
  if (crit && *temp >= *crit - kMarginC) return v1::THERMAL_STATE_FAIR;
  return v1::THERMAL_STATE_NORMAL;
}

std::optional<v1::ThermalState> AppleState(std::string_view text) {
  const absl::string_view pressure = absl::StripAsciiWhitespace(Av(text));
  // NSProcessInfo.thermalState names, and the levels `powermetrics` prints for the same scale.
  if (Is(pressure, "nominal")) return v1::THERMAL_STATE_NORMAL;
  if (Is(pressure, "fair") || Is(pressure, "moderate")) {
    return v1::THERMAL_STATE_FAIR;
  }
  if (Is(pressure, "serious") || Is(pressure, "heavy")) {
    return v1::THERMAL_STATE_SERIOUS;
  }
  if (Is(pressure, "critical") || Is(pressure, "trapping") || Is(pressure, "sleeping")) {
    return v1::THERMAL_STATE_CRITICAL;
  }
  return std::nullopt;
}

}  // namespace fleetwes::thermal
