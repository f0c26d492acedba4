// Hardware and engine profiles for simulated nodes: what a realistic node of each kind measures
// under steady load (tokens/s, watts, temperatures, clocks, memory), and how prone it is to
// thermal throttling and swapping. Immutable data; thread-safe.
#ifndef FLEETWES_AGENT_LOADGEN_PROFILES_H_
#define FLEETWES_AGENT_LOADGEN_PROFILES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent::loadgen {

struct HardwareProfile {
  std::string name;  // short id used as the "profile" label, e.g. "rtx4090-vllm"

  // The one device that serves the model and whose power is measured.
  v1::DeviceKind device_kind = v1::DEVICE_KIND_UNSPECIFIED;
  std::string device_id;    // "gpu0", "package-0", "soc"
  std::string device_name;  // "NVIDIA GeForce RTX 4090"
  v1::PowerScope power_scope = v1::POWER_SCOPE_UNSPECIFIED;
  bool energy_counter = true;  // NVML total energy / RAPL energy_uj; false: power readings only
  uint64_t device_memory_bytes = 0;  // VRAM, or unified memory on an SoC

  // The engine and model.
  v1::EngineKind engine_kind = v1::ENGINE_KIND_UNSPECIFIED;
  std::string engine_id;  // name in the agent config: "vllm", "llamacpp", "ollama"
  std::string engine_version;
  std::string endpoint;
  std::string model;
  uint64_t model_vram_bytes = 0;

  // Steady state under load, Normal thermal state.
  double tokens_per_s = 0;
  double prefill_tokens_per_s = 0;
  double watts = 0;
  double pue = 1.0;
  double temperature_c = 60;
  double clock_max_mhz = 0;  // 0: the device reports no clock
  double ttft_p95_s = 0.2;
  double requests_per_s = 1;  // completed requests per second (observations per window)
  uint32_t slots_total = 0;   // llama.cpp parallel slots; 0 when not applicable
  bool reports_kv_usage = true;
  bool latency_is_estimate = false;

  // Thermal limits: Fair starts 5 degC below `temp_max_c`, Serious at it, Critical at
  // `temp_critical_c` (NVML GPU_MAX / SLOWDOWN, a CPU passive / hot trip, AMD crit / emergency).
  double temp_max_c = 90;
  double temp_critical_c = 95;

  // Per-frame probability that a throttling episode starts (0: never throttles).
  double throttle_episode_rate = 0;
  // True: the node runs a model that does not fit its memory and swaps in every window.
  bool always_swapping = false;
  // Per-frame probability that a short swapping episode starts.
  double swap_episode_rate = 0;

  uint64_t host_memory_bytes = 0;
};

// The built-in profiles, in a fixed order (node i uses profile i % size()).
const std::vector<HardwareProfile>& BuiltinProfiles();

}  // namespace fleetwes::agent::loadgen

#endif  // FLEETWES_AGENT_LOADGEN_PROFILES_H_
