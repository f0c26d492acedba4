// Window arithmetic: turns two consecutive collector readings into what a frame reports for the
// window between them (deltas, rates, counter resets, wraparound, estimates, thermal states).
// Pure functions; thread-safe. docs/agent.md describes each derivation.
#ifndef FLEETWES_AGENT_WINDOW_H_
#define FLEETWES_AGENT_WINDOW_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "agent/collectors/collector.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

// The sample of one engine model over a window of length `dt` (> 0). `prev` is the same model's
// reading at the start of the window, or null when there is no baseline (first reading, the
// engine was unavailable, the model changed): then only gauges are filled. A counter that went
// down marks `counters_reset` and leaves every rate of the window absent. WES is not filled.
v1::ModelSample ModelWindow(const std::string& engine_id, v1::EngineKind kind,
                            const ModelReading* prev, const ModelReading& cur, absl::Duration dt);

struct HardwareWindow {
  std::vector<v1::Device> devices;
  v1::SystemSample system;
};

// Devices and memory state over a window of length `dt` (> 0). `prev` is the reading at the
// start of the window or null. Energy: Δenergy_uj, plus max_energy_range_uj when the counter
// wrapped; a device without a baseline or with an implausible delta has no energy or power.
// Thermal state per vendor (common/thermal.h): NVIDIA, Linux CPU zones and throttle counters,
// AMD sensors (worst sensor). CPU busy = Δbusy ÷ Δall ticks of /proc/stat.
HardwareWindow ComputeHardwareWindow(const HardwareReading* prev, const HardwareReading& cur,
                                     absl::Duration dt);

// /proc/pressure/memory "some avg10" (percent) above which a window counts as under memory
// pressure, like any window with swap traffic.
inline constexpr double kMemoryPressureAvg10 = 10.0;

// Watts above this for one device over a window are treated as a counter glitch, not a reading.
inline constexpr double kMaxPlausibleDeviceWatts = 20'000.0;

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_WINDOW_H_
