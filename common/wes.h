// WES and thermal penalties: the one implementation shared by agent and aggregator
// (docs/wes.md). Pure functions; thread-safe.
#ifndef FLEETWES_COMMON_WES_H_
#define FLEETWES_COMMON_WES_H_

#include <optional>
#include <string>
#include <vector>

#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes {

// Penalty per thermal state. Defaults from docs/wes.md; configurable per deployment.
struct ThermalPenalties {
  double normal = 1.0;
  double fair = 1.25;
  double serious = 1.75;
  double critical = 2.0;

  // Penalty for `state`; UNSPECIFIED is treated as NORMAL.
  double For(v1::ThermalState state) const;
};

struct WesInputs {
  std::optional<double> tokens_per_s;  // absent or 0: idle
  std::optional<double> watts;         // absent: no power reading
  double pue = 1.0;
  v1::ThermalState thermal_state = v1::THERMAL_STATE_NORMAL;
  std::vector<v1::PowerScope> power_scopes;
};

// Computes raw WES, penalized WES and thermal cost %. Fills every field of v1::Wes: the values
// when they exist, otherwise `null_reason` (idle, no power reading, watts <= 0, non-finite input;
// checked in that order after non-finite inputs). Never returns NaN or infinity.
v1::Wes ComputeWes(const WesInputs& in, const ThermalPenalties& penalties = {});

// (baseline_raw - penalized) / baseline_raw * 100; nullopt when baseline_raw <= 0 or either
// value is not finite.
std::optional<double> BaselineLossPct(double baseline_raw, double penalized);

// Display rounding from docs/wes.md: >= 100 no decimals, >= 1 one decimal, below 1 two.
std::string FormatWes(double value);

// "normal", "fair", "serious", "critical" ("unknown" for UNSPECIFIED).
std::string_view ThermalStateName(v1::ThermalState state);
// "gpu_board", "cpu_package", "soc", "dram", "wall" ("unspecified").
std::string_view PowerScopeName(v1::PowerScope scope);
// "idle", "no_power_reading", "non_positive_watts", "non_finite_input" ("" when unspecified).
std::string_view WesNullReasonName(v1::WesNullReason reason);

// The worse of two states (UNSPECIFIED loses against any known state).
v1::ThermalState WorstThermalState(v1::ThermalState a, v1::ThermalState b);

}  // namespace fleetwes

#endif  // FLEETWES_COMMON_WES_H_
