// Energy attribution: splits each device's window energy among the engine models that were
// active on it (docs/agent.md, "Energy attribution"). Pure functions; thread-safe.
#ifndef FLEETWES_AGENT_ATTRIBUTION_H_
#define FLEETWES_AGENT_ATTRIBUTION_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

// Where one model's memory lives, as far as the agent could tell from GPU process lists.
struct ModelPlacement {
  // GPU device id -> bytes the model holds there (nullopt: on it, amount unknown). Empty when
  // the process lists did not locate the model.
  std::map<std::string, std::optional<uint64_t>> gpu_memory;
  // The model's engine processes are known and hold memory on no GPU (every GPU listed its
  // processes): the model runs on the CPU.
  bool no_gpu_memory = false;
};

// What a model was given for one window.
struct ModelEnergy {
  double watts = 0;                    // attributed energy / window length
  std::vector<v1::PowerScope> scopes;  // scopes of the devices that contributed
  v1::ThermalState thermal_state = v1::THERMAL_STATE_UNSPECIFIED;  // worst of its devices
};

// A model is active when it generated tokens in the window or had requests running.
bool ModelActive(const v1::ModelSample& m);

// Splits the energy of every device with a window energy among the active models placed on it:
// - GPUs (NVIDIA, AMD): the models the process lists put there; a model not located that way
//   is on every GPU unless it reports 0 bytes of VRAM (then it is CPU-only).
// - Host devices (CPU package, DRAM, SoC): the CPU-only models; on a node without GPUs, every
//   model.
// Within a device, by the models' memory on it (per-device bytes, else vram_bytes) when every
// model there has a positive value, else equally. `models` and `placements` are parallel.
// Returns one entry per model: nullopt for inactive models and for models no energy reached.
// `seconds` > 0.
std::vector<std::optional<ModelEnergy>> AttributeEnergy(
    const std::vector<v1::Device>& devices, double seconds,
    const std::vector<const v1::ModelSample*>& models,
    const std::vector<ModelPlacement>& placements);

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_ATTRIBUTION_H_
