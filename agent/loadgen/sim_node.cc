#include "agent/loadgen/sim_node.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

#include "common/thermal.h"
#include "common/version.h"
#include "common/wes.h"

namespace fleetwes::agent::loadgen {
namespace {

// FNV-1a: a stable hash of the node id, so each node draws its own sequence for a seed.
uint64_t StableHash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* ts) {
  const int64_t nanos = absl::ToUnixNanos(t);
  int64_t secs = nanos / 1'000'000'000;
  int64_t rem = nanos % 1'000'000'000;
  if (rem < 0) {
    rem += 1'000'000'000;
    --secs;
  }
  ts->set_seconds(secs);
  ts->set_nanos(static_cast<int32_t>(rem));
}

// How each thermal state shows in throughput, power and clocks.
struct ThermalEffect {
  double tokens;
  double watts;
  double clock;
};
ThermalEffect EffectOf(v1::ThermalState s) {
  switch (s) {
    case v1::THERMAL_STATE_FAIR:
      return {0.94, 1.0, 0.97};
    case v1::THERMAL_STATE_SERIOUS:
      return {0.78, 0.88, 0.82};
    case v1::THERMAL_STATE_CRITICAL:
      return {0.55, 0.72, 0.6};
    default:
      return {1.0, 1.0, 1.0};
  }
}

void FillLatency(double mean_s, double p50_s, double p95_s, uint64_t count, bool estimate,
                 v1::LatencySummary* out) {
  out->set_count(count);
  out->set_estimate(estimate);
  if (count == 0) return;
  out->set_mean_s(mean_s);
  if (count >= 2) {
    out->set_p50_s(p50_s);
    out->set_p95_s(p95_s);
  }
}

}  // namespace

SimNode::SimNode(SimNodeOptions options)
    : options_(std::move(options)),
      rng_(options_.seed ^ StableHash(options_.node_id)),
      temperature_c_(options_.profile.temperature_c) {}

double SimNode::Uniform() {
  return static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0);  // 2^-53
}

double SimNode::Gaussian() {
  // Box-Muller on our own uniform draws: the same numbers with every standard library.
  double u1 = Uniform();
  const double u2 = Uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

void SimNode::AdvanceEpisodes() {
  const HardwareProfile& p = options_.profile;
  if (thermal_frames_left_ > 0) {
    if (--thermal_frames_left_ == 0) thermal_ = v1::THERMAL_STATE_NORMAL;
  } else if (p.throttle_episode_rate > 0 && Uniform() < p.throttle_episode_rate) {
    const double u = Uniform();
    thermal_ = u < 0.5    ? v1::THERMAL_STATE_FAIR
               : u < 0.85 ? v1::THERMAL_STATE_SERIOUS
                          : v1::THERMAL_STATE_CRITICAL;
    thermal_frames_left_ = 4 + static_cast<int>(Uniform() * 12);
  }
  if (swap_frames_left_ > 0) {
    --swap_frames_left_;
  } else if (p.swap_episode_rate > 0 && Uniform() < p.swap_episode_rate) {
    swap_frames_left_ = 3 + static_cast<int>(Uniform() * 8);
  }
}

v1::Hello SimNode::MakeHello(uint64_t evicted_frames) const {
  const HardwareProfile& p = options_.profile;
  v1::Hello hello;
  hello.set_node_id(options_.node_id);
  hello.set_boot_id(options_.boot_id);
  hello.set_agent_version(std::string(Version()));
  auto& labels = *hello.mutable_labels();
  labels["profile"] = p.name;
  labels["engine"] = p.engine_id;
  labels["source"] = "loadgen";
  v1::Device* d = hello.add_devices();
  d->set_id(p.device_id);
  d->set_kind(p.device_kind);
  d->set_name(p.device_name);
  d->set_power_scope(p.power_scope);
  if (p.device_memory_bytes > 0) d->set_memory_total_bytes(p.device_memory_bytes);
  v1::EngineStatus* e = hello.add_engines();
  e->set_engine_id(p.engine_id);
  e->set_kind(p.engine_kind);
  e->set_endpoint(p.endpoint);
  e->set_available(true);
  e->set_version(p.engine_version);
  hello.set_evicted_frames(evicted_frames);
  hello.set_interval_s(absl::ToDoubleSeconds(options_.interval));
  return hello;
}

v1::Frame SimNode::NextFrame() {
  v1::Frame f;
  NextFrame(&f);
  return f;
}

void SimNode::NextFrame(v1::Frame* out) {
  const HardwareProfile& p = options_.profile;
  AdvanceEpisodes();
  ++seq_;
  const double dt = absl::ToDoubleSeconds(options_.interval);
  const bool swapping = p.always_swapping || swap_frames_left_ > 0;
  const ThermalEffect fx = EffectOf(thermal_);

  v1::Frame& f = *out;
  f.Clear();
  f.set_node_id(options_.node_id);
  f.set_boot_id(options_.boot_id);
  f.set_seq(seq_);
  SetTimestamp(options_.start + options_.interval * static_cast<double>(seq_ - 1),
               f.mutable_window_start());
  SetTimestamp(options_.start + options_.interval * static_cast<double>(seq_),
               f.mutable_window_end());
  f.set_interval_s(dt);
  f.set_pue(p.pue);

  // Throughput: integer tokens in the window, as an engine counter delta would give.
  const double load = 1.0 + 0.03 * Gaussian();
  double tok_s = p.tokens_per_s * fx.tokens * (swapping && !p.always_swapping ? 0.8 : 1.0) * load;
  tok_s = std::max(tok_s, 0.2 * p.tokens_per_s);
  const uint64_t decode_tokens = static_cast<uint64_t>(std::llround(tok_s * dt));
  tok_s = static_cast<double>(decode_tokens) / dt;
  const uint64_t prefill_tokens = static_cast<uint64_t>(
      std::llround(std::max(0.0, p.prefill_tokens_per_s * (1.0 + 0.1 * Gaussian())) * dt));

  // Power follows load a little and drops with clocks when throttled.
  const double watts =
      std::max(1.0, p.watts * fx.watts * (1.0 + 0.3 * (load - 1.0) + 0.015 * Gaussian()));
  const double energy_j = watts * dt;
  if (p.energy_counter) energy_counter_uj_ += static_cast<uint64_t>(std::llround(energy_j * 1e6));

  // Temperature in the band of the current state, as the thresholds in docs/wes.md read it.
  switch (thermal_) {
    case v1::THERMAL_STATE_FAIR:
      temperature_c_ = p.temp_max_c - 4.5 + 3.5 * Uniform();
      break;
    case v1::THERMAL_STATE_SERIOUS:
      temperature_c_ = p.temp_max_c + 2.0 * Uniform();
      break;
    case v1::THERMAL_STATE_CRITICAL:
      temperature_c_ = p.temp_critical_c + 2.0 * Uniform();
      break;
    default:
      temperature_c_ = std::min(p.temperature_c + 1.5 * Gaussian(), p.temp_max_c - 6.0);
      break;
  }

  uint64_t mask = 0;
  if (p.device_kind == v1::DEVICE_KIND_GPU_NVIDIA && p.power_scope == v1::POWER_SCOPE_GPU_BOARD) {
    if (thermal_ == v1::THERMAL_STATE_SERIOUS) mask |= thermal::kNvSwThermalSlowdown;
    if (thermal_ == v1::THERMAL_STATE_CRITICAL) {
      mask |= thermal::kNvHwThermalSlowdown | thermal::kNvSwThermalSlowdown;
    }
    if (watts > 0.97 * p.watts && Uniform() < 0.2) mask |= thermal::kNvSwPowerCap;
  }

  v1::Device* d = f.add_devices();
  d->set_id(p.device_id);
  d->set_kind(p.device_kind);
  d->set_name(p.device_name);
  d->set_power_scope(p.power_scope);
  d->set_power_w(watts);
  d->set_energy_j(energy_j);
  if (p.energy_counter) d->set_energy_counter_uj(energy_counter_uj_);
  d->set_temperature_c(std::round(temperature_c_ * 10) / 10);
  if (p.clock_max_mhz > 0) {
    d->set_clock_max_mhz(p.clock_max_mhz);
    d->set_clock_mhz(std::round(p.clock_max_mhz * fx.clock * (0.97 + 0.03 * Uniform())));
  }
  d->set_throttle_mask(mask);
  d->set_thermal_state(thermal_);
  d->set_power_capped((mask & thermal::kNvSwPowerCap) != 0);
  if (p.device_memory_bytes > 0) {
    d->set_memory_total_bytes(p.device_memory_bytes);
    d->set_memory_used_bytes(
        std::min<uint64_t>(p.device_memory_bytes, p.model_vram_bytes + (uint64_t{1} << 30)));
  }

  v1::EngineStatus* e = f.add_engines();
  e->set_engine_id(p.engine_id);
  e->set_kind(p.engine_kind);
  e->set_endpoint(p.endpoint);
  e->set_available(true);
  e->set_version(p.engine_version);

  // Load and latency.
  const double per_stream = std::min(p.tokens_per_s, 90.0);
  const uint32_t running =
      static_cast<uint32_t>(std::max(1.0, std::round(p.tokens_per_s / per_stream)));
  double waiting = std::max(0.0, 0.8 * Gaussian() + (running > 4 ? 1.0 : 0.0));
  if (thermal_ == v1::THERMAL_STATE_SERIOUS) waiting += 2;
  if (thermal_ == v1::THERMAL_STATE_CRITICAL) waiting += 5;
  const uint64_t requests = static_cast<uint64_t>(
      std::llround(std::max(0.0, p.requests_per_s * dt * (1.0 + 0.2 * Gaussian()))));
  const double ttft_p95 = p.ttft_p95_s * std::max(0.5, 1.0 + 0.1 * Gaussian()) / fx.tokens;
  const double tpot_mean = static_cast<double>(running) / tok_s;

  v1::ModelSample* m = f.add_models();
  m->set_engine_id(p.engine_id);
  m->set_engine(p.engine_kind);
  m->set_model(p.model);
  m->set_decode_tokens_per_s(tok_s);
  m->set_prefill_tokens_per_s(static_cast<double>(prefill_tokens) / dt);
  m->set_decode_tokens(decode_tokens);
  m->set_prefill_tokens(prefill_tokens);
  FillLatency(ttft_p95 * 0.55, ttft_p95 * 0.5, ttft_p95, requests, p.latency_is_estimate,
              m->mutable_ttft());
  FillLatency(tpot_mean, tpot_mean * 0.95, tpot_mean * 1.3, requests, p.latency_is_estimate,
              m->mutable_tpot());
  if (p.engine_kind == v1::ENGINE_KIND_VLLM) {
    m->set_requests_running(running);
    m->set_requests_waiting(static_cast<uint32_t>(std::floor(waiting)));
  } else if (p.engine_kind == v1::ENGINE_KIND_LLAMACPP) {
    m->set_requests_running(std::min(running, p.slots_total));
    m->set_requests_waiting(static_cast<uint32_t>(std::floor(waiting)));
  }
  if (p.reports_kv_usage) {
    m->set_kv_cache_usage(std::clamp(0.2 + 0.04 * running + 0.03 * Gaussian(), 0.0, 0.95));
  }
  if (p.slots_total > 0) {
    m->set_slots_total(p.slots_total);
    m->set_slots_idle(p.slots_total - std::min(running, p.slots_total));
  }
  if (p.model_vram_bytes > 0) m->set_vram_bytes(p.model_vram_bytes);
  m->set_watts_attributed(watts);

  WesInputs in;
  in.tokens_per_s = tok_s;
  in.watts = watts;
  in.pue = p.pue;
  in.thermal_state = thermal_;
  in.power_scopes = {p.power_scope};
  const v1::Wes wes = ComputeWes(in);
  *m->mutable_wes() = wes;
  *f.mutable_node_wes() = wes;
  f.set_thermal_state(thermal_);

  v1::SystemSample* sys = f.mutable_system();
  const double host = static_cast<double>(p.host_memory_bytes);
  if (swapping) {
    sys->set_swap_in_pages_per_s(std::round(300 + 900 * Uniform()));
    sys->set_swap_out_pages_per_s(std::round(100 + 500 * Uniform()));
    sys->set_memory_pressure_some_avg10(std::round((10 + 30 * Uniform()) * 100) / 100);
    sys->set_memory_pressure(true);
    sys->set_memory_available_bytes(static_cast<uint64_t>(host * (0.03 + 0.03 * Uniform())));
  } else {
    sys->set_swap_in_pages_per_s(0);
    sys->set_swap_out_pages_per_s(0);
    sys->set_memory_pressure_some_avg10(std::round(0.5 * Uniform() * 100) / 100);
    sys->set_memory_pressure(false);
    sys->set_memory_available_bytes(static_cast<uint64_t>(host * (0.3 + 0.3 * Uniform())));
  }
  sys->set_memory_total_bytes(p.host_memory_bytes);
}

}  // namespace fleetwes::agent::loadgen
