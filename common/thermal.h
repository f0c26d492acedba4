// Thermal state mapping from what each device reports (docs/wes.md, "Thermal state and
// penalty"). Pure functions; thread-safe.
#ifndef FLEETWES_COMMON_THERMAL_H_
#define FLEETWES_COMMON_THERMAL_H_

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::thermal {

// NVML clocks event reasons (nvmlClocksEventReason*).
inline constexpr uint64_t kNvGpuIdle = 0x01;
inline constexpr uint64_t kNvApplicationsClocks = 0x02;
inline constexpr uint64_t kNvSwPowerCap = 0x04;
inline constexpr uint64_t kNvHwSlowdown = 0x08;
inline constexpr uint64_t kNvSyncBoost = 0x10;
inline constexpr uint64_t kNvSwThermalSlowdown = 0x20;
inline constexpr uint64_t kNvHwThermalSlowdown = 0x40;
inline constexpr uint64_t kNvHwPowerBrakeSlowdown = 0x80;
inline constexpr uint64_t kNvDisplayClock = 0x100;

struct NvidiaReading {
  uint64_t clocks_event_mask = 0;
  std::optional<double> temperature_c;
  std::optional<double> slowdown_threshold_c;  // NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
  std::optional<double> gpu_max_threshold_c;   // NVML_TEMPERATURE_THRESHOLD_GPU_MAX
  bool hw_slowdown_in_previous_read = false;   // HwSlowdown 0x08 must be seen twice in a row
};
v1::ThermalState NvidiaState(const NvidiaReading& r);

enum class TripType { kActive, kPassive, kHot, kCritical };
struct TripPoint {
  TripType type;
  double temperature_c;
};
// Parses a sysfs trip_point_*_type value ("passive", "hot", ...); nullopt if unknown.
std::optional<TripType> ParseTripType(std::string_view s);

struct CpuReading {
  std::optional<double> temperature_c;
  std::vector<TripPoint> trips;
  bool throttle_counters_increased = false;  // core/package throttle_count grew in the window
};
v1::ThermalState CpuState(const CpuReading& r);

struct AmdReading {
  std::optional<double> temperature_c;
  std::optional<double> crit_c;       // temp*_crit
  std::optional<double> emergency_c;  // temp*_emergency
};
v1::ThermalState AmdState(const AmdReading& r);

// macOS thermal pressure names: "Nominal", "Fair", "Serious", "Critical" (case-insensitive).
std::optional<v1::ThermalState> AppleState(std::string_view pressure);

}  // namespace fleetwes::thermal

#endif  // FLEETWES_COMMON_THERMAL_H_
