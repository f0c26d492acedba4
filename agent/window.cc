#include "agent/window.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>

#include "common/prom_text.h"
#include "common/thermal.h"
#include "common/wes.h"

namespace fleetwes::agent {
namespace {

std::optional<uint32_t> GaugeU32(const std::optional<double>& v) {
  if (!v.has_value() || !std::isfinite(*v) || *v < 0 || *v > 4e9) return std::nullopt;
  return static_cast<uint32_t>(std::llround(*v));
}

// cur - prev when both exist; nullopt otherwise. Sets *reset when the counter went down.
std::optional<double> CounterDelta(const std::optional<double>& prev,
                                   const std::optional<double>& cur, bool* reset) {
  if (!prev.has_value() || !cur.has_value()) return std::nullopt;
  if (*cur < *prev) {
    *reset = true;
    return std::nullopt;
  }
  return *cur - *prev;
}

// Requests that started in the window, seen as slots whose task id changed (a slot that ran
// several requests within one window counts once). nullopt when either reading lacks slots.
std::optional<uint64_t> RequestsStarted(const ModelReading& prev, const ModelReading& cur) {
  if (prev.slots.empty() || cur.slots.empty()) return std::nullopt;
  std::map<int64_t, int64_t> before;
  for (const SlotReading& s : prev.slots) before[s.id] = s.task_id;
  uint64_t started = 0;
  for (const SlotReading& s : cur.slots) {
    auto it = before.find(s.id);
    if (it == before.end()) {
      if (s.task_id >= 0) ++started;
    } else if (s.task_id != it->second && s.task_id >= 0) {
      ++started;
    }
  }
  return started;
}

// The histogram's window delta. Sets *reset when its count went down (an engine restart);
// nullopt also when either side is missing or the bucket layout changed.
std::optional<prom::Histogram> HistogramDelta(const std::optional<prom::Histogram>& prev,
                                              const std::optional<prom::Histogram>& cur,
                                              bool* reset) {
  if (!prev.has_value() || !cur.has_value()) return std::nullopt;
  if (cur->count < prev->count || cur->sum < prev->sum) {
    *reset = true;
    return std::nullopt;
  }
  return prom::Delta(*prev, *cur);
}

// Mean = Δsum / Δcount, p50/p95 interpolated in the Δbuckets, count = Δcount. Only for windows
// with observations (HasObservations); otherwise the summary stays unset.
bool HasObservations(const std::optional<prom::Histogram>& delta) {
  return delta.has_value() && delta->count > 0 && std::isfinite(delta->count) &&
         std::isfinite(delta->sum) && delta->sum >= 0;
}

void Summarize(const std::optional<prom::Histogram>& delta, v1::LatencySummary* out) {
  out->set_mean_s(delta->sum / delta->count);
  out->set_count(static_cast<uint64_t>(std::llround(delta->count)));
  if (auto q = prom::Quantile(0.5, *delta); q.has_value() && *q >= 0) out->set_p50_s(*q);
  if (auto q = prom::Quantile(0.95, *delta); q.has_value() && *q >= 0) out->set_p95_s(*q);
}

}  // namespace

v1::ModelSample ModelWindow(const std::string& engine_id, v1::EngineKind kind,
                            const ModelReading* prev, const ModelReading& cur, absl::Duration dt) {
  v1::ModelSample m;
  m.set_engine_id(engine_id);
  m.set_engine(kind);
  m.set_model(cur.model);
  if (auto v = GaugeU32(cur.requests_running)) m.set_requests_running(*v);
  if (auto v = GaugeU32(cur.requests_waiting)) m.set_requests_waiting(*v);
  if (cur.kv_cache_usage.has_value() && std::isfinite(*cur.kv_cache_usage) &&
      *cur.kv_cache_usage >= 0 && *cur.kv_cache_usage <= 1) {
    m.set_kv_cache_usage(*cur.kv_cache_usage);
  }
  if (cur.slots_total.has_value()) m.set_slots_total(*cur.slots_total);
  if (!cur.slots.empty()) {
    m.set_slots_idle(static_cast<uint32_t>(std::count_if(
        cur.slots.begin(), cur.slots.end(), [](const SlotReading& s) { return !s.processing; })));
  }
  if (cur.vram_bytes.has_value()) m.set_vram_bytes(*cur.vram_bytes);
  if (auto v = GaugeU32(cur.requests_waiting_capacity)) m.set_requests_waiting_capacity(*v);
  m.set_cpu_offload(cur.cpu_offload);
  m.set_synthetic(cur.synthetic);

  const double seconds = absl::ToDoubleSeconds(dt);
  if (prev == nullptr || seconds <= 0) return m;
  if (prev->model != cur.model) {
    // Another model behind the same engine: it was restarted.
    m.set_counters_reset(true);
    return m;
  }

  bool reset = false;
  std::optional<double> decode =
      CounterDelta(prev->decode_tokens_total, cur.decode_tokens_total, &reset);
  std::optional<double> prefill =
      CounterDelta(prev->prefill_tokens_total, cur.prefill_tokens_total, &reset);
  std::optional<double> decode_s =
      CounterDelta(prev->decode_seconds_total, cur.decode_seconds_total, &reset);
  std::optional<double> prefill_s =
      CounterDelta(prev->prefill_seconds_total, cur.prefill_seconds_total, &reset);
  std::optional<double> prefix_queries =
      CounterDelta(prev->prefix_cache_queries_total, cur.prefix_cache_queries_total, &reset);
  std::optional<double> prefix_hits =
      CounterDelta(prev->prefix_cache_hits_total, cur.prefix_cache_hits_total, &reset);
  std::optional<double> preemptions =
      CounterDelta(prev->preemptions_total, cur.preemptions_total, &reset);
  std::optional<prom::Histogram> ttft_h =
      HistogramDelta(prev->ttft_histogram, cur.ttft_histogram, &reset);
  std::optional<prom::Histogram> tpot_h =
      HistogramDelta(prev->tpot_histogram, cur.tpot_histogram, &reset);
  std::optional<prom::Histogram> e2e_h =
      HistogramDelta(prev->e2e_histogram, cur.e2e_histogram, &reset);
  std::optional<prom::Histogram> queue_h =
      HistogramDelta(prev->queue_histogram, cur.queue_histogram, &reset);
  if (reset) {
    m.set_counters_reset(true);
    return m;
  }

  // Measured distributions (histogram deltas) take precedence over estimates.
  if (HasObservations(ttft_h)) Summarize(ttft_h, m.mutable_ttft());
  if (HasObservations(tpot_h)) Summarize(tpot_h, m.mutable_tpot());
  if (HasObservations(e2e_h)) Summarize(e2e_h, m.mutable_e2e());
  if (HasObservations(queue_h)) Summarize(queue_h, m.mutable_queue());
  if (prefix_queries.has_value() && prefix_hits.has_value() && *prefix_queries > 0 &&
      *prefix_hits <= *prefix_queries) {
    m.set_prefix_cache_hit_rate(*prefix_hits / *prefix_queries);
  }
  if (preemptions.has_value()) {
    m.set_preemptions(static_cast<uint64_t>(std::llround(*preemptions)));
  }

  if (decode.has_value()) {
    m.set_decode_tokens(static_cast<uint64_t>(std::llround(*decode)));
    m.set_decode_tokens_per_s(*decode / seconds);
  }
  if (prefill.has_value()) {
    m.set_prefill_tokens(static_cast<uint64_t>(std::llround(*prefill)));
    m.set_prefill_tokens_per_s(*prefill / seconds);
  }

  // TPOT estimate: generation time per generated token, summed over the requests whose tokens
  // were credited in the window.
  if (decode.has_value() && *decode > 0 && decode_s.has_value() && m.tpot().count() == 0) {
    v1::LatencySummary* tpot = m.mutable_tpot();
    tpot->set_mean_s(*decode_s / *decode);
    tpot->set_count(static_cast<uint64_t>(std::llround(*decode)));
    tpot->set_estimate(true);
  }
  // TTFT estimate: prompt processing time of the window divided by the requests seen starting.
  std::optional<uint64_t> started = RequestsStarted(*prev, cur);
  if (started.has_value() && *started > 0 && prefill.has_value() && *prefill > 0 &&
      prefill_s.has_value() && m.ttft().count() == 0) {
    v1::LatencySummary* ttft = m.mutable_ttft();
    ttft->set_mean_s(*prefill_s / static_cast<double>(*started));
    ttft->set_count(*started);
    ttft->set_estimate(true);
  }
  return m;
}

HardwareWindow ComputeHardwareWindow(const HardwareReading* prev, const HardwareReading& cur,
                                     absl::Duration dt) {
  HardwareWindow w;
  const double seconds = absl::ToDoubleSeconds(dt);
  for (const DeviceReading& d : cur.devices) {
    const DeviceReading* before = nullptr;
    if (prev != nullptr) {
      for (const DeviceReading& p : prev->devices) {
        if (p.id == d.id) before = &p;
      }
    }
    v1::Device& out = w.devices.emplace_back();
    out.set_id(d.id);
    out.set_kind(d.kind);
    out.set_name(d.name);
    out.set_power_scope(d.power_scope);
    if (d.temperature_c.has_value()) out.set_temperature_c(*d.temperature_c);
    if (d.energy_uj.has_value()) out.set_energy_counter_uj(*d.energy_uj);
    if (!d.unavailable_reason.empty()) out.set_unavailable_reason(d.unavailable_reason);

    if (before != nullptr && before->energy_uj.has_value() && d.energy_uj.has_value() &&
        seconds > 0) {
      std::optional<uint64_t> delta;
      if (*d.energy_uj >= *before->energy_uj) {
        delta = *d.energy_uj - *before->energy_uj;
      } else if (d.energy_max_range_uj.has_value() && *d.energy_max_range_uj > *before->energy_uj) {
        delta = *d.energy_max_range_uj - *before->energy_uj + *d.energy_uj;
      }
      if (delta.has_value()) {
        double joules = static_cast<double>(*delta) / 1e6;
        double watts = joules / seconds;
        if (watts <= kMaxPlausibleDeviceWatts) {
          out.set_energy_j(joules);
          out.set_power_w(watts);
        }
      }
    }

    // Without an energy counter, the power read at window end stands for the window.
    if (!out.has_power_w() && d.power_w.has_value() && std::isfinite(*d.power_w) &&
        *d.power_w >= 0 && *d.power_w <= kMaxPlausibleDeviceWatts && seconds > 0) {
      out.set_power_w(*d.power_w);
      out.set_energy_j(*d.power_w * seconds);
    }
    if (d.clock_mhz.has_value()) out.set_clock_mhz(*d.clock_mhz);
    if (d.clock_max_mhz.has_value()) out.set_clock_max_mhz(*d.clock_max_mhz);
    if (d.memory_used_bytes.has_value()) out.set_memory_used_bytes(*d.memory_used_bytes);
    if (d.memory_total_bytes.has_value()) out.set_memory_total_bytes(*d.memory_total_bytes);
    if (d.kind == v1::DEVICE_KIND_GPU_NVIDIA && d.unavailable_reason.empty()) {
      thermal::NvidiaReading r;
      r.clocks_event_mask = d.clocks_event_mask.value_or(0);
      r.temperature_c = d.temperature_c;
      r.slowdown_threshold_c = d.slowdown_threshold_c;
      r.gpu_max_threshold_c = d.gpu_max_threshold_c;
      r.hw_slowdown_in_previous_read = before != nullptr && before->clocks_event_mask.has_value() &&
                                       (*before->clocks_event_mask & thermal::kNvHwSlowdown) != 0;
      out.set_throttle_mask(r.clocks_event_mask);
      out.set_power_capped((r.clocks_event_mask & thermal::kNvSwPowerCap) != 0);
      out.set_thermal_state(thermal::NvidiaState(r));
    }

    if (d.kind == v1::DEVICE_KIND_GPU_AMD && !d.amd_sensors.empty()) {
      v1::ThermalState state = v1::THERMAL_STATE_UNSPECIFIED;
      for (const thermal::AmdReading& sensor : d.amd_sensors) {
        state = WorstThermalState(state, thermal::AmdState(sensor));
      }
      out.set_thermal_state(state);
    }

    if (d.kind == v1::DEVICE_KIND_CPU &&
        (!d.cpu_zones.empty() || d.throttle_events_total.has_value())) {
      bool throttled = before != nullptr && before->throttle_events_total.has_value() &&
                       d.throttle_events_total.has_value() &&
                       *d.throttle_events_total > *before->throttle_events_total;
      v1::ThermalState state = v1::THERMAL_STATE_UNSPECIFIED;
      if (d.cpu_zones.empty()) {
        thermal::CpuReading r;
        r.throttle_counters_increased = throttled;
        state = thermal::CpuState(r);
      }
      for (thermal::CpuReading zone : d.cpu_zones) {
        zone.throttle_counters_increased = throttled;
        state = WorstThermalState(state, thermal::CpuState(zone));
      }
      out.set_thermal_state(state);
    }
  }

  const SystemReading& s = cur.system;
  v1::SystemSample& sys = w.system;
  bool swapping = false;
  if (prev != nullptr && seconds > 0) {
    const SystemReading& p = prev->system;
    if (p.swap_in_pages_total.has_value() && s.swap_in_pages_total.has_value() &&
        *s.swap_in_pages_total >= *p.swap_in_pages_total) {
      uint64_t d = *s.swap_in_pages_total - *p.swap_in_pages_total;
      sys.set_swap_in_pages_per_s(static_cast<double>(d) / seconds);
      swapping = swapping || d > 0;
    }
    if (p.swap_out_pages_total.has_value() && s.swap_out_pages_total.has_value() &&
        *s.swap_out_pages_total >= *p.swap_out_pages_total) {
      uint64_t d = *s.swap_out_pages_total - *p.swap_out_pages_total;
      sys.set_swap_out_pages_per_s(static_cast<double>(d) / seconds);
      swapping = swapping || d > 0;
    }
  }
  if (prev != nullptr && prev->system.cpu_busy_ticks_total.has_value() &&
      prev->system.cpu_all_ticks_total.has_value() && s.cpu_busy_ticks_total.has_value() &&
      s.cpu_all_ticks_total.has_value() &&
      *s.cpu_busy_ticks_total >= *prev->system.cpu_busy_ticks_total &&
      *s.cpu_all_ticks_total > *prev->system.cpu_all_ticks_total) {
    const uint64_t busy = *s.cpu_busy_ticks_total - *prev->system.cpu_busy_ticks_total;
    const uint64_t all = *s.cpu_all_ticks_total - *prev->system.cpu_all_ticks_total;
    if (busy <= all) sys.set_cpu_busy(static_cast<double>(busy) / static_cast<double>(all));
  }
  if (s.memory_pressure_some_avg10.has_value()) {
    sys.set_memory_pressure_some_avg10(*s.memory_pressure_some_avg10);
  }
  if (s.memory_total_bytes.has_value()) sys.set_memory_total_bytes(*s.memory_total_bytes);
  if (s.memory_available_bytes.has_value()) {
    sys.set_memory_available_bytes(*s.memory_available_bytes);
  }
  sys.set_memory_pressure(swapping || (s.memory_pressure_some_avg10.has_value() &&
                                       *s.memory_pressure_some_avg10 > kMemoryPressureAvg10));
  return w;
}

}  // namespace fleetwes::agent
