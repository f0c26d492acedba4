#include "agent/attribution.h"

#include <algorithm>
#include <cmath>

#include "common/wes.h"

namespace fleetwes::agent {
namespace {

bool IsGpu(const v1::Device& d) {
  return d.kind() == v1::DEVICE_KIND_GPU_NVIDIA || d.kind() == v1::DEVICE_KIND_GPU_AMD;
}

}  // namespace

bool ModelActive(const v1::ModelSample& m) {
  return (m.has_decode_tokens_per_s() && m.decode_tokens_per_s() > 0) ||
         (m.has_requests_running() && m.requests_running() > 0);
}

std::vector<std::optional<ModelEnergy>> AttributeEnergy(
    const std::vector<v1::Device>& devices, double seconds,
    const std::vector<const v1::ModelSample*>& models,
    const std::vector<ModelPlacement>& placements) {
  std::vector<std::optional<ModelEnergy>> out(models.size());
  if (!(seconds > 0) || models.size() != placements.size()) return out;
  const bool node_has_gpu = std::any_of(devices.begin(), devices.end(), IsGpu);

  std::vector<double> joules(models.size(), 0);
  std::vector<bool> reached(models.size(), false);
  std::vector<std::vector<v1::PowerScope>> scopes(models.size());
  std::vector<v1::ThermalState> states(models.size(), v1::THERMAL_STATE_UNSPECIFIED);

  for (const v1::Device& d : devices) {
    // The active models on this device and their weights (nullopt: unknown).
    std::vector<size_t> on;
    std::vector<std::optional<double>> weight;
    for (size_t i = 0; i < models.size(); ++i) {
      const v1::ModelSample& m = *models[i];
      if (!ModelActive(m)) continue;
      const ModelPlacement& p = placements[i];
      const std::optional<double> vram =
          m.has_vram_bytes() ? std::optional<double>(static_cast<double>(m.vram_bytes()))
                             : std::nullopt;
      const bool cpu_only = p.no_gpu_memory || !node_has_gpu ||
                            (p.gpu_memory.empty() && vram.has_value() && *vram == 0);
      if (IsGpu(d)) {
        if (cpu_only) continue;
        if (!p.gpu_memory.empty()) {
          auto it = p.gpu_memory.find(d.id());
          if (it == p.gpu_memory.end()) continue;
          on.push_back(i);
          weight.push_back(it->second.has_value()
                               ? std::optional<double>(static_cast<double>(*it->second))
                               : vram);
        } else {
          on.push_back(i);
          weight.push_back(vram);
        }
      } else {
        if (!cpu_only) continue;
        on.push_back(i);
        weight.push_back(vram);
      }
    }
    if (on.empty()) continue;
    for (size_t i : on) states[i] = WorstThermalState(states[i], d.thermal_state());
    if (!d.has_energy_j() || !std::isfinite(d.energy_j()) || d.energy_j() < 0) continue;

    double total = 0;
    bool proportional = true;
    for (const std::optional<double>& w : weight) {
      proportional = proportional && w.has_value() && *w > 0 && std::isfinite(*w);
      if (w.has_value()) total += *w;
    }
    proportional = proportional && total > 0;
    for (size_t k = 0; k < on.size(); ++k) {
      const double share = proportional ? *weight[k] / total : 1.0 / static_cast<double>(on.size());
      const size_t i = on[k];
      joules[i] += d.energy_j() * share;
      reached[i] = true;
      if (std::find(scopes[i].begin(), scopes[i].end(), d.power_scope()) == scopes[i].end()) {
        scopes[i].push_back(d.power_scope());
      }
    }
  }

  for (size_t i = 0; i < models.size(); ++i) {
    if (!reached[i]) continue;
    ModelEnergy& e = out[i].emplace();
    e.watts = joules[i] / seconds;
    e.scopes = std::move(scopes[i]);
    e.thermal_state = states[i];
  }
  return out;
}

}  // namespace fleetwes::agent
